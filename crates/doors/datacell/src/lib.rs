//! DataCell's network door: the sockets of receptors and emitters. A receptor fills a basket
//! from sensors (CSV lines over TCP or UDP, [`receptor`]); an emitter drains a basket to
//! actuators ([`emitter`]). Each runs as a tokio task over the engine's
//! [`Adapter`](streamcell_engine::datacell::adapter::Adapter) state, which starts paused and
//! runs once `datacell.resume` is called.
//!
//! [`NetworkSockets`] is the engine's [`Sockets`] seam implemented over real sockets within a
//! [`NetworkPolicy`] ([`policy`]): the binary builds one from `--bind` and `--emitter-allow`
//! and hands it to the engine, which knows nothing of sockets itself.

pub mod emitter;
pub mod policy;
pub mod receptor;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use streamcell_engine::datacell::adapter::{Adapter, AdapterSpec, Direction, Mode, Protocol};
use streamcell_engine::datacell::Sockets;
use streamcell_engine::{EngineError, Result};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Notify;

pub use policy::{loopback, Cidr, NetworkPolicy};
pub use receptor::MAX_LINE;

/// Retry delay for active connections.
const RETRY: Duration = Duration::from_secs(1);

/// Receptors and emitters over TCP and UDP sockets, listening and connecting only where the
/// policy allows.
#[derive(Debug, Clone, Default)]
pub struct NetworkSockets {
    policy: NetworkPolicy,
}

impl NetworkSockets {
    /// Sockets that follow `policy`.
    pub fn new(policy: NetworkPolicy) -> NetworkSockets {
        NetworkSockets { policy }
    }
}

#[async_trait]
impl Sockets for NetworkSockets {
    /// Starts a receptor or emitter (paused). Passive ones bind at once, so a port in use is
    /// an error here. Where it may listen or connect is checked against the policy once the
    /// host is resolved (the address checked is the one used: no second lookup).
    async fn start(&self, spec: AdapterSpec, wake: Arc<Notify>) -> Result<Arc<Adapter>> {
        let (direction, protocol, mode) = (spec.direction, spec.protocol, spec.mode);
        let addr = resolve(&spec.host, spec.port).await?;
        let listens = matches!(
            (direction, protocol, mode),
            (_, Protocol::Tcp, Mode::Passive) | (Direction::Receptor, Protocol::Udp, _)
        );
        if listens {
            self.policy.check_listen(addr.ip())
        } else {
            self.policy.check_connect(addr.ip())
        }
        .map_err(EngineError::Invalid)?;
        let in_use = |e: std::io::Error| {
            EngineError::Invalid(format!("cannot listen on {addr}: {e} (port in use?)"))
        };
        let bound = match (direction, protocol, mode) {
            (_, Protocol::Tcp, Mode::Passive) => {
                Bound::Tcp(TcpListener::bind(addr).await.map_err(in_use)?)
            }
            (Direction::Receptor, Protocol::Udp, _) => {
                Bound::Udp(UdpSocket::bind(addr).await.map_err(in_use)?)
            }
            (Direction::Emitter, Protocol::Udp, Mode::Passive) => {
                return Err(EngineError::Invalid(
                    "a passive emitter serves actuators over TCP: use 'tcp', or an active UDP \
                     emitter"
                        .to_string(),
                ))
            }
            _ => Bound::Nothing,
        };
        let port = match &bound {
            Bound::Tcp(l) => l.local_addr().map(|a| a.port()).unwrap_or(spec.port),
            Bound::Udp(u) => u.local_addr().map(|a| a.port()).unwrap_or(spec.port),
            Bound::Nothing => spec.port,
        };
        let adapter = Arc::new(Adapter::new(spec, port));
        let a = adapter.clone();
        match bound {
            Bound::Tcp(listener) if direction == Direction::Receptor => {
                tokio::spawn(receptor::receive_tcp_passive(a, listener, wake));
            }
            Bound::Udp(socket) => {
                tokio::spawn(receptor::receive_udp(a, socket, wake));
            }
            Bound::Tcp(listener) => {
                tokio::spawn(emitter::emit_tcp_passive(a, listener));
            }
            Bound::Nothing if direction == Direction::Receptor => {
                tokio::spawn(receptor::receive_tcp_active(a, addr, wake));
            }
            Bound::Nothing => {
                tokio::spawn(emitter::emit_active(a, addr));
            }
        }
        Ok(adapter)
    }
}

/// The socket a passive adapter bound before its task starts.
enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
    Nothing,
}

/// `localhost` and friends to an address to bind or connect.
async fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| EngineError::Invalid(format!("host {host:?}: {e}")))?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| EngineError::Invalid(format!("host {host:?} has no IPv4 address")))
}
