//! Running continuous queries. Each query (a push query, a persistent query writing into a
//! stream, or a view) runs on its own thread: it binds once its source has data to infer a
//! schema from (or has declared columns), then loops: read a micro-batch from its cursor, run
//! the stages, hand the rows to its sink, publish its progress (for `FLUSH`) and, for
//! persistent queries and views, checkpoint its state with its source positions.
//!
//! A checkpoint holds the cursor positions, the aggregate state and the watermark, saved in one
//! catalog transaction, so a restart resumes exactly where the state was taken: input is
//! neither lost nor counted twice.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, TimestampMillisecondArray,
    UInt32Array,
};
use arrow::compute::take;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use streamcell_store::{Catalog, ShardLog};
use tokio::sync::{mpsc, watch};

use crate::continuous::chunk::Chunk;
use crate::continuous::plan::{self, Pipeline, Prepared};
use crate::continuous::stage::{run_stages, Stage};
use crate::continuous::window::WindowSpec;
use crate::decode::BatchDecoder;
use crate::error::{EngineError, Result};
use crate::source::{self, Start, StreamCursor};
use crate::value::{self, JsonRow};

/// Records read per micro-batch at most.
const MICRO_BATCH: usize = 8192;
/// How long a query waits for new records before looking at its controls again.
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// Views checkpoint at most this often (a restart replays what came after).
const VIEW_CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// How far behind the newest record time a window stays open for late records.
pub(crate) const ALLOWED_LATENESS_MS: i64 = 1000;
/// Why a view must aggregate.
pub(crate) const VIEW_NEEDS_AGGREGATE: &str = "a view must aggregate (GROUP BY or an aggregate \
     function); to keep every row, create a stream: CREATE STREAM s AS SELECT …";
/// Records sampled to infer a stream's schema.
const SAMPLE: usize = 1000;

/// What a query does with its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryKind {
    /// `SELECT … EMIT CHANGES` for one client.
    Push,
    /// `CREATE STREAM s AS SELECT …`.
    Stream,
    /// `CREATE VIEW v AS SELECT …`.
    View,
}

impl QueryKind {
    /// The kind as listings and metrics name it.
    pub fn label(self) -> &'static str {
        match self {
            QueryKind::Push => "push",
            QueryKind::Stream => "stream",
            QueryKind::View => "view",
        }
    }
}

/// A query's state as users see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryStatus {
    /// Waiting for its source to have records (to learn their columns).
    Waiting,
    /// Processing.
    Running,
    /// Paused by `PAUSE QUERY`.
    Paused,
    /// Stopped by `TERMINATE QUERY` (a terminated query keeps its definition until dropped).
    Terminated,
    /// Stopped by an error.
    Failed(String),
}

impl QueryStatus {
    /// The status as `SHOW QUERIES` prints it.
    pub fn label(&self) -> String {
        match self {
            QueryStatus::Waiting => "WAITING".into(),
            QueryStatus::Running => "RUNNING".into(),
            QueryStatus::Paused => "PAUSED".into(),
            QueryStatus::Terminated => "TERMINATED".into(),
            QueryStatus::Failed(_) => "FAILED".into(),
        }
    }
}

/// What the controller asks of a running query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Process.
    Run,
    /// Hold (keep state, read nothing).
    Pause,
    /// Stop for good.
    Stop,
}

/// The state shared between a query's thread and the engine.
pub(crate) struct QueryShared {
    /// Query name (a view's or target stream's query is named after it).
    pub name: String,
    /// The SQL text.
    pub sql: String,
    /// What it does with its rows.
    pub kind: QueryKind,
    /// The stream it reads.
    pub source: String,
    /// For a persistent query: the stream it writes.
    pub target: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    status: Mutex<QueryStatus>,
    control: watch::Sender<Control>,
    /// Source positions fully processed (sink written), and a counter bumped with them.
    progress: Mutex<Vec<(u64, u64)>>,
    progress_tick: watch::Sender<u64>,
    /// The compiled pipeline once bound (a view answers `SELECT` from it).
    pipeline: Mutex<Option<Pipeline>>,
    /// Rows processed in and out, for `SHOW QUERIES`.
    counters: Mutex<(u64, u64)>,
    /// Every stream it reads (a join reads two), once running.
    sources: Mutex<Vec<String>>,
}

impl QueryShared {
    /// A query definition with nothing running yet.
    pub(crate) fn new(
        name: String,
        sql: String,
        kind: QueryKind,
        source: String,
        target: Option<String>,
        created_ms: i64,
    ) -> Arc<Self> {
        Arc::new(QueryShared {
            name,
            sql,
            kind,
            source,
            target,
            created_ms,
            status: Mutex::new(QueryStatus::Waiting),
            control: watch::channel(Control::Run).0,
            progress: Mutex::new(Vec::new()),
            progress_tick: watch::channel(0).0,
            pipeline: Mutex::new(None),
            counters: Mutex::new((0, 0)),
            sources: Mutex::new(Vec::new()),
        })
    }

    /// Its status.
    pub(crate) fn status(&self) -> QueryStatus {
        lock(&self.status).clone()
    }

    pub(crate) fn set_status(&self, s: QueryStatus) {
        *lock(&self.status) = s;
        self.progress_tick.send_modify(|t| *t += 1);
    }

