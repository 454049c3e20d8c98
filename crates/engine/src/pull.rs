//! Pull queries: a `SELECT` answered once, by DataFusion over views' rows, streams' history
//! and DataCell baskets, on the engine's own query threads so that a cancelled or timed-out
//! query stops; and what `DESCRIBE`, `EXPLAIN` and the SQL catalogs ask of a statement.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::common::TableReference;
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use sqlparser::ast::{self as sql, Expr, SetExpr, TableFactor};
use streamcell_sql::{Select, Statement};

use crate::context::Context;
use crate::continuous::plan;
use crate::datacell::{self, DataCell};
use crate::error::{EngineError, Result};
use crate::output::{Described, Listing, Output, Relation};
use crate::queries::Queries;
use crate::query::{streams_of, QueryKind, QueryShared};
use crate::tables::{LazyTable, Rows};

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

/// What a plan reads when it runs.
pub(crate) enum Tables<'a> {
    /// The rows there are now, read while planning (a pull query).
    Now,
    /// No rows: streams are registered empty, with their declared or sampled columns (to
    /// describe a statement).
    Schemas,
    /// Rows read each time the plan runs (a DataCell continuous query, planned once): the
    /// baskets in the map read the rows their firing took, every other table its rows of
    /// the moment.
    Later(&'a HashMap<String, Arc<dyn Rows>>),
}

/// Pull queries, and what `DESCRIBE`, `EXPLAIN` and the SQL catalogs ask of a statement:
/// DataFusion over the streams, views and baskets of the node.
pub(crate) struct PullQueries {
    ctx: Arc<Context>,
    queries: Arc<Queries>,
    datacell: Arc<DataCell>,
}

impl PullQueries {
    /// Pull queries over the streams of `ctx`, the views of `queries` and the baskets of
    /// `datacell`.
    pub(crate) fn new(ctx: Arc<Context>, queries: Arc<Queries>, datacell: Arc<DataCell>) -> Self {
        PullQueries {
            ctx,
            queries,
            datacell,
        }
    }

    /// Runs a pull query over views (their current rows) and streams (their history) on the
    /// query runtime's threads, so that a long plan (DataFusion
    /// computes a batch without yielding) never holds the threads the front doors answer on;
    /// it is aborted when the caller stops waiting (a cancel, a statement timeout, a client
    /// gone), at its next await.
    pub(crate) async fn pull_on_query_threads(self: &Arc<Self>, select: Select) -> Result<Output> {
        let Some(rt) = query_runtime() else {
            return self.pull(&select).await;
        };
        let this = self.clone();
        let task = AbortOnDrop(rt.spawn(async move { this.pull(&select).await }));
        task.await
            .map_err(|e| EngineError::internal(format!("the pull query's task failed: {e}")))?
    }

    /// Runs a pull query here.
    pub(crate) async fn pull(&self, select: &Select) -> Result<Output> {
        let ctx = plan::session();
        let (schema, batches) = self.run_batches(&ctx, &select.query).await?;
        Ok(Output::Table { schema, batches })
    }

