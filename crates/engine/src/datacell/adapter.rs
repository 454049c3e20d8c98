//! Receptors and emitters: DataCell's network doors. A receptor fills a basket from sensors
//! (CSV lines over TCP or UDP); an emitter drains a basket to actuators. Each runs as a tokio
//! task; both start paused (as in DataCell) and run once resumed.
//!
//! - Receptor, passive TCP (the default): listens on the port; any number of sensors connect.
//! - Receptor, passive UDP: listens for datagrams, each holding one or more lines.
//! - Receptor, active TCP: connects to a sensor that serves events (`sensor --server`),
//!   retrying every second.
//! - Emitter, active UDP (the default): sends datagrams to the actuator's address.
//! - Emitter, active TCP: connects to an actuator (retrying every second) and writes lines.
//! - Emitter, passive TCP: listens; every connected actuator gets every event. Events wait
//!   in the basket while no actuator is connected.
//!
//! A line that does not parse goes to the basket's errors with the reason; the rest of the
//! input is not affected. An emitter that cannot send puts the rows back and tries again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamcell_csv::{write_rows, LineParser};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

use super::basket::{now_us, Basket};
use super::network::NetworkPolicy;
use crate::error::{EngineError, Result};

/// Lines longer than this are refused (and counted as errors).
pub const MAX_LINE: usize = 64 * 1024;
/// Rows parsed before they are appended to the basket in one piece.
const CHUNK_ROWS: usize = 4096;
/// A UDP datagram stays under this size.
const MAX_DATAGRAM: usize = 60 * 1024;
/// Retry delay for active connections.
const RETRY: Duration = Duration::from_secs(1);

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Who opens the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// We connect (or send) to the peer.
    Active,
    /// The peer connects to us.
    Passive,
}

impl Protocol {
    /// `'tcp'`/`'udp'`, any case.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(EngineError::invalid(format!(
                "protocol {other:?}: expected 'tcp' or 'udp'"
            ))),
        }
    }

    /// As the catalog shows it.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl Mode {
    /// `'active'`/`'passive'`, any case.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "active" => Ok(Mode::Active),
            "passive" => Ok(Mode::Passive),
            other => Err(EngineError::invalid(format!(
                "mode {other:?}: expected 'active' or 'passive'"
            ))),
        }
    }

    /// As the catalog shows it.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Active => "active",
            Mode::Passive => "passive",
        }
    }
}

/// Receptor or emitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Fills a basket.
    Receptor,
    /// Drains a basket.
    Emitter,
}

/// Running, paused or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// Working.
    Running,
    /// Waiting for `datacell.resume`.
    Paused,
    /// Gone (`datacell.stop`): the task ends.
    Stopped,
}

/// One receptor or emitter, as the catalog shows it.
pub struct Adapter {
    /// Receptor or emitter.
    pub direction: Direction,
    /// The basket.
    pub basket: Arc<Basket>,
    /// Host as given.
    pub host: String,
    /// Port as given (the bound port for passive adapters given port 0).
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Active or passive.
    pub mode: Mode,
    run: watch::Sender<Run>,
    /// Events received or sent.
    pub events: AtomicU64,
    /// A receptor's lines that did not parse (sent to the basket's errors).
    pub rejected: AtomicU64,
    /// Reads or writes done.
    pub cycles: AtomicU64,
    /// Last event received or sent, epoch µs (0: never).
    pub last_us: AtomicI64,
    /// The last connection or send problem, if any.
    pub problem: Mutex<Option<String>>,
}

impl Adapter {
    /// Current state.
    pub fn state(&self) -> Run {
        *self.run.borrow()
    }

    /// Pauses, resumes or stops.
    pub fn set(&self, r: Run) {
        if *self.run.borrow() != Run::Stopped {
            self.run.send_replace(r);
        }
    }

    fn note(&self, problem: impl Into<String>) {
        let p = problem.into();
        tracing::warn!(basket = %self.basket.name, "{p}");
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
    }

