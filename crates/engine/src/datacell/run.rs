//! DataCell's runner: the `CALL datacell.…` procedures, inserts into baskets, and the
//! scheduler that fires continuous queries. A continuous query's statements are planned once,
//! when it is registered ([`step`](super::step)): a firing takes the rows of every input
//! basket, runs the plans over them (and over the streams, tables, views and other baskets
//! they read, as they are at that moment), and delivers the results to baskets, streams or
//! tables. A firing is all-or-nothing: results are computed for every statement first and
//! delivered after; a failure puts the taken rows back and marks the query `error`.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arrow::array::RecordBatch;
use datafusion::logical_expr::{LogicalPlan, Volatility};
use sqlparser::ast as sql;
use streamcell_sql::Statement;

use super::adapter::Direction;
use super::basket::now_us;
use super::step::{How, Planned, Step, Taken, Target};
use super::{
    apply_predicate, basket_name, call_args, in_schema, name_text, take_predicates, Arg,
    ContinuousQuery, DataCell, Predicate, QueryState,
};
use crate::context::Context;
use crate::continuous::plan;
use crate::error::{EngineError, Result};
use crate::output::{Listing, Output};
use crate::pull::{PullQueries, Tables};
use crate::tables::Rows;
use crate::value;

/// How long the scheduler sleeps when nothing is ready (beats and time windows are checked
/// at least this often; arrivals wake it at once).
const IDLE_TICK: Duration = Duration::from_millis(5);

/// Runs DataCell: its statements, its procedures and its scheduler.
pub(crate) struct Runner {
    ctx: Arc<Context>,
    pull: Arc<PullQueries>,
    datacell: Arc<DataCell>,
}

impl Runner {
    /// A runner of `datacell`, planning with `pull`.
    pub(crate) fn new(ctx: Arc<Context>, pull: Arc<PullQueries>, datacell: Arc<DataCell>) -> Self {
        Runner {
            ctx,
            pull,
            datacell,
        }
    }

    /// The baskets, adapters and queries.
    pub(crate) fn datacell(&self) -> &Arc<DataCell> {
        &self.datacell
    }

    /// Starts the scheduler on the context's runtime; it stops when the runner is dropped.
    pub(crate) fn start(self: &Arc<Self>) {
        self.ctx.runtime.spawn(scheduler(Arc::downgrade(self)));
    }

    /// One firing of a continuous query.
    async fn fire(&self, q: &ContinuousQuery) {
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
        for (name, taken) in &q.taken {
            taken.set(grabbed.get(name).cloned().unwrap_or_default());
        }
        let outcome = match self.evaluate(&q.steps, &grabbed).await {
            Ok(outputs) => self.deliver(outputs).await,
            Err(e) => Err(e),
        };
        for taken in q.taken.values() {
            taken.set(Vec::new());
        }
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

    /// Plans statements once: each becomes a [`Step`]. The baskets in `taken` are read
    /// from there when the plans run (a continuous query's inputs).
    async fn compile(
        &self,
        statements: &[sql::Insert],
        taken: &HashMap<String, Arc<Taken>>,
    ) -> Result<Vec<Step>> {
        let tables: HashMap<String, Arc<dyn Rows>> = taken
            .iter()
            .map(|(k, v)| (k.clone(), v.clone() as Arc<dyn Rows>))
            .collect();
        let mut steps = Vec::with_capacity(statements.len());
        for insert in statements {
            let target = self.target_of(insert)?;
            let source = insert
                .source
                .as_ref()
                .ok_or_else(|| EngineError::invalid("INSERT needs VALUES or a SELECT"))?;
            if let (
                Some(from),
                Target::Basket {
                    schema, columns, ..
                },
            ) = (passthrough_source(source), &target)
            {
                let same = self
                    .datacell
                    .basket(&from)
                    .is_ok_and(|b| b.schema.fields() == schema.fields());
                if same && columns.is_empty() {
                    steps.push(Step {
                        target,
                        how: How::Move(from),
                    });
                    continue;
                }
            }
            let ctx = plan::session();
            let logical = self.pull.plan(&ctx, source, Tables::Later(&tables)).await?;
            let names: Vec<String> = logical
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            // Column counts against the target are checked now, not at the first firing.
            target.shape(&names, Vec::new())?;
            let optimized = !depends_on_the_moment(&logical)?;
            let plan = if optimized {
                ctx.state().optimize(&logical)?
            } else {
                logical
            };
            steps.push(Step {
                target,
                how: How::Plan(Box::new(Planned {
                    ctx,
                    plan,
                    optimized,
                    names,
                })),
            });
        }
        Ok(steps)
    }

    /// Each step's result rows, with where they go. A basket moved as it is reads the rows
    /// `grabbed` took from it, or its rows now (a one-off INSERT).
    async fn evaluate<'s>(
        &self,
        steps: &'s [Step],
        grabbed: &HashMap<String, Vec<RecordBatch>>,
    ) -> Result<Vec<(&'s Target, Vec<RecordBatch>)>> {
        let mut out = Vec::with_capacity(steps.len());
        for step in steps {
            let batches = match &step.how {
                How::Move(from) => match grabbed.get(from) {
                    Some(rows) => rows.clone(),
                    None => self.datacell.basket(from)?.snapshot(),
                },
                How::Plan(planned) => {
                    let Planned {
                        ctx,
                        plan,
                        optimized,
                        names,
                    } = planned.as_ref();
                    let state = ctx.state();
                    let physical = if *optimized {
                        state
                            .query_planner()
                            .create_physical_plan(plan, &state)
                            .await?
                    } else {
                        state.create_physical_plan(plan).await?
                    };
                    let batches =
                        datafusion::physical_plan::collect(physical, ctx.task_ctx()).await?;
                    step.target.shape(names, batches)?
                }
            };
            out.push((&step.target, batches));
        }
        Ok(out)
    }

