//! `streamcell actuator`: DataCell's actuator simulator. It owns the subcommand's flags, the
//! receiving side (a UDP or TCP server that an active emitter sends to, or a TCP client of a
//! passive emitter that reconnects every second), counting events (lines; `#N` batch headers
//! and empty lines are not events), the latency histogram (now minus each event's time
//! column, in microseconds) and the statistics lines printed every `--statistics` events and
//! at the end (after `--events` events, Ctrl-C or SIGTERM). Errors, clock, time parsing,
//! address resolution and the stop signal are shared with sensor.rs. Both tools are described
//! in docs/sensor-actuator.md.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::sensor::{
    bind_all, csv_field, epoch_us, parse_time_us, resolve, runtime, stop_signal, stopped, ToolError,
};

/// A TCP line longer than this closes its connection (the sender is not speaking lines).
const MAX_LINE: usize = 16 << 20;
/// The receive buffer a UDP actuator asks for.
const UDP_RECEIVE_BUFFER: usize = 8 << 20;
/// The client mode's pause between connection attempts.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// `streamcell actuator --protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ActuatorProtocol {
    /// TCP: accept connections (several at once), or connect with --client
    Tcp,
    /// UDP datagrams, each holding whole lines (what an active emitter sends by default)
    Udp,
}

/// Flags of `streamcell actuator`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Every line received is an event (`#N` batch headers are not). Latency is the time of receipt \
minus the event's time column (Unix-epoch microseconds, or a date-time read as UTC). Reports \
look like: actuator X: 1000 events in 1.02 s, 980 events/s, latency us p50 120 p90 300 p99 900 \
max 1500")]
pub(crate) struct ActuatorFlags {
    /// Host to listen on (with --client: the emitter to connect to)
    #[arg(long, value_name = "HOST", default_value = "localhost")]
    pub host: String,
    /// Port to listen on (with --client: the emitter's port)
    #[arg(long, value_name = "PORT", default_value_t = 50600)]
    pub port: u16,
    /// tcp or udp [default: udp, the default emitter's protocol; tcp with --client]
    #[arg(long, value_enum, value_name = "PROTOCOL")]
    pub protocol: Option<ActuatorProtocol>,
    /// Name of this actuator, shown in its reports
    #[arg(long = "actuator", value_name = "NAME", default_value = "X")]
    pub name: String,
    /// Stop after this many events, -1 for no end
    #[arg(long, value_name = "N", default_value_t = -1, allow_negative_numbers = true)]
    pub events: i64,
    /// Print statistics every N events (0: only at the end)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub statistics: u64,
    /// Listen on --host:--port for an active emitter (the default)
    #[arg(long, conflicts_with = "client")]
    pub server: bool,
    /// Connect to a passive emitter at --host:--port (TCP), retrying every second
    #[arg(long)]
    pub client: bool,
    /// Echo every line received to stdout
    #[arg(long)]
    pub trace: bool,
    /// Column (1 = first) holding each event's send time, for latency (0: no latency)
    #[arg(long, value_name = "K", default_value_t = 2)]
    pub time_column: usize,
}

/// The checked flags.
#[derive(Debug)]
struct Plan {
    name: String,
    host: String,
    port: u16,
    protocol: ActuatorProtocol,
    client: bool,
    limit: Option<u64>,
    every: u64,
    trace: bool,
    /// 0-based column of the event time; `None`: no latency.
    time_column: Option<usize>,
}

impl Plan {
    fn new(f: ActuatorFlags) -> Result<Plan, ToolError> {
        let limit = match f.events {
            -1 => None,
            n if n >= 1 => Some(n.unsigned_abs()),
            _ => {
                return Err(ToolError::Usage(
                    "--events must be -1 (no end) or a positive number".to_string(),
                ))
            }
        };
        let protocol = match (f.protocol, f.client) {
            (Some(ActuatorProtocol::Udp), true) => {
                return Err(ToolError::Usage(
                    "--client connects to a passive emitter over TCP; UDP has no connection (drop --protocol udp, or run as the default --server)".to_string(),
                ))
            }
            (Some(p), _) => p,
            (None, true) => ActuatorProtocol::Tcp,
            (None, false) => ActuatorProtocol::Udp,
        };
        Ok(Plan {
            name: f.name,
            host: f.host,
            port: f.port,
            protocol,
            client: f.client,
            limit,
            every: f.statistics,
            trace: f.trace,
            time_column: f.time_column.checked_sub(1),
        })
    }
}

