//! `streamcell server`: the composition root. [`run`] checks the configuration and the
//! security files, opens the store in the data directory (refusing a directory another
//! server holds), starts the stream service and the engine over it, binds the gRPC,
//! PostgreSQL and HTTP ports (refusing a port in use) and serves every door until the
//! shutdown future completes; then it stops the doors, checkpoints queries, saves
//! subscription progress and makes every write durable, in that order.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use streamcell_admission::{connection_cap, security, Secret, Security};
use streamcell_datacell::{Cidr, NetworkPolicy, NetworkSockets};
use streamcell_service::{NodeInfo, Service};
use streamcell_store::{LogOptions, Store, StoreError, SyncPolicy};
use tokio::net::TcpListener;

/// The stack each thread of the server's runtime should have: statements are planned and
/// evaluated on them, up to the parser's depth limit (`streamcell_sql::limits`).
pub(crate) const RUNTIME_THREAD_STACK_BYTES: usize = streamcell_sql::limits::THREAD_STACK_BYTES;

/// Errors that stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServerError {
    /// The store could not be opened (locked, corrupt, I/O).
    #[error("cannot open the data directory: {0}")]
    Store(#[from] StoreError),
    /// A listening port could not be bound.
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
        /// A hint for the user.
        hint: &'static str,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A fault of the server itself while starting.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<streamcell_admission::ConfigError> for ServerError {
    fn from(e: streamcell_admission::ConfigError) -> Self {
        ServerError::Config(e.0)
    }
}

/// The largest `max-record-size`: a stored batch frame holds at most 256 MiB.
pub(crate) const MAX_RECORD_SIZE_LIMIT: usize = 128 << 20;

/// How long a stopping server waits for calls in progress before closing connections.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything the server needs to start. Defaults match `streamcell server` with no flags.
#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    /// Where the data lives.
    pub data_dir: PathBuf,
    /// Address the listeners bind to.
    pub bind: IpAddr,
    /// gRPC port (0 picks a free one).
    pub port: u16,
    /// PostgreSQL wire protocol port (0 picks a free one).
    pub pg_port: u16,
    /// Users and their passwords. Once any credential (a user, the token or `tls_ca`) is
    /// set, every door requires one (see `docs/security.md`).
    pub users: Vec<(String, Secret)>,
    /// An access token: `Bearer` on gRPC and HTTP, the password of the user `token` on pgwire.
    pub auth_token: Option<Secret>,
    /// Serve `/health` and `/metrics` without credentials.
    pub open_health: bool,
    /// Where DataCell emitters (and active receptors) may connect, besides loopback.
    pub emitter_allow: Vec<Cidr>,
    /// Most connections open at once on each port (further ones are closed at once); lowered
    /// at start if the open-file limit could not hold three full ports and the store.
    pub max_connections: usize,
    /// Start even when only part of the security is configured (credentials without TLS, or
    /// TLS without credentials).
    pub allow_partial_security: bool,
    /// HTTP port: `/health`, `/metrics`, `/api/v1` (0 picks a free one).
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
    /// TLS on every port: the server's certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// TLS: the server's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// TLS: certificate authority (PEM) that client certificates must chain to. A verified
    /// certificate is a credential; without users or a token it is the only one, and required.
    pub tls_ca: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("streamcell-data"),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 6570,
            pg_port: 6572,
            users: Vec::new(),
            auth_token: None,
            open_health: false,
            emitter_allow: Vec::new(),
            max_connections: 1000,
            allow_partial_security: false,
            http_port: 6580,
            advertised_address: None,
            node_id: 1,
            sync: SyncPolicy::Always,
            max_record_size: 1 << 20,
            segment_bytes: 64 << 20,
            committer_threads: 2,
            retention_check_interval: Duration::from_secs(5),
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
        }
    }
}