    async fn deliver(&self, outputs: Vec<(&Target, Vec<RecordBatch>)>) -> Result<()> {
        for (target, batches) in outputs {
            match target {
                Target::Basket { name, .. } => {
                    self.datacell.insert(name, batches)?;
                }
                Target::Stream { name, .. } => {
                    let mut rows = Vec::new();
                    for b in &batches {
                        for r in 0..b.num_rows() {
                            rows.push(value::row_object(b, r)?);
                        }
                    }
                    crate::writer::append_rows(&self.ctx.service, name, &rows, |_| Vec::new())
                        .await?;
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
        let name = plan::object_name(n)?;
        if self.ctx.catalog.get_stream(&name)?.is_none() {
            return Err(EngineError::NotFound(format!(
                "no basket, stream or table named {name:?}"
            )));
        }
        // A table (a stream with declared columns) takes the rows by position, as INSERT
        // does; a schemaless stream takes the query's column names.
        let columns = match (columns.is_empty(), self.ctx.declared_schema(&name)?) {
            (true, Some(schema)) => schema.fields().iter().map(|f| f.name().clone()).collect(),
            _ => columns,
        };
        Ok(Target::Stream { name, columns })
    }

    /// `INSERT INTO datacell.x VALUES (…)` or `… SELECT …`: planned and run once, on the
    /// baskets' rows of the moment (nothing is consumed).
    pub(crate) async fn insert_into_basket(&self, insert: &sql::Insert) -> Result<Output> {
        let steps = self
            .compile(std::slice::from_ref(insert), &HashMap::new())
            .await?;
        let outputs = self.evaluate(&steps, &HashMap::new()).await?;
        let n: usize = outputs
            .iter()
            .map(|(_, b)| b.iter().map(|x| x.num_rows()).sum::<usize>())
            .sum();
        self.deliver(outputs).await?;
        Ok(Output::Done(format!("{n} rows inserted.")))
    }

    /// `CREATE TABLE datacell.x (…)`: a basket.
    pub(crate) fn create_basket(&self, ct: &sql::CreateTable) -> Result<()> {
        let columns = ct
            .columns
            .iter()
            .map(|c| {
                Ok((
                    c.name.value.clone(),
                    super::columns::column_type(&c.data_type)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        match self.datacell.create_basket(&name_text(&ct.name), columns) {
            Err(EngineError::AlreadyExists(_)) if ct.if_not_exists => Ok(()),
            other => other,
        }
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
        Ok(Output::done())
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
        Ok(Output::done())
    }

    /// `CALL datacell.<procedure>(…)`.
    pub(crate) async fn call(&self, f: &sql::Function) -> Result<Output> {
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
                let mut out = Listing::new(&[("dump", false)]);
                for line in dc.dump() {
                    out.push(vec![line.into()]);
                }
                return out.into_output();
            }
            other => {
                return Err(EngineError::invalid(format!(
                    "unknown DataCell procedure datacell.{other} (receptor, emitter, basket, \
                     query, threshold, window, beat, pause, resume, stop, postlude, dump)"
                )))
            }
        }
        Ok(Output::done())
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
        // Planned once, here; run once on empty baskets: unknown columns, type errors and
        // wrong targets are reported now, not at the first firing.
        let taken: HashMap<String, Arc<Taken>> = inputs
            .iter()
            .map(|b| (basket_name(b), Arc::new(Taken::new(&basket_name(b)))))
            .collect();
        let steps = self.compile(&statements, &taken).await?;
        let empty: HashMap<String, Vec<RecordBatch>> =
            taken.keys().map(|b| (b.clone(), Vec::new())).collect();
        self.evaluate(&steps, &empty).await?;
        self.datacell.add_query(ContinuousQuery {
            name,
            def,
            statements,
            inputs,
            steps,
            taken,
            state: std::sync::Mutex::new(QueryState::Paused),
            stats: Default::default(),
        })?;
        Ok(())
    }
}

/// Fires ready continuous queries until the runner goes away.
async fn scheduler(runner: Weak<Runner>) {
    loop {
        let Some(r) = runner.upgrade() else {
            return;
        };
        let dc = r.datacell.clone();
        let ready = dc.ready_queries();
        if ready.is_empty() {
            drop(r);
            tokio::select! {
                _ = dc.wake.notified() => {}
                _ = tokio::time::sleep(IDLE_TICK) => {}
            }
            continue;
        }
        for q in ready {
            r.fire(&q).await;
        }
    }
}

/// Whether a plan calls a function whose value depends on when it runs (`now()`,
/// `random()`): the optimizer would fold it into the constant of the moment it optimizes.
fn depends_on_the_moment(plan: &LogicalPlan) -> Result<bool> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Expr;
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|x| {
                if let Expr::ScalarFunction(f) = x {
                    if f.func.signature().volatility != Volatility::Immutable {
                        found = true;
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(found)
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