    /// Asks the query to pause, resume or stop.
    pub(crate) fn control(&self, c: Control) {
        self.control.send_replace(c);
    }

    /// The control currently asked.
    pub(crate) fn wanted(&self) -> Control {
        *self.control.borrow()
    }

    /// Every stream it reads (just its source until it runs).
    pub(crate) fn sources(&self) -> Vec<String> {
        let s = lock(&self.sources).clone();
        if s.is_empty() {
            vec![self.source.clone()]
        } else {
            s
        }
    }

    /// The positions processed so far `(shard, next sequence number)`.
    pub(crate) fn progress(&self) -> Vec<(u64, u64)> {
        lock(&self.progress).clone()
    }

    /// Records in and rows out so far.
    pub(crate) fn counters(&self) -> (u64, u64) {
        *lock(&self.counters)
    }

    /// Waits until the query thread has acted on a pause or resume (its status is `want`), has
    /// stopped, or is still waiting to bind. Returns false on timeout.
    pub(crate) async fn wait_status(&self, want: &QueryStatus, timeout: Duration) -> bool {
        let mut tick = self.progress_tick.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = lock(&self.status).clone();
            // A query still waiting for its first record to bind acts on the control when
            // it binds.
            if &status == want
                || matches!(
                    status,
                    QueryStatus::Terminated | QueryStatus::Failed(_) | QueryStatus::Waiting
                )
            {
                return true;
            }
            if tokio::time::timeout_at(deadline, tick.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// Waits until the query has processed every shard up to the given next-sequence
    /// positions, or has stopped. Returns false on timeout.
    pub(crate) async fn wait_progress(&self, targets: &[(u64, u64)], timeout: Duration) -> bool {
        let mut tick = self.progress_tick.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let done = {
                let status = lock(&self.status).clone();
                if matches!(
                    status,
                    QueryStatus::Terminated | QueryStatus::Failed(_) | QueryStatus::Paused
                ) {
                    return true;
                }
                let progress = lock(&self.progress);
                targets.iter().all(|(shard, next)| {
                    *next == 0 || progress.iter().any(|(s, n)| s == shard && n >= next)
                })
            };
            if done {
                return true;
            }
            if tokio::time::timeout_at(deadline, tick.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// Installs a pipeline bound by the creating statement (before the thread starts).
    pub(crate) fn set_pipeline(&self, p: Option<Pipeline>) {
        *lock(&self.pipeline) = p;
    }

    /// The output schema once bound.
    pub(crate) fn output_schema(&self) -> Option<SchemaRef> {
        lock(&self.pipeline)
            .as_ref()
            .map(|p| p.output_schema.clone())
    }

    /// The output columns once bound (empty before).
    pub(crate) fn output_columns(&self) -> Vec<String> {
        self.output_schema()
            .map(|s| s.fields().iter().map(|f| f.name().clone()).collect())
            .unwrap_or_default()
    }

    /// For a view: its current rows (`None` while it waits for its first records).
    pub(crate) fn view_rows(&self) -> Result<Option<(SchemaRef, Vec<RecordBatch>)>> {
        let mut guard = lock(&self.pipeline);
        let Some(p) = guard.as_mut() else {
            return Ok(None);
        };
        let schema = p.output_schema.clone();
        let agg_at = p
            .stages
            .iter()
            .position(|s| matches!(s, Stage::Aggregate(_)))
            .ok_or_else(|| EngineError::internal("a view without an aggregate"))?;
        let Stage::Aggregate(agg) = &mut p.stages[agg_at] else {
            return Err(EngineError::internal("stage moved"));
        };
        let mut chunk = agg.all_rows()?;
        for stage in p.stages[agg_at + 1..].iter_mut() {
            chunk = stage.apply(chunk)?;
        }
        let batch = if chunk.batch.num_rows() == 0 {
            RecordBatch::new_empty(schema.clone())
        } else {
            chunk.batch
        };
        Ok(Some((schema, vec![batch])))
    }
}

/// Stops a push query when dropped.
pub struct PushGuard(Arc<QueryShared>);

impl PushGuard {
    /// Guards the push query `shared`.
    pub(crate) fn new(shared: Arc<QueryShared>) -> Self {
        PushGuard(shared)
    }
}

impl Drop for PushGuard {
    fn drop(&mut self) {
        self.0.control(Control::Stop);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A query's saved state.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CheckpointHeader {
    positions: Vec<(u64, u64)>,
    /// A join's right side.
    #[serde(default)]
    right_positions: Vec<(u64, u64)>,
    watermark_ms: Option<i64>,
    rows_out: u64,
    has_state: bool,
    /// A persistent query's output stream: each shard's next sequence number when the
    /// checkpoint was taken (output after it may repeat what replay produces).
    #[serde(default)]
    sink_positions: Vec<(u64, u64)>,
    /// Bytes of the aggregate snapshot at the start of the state; a join's buffers follow.
    #[serde(default)]
    agg_len: Option<usize>,
    /// A persistent query's micro-batch whose output may be partly written: each side's
    /// positions after it (the source's, then a join's right side). Empty when none. The
    /// header's `positions`, state and `rows_out` are those before it; a restart reads
    /// exactly `positions..pending_end` again (in the same order), so it produces the same
    /// rows, and skips those the output stream already holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending_end: Vec<Vec<(u64, u64)>>,
}

/// Version byte of a query checkpoint (docs/storage-format.md §7). Checkpoints written before
/// it existed start with the JSON header's `{` and carry no checksum.
const CHECKPOINT_VERSION: u8 = 2;

/// Encodes a checkpoint: the version byte, a CRC-32C (little-endian) of everything after it,
/// then a JSON header line and the aggregate (and join) snapshot.
fn encode_checkpoint(h: &CheckpointHeader, state: &[u8]) -> Result<Vec<u8>> {
    let header = serde_json::to_vec(h).map_err(|e| EngineError::internal(e.to_string()))?;
    let mut body = Vec::with_capacity(header.len() + 1 + state.len());
    body.extend_from_slice(&header);
    body.push(b'\n');
    body.extend_from_slice(state);
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(CHECKPOINT_VERSION);
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a checkpoint of either version; a damaged one (checksum, version, header) is an
/// error, never read as an empty state.
fn decode_checkpoint(bytes: &[u8]) -> Result<(CheckpointHeader, &[u8])> {
    let body = match bytes.first() {
        Some(b'{') => bytes,
        Some(&CHECKPOINT_VERSION) if bytes.len() >= 5 => {
            let (crc, body) = bytes[1..].split_at(4);
            if crc32c::crc32c(body).to_le_bytes() != crc {
                return Err(EngineError::internal(
                    "query checkpoint is damaged (checksum mismatch)",
                ));
            }
            body
        }
        Some(v) => {
            return Err(EngineError::internal(format!(
                "query checkpoint has unknown version {v} (or is damaged)"
            )))
        }
        None => return Err(EngineError::internal("query checkpoint is empty")),
    };
    let nl = body
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| EngineError::internal("query checkpoint has no header"))?;
    let h = serde_json::from_slice(&body[..nl])
        .map_err(|e| EngineError::internal(format!("query checkpoint header: {e}")))?;
    Ok((h, &body[nl + 1..]))
}

/// Where a query's rows go.
pub(crate) enum Sink {
    /// To a client: row batches; a send error means the client left.
    Push(mpsc::Sender<Result<RecordBatch>>),
    /// Appended to a stream.
    Stream(String),
    /// Kept as a view's state (nothing to send).
    View,
}

/// Everything a query thread needs.
pub(crate) struct QueryRun {
    /// Shared state.
    pub shared: Arc<QueryShared>,
    /// The query, prepared.
    pub prepared: Prepared,
    /// Sink.
    pub sink: Sink,
    /// Catalog.
    pub catalog: Arc<dyn Catalog>,
    /// Shard logs.
    pub log: Arc<dyn ShardLog>,
    /// Stream writes.
    pub service: Arc<streamcell_service::Service>,
    /// The async runtime (appends and waits are async).
    pub runtime: tokio::runtime::Handle,
    /// The catalog kind under which the query is saved (`None`: not saved, a push query).
    pub saved_as: Option<&'static str>,
    /// Declared schema of each stream read (the source, then a join's right side), if any.
    pub declared: Vec<Option<SchemaRef>>,
    /// Where a query without a checkpoint starts.
    pub start: Start,
}

/// Starts a query thread.
pub(crate) fn spawn(run: QueryRun) -> Result<std::thread::JoinHandle<()>> {
    let name = format!("query-{}", run.shared.name);
    std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        // Expressions as deep as the parser lets through evaluate with room to spare.
        .stack_size(streamcell_sql::limits::THREAD_STACK_BYTES)
        .spawn(move || {
            let shared = run.shared.clone();
            let push_tx = match &run.sink {
                Sink::Push(tx) => Some(tx.clone()),
                _ => None,
            };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_query(run)))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    Err(EngineError::internal(format!(
                        "query thread panicked: {what}"
                    )))
                });
            match result {
                Ok(()) => {
                    if shared.status() != QueryStatus::Terminated {
                        shared.set_status(QueryStatus::Terminated);
                    }
                }
                Err(e) => {
                    tracing::warn!(query = %shared.name, error = %e, "query failed");
                    if let Some(tx) = push_tx {
                        let _ = tx.blocking_send(Err(EngineError::invalid(e.to_string())));
                    }
                    shared.set_status(QueryStatus::Failed(e.to_string()));
                }
            }
        })
        .map_err(|e| EngineError::internal(format!("cannot start a query thread: {e}")))
}

/// The streams a query reads: its source, then a join's right side.
pub(crate) fn streams_of(p: &Prepared) -> Vec<String> {
    let mut v = vec![p.source.stream.clone()];
    if let Some(j) = &p.source.join {
        v.push(j.stream.clone());
    }
    v
}

/// The schema of a stream for planning: declared, or inferred from a sample of its records
/// (`None` while it has none).
pub(crate) fn stream_schema(
    catalog: &dyn Catalog,
    log: Arc<dyn ShardLog>,
    stream: &str,
    declared: Option<&SchemaRef>,
) -> Result<Option<arrow::datatypes::Schema>> {
    match declared {
        Some(s) => Ok(Some(s.as_ref().clone())),
        None => {
            let sample = source::sample(catalog, log, stream, SAMPLE)?;
            if sample.is_empty() {
                return Ok(None);
            }
            Ok(Some(value::infer_schema(sample.iter().map(|r| &r.row))))
        }
    }
}

/// Plans and compiles a prepared query over the schemas of its streams (in
/// [`streams_of`] order).
pub(crate) async fn build(
    prepared: &Prepared,
    schemas: &[arrow::datatypes::Schema],
    kind: QueryKind,
) -> Result<Pipeline> {
    let streams = streams_of(prepared);
    if let (Some(col), Some(schema)) = (
        prepared
            .source
            .window
            .as_ref()
            .and_then(|w| w.time_column.as_ref()),
        schemas.first(),
    ) {
        let field = schema.field_with_name(col).map_err(|_| {
            EngineError::invalid(format!("the window's time column {col:?} does not exist"))
        })?;
        match field.data_type() {
            DataType::Timestamp(_, _)
            | DataType::Date32
            | DataType::Date64
            | DataType::Float64
            | DataType::Int64 => {}
            other => {
                return Err(EngineError::invalid(format!(
                    "the window's time column {col:?} is {other}; it must be a TIMESTAMP or a \
                     number of epoch milliseconds"
                )))
            }
        }
    }
    let mut tables = Vec::new();
    for (i, (name, schema)) in streams.iter().zip(schemas).enumerate() {
        let window = if i == 0 {
            prepared.source.window.as_ref()
        } else {
            None
        };
        tables.push((name.clone(), plan::input_schema(schema, window)?));
    }
    let ctx = plan::session();
    let logical = plan::logical_plan(&ctx, &tables, &prepared.query).await?;
    let pipeline = plan::compile(
        &ctx,
        &logical,
        tables[0].1.clone(),
        kind != QueryKind::View,
        prepared.source.join.as_ref().map(|j| j.within_ms),
    )?;
    if kind == QueryKind::View && !pipeline.aggregates {
        return Err(EngineError::invalid(VIEW_NEEDS_AGGREGATE));
    }
    let mut pipeline = pipeline;
    if let Some(gap) = prepared
        .source
        .window
        .as_ref()
        .and_then(|w| w.session_gap_ms)
    {
        match pipeline.stages.iter_mut().find_map(|s| match s {
            Stage::Aggregate(a) => Some(a),
            _ => None,
        }) {
            Some(agg) => agg.use_sessions(gap, ALLOWED_LATENESS_MS)?,
            None => {
                return Err(EngineError::invalid(
                    "SESSION windows need an aggregate grouped by window_start, window_end",
                ))
            }
        }
    }
    Ok(pipeline)
}

/// Binds the query to its sources' schemas: `Ok(None)` while a source has no records to
/// infer one from.
fn bind(run: &QueryRun) -> Result<Option<Pipeline>> {
    let mut schemas = Vec::new();
    for (i, stream) in streams_of(&run.prepared).iter().enumerate() {
        match stream_schema(
            run.catalog.as_ref(),
            run.log.clone(),
            stream,
            run.declared.get(i).and_then(|d| d.as_ref()),
        )? {
            Some(s) => schemas.push(s),
            None => return Ok(None),
        }
    }
    let prepared = run.prepared.clone();
    let kind = run.shared.kind;
    let pipeline = run
        .runtime
        .block_on(async move { build(&prepared, &schemas, kind).await })?;
    Ok(Some(pipeline))
}

fn run_query(run: QueryRun) -> Result<()> {
    let shared = run.shared.clone();
    let mut control = shared.control.subscribe();
    let streams = streams_of(&run.prepared);
    *lock(&shared.sources) = streams.clone();
    // Bind (unless the creating statement did), waiting for records if the schema must
    // be inferred.
    let prebound = lock(&shared.pipeline).is_some();
    if !prebound {
        loop {
            if *control.borrow() == Control::Stop {
                return Ok(());
            }
            if let Some(p) = bind(&run)? {
                shared.set_pipeline(Some(p));
                break;
            }
            let mut watchers = Vec::new();
            for s in &streams {
                watchers.extend(
                    StreamCursor::open(run.catalog.as_ref(), run.log.clone(), s, &Start::Earliest)?
                        .watchers()?,
                );
            }
            run.runtime.block_on(async {
                tokio::select! {
                    _ = source::wait_any(&mut watchers, Duration::from_secs(1)) => {}
                    _ = control.changed() => {}
                }
            });
        }
    }
    // From here on the pipeline lives in `shared` (a view answers SELECT from it).
    let mut guard = lock(&shared.pipeline);
    let pipeline = guard
        .as_mut()
        .ok_or_else(|| EngineError::internal("pipeline missing"))?;
    // Restore the checkpoint, if any.
    let mut header = CheckpointHeader::default();
    if let Some(kind) = run.saved_as {
        if let Some(bytes) = run.catalog.load_object_state(kind, &shared.name)? {
            let (h, state) = decode_checkpoint(&bytes)?;
            let (agg_state, join_state) = match h.agg_len {
                Some(n) if n <= state.len() => state.split_at(n),
                _ => (state, &[][..]),
            };
            if h.has_state && !agg_state.is_empty() {
                if let Some(Stage::Aggregate(agg)) = pipeline
                    .stages
                    .iter_mut()
                    .find(|s| matches!(s, Stage::Aggregate(_)))
                {
                    agg.restore(agg_state)?;
                }
            }
            if let (Some(join), false) = (pipeline.join.as_mut(), join_state.is_empty()) {
                join.restore(join_state)?;
            }
            header = h;
        }
    }
    let mut cursors = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        let saved = if i == 0 {
            &header.positions
        } else {
            &header.right_positions
        };
        let start = if saved.is_empty() {
            run.start.clone()
        } else {
            Start::At(saved.clone())
        };
        cursors.push(StreamCursor::open(
            run.catalog.as_ref(),
            run.log.clone(),
            s,
            &start,
        )?);
    }
    let mut watchers = Vec::new();
    for c in &cursors {
        watchers.extend(c.watchers()?);
    }
    let input_schema = pipeline.input_schema.clone();
    let stream_fields = input_schema.fields().len()
        - if run.prepared.source.window.is_some() {
            2
        } else {
            0
        };
    let mut side_schemas = vec![Arc::new(arrow::datatypes::Schema::new(
        input_schema.fields()[..stream_fields].to_vec(),
    ))];
    if let Some(j) = &pipeline.join {
        side_schemas.push(j.side_schema(1));
    }
    let window = run.prepared.source.window.clone();
    let mut watermark = header.watermark_ms;
    let mut rows_out = header.rows_out;
    let mut replay = (!header.pending_end.is_empty()).then(|| header.pending_end.clone());
    let written = match &run.sink {
        Sink::Stream(_) if !header.sink_positions.is_empty() => {
            rows_written_after(&run, &shared.name, &header.sink_positions)?
        }
        _ => 0,
    };
    // Decode only what the plan reads (and the window's time column).
    let time_column = window.as_ref().and_then(|w| w.time_column.clone());
    let read = |name: &str| {
        pipeline
            .columns_read
            .as_ref()
            .is_none_or(|c| c.contains(name))
            || time_column.as_deref() == Some(name)
    };
    let mut decoders: Vec<BatchDecoder> = side_schemas
        .iter()
        .map(|s| BatchDecoder::with_columns(s, read))
        .collect();
    drop(guard);
    publish_progress(&shared, &cursors);
    shared.set_status(QueryStatus::Running);
    let mut last_checkpoint = Instant::now();
    let mut dirty = false;
    // A persistent query: its micro-batches are checkpointed before their output is written.
    let durable_output = matches!(run.sink, Sink::Stream(_)) && run.saved_as.is_some();
    loop {
        let wanted = *control.borrow_and_update();
        match wanted {
            Control::Stop => break,
            Control::Pause => {
                shared.set_status(QueryStatus::Paused);
                run.runtime.block_on(async {
                    let _ = control.changed().await;
                });
                if *control.borrow() == Control::Run {
                    shared.set_status(QueryStatus::Running);
                }
                continue;
            }
            Control::Run => {}
        }
        if let Sink::Push(tx) = &run.sink {
            if tx.is_closed() {
                break;
            }
        }
        // Read the micro-batch (every side) before running any of it: a persistent query
        // makes where it began and ended durable before its first output row is.
        let before: Vec<Vec<(u64, u64)>> = if durable_output {
            cursors.iter().map(|c| c.positions().to_vec()).collect()
        } else {
            Vec::new()
        };
        let mut n_in = 0u64;
        for side in 0..cursors.len() {
            match replay.as_ref().and_then(|r| r.get(side)) {
                Some(end) => cursors[side].poll_until(end, &mut decoders[side])?,
                None => cursors[side].poll_into(MICRO_BATCH, &mut decoders[side])?,
            };
            n_in += decoders[side].len() as u64;
        }
        replay = None;
        let mut n_out = 0u64;
        if n_in > 0 {
            let pending = if durable_output {
                let mut before = before.into_iter();
                Some(PendingCheckpoint {
                    header: CheckpointHeader {
                        positions: before.next().unwrap_or_default(),
                        right_positions: before.next().unwrap_or_default(),
                        watermark_ms: watermark,
                        rows_out,
                        pending_end: cursors.iter().map(|c| c.positions().to_vec()).collect(),
                        ..CheckpointHeader::default()
                    },
                    state: snapshot_state(&shared)?,
                })
            } else {
                None
            };
            let mut chunks = Vec::new();
            for (side, decoder) in decoders.iter_mut().enumerate() {
                if decoder.is_empty() {
                    continue;
                }
                let (batch, times) = decoder.finish()?;
                let mut guard = lock(&shared.pipeline);
                let p = guard
                    .as_mut()
                    .ok_or_else(|| EngineError::internal("pipeline missing"))?;
                match p.join.as_mut() {
                    Some(join) => {
                        for joined in join.push(side, batch, &times)? {
                            chunks.push(run_stages(&mut p.stages, joined)?);
                        }
                        watermark = join.watermark();
                    }
                    None => {
                        if window.as_ref().is_some_and(|w| w.session_gap_ms.is_some()) {
                            // Sessions judge lateness against the watermark before the batch.
                            for stage in p.stages.iter_mut() {
                                if let Stage::Aggregate(agg) = stage {
                                    agg.set_watermark(watermark);
                                }
                            }
                        }
                        let batch = input_batch(
                            batch,
                            &times,
                            &input_schema,
                            window.as_ref(),
                            &mut watermark,
                        )?;
                        chunks.push(run_stages(&mut p.stages, batch)?);
                        if let (Some(_), Some(wm), QueryKind::Push | QueryKind::Stream) =
                            (&window, watermark, shared.kind)
                        {
                            evict_closed(p, wm)?;
                        }
                    }
                }
            }
            if let Some(pending) = pending {
                if chunks.iter().any(|c| c.batch.num_rows() > 0) {
                    save_checkpoint(&run, &shared, pending.header, &pending.state)?;
                    last_checkpoint = Instant::now();
                }
            }
            for chunk in chunks {
                n_out += deliver(&run, &shared, chunk, &mut rows_out, written)?;
            }
        }
        if n_in == 0 {
            if dirty && run.saved_as.is_some() {
                checkpoint(&run, &shared, &cursors, watermark, rows_out)?;
                dirty = false;
                last_checkpoint = Instant::now();
            }
            publish_progress(&shared, &cursors);
            let push_closed = match &run.sink {
                Sink::Push(tx) => Some(tx.clone()),
                _ => None,
            };
            run.runtime.block_on(async {
                tokio::select! {
                    _ = source::wait_any(&mut watchers, IDLE_WAIT) => {}
                    _ = control.changed() => {}
                    _ = async {
                        match &push_closed {
                            Some(tx) => tx.closed().await,
                            None => std::future::pending().await,
                        }
                    } => {}
                }
            });
            continue;
        }
        {
            let mut c = lock(&shared.counters);
            c.0 += n_in;
            c.1 += n_out;
        }
        dirty = true;
        if run.saved_as.is_some() {
            // A persistent query's output is covered by the checkpoint taken before it was
            // written; the state after it is saved on this timer or when the query idles.
            if last_checkpoint.elapsed() >= VIEW_CHECKPOINT_EVERY {
                checkpoint(&run, &shared, &cursors, watermark, rows_out)?;
                dirty = false;
                last_checkpoint = Instant::now();
            }
        }
        publish_progress(&shared, &cursors);
    }
    if dirty && run.saved_as.is_some() {
        // Best effort: a query being dropped may have lost its catalog entry already.
        let _ = checkpoint(&run, &shared, &cursors, watermark, rows_out);
    }
    Ok(())
}