impl ServerConfig {
    /// Checks values that flags and files cannot constrain by type.
    pub(crate) fn validate(&self) -> Result<(), ServerError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ServerError::Config("data-dir is empty".into()));
        }
        if !(1024..=MAX_RECORD_SIZE_LIMIT).contains(&self.max_record_size) {
            return Err(ServerError::Config(format!(
                "max-record-size must be between 1024 and {MAX_RECORD_SIZE_LIMIT} bytes, got {}",
                self.max_record_size
            )));
        }
        let retention = self.retention_check_interval.as_secs();
        if !(1..=86_400).contains(&retention) {
            return Err(ServerError::Config(format!(
                "retention-check-secs must be between 1 and 86400, got {retention}"
            )));
        }
        if let Some(host) = &self.advertised_address {
            let bracketed_v6 = host.starts_with('[') && host.ends_with(']');
            if host.is_empty()
                || host.chars().any(|c| c.is_whitespace() || c.is_control())
                || (host.contains(':') && !bracketed_v6)
            {
                return Err(ServerError::Config(format!(
                    "advertised-address {host:?} is not a host name or address clients can \
                     connect to (no port; write IPv6 addresses in brackets, e.g. [::1])"
                )));
            }
        }
        if self.segment_bytes < 4096 {
            return Err(ServerError::Config(format!(
                "segment-bytes must be at least 4096, got {}",
                self.segment_bytes
            )));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ServerError::Config(
                    "--tls-cert and --tls-key go together: give both or neither".into(),
                ))
            }
            (None, None) if self.tls_ca.is_some() => {
                return Err(ServerError::Config(
                    "--tls-ca (client certificates) needs --tls-cert and --tls-key".into(),
                ))
            }
            _ => {}
        }
        for (user, password) in &self.users {
            if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
                return Err(ServerError::Config(format!(
                    "user name {user:?} is not valid: give NAME:PASSWORD, with a non-empty name \
                     without ':'"
                )));
            }
            if password.expose().is_empty() {
                return Err(ServerError::Config(format!(
                    "user {user:?} has an empty password"
                )));
            }
        }
        if let Some(t) = &self.auth_token {
            let t = t.expose();
            if t.len() < security::MIN_TOKEN_CHARS || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ServerError::Config(format!(
                    "the access token must be at least {} visible ASCII characters (no spaces)",
                    security::MIN_TOKEN_CHARS
                )));
            }
            if self
                .users
                .iter()
                .any(|(u, _)| u == streamcell_pg::TOKEN_USER)
            {
                return Err(ServerError::Config(format!(
                    "the user name {:?} is the access token's on the PostgreSQL port: choose \
                     another name",
                    streamcell_pg::TOKEN_USER
                )));
            }
        }
        let credentials = !self.users.is_empty() || self.auth_token.is_some();
        let tls = self.tls_cert.is_some();
        if !self.allow_partial_security {
            if credentials && !tls {
                return Err(ServerError::Config(
                    "users or a token are set but TLS is not: passwords and tokens would cross \
                     the network in clear on the gRPC and HTTP ports (and the official clients \
                     send tokens only over TLS). Give --tls-cert and --tls-key, or start with \
                     --allow-partial-security"
                        .into(),
                ));
            }
            if tls && !credentials && self.tls_ca.is_none() {
                return Err(ServerError::Config(
                    "TLS is set but no credentials: anyone who reaches a port may connect. Give \
                     --user NAME:PASSWORD, --auth-token or --tls-ca, or start with \
                     --allow-partial-security"
                        .into(),
                ));
            }
        }
        if self.max_connections == 0 {
            return Err(ServerError::Config(
                "max-connections must be at least 1".into(),
            ));
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
                "--pg-port" => " (is another server running? choose another port with --pg-port)",
                "--http-port" => {
                    " (is another server running? choose another port with --http-port)"
                }
                _ => " (the port is in use)",
            },
            std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
            _ => "",
        };
        ServerError::Bind { addr, source, hint }
    })
}

