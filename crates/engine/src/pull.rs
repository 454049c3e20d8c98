//! Pull queries: a `SELECT` answered once, by DataFusion over views' rows, streams' history
//! and DataCell baskets, on the engine's own query threads so that a cancelled or timed-out
//! query stops; and what `DESCRIBE`, `EXPLAIN` and the SQL catalogs ask of a statement.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::sql::parser::Statement as DfStatement;
use sqlparser::ast::{self as sql, Expr, SetExpr, TableFactor};
use streamcell_sql::{Select, Statement};

use crate::continuous::plan;
use crate::decode::rows_to_batch;
use crate::engine::{lock, single_name, Engine};
use crate::error::{EngineError, Result};
use crate::output::{Described, Output, Relation};
use crate::query::{self, streams_of, QueryKind, QueryShared};
use crate::source::{Start, StreamCursor};
use crate::value::{self, JsonRow};

/// A pull query over a stream reads at most this many records of its history.
pub(crate) const MAX_PULL_RECORDS: usize = 2_000_000;

/// Windows belong to continuous queries.
pub(crate) fn reject_windows(query: &sql::Query) -> Result<()> {
    if let SetExpr::Select(select) = query.body.as_ref() {
        for t in &select.from {
            if let TableFactor::Table {
                args: Some(_),
                name,
                ..
            } = &t.relation
            {
                return Err(EngineError::invalid(format!(
                    "{name}(…) windows run in continuous queries: add EMIT CHANGES, or create a \
                     view over the window and query the view"
                )));
            }
        }
    }
    Ok(())
}

/// The runtime pull queries run on: threads of their own (as many as the cores, at most 4),
/// with the query thread stack size. `None` (pull queries then run on the caller's runtime)
/// if it cannot be built.
pub(crate) fn query_runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RT: std::sync::OnceLock<Option<tokio::runtime::Runtime>> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("streamcell-query")
            .thread_stack_size(streamcell_sql::limits::THREAD_STACK_BYTES)
            .enable_all()
            .build()
        {
            Ok(rt) => Some(rt),
            Err(e) => {
                tracing::warn!(
                    "cannot start the pull-query threads ({e}); pull queries share the server's"
                );
                None
            }
        }
    })
    .as_ref()
}