    /// A line that did not parse: to the basket's errors, counted.
    fn reject(&self, error: String) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.basket.add_error(error);
    }

    fn counted(&self, n: usize) {
        self.events.fetch_add(n as u64, Ordering::Relaxed);
        self.cycles.fetch_add(1, Ordering::Relaxed);
        self.last_us.store(now_us(), Ordering::Relaxed);
    }
}

/// `localhost` and friends to an address to bind or connect.
async fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| EngineError::invalid(format!("host {host:?}: {e}")))?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| EngineError::invalid(format!("host {host:?} has no IPv4 address")))
}

/// Starts a receptor or emitter (paused). Passive ones bind at once, so a port in use is an
/// error here. Where it may listen or connect is checked against `policy` once the host is
/// resolved (the address checked is the one used: no second lookup).
pub async fn start(
    direction: Direction,
    basket: Arc<Basket>,
    (host, port): (String, u16),
    protocol: Protocol,
    mode: Mode,
    policy: &NetworkPolicy,
    wake: Arc<tokio::sync::Notify>,
) -> Result<Arc<Adapter>> {
    let addr = resolve(&host, port).await?;
    let listens = matches!(
        (direction, protocol, mode),
        (_, Protocol::Tcp, Mode::Passive) | (Direction::Receptor, Protocol::Udp, _)
    );
    if listens {
        policy.check_listen(addr.ip())
    } else {
        policy.check_connect(addr.ip())
    }
    .map_err(EngineError::invalid)?;
    let in_use = |e: std::io::Error| {
        EngineError::invalid(format!("cannot listen on {addr}: {e} (port in use?)"))
    };
    enum Bound {
        Tcp(TcpListener),
        Udp(UdpSocket),
        Nothing,
    }
    let bound = match (direction, protocol, mode) {
        (Direction::Receptor, Protocol::Tcp, Mode::Passive)
        | (Direction::Emitter, Protocol::Tcp, Mode::Passive) => {
            Bound::Tcp(TcpListener::bind(addr).await.map_err(in_use)?)
        }
        (Direction::Receptor, Protocol::Udp, _) => {
            Bound::Udp(UdpSocket::bind(addr).await.map_err(in_use)?)
        }
        (Direction::Emitter, Protocol::Udp, Mode::Passive) => {
            return Err(EngineError::invalid(
                "a passive emitter serves actuators over TCP: use 'tcp', or an active UDP \
                 emitter",
            ))
        }
        _ => Bound::Nothing,
    };
    let port = match &bound {
        Bound::Tcp(l) => l.local_addr().map(|a| a.port()).unwrap_or(port),
        Bound::Udp(u) => u.local_addr().map(|a| a.port()).unwrap_or(port),
        Bound::Nothing => port,
    };
    let (run, _) = watch::channel(Run::Paused);
    let adapter = Arc::new(Adapter {
        direction,
        basket,
        host,
        port,
        protocol,
        mode,
        run,
        events: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        cycles: AtomicU64::new(0),
        last_us: AtomicI64::new(0),
        problem: Mutex::new(None),
    });
    let a = adapter.clone();
    match bound {
        Bound::Tcp(listener) if direction == Direction::Receptor => {
            tokio::spawn(receive_tcp_passive(a, listener, wake));
        }
        Bound::Udp(socket) => {
            tokio::spawn(receive_udp(a, socket, wake));
        }
        Bound::Tcp(listener) => {
            tokio::spawn(emit_tcp_passive(a, listener));
        }
        Bound::Nothing if direction == Direction::Receptor => {
            tokio::spawn(receive_tcp_active(a, addr, wake));
        }
        Bound::Nothing => {
            tokio::spawn(emit_active(a, addr));
        }
    }
    Ok(adapter)
}

