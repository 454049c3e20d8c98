//! The HTTP port's listener: capped connections, TLS handshakes in their own tasks, idle
//! connections closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use streamcell_admission::{refused, Conn, HANDSHAKE_TIMEOUT};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// Who is on the other end of an HTTP connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Whether it presented a client certificate that the TLS layer verified.
    pub client_cert: bool,
}

impl Connected<IncomingStream<'_, Door>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Door>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A connection, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The HTTP port's listener: accepts connections (at most `max_connections` open at once;
/// one over is closed at once) and, with TLS, does each handshake in its own task (bounded
/// by [`HANDSHAKE_TIMEOUT`]) so that a slow or silent client delays no one. A connection
/// with no traffic for [`IDLE_TIMEOUT`] is closed.
pub struct Door {
    rx: mpsc::Receiver<(Box<dyn Io>, Peer)>,
    local: SocketAddr,
    _accepting: AbortOnDrop,
}

/// How long an HTTP connection may go without a byte either way before it is closed (an idle
/// keep-alive connection, a half-sent request, or a request whose answer takes this long).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Door {
    /// Accepts on `listener`, with TLS when `tls` is given.
    pub fn new(
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        max_connections: usize,
    ) -> std::io::Result<Door> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little rather than spin.
                        tracing::warn!("accepting an HTTP connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    refused("HTTP");
                    continue;
                };
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!("cannot set TCP_NODELAY: {e}");
                }
                let tcp = Conn::new(tcp, permit, Some(IDLE_TIMEOUT));
                let Some(tls) = tls.clone() else {
                    let peer = Peer {
                        addr,
                        client_cert: false,
                    };
                    if tx.send((Box::new(tcp) as Box<dyn Io>, peer)).await.is_err() {
                        return;
                    }
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let client_cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .is_some_and(|c| !c.is_empty());
                            let _ = tx
                                .send((Box::new(stream) as Box<dyn Io>, Peer { addr, client_cert }))
                                .await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, "HTTPS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%addr, "HTTPS handshake timed out"),
                    }
                });
            }
        });
        Ok(Door {
            rx,
            local,
            _accepting: AbortOnDrop(accepting),
        })
    }
}

impl Listener for Door {
    type Io = Box<dyn Io>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accepting task ended (it only does when the runtime shuts down).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            client_cert: false,
        })
    }
}
