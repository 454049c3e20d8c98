//! StreamCell's front doors. Today: the gRPC `hstream.server.HStreamApi` service, wire
//! compatible with the official HStreamDB clients (protocol v0.6.1), over the store.
//!
//! [`run`] opens the store in the data directory (refusing a directory another server holds),
//! binds the gRPC port (refusing a port in use), serves until the shutdown future completes,
//! then makes every write durable and returns.

pub mod batch;
pub mod error;
pub mod keys;
pub mod offsets;
pub mod readers;
pub mod service;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use streamcell_proto::HStreamApiServer;
use streamcell_store::{LogOptions, Store, SyncPolicy};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use error::{ApiError, ServerError};
pub use service::{NodeInfo, StreamApi};

/// How long a stopping server waits for calls in progress before closing connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything the server needs to start. Defaults match `streamcell server` with no flags.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the data lives.
    pub data_dir: PathBuf,
    /// Address the listeners bind to.
    pub bind: IpAddr,
    /// gRPC port (0 picks a free one).
    pub port: u16,
    /// PostgreSQL wire protocol port (served by a later version).
    pub pg_port: u16,
    /// HTTP port (served by a later version).
    pub http_port: u16,
    /// Host name or address given to clients in `DescribeCluster` and lookups; defaults to the
    /// bind address (or 127.0.0.1 when binding to all interfaces).
    pub advertised_address: Option<String>,
    /// This node's id.
    pub node_id: u32,
    /// When appends are made durable before they are acknowledged.
    pub sync: SyncPolicy,
    /// The largest batch (serialized `BatchedRecord`) accepted by `Append`, in bytes.
    pub max_record_size: usize,
    /// Segment size at which a shard log starts a new segment, in bytes.
    pub segment_bytes: u64,
    /// Threads that write and sync shard logs.
    pub committer_threads: usize,
    /// How often retention (stream backlog) is enforced.
    pub retention_check_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("streamcell-data"),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 6570,
            pg_port: 6572,
            http_port: 6580,
            advertised_address: None,
            node_id: 1,
            sync: SyncPolicy::Always,
            max_record_size: 1 << 20,
            segment_bytes: 64 << 20,
            committer_threads: 2,
            retention_check_interval: Duration::from_secs(5),
        }
    }
}

impl ServerConfig {
    /// Checks values that flags and files cannot constrain by type.
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.max_record_size < 1024 {
            return Err(ServerError::Config(format!(
                "max-record-size must be at least 1024 bytes, got {}",
                self.max_record_size
            )));
        }
        if self.segment_bytes < 4096 {
            return Err(ServerError::Config(format!(
                "segment-bytes must be at least 4096, got {}",
                self.segment_bytes
            )));
        }
        if self.committer_threads == 0 || self.committer_threads > 64 {
            return Err(ServerError::Config(format!(
                "committer-threads must be between 1 and 64, got {}",
                self.committer_threads
            )));
        }
        Ok(())
    }
}

async fn bind(addr: SocketAddr, flag: &'static str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| {
        let hint = match source.kind() {
            std::io::ErrorKind::AddrInUse => match flag {
                "--port" => " (is another server running? choose another port with --port)",
                _ => " (the port is in use)",
            },
            std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
            _ => "",
        };
        ServerError::Bind { addr, source, hint }
    })
}

/// Accepted connections with Nagle's algorithm off: without it a small response waits for
/// the client's delayed ACK (about 40 ms). The builder's `tcp_nodelay` applies only to
/// listeners tonic creates itself, not to a given stream of connections.
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        if let Err(e) = conn.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        Ok(conn)
    })
}

/// Runs the server until `shutdown` completes.
pub async fn run(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    cfg.validate()?;
    let opts = LogOptions {
        sync: cfg.sync,
        segment_bytes: cfg.segment_bytes,
        committer_threads: cfg.committer_threads,
        max_inflight_bytes: 64 << 20,
        retention_check_interval: cfg.retention_check_interval,
    };
    let dir = cfg.data_dir.clone();
    let started = std::time::Instant::now();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, opts))
        .await
        .map_err(|e| ServerError::Config(format!("store open task failed: {e}")))??;
    let store = Arc::new(store);
    tracing::info!(
        data_dir = %cfg.data_dir.display(),
        sync = %cfg.sync,
        "store opened and recovered in {:.1?}",
        started.elapsed()
    );

    let listener = bind(SocketAddr::new(cfg.bind, cfg.port), "--port").await?;
    let local = listener
        .local_addr()
        .map_err(|e| ServerError::Config(format!("reading the bound address: {e}")))?;
    let host = cfg.advertised_address.clone().unwrap_or_else(|| {
        if cfg.bind.is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            cfg.bind.to_string()
        }
    });
    let node = NodeInfo {
        id: cfg.node_id,
        host,
        port: u32::from(local.port()),
    };
    let svc = StreamApi::new(store.clone(), node, cfg.max_record_size);
    // Let oversized appends through the transport so they get the HStreamDB error code
    // (InvalidRecordSize) rather than a transport-level refusal.
    let decode_limit = (cfg.max_record_size * 2 + (64 << 10)).max(4 << 20);
    tracing::info!(
        "StreamCell {} serving the HStreamDB gRPC API on {local}",
        env!("CARGO_PKG_VERSION")
    );
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop_serving = stop.clone();
    let serve = tonic::transport::Server::builder()
        .add_service(HStreamApiServer::new(svc).max_decoding_message_size(decode_limit))
        .serve_with_incoming_shutdown(
            incoming(listener),
            async move { stop_serving.notified().await },
        );
    tokio::pin!(serve);
    let result = tokio::select! {
        r = &mut serve => r,
        () = shutdown => {
            // Stop accepting; let calls in progress finish, but not forever: an idle client
            // or a live-following read must not keep the server from stopping.
            stop.notify_one();
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut serve).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(
                        "connections still open after {SHUTDOWN_GRACE:?}; closing them"
                    );
                    Ok(())
                }
            }
        }
    };
    tracing::info!("shutting down: syncing logs");
    store.shutdown().await;
    result?;
    tracing::info!("stopped cleanly");
    Ok(())
}