/// Waits while paused; false once stopped.
async fn running(a: &Adapter) -> bool {
    let mut rx = a.run.subscribe();
    loop {
        match *rx.borrow_and_update() {
            Run::Running => return true,
            Run::Stopped => return false,
            Run::Paused => {}
        }
        if rx.changed().await.is_err() {
            return false;
        }
    }
}

/// Resolves when the adapter is stopped.
async fn stopped(a: &Adapter) {
    let mut rx = a.run.subscribe();
    loop {
        if *rx.borrow_and_update() == Run::Stopped || rx.changed().await.is_err() {
            return;
        }
    }
}

/// Parses lines into the basket: whole chunks are appended at once.
struct Filler {
    adapter: Arc<Adapter>,
    parser: LineParser,
    wake: Arc<tokio::sync::Notify>,
}

impl Filler {
    fn new(adapter: Arc<Adapter>, wake: Arc<tokio::sync::Notify>) -> Self {
        let parser = LineParser::new(&adapter.basket.schema);
        Filler {
            adapter,
            parser,
            wake,
        }
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() || line.starts_with('#') {
            // `#N` batch headers (and blank lines) carry no event.
            return;
        }
        if let Err(bad) = self.parser.push_line(line) {
            // "<reason>: <line>"
            self.adapter.reject(bad.to_string());
        }
        if self.parser.rows() >= CHUNK_ROWS {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let n = self.parser.rows();
        if n == 0 {
            return;
        }
        match self.parser.finish() {
            Ok(batch) => match self.adapter.basket.append(batch) {
                Ok(()) => {
                    self.adapter.counted(n);
                    self.wake.notify_one();
                }
                Err(e) => {
                    self.adapter.rejected.fetch_add(n as u64, Ordering::Relaxed);
                    self.adapter.basket.add_error(e.to_string());
                }
            },
            Err(e) => self.adapter.note(format!("cannot build rows: {e}")),
        }
    }
}

async fn receive_tcp_passive(
    a: Arc<Adapter>,
    listener: TcpListener,
    wake: Arc<tokio::sync::Notify>,
) {
    loop {
        if !running(&a).await {
            return;
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stopped(&a) => return,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(read_lines(a.clone(), stream, wake.clone()));
            }
            Err(e) => {
                a.note(format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn receive_tcp_active(a: Arc<Adapter>, addr: SocketAddr, wake: Arc<tokio::sync::Notify>) {
    loop {
        if !running(&a).await {
            return;
        }
        match TcpStream::connect(addr).await {
            Ok(stream) => read_lines(a.clone(), stream, wake.clone()).await,
            Err(e) => {
                a.note(format!("cannot connect to sensor {addr}: {e}; retrying"));
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = stopped(&a) => return,
                }
            }
        }
    }
}

/// Reads `\n`-terminated lines from one sensor until it closes (a last line without `\n`
/// counts too).
async fn read_lines(a: Arc<Adapter>, stream: TcpStream, wake: Arc<tokio::sync::Notify>) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut filler = Filler::new(a.clone(), wake);
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    // Set after a line over MAX_LINE was rejected: the rest of it, up to its newline, is
    // dropped too (none of it is a line of its own).
    let mut skipping = false;
    loop {
        if !running(&a).await {
            filler.flush();
            return;
        }
        // Parse whatever is buffered without waiting; wait only when nothing is.
        let available = match reader.buffer().is_empty() {
            true => {
                filler.flush();
                tokio::select! {
                    r = reader.fill_buf() => r.map(|b| b.len()),
                    _ = stopped(&a) => return,
                }
            }
            false => Ok(reader.buffer().len()),
        };
        match available {
            Ok(0) => {
                if !buf.is_empty() && !skipping {
                    line_of(&mut filler, &buf);
                }
                filler.flush();
                return;
            }
            Ok(_) => {}
            Err(e) => {
                filler.flush();
                a.note(format!("sensor connection failed: {e}"));
                return;
            }
        }
        let chunk = reader.buffer();
        let mut consumed = 0;
        for piece in chunk.split_inclusive(|&b| b == b'\n') {
            consumed += piece.len();
            let ends_line = piece.last() == Some(&b'\n');
            let body = if ends_line {
                &piece[..piece.len() - 1]
            } else {
                piece
            };
            if skipping {
                // The tail of a rejected line: dropped up to and including its newline.
                skipping = !ends_line;
                continue;
            }
            if buf.len() + body.len() > MAX_LINE {
                buf.extend_from_slice(&body[..body.len().min(64)]);
                a.reject(format!(
                    "line longer than {MAX_LINE} bytes (dropped whole): {}…",
                    String::from_utf8_lossy(&buf[..buf.len().min(64)])
                ));
                buf.clear();
                skipping = !ends_line;
                continue;
            }
            if !ends_line {
                buf.extend_from_slice(body);
            } else if buf.is_empty() {
                line_of(&mut filler, body);
            } else {
                buf.extend_from_slice(body);
                line_of(&mut filler, &buf);
                buf.clear();
            }
        }
        reader.consume(consumed);
    }
}

fn line_of(filler: &mut Filler, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(line) => filler.line(line),
        Err(_) => filler.adapter.reject(format!(
            "not UTF-8: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(1024)])
        )),
    }
}

async fn receive_udp(a: Arc<Adapter>, socket: UdpSocket, wake: Arc<tokio::sync::Notify>) {
    let mut filler = Filler::new(a.clone(), wake);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !running(&a).await {
            return;
        }
        let got = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = stopped(&a) => return,
        };
        match got {
            Ok((n, _)) => {
                for line in buf[..n].split(|&b| b == b'\n') {
                    if !line.is_empty() {
                        line_of(&mut filler, line);
                    }
                }
                filler.flush();
            }
            Err(e) => a.note(format!("receive failed: {e}")),
        }
    }
}

