//! The [`Service`] itself: what every call shares (the store, the running subscriptions, the
//! counters, the lock that orders changes to names, the stopping flag) and the lookups the
//! calls of [`crate::streams`], [`crate::appends`], [`crate::reads`] and [`crate::consumers`]
//! are built on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use streamcell_proto::api::ErrorCode;
use streamcell_store::{ShardMeta, Store, StoreError, StreamMeta};
use tokio::sync::watch;

use crate::counters::Metrics;
use crate::error::{Result, ServiceError};
use crate::readers::ReaderPositions;
use crate::subscriptions::Subscriptions;

/// Who this server is, as cluster descriptions and lookups report it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Node id.
    pub id: u32,
    /// Address clients should connect to.
    pub host: String,
    /// gRPC port.
    pub port: u32,
}

/// Streams, shards, appends, readers and subscriptions over one store.
pub struct Service {
    pub(crate) store: Arc<Store>,
    pub(crate) subs: Arc<Subscriptions>,
    node: NodeInfo,
    started: Instant,
    max_record_size: usize,
    pub(crate) readers: ReaderPositions,
    pub(crate) stopping: watch::Receiver<bool>,
    /// Serializes changes to streams and subscriptions, so that a creation and a deletion of
    /// the same name cannot interleave.
    pub(crate) ddl: tokio::sync::Mutex<()>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Service {
    /// Starts the service over an opened store: the subscriptions the catalog lists start
    /// delivering (and checkpointing). `max_record_size` bounds one appended batch; calls that
    /// wait (live reads, consumers) end when `stopping` turns true.
    pub fn start(
        store: Arc<Store>,
        node: NodeInfo,
        max_record_size: usize,
        stopping: watch::Receiver<bool>,
    ) -> Result<Arc<Service>> {
        let metrics = Arc::new(Metrics::new());
        let subs = Subscriptions::start(store.clone(), metrics.clone())?;
        Ok(Arc::new(Service {
            store,
            subs,
            node,
            started: Instant::now(),
            max_record_size,
            readers: ReaderPositions::default(),
            stopping,
            ddl: tokio::sync::Mutex::new(()),
            metrics,
        }))
    }

    /// The store the service runs on.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The running subscriptions.
    pub fn subscriptions(&self) -> &Arc<Subscriptions> {
        &self.subs
    }

    /// The per-stream counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// This server.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Time since the service started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The largest batch an append may carry, in bytes (`--max-record-size`).
    pub fn max_record_size(&self) -> usize {
        self.max_record_size
    }

    /// Saves every subscription's progress and ends its consumers' streams (the server is
    /// stopping).
    pub async fn shutdown(&self) {
        self.subs.shutdown().await;
    }

    /// Runs catalog or log work that may block (it syncs to disk) off the async executor.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| {
                ServiceError::Store(StoreError::io("a blocking task", std::io::Error::other(e)))
            })?
    }

    /// The stream `name`.
    pub async fn stream_meta(&self, name: &str) -> Result<StreamMeta> {
        let n = name.to_string();
        self.blocking(move |s| {
            s.catalog
                .get_stream(&n)?
                .ok_or(ServiceError::Store(StoreError::StreamNotFound(n)))
        })
        .await
    }

    /// The shard's metadata, checked to belong to `stream` when a stream name is given.
    /// Read-only catalog lookups (redb readers never wait for a writer and never sync) run
    /// inline: on the append path a hop to the blocking pool cost more than the lookup itself
    /// (bench/ANALYSIS.md).
    pub fn shard_meta(&self, stream: Option<&str>, shard: u64) -> Result<ShardMeta> {
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
                Err(ServiceError::not_found(
                    ErrorCode::StreamNotFound,
                    format!("stream {name:?} has no shard {shard}{detail}"),
                ))
            }
            (None, None) => Err(StoreError::ShardNotFound(shard).into()),
        }
    }
}
