//! The `hstream.server.HStreamApi` gRPC service: streams, shards, appends, shard readers and
//! streaming reads over the store; subscriptions (through [`crate::subscriptions`]); SQL,
//! queries and views (through the engine, [`crate::sql`]). RPCs of parts not built yet
//! (connectors, schemas, stats, admin commands, namespaces, ReadStreamByKey) answer
//! UNIMPLEMENTED with a message that says so.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use streamcell_proto::api::{self, ErrorCode};
use streamcell_store::{
    now_ms, NewBatch, NewStream, ReadLimits, ReaderMeta, ShardMeta, Store, StoreError, StoredBatch,
    StreamMeta,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::batch;
use crate::error::{ApiError, ApiResult};
use crate::keys;
use crate::metrics::{Metrics, ReadVia, StreamCounters};
use crate::offsets::Position;
use crate::readers::ReaderPositions;
use crate::subscriptions::{self, Subscriptions};

/// Most encoded bytes in one `ReadShard` response: gRPC clients refuse messages over 4 MiB
/// by default. A single batch is always sent, whatever its size (it is at most
/// `--max-record-size` plus its record ids).
const MAX_RESPONSE_BYTES: usize = (4 << 20) - (256 << 10);
/// Most encoded bytes in one message of a streaming read (smaller: a reader that does not
/// keep up holds a message per shard in memory).
const MAX_STREAM_MESSAGE_BYTES: usize = 1 << 20;
/// Most batches put in one streaming-read response.
const MAX_BATCHES_PER_MESSAGE: usize = 256;
/// Most shards a stream may have.
const MAX_SHARDS: u32 = 4096;
/// The most copies a stream may ask for: NATS JetStream, the replicated backend of cluster
/// mode, keeps at most 5 replicas of a stream. (One node keeps one copy and records the
/// factor.)
const MAX_REPLICATION: u32 = 5;
/// Longest acknowledgement timeout a subscription may have (10 hours, as HStreamDB).
const MAX_ACK_TIMEOUT_SECS: i32 = 36_000;

/// Who this server is, as `DescribeCluster` and the lookups report it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Node id.
    pub id: u32,
    /// Address clients should connect to.
    pub host: String,
    /// gRPC port.
    pub port: u32,
}

/// The gRPC service.
pub struct StreamApi {
    store: Arc<Store>,
    subs: Arc<Subscriptions>,
    node: NodeInfo,
    started: Instant,
    max_record_size: usize,
    readers: ReaderPositions,
    stopping: watch::Receiver<bool>,
    /// Serializes changes to streams and subscriptions, so that a creation and a deletion of
    /// the same name cannot interleave.
    ddl: tokio::sync::Mutex<()>,
    /// The SQL engine (set once at start; it needs the service itself to write streams).
    engine: std::sync::OnceLock<Arc<streamcell_engine::Engine>>,
    /// Per-stream counters (appends, reads) that `/metrics` shows.
    metrics: Arc<Metrics>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl StreamApi {
    /// The largest batch an append may carry, in bytes (`--max-record-size`).
    pub fn max_record_size(&self) -> usize {
        self.max_record_size
    }

    /// A service over `store`, counting appends and reads in `metrics`.
    pub fn new(
        store: Arc<Store>,
        subs: Arc<Subscriptions>,
        node: NodeInfo,
        max_record_size: usize,
        stopping: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
    ) -> Self {
        StreamApi {
            metrics,
            ddl: tokio::sync::Mutex::new(()),
            stopping,
            store,
            subs,
            node,
            started: Instant::now(),
            max_record_size,
            readers: ReaderPositions::default(),
            engine: std::sync::OnceLock::new(),
        }
    }

    /// The store the service runs on.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Attaches the SQL engine (once).
    pub fn set_engine(&self, engine: Arc<streamcell_engine::Engine>) {
        let _ = self.engine.set(engine);
    }

    fn engine(&self) -> Result<&Arc<streamcell_engine::Engine>, Status> {
        self.engine
            .get()
            .ok_or_else(|| Status::unavailable("the SQL engine is not started"))
    }

    fn server_node(&self) -> api::ServerNode {
        api::ServerNode {
            id: self.node.id,
            host: self.node.host.clone(),
            port: self.node.port,
            version: Some(api::HStreamVersion {
                version: env!("CARGO_PKG_VERSION").into(),
                commit: String::new(),
            }),
        }
    }

    /// Runs catalog work (which syncs to disk) off the async executor.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| {
                ApiError::Store(StoreError::io("a blocking task", std::io::Error::other(e)))
            })?
    }

    async fn stream_meta(&self, name: &str) -> ApiResult<StreamMeta> {
        let n = name.to_string();
        self.blocking(move |s| {
            s.catalog
                .get_stream(&n)?
                .ok_or(ApiError::Store(StoreError::StreamNotFound(n)))
        })
        .await
    }

    /// The shard, checked to belong to `stream` when a stream name is given.
    /// The shard's metadata, checked to belong to `stream`. Read-only catalog lookups (redb
    /// readers never wait for a writer and never sync) run inline: on the append path a hop to
    /// the blocking pool cost more than the lookup itself (bench/ANALYSIS.md).
    async fn shard_meta(&self, stream: Option<&str>, shard: u64) -> ApiResult<ShardMeta> {
        let s = &self.store;
        let meta = s.catalog.get_shard(shard)?;
        match (meta, stream) {
            (Some(m), None) => Ok(m),
            (Some(m), Some(name)) if m.stream == name => Ok(m),
            (found, Some(name)) => {
                if s.catalog.get_stream(name)?.is_none() {
                    return Err(StoreError::StreamNotFound(name.to_string()).into());
                }
                let detail = match found {
                    Some(m) => format!(" (it belongs to stream {:?})", m.stream),
                    None => String::new(),
                };
                Err(ApiError::not_found(
                    ErrorCode::StreamNotFound,
                    format!("stream {name:?} has no shard {shard}{detail}"),
                ))
            }
            (None, None) => Err(StoreError::ShardNotFound(shard).into()),
        }
    }

    async fn read_blocking(
        &self,
        shard: u64,
        from: u64,
        limits: ReadLimits,
    ) -> ApiResult<Vec<StoredBatch>> {
        self.blocking(move |s| Ok(s.log.read(shard, from, limits)?))
            .await
    }

    /// Where a streaming read of `shard` starts, and the last sequence number it includes
    /// (`None`: no end; `Some(None)`: the end lies before anything readable).
    async fn shard_range(
        &self,
        shard: u64,
        from: Option<&api::ShardOffset>,
        until: Option<&api::ShardOffset>,
    ) -> ApiResult<(u64, Option<Option<u64>>)> {
        let from = Position::from_shard_offset(from, shard)?;
        let until = until
            .map(|u| Position::from_shard_offset(Some(u), shard))
            .transpose()?;
        self.blocking(move |s| {
            let start = from.start_seq(s.log.as_ref(), shard)?;
            let end = until
                .map(|u| u.until_seq(s.log.as_ref(), shard))
                .transpose()?;
            Ok((start, end))
        })
        .await
    }

    fn stream_pb(m: &StreamMeta) -> api::Stream {
        api::Stream {
            stream_name: m.name.clone(),
            replication_factor: m.replication_factor,
            backlog_duration: m.backlog_secs,
            shard_count: m.shard_count,
            creation_time: Some(timestamp(m.created_ms)),
        }
    }
}