/// Publishes the positions every cursor has processed (the lowest per shard, for a stream
/// read twice by a self-join).
fn publish_progress(shared: &QueryShared, cursors: &[StreamCursor]) {
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for c in cursors {
        for &(shard, next) in c.positions() {
            match merged.iter_mut().find(|(s, _)| *s == shard) {
                Some(e) => e.1 = e.1.min(next),
                None => merged.push((shard, next)),
            }
        }
    }
    *lock(&shared.progress) = merged;
    shared.progress_tick.send_modify(|t| *t += 1);
}

/// A checkpoint taken before a persistent query's micro-batch ran, saved only if the
/// micro-batch writes rows (just before it does).
struct PendingCheckpoint {
    header: CheckpointHeader,
    state: SavedState,
}

/// A pipeline's state as a checkpoint stores it: the aggregate's snapshot, then a join's.
#[derive(Default)]
struct SavedState {
    bytes: Vec<u8>,
    has_state: bool,
    agg_len: usize,
}

fn snapshot_state(shared: &QueryShared) -> Result<SavedState> {
    let mut out = SavedState::default();
    let mut guard = lock(&shared.pipeline);
    if let Some(p) = guard.as_mut() {
        if let Some(Stage::Aggregate(agg)) = p
            .stages
            .iter_mut()
            .find(|s| matches!(s, Stage::Aggregate(_)))
        {
            out.bytes = agg.snapshot()?;
            out.has_state = true;
        }
        out.agg_len = out.bytes.len();
        if let Some(join) = p.join.as_ref() {
            out.bytes.extend(join.snapshot()?);
        }
    }
    Ok(out)
}

