//! Running DataCell statements on the engine: `create table datacell.x`, inserts into
//! baskets, the `CALL datacell.…` procedures, and the scheduler that fires continuous
//! queries. Queries run as pull queries on DataFusion (`Engine::run_pull_with`), with each
//! consumed basket reading the rows its firing took; their results go to baskets, streams or
//! tables. A firing is all-or-nothing: results are computed for every statement first and
//! delivered after; a failure puts the taken rows back and marks the query `error`.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arrow::array::{new_null_array, ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::datasource::MemTable;
use sqlparser::ast as sql;
use streamcell_sql::Statement;

use super::adapter::Direction;
use super::basket::now_us;
use super::{
    apply_predicate, basket_name, call_args, in_schema, name_text, take_predicates, Arg,
    ContinuousQuery, Predicate, QueryState,
};
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::output::Output;
use crate::value;
use streamcell_service::StreamSpec;

/// How long the scheduler sleeps when nothing is ready (beats and time windows are checked
/// at least this often; arrivals wake it at once).
const IDLE_TICK: Duration = Duration::from_millis(5);

/// Registers a `datacell.<table>` for one query.
pub(crate) fn register_basket_table(
    ctx: &datafusion::prelude::SessionContext,
    t: &datafusion::common::TableReference,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<()> {
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| EngineError::internal("no default catalog"))?;
    let schema_name = t.schema().unwrap_or(super::SCHEMA);
    let provider = match catalog.schema(schema_name) {
        Some(p) => p,
        None => {
            let p: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
            catalog.register_schema(schema_name, p.clone())?;
            p
        }
    };
    if provider.table_exist(t.table()) {
        return Ok(());
    }
    let table = MemTable::try_new(schema, vec![batches])?;
    provider.register_table(t.table().to_string(), Arc::new(table))?;
    Ok(())
}

/// Fires ready continuous queries until the engine goes away.
pub(crate) async fn scheduler(engine: Weak<Engine>) {
    loop {
        let Some(e) = engine.upgrade() else {
            return;
        };
        let dc = e.datacell.clone();
        let ready = dc.ready_queries();
        if ready.is_empty() {
            drop(e);
            tokio::select! {
                _ = dc.wake.notified() => {}
                _ = tokio::time::sleep(IDLE_TICK) => {}
            }
            continue;
        }
        for q in ready {
            e.fire(&q).await;
        }
    }
}

fn done() -> Output {
    Output::Done("Done.".into())
}

impl Engine {
    /// One firing of a continuous query.
    async fn fire(self: &Arc<Self>, q: &ContinuousQuery) {
        let dc = &self.datacell;
        let started = now_us();
        let grabs = match dc.grab(q) {
            Ok(g) => g,
            Err(e) => {
                dc.finished(q, 0, started, Err(e.to_string()));
                return;
            }
        };
        let events: usize = grabs.iter().map(|(_, g)| g.rows).sum();
        let grabbed: HashMap<String, Vec<RecordBatch>> = grabs
            .iter()
            .map(|(b, g)| (b.name.clone(), g.batches.clone()))
            .collect();
        let outcome = match self.evaluate(&q.statements, Some(&grabbed)).await {
            Ok(outputs) => self.deliver(outputs).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => dc.finished(q, events, started, Ok(())),
            Err(e) => {
                for (b, g) in grabs {
                    b.restore(g);
                }
                dc.finished(q, 0, started, Err(e.to_string()));
            }
        }
    }