/// Runs the server until `shutdown` completes.
pub(crate) async fn run(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    cfg.validate()?;
    let security = Arc::new(Security::load(
        &cfg.users,
        cfg.auth_token.as_ref(),
        cfg.tls_cert.as_ref().zip(cfg.tls_key.as_ref()),
        cfg.tls_ca.as_ref(),
        cfg.open_health,
    )?);
    // Checked before the store opens, so that a bad certificate costs no recovery.
    let pg_tls = security.rustls(&[b"postgresql"])?;
    let http_tls = security.rustls(&[b"http/1.1"])?;
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
        .map_err(|e| ServerError::Internal(format!("opening the store failed: {e}")))??;
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
            tracing::warn!(
                "listening on all interfaces ({}) but no --advertised-address: clients are told \
                 to connect to 127.0.0.1, which only works on this machine",
                cfg.bind
            );
            "127.0.0.1".to_string()
        } else if cfg.bind.is_ipv6() {
            format!("[{}]", cfg.bind)
        } else {
            cfg.bind.to_string()
        }
    });
    let node = NodeInfo {
        id: cfg.node_id,
        host,
        port: u32::from(local.port()),
    };
    let pg_listener = bind(SocketAddr::new(cfg.bind, cfg.pg_port), "--pg-port").await?;
    let pg_local = pg_listener
        .local_addr()
        .map_err(|e| ServerError::Config(format!("reading the bound PostgreSQL address: {e}")))?;
    let http_listener = bind(SocketAddr::new(cfg.bind, cfg.http_port), "--http-port").await?;
    let http_local = http_listener
        .local_addr()
        .map_err(|e| ServerError::Config(format!("reading the bound HTTP address: {e}")))?;
    let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
    let service = Service::start(
        store.clone(),
        node,
        cfg.max_record_size,
        stopping_rx.clone(),
    )
    .map_err(|e| ServerError::Config(format!("starting subscriptions: {e}")))?;
    let engine = streamcell_engine::Engine::new(service.clone(), tokio::runtime::Handle::current());
    // DataCell's receptors and emitters listen only on --bind and connect only to loopback
    // and --emitter-allow.
    let mut connect = streamcell_datacell::loopback();
    connect.extend(cfg.emitter_allow.iter().copied());
    engine
        .datacell()
        .set_sockets(Arc::new(NetworkSockets::new(NetworkPolicy {
            listen: cfg.bind,
            connect,
        })));
    engine
        .start()
        .map_err(|e| ServerError::Config(format!("restarting saved queries: {e}")))?;
    // Let oversized appends through the transport so they get the HStreamDB error code
    // (InvalidRecordSize) rather than a transport-level refusal.
    let decode_limit = (cfg.max_record_size * 2 + (64 << 10)).max(4 << 20);
    let cap = connection_cap(cfg.max_connections);
    if cap < cfg.max_connections {
        tracing::warn!(
            "at most {cap} connections per port (not {}): the open-file limit is too low for more",
            cfg.max_connections
        );
    }
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop_serving = stop.clone();
    tracing::info!("security: {}", security.describe());
    if cfg.allow_partial_security && security.locked() != security.encrypted() {
        // Logged here, once: `validate` also runs before the runtime starts.
        tracing::warn!(
            "{} (--allow-partial-security)",
            if security.encrypted() {
                "TLS without credentials: anyone who reaches a port may connect"
            } else {
                "credentials without TLS: passwords and tokens cross the network in clear"
            }
        );
    }
    if !security.locked() && !cfg.bind.is_loopback() {
        tracing::warn!(
            "listening on {} with no credentials: anyone who reaches the gRPC, PostgreSQL or \
             HTTP port may read, write and delete everything. Set --user, --auth-token or \
             --tls-ca (see docs/security.md)",
            cfg.bind
        );
    }
    tracing::info!(
        "StreamCell {} serving the HStreamDB gRPC API on {local}{}",
        env!("CARGO_PKG_VERSION"),
        if cfg.tls_cert.is_some() { " (TLS)" } else { "" }
    );
    let http_state = Arc::new(streamcell_http::HttpState {
        service: service.clone(),
        engine: engine.clone(),
        stopping: stopping_rx.clone(),
    });
    let mut http_stopping = stopping_rx.clone();
    let mut http_task = tokio::spawn(streamcell_http::serve(
        http_listener,
        http_state,
        security.clone(),
        http_tls.map(tokio_rustls::TlsAcceptor::from),
        cap,
        async move {
            let _ = http_stopping.wait_for(|s| *s).await;
        },
    ));
    tracing::info!(
        "serving {} (/health, /metrics, /api/v1) on {http_local}",
        if security.encrypted() {
            "HTTPS"
        } else {
            "HTTP"
        }
    );
    let pg_auth = streamcell_pg::PgAuth {
        users: security.users(),
        token: security.token(),
        tls: pg_tls.map(streamcell_pg::TlsAcceptor::from),
        require_tls: security.encrypted(),
        certificate_pem: security.certificate_pem().map(<[u8]>::to_vec),
    };
    let pg_mode = match (pg_auth.locked(), security.encrypted()) {
        (true, true) => "SCRAM-SHA-256 over TLS",
        (true, false) => "SCRAM-SHA-256, no TLS",
        (false, true) if security.client_certificates() => "client certificates over TLS",
        (false, true) => "TLS, no password",
        (false, false) => "no password",
    };
    let pg_task = tokio::spawn(streamcell_pg::serve(
        pg_listener,
        engine.clone(),
        pg_auth,
        cap,
        stopping_rx.clone(),
    ));
    tracing::info!("serving the PostgreSQL wire protocol on {pg_local} ({pg_mode})");
    let serve = streamcell_grpc::serve(
        listener,
        service.clone(),
        engine.clone(),
        streamcell_grpc::GrpcOptions {
            security: security.clone(),
            max_connections: cap,
            max_message_bytes: decode_limit,
        },
        stopping_rx,
        async move { stop_serving.notified().await },
    );
    tokio::pin!(serve);
    let mut http_done = None;
    let result = tokio::select! {
        r = &mut serve => r,
        () = shutdown => {
            // End the calls that would otherwise never finish (consumers' fetch streams,
            // live-following reads), saving subscription progress; stop accepting; let other
            // calls in progress finish, but not forever.
            stopping.send_replace(true);
            service.shutdown().await;
            stop.notify_one();
            let grace = tokio::time::Instant::now() + SHUTDOWN_GRACE;
            let r = match tokio::time::timeout_at(grace, &mut serve).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(
                        "connections still open after {SHUTDOWN_GRACE:?}; closing them"
                    );
                    Ok(())
                }
            };
            match tokio::time::timeout_at(grace, &mut http_task).await {
                Ok(done) => http_done = Some(done),
                Err(_) => tracing::warn!(
                    "HTTP requests still running after {SHUTDOWN_GRACE:?}; closing them"
                ),
            }
            r
        }
    };
    // The HTTP and PostgreSQL servers stop with the gRPC one, whichever way that ended.
    stopping.send_replace(true);
    if let Err(e) = pg_task.await {
        tracing::warn!("the PostgreSQL server task failed: {e}");
    }
    match http_done {
        None => http_task.abort(),
        Some(Ok(Err(e))) => tracing::warn!("the HTTP server failed: {e}"),
        Some(_) => {}
    }
    tracing::info!(
        "shutting down: checkpointing queries, saving subscription progress, syncing logs"
    );
    let e = engine.clone();
    let _ = tokio::task::spawn_blocking(move || e.shutdown()).await;
    service.shutdown().await;
    store.shutdown().await;
    result?;
    tracing::info!("stopped cleanly");
    Ok(())
}
