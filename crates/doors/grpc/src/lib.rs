//! The gRPC front door: HStreamDB's `hstream.server.HStreamApi` (protocol v0.6.1, what the
//! official clients speak; [`hstream`]) over the stream service and the engine, and
//! StreamCell's own `streamcell.sql.StreamCellSql` ([`sql`], what `streamcell sql` speaks).
//! Errors are mapped to statuses once, in [`error`]; credentials and TLS in [`auth`].
//! [`serve`] runs both services on a listener until told to stop.

pub mod auth;
pub mod error;
pub mod hstream;
pub mod sql;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use streamcell_admission::{refused, Conn, Security};
use streamcell_engine::Engine;
use streamcell_proto::sqlapi::stream_cell_sql_server::StreamCellSqlServer;
use streamcell_proto::HStreamApiServer;
use streamcell_service::Service;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use hstream::StreamApi;

/// How the gRPC port is served.
pub struct GrpcOptions {
    /// Who may call, and TLS.
    pub security: Arc<Security>,
    /// Most connections open at once (one over is closed at once).
    pub max_connections: usize,
    /// The largest request message accepted, in bytes.
    pub max_message_bytes: usize,
}

/// Serves both gRPC services on `listener` until `stop` completes, then lets calls in
/// progress finish (the caller bounds how long); calls that never finish by themselves (live
/// reads, consumers, push queries) end when `stopping` turns true.
pub async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    engine: Arc<Engine>,
    options: GrpcOptions,
    stopping: watch::Receiver<bool>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    // Dead peers are found by HTTP/2 pings; a TLS handshake must finish in time.
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some(tls) = auth::tls_config(&options.security) {
        builder = builder.tls_config(tls)?;
    }
    let api = Arc::new(StreamApi::new(service, engine.clone()));
    builder
        .layer(tonic::service::InterceptorLayer::new(auth::GrpcAuth(
            options.security.clone(),
        )))
        .add_service(
            HStreamApiServer::from_arc(api).max_decoding_message_size(options.max_message_bytes),
        )
        .add_service(StreamCellSqlServer::new(sql::SqlService::new(
            engine, stopping,
        )))
        .serve_with_incoming_shutdown(
            incoming(
                listener,
                Arc::new(tokio::sync::Semaphore::new(options.max_connections)),
            ),
            stop,
        )
        .await
}

/// Accepted gRPC connections, each holding a place under the port's cap (`slots`; one over
/// the cap is closed at once), with Nagle's algorithm off: without it a small response waits
/// for the client's delayed ACK (about 40 ms). The builder's `tcp_nodelay` applies only to
/// listeners tonic creates itself, not to a given stream of connections.
fn incoming(
    listener: TcpListener,
    slots: Arc<tokio::sync::Semaphore>,
) -> impl tokio_stream::Stream<Item = std::io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                () = tx.closed() => return,
            };
            let conn = match conn {
                Ok((c, _)) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("accepting a gRPC connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                refused("gRPC");
                continue;
            };
            if let Err(e) = conn.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY: {e}");
            }
            // No idle timeout: a consumer waiting for records is an idle, live connection.
            if tx.send(Ok(Conn::new(conn, permit, None))).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