/// Checks a resource name as HStreamDB does: 1 to 255 characters, a letter first, then
/// letters, digits, `-` or `_`.
pub fn validate_name(what: &str, name: &str, code: ErrorCode) -> ApiResult<()> {
    let problem = if name.is_empty() {
        Some("is empty".to_string())
    } else if name.chars().count() > 255 {
        Some(format!(
            "is {} characters long (at most 255)",
            name.chars().count()
        ))
    } else if !name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        Some("must start with a letter".to_string())
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            .map(|c| format!("contains {c:?}; only letters, digits, '-' and '_' are allowed"))
    };
    match problem {
        Some(p) => {
            let shown: String = name.chars().take(64).collect();
            let more = if shown.len() < name.len() { "…" } else { "" };
            Err(ApiError::invalid(
                code,
                format!("invalid {what} name {shown:?}{more}: it {p}"),
            ))
        }
        None => Ok(()),
    }
}

/// A protobuf timestamp from milliseconds since the Unix epoch.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A stored batch as the wire shows it: record ids plus the batch as it was appended.
pub fn received_record(shard: u64, b: &StoredBatch) -> api::ReceivedRecord {
    api::ReceivedRecord {
        record_ids: (0..b.record_count)
            .map(|i| api::RecordId {
                shard_id: shard,
                batch_id: b.seq,
                batch_index: i,
            })
            .collect(),
        record: Some(api::BatchedRecord {
            compression_type: i32::from(b.flags),
            publish_time: Some(timestamp(b.timestamp_ms)),
            batch_size: b.record_count,
            payload: b.payload.clone(),
        }),
    }
}

/// Turns stored batches into wire records, stopping before the encoded size would pass
/// `budget` (the first batch is always included, so a read always makes progress).
fn fit(shard: u64, batches: &[StoredBatch], budget: usize) -> Vec<api::ReceivedRecord> {
    let mut out = Vec::new();
    let mut size = 0;
    for b in batches {
        let r = received_record(shard, b);
        // The record plus its field tag and length prefix in the enclosing message.
        let len = r.encoded_len() + 8;
        if !out.is_empty() && size + len > budget {
            break;
        }
        size += len;
        out.push(r);
    }
    out
}

/// Follows one shard from `from` and sends its batches, in messages of up to
/// `MAX_BATCHES_PER_MESSAGE`, until `until` (inclusive) is passed, `budget` batches have been
/// sent in all (shared by the shards of one read), or the client goes away.
#[allow(clippy::too_many_arguments)]
async fn follow_shard<T: Send + 'static>(
    mut stopping: watch::Receiver<bool>,
    store: Arc<Store>,
    shard: u64,
    mut from: u64,
    until: Option<Option<u64>>,
    budget: Arc<AtomicU64>,
    tx: mpsc::Sender<Result<T, Status>>,
    wrap: fn(Vec<api::ReceivedRecord>) -> T,
    counted: Arc<StreamCounters>,
) {
    let mut tail = match store.log.watch_tail(shard) {
        Ok(w) => w,
        Err(e) => {
            let _ = tx.send(Err(ApiError::from(e).into())).await;
            return;
        }
    };
    loop {
        if let Some(u) = until {
            if u.is_none_or(|u| from > u) {
                return;
            }
        }
        let left = budget.load(Ordering::Acquire);
        if left == 0 {
            return;
        }
        let max_batches = MAX_BATCHES_PER_MESSAGE.min(left as usize);
        let s = store.clone();
        let read = tokio::task::spawn_blocking(move || {
            s.log.read(
                shard,
                from,
                ReadLimits {
                    max_batches,
                    max_bytes: MAX_STREAM_MESSAGE_BYTES,
                },
            )
        })
        .await;
        let batches = match read {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                let _ = tx.send(Err(ApiError::from(e).into())).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                return;
            }
        };
        let mut batches = batches;
        if let Some(Some(u)) = until {
            batches.retain(|b| b.seq <= u);
        }
        if batches.is_empty() {
            if until.is_some_and(|u| u.is_some_and(|u| from > u)) {
                return;
            }
            tokio::select! {
                changed = tail.changed() => if changed.is_err() {
                    // The shard's log is gone: its stream was deleted.
                    let _ = tx
                        .send(Err(ApiError::not_found(
                            ErrorCode::StreamNotFound,
                            format!("shard {shard} was deleted while being read"),
                        )
                        .into()))
                        .await;
                    return;
                },
                _ = tx.closed() => return,
                _ = stopping.changed() => {
                    // The flag only ever goes from false to true: the server is stopping.
                    let _ = tx.send(Err(Status::unavailable("the server is shutting down"))).await;
                    return;
                }
            }
            continue;
        }
        let mut msg = fit(shard, &batches, MAX_STREAM_MESSAGE_BYTES);
        // Take from the shared budget; send only what was granted.
        let want = msg.len() as u64;
        let granted = match budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
            (b > 0).then(|| b - b.min(want))
        }) {
            Ok(before) => before.min(want),
            Err(_) => return,
        };
        msg.truncate(granted as usize);
        from = batches[msg.len() - 1].seq + 1;
        let records: usize = msg.iter().map(|r| r.record_ids.len()).sum();
        if tx.send(Ok(wrap(msg))).await.is_err() {
            return;
        }
        counted.read(ReadVia::StreamingRead, records as u64);
    }
}