/// Runs `streamcell actuator` and returns its exit code.
pub(crate) fn run(flags: ActuatorFlags) -> ExitCode {
    let plan = match Plan::new(flags) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            eprintln!("streamcell actuator: {e}");
            return e.exit_code();
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamcell actuator: {e}");
            return e.exit_code();
        }
    };
    let result = rt.block_on(receive(plan));
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamcell actuator: {e}");
            e.exit_code()
        }
    }
}

/// Received bytes: whole lines (the last one may lack its `\n`), stamped on arrival.
struct Chunk {
    /// Arrival, in Unix-epoch microseconds (for latency).
    at_us: i64,
    /// Arrival, for elapsed time.
    at: Instant,
    data: Vec<u8>,
}

impl Chunk {
    fn new(data: Vec<u8>) -> Chunk {
        Chunk {
            at_us: epoch_us(),
            at: Instant::now(),
            data,
        }
    }
}

/// Starts the receivers, counts what they hand over, prints the reports.
async fn receive(plan: Arc<Plan>) -> Result<(), ToolError> {
    let mut stop = stop_signal()?;
    let who = format!("actuator {}", plan.name);
    let (tx, mut rx) = mpsc::channel::<Chunk>(1024);
    match (plan.client, plan.protocol) {
        (false, ActuatorProtocol::Udp) => {
            let sockets = bind_all(&who, &plan.host, plan.port, UdpSocket::bind).await?;
            for (socket, addr) in sockets {
                grow_receive_buffer(&socket);
                eprintln!("{who}: listening on udp {addr}");
                tokio::spawn(read_datagrams(socket, tx.clone()));
            }
        }
        (false, ActuatorProtocol::Tcp) => {
            let listeners = bind_all(&who, &plan.host, plan.port, TcpListener::bind).await?;
            for (listener, addr) in listeners {
                eprintln!("{who}: listening on tcp {addr}");
                tokio::spawn(accept(listener, who.clone(), tx.clone()));
            }
        }
        (true, _) => {
            tokio::spawn(connect(plan.clone(), who.clone(), tx.clone()));
        }
    }
    drop(tx);
    let mut stats = Stats::new(&plan.name);
    loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(chunk) => if stats.take(&plan, &chunk) {
                    break;
                },
                None => break,
            },
            _ = stopped(&mut stop) => break,
        }
    }
    println!("{}", stats.report());
    let _ = std::io::stdout().flush();
    Ok(())
}