    /// Each statement's result rows, with where they go.
    async fn evaluate(
        &self,
        statements: &[sql::Insert],
        grabbed: Option<&HashMap<String, Vec<RecordBatch>>>,
    ) -> Result<Vec<(Target, Vec<RecordBatch>)>> {
        let mut out = Vec::with_capacity(statements.len());
        for insert in statements {
            let target = self.target_of(insert)?;
            let source = insert
                .source
                .as_ref()
                .ok_or_else(|| EngineError::invalid("INSERT needs VALUES or a SELECT"))?;
            // `insert into datacell.b select * from datacell.a` between baskets of the same
            // columns moves the batches as they are (no planning: the latency path).
            if let (
                Some(from),
                Target::Basket {
                    schema, columns, ..
                },
            ) = (passthrough_source(source), &target)
            {
                let rows = grabbed.and_then(|g| g.get(&from));
                let same = self
                    .datacell
                    .basket(&from)
                    .is_ok_and(|b| b.schema.fields() == schema.fields());
                if let (Some(rows), true, true) = (rows, same, columns.is_empty()) {
                    out.push((target, rows.clone()));
                    continue;
                }
            }
            let ctx = crate::continuous::plan::session();
            let (names, batches) = self.run_pull_with(&ctx, source, grabbed).await?;
            let batches = target.shape(&names, batches)?;
            out.push((target, batches));
        }
        Ok(out)
    }

    async fn deliver(&self, outputs: Vec<(Target, Vec<RecordBatch>)>) -> Result<()> {
        for (target, batches) in outputs {
            match target {
                Target::Basket { name, .. } => {
                    self.datacell.insert(&name, batches)?;
                }
                Target::Stream { name, .. } => {
                    let mut rows = Vec::new();
                    for b in &batches {
                        for r in 0..b.num_rows() {
                            rows.push(value::row_object(b, r)?);
                        }
                    }
                    crate::writer::append_rows(&self.service, &name, &rows, |_| Vec::new()).await?;
                }
            }
        }
        Ok(())
    }

    /// Where an INSERT writes: a basket, or a stream/table.
    fn target_of(&self, insert: &sql::Insert) -> Result<Target> {
        let sql::TableObject::TableName(n) = &insert.table else {
            return Err(EngineError::invalid(format!(
                "cannot insert into {}",
                insert.table
            )));
        };
        let columns: Vec<String> = insert.columns.iter().map(name_text).collect();
        if in_schema(n) {
            let b = self.datacell.basket(&name_text(n))?;
            return Ok(Target::Basket {
                name: b.name.clone(),
                schema: b.schema.clone(),
                columns,
            });
        }
        let name = crate::continuous::plan::object_name(n)?;
        if self.catalog.get_stream(&name)?.is_none() {
            return Err(EngineError::NotFound(format!(
                "no basket, stream or table named {name:?}"
            )));
        }
        // A table (a stream with declared columns) takes the rows by position, as INSERT
        // does; a schemaless stream takes the query's column names.
        let columns = match (columns.is_empty(), self.declared_schema(&name)?) {
            (true, Some(schema)) => schema.fields().iter().map(|f| f.name().clone()).collect(),
            _ => columns,
        };
        Ok(Target::Stream { name, columns })
    }

    /// `INSERT INTO datacell.x VALUES (…)` or `… SELECT …`.
    pub(crate) async fn insert_into_basket(&self, insert: &sql::Insert) -> Result<Output> {
        let outputs = self.evaluate(std::slice::from_ref(insert), None).await?;
        let n: usize = outputs
            .iter()
            .map(|(_, b)| b.iter().map(|x| x.num_rows()).sum::<usize>())
            .sum();
        self.deliver(outputs).await?;
        Ok(Output::Done(format!("{n} rows inserted.")))
    }