fn budget(max: u64) -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(if max == 0 { u64::MAX } else { max }))
}

fn unimplemented(rpc: &str) -> Status {
    ApiError::Unimplemented(format!(
        "{rpc} is not available in this StreamCell version yet"
    ))
    .into()
}

#[tonic::async_trait]
impl api::h_stream_api_server::HStreamApi for StreamApi {
    async fn echo(
        &self,
        request: Request<api::EchoRequest>,
    ) -> Result<Response<api::EchoResponse>, Status> {
        Ok(Response::new(api::EchoResponse {
            msg: request.into_inner().msg,
        }))
    }

    async fn describe_cluster(
        &self,
        _request: Request<()>,
    ) -> Result<Response<api::DescribeClusterResponse>, Status> {
        let node = self.server_node();
        Ok(Response::new(api::DescribeClusterResponse {
            protocol_version: "0.1.0".into(),
            server_nodes: vec![node.clone()],
            server_nodes_status: vec![api::ServerNodeStatus {
                node: Some(node),
                state: api::NodeState::Running as i32,
            }],
            cluster_up_time: self.started.elapsed().as_secs(),
        }))
    }

    async fn create_stream(
        &self,
        request: Request<api::Stream>,
    ) -> Result<Response<api::Stream>, Status> {
        let req = request.into_inner();
        validate_name(
            "stream",
            &req.stream_name,
            ErrorCode::StreamInvalidObjectIdentifier,
        )?;
        if req.replication_factor == 0 || req.replication_factor > MAX_REPLICATION {
            return Err(ApiError::invalid(
                ErrorCode::StreamInvalidReplicaFactor,
                format!(
                    "replication factor must be between 1 and {MAX_REPLICATION}, got {}",
                    req.replication_factor
                ),
            )
            .into());
        }
        if req.shard_count == 0 || req.shard_count > MAX_SHARDS {
            return Err(ApiError::invalid(
                ErrorCode::StreamInvalidShardCount,
                format!(
                    "shard count must be between 1 and {MAX_SHARDS}, got {}",
                    req.shard_count
                ),
            )
            .into());
        }
        let new = NewStream {
            name: req.stream_name.clone(),
            replication_factor: req.replication_factor,
            backlog_secs: req.backlog_duration,
            created_ms: now_ms(),
            key_ranges: keys::divide_key_space(req.shard_count)
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            epoch: u64::from(req.shard_count),
            shard_ids: Vec::new(),
        };
        let _ddl = self.ddl.lock().await;
        let meta = self
            .blocking(move |s| {
                if s.catalog.get_stream(&new.name)?.is_some() {
                    return Err(StoreError::StreamExists(new.name).into());
                }
                // Logs first, then the catalog: a stream is never visible without its logs.
                // Ids are reserved for good, so a crash in between leaves only directories
                // that start-up recognises as leftovers and removes.
                let ids = s.catalog.reserve_shard_ids(new.key_ranges.len())?;
                let undo = |made: &[u64]| {
                    for id in made {
                        let _ =
                            std::fs::remove_dir_all(s.dir().join("shards").join(id.to_string()));
                    }
                };
                for (i, id) in ids.iter().enumerate() {
                    if let Err(e) = s.log.create_shard(*id, new.backlog_secs) {
                        undo(&ids[..i]);
                        return Err(e.into());
                    }
                }
                match s.catalog.create_stream(NewStream {
                    shard_ids: ids.clone(),
                    ..new
                }) {
                    Ok((meta, _)) => Ok(meta),
                    Err(e) => {
                        undo(&ids);
                        Err(e.into())
                    }
                }
            })
            .await?;
        self.metrics.reset_stream(&meta.name);
        tracing::info!(stream = %meta.name, shards = meta.shard_count, backlog = meta.backlog_secs, "created stream");
        Ok(Response::new(Self::stream_pb(&meta)))
    }

    async fn delete_stream(
        &self,
        request: Request<api::DeleteStreamRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        let name = req.stream_name.clone();
        let metrics = self.metrics.clone();
        let _ddl = self.ddl.lock().await;
        let deleted = self
            .blocking(move |s| {
                let subs = s
                    .catalog
                    .list_subscriptions()?
                    .into_iter()
                    .filter(|m| m.stream == name)
                    .count();
                if subs > 0 {
                    if !req.force {
                        return Err(ApiError::Precondition {
                            code: ErrorCode::StreamFoundSubscription,
                            message: format!(
                                "stream {name:?} has {subs} subscription(s); delete them first or delete the stream with force"
                            ),
                        });
                    }
                    // Forced: the name goes, the data stays for the subscriptions to finish.
                    let archived = s.catalog.archive_stream(&name)?;
                    metrics.remove_stream(&name);
                    tracing::info!(stream = %name, archived = %archived, "stream deleted with force; kept for its subscriptions");
                    return Ok(None);
                }
                match s.catalog.delete_stream(&name) {
                    Ok(m) => Ok(Some(m)),
                    Err(StoreError::StreamNotFound(_)) if req.ignore_non_exist => Ok(None),
                    Err(e) => Err(e.into()),
                }
            })
            .await?;
        if let Some(meta) = deleted {
            self.metrics.remove_stream(&meta.name);
            for shard in &meta.shards {
                if let Err(e) = self.store.log.remove_shard(*shard).await {
                    tracing::warn!(shard, "removing the log of a deleted stream: {e}");
                }
            }
            tracing::info!(stream = %meta.name, "deleted stream");
        }
        Ok(Response::new(()))
    }

    async fn get_stream(
        &self,
        request: Request<api::GetStreamRequest>,
    ) -> Result<Response<api::GetStreamResponse>, Status> {
        let meta = self.stream_meta(&request.into_inner().name).await?;
        Ok(Response::new(api::GetStreamResponse {
            stream: Some(Self::stream_pb(&meta)),
        }))
    }

