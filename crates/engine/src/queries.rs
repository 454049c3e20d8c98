//! The registry of continuous queries ([`Queries`]): persistent queries and views as objects
//! (created checked, saved in the catalog, launched on their own threads, restarted from their
//! checkpoints when the server starts), push queries for the clients that ask, and the typed
//! operations the doors call (terminate, pause, resume, drop, flush). What a query does with
//! its input is [`crate::query`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};
use sqlparser::ast::{self as sql, SetExpr};
use streamcell_service::StreamSpec;
use streamcell_sql::{Select, Statement};
use tokio::sync::mpsc;

use crate::context::{lock, now_ms, Context};
use crate::continuous::plan;
use crate::error::{EngineError, Result};
use crate::output::Output;
use crate::query::{
    self, streams_of, Control, PushGuard, QueryKind, QueryRun, QueryShared, QueryStatus, Sink,
};
use crate::source::Start;

/// Catalog kind of persistent queries and views.
pub(crate) const QUERY_KIND: &str = "sql.query";

/// `PAUSE`/`RESUME` wait at most this long for the query thread to act on them.
pub(crate) const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// `FLUSH` gives up on a query that makes no progress for this long.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

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

/// A persistent query or view as the catalog keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SavedQuery {
    pub(crate) sql: String,
    pub(crate) kind: QueryKind,
    pub(crate) source: String,
    pub(crate) target: Option<String>,
    pub(crate) created_ms: i64,
    #[serde(default)]
    pub(crate) paused: bool,
    #[serde(default)]
    pub(crate) terminated: bool,
}

/// A persistent query or view in the registry, with its thread.
pub(crate) struct Entry {
    pub(crate) shared: Arc<QueryShared>,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
}

/// The continuous queries of the node: persistent queries and views by name (saved in the
/// catalog), and the push queries of connected clients (not saved; numbered).
pub(crate) struct Queries {
    ctx: Arc<Context>,
    entries: Mutex<BTreeMap<String, Entry>>,
    push_seq: AtomicU64,
}

impl Queries {
    /// An empty registry; [`restart`](Self::restart) brings the saved queries back.
    pub(crate) fn new(ctx: Arc<Context>) -> Self {
        Queries {
            ctx,
            entries: Mutex::new(BTreeMap::new()),
            push_seq: AtomicU64::new(0),
        }
    }

    /// Restarts the saved persistent queries and views from their checkpoints. One that
    /// cannot restart is marked FAILED with the reason; the others run.
    pub(crate) fn restart(&self) -> Result<()> {
        for (name, doc) in self.ctx.catalog.list_objects(QUERY_KIND)? {
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
                lock(&self.entries).insert(name, entry);
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
            lock(&self.entries).insert(name, entry);
        }
        Ok(())
    }