    /// `CREATE TABLE datacell.x (…)` makes a basket; any other table is durable: a stream
    /// with declared columns that never expires.
    pub(crate) async fn create_table(self: &Arc<Self>, ct: &sql::CreateTable) -> Result<Output> {
        if ct.query.is_some() {
            return Err(EngineError::invalid(
                "CREATE TABLE … AS SELECT is not supported (create the table, then INSERT … \
                 SELECT)",
            ));
        }
        if in_schema(&ct.name) {
            let columns = ct
                .columns
                .iter()
                .map(|c| Ok((c.name.value.clone(), super::csv::column_type(&c.data_type)?)))
                .collect::<Result<Vec<_>>>()?;
            match self.datacell.create_basket(&name_text(&ct.name), columns) {
                Err(EngineError::AlreadyExists(_)) if ct.if_not_exists => {}
                other => other?,
            }
            return Ok(done());
        }
        if ct.columns.is_empty() {
            return Err(EngineError::invalid("a table needs columns"));
        }
        let name = crate::continuous::plan::object_name(&ct.name)?;
        if ct.if_not_exists && self.catalog.get_stream(&name)?.is_some() {
            return Ok(done());
        }
        let cs = streamcell_sql::CreateStream {
            name: ct.name.clone(),
            columns: ct.columns.clone(),
            replicate: None,
            duration: None,
            as_select: None,
        };
        // A table keeps its rows: no retention.
        self.create_declared_stream(
            &cs,
            StreamSpec {
                name,
                replication_factor: 1,
                backlog_secs: 0,
                shard_count: 1,
            },
        )
        .await
    }

    /// `CREATE TABLE datacell.y (LIKE datacell.x)`.
    pub(crate) fn create_table_like(
        &self,
        name: &sql::ObjectName,
        like: &sql::ObjectName,
    ) -> Result<Output> {
        if !in_schema(name) || !in_schema(like) {
            return Err(EngineError::invalid(
                "CREATE TABLE … (LIKE …) makes baskets: both names are datacell.<name>",
            ));
        }
        let source = self.datacell.basket(&name_text(like))?;
        let columns = source
            .schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        self.datacell.create_basket(&name_text(name), columns)?;
        Ok(done())
    }

    /// `DROP TABLE`: a basket, or a durable table (a stream).
    pub(crate) async fn drop_table(
        self: &Arc<Self>,
        name: &sql::ObjectName,
        if_exists: bool,
    ) -> Result<()> {
        if in_schema(name) {
            return self.datacell.drop_basket(&name_text(name), if_exists);
        }
        let stmt = Statement::Drop {
            kind: streamcell_sql::ObjectKind::Stream,
            name: name.clone(),
            if_exists,
        };
        Box::pin(self.execute(stmt)).await.map(|_| ())
    }

    /// `CREATE PROCEDURE p() BEGIN … END`: INSERT statements a DataCell query runs.
    pub(crate) fn create_procedure(
        &self,
        name: &sql::ObjectName,
        body: Vec<Statement>,
        text: String,
    ) -> Result<Output> {
        let inserts = inserts_of(body)?;
        self.datacell
            .add_procedure(&name_text(name), inserts, text)?;
        Ok(done())
    }

