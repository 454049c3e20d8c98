//! The HTTP front door (`--http-port`): health, Prometheus metrics and a JSON REST API
//! ([`api`], [`metrics`]) over the stream service and the engine, on a listener that caps
//! connections, does TLS handshakes off the accept loop and closes idle connections
//! ([`door`]). [`serve`] runs it until told to stop.

pub mod api;
pub mod door;
pub mod metrics;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use streamcell_admission::Security;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use api::{router, HttpError, HttpState};
pub use door::{Door, Peer};

/// Serves HTTP (HTTPS with `tls`) on `listener` until `shutdown` completes, then lets
/// requests in progress finish (the caller bounds how long). Every request but `/health` and
/// `/metrics` (when `security` leaves them open) needs credentials once any are configured.
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    security: Arc<Security>,
    tls: Option<TlsAcceptor>,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let door = Door::new(listener, tls, max_connections)?;
    let app = router(state).layer(axum::middleware::from_fn_with_state(security, authenticate));
    axum::serve(door, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// Refuses a request without valid credentials (401, with the schemes that would do).
async fn authenticate(
    State(security): State<Arc<Security>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if security.open_health() && matches!(req.uri().path(), "/health" | "/metrics") {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match security.check(header, peer.client_cert) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            let mut r = HttpError::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"StreamCell\", Bearer"),
            );
            r
        }
    }
}
