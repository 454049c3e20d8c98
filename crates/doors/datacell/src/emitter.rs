//! Emitters: a task per emitter that drains its basket to actuators as CSV lines.
//!
//! - Active UDP (the default): sends datagrams to the actuator's address.
//! - Active TCP: connects to an actuator (retrying every second) and writes lines.
//! - Passive TCP: listens; every connected actuator gets every event. Events wait in the
//!   basket while no actuator is connected.
//!
//! An emitter that cannot send puts the rows back at the head of the basket and tries again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use streamcell_csv::write_rows;
use streamcell_engine::datacell::adapter::{Adapter, Protocol};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::RETRY;

/// A UDP datagram stays under this size.
const MAX_DATAGRAM: usize = 60 * 1024;

/// Waits for rows in the basket (or a stop); the rows taken, as CSV text.
async fn next_rows(a: &Adapter) -> Option<(String, usize, Vec<RecordBatch>)> {
    loop {
        if !a.running().await {
            return None;
        }
        if !a.spec.basket.is_empty() {
            let batches = a.spec.basket.drain();
            let mut text = String::new();
            let mut n = 0;
            for b in &batches {
                n += b.num_rows();
                if let Err(e) = write_rows(b, &mut text) {
                    a.note(format!("cannot format rows: {e}"));
                }
            }
            return Some((text, n, batches));
        }
        tokio::select! {
            _ = a.spec.basket.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = a.stopped() => return None,
        }
    }
}

pub(crate) async fn emit_active(a: Arc<Adapter>, addr: SocketAddr) {
    let mut tcp: Option<TcpStream> = None;
    let udp = match a.spec.protocol {
        Protocol::Udp => match UdpSocket::bind("0.0.0.0:0").await {
            Ok(s) => Some(s),
            Err(e) => {
                a.note(format!("cannot open a UDP socket: {e}"));
                return;
            }
        },
        Protocol::Tcp => None,
    };
    while let Some((text, n, batches)) = next_rows(&a).await {
        let sent = match &udp {
            Some(socket) => send_datagrams(socket, addr, &text).await,
            None => {
                if tcp.is_none() {
                    tcp = connect(&a, addr).await;
                }
                // An actuator that went away while we were idle: find out before writing
                // (a write into a closed connection may be accepted and then lost).
                if tcp.as_ref().is_some_and(peer_closed) {
                    tcp = connect(&a, addr).await;
                }
                match tcp.as_mut() {
                    Some(s) => match s.write_all(text.as_bytes()).await {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            tcp = None;
                            Err(e)
                        }
                    },
                    None => Err(std::io::Error::other("not connected")),
                }
            }
        };
        match sent {
            Ok(()) => a.counted(n),
            Err(e) => {
                a.note(format!("send to {addr} failed: {e}; will retry"));
                a.spec.basket.unshift(batches);
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = a.stopped() => return,
                }
            }
        }
    }
}

/// A new connection to the actuator, or `None` (the problem noted; the caller retries).
async fn connect(a: &Adapter, addr: SocketAddr) -> Option<TcpStream> {
    match TcpStream::connect(addr).await {
        Ok(s) => {
            let _ = s.set_nodelay(true);
            Some(s)
        }
        Err(e) => {
            a.note(format!("cannot connect to actuator {addr}: {e}; retrying"));
            None
        }
    }
}

/// Whether the other end of an idle connection has closed it (actuators send nothing, so any
/// readable end-of-stream or error means it is gone; data they send is ignored).
fn peer_closed(s: &TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match s.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Sends lines in datagrams of at most [`MAX_DATAGRAM`] bytes, split at line ends.
async fn send_datagrams(socket: &UdpSocket, addr: SocketAddr, text: &str) -> std::io::Result<()> {
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(MAX_DATAGRAM);
        if end < rest.len() {
            end = rest[..end].rfind('\n').map_or(end, |p| p + 1);
        }
        socket.send_to(&rest.as_bytes()[..end], addr).await?;
        rest = &rest[end..];
    }
    Ok(())
}

pub(crate) async fn emit_tcp_passive(a: Arc<Adapter>, listener: TcpListener) {
    let clients: Arc<tokio::sync::Mutex<Vec<TcpStream>>> = Default::default();
    // Accept actuators whenever they come.
    let acceptor = {
        let a = a.clone();
        let clients = clients.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    r = listener.accept() => r,
                    _ = a.stopped() => return,
                };
                match accepted {
                    Ok((s, _)) => {
                        let _ = s.set_nodelay(true);
                        clients.lock().await.push(s);
                        a.spec.basket.poke();
                    }
                    Err(e) => a.note(format!("accept failed: {e}")),
                }
            }
        })
    };
    loop {
        // Events wait in the basket until an actuator is there.
        if clients.lock().await.is_empty() {
            tokio::select! {
                _ = a.spec.basket.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = a.stopped() => break,
            }
            continue;
        }
        let Some((text, n, batches)) = next_rows(&a).await else {
            break;
        };
        let mut list = clients.lock().await;
        let mut alive = Vec::with_capacity(list.len());
        for mut s in list.drain(..) {
            if !peer_closed(&s) && s.write_all(text.as_bytes()).await.is_ok() {
                alive.push(s);
            }
        }
        if alive.is_empty() {
            a.note("every actuator disconnected; the events wait for the next one");
            a.spec.basket.unshift(batches);
        } else {
            a.counted(n);
        }
        *list = alive;
    }
    acceptor.abort();
}