    /// `CALL datacell.<procedure>(…)`.
    pub(crate) async fn datacell_call(self: &Arc<Self>, f: &sql::Function) -> Result<Output> {
        let parts: Vec<String> = f
            .name
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(|i| i.value.to_ascii_lowercase()))
            .collect();
        let [schema, proc_name] = parts.as_slice() else {
            return Err(EngineError::invalid(format!(
                "CALL {}: only datacell.<procedure> calls exist",
                f.name
            )));
        };
        if schema != super::SCHEMA {
            return Err(EngineError::invalid(format!(
                "CALL {}: only datacell.<procedure> calls exist",
                f.name
            )));
        }
        let args = call_args(&f.args)?;
        let dc = &self.datacell;
        let opt_text = |i: usize, what: &str| -> Result<Option<String>> {
            args.get(i).map(|a| a.text(what)).transpose()
        };
        match proc_name.as_str() {
            "receptor" => dc.add_adapter(Direction::Receptor, &args).await?,
            "emitter" => dc.add_adapter(Direction::Emitter, &args).await?,
            "basket" => {
                let name = opt_text(0, "the basket")?
                    .ok_or_else(|| EngineError::invalid("datacell.basket('schema.table')"))?;
                // Every datacell.<table> is a basket already; check it exists.
                dc.basket(&name)?;
            }
            "query" => self.register_query(&args).await?,
            "threshold" | "window" | "beat" => apply_predicate(
                dc,
                &Predicate {
                    function: proc_name.clone(),
                    args,
                },
            )?,
            "pause" | "resume" => {
                if args.len() > 1 {
                    return Err(EngineError::invalid(format!(
                        "datacell.{proc_name}([object])"
                    )));
                }
                dc.pause_resume(opt_text(0, "the object")?.as_deref(), proc_name == "pause")?
            }
            "stop" | "remove" => {
                let obj = opt_text(0, "the object")?
                    .ok_or_else(|| EngineError::invalid("datacell.stop(object)"))?;
                dc.stop(&obj)?
            }
            "postlude" => dc.postlude(),
            "dump" => {
                let rows = dc
                    .dump()
                    .into_iter()
                    .map(|l| serde_json::json!({ "dump": l }).to_string())
                    .collect();
                return Ok(Output::Rows {
                    columns: vec!["dump".into()],
                    rows,
                });
            }
            other => {
                return Err(EngineError::invalid(format!(
                    "unknown DataCell procedure datacell.{other} (receptor, emitter, basket, \
                     query, threshold, window, beat, pause, resume, stop, postlude, dump)"
                )))
            }
        }
        Ok(done())
    }

    /// `datacell.query(name, 'sql')` or `datacell.query(procedure)`.
    async fn register_query(&self, args: &[Arg]) -> Result<()> {
        let (name, statements, def) =
            match args {
                [name, def] => {
                    let name = name.text("the query name")?;
                    let text = def.text("the query text")?;
                    let inserts = inserts_of(streamcell_sql::parse(&text)?)?;
                    (name, inserts, text)
                }
                [proc_name] => {
                    let name = proc_name.text("the procedure name")?;
                    let (inserts, text) = self.datacell.procedure(&name)?;
                    (name, inserts, text)
                }
                _ => return Err(EngineError::invalid(
                    "datacell.query(name, 'insert into … select …;') or datacell.query(procedure)",
                )),
            };
        let name = name.to_ascii_lowercase();
        let mut statements = statements;
        let mut inputs: Vec<String> = Vec::new();
        for insert in statements.iter_mut() {
            let Some(source) = insert.source.as_mut() else {
                return Err(EngineError::invalid("INSERT needs VALUES or a SELECT"));
            };
            for p in take_predicates(source)? {
                apply_predicate(&self.datacell, &p)?;
            }
            for b in super::baskets_read(source) {
                self.datacell.basket(&b)?;
                if !inputs.contains(&b) {
                    inputs.push(b);
                }
            }
        }
        if inputs.is_empty() {
            return Err(EngineError::invalid(
                "a continuous query reads at least one basket (FROM datacell.<basket>)",
            ));
        }
        // Plan it once on empty baskets: unknown columns, type errors and wrong targets are
        // reported now, not at the first firing.
        let empty: HashMap<String, Vec<RecordBatch>> = inputs
            .iter()
            .map(|b| (basket_name(b), Vec::new()))
            .collect();
        self.evaluate(&statements, Some(&empty)).await?;
        self.datacell.add_query(ContinuousQuery {
            name,
            def,
            statements,
            inputs,
            state: std::sync::Mutex::new(QueryState::Paused),
            stats: Default::default(),
        })?;
        Ok(())
    }
}

