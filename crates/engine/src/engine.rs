//! The engine: runs StreamCell SQL statements. It owns the registry of persistent queries and
//! views (saved in the catalog, restarted from their checkpoints when the server starts),
//! starts push queries for clients, answers pull queries over views and stream history with
//! DataFusion, and implements `FLUSH`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::sql::parser::Statement as DfStatement;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlparser::ast::{self as sql, Expr, SetExpr, TableFactor};
use streamcell_sql::{ObjectKind, Select, Statement};
use streamcell_store::{Catalog, ShardLog};
use tokio::sync::mpsc;

use crate::continuous::plan;
use crate::decode::rows_to_batch;
use crate::error::{EngineError, Result};
use crate::query::{
    self, streams_of, Control, QueryKind, QueryRun, QueryShared, QueryStatus, Sink,
};
use crate::source::{Start, StreamCursor};
use crate::value::{self, render_rows, JsonRow};
use streamcell_service::{Deletion, Service, StreamSpec};

/// Catalog kind of persistent queries and views.
const QUERY_KIND: &str = "sql.query";
/// Catalog kind of declared stream schemas.
const SCHEMA_KIND: &str = "sql.stream_schema";
/// Default retention of `CREATE STREAM` without `DURATION` (HStreamDB's: 7 days).
const DEFAULT_DURATION_SECS: u32 = 7 * 86_400;
/// A pull query over a stream reads at most this many records of its history.
const MAX_PULL_RECORDS: usize = 2_000_000;
/// `PAUSE`/`RESUME` wait at most this long for the query thread to act on them.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// `FLUSH` gives up on a query that makes no progress for this long.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// What one statement produced. Rows come as Arrow batches; each front door encodes them
/// for its clients (JSON for gRPC, PostgreSQL types for pgwire).
pub enum Output {
    /// A command's message (`Done.`).
    Done(String),
    /// Rows of `SHOW`, `EXPLAIN` and other listings, made as JSON objects.
    Rows {
        /// Column names.
        columns: Vec<String>,
        /// The rows.
        rows: Vec<String>,
    },
    /// The result of a pull query.
    Table {
        /// Its columns.
        schema: SchemaRef,
        /// Its rows.
        batches: Vec<RecordBatch>,
    },
    /// A push query: rows arrive on `rx` until the receiver is dropped (which stops the
    /// query) or the query fails (an `Err` item).
    Push {
        /// The rows' columns, when the query could bind at once (its source has declared
        /// columns or records); otherwise each batch carries them.
        schema: Option<SchemaRef>,
        /// Row batches.
        rx: mpsc::Receiver<Result<RecordBatch>>,
        /// Stops the query when dropped.
        guard: PushGuard,
    },
}

impl Output {
    /// Rows as JSON objects, the way the HStreamDB CLI prints them (`None` for `Done` and
    /// push queries).
    pub fn json_rows(self) -> Result<Option<(Vec<String>, Vec<String>)>> {
        match self {
            Output::Rows { columns, rows } => Ok(Some((columns, rows))),
            Output::Table { schema, batches } => {
                let mut rows = Vec::new();
                for b in &batches {
                    rows.extend(render_rows(b)?);
                }
                let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
                Ok(Some((columns, rows)))
            }
            Output::Done(_) | Output::Push { .. } => Ok(None),
        }
    }
}

/// A stream, view or DataCell basket as a SQL catalog (PostgreSQL's `pg_class`,
/// `information_schema.tables`) lists it.
#[derive(Debug, Clone)]
pub struct Relation {
    /// `public` (streams, tables, views) or `datacell` (baskets).
    pub schema: String,
    /// Its name.
    pub name: String,
    /// A view (otherwise rows are appended to it: a stream, a table, a basket).
    pub is_view: bool,
    /// Its columns (a stream's declared or sampled ones; none while they are unknown).
    pub columns: Vec<(String, arrow::datatypes::DataType)>,
}

/// What a statement will produce, found without running it (for the extended query
/// protocol's Describe).
#[derive(Debug, Clone, Default)]
pub struct Described {
    /// The columns of its rows; `None` when it returns none or they are known only when it
    /// runs.
    pub schema: Option<SchemaRef>,
    /// Types the plan infers for its `$1`, `$2`, … parameters (by position; `None` where it
    /// cannot tell).
    pub params: Vec<Option<arrow::datatypes::DataType>>,
}

/// Stops a push query when dropped.
pub struct PushGuard(Arc<QueryShared>);

impl Drop for PushGuard {
    fn drop(&mut self) {
        self.0.control(Control::Stop);
    }
}

/// A persistent query or view as the management RPCs show it.
#[derive(Debug, Clone)]
pub struct QueryInfo {
    /// Query name (a view's is the view's name).
    pub name: String,
    /// Stream query or view.
    pub kind: QueryKind,
    /// Status.
    pub status: QueryStatus,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// SQL text.
    pub sql: String,
    /// The stream it reads.
    pub source: String,
    /// The stream it writes (stream queries) or the view's name.
    pub result: String,
    /// A view's columns (empty until it binds).
    pub columns: Vec<String>,
}

/// A persistent query's or view's counters, for metrics (`/metrics`, the REST API).
#[derive(Debug, Clone)]
pub struct QueryStats {
    /// Query name (a view's is the view's name).
    pub name: String,
    /// Stream query or view.
    pub kind: QueryKind,
    /// Status.
    pub status: QueryStatus,
    /// Records read from its sources so far (since the server started).
    pub records_in: u64,
    /// Rows produced so far (since the server started).
    pub rows_out: u64,
    /// The source positions fully processed, `(shard, next sequence number)`; empty until
    /// the query first runs.
    pub progress: Vec<(u64, u64)>,
}