/// Asks for a [`UDP_RECEIVE_BUFFER`] receive buffer (the kernel caps it at
/// `net.core.rmem_max`), so a burst of large batches is not dropped while the reader wakes up.
fn grow_receive_buffer(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size = libc::c_int::try_from(UDP_RECEIVE_BUFFER).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `size` through the pointer for the given length; the fd is
    // the socket's own and stays open for the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(
            "cannot grow the UDP receive buffer: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Hands every datagram over as one chunk.
async fn read_datagrams(socket: UdpSocket, tx: mpsc::Sender<Chunk>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, _)) => {
                if tx.send(Chunk::new(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            // e.g. ICMP errors reported on the socket: nothing to do with what arrives.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Accepts TCP connections, each read by a task of its own.
async fn accept(listener: TcpListener, who: String, tx: mpsc::Sender<Chunk>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                eprintln!("{who}: {peer} connected");
                let (who, tx) = (who.clone(), tx.clone());
                tokio::spawn(async move {
                    let end = read_lines(stream, &tx).await;
                    eprintln!("{who}: {peer} {end}");
                });
            }
            Err(e) => {
                eprintln!("{who}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Client mode: connect to a passive emitter, read until it closes, and connect again;
/// retries every second.
async fn connect(plan: Arc<Plan>, who: String, tx: mpsc::Sender<Chunk>) {
    let target = format!("{}:{}", plan.host, plan.port);
    let mut waiting = false;
    loop {
        let mut last_error = None;
        match resolve(&plan.host, plan.port).await {
            Ok(addrs) => {
                for addr in addrs {
                    match TcpStream::connect(addr).await {
                        Ok(stream) => {
                            eprintln!("{who}: connected to {addr}");
                            waiting = false;
                            let end = read_lines(stream, &tx).await;
                            if tx.is_closed() {
                                return;
                            }
                            eprintln!("{who}: {addr} {end}; reconnecting");
                            last_error = None;
                            break;
                        }
                        Err(e) => last_error = Some(e.to_string()),
                    }
                }
            }
            Err(e) => last_error = Some(e.to_string()),
        }
        if let Some(e) = last_error {
            if !waiting {
                eprintln!("{who}: cannot connect to {target} ({e}); retrying every second");
                waiting = true;
            }
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// Reads a TCP stream and hands over whole lines; returns how it ended, for the log.
async fn read_lines(mut stream: TcpStream, tx: &mpsc::Sender<Chunk>) -> String {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return format!("failed: {e}"),
        };
        pending.extend_from_slice(&buf[..n]);
        if let Some(last) = pending.iter().rposition(|&b| b == b'\n') {
            let rest = pending.split_off(last + 1);
            let lines = std::mem::replace(&mut pending, rest);
            if tx.send(Chunk::new(lines)).await.is_err() {
                return "dropped".to_string();
            }
        } else if pending.len() > MAX_LINE {
            return format!("dropped: a line longer than {MAX_LINE} bytes");
        }
    }
    if !pending.is_empty() && tx.send(Chunk::new(pending)).await.is_err() {
        return "dropped".to_string();
    }
    "closed the connection".to_string()
}

/// What has been received.
struct Stats {
    name: String,
    events: u64,
    /// Events whose time column was missing or did not parse.
    untimed: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Latencies in microseconds (negative ones, from clock skew, count as 0).
    latency: Option<Histogram<u64>>,
    /// Trace lines of the chunk being counted, written in one go.
    trace_out: Vec<u8>,
}

impl Stats {
    fn new(name: &str) -> Stats {
        Stats {
            name: name.to_string(),
            events: 0,
            untimed: 0,
            first: None,
            last: None,
            // 3 significant digits, growing as needed.
            latency: Histogram::new(3).ok(),
            trace_out: Vec::new(),
        }
    }

    /// Counts the events of a chunk (printing reports and trace lines on the way); true once
    /// the `--events` limit is reached.
    fn take(&mut self, plan: &Plan, chunk: &Chunk) -> bool {
        let mut done = false;
        for line in chunk.data.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            if plan.trace {
                self.trace_out.extend_from_slice(line);
                self.trace_out.push(b'\n');
            }
            if line[0] == b'#' {
                continue;
            }
            self.events += 1;
            self.first.get_or_insert(chunk.at);
            self.last = Some(chunk.at);
            if let Some(col) = plan.time_column {
                match csv_field(line, col).and_then(parse_time_us) {
                    Some(sent) => {
                        let us = u64::try_from(chunk.at_us.saturating_sub(sent)).unwrap_or(0);
                        if let Some(h) = &mut self.latency {
                            // record() grows the histogram; saturating_record() would not.
                            if h.record(us).is_err() {
                                h.saturating_record(us);
                            }
                        }
                    }
                    None => self.untimed += 1,
                }
            }
            if plan.limit.is_some_and(|l| self.events >= l) {
                // The final report follows.
                done = true;
                break;
            }
            if plan.every > 0 && self.events.is_multiple_of(plan.every) {
                self.flush_trace();
                println!("{}", self.report());
            }
        }
        self.flush_trace();
        done
    }

    fn flush_trace(&mut self) {
        if !self.trace_out.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&self.trace_out).and_then(|()| out.flush());
            self.trace_out.clear();
        }
    }

    /// `actuator X: 1000 events in 1.02 s, 980 events/s, latency us p50 120 p90 300 p99 900
    /// max 1500`; the time runs from the first event to the last.
    fn report(&self) -> String {
        let secs = match (self.first, self.last) {
            (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
            _ => 0.0,
        };
        let rate = if secs > 0.0 {
            format!("{:.0}", self.events as f64 / secs)
        } else {
            "n/a".to_string()
        };
        let latency = match &self.latency {
            Some(h) if !h.is_empty() => format!(
                "p50 {} p90 {} p99 {} max {}",
                h.value_at_quantile(0.50),
                h.value_at_quantile(0.90),
                h.value_at_quantile(0.99),
                h.max()
            ),
            _ => "n/a".to_string(),
        };
        let untimed = if self.untimed > 0 {
            format!(" ({} without a time)", self.untimed)
        } else {
            String::new()
        };
        format!(
            "actuator {}: {} events in {secs:.2} s, {rate} events/s, latency us {latency}{untimed}",
            self.name, self.events
        )
    }
}