/// Saves the query's state now: positions, state, rows written, output tails.
fn checkpoint(
    run: &QueryRun,
    shared: &QueryShared,
    cursors: &[StreamCursor],
    watermark: Option<i64>,
    rows_out: u64,
) -> Result<()> {
    if run.saved_as.is_none() {
        return Ok(());
    }
    let header = CheckpointHeader {
        positions: cursors[0].positions().to_vec(),
        right_positions: cursors
            .get(1)
            .map(|c| c.positions().to_vec())
            .unwrap_or_default(),
        watermark_ms: watermark,
        rows_out,
        ..CheckpointHeader::default()
    };
    save_checkpoint(run, shared, header, &snapshot_state(shared)?)
}

/// Completes `header` with the state's layout and the output stream's tails, and commits
/// it in one catalog transaction.
fn save_checkpoint(
    run: &QueryRun,
    shared: &QueryShared,
    mut header: CheckpointHeader,
    state: &SavedState,
) -> Result<()> {
    let Some(kind) = run.saved_as else {
        return Ok(());
    };
    header.has_state = state.has_state;
    header.agg_len = Some(state.agg_len);
    header.sink_positions = match &run.sink {
        Sink::Stream(target) => sink_positions(run, target)?,
        _ => Vec::new(),
    };
    let bytes = encode_checkpoint(&header, &state.bytes)?;
    match run.catalog.save_object_state(kind, &shared.name, &bytes) {
        Ok(()) => Ok(()),
        // Dropped meanwhile: the thread is about to be stopped.
        Err(streamcell_store::StoreError::Invalid(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Drops the groups of windows that closed (end + lateness at or before the watermark).
fn evict_closed(p: &mut Pipeline, watermark: i64) -> Result<()> {
    for stage in p.stages.iter_mut() {
        if let Stage::Aggregate(agg) = stage {
            agg.evict_windows(watermark, ALLOWED_LATENESS_MS)?;
        }
    }
    Ok(())
}

/// Sends a chunk's rows to the sink; returns how many.
fn deliver(
    run: &QueryRun,
    shared: &QueryShared,
    chunk: Chunk,
    rows_out: &mut u64,
    written: u64,
) -> Result<u64> {
    let n = chunk.batch.num_rows();
    if n == 0 {
        return Ok(0);
    }
    // After a restart, rows the query had written before the crash (but after its
    // checkpoint) are produced again by the replay: skip them.
    let skip = written.saturating_sub(*rows_out).min(n as u64) as usize;
    match &run.sink {
        Sink::Push(tx) => {
            // A closed channel means the client left; the loop notices and stops.
            let _ = tx.blocking_send(Ok(chunk.batch));
        }
        Sink::Stream(target) => {
            if skip < n {
                let mut objects: Vec<JsonRow> = Vec::with_capacity(n - skip);
                for row in skip..n {
                    objects.push(value::row_object(&chunk.batch, row)?);
                }
                let service = run.service.clone();
                let target = target.clone();
                // Each record says which query wrote it and how many rows it had written
                // once its batch was: a restart reads that back to skip what it replays. A
                // micro-batch too large for one append is split, each part saying how far it
                // got.
                let before = *rows_out + skip as u64;
                let name = shared.name.clone();
                let attributes = move |end: usize| {
                    vec![
                        (QUERY_ATTR.to_string(), name.clone()),
                        (ROWS_ATTR.to_string(), (before + end as u64).to_string()),
                    ]
                };
                run.runtime.block_on(async move {
                    crate::writer::append_rows(&service, &target, &objects, attributes).await
                })?;
            }
        }
        Sink::View => {}
    }
    *rows_out += n as u64;
    Ok((n - skip) as u64)
}

/// Header attribute naming the persistent query that wrote a record.
pub(crate) const QUERY_ATTR: &str = "streamcell.query";
/// Header attribute: the rows the query had written once this record's batch was.
pub(crate) const ROWS_ATTR: &str = "streamcell.rows";

/// Each shard of a query's output stream and its next sequence number.
fn sink_positions(run: &QueryRun, target: &str) -> Result<Vec<(u64, u64)>> {
    let Some(meta) = run.catalog.get_stream(target)? else {
        return Ok(Vec::new());
    };
    meta.shards
        .iter()
        .map(|&s| Ok((s, run.log.bounds(s)?.next_seq)))
        .collect()
}

/// How many rows the query had written in all, read from its output stream after the
/// checkpoint's positions (0 if none of its records are there). Output that cannot be read
/// fails the query: guessing would write rows twice or lose them.
fn rows_written_after(run: &QueryRun, name: &str, positions: &[(u64, u64)]) -> Result<u64> {
    use streamcell_proto::api::CompressionType;
    let mut most = 0;
    for &(shard, from) in positions {
        let mut next = from;
        loop {
            let batches =
                match run
                    .log
                    .read(shard, next, streamcell_store::ReadLimits::batches(256))
                {
                    Ok(b) => b,
                    // The output stream was deleted: nothing to skip.
                    Err(streamcell_store::StoreError::ShardNotFound(_)) => break,
                    Err(e) => return Err(e.into()),
                };
            if batches.is_empty() {
                break;
            }
            for b in &batches {
                next = b.seq + 1;
                let unreadable = |e: String| {
                    EngineError::internal(format!(
                        "query {name:?}: its output batch {} of shard {shard} cannot be read \
                         to learn what it had written: {e}",
                        b.seq
                    ))
                };
                let compression = CompressionType::try_from(i32::from(b.flags))
                    .map_err(|_| unreadable(format!("unknown compression {}", b.flags)))?;
                let records = streamcell_proto::records::decode_payload(&b.payload, compression)
                    .map_err(|e| unreadable(e.to_string()))?;
                for r in records {
                    let Some(h) = r.header else { continue };
                    if h.attributes.get(QUERY_ATTR).map(String::as_str) == Some(name) {
                        if let Some(n) = h.attributes.get(ROWS_ATTR).and_then(|v| v.parse().ok()) {
                            most = most.max(n);
                        }
                    }
                }
            }
        }
    }
    Ok(most)
}

/// The input batch of a micro-batch: the records as rows of the stream's schema, then, for
/// a windowed query, one copy of each record per window it falls in, with `window_start` and
/// `window_end`. Records whose windows have all closed are dropped as late.
fn input_batch(
    base: RecordBatch,
    publish_ms: &[i64],
    input_schema: &SchemaRef,
    window: Option<&WindowSpec>,
    watermark: &mut Option<i64>,
) -> Result<RecordBatch> {
    let Some(w) = window else {
        return Ok(base);
    };
    // Event time of each record.
    let times: Vec<i64> = match &w.time_column {
        None => publish_ms.to_vec(),
        Some(col) => {
            let idx = base.schema().index_of(col).map_err(|_| {
                EngineError::invalid(format!("the window's time column {col:?} does not exist"))
            })?;
            let a = base.column(idx);
            let ms: ArrayRef = match a.data_type() {
                DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
                    arrow::compute::cast(a, &DataType::Timestamp(TimeUnit::Millisecond, None))?
                }
                DataType::Float64 | DataType::Int64 => {
                    let i = arrow::compute::cast(a, &DataType::Int64)?;
                    arrow::compute::cast(&i, &DataType::Timestamp(TimeUnit::Millisecond, None))?
                }
                other => {
                    return Err(EngineError::invalid(format!(
                        "the window's time column {col:?} is {other}; it must be a TIMESTAMP or \
                         a number of epoch milliseconds"
                    )))
                }
            };
            let ms = ms.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
            // A record without an event time has no window: it is dropped (NULL marks it).
            (0..base.num_rows())
                .map(|i| if ms.is_null(i) { i64::MIN } else { ms.value(i) })
                .collect()
        }
    };
    let mut take_idx: Vec<u32> = Vec::with_capacity(base.num_rows());
    let mut starts: Vec<i64> = Vec::with_capacity(base.num_rows());
    if w.session_gap_ms.is_some() {
        // Session windows: both window columns carry the event time; the aggregate puts
        // each record in its session (and drops the late ones).
        for (i, &t) in times.iter().enumerate() {
            if t != i64::MIN {
                take_idx.push(i as u32);
                starts.push(t);
                *watermark = Some(watermark.unwrap_or(i64::MIN).max(t));
            }
        }
        let ends = starts.clone();
        return with_windows(&base, input_schema, take_idx, starts, ends);
    }
    for (i, &t) in times.iter().enumerate() {
        if t == i64::MIN {
            continue;
        }
        let wm = watermark.unwrap_or(i64::MIN);
        let first = t.div_euclid(w.hop_ms) * w.hop_ms;
        let mut start = first;
        while start > t - w.size_ms {
            // Windows already closed take no more records.
            if start + w.size_ms + ALLOWED_LATENESS_MS > wm {
                take_idx.push(i as u32);
                starts.push(start);
            }
            start -= w.hop_ms;
        }
        *watermark = Some(wm.max(t));
    }
    let ends: Vec<i64> = starts.iter().map(|s| s + w.size_ms).collect();
    with_windows(&base, input_schema, take_idx, starts, ends)
}

/// The rows `take_idx` of `base`, each with its window's start and end columns.
fn with_windows(
    base: &RecordBatch,
    input_schema: &SchemaRef,
    take_idx: Vec<u32>,
    starts: Vec<i64>,
    ends: Vec<i64>,
) -> Result<RecordBatch> {
    let idx = UInt32Array::from(take_idx);
    let mut columns: Vec<ArrayRef> = base
        .columns()
        .iter()
        .map(|c| Ok(take(c.as_ref(), &idx, None)?))
        .collect::<Result<_>>()?;
    columns.push(Arc::new(TimestampMillisecondArray::from(starts)));
    columns.push(Arc::new(TimestampMillisecondArray::from(ends)));
    Ok(RecordBatch::try_new_with_options(
        input_schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(idx.len())),
    )?)
}

#[cfg(test)]
mod checkpoint_tests {
    use super::*;

    fn header() -> CheckpointHeader {
        CheckpointHeader {
            positions: vec![(3, 17)],
            rows_out: 42,
            has_state: true,
            ..Default::default()
        }
    }

    #[test]
    fn checkpoints_round_trip_and_legacy_ones_still_read() {
        let bytes = encode_checkpoint(&header(), b"state").expect("encode");
        assert_eq!(bytes[0], CHECKPOINT_VERSION);
        let (h, state) = decode_checkpoint(&bytes).expect("decode");
        assert_eq!(
            (h.positions, h.rows_out, state),
            (vec![(3, 17)], 42, &b"state"[..])
        );
        let mut legacy = serde_json::to_vec(&header()).expect("json");
        legacy.push(b'\n');
        legacy.extend_from_slice(b"old");
        let (h, state) = decode_checkpoint(&legacy).expect("legacy");
        assert_eq!((h.rows_out, state), (42, &b"old"[..]));
    }

    #[test]
    fn every_damaged_byte_is_detected() {
        let bytes = encode_checkpoint(&header(), b"some aggregate state").expect("encode");
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                assert!(
                    decode_checkpoint(&bad).is_err(),
                    "flip of bit {bit:#x} in byte {i} passed"
                );
            }
        }
        assert!(
            decode_checkpoint(&bytes[..bytes.len() - 1]).is_err(),
            "truncated"
        );
        assert!(decode_checkpoint(&[]).is_err());
    }
}