impl Engine {
    /// The counters of every persistent query and view.
    pub fn query_stats(&self) -> Vec<QueryStats> {
        lock(&self.queries)
            .values()
            .map(|e| {
                let s = &e.shared;
                let (records_in, rows_out) = s.counters();
                QueryStats {
                    name: s.name.clone(),
                    kind: s.kind,
                    status: s.status(),
                    records_in,
                    rows_out,
                    progress: s.progress(),
                }
            })
            .collect()
    }
}

/// A persistent query or view as the catalog keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedQuery {
    sql: String,
    kind: QueryKind,
    source: String,
    target: Option<String>,
    created_ms: i64,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    terminated: bool,
}

/// A declared stream schema as the catalog keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedSchema {
    /// The stream's creation time, to tell it from a later stream of the same name.
    stream_created_ms: i64,
    /// Columns: name and SQL type text.
    columns: Vec<(String, String)>,
}

struct Entry {
    shared: Arc<QueryShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The SQL engine.
pub struct Engine {
    pub(crate) catalog: Arc<dyn Catalog>,
    log: Arc<dyn ShardLog>,
    pub(crate) service: Arc<Service>,
    /// DataCell's baskets, adapters and continuous queries.
    pub(crate) datacell: Arc<crate::datacell::DataCell>,
    runtime: tokio::runtime::Handle,
    queries: Mutex<BTreeMap<String, Entry>>,
    ddl: tokio::sync::Mutex<()>,
    push_seq: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn done() -> Output {
    Output::Done("Done.".into())
}

fn single_name(name: &sql::ObjectName) -> Result<String> {
    plan::object_name(name)
}

impl Engine {
    /// An engine over the stream service (and its store), its queries running on `runtime`.
    pub fn new(service: Arc<Service>, runtime: tokio::runtime::Handle) -> Arc<Self> {
        Arc::new(Engine {
            catalog: service.store().catalog.clone(),
            log: service.store().log.clone(),
            service,
            runtime,
            queries: Mutex::new(BTreeMap::new()),
            ddl: tokio::sync::Mutex::new(()),
            push_seq: std::sync::atomic::AtomicU64::new(0),
            datacell: Arc::new(crate::datacell::DataCell::new()),
        })
    }

    /// Restarts the saved persistent queries and views from their checkpoints, and starts
    /// DataCell's scheduler.
    pub fn start(self: &Arc<Self>) -> Result<()> {
        self.runtime
            .spawn(crate::datacell::run::scheduler(Arc::downgrade(self)));
        for (name, doc) in self.catalog.list_objects(QUERY_KIND)? {
            let saved: SavedQuery = serde_json::from_str(&doc).map_err(|e| {
                EngineError::internal(format!("saved query {name:?} is unreadable: {e}"))
            })?;
            let shared = QueryShared::new(
                name.clone(),
                saved.sql.clone(),
                saved.kind,
                saved.source.clone(),
                saved.target.clone(),
                saved.created_ms,
            );
            let mut entry = Entry {
                shared: shared.clone(),
                thread: None,
            };
            if saved.terminated {
                shared.control(Control::Stop);
                lock(&self.queries).insert(name, entry);
                continue;
            }
            if saved.paused {
                shared.control(Control::Pause);
            }
            match self.launch(&shared, &saved.sql) {
                Ok(t) => entry.thread = Some(t),
                Err(e) => {
                    // Marked FAILED with the reason (GetQuery, SHOW QUERIES say why); the
                    // server serves everything else.
                    tracing::warn!(query = %name, error = %e, "saved query cannot restart");
                    shared.control(Control::Stop);
                    shared.set_status(QueryStatus::Failed(format!("cannot restart: {e}")));
                }
            }
            lock(&self.queries).insert(name, entry);
        }
        Ok(())
    }

    /// Stops every query thread (server shutdown). Checkpoints are taken as they stop.
    pub fn shutdown(&self) {
        let threads: Vec<_> = {
            let mut q = lock(&self.queries);
            q.values_mut()
                .filter_map(|e| {
                    e.shared.control(Control::Stop);
                    e.thread.take()
                })
                .collect()
        };
        for t in threads {
            let _ = t.join();
        }
    }

    /// Every persistent query and view.
    pub fn list(&self) -> Vec<QueryInfo> {
        lock(&self.queries)
            .values()
            .map(|e| {
                let s = &e.shared;
                QueryInfo {
                    name: s.name.clone(),
                    kind: s.kind,
                    status: s.status(),
                    created_ms: s.created_ms,
                    sql: s.sql.clone(),
                    source: s.source.clone(),
                    result: s.target.clone().unwrap_or_else(|| s.name.clone()),
                    columns: s.output_columns(),
                }
            })
            .collect()
    }

    /// One persistent query or view.
    pub fn get(&self, name: &str) -> Result<QueryInfo> {
        self.list()
            .into_iter()
            .find(|q| q.name == name)
            .ok_or_else(|| EngineError::NotFound(format!("query {name:?} does not exist")))
    }

    /// `CreateQuery`: a `CREATE STREAM … AS SELECT` or `CREATE VIEW` statement; `name` names
    /// a stream query (empty: the stream's name); a view's query is named after the view.
    pub async fn create_query(self: &Arc<Self>, sql_text: &str, name: &str) -> Result<QueryInfo> {
        let mut stmts = self.parse(sql_text)?;
        if stmts.len() != 1 {
            return Err(EngineError::invalid("CreateQuery takes one statement"));
        }
        let query_name = match stmts.remove(0) {
            Statement::CreateStream(cs) if cs.as_select.is_some() => {
                let stream = single_name(&cs.name)?;
                let query_name = if name.is_empty() {
                    stream.clone()
                } else {
                    name.to_string()
                };
                let select = cs
                    .as_select
                    .clone()
                    .ok_or_else(|| EngineError::internal("checked"))?;
                let spec = self.stream_spec(&cs)?;
                self.create_persistent(query_name.clone(), select, QueryKind::Stream, Some(spec))
                    .await?;
                query_name
            }
            Statement::CreateView { name: v, query } => {
                let v = single_name(&v)?;
                self.create_persistent(v.clone(), query, QueryKind::View, None)
                    .await?;
                v
            }
            _ => {
                return Err(EngineError::invalid(
                    "CreateQuery takes CREATE STREAM … AS SELECT or CREATE VIEW … AS SELECT",
                ))
            }
        };
        self.get(&query_name)
    }