/// The basket of a plain `SELECT * FROM datacell.<b>` (nothing else), if that is the query.
fn passthrough_source(q: &sql::Query) -> Option<String> {
    let sql::SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let plain = q.with.is_none()
        && q.order_by.is_none()
        && q.limit_clause.is_none()
        && s.distinct.is_none()
        // A WHERE that only held scheduling predicates is `TRUE` now.
        && s.selection.as_ref().is_none_or(|e| {
            matches!(e, sql::Expr::Value(v) if v.value == sql::Value::Boolean(true))
        })
        && s.having.is_none()
        && matches!(&s.group_by, sql::GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
        && s.from.len() == 1
        && s.from[0].joins.is_empty()
        && matches!(s.projection.as_slice(), [sql::SelectItem::Wildcard(w)] if w.opt_exclude.is_none() && w.opt_except.is_none() && w.opt_replace.is_none() && w.opt_rename.is_none());
    if !plain {
        return None;
    }
    match &s.from[0].relation {
        sql::TableFactor::Table {
            name,
            args: None,
            alias: None,
            ..
        } if in_schema(name) => Some(basket_name(&name_text(name))),
        _ => None,
    }
}

/// The INSERT statements of a query or procedure (anything else is refused).
fn inserts_of(statements: Vec<Statement>) -> Result<Vec<sql::Insert>> {
    statements
        .into_iter()
        .map(|s| match s {
            Statement::Sql(b) => match *b {
                sql::Statement::Insert(i) => Ok(i),
                other => Err(not_insert(&other.to_string())),
            },
            other => Err(not_insert(&format!("{other:?}"))),
        })
        .collect()
}

fn not_insert(what: &str) -> EngineError {
    let short: String = what.chars().take(60).collect();
    EngineError::invalid(format!(
        "a DataCell query runs INSERT INTO … SELECT/VALUES statements, not {short}"
    ))
}

/// Where an INSERT's rows go.
enum Target {
    Basket {
        name: String,
        schema: SchemaRef,
        columns: Vec<String>,
    },
    Stream {
        name: String,
        columns: Vec<String>,
    },
}

impl Target {
    /// The result batches shaped for the target: a basket's columns (by position, or by the
    /// INSERT's column list), or a stream's column names.
    fn shape(&self, names: &[String], batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        match self {
            Target::Basket {
                schema, columns, ..
            } => {
                if columns.is_empty() {
                    return batches
                        .iter()
                        .map(|b| super::csv::conform(b, schema))
                        .collect();
                }
                if columns.len() != names.len() {
                    return Err(EngineError::invalid(format!(
                        "{} columns named but the query gives {}",
                        columns.len(),
                        names.len()
                    )));
                }
                let positions = columns
                    .iter()
                    .map(|c| {
                        schema.index_of(c).map_err(|_| {
                            EngineError::invalid(format!("the basket has no column {c:?}"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                batches
                    .iter()
                    .map(|b| {
                        let arrays: Vec<ArrayRef> = schema
                            .fields()
                            .iter()
                            .enumerate()
                            .map(|(i, f)| match positions.iter().position(|&p| p == i) {
                                Some(src) => b.column(src).clone(),
                                None => new_null_array(f.data_type(), b.num_rows()),
                            })
                            .collect();
                        let loose = RecordBatch::try_new_with_options(
                            Arc::new(arrow::datatypes::Schema::new(
                                arrays
                                    .iter()
                                    .zip(schema.fields())
                                    .map(|(a, f)| {
                                        arrow::datatypes::Field::new(
                                            f.name(),
                                            a.data_type().clone(),
                                            true,
                                        )
                                    })
                                    .collect::<Vec<_>>(),
                            )),
                            arrays,
                            &arrow::array::RecordBatchOptions::new()
                                .with_row_count(Some(b.num_rows())),
                        )?;
                        super::csv::conform(&loose, schema)
                    })
                    .collect()
            }
            Target::Stream { columns, .. } => {
                if columns.is_empty() {
                    return Ok(batches);
                }
                if columns.len() != names.len() {
                    return Err(EngineError::invalid(format!(
                        "{} columns named but the query gives {}",
                        columns.len(),
                        names.len()
                    )));
                }
                batches
                    .iter()
                    .map(|b| {
                        let schema = arrow::datatypes::Schema::new(
                            b.schema()
                                .fields()
                                .iter()
                                .zip(columns)
                                .map(|(f, c)| f.as_ref().clone().with_name(c))
                                .collect::<Vec<_>>(),
                        );
                        Ok(RecordBatch::try_new_with_options(
                            Arc::new(schema),
                            b.columns().to_vec(),
                            &arrow::array::RecordBatchOptions::new()
                                .with_row_count(Some(b.num_rows())),
                        )?)
                    })
                    .collect()
            }
        }
    }
}