    async fn list_streams(
        &self,
        _request: Request<api::ListStreamsRequest>,
    ) -> Result<Response<api::ListStreamsResponse>, Status> {
        let all = self.blocking(|s| Ok(s.catalog.list_streams()?)).await?;
        Ok(Response::new(api::ListStreamsResponse {
            streams: all.iter().map(Self::stream_pb).collect(),
        }))
    }

    async fn list_streams_with_prefix(
        &self,
        request: Request<api::ListStreamsWithPrefixRequest>,
    ) -> Result<Response<api::ListStreamsResponse>, Status> {
        let prefix = request.into_inner().prefix;
        let all = self.blocking(|s| Ok(s.catalog.list_streams()?)).await?;
        Ok(Response::new(api::ListStreamsResponse {
            streams: all
                .iter()
                .filter(|m| m.name.starts_with(&prefix))
                .map(Self::stream_pb)
                .collect(),
        }))
    }

    async fn list_shards(
        &self,
        request: Request<api::ListShardsRequest>,
    ) -> Result<Response<api::ListShardsResponse>, Status> {
        let name = request.into_inner().stream_name;
        let shards = self
            .blocking(move |s| {
                s.catalog
                    .stream_shards(&name)?
                    .map(|(_, shards)| shards)
                    .ok_or_else(|| ApiError::Store(StoreError::StreamNotFound(name.clone())))
            })
            .await?;
        Ok(Response::new(api::ListShardsResponse {
            shards: shards
                .into_iter()
                .map(|m| api::Shard {
                    stream_name: m.stream,
                    shard_id: m.id,
                    start_hash_range_key: m.start_key,
                    end_hash_range_key: m.end_key,
                    epoch: m.epoch,
                    is_active: true,
                })
                .collect(),
        }))
    }

    async fn lookup_shard(
        &self,
        request: Request<api::LookupShardRequest>,
    ) -> Result<Response<api::LookupShardResponse>, Status> {
        let shard = request.into_inner().shard_id;
        self.shard_meta(None, shard).await?;
        Ok(Response::new(api::LookupShardResponse {
            shard_id: shard,
            server_node: Some(self.server_node()),
        }))
    }

    async fn append(
        &self,
        request: Request<api::AppendRequest>,
    ) -> Result<Response<api::AppendResponse>, Status> {
        let arrived = Instant::now();
        let req = request.into_inner();
        let checked = batch::check(req.records, self.max_record_size)?;
        let bytes = checked.payload.len();
        self.shard_meta(Some(&req.stream_name), req.shard_id)
            .await?;
        let appended = self
            .store
            .log
            .append(
                req.shard_id,
                NewBatch {
                    payload: checked.payload,
                    record_count: checked.record_count,
                    flags: checked.compression as u16,
                },
            )
            .await
            .map_err(ApiError::from)?;
        self.metrics.stream(&req.stream_name).appended(
            checked.record_count,
            bytes,
            arrived.elapsed(),
        );
        Ok(Response::new(api::AppendResponse {
            stream_name: req.stream_name,
            shard_id: req.shard_id,
            record_ids: (0..checked.record_count)
                .map(|i| api::RecordId {
                    shard_id: req.shard_id,
                    batch_id: appended.seq,
                    batch_index: i,
                })
                .collect(),
        }))
    }

    async fn get_tail_record_id(
        &self,
        request: Request<api::GetTailRecordIdRequest>,
    ) -> Result<Response<api::GetTailRecordIdResponse>, Status> {
        let req = request.into_inner();
        self.shard_meta(Some(&req.stream_name), req.shard_id)
            .await?;
        let b = self
            .store
            .log
            .bounds(req.shard_id)
            .map_err(ApiError::from)?;
        Ok(Response::new(api::GetTailRecordIdResponse {
            tail_record_id: Some(api::RecordId {
                shard_id: req.shard_id,
                batch_id: b.tail_seq,
                batch_index: 0,
            }),
        }))
    }