    /// `ParseSql`: the view a pull query reads, when `sql` is one `SELECT … FROM <view>`
    /// (HStreamDB's `ExecuteViewQuerySql`). Syntax errors say where; any other statement is
    /// refused: this RPC exists for clients that route view queries.
    pub fn view_of_query(&self, sql_text: &str) -> Result<String> {
        let mut stmts = self.parse(sql_text)?;
        if stmts.len() != 1 {
            return Err(EngineError::invalid(format!(
                "ParseSql takes one statement, got {}",
                stmts.len()
            )));
        }
        let not_view = || {
            EngineError::invalid(
                "ParseSql answers only queries of a view (SELECT … FROM <view>, without EMIT \
                 CHANGES)",
            )
        };
        let Statement::Select(select) = stmts.remove(0) else {
            return Err(not_view());
        };
        if select.emit_changes {
            return Err(not_view());
        }
        let sqlparser::ast::SetExpr::Select(body) = select.query.body.as_ref() else {
            return Err(not_view());
        };
        let [from] = body.from.as_slice() else {
            return Err(not_view());
        };
        if !from.joins.is_empty() {
            return Err(not_view());
        }
        let sqlparser::ast::TableFactor::Table {
            name, args: None, ..
        } = &from.relation
        else {
            return Err(not_view());
        };
        let view = single_name(name)?;
        let is_view = lock(&self.queries)
            .get(&view)
            .is_some_and(|e| e.shared.kind == QueryKind::View);
        if !is_view {
            return Err(EngineError::NotFound(format!(
                "view {view:?} does not exist"
            )));
        }
        Ok(view)
    }

    /// Parses `sql` into statements.
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        Ok(streamcell_sql::parse(sql)?)
    }

    /// Parses and runs text that must hold exactly one statement.
    pub async fn execute_one(self: &Arc<Self>, text: &str) -> Result<Output> {
        let mut stmts = self.parse(text)?;
        match stmts.pop() {
            Some(s) if stmts.is_empty() => self.execute(s).await,
            _ => Err(EngineError::Invalid(format!("not one statement: {text}"))),
        }
    }

    /// Runs one statement.
    pub async fn execute(self: &Arc<Self>, stmt: Statement) -> Result<Output> {
        match stmt {
            Statement::CreateStream(cs) => {
                let name = single_name(&cs.name)?;
                let spec = self.stream_spec(&cs)?;
                match cs.as_select {
                    None => self.create_declared_stream(&cs, spec).await,
                    Some(select) => {
                        if !cs.columns.is_empty() {
                            return Err(EngineError::invalid(
                                "CREATE STREAM … AS SELECT takes its columns from the SELECT",
                            ));
                        }
                        self.create_persistent(name, select, QueryKind::Stream, Some(spec))
                            .await
                    }
                }
            }
            Statement::CreateView { name, query } => {
                let name = single_name(&name)?;
                self.create_persistent(name, query, QueryKind::View, None)
                    .await
            }
            Statement::Select(select) if select.emit_changes => {
                let prepared = plan::prepare(&select.query, &select.within)?;
                let declared = self.sources_of(&prepared)?;
                let bound = self.try_bind(&prepared, declared, QueryKind::Push).await?;
                self.push(select, bound.map(|p| p.output_schema))
            }
            Statement::Select(select) => self.pull_on_query_threads(select).await,
            Statement::InsertJson { stream, json } => {
                let stream = single_name(&stream)?;
                let row = match serde_json::from_str::<Value>(&json) {
                    Ok(Value::Object(m)) => m,
                    Ok(_) => {
                        return Err(EngineError::invalid(
                            "INSERT … VALUES '<json>' takes a JSON object",
                        ))
                    }
                    Err(e) => return Err(EngineError::invalid(format!("invalid JSON: {e}"))),
                };
                self.check_declared(&stream, &row)?;
                crate::writer::append_rows(&self.service, &stream, &[row], |_| Vec::new()).await?;
                Ok(done())
            }
            Statement::Drop {
                kind,
                name,
                if_exists,
            } => {
                self.drop_object(kind, &single_name(&name)?, if_exists)
                    .await
            }
            Statement::Show(kind) => self.show(kind),
            Statement::Terminate(name) => {
                let names: Vec<String> = match name {
                    Some(n) => vec![single_name(&n)?],
                    None => lock(&self.queries).keys().cloned().collect(),
                };
                for n in names {
                    self.set_saved_flag(&n, |s| s.terminated = true)?;
                    let thread = {
                        let mut q = lock(&self.queries);
                        let e = q.get_mut(&n).ok_or_else(|| {
                            EngineError::NotFound(format!("query {n:?} does not exist"))
                        })?;
                        e.shared.control(Control::Stop);
                        e.thread.take()
                    };
                    if let Some(t) = thread {
                        let _ = tokio::task::spawn_blocking(move || t.join()).await;
                    }
                }
                Ok(done())
            }
            Statement::Pause(name) => {
                let n = single_name(&name)?;
                let shared = self.running(&n)?;
                self.set_saved_flag(&n, |s| s.paused = true)?;
                shared.control(Control::Pause);
                // Answer once the query thread has paused (it checks between micro-batches),
                // so the status a client reads next says so.
                if !shared
                    .wait_status(&QueryStatus::Paused, CONTROL_TIMEOUT)
                    .await
                {
                    tracing::warn!(query = %n, "still finishing a batch {CONTROL_TIMEOUT:?} after PAUSE");
                }
                Ok(done())
            }
            Statement::Resume(name) => {
                let n = single_name(&name)?;
                let shared = self.running(&n)?;
                if shared.wanted() != Control::Pause {
                    return Err(EngineError::Precondition(format!(
                        "query {n:?} is not paused"
                    )));
                }
                self.set_saved_flag(&n, |s| s.paused = false)?;
                shared.control(Control::Run);
                if !shared
                    .wait_status(&QueryStatus::Running, CONTROL_TIMEOUT)
                    .await
                {
                    tracing::warn!(query = %n, "not running yet {CONTROL_TIMEOUT:?} after RESUME");
                }
                Ok(done())
            }
            Statement::Explain(inner) => self.explain(*inner).await,
            Statement::Flush => self.flush().await,
            Statement::CreateTableLike { name, like } => self.create_table_like(&name, &like),
            Statement::CreateProcedure { name, body, text } => {
                self.create_procedure(&name, body, text)
            }
            Statement::Sql(stmt) => self.standard(*stmt).await,
        }
    }