/// A spawned task, aborted when its awaiter stops waiting for it.
pub(crate) struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl Engine {
    /// Reads a stream's whole history as rows of its (declared or inferred) schema.
    pub(crate) async fn history(&self, stream: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let declared = self.declared_schema(stream)?;
        let catalog = self.catalog.clone();
        let log = self.log.clone();
        let stream = stream.to_string();
        tokio::task::spawn_blocking(move || {
            let mut cursor = StreamCursor::open(catalog.as_ref(), log, &stream, &Start::Earliest)?;
            let mut records = Vec::new();
            loop {
                let n = cursor.poll(65_536, &mut records)?;
                if n == 0 {
                    break;
                }
                if records.len() > MAX_PULL_RECORDS {
                    return Err(EngineError::invalid(format!(
                        "stream {stream:?} holds more than {MAX_PULL_RECORDS} records: too many \
                         for a pull query over its history; create a view or use EMIT CHANGES"
                    )));
                }
            }
            let schema = match declared {
                Some(s) => s,
                None => Arc::new(value::infer_schema(records.iter().map(|r| &r.row))),
            };
            let schema = value::nullable(&schema);
            let mut batches = Vec::new();
            for chunk in records.chunks(8192) {
                let rows: Vec<&JsonRow> = chunk.iter().map(|r| &r.row).collect();
                batches.push(rows_to_batch(&schema, &rows)?);
            }
            Ok((schema, batches))
        })
        .await
        .map_err(|e| EngineError::internal(e.to_string()))?
    }

    /// Runs a pull query: over views (their current rows) and streams (their history).
    /// Runs a pull query on the query runtime's threads, so that a long plan (DataFusion
    /// computes a batch without yielding) never holds the threads the front doors answer on;
    /// it is aborted when the caller stops waiting (a cancel, a statement timeout, a client
    /// gone), at its next await.
    pub(crate) async fn pull_on_query_threads(self: &Arc<Self>, select: Select) -> Result<Output> {
        let Some(rt) = query_runtime() else {
            return self.pull(&select).await;
        };
        let engine = self.clone();
        let task = AbortOnDrop(rt.spawn(async move { engine.pull(&select).await }));
        task.await
            .map_err(|e| EngineError::internal(format!("the pull query's task failed: {e}")))?
    }

    pub(crate) async fn pull(&self, select: &Select) -> Result<Output> {
        let ctx = plan::session();
        let (schema, batches) = self.run_pull_batches(&ctx, &select.query, None).await?;
        Ok(Output::Table { schema, batches })
    }

    /// Every stream, view and basket with its columns, sorted by schema and name.
    pub async fn relations(&self) -> Result<Vec<Relation>> {
        let cols = |schema: &Schema| {
            schema
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect::<Vec<_>>()
        };
        let mut out = Vec::new();
        for meta in self.catalog.list_streams()? {
            let columns = cols(&*self.stream_columns(&meta.name).await?);
            out.push(Relation {
                schema: "public".into(),
                name: meta.name,
                is_view: false,
                columns,
            });
        }
        let views: Vec<Arc<QueryShared>> = lock(&self.queries)
            .values()
            .filter(|e| e.shared.kind == QueryKind::View)
            .map(|e| e.shared.clone())
            .collect();
        for v in views {
            let columns = v.output_schema().map(|s| cols(&s)).unwrap_or_default();
            out.push(Relation {
                schema: "public".into(),
                name: v.name.clone(),
                is_view: true,
                columns,
            });
        }
        for b in self.datacell.baskets() {
            out.push(Relation {
                schema: crate::datacell::SCHEMA.into(),
                name: b.name.trim_start_matches("datacell.").to_string(),
                is_view: false,
                columns: cols(&b.schema),
            });
        }
        out.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        Ok(out)
    }

    /// What `stmt` will produce, without running it: a pull query is planned over the
    /// schemas of what it reads (no history is read), a push query is bound as it would be.
    pub async fn describe(&self, stmt: &Statement) -> Result<Described> {
        match stmt {
            Statement::Select(select) if select.emit_changes => {
                let prepared = plan::prepare(&select.query, &select.within)?;
                let declared = self.sources_of(&prepared)?;
                let bound = self.try_bind(&prepared, declared, QueryKind::Push).await?;
                Ok(Described {
                    schema: bound.map(|p| p.output_schema),
                    params: Vec::new(),
                })
            }
            Statement::Select(select) => {
                let ctx = plan::session();
                let plan = self.pull_plan(&ctx, &select.query, None, false).await?;
                let mut params = Vec::new();
                for (name, t) in plan.get_parameter_types()? {
                    set_param(&mut params, &name, t);
                }
                Ok(Described {
                    schema: Some(plan.schema().as_arrow().clone().into()),
                    params,
                })
            }
            Statement::Sql(stmt) => match stmt.as_ref() {
                // INSERT … VALUES ($1, …): a parameter takes its column's declared type.
                sql::Statement::Insert(insert) => {
                    let mut params = Vec::new();
                    let (sql::TableObject::TableName(name), Some(source)) =
                        (&insert.table, &insert.source)
                    else {
                        return Ok(Described::default());
                    };
                    let SetExpr::Values(values) = source.body.as_ref() else {
                        return Ok(Described::default());
                    };
                    let declared = if crate::datacell::in_schema(name) {
                        None
                    } else {
                        self.declared_schema(&single_name(name)?)?
                    };
                    let Some(schema) = declared else {
                        return Ok(Described::default());
                    };
                    let columns: Vec<String> = if insert.columns.is_empty() {
                        schema.fields().iter().map(|f| f.name().clone()).collect()
                    } else {
                        insert
                            .columns
                            .iter()
                            .map(|c| c.to_string().trim_matches('"').to_string())
                            .collect()
                    };
                    for row in &values.rows {
                        for (c, e) in columns.iter().zip(row.content.iter()) {
                            let Expr::Value(v) = e else { continue };
                            if let sql::Value::Placeholder(p) = &v.value {
                                let t = schema
                                    .field_with_name(c)
                                    .ok()
                                    .map(|f| f.data_type().clone());
                                set_param(&mut params, p, t);
                            }
                        }
                    }
                    Ok(Described {
                        schema: None,
                        params,
                    })
                }
                _ => Ok(Described::default()),
            },
            _ => Ok(Described::default()),
        }
    }

    pub(crate) async fn run_pull(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        query: &sql::Query,
    ) -> Result<(Vec<String>, Vec<RecordBatch>)> {
        self.run_pull_with(ctx, query, None).await
    }

    /// A pull query; `datacell.<basket>` tables read `grabbed` rows where given (a continuous
    /// query's firing), the basket's current rows otherwise.
    pub(crate) async fn run_pull_with(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        query: &sql::Query,
        grabbed: Option<&std::collections::HashMap<String, Vec<RecordBatch>>>,
    ) -> Result<(Vec<String>, Vec<RecordBatch>)> {
        let (schema, batches) = self.run_pull_batches(ctx, query, grabbed).await?;
        Ok((
            schema.fields().iter().map(|f| f.name().clone()).collect(),
            batches,
        ))
    }

    pub(crate) async fn run_pull_batches(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        query: &sql::Query,
        grabbed: Option<&std::collections::HashMap<String, Vec<RecordBatch>>>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let plan = self.pull_plan(ctx, query, grabbed, true).await?;
        let df = ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = df.schema().as_arrow().clone().into();
        let batches = df.collect().await?;
        Ok((schema, batches))
    }

    /// Plans a pull query, registering what it reads in `ctx`. With `with_data` false a
    /// stream is registered empty, with its declared or sampled columns (for Describe).
    pub(crate) async fn pull_plan(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        query: &sql::Query,
        grabbed: Option<&std::collections::HashMap<String, Vec<RecordBatch>>>,
        with_data: bool,
    ) -> Result<datafusion::logical_expr::LogicalPlan> {
        let mut query = query.clone();
        crate::datacell::rewrite_catalog_functions(&mut query);
        reject_windows(&query)?;
        plan::hstream_functions(&mut query)?;
        let stmt = DfStatement::Statement(Box::new(sql::Statement::Query(Box::new(query))));
        let (tables, _) = datafusion::sql::resolve::resolve_table_references(&stmt, false)?;
        for t in tables {
            let name = t.table().to_string();
            if t.schema()
                .is_some_and(|s| s.eq_ignore_ascii_case(crate::datacell::SCHEMA))
                && t.catalog().is_none()
            {
                let (schema, batches) = self.datacell.table_rows(&name, grabbed)?;
                crate::datacell::run::register_basket_table(ctx, &t, schema, batches)?;
                continue;
            }
            if t.schema().is_some() {
                return Err(EngineError::invalid(format!(
                    "{t}: qualified names are not supported here"
                )));
            }
            let view = lock(&self.queries)
                .get(&name)
                .filter(|e| e.shared.kind == QueryKind::View)
                .map(|e| e.shared.clone());
            let (schema, batches) = if let Some(v) = view {
                match v.view_rows()? {
                    Some(rows) => rows,
                    None => {
                        return Err(EngineError::Precondition(format!(
                            "view {name:?} has no columns yet: its stream {:?} has no records to \
                             learn them from (declare the stream's columns to know them at once)",
                            v.source
                        )))
                    }
                }
            } else if self.catalog.get_stream(&name)?.is_some() {
                if with_data {
                    self.history(&name).await?
                } else {
                    (self.stream_columns(&name).await?, Vec::new())
                }
            } else {
                return Err(EngineError::NotFound(format!(
                    "no stream or view named {name:?}"
                )));
            };
            let table = MemTable::try_new(schema, vec![batches])?;
            ctx.register_table(
                datafusion::common::TableReference::bare(name.as_str()),
                Arc::new(table),
            )?;
        }
        let state = ctx.state();
        Ok(state.statement_to_plan(stmt).await?)
    }

    /// A stream's columns as a pull query over its history would see them: declared, or
    /// inferred from a sample of its records (none while it has none).
    pub(crate) async fn stream_columns(&self, stream: &str) -> Result<SchemaRef> {
        let declared = self.declared_schema(stream)?;
        let schema = self.sampled_schema(stream.to_string(), declared).await?;
        Ok(value::nullable(&schema.unwrap_or_else(Schema::empty)))
    }

    /// A stream's schema for planning: `declared`, or inferred from a sample of its records
    /// (`None` while it has none). Reads the log off the async threads.
    pub(crate) async fn sampled_schema(
        &self,
        stream: String,
        declared: Option<SchemaRef>,
    ) -> Result<Option<Schema>> {
        let catalog = self.catalog.clone();
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            query::stream_schema(catalog.as_ref(), log, &stream, declared.as_ref())
        })
        .await
        .map_err(|e| EngineError::internal(e.to_string()))?
    }

    pub(crate) async fn explain(&self, stmt: Statement) -> Result<Output> {
        let select = match stmt {
            Statement::Select(s) => s,
            Statement::CreateStream(cs) if cs.as_select.is_some() => cs
                .as_select
                .ok_or_else(|| EngineError::internal("checked"))?,
            Statement::CreateView { query, .. } => query,
            _ => {
                return Err(EngineError::invalid(
                    "EXPLAIN takes a SELECT, CREATE STREAM … AS SELECT or CREATE VIEW",
                ))
            }
        };
        let ctx = plan::session();
        let prepared = plan::prepare(&select.query, &select.within)?;
        let declared = self.sources_of(&prepared)?;
        // A source with neither declared columns nor records has no columns yet.
        let schemas = self
            .source_schemas(&prepared, declared)
            .await?
            .unwrap_or_else(|| vec![Schema::empty(); streams_of(&prepared).len()]);
        let mut tables = Vec::new();
        for (i, (stream, schema)) in streams_of(&prepared).into_iter().zip(schemas).enumerate() {
            let window = if i == 0 {
                prepared.source.window.as_ref()
            } else {
                None
            };
            tables.push((stream, plan::input_schema(&schema, window)?));
        }
        let logical = plan::logical_plan(&ctx, &tables, &prepared.query).await?;
        let mut text = format!("{}", logical.display_indent());
        if let Some(w) = &prepared.source.window {
            text = format!(
                "Window: size={}ms hop={}ms time={}\n{text}",
                w.size_ms,
                w.hop_ms,
                w.time_column.as_deref().unwrap_or("publish time")
            );
        }
        let rows = text
            .lines()
            .map(|l| {
                let mut s = String::new();
                value::render(&serde_json::json!({ "plan": l }), &mut s);
                s
            })
            .collect();
        Ok(Output::Rows {
            columns: vec!["plan".into()],
            rows,
        })
    }
}

/// Records the type of the parameter named `$n` (1-based) in `params`, growing it.
pub(crate) fn set_param(
    params: &mut Vec<Option<arrow::datatypes::DataType>>,
    name: &str,
    t: Option<arrow::datatypes::DataType>,
) {
    if let Some(i) = name
        .strip_prefix('$')
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&i| i >= 1)
    {
        if params.len() < i {
            params.resize(i, None);
        }
        params[i - 1] = t;
    }
}