    /// Every stream, view and basket with its columns, sorted by schema and name.
    pub(crate) async fn relations(&self) -> Result<Vec<Relation>> {
        let cols = |schema: &Schema| {
            schema
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect::<Vec<_>>()
        };
        let mut out = Vec::new();
        for meta in self.ctx.catalog.list_streams()? {
            let columns = cols(&*self.ctx.stream_columns(&meta.name).await?);
            out.push(Relation {
                schema: "public".into(),
                name: meta.name,
                is_view: false,
                columns,
            });
        }
        for v in self.queries.views() {
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
                schema: datacell::SCHEMA.into(),
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
    pub(crate) async fn describe(&self, stmt: &Statement) -> Result<Described> {
        match stmt {
            Statement::Select(select) if select.emit_changes => {
                let prepared = plan::prepare(&select.query, &select.within)?;
                let declared = self.ctx.sources_of(&prepared)?;
                let bound = self
                    .ctx
                    .try_bind(&prepared, declared, QueryKind::Push)
                    .await?;
                Ok(Described {
                    schema: bound.map(|p| p.output_schema),
                    params: Vec::new(),
                })
            }
            Statement::Select(select) => {
                let ctx = plan::session();
                let plan = self.plan(&ctx, &select.query, Tables::Schemas).await?;
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
                    let declared = if datacell::in_schema(name) {
                        None
                    } else {
                        self.ctx.declared_schema(&plan::object_name(name)?)?
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

    /// Runs a pull query: its column names and rows.
    pub(crate) async fn run(
        &self,
        ctx: &SessionContext,
        query: &sql::Query,
    ) -> Result<(Vec<String>, Vec<RecordBatch>)> {
        let (schema, batches) = self.run_batches(ctx, query).await?;
        Ok((
            schema.fields().iter().map(|f| f.name().clone()).collect(),
            batches,
        ))
    }

    /// Runs a pull query: its schema and rows.
    pub(crate) async fn run_batches(
        &self,
        ctx: &SessionContext,
        query: &sql::Query,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let plan = self.plan(ctx, query, Tables::Now).await?;
        let df = ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = df.schema().as_arrow().clone().into();
        let batches = df.collect().await?;
        Ok((schema, batches))
    }

    /// Plans a query, registering what it reads in `ctx` as `tables` says.
    pub(crate) async fn plan(
        &self,
        ctx: &SessionContext,
        query: &sql::Query,
        tables: Tables<'_>,
    ) -> Result<LogicalPlan> {
        let mut query = query.clone();
        datacell::rewrite_catalog_functions(&mut query);
        reject_windows(&query)?;
        plan::hstream_functions(&mut query)?;
        let stmt = DfStatement::Statement(Box::new(sql::Statement::Query(Box::new(query))));
        let (references, _) = datafusion::sql::resolve::resolve_table_references(&stmt, false)?;
        for t in references {
            let name = t.table().to_string();
            let table: Arc<dyn TableProvider> = if t
                .schema()
                .is_some_and(|s| s.eq_ignore_ascii_case(datacell::SCHEMA))
                && t.catalog().is_none()
            {
                self.basket_table(&name, &tables)?
            } else if t.schema().is_some() {
                return Err(EngineError::invalid(format!(
                    "{t}: qualified names are not supported here"
                )));
            } else if let Some(v) = self.queries.view(&name) {
                self.view_table(v, &tables)?
            } else if self.ctx.catalog.get_stream(&name)?.is_some() {
                self.stream_table(&name, &tables).await?
            } else {
                return Err(EngineError::NotFound(format!(
                    "no stream or view named {name:?}"
                )));
            };
            register(ctx, &t, table)?;
        }
        let state = ctx.state();
        Ok(state.statement_to_plan(stmt).await?)
    }

    /// A `datacell.<basket>` or `datacell."<function>()"` table.
    fn basket_table(&self, name: &str, tables: &Tables<'_>) -> Result<Arc<dyn TableProvider>> {
        let Tables::Later(taken) = tables else {
            let (schema, batches) = self.datacell.table_rows(name)?;
            return Ok(Arc::new(MemTable::try_new(schema, vec![batches])?));
        };
        if let Some(f) = name.strip_suffix("()") {
            let f = f.to_ascii_lowercase();
            let schema = self.datacell.catalog_table(&f)?.schema();
            let rows = Arc::new(datacell::CatalogRows::new(self.datacell.clone(), f));
            return Ok(Arc::new(LazyTable::new(schema, rows)));
        }
        let basket = self.datacell.basket(name)?;
        let rows: Arc<dyn Rows> = match taken.get(&basket.name) {
            Some(rows) => rows.clone(),
            None => basket.clone(),
        };
        Ok(Arc::new(LazyTable::new(basket.schema.clone(), rows)))
    }

    /// A view's table: its rows now, or at each run.
    fn view_table(
        &self,
        view: Arc<QueryShared>,
        tables: &Tables<'_>,
    ) -> Result<Arc<dyn TableProvider>> {
        let no_columns = |v: &QueryShared| {
            EngineError::Precondition(format!(
                "view {:?} has no columns yet: its stream {:?} has no records to learn them \
                 from (declare the stream's columns to know them at once)",
                v.name, v.source
            ))
        };
        if let Tables::Later(_) = tables {
            let schema = view.output_schema().ok_or_else(|| no_columns(&view))?;
            return Ok(Arc::new(LazyTable::new(schema, Arc::new(ViewRows(view)))));
        }
        let (schema, batches) = view.view_rows()?.ok_or_else(|| no_columns(&view))?;
        Ok(Arc::new(MemTable::try_new(schema, vec![batches])?))
    }

    /// A stream's table: its history now, its columns only, or its history at each run.
    async fn stream_table(
        &self,
        name: &str,
        tables: &Tables<'_>,
    ) -> Result<Arc<dyn TableProvider>> {
        let (schema, batches) = match tables {
            Tables::Now => self.ctx.history(name).await?,
            Tables::Schemas => (self.ctx.stream_columns(name).await?, Vec::new()),
            Tables::Later(_) => {
                let schema = self.ctx.stream_columns(name).await?;
                let rows = Arc::new(StreamRows {
                    ctx: self.ctx.clone(),
                    stream: name.to_string(),
                    schema: schema.clone(),
                });
                return Ok(Arc::new(LazyTable::new(schema, rows)));
            }
        };
        Ok(Arc::new(MemTable::try_new(schema, vec![batches])?))
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
        let declared = self.ctx.sources_of(&prepared)?;
        // A source with neither declared columns nor records has no columns yet.
        let schemas = self
            .ctx
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
        let mut out = Listing::new(&[("plan", false)]);
        for line in text.lines() {
            out.push(vec![line.into()]);
        }
        out.into_output()
    }
}

/// Registers `table` under `reference` (`datacell.x` in a schema of its own).
fn register(
    ctx: &SessionContext,
    reference: &TableReference,
    table: Arc<dyn TableProvider>,
) -> Result<()> {
    let Some(schema_name) = reference.schema() else {
        ctx.register_table(TableReference::bare(reference.table()), table)?;
        return Ok(());
    };
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| EngineError::internal("no default catalog"))?;
    let provider = match catalog.schema(schema_name) {
        Some(p) => p,
        None => {
            let p: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
            catalog.register_schema(schema_name, p.clone())?;
            p
        }
    };
    if !provider.table_exist(reference.table()) {
        provider.register_table(reference.table().to_string(), table)?;
    }
    Ok(())
}

/// A stream's history, read at each run of a plan, as rows of the columns it was planned
/// with.
struct StreamRows {
    ctx: Arc<Context>,
    stream: String,
    schema: SchemaRef,
}

#[async_trait]
impl Rows for StreamRows {
    async fn rows(&self) -> Result<Vec<RecordBatch>> {
        let (_, batches) = self
            .ctx
            .history_as(&self.stream, Some(self.schema.clone()))
            .await?;
        Ok(batches)
    }

    fn describe(&self) -> String {
        format!("stream {:?}", self.stream)
    }
}

/// A view's rows at each run of a plan.
struct ViewRows(Arc<QueryShared>);

#[async_trait]
impl Rows for ViewRows {
    async fn rows(&self) -> Result<Vec<RecordBatch>> {
        Ok(self.0.view_rows()?.map(|(_, b)| b).unwrap_or_default())
    }

    fn describe(&self) -> String {
        format!("view {:?}", self.0.name)
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