    /// `CREATE STREAM s [(columns)]` (and durable tables): the stream, and its declared
    /// columns if any.
    pub(crate) async fn create_declared_stream(
        &self,
        cs: &streamcell_sql::CreateStream,
        spec: StreamSpec,
    ) -> Result<Output> {
        let name = spec.name.clone();
        let columns = cs
            .columns
            .iter()
            .map(|c| {
                value::declared_type(&c.data_type)?;
                Ok((c.name.value.clone(), c.data_type.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let _ddl = self.ddl.lock().await;
        self.check_no_view(&name)?;
        self.service.create_stream(spec).await?;
        if !columns.is_empty() {
            let created = self.catalog.get_stream(&name)?.map_or(0, |m| m.created_ms);
            let doc = SavedSchema {
                stream_created_ms: created,
                columns,
            };
            self.catalog.put_object(
                SCHEMA_KIND,
                &name,
                &serde_json::to_string(&doc).map_err(|e| EngineError::internal(e.to_string()))?,
                false,
            )?;
        }
        Ok(done())
    }

    /// The stream a `CREATE STREAM` asks for.
    fn stream_spec(&self, cs: &streamcell_sql::CreateStream) -> Result<StreamSpec> {
        let replication_factor = match cs.replicate {
            None => 1,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| (1..=15).contains(n))
                .ok_or_else(|| EngineError::invalid("REPLICATE must be between 1 and 15"))?,
        };
        let backlog_secs = match &cs.duration {
            None => DEFAULT_DURATION_SECS,
            Some(e) => {
                let ms = plan::interval_ms(e)?;
                u32::try_from(ms / 1000)
                    .ok()
                    .filter(|s| *s >= 1)
                    .ok_or_else(|| {
                        EngineError::invalid(
                            "DURATION must be between 1 second and about 136 years",
                        )
                    })?
            }
        };
        Ok(StreamSpec {
            name: single_name(&cs.name)?,
            replication_factor,
            backlog_secs,
            shard_count: 1,
        })
    }

    /// Streams and views share one namespace (both are read by name in FROM).
    fn check_no_view(&self, name: &str) -> Result<()> {
        if lock(&self.queries)
            .get(name)
            .is_some_and(|e| e.shared.kind == QueryKind::View)
        {
            return Err(EngineError::AlreadyExists(format!(
                "a view named {name:?} exists already"
            )));
        }
        Ok(())
    }

    /// A query that exists and has not been terminated.
    fn running(&self, name: &str) -> Result<Arc<QueryShared>> {
        let q = lock(&self.queries);
        let e = q
            .get(name)
            .ok_or_else(|| EngineError::NotFound(format!("query {name:?} does not exist")))?;
        match e.shared.status() {
            QueryStatus::Terminated | QueryStatus::Failed(_) => {
                Err(EngineError::Precondition(format!(
                    "query {name:?} is not running ({})",
                    e.shared.status().label()
                )))
            }
            _ => Ok(e.shared.clone()),
        }
    }

    fn set_saved_flag(&self, name: &str, f: impl FnOnce(&mut SavedQuery)) -> Result<()> {
        let Some(doc) = self.catalog.get_object(QUERY_KIND, name)? else {
            return Err(EngineError::NotFound(format!(
                "query {name:?} does not exist"
            )));
        };
        let mut saved: SavedQuery =
            serde_json::from_str(&doc).map_err(|e| EngineError::internal(e.to_string()))?;
        f(&mut saved);
        let doc =
            serde_json::to_string(&saved).map_err(|e| EngineError::internal(e.to_string()))?;
        self.catalog.put_object(QUERY_KIND, name, &doc, false)?;
        Ok(())
    }

    /// The declared schema of a stream, if it has one.
    pub(crate) fn declared_schema(&self, stream: &str) -> Result<Option<SchemaRef>> {
        let Some(doc) = self.catalog.get_object(SCHEMA_KIND, stream)? else {
            return Ok(None);
        };
        let saved: SavedSchema =
            serde_json::from_str(&doc).map_err(|e| EngineError::internal(e.to_string()))?;
        match self.catalog.get_stream(stream)? {
            Some(m) if m.created_ms == saved.stream_created_ms => {}
            // A stream of the same name created since (through the gRPC API): no schema.
            _ => return Ok(None),
        }
        let mut fields = Vec::new();
        for (name, ty) in &saved.columns {
            let parsed = sqlparser::parser::Parser::new(&sqlparser::dialect::GenericDialect {})
                .try_with_sql(ty)
                .and_then(|mut p| p.parse_data_type())
                .map_err(|e| EngineError::internal(format!("saved column type {ty:?}: {e}")))?;
            fields.push(Field::new(name, value::declared_type(&parsed)?, true));
        }
        Ok(Some(Arc::new(Schema::new(fields))))
    }

    /// Checks a record against a stream's declared columns: unknown fields and values of the
    /// wrong type are errors.
    fn check_declared(&self, stream: &str, row: &JsonRow) -> Result<()> {
        let Some(schema) = self.declared_schema(stream)? else {
            return Ok(());
        };
        for (k, v) in row {
            let field = schema.field_with_name(k).map_err(|_| {
                EngineError::invalid(format!(
                    "stream {stream:?} has no column {k:?} (columns: {})",
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            if v.is_null() {
                continue;
            }
            let one = JsonRow::from_iter([(k.clone(), v.clone())]);
            let s = Arc::new(Schema::new(vec![field.clone()]));
            let b = rows_to_batch(&s, &[&one])?;
            if b.column(0).is_null(0) {
                return Err(EngineError::invalid(format!(
                    "column {k:?} is {}, and {v} is not",
                    field.data_type()
                )));
            }
        }
        Ok(())
    }

    async fn create_persistent(
        self: &Arc<Self>,
        name: String,
        select: Select,
        kind: QueryKind,
        target: Option<StreamSpec>,
    ) -> Result<Output> {
        let prepared = plan::prepare(&select.query, &select.within)?;
        let source = prepared.source.stream.clone();
        let _ddl = self.ddl.lock().await;
        self.sources_of(&prepared)?;
        if lock(&self.queries).contains_key(&name) {
            return Err(EngineError::AlreadyExists(format!(
                "a query or view named {name:?} exists already"
            )));
        }
        if kind == QueryKind::View && self.catalog.get_stream(&name)?.is_some() {
            return Err(EngineError::AlreadyExists(format!(
                "a stream named {name:?} exists already"
            )));
        }
        if let Some(spec) = &target {
            if streams_of(&prepared).contains(&spec.name) {
                return Err(EngineError::invalid(
                    "a query cannot write into the stream it reads",
                ));
            }
        }
        if kind == QueryKind::View {
            let aggregates = match select.query.body.as_ref() {
                SetExpr::Select(sel) => {
                    !matches!(&sel.group_by, sql::GroupByExpr::Expressions(e, _) if e.is_empty())
                        || plan::select_has_aggregate(sel)
                }
                _ => false,
            };
            if !aggregates {
                return Err(EngineError::invalid(query::VIEW_NEEDS_AGGREGATE));
            }
        }
        let declared = self.sources_of(&prepared)?;
        let prebound = self.try_bind(&prepared, declared, kind).await?;
        let sql_text = match (&target, kind) {
            (Some(t), _) => format!("CREATE STREAM {} AS {}", t.name, select_text(&select)),
            (None, _) => format!("CREATE VIEW {name} AS {}", select_text(&select)),
        };
        let saved = SavedQuery {
            sql: sql_text.clone(),
            kind,
            source: source.clone(),
            target: target.as_ref().map(|t| t.name.clone()),
            created_ms: now_ms(),
            paused: false,
            terminated: false,
        };
        // Check that it plans now if the source has data (errors early, not after the fact).
        let shared = QueryShared::new(
            name.clone(),
            sql_text.clone(),
            kind,
            source,
            saved.target.clone(),
            saved.created_ms,
        );
        if let Some(spec) = target {
            self.check_no_view(&spec.name)?;
            self.service.create_stream(spec).await?;
        }
        let doc =
            serde_json::to_string(&saved).map_err(|e| EngineError::internal(e.to_string()))?;
        if !self.catalog.put_object(QUERY_KIND, &name, &doc, true)? {
            return Err(EngineError::AlreadyExists(format!(
                "a query or view named {name:?} exists already"
            )));
        }
        // A query bound now answers at once (a view's SELECT right after CREATE); its thread
        // takes the pipeline from here.
        shared.set_pipeline(prebound);
        let thread = match self.launch(&shared, &sql_text) {
            Ok(t) => t,
            Err(e) => {
                self.catalog.delete_object(QUERY_KIND, &name)?;
                return Err(e);
            }
        };
        lock(&self.queries).insert(
            name,
            Entry {
                shared,
                thread: Some(thread),
            },
        );
        Ok(done())
    }

    /// Starts the thread of a saved query or view.
    fn launch(
        &self,
        shared: &Arc<QueryShared>,
        sql_text: &str,
    ) -> Result<std::thread::JoinHandle<()>> {
        let select = match streamcell_sql::parse(sql_text)?.into_iter().next() {
            Some(Statement::CreateStream(cs)) => cs
                .as_select
                .ok_or_else(|| EngineError::internal("saved query has no SELECT"))?,
            Some(Statement::CreateView { query, .. }) => query,
            _ => return Err(EngineError::internal("saved query is not a CREATE")),
        };
        let prepared = plan::prepare(&select.query, &select.within)?;
        let declared = self.sources_of(&prepared)?;
        let sink = match shared.kind {
            QueryKind::Stream => Sink::Stream(
                shared
                    .target
                    .clone()
                    .ok_or_else(|| EngineError::internal("stream query without target"))?,
            ),
            QueryKind::View => Sink::View,
            QueryKind::Push => return Err(EngineError::internal("push queries are not saved")),
        };
        query::spawn(QueryRun {
            shared: shared.clone(),
            prepared,
            per_row: shared.kind == QueryKind::Stream,
            sink,
            catalog: self.catalog.clone(),
            log: self.log.clone(),
            service: self.service.clone(),
            runtime: self.runtime.clone(),
            saved_as: Some(QUERY_KIND),
            declared,
            start: Start::Earliest,
        })
    }

    /// Plans a continuous query now if its source's schema is known (declared, or records to
    /// infer it from), so mistakes are reported to the statement rather than later.
    async fn try_bind(
        &self,
        prepared: &plan::Prepared,
        declared: Vec<Option<SchemaRef>>,
        kind: QueryKind,
    ) -> Result<Option<crate::continuous::plan::Pipeline>> {
        match self.source_schemas(prepared, declared).await? {
            Some(schemas) => Ok(Some(query::build(prepared, &schemas, kind).await?)),
            None => Ok(None),
        }
    }

    /// The schema of each stream a query reads, as its thread would bind to them (declared,
    /// or inferred from a sample); `None` while one has neither.
    async fn source_schemas(
        &self,
        prepared: &plan::Prepared,
        declared: Vec<Option<SchemaRef>>,
    ) -> Result<Option<Vec<Schema>>> {
        let mut schemas = Vec::new();
        for (i, stream) in streams_of(prepared).into_iter().enumerate() {
            let d = declared.get(i).cloned().flatten();
            match self.sampled_schema(stream, d).await? {
                Some(s) => schemas.push(s),
                None => return Ok(None),
            }
        }
        Ok(Some(schemas))
    }

    /// The declared schemas of the streams a query reads, checking they exist.
    fn sources_of(&self, prepared: &plan::Prepared) -> Result<Vec<Option<SchemaRef>>> {
        streams_of(prepared)
            .iter()
            .map(|s| {
                if self.catalog.get_stream(s)?.is_none() {
                    return Err(EngineError::NotFound(format!(
                        "stream {s:?} does not exist"
                    )));
                }
                self.declared_schema(s)
            })
            .collect()
    }

    fn push(self: &Arc<Self>, select: Select, schema: Option<SchemaRef>) -> Result<Output> {
        let prepared = plan::prepare(&select.query, &select.within)?;
        let declared = self.sources_of(&prepared)?;
        let stream = prepared.source.stream.clone();
        let id = self
            .push_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let shared = QueryShared::new(
            format!("push-{id}"),
            select.query.to_string(),
            QueryKind::Push,
            stream,
            None,
            now_ms(),
        );
        let (tx, rx) = mpsc::channel(16);
        let run = QueryRun {
            shared: shared.clone(),
            prepared,
            per_row: true,
            sink: Sink::Push(tx),
            catalog: self.catalog.clone(),
            log: self.log.clone(),
            service: self.service.clone(),
            runtime: self.runtime.clone(),
            saved_as: None,
            declared,
            start: Start::Earliest,
        };
        // Plan errors (unknown column, type errors) surface before any row: a query on a stream
        // with records binds now; one on an empty stream binds when its first record arrives.
        query::spawn(run)?;
        Ok(Output::Push {
            schema,
            rx,
            guard: PushGuard(shared),
        })
    }

    /// Reads a stream's whole history as rows of its (declared or inferred) schema.
    async fn history(&self, stream: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
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
    async fn pull_on_query_threads(self: &Arc<Self>, select: Select) -> Result<Output> {
        let Some(rt) = query_runtime() else {
            return self.pull(&select).await;
        };
        let engine = self.clone();
        let task = AbortOnDrop(rt.spawn(async move { engine.pull(&select).await }));
        task.await
            .map_err(|e| EngineError::internal(format!("the pull query's task failed: {e}")))?
    }

    async fn pull(&self, select: &Select) -> Result<Output> {
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

    async fn run_pull_batches(
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
    async fn pull_plan(
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
    async fn stream_columns(&self, stream: &str) -> Result<SchemaRef> {
        let declared = self.declared_schema(stream)?;
        let schema = self.sampled_schema(stream.to_string(), declared).await?;
        Ok(value::nullable(&schema.unwrap_or_else(Schema::empty)))
    }

    /// A stream's schema for planning: `declared`, or inferred from a sample of its records
    /// (`None` while it has none). Reads the log off the async threads.
    async fn sampled_schema(
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

    async fn drop_object(&self, kind: ObjectKind, name: &str, if_exists: bool) -> Result<Output> {
        let _ddl = self.ddl.lock().await;
        match kind {
            ObjectKind::Stream => {
                let users: Vec<String> = lock(&self.queries)
                    .values()
                    .filter(|e| {
                        (e.shared.sources().iter().any(|s| s == name)
                            || e.shared.target.as_deref() == Some(name))
                            && e.shared.status() != QueryStatus::Terminated
                    })
                    .map(|e| e.shared.name.clone())
                    .collect();
                if !users.is_empty() {
                    return Err(EngineError::Precondition(format!(
                        "stream {name:?} is used by {} (drop or terminate them first)",
                        users.join(", ")
                    )));
                }
                let existed =
                    self.service.delete_stream(name, false, true).await? != Deletion::Missing;
                self.catalog.delete_object(SCHEMA_KIND, name)?;
                if !existed && !if_exists {
                    return Err(EngineError::NotFound(format!(
                        "stream {name:?} does not exist"
                    )));
                }
                Ok(done())
            }
            ObjectKind::View | ObjectKind::Query => {
                let want = if kind == ObjectKind::View {
                    QueryKind::View
                } else {
                    QueryKind::Stream
                };
                let entry = {
                    let mut q = lock(&self.queries);
                    match q.get(name) {
                        Some(e) if e.shared.kind == want => q.remove(name),
                        _ => None,
                    }
                };
                let Some(mut entry) = entry else {
                    if if_exists {
                        return Ok(done());
                    }
                    let what = if kind == ObjectKind::View {
                        "view"
                    } else {
                        "query"
                    };
                    return Err(EngineError::NotFound(format!(
                        "{what} {name:?} does not exist"
                    )));
                };
                self.catalog.delete_object(QUERY_KIND, name)?;
                entry.shared.control(Control::Stop);
                if let Some(t) = entry.thread.take() {
                    let _ = tokio::task::spawn_blocking(move || t.join()).await;
                }
                Ok(done())
            }
        }
    }

    fn show(&self, kind: ObjectKind) -> Result<Output> {
        let mut rows = Vec::new();
        let columns: Vec<&str>;
        let mut push = |v: Value| {
            let mut s = String::new();
            value::render(&v, &mut s);
            rows.push(s);
        };
        match kind {
            ObjectKind::Stream => {
                columns = vec![
                    "stream_name",
                    "replication_factor",
                    "backlog_duration",
                    "shard_count",
                ];
                for m in self.catalog.list_streams()? {
                    push(serde_json::json!({
                        "stream_name": m.name,
                        "replication_factor": m.replication_factor,
                        "backlog_duration": m.backlog_secs,
                        "shard_count": m.shard_count,
                    }));
                }
            }
            ObjectKind::Query | ObjectKind::View => {
                let views = kind == ObjectKind::View;
                columns = if views {
                    vec!["view_name", "status", "created_time", "sql"]
                } else {
                    vec![
                        "query_id",
                        "status",
                        "created_time",
                        "sql",
                        "records_in",
                        "rows_out",
                        "error",
                    ]
                };
                for e in lock(&self.queries).values() {
                    let s = &e.shared;
                    if views && s.kind != QueryKind::View {
                        continue;
                    }
                    let status = s.status();
                    let (rin, rout) = s.counters();
                    let mut m = serde_json::Map::new();
                    m.insert(
                        (if views { "view_name" } else { "query_id" }).into(),
                        Value::from(s.name.clone()),
                    );
                    m.insert("status".into(), Value::from(status.label()));
                    m.insert("created_time".into(), Value::from(s.created_ms));
                    m.insert("sql".into(), Value::from(s.sql.clone()));
                    if !views {
                        m.insert("records_in".into(), Value::from(rin));
                        m.insert("rows_out".into(), Value::from(rout));
                        m.insert(
                            "error".into(),
                            match status {
                                QueryStatus::Failed(msg) => Value::from(msg),
                                _ => Value::Null,
                            },
                        );
                    }
                    push(Value::Object(m));
                }
            }
        }
        Ok(Output::Rows {
            columns: columns.into_iter().map(String::from).collect(),
            rows,
        })
    }

    async fn explain(&self, stmt: Statement) -> Result<Output> {
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

    /// Waits until every persistent query and view has processed what its source held when
    /// `FLUSH` began.
    async fn flush(&self) -> Result<Output> {
        let shareds: Vec<Arc<QueryShared>> = lock(&self.queries)
            .values()
            .map(|e| e.shared.clone())
            .collect();
        for s in shareds {
            // A query still waiting for a source to have records (to learn its columns)
            // cannot process anything yet: nothing to wait for.
            if s.status() == QueryStatus::Waiting {
                let mut bindable = true;
                for stream in s.sources() {
                    if self.declared_schema(&stream)?.is_some() {
                        continue;
                    }
                    let Some(meta) = self.catalog.get_stream(&stream)? else {
                        bindable = false;
                        break;
                    };
                    let mut any = false;
                    for shard in meta.shards {
                        let b = self.log.bounds(shard)?;
                        any |= b.tail_seq >= b.start_seq && b.tail_seq > 0;
                    }
                    bindable &= any;
                }
                if !bindable {
                    continue;
                }
            }
            let mut targets = Vec::new();
            for stream in s.sources() {
                let Some(meta) = self.catalog.get_stream(&stream)? else {
                    continue;
                };
                for shard in meta.shards {
                    let b = self.log.bounds(shard)?;
                    if b.tail_seq >= b.start_seq && b.tail_seq > 0 {
                        targets.push((shard, b.next_seq));
                    }
                }
            }
            // A query working through a long backlog may take a while: give up only when it
            // makes no progress for FLUSH_TIMEOUT.
            loop {
                let before = s.progress();
                if s.wait_progress(&targets, FLUSH_TIMEOUT).await {
                    break;
                }
                if s.progress() == before {
                    return Err(EngineError::internal(format!(
                        "FLUSH gave up: query {:?} made no progress in {}s",
                        s.name,
                        FLUSH_TIMEOUT.as_secs()
                    )));
                }
            }
        }
        Ok(done())
    }

    /// Standard statements: `INSERT … VALUES`, `INSERT … SELECT`, `SET`.
    async fn standard(self: &Arc<Self>, stmt: sql::Statement) -> Result<Output> {
        match stmt {
            sql::Statement::Insert(insert) if matches!(&insert.table, sql::TableObject::TableName(n) if crate::datacell::in_schema(n)) => {
                self.insert_into_basket(&insert).await
            }
            sql::Statement::CreateTable(ct) => self.create_table(&ct).await,
            sql::Statement::Drop {
                object_type: sql::ObjectType::Table,
                if_exists,
                names,
                ..
            } => {
                for n in &names {
                    self.drop_table(n, if_exists).await?;
                }
                Ok(done())
            }
            sql::Statement::Insert(insert) => {
                let stream = match &insert.table {
                    sql::TableObject::TableName(n) => single_name(n)?,
                    other => {
                        return Err(EngineError::invalid(format!("cannot insert into {other}")))
                    }
                };
                if self.catalog.get_stream(&stream)?.is_none() {
                    return Err(EngineError::NotFound(format!(
                        "stream {stream:?} does not exist (CREATE STREAM {stream}; first)"
                    )));
                }
                let Some(source) = insert.source else {
                    return Err(EngineError::invalid("INSERT needs VALUES or a SELECT"));
                };
                let columns: Vec<String> = insert.columns.iter().map(|c| c.to_string()).collect();
                for (i, c) in columns.iter().enumerate() {
                    if columns[..i].contains(c) {
                        return Err(EngineError::invalid(format!("column {c:?} is given twice")));
                    }
                }
                let rows = match source.body.as_ref() {
                    SetExpr::Values(values) => {
                        let columns = if columns.is_empty() {
                            match self.declared_schema(&stream)? {
                                Some(s) => s.fields().iter().map(|f| f.name().clone()).collect(),
                                None => {
                                    return Err(EngineError::invalid(format!(
                                        "stream {stream:?} has no declared columns: name them, \
                                         INSERT INTO {stream} (col, …) VALUES (…)"
                                    )))
                                }
                            }
                        } else {
                            columns
                        };
                        let mut rows = Vec::with_capacity(values.rows.len());
                        for row in &values.rows {
                            if row.content.len() != columns.len() {
                                return Err(EngineError::invalid(format!(
                                    "{} columns but {} values",
                                    columns.len(),
                                    row.content.len()
                                )));
                            }
                            let mut m = JsonRow::new();
                            for (c, e) in columns.iter().zip(row.content.iter()) {
                                m.insert(c.clone(), literal(e)?);
                            }
                            self.check_declared(&stream, &m)?;
                            rows.push(m);
                        }
                        rows
                    }
                    _ => {
                        let ctx = plan::session();
                        let (names, batches) = self.run_pull(&ctx, &source).await?;
                        let mut rows = Vec::new();
                        for b in &batches {
                            for r in 0..b.num_rows() {
                                let mut obj = value::row_object(b, r)?;
                                if !columns.is_empty() {
                                    if columns.len() != names.len() {
                                        return Err(EngineError::invalid(format!(
                                            "{} columns but the SELECT gives {}",
                                            columns.len(),
                                            names.len()
                                        )));
                                    }
                                    obj = columns
                                        .iter()
                                        .zip(obj)
                                        .map(|(c, (_, v))| (c.clone(), v))
                                        .collect();
                                }
                                self.check_declared(&stream, &obj)?;
                                rows.push(obj);
                            }
                        }
                        rows
                    }
                };
                crate::writer::append_rows(&self.service, &stream, &rows, |_| Vec::new()).await?;
                Ok(done())
            }
            sql::Statement::Set(set) => {
                let text = set.to_string();
                if text.to_ascii_lowercase().contains("optimizer") {
                    Ok(done())
                } else {
                    Err(EngineError::invalid(format!(
                        "{text}: only SET optimizer = '…' is accepted (and ignored)"
                    )))
                }
            }
            sql::Statement::Call(f) => self.datacell_call(&f).await,
            other => Err(EngineError::invalid(format!(
                "this statement is not supported: {}",
                first_words(&other.to_string())
            ))),
        }
    }
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Windows belong to continuous queries.
fn reject_windows(query: &sql::Query) -> Result<()> {
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

/// A JSON value from a literal in `VALUES`.
/// Records the type of the parameter named `$n` (1-based) in `params`, growing it.
fn set_param(
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

fn literal(e: &Expr) -> Result<Value> {
    use sql::Value as V;
    match e {
        Expr::Value(v) => match &v.value {
            V::Number(n, _) => {
                if let Ok(i) = n.parse::<i64>() {
                    Ok(Value::from(i))
                } else {
                    n.parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                        .ok_or_else(|| EngineError::invalid(format!("bad number {n}")))
                }
            }
            V::SingleQuotedString(s) | V::DoubleQuotedString(s) => Ok(Value::String(s.clone())),
            V::Boolean(b) => Ok(Value::Bool(*b)),
            V::Null => Ok(Value::Null),
            other => Err(EngineError::invalid(format!(
                "unsupported literal {other} in VALUES"
            ))),
        },
        Expr::UnaryOp {
            op: sql::UnaryOperator::Minus,
            expr,
        } => match literal(expr)? {
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(Value::from(-i))
                } else {
                    Ok(serde_json::Number::from_f64(-n.as_f64().unwrap_or(0.0))
                        .map_or(Value::Null, Value::Number))
                }
            }
            _ => Err(EngineError::invalid(format!("cannot negate {expr}"))),
        },
        Expr::Identifier(i) if i.quote_style == Some('"') => Ok(Value::String(i.value.clone())),
        Expr::Array(a) => Ok(Value::Array(
            a.elem.iter().map(literal).collect::<Result<_>>()?,
        )),
        other => Err(EngineError::invalid(format!(
            "VALUES takes literals (numbers, 'strings', TRUE, FALSE, NULL), not {other}"
        ))),
    }
}

/// A SELECT as text that parses back to itself, `WITHIN (…)` included after its join.
fn select_text(select: &Select) -> String {
    let text = select.query.to_string();
    let Some(bound) = select.within.first() else {
        return text;
    };
    if let SetExpr::Select(sel) = select.query.body.as_ref() {
        if let Some(join) = sel.from.first().and_then(|f| f.joins.first()) {
            let join_text = join.to_string();
            if let Some(at) = text.find(&join_text) {
                let end = at + join_text.len();
                return format!("{} WITHIN ({bound}){}", &text[..end], &text[end..]);
            }
        }
    }
    text
}

/// The runtime pull queries run on: threads of their own (as many as the cores, at most 4),
/// with the query thread stack size. `None` (pull queries then run on the caller's runtime)
/// if it cannot be built.
fn query_runtime() -> Option<&'static tokio::runtime::Runtime> {
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
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

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