    async fn trim_stream(
        &self,
        request: Request<api::TrimStreamRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        let pos = Position::from_stream_offset(req.trim_point.as_ref())?;
        let meta = self.stream_meta(&req.stream_name).await?;
        self.blocking(move |s| {
            for shard in meta.shards {
                if let Some(seq) = pos.trim_seq(s.log.as_ref(), shard)? {
                    s.log.trim(shard, seq)?;
                }
            }
            Ok(())
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn trim_shard(
        &self,
        request: Request<api::TrimShardRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        self.shard_meta(Some(&req.stream_name), req.shard_id)
            .await?;
        let pos = Position::from_shard_offset(req.trim_point.as_ref(), req.shard_id)?;
        let shard = req.shard_id;
        self.blocking(move |s| {
            if let Some(seq) = pos.trim_seq(s.log.as_ref(), shard)? {
                s.log.trim(shard, seq)?;
            }
            Ok(())
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn create_shard_reader(
        &self,
        request: Request<api::CreateShardReaderRequest>,
    ) -> Result<Response<api::CreateShardReaderResponse>, Status> {
        let req = request.into_inner();
        validate_name(
            "shard reader",
            &req.reader_id,
            ErrorCode::ShardReaderInvalidObjectIdentifier,
        )?;
        self.shard_meta(Some(&req.stream_name), req.shard_id)
            .await?;
        let pos = Position::from_shard_offset(req.shard_offset.as_ref(), req.shard_id)?;
        let reader = ReaderMeta {
            id: req.reader_id.clone(),
            stream: req.stream_name.clone(),
            shard: req.shard_id,
            start_seq: 0,
            offset: pos.describe(),
            timeout_ms: req.timeout,
            created_ms: now_ms(),
        };
        self.blocking(move |s| {
            let start_seq = pos.start_seq(s.log.as_ref(), reader.shard)?;
            Ok(s.catalog.create_reader(ReaderMeta {
                start_seq,
                ..reader
            })?)
        })
        .await?;
        Ok(Response::new(api::CreateShardReaderResponse {
            stream_name: req.stream_name,
            shard_id: req.shard_id,
            shard_offset: req.shard_offset,
            reader_id: req.reader_id,
            timeout: req.timeout,
        }))
    }

    async fn lookup_shard_reader(
        &self,
        request: Request<api::LookupShardReaderRequest>,
    ) -> Result<Response<api::LookupShardReaderResponse>, Status> {
        let id = request.into_inner().reader_id;
        let rid = id.clone();
        self.blocking(move |s| {
            s.catalog
                .get_reader(&rid)?
                .ok_or(ApiError::Store(StoreError::ReaderNotFound(rid)))
        })
        .await?;
        Ok(Response::new(api::LookupShardReaderResponse {
            reader_id: id,
            server_node: Some(self.server_node()),
        }))
    }

    async fn read_shard(
        &self,
        request: Request<api::ReadShardRequest>,
    ) -> Result<Response<api::ReadShardResponse>, Status> {
        let req = request.into_inner();
        let id = req.reader_id.clone();
        let reader = self
            .blocking(move |s| {
                s.catalog
                    .get_reader(&id)?
                    .ok_or(ApiError::Store(StoreError::ReaderNotFound(id)))
            })
            .await?;
        let state = self.readers.get(&reader);
        let mut next = state.next.lock().await;
        let max = req.max_records as usize;
        let deadline = Instant::now() + Duration::from_millis(u64::from(reader.timeout_ms));
        let mut tail = self
            .store
            .log
            .watch_tail(reader.shard)
            .map_err(ApiError::from)?;
        let mut out = Vec::new();
        // Return what is there at once; if nothing is, wait for an append up to the reader's
        // timeout (0 = do not wait).
        while max > 0 && out.is_empty() {
            tail.borrow_and_update();
            let limits = ReadLimits {
                max_batches: max,
                max_bytes: MAX_RESPONSE_BYTES,
            };
            let got = self.read_blocking(reader.shard, *next, limits).await?;
            if !got.is_empty() {
                // Advance only past what this response carries.
                out = fit(reader.shard, &got, MAX_RESPONSE_BYTES);
                *next = got[out.len() - 1].seq + 1;
            } else {
                // Nothing yet: wait for an append, the timeout, or the reader's deletion.
                let deleted = state.deleted.notified();
                tokio::select! {
                    changed = tokio::time::timeout_at(deadline.into(), tail.changed()) => {
                        if !matches!(changed, Ok(Ok(()))) {
                            break;
                        }
                    }
                    () = deleted => {
                        return Err(ApiError::Store(StoreError::ReaderNotFound(reader.id.clone())).into());
                    }
                }
            }
        }
        let records: usize = out.iter().map(|r| r.record_ids.len()).sum();
        self.metrics
            .stream(&reader.stream)
            .read(ReadVia::ShardReader, records as u64);
        Ok(Response::new(api::ReadShardResponse {
            received_records: out,
        }))
    }

    async fn list_shard_readers(
        &self,
        _request: Request<api::ListShardReadersRequest>,
    ) -> Result<Response<api::ListShardReadersResponse>, Status> {
        let all = self.blocking(|s| Ok(s.catalog.list_readers()?)).await?;
        Ok(Response::new(api::ListShardReadersResponse {
            reader_id: all.into_iter().map(|r| r.id).collect(),
        }))
    }

    async fn delete_shard_reader(
        &self,
        request: Request<api::DeleteShardReaderRequest>,
    ) -> Result<Response<()>, Status> {
        let id = request.into_inner().reader_id;
        let rid = id.clone();
        self.blocking(move |s| Ok(s.catalog.delete_reader(&rid)?))
            .await?;
        self.readers.remove(&id);
        Ok(Response::new(()))
    }

    type ReadShardStreamStream = BoxStream<api::ReadShardStreamResponse>;

    async fn read_shard_stream(
        &self,
        request: Request<api::ReadShardStreamRequest>,
    ) -> Result<Response<Self::ReadShardStreamStream>, Status> {
        let req = request.into_inner();
        let shard = req.shard_id;
        let meta = self.shard_meta(None, shard).await?;
        let (start, end) = self
            .shard_range(shard, req.from.as_ref(), req.until.as_ref())
            .await?;
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(follow_shard(
            self.stopping.clone(),
            self.store.clone(),
            shard,
            start,
            end,
            budget(req.max_read_batches),
            tx,
            |r| api::ReadShardStreamResponse {
                received_records: r,
            },
            self.metrics.stream(&meta.stream),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ReadStreamStream = BoxStream<api::ReadStreamResponse>;

    async fn read_stream(
        &self,
        request: Request<api::ReadStreamRequest>,
    ) -> Result<Response<Self::ReadStreamStream>, Status> {
        let req = request.into_inner();
        let meta = self.stream_meta(&req.stream_name).await?;
        let from = match req.from.as_ref() {
            Some(_) => Position::from_stream_offset(req.from.as_ref())?,
            None => Position::Earliest,
        };
        let until = req
            .until
            .as_ref()
            .map(|u| Position::from_stream_offset(Some(u)))
            .transpose()?;
        let shards = meta.shards.clone();
        let plans = self
            .blocking(move |s| {
                let mut plans = Vec::new();
                for shard in shards {
                    let start = from.start_seq(s.log.as_ref(), shard)?;
                    let end = until
                        .map(|u| u.until_seq(s.log.as_ref(), shard))
                        .transpose()?;
                    plans.push((shard, start, end));
                }
                Ok(plans)
            })
            .await?;
        let (tx, rx) = mpsc::channel(1);
        let shared = budget(req.max_read_batches);
        let counted = self.metrics.stream(&meta.name);
        for (shard, start, end) in plans {
            tokio::spawn(follow_shard(
                self.stopping.clone(),
                self.store.clone(),
                shard,
                start,
                end,
                shared.clone(),
                tx.clone(),
                |r| api::ReadStreamResponse {
                    received_records: r,
                },
                counted.clone(),
            ));
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ReadSingleShardStreamStream = BoxStream<api::ReadSingleShardStreamResponse>;

    async fn read_single_shard_stream(
        &self,
        request: Request<api::ReadSingleShardStreamRequest>,
    ) -> Result<Response<Self::ReadSingleShardStreamStream>, Status> {
        let req = request.into_inner();
        let meta = self.stream_meta(&req.stream_name).await?;
        let [shard] = meta.shards[..] else {
            return Err(ApiError::invalid(
                ErrorCode::ShardReaderTooManyShards,
                format!(
                    "stream {:?} has {} shards; ReadSingleShardStream needs a stream with one",
                    meta.name, meta.shard_count
                ),
            )
            .into());
        };
        let (start, end) = self
            .shard_range(shard, req.from.as_ref(), req.until.as_ref())
            .await?;
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(follow_shard(
            self.stopping.clone(),
            self.store.clone(),
            shard,
            start,
            end,
            budget(req.max_read_batches),
            tx,
            |r| api::ReadSingleShardStreamResponse {
                received_records: r,
            },
            self.metrics.stream(&meta.name),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lookup_resource(
        &self,
        _request: Request<api::LookupResourceRequest>,
    ) -> Result<Response<api::ServerNode>, Status> {
        Ok(Response::new(self.server_node()))
    }

    async fn lookup_key(
        &self,
        _request: Request<api::LookupKeyRequest>,
    ) -> Result<Response<api::ServerNode>, Status> {
        Ok(Response::new(self.server_node()))
    }

    // ---- parts of the API that later work brings ------------------------------------
    type ReadStreamByKeyStream = BoxStream<api::ReadStreamByKeyResponse>;
    type StreamingFetchStream = BoxStream<api::StreamingFetchResponse>;

    async fn read_stream_by_key(
        &self,
        _request: Request<Streaming<api::ReadStreamByKeyRequest>>,
    ) -> Result<Response<Self::ReadStreamByKeyStream>, Status> {
        Err(unimplemented("ReadStreamByKey"))
    }

    async fn create_subscription(
        &self,
        request: Request<api::Subscription>,
    ) -> Result<Response<api::Subscription>, Status> {
        let req = request.into_inner();
        validate_name(
            "subscription",
            &req.subscription_id,
            ErrorCode::SubscriptionInvalidObjectIdentifier,
        )?;
        if !(1..=MAX_ACK_TIMEOUT_SECS).contains(&req.ack_timeout_seconds) {
            return Err(ApiError::invalid(
                ErrorCode::SubscriptionInvalidObjectIdentifier,
                format!(
                    "ackTimeoutSeconds must be between 1 and {MAX_ACK_TIMEOUT_SECS}, got {}",
                    req.ack_timeout_seconds
                ),
            )
            .into());
        }
        if req.max_unacked_records < 1 {
            return Err(ApiError::invalid(
                ErrorCode::SubscriptionInvalidObjectIdentifier,
                format!(
                    "maxUnackedRecords must be at least 1, got {}",
                    req.max_unacked_records
                ),
            )
            .into());
        }
        let offset = match api::SpecialOffset::try_from(req.offset) {
            Ok(o) => o,
            Err(_) => {
                return Err(ApiError::invalid(
                    ErrorCode::SubscriptionInvalidOffset,
                    format!("unknown subscription offset {}", req.offset),
                )
                .into())
            }
        };
        let name = req.stream_name.clone();
        let shards = self
            .blocking(move |s| {
                let Some(meta) = s.catalog.get_stream(&name)? else {
                    return Err(ApiError::Precondition {
                        code: ErrorCode::SubscriptionCreationOnNonExistentStream,
                        message: format!("cannot subscribe to stream {name:?}: it does not exist"),
                    });
                };
                let mut shards = Vec::with_capacity(meta.shards.len());
                for shard in meta.shards {
                    let b = s.log.bounds(shard)?;
                    let start = match offset {
                        api::SpecialOffset::Earliest => b.start_seq,
                        api::SpecialOffset::Latest => b.next_seq,
                    };
                    shards.push((shard, start));
                }
                Ok(shards)
            })
            .await?;
        let meta = subscriptions::new_meta(&req, shards);
        let subs = self.subs.clone();
        let _ddl = self.ddl.lock().await;
        let created = self
            .blocking(move |_| subs.create(meta).map(|h| h.meta.as_ref().clone()))
            .await?;
        tracing::info!(sub = %created.id, stream = %created.stream, "created subscription");
        Ok(Response::new(subscriptions::subscription_pb(&created)))
    }

    async fn get_subscription(
        &self,
        request: Request<api::GetSubscriptionRequest>,
    ) -> Result<Response<api::GetSubscriptionResponse>, Status> {
        let id = request.into_inner().id;
        let handle = self.subs.get(&id)?;
        let offsets = handle.offsets().await?;
        let held = handle.held();
        // From the catalog: a forced stream deletion renames the stream it reads.
        let meta = self
            .blocking(move |s| {
                s.catalog
                    .get_subscription(&id)?
                    .ok_or(ApiError::Store(StoreError::SubscriptionNotFound(id)))
            })
            .await?;
        Ok(Response::new(api::GetSubscriptionResponse {
            subscription: Some(subscriptions::subscription_pb(&meta)),
            offsets: offsets
                .into_iter()
                .map(|(shard_id, batch_id)| api::SubscriptionOffset { shard_id, batch_id })
                .collect(),
            streamcell_held_shards: held
                .into_iter()
                .map(|h| api::HeldShard {
                    shard_id: h.shard,
                    batch_id: h.batch,
                    reason: h.reason,
                    since: Some(timestamp(h.since_ms)),
                })
                .collect(),
        }))
    }

    async fn list_subscriptions(
        &self,
        _request: Request<api::ListSubscriptionsRequest>,
    ) -> Result<Response<api::ListSubscriptionsResponse>, Status> {
        let all = self
            .blocking(|s| Ok(s.catalog.list_subscriptions()?))
            .await?;
        Ok(Response::new(api::ListSubscriptionsResponse {
            subscription: all.iter().map(subscriptions::subscription_pb).collect(),
        }))
    }

    async fn list_subscriptions_with_prefix(
        &self,
        request: Request<api::ListSubscriptionsWithPrefixRequest>,
    ) -> Result<Response<api::ListSubscriptionsResponse>, Status> {
        let prefix = request.into_inner().prefix;
        let all = self
            .blocking(|s| Ok(s.catalog.list_subscriptions()?))
            .await?;
        Ok(Response::new(api::ListSubscriptionsResponse {
            subscription: all
                .iter()
                .filter(|m| m.id.starts_with(&prefix))
                .map(subscriptions::subscription_pb)
                .collect(),
        }))
    }

    async fn list_consumers(
        &self,
        request: Request<api::ListConsumersRequest>,
    ) -> Result<Response<api::ListConsumersResponse>, Status> {
        let handle = self.subs.get(&request.into_inner().subscription_id)?;
        let consumers = handle.consumers().await?;
        Ok(Response::new(api::ListConsumersResponse {
            consumers: consumers
                .into_iter()
                .map(|c| api::Consumer {
                    name: c.name,
                    uri: c.uri,
                    user_agent: c.user_agent,
                })
                .collect(),
        }))
    }

    async fn check_subscription_exist(
        &self,
        request: Request<api::CheckSubscriptionExistRequest>,
    ) -> Result<Response<api::CheckSubscriptionExistResponse>, Status> {
        let exists = self.subs.get(&request.into_inner().subscription_id).is_ok();
        Ok(Response::new(api::CheckSubscriptionExistResponse {
            exists,
        }))
    }

    async fn delete_subscription(
        &self,
        request: Request<api::DeleteSubscriptionRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        let _ddl = self.ddl.lock().await;
        self.subs.delete(&req.subscription_id, req.force).await?;
        Ok(Response::new(()))
    }

    async fn lookup_subscription(
        &self,
        request: Request<api::LookupSubscriptionRequest>,
    ) -> Result<Response<api::LookupSubscriptionResponse>, Status> {
        let id = request.into_inner().subscription_id;
        self.subs.get(&id)?;
        Ok(Response::new(api::LookupSubscriptionResponse {
            subscription_id: id,
            server_node: Some(self.server_node()),
        }))
    }

    async fn streaming_fetch(
        &self,
        request: Request<Streaming<api::StreamingFetchRequest>>,
    ) -> Result<Response<Self::StreamingFetchStream>, Status> {
        let uri = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let agent = request
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut inbound = request.into_inner();
        let Some(first) = inbound.message().await? else {
            return Err(ApiError::invalid(
                ErrorCode::SubscriptionInvalidObjectIdentifier,
                "the fetch stream ended before its first message (subscriptionId, consumerName)",
            )
            .into());
        };
        let name_len = first.consumer_name.chars().count();
        if name_len == 0 || name_len > 255 {
            return Err(ApiError::invalid(
                ErrorCode::SubscriptionInvalidObjectIdentifier,
                format!("consumerName must be 1 to 255 characters, got {name_len}"),
            )
            .into());
        }
        let handle = self.subs.get(&first.subscription_id)?;
        let (out, deliveries) = mpsc::unbounded_channel();
        let consumer = handle
            .join(first.consumer_name.clone(), uri, agent, out)
            .await?;
        if !first.ack_ids.is_empty() {
            handle.acks(consumer, first.ack_ids);
        }
        let sub_id = first.subscription_id;
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if !m.subscription_id.is_empty() && m.subscription_id != sub_id {
                    handle.kick(
                        consumer,
                        ApiError::invalid(
                            ErrorCode::SubscriptionInvalidObjectIdentifier,
                            format!(
                                "this fetch stream belongs to subscription {sub_id:?}, not {:?}",
                                m.subscription_id
                            ),
                        )
                        .into(),
                    );
                    break;
                }
                if !m.ack_ids.is_empty() {
                    handle.acks(consumer, m.ack_ids);
                }
            }
            handle.leave(consumer);
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(
            deliveries,
        ))))
    }

    async fn send_admin_command(
        &self,
        _request: Request<api::AdminCommandRequest>,
    ) -> Result<Response<api::AdminCommandResponse>, Status> {
        Err(unimplemented("SendAdminCommand"))
    }

    async fn per_stream_time_series_stats(
        &self,
        _request: Request<api::PerStreamTimeSeriesStatsRequest>,
    ) -> Result<Response<api::PerStreamTimeSeriesStatsResponse>, Status> {
        Err(unimplemented("PerStreamTimeSeriesStats"))
    }

    async fn per_stream_time_series_stats_all(
        &self,
        _request: Request<api::PerStreamTimeSeriesStatsAllRequest>,
    ) -> Result<Response<api::PerStreamTimeSeriesStatsAllResponse>, Status> {
        Err(unimplemented("PerStreamTimeSeriesStatsAll"))
    }

    async fn get_stats(
        &self,
        _request: Request<api::GetStatsRequest>,
    ) -> Result<Response<api::GetStatsResponse>, Status> {
        Err(unimplemented("GetStats"))
    }

    async fn execute_query(
        &self,
        request: Request<api::CommandQuery>,
    ) -> Result<Response<api::CommandQueryResponse>, Status> {
        let engine = self.engine()?.clone();
        let sql = request.into_inner().stmt_text;
        crate::sql::execute_query(&engine, &sql)
            .await
            .map(Response::new)
            .map_err(|e| {
                let status = crate::sql::status(&e);
                let code = match status.code() {
                    tonic::Code::NotFound => ErrorCode::StreamNotFound,
                    tonic::Code::AlreadyExists => ErrorCode::QueryExists,
                    tonic::Code::Internal => ErrorCode::InternalError,
                    _ => ErrorCode::QueryInvalidSql,
                };
                Status::new(status.code(), crate::error::body(code, &e.to_string()))
            })
    }

    async fn create_query(
        &self,
        request: Request<api::CreateQueryRequest>,
    ) -> Result<Response<api::Query>, Status> {
        let req = request.into_inner();
        let engine = self.engine()?.clone();
        let q = engine
            .create_query(&req.sql, &req.query_name)
            .await
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::StreamNotFound))?;
        Ok(Response::new(crate::sql::query_pb(&q, self.node.id)))
    }

    async fn create_query_with_namespace(
        &self,
        _request: Request<api::CreateQueryWithNamespaceRequest>,
    ) -> Result<Response<api::Query>, Status> {
        Err(unimplemented("CreateQueryWithNamespace"))
    }

    async fn list_queries(
        &self,
        _request: Request<api::ListQueriesRequest>,
    ) -> Result<Response<api::ListQueriesResponse>, Status> {
        let engine = self.engine()?;
        Ok(Response::new(api::ListQueriesResponse {
            queries: engine
                .list()
                .iter()
                .map(|q| crate::sql::query_pb(q, self.node.id))
                .collect(),
        }))
    }

    async fn get_query(
        &self,
        request: Request<api::GetQueryRequest>,
    ) -> Result<Response<api::Query>, Status> {
        let id = request.into_inner().id;
        let q = self
            .engine()?
            .get(&id)
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::QueryNotFound))?;
        Ok(Response::new(crate::sql::query_pb(&q, self.node.id)))
    }

    async fn terminate_query(
        &self,
        request: Request<api::TerminateQueryRequest>,
    ) -> Result<Response<()>, Status> {
        let id = request.into_inner().query_id;
        crate::sql::manage::terminate(self.engine()?, &id)
            .await
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::QueryNotFound))?;
        Ok(Response::new(()))
    }

    async fn delete_query(
        &self,
        request: Request<api::DeleteQueryRequest>,
    ) -> Result<Response<()>, Status> {
        let id = request.into_inner().id;
        crate::sql::manage::delete(self.engine()?, &id, false, false)
            .await
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::QueryNotFound))?;
        Ok(Response::new(()))
    }

    async fn resume_query(
        &self,
        request: Request<api::ResumeQueryRequest>,
    ) -> Result<Response<()>, Status> {
        let id = request.into_inner().id;
        crate::sql::manage::pause(self.engine()?, &id, false)
            .await
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::QueryNotFound))?;
        Ok(Response::new(()))
    }