    /// Stops every query thread (server shutdown). Checkpoints are taken as they stop.
    pub(crate) fn shutdown(&self) {
        let threads: Vec<_> = {
            let mut q = lock(&self.entries);
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

    /// The view named `name`, if there is one.
    pub(crate) fn view(&self, name: &str) -> Option<Arc<QueryShared>> {
        lock(&self.entries)
            .get(name)
            .filter(|e| e.shared.kind == QueryKind::View)
            .map(|e| e.shared.clone())
    }

    /// Every view.
    pub(crate) fn views(&self) -> Vec<Arc<QueryShared>> {
        lock(&self.entries)
            .values()
            .filter(|e| e.shared.kind == QueryKind::View)
            .map(|e| e.shared.clone())
            .collect()
    }

    /// Every persistent query and view, by name.
    pub(crate) fn all(&self) -> Vec<Arc<QueryShared>> {
        lock(&self.entries)
            .values()
            .map(|e| e.shared.clone())
            .collect()
    }

    /// The queries and views, not terminated, that read or write `stream`.
    pub(crate) fn users_of(&self, stream: &str) -> Vec<String> {
        lock(&self.entries)
            .values()
            .filter(|e| {
                (e.shared.sources().iter().any(|s| s == stream)
                    || e.shared.target.as_deref() == Some(stream))
                    && e.shared.status() != QueryStatus::Terminated
            })
            .map(|e| e.shared.name.clone())
            .collect()
    }

    /// Streams and views share one namespace (both are read by name in FROM).
    pub(crate) fn check_no_view(&self, name: &str) -> Result<()> {
        if self.view(name).is_some() {
            return Err(EngineError::AlreadyExists(format!(
                "a view named {name:?} exists already"
            )));
        }
        Ok(())
    }

    /// The counters of every persistent query and view.
    pub(crate) fn query_stats(&self) -> Vec<QueryStats> {
        lock(&self.entries)
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

    /// Every persistent query and view.
    pub(crate) fn list(&self) -> Vec<QueryInfo> {
        lock(&self.entries)
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
    pub(crate) fn get(&self, name: &str) -> Result<QueryInfo> {
        self.list()
            .into_iter()
            .find(|q| q.name == name)
            .ok_or_else(|| EngineError::NotFound(format!("query {name:?} does not exist")))
    }

    /// A view's rows now (what `SELECT * FROM view` answers).
    pub(crate) fn view_table(&self, name: &str) -> Result<Output> {
        let view = lock(&self.entries)
            .get(name)
            .filter(|e| e.shared.kind == QueryKind::View)
            .map(|e| e.shared.clone())
            .ok_or_else(|| EngineError::NotFound(format!("view {name:?} does not exist")))?;
        match view.view_rows()? {
            Some((schema, batches)) => Ok(Output::Table { schema, batches }),
            None => Err(EngineError::Precondition(format!(
                "view {name:?} has no columns yet: its stream {:?} has no records to learn them \
                 from (declare the stream's columns to know them at once)",
                view.source
            ))),
        }
    }

    /// Terminates a persistent query or view (`None`: every one): it stops for good, keeps
    /// its definition (and a view its rows) until dropped. Returns once its thread ended.
    pub(crate) async fn terminate(&self, name: Option<&str>) -> Result<()> {
        let names: Vec<String> = match name {
            Some(n) => vec![n.to_string()],
            None => lock(&self.entries).keys().cloned().collect(),
        };
        for n in names {
            self.set_saved_flag(&n, |s| s.terminated = true)?;
            let thread = {
                let mut q = lock(&self.entries);
                let e = q
                    .get_mut(&n)
                    .ok_or_else(|| EngineError::NotFound(format!("query {n:?} does not exist")))?;
                e.shared.control(Control::Stop);
                e.thread.take()
            };
            if let Some(t) = thread {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        }
        Ok(())
    }

    /// Pauses a persistent query or view; returns once its thread has paused (it checks
    /// between micro-batches), so the status a client reads next says so.
    pub(crate) async fn pause(&self, name: &str) -> Result<()> {
        let shared = self.running(name)?;
        self.set_saved_flag(name, |s| s.paused = true)?;
        shared.control(Control::Pause);
        if !shared
            .wait_status(&QueryStatus::Paused, CONTROL_TIMEOUT)
            .await
        {
            tracing::warn!(query = %name, "still finishing a batch {CONTROL_TIMEOUT:?} after PAUSE");
        }
        Ok(())
    }

    /// Resumes a paused persistent query or view.
    pub(crate) async fn resume(&self, name: &str) -> Result<()> {
        let shared = self.running(name)?;
        if shared.wanted() != Control::Pause {
            return Err(EngineError::Precondition(format!(
                "query {name:?} is not paused"
            )));
        }
        self.set_saved_flag(name, |s| s.paused = false)?;
        shared.control(Control::Run);
        if !shared
            .wait_status(&QueryStatus::Running, CONTROL_TIMEOUT)
            .await
        {
            tracing::warn!(query = %name, "not running yet {CONTROL_TIMEOUT:?} after RESUME");
        }
        Ok(())
    }

    /// A query that exists and has not been terminated.
    pub(crate) fn running(&self, name: &str) -> Result<Arc<QueryShared>> {
        let q = lock(&self.entries);
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

    pub(crate) fn set_saved_flag(&self, name: &str, f: impl FnOnce(&mut SavedQuery)) -> Result<()> {
        let Some(doc) = self.ctx.catalog.get_object(QUERY_KIND, name)? else {
            return Err(EngineError::NotFound(format!(
                "query {name:?} does not exist"
            )));
        };
        let mut saved: SavedQuery =
            serde_json::from_str(&doc).map_err(|e| EngineError::internal(e.to_string()))?;
        f(&mut saved);
        let doc =
            serde_json::to_string(&saved).map_err(|e| EngineError::internal(e.to_string()))?;
        self.ctx.catalog.put_object(QUERY_KIND, name, &doc, false)?;
        Ok(())
    }

    pub(crate) async fn create_persistent(
        &self,
        name: String,
        select: Select,
        kind: QueryKind,
        target: Option<StreamSpec>,
    ) -> Result<Output> {
        let prepared = plan::prepare(&select.query, &select.within)?;
        let source = prepared.source.stream.clone();
        let _ddl = self.ctx.ddl.lock().await;
        self.ctx.sources_of(&prepared)?;
        if lock(&self.entries).contains_key(&name) {
            return Err(EngineError::AlreadyExists(format!(
                "a query or view named {name:?} exists already"
            )));
        }
        if kind == QueryKind::View && self.ctx.catalog.get_stream(&name)?.is_some() {
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
        let declared = self.ctx.sources_of(&prepared)?;
        let prebound = self.ctx.try_bind(&prepared, declared, kind).await?;
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
            self.ctx.service.create_stream(spec).await?;
        }
        let doc =
            serde_json::to_string(&saved).map_err(|e| EngineError::internal(e.to_string()))?;
        if !self.ctx.catalog.put_object(QUERY_KIND, &name, &doc, true)? {
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
                self.ctx.catalog.delete_object(QUERY_KIND, &name)?;
                return Err(e);
            }
        };
        lock(&self.entries).insert(
            name,
            Entry {
                shared,
                thread: Some(thread),
            },
        );
        Ok(Output::done())
    }

    /// Starts the thread of a saved query or view.
    pub(crate) fn launch(
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
        let declared = self.ctx.sources_of(&prepared)?;
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
            sink,
            catalog: self.ctx.catalog.clone(),
            log: self.ctx.log.clone(),
            service: self.ctx.service.clone(),
            runtime: self.ctx.runtime.clone(),
            saved_as: Some(QUERY_KIND),
            declared,
            start: Start::Earliest,
        })
    }

    /// Drops a persistent query (`kind` [`QueryKind::Stream`]) or a view (`kind`
    /// [`QueryKind::View`]): it stops, and its definition, state and checkpoint are deleted.
    /// A missing one is an error unless `if_exists`.
    pub(crate) async fn drop_query(
        &self,
        name: &str,
        kind: QueryKind,
        if_exists: bool,
    ) -> Result<()> {
        let _ddl = self.ctx.ddl.lock().await;
        let entry = {
            let mut q = lock(&self.entries);
            match q.get(name) {
                Some(e) if e.shared.kind == kind => q.remove(name),
                _ => None,
            }
        };
        let Some(mut entry) = entry else {
            if if_exists {
                return Ok(());
            }
            let what = if kind == QueryKind::View {
                "view"
            } else {
                "query"
            };
            return Err(EngineError::NotFound(format!(
                "{what} {name:?} does not exist"
            )));
        };
        self.ctx.catalog.delete_object(QUERY_KIND, name)?;
        entry.shared.control(Control::Stop);
        if let Some(t) = entry.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        Ok(())
    }

    /// Waits until every persistent query and view has processed what its source held when
    /// `FLUSH` began.
    pub(crate) async fn flush(&self) -> Result<Output> {
        let shareds: Vec<Arc<QueryShared>> = lock(&self.entries)
            .values()
            .map(|e| e.shared.clone())
            .collect();
        for s in shareds {
            // A query still waiting for a source to have records (to learn its columns)
            // cannot process anything yet: nothing to wait for.
            if s.status() == QueryStatus::Waiting {
                let mut bindable = true;
                for stream in s.sources() {
                    if self.ctx.declared_schema(&stream)?.is_some() {
                        continue;
                    }
                    let Some(meta) = self.ctx.catalog.get_stream(&stream)? else {
                        bindable = false;
                        break;
                    };
                    let mut any = false;
                    for shard in meta.shards {
                        let b = self.ctx.log.bounds(shard)?;
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
                let Some(meta) = self.ctx.catalog.get_stream(&stream)? else {
                    continue;
                };
                for shard in meta.shards {
                    let b = self.ctx.log.bounds(shard)?;
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
        Ok(Output::done())
    }

    /// Starts a push query (`SELECT … EMIT CHANGES`): its rows go to the receiver in the
    /// output until the client drops it. `schema` is the bound query's, when known.
    pub(crate) fn push(&self, select: Select, schema: Option<SchemaRef>) -> Result<Output> {
        let prepared = plan::prepare(&select.query, &select.within)?;
        let declared = self.ctx.sources_of(&prepared)?;
        let stream = prepared.source.stream.clone();
        let id = self.push_seq.fetch_add(1, Ordering::Relaxed);
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
            sink: Sink::Push(tx),
            catalog: self.ctx.catalog.clone(),
            log: self.ctx.log.clone(),
            service: self.ctx.service.clone(),
            runtime: self.ctx.runtime.clone(),
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
            guard: PushGuard::new(shared),
        })
    }
}

/// A SELECT as text that parses back to itself, `WITHIN (…)` included after its join.
pub(crate) fn select_text(select: &Select) -> String {
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