/// Waits for rows in the basket (or a stop); the rows taken, as CSV text.
async fn next_rows(a: &Adapter) -> Option<(String, usize, Vec<arrow::array::RecordBatch>)> {
    loop {
        if !running(a).await {
            return None;
        }
        if !a.basket.is_empty() {
            let batches = a.basket.drain();
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
            _ = a.basket.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stopped(a) => return None,
        }
    }
}

async fn emit_active(a: Arc<Adapter>, addr: SocketAddr) {
    let mut tcp: Option<TcpStream> = None;
    let udp = match a.protocol {
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
                    match TcpStream::connect(addr).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            tcp = Some(s);
                        }
                        Err(e) => {
                            a.note(format!("cannot connect to actuator {addr}: {e}; retrying"));
                        }
                    }
                }
                // An actuator that went away while we were idle: find out before writing
                // (a write into a closed connection may be accepted and then lost).
                if tcp.as_ref().is_some_and(peer_closed) {
                    tcp = None;
                    match TcpStream::connect(addr).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            tcp = Some(s);
                        }
                        Err(e) => {
                            a.note(format!("cannot connect to actuator {addr}: {e}; retrying"));
                        }
                    }
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
                a.basket.unshift(batches);
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = stopped(&a) => return,
                }
            }
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

async fn emit_tcp_passive(a: Arc<Adapter>, listener: TcpListener) {
    let clients: Arc<tokio::sync::Mutex<Vec<TcpStream>>> = Default::default();
    // Accept actuators whenever they come.
    let acceptor = {
        let a = a.clone();
        let clients = clients.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    r = listener.accept() => r,
                    _ = stopped(&a) => return,
                };
                match accepted {
                    Ok((s, _)) => {
                        let _ = s.set_nodelay(true);
                        clients.lock().await.push(s);
                        a.basket.poke();
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
                _ = a.basket.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stopped(&a) => break,
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
            a.basket.unshift(batches);
        } else {
            a.counted(n);
        }
        *list = alive;
    }
    acceptor.abort();
}