    async fn pause_query(
        &self,
        request: Request<api::PauseQueryRequest>,
    ) -> Result<Response<()>, Status> {
        let id = request.into_inner().id;
        crate::sql::manage::pause(self.engine()?, &id, true)
            .await
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::QueryNotFound))?;
        Ok(Response::new(()))
    }

    async fn parse_sql(
        &self,
        request: Request<api::ParseSqlRequest>,
    ) -> Result<Response<api::ParseSqlResponse>, Status> {
        let sql = request.into_inner().sql;
        let view = self
            .engine()?
            .view_of_query(&sql)
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::ViewNotFound))?;
        Ok(Response::new(api::ParseSqlResponse {
            sql: Some(api::parse_sql_response::Sql::EvqSql(
                api::ExecuteViewQuerySql { view },
            )),
        }))
    }

    async fn register_schema(
        &self,
        _request: Request<api::Schema>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("RegisterSchema"))
    }

    async fn get_schema(
        &self,
        _request: Request<api::GetSchemaRequest>,
    ) -> Result<Response<api::Schema>, Status> {
        Err(unimplemented("GetSchema"))
    }

    async fn unregister_schema(
        &self,
        _request: Request<api::UnregisterSchemaRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("UnregisterSchema"))
    }

    async fn create_connector(
        &self,
        _request: Request<api::CreateConnectorRequest>,
    ) -> Result<Response<api::Connector>, Status> {
        Err(unimplemented("CreateConnector"))
    }

    async fn list_connectors(
        &self,
        _request: Request<api::ListConnectorsRequest>,
    ) -> Result<Response<api::ListConnectorsResponse>, Status> {
        Err(unimplemented("ListConnectors"))
    }

    async fn get_connector(
        &self,
        _request: Request<api::GetConnectorRequest>,
    ) -> Result<Response<api::Connector>, Status> {
        Err(unimplemented("GetConnector"))
    }

    async fn get_connector_spec(
        &self,
        _request: Request<api::GetConnectorSpecRequest>,
    ) -> Result<Response<api::GetConnectorSpecResponse>, Status> {
        Err(unimplemented("GetConnectorSpec"))
    }

    async fn get_connector_logs(
        &self,
        _request: Request<api::GetConnectorLogsRequest>,
    ) -> Result<Response<api::GetConnectorLogsResponse>, Status> {
        Err(unimplemented("GetConnectorLogs"))
    }

    async fn delete_connector(
        &self,
        _request: Request<api::DeleteConnectorRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("DeleteConnector"))
    }

    async fn pause_connector(
        &self,
        _request: Request<api::PauseConnectorRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("PauseConnector"))
    }

    async fn resume_connector(
        &self,
        _request: Request<api::ResumeConnectorRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("ResumeConnector"))
    }

    async fn list_views(
        &self,
        _request: Request<api::ListViewsRequest>,
    ) -> Result<Response<api::ListViewsResponse>, Status> {
        let engine = self.engine()?;
        Ok(Response::new(api::ListViewsResponse {
            views: engine
                .list()
                .iter()
                .filter(|q| q.kind == streamcell_engine::QueryKind::View)
                .map(crate::sql::view_pb)
                .collect(),
        }))
    }

    async fn get_view(
        &self,
        request: Request<api::GetViewRequest>,
    ) -> Result<Response<api::View>, Status> {
        let id = request.into_inner().view_id;
        match self.engine()?.get(&id) {
            Ok(q) if q.kind == streamcell_engine::QueryKind::View => {
                Ok(Response::new(crate::sql::view_pb(&q)))
            }
            _ => Err(ApiError::not_found(
                ErrorCode::ViewNotFound,
                format!("view {id:?} does not exist"),
            )
            .into()),
        }
    }

    async fn delete_view(
        &self,
        request: Request<api::DeleteViewRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        crate::sql::manage::delete(self.engine()?, &req.view_id, true, req.ignore_non_exist)
            .await
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::ViewNotFound))?;
        Ok(Response::new(()))
    }

    async fn execute_view_query(
        &self,
        request: Request<api::ExecuteViewQueryRequest>,
    ) -> Result<Response<api::ExecuteViewQueryResponse>, Status> {
        let sql = request.into_inner().sql;
        let results = crate::sql::manage::view_query(self.engine()?, &sql)
            .await
            .map_err(|e| crate::sql::api_status(&e, ErrorCode::ViewNotFound))?;
        Ok(Response::new(api::ExecuteViewQueryResponse { results }))
    }

    async fn execute_view_query_with_namespace(
        &self,
        _request: Request<api::ExecuteViewQueryWithNamespaceRequest>,
    ) -> Result<Response<api::ExecuteViewQueryResponse>, Status> {
        Err(unimplemented("ExecuteViewQueryWithNamespace"))
    }
}
