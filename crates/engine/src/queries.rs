//! Persistent queries and views as objects: creating one (checked, saved in the catalog,
//! launched on its own thread), listing and describing them, and the typed operations the
//! doors call (terminate, pause, resume, drop, flush). What a query does with its input is
//! [`crate::query`].

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use sqlparser::ast::{self as sql, SetExpr};
use streamcell_service::StreamSpec;
use streamcell_sql::{Select, Statement};

use crate::continuous::plan;
use crate::engine::{done, lock, now_ms, single_name, Engine};
use crate::error::{EngineError, Result};
use crate::output::Output;
use crate::query::{
    self, streams_of, Control, QueryKind, QueryRun, QueryShared, QueryStatus, Sink,
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

pub(crate) struct Entry {
    pub(crate) shared: Arc<QueryShared>,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
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

    /// A view's rows now (what `SELECT * FROM view` answers).
    pub fn view_table(&self, name: &str) -> Result<Output> {
        let view = lock(&self.queries)
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
    pub async fn terminate(&self, name: Option<&str>) -> Result<()> {
        let names: Vec<String> = match name {
            Some(n) => vec![n.to_string()],
            None => lock(&self.queries).keys().cloned().collect(),
        };
        for n in names {
            self.set_saved_flag(&n, |s| s.terminated = true)?;
            let thread = {
                let mut q = lock(&self.queries);
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
    pub async fn pause(&self, name: &str) -> Result<()> {
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
    pub async fn resume(&self, name: &str) -> Result<()> {
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

    pub(crate) fn set_saved_flag(&self, name: &str, f: impl FnOnce(&mut SavedQuery)) -> Result<()> {
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

    pub(crate) async fn create_persistent(
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
    pub(crate) async fn try_bind(
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
    pub(crate) async fn source_schemas(
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
    pub(crate) fn sources_of(&self, prepared: &plan::Prepared) -> Result<Vec<Option<SchemaRef>>> {
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

    /// Drops a persistent query (`kind` [`QueryKind::Stream`]) or a view (`kind`
    /// [`QueryKind::View`]): it stops, and its definition, state and checkpoint are deleted.
    /// A missing one is an error unless `if_exists`.
    pub async fn drop_query(&self, name: &str, kind: QueryKind, if_exists: bool) -> Result<()> {
        let _ddl = self.ddl.lock().await;
        let entry = {
            let mut q = lock(&self.queries);
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
        self.catalog.delete_object(QUERY_KIND, name)?;
        entry.shared.control(Control::Stop);
        if let Some(t) = entry.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        Ok(())
    }

    /// Waits until every persistent query and view has processed what its source held when
    /// `FLUSH` began.
    pub(crate) async fn flush(&self) -> Result<Output> {
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
