//! `streamcell sensor`: DataCell's sensor simulator. It owns the subcommand's flags and their
//! checks, the event generator (`id,timestamp,values…` lines: ids from `--increment`, the
//! timestamp in Unix-epoch microseconds, random integers from a built-in xorshift generator),
//! the replay of a file or stdin (optionally at the pace of a time column), the transports (a
//! TCP client of a passive receptor, a TCP server for an active receptor, UDP datagrams, and
//! `debug` to stdout or a file), the progress bar on a terminal and the closing summary.
//!
//! It also owns what `streamcell actuator` (actuator.rs) shares with it: [`ToolError`] and its
//! exit codes, the epoch clock, reading a time out of a CSV field, address resolution and the
//! Ctrl-C/SIGTERM stop signal. Both tools are described in docs/sensor-actuator.md.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::builder::BoolishValueParser;
use clap::ArgAction;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};

/// The largest UDP datagram the sensor sends (below IPv4's 65,507-byte payload limit and
/// DataCell's 64 KiB receive buffer). A bigger batch is split, each part with its own header.
pub(crate) const MAX_DATAGRAM: usize = 65_000;
/// How often the progress bar is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Width of the progress bar's bar, in characters.
const BAR_WIDTH: usize = 30;

/// What can go wrong in `streamcell sensor` and `streamcell actuator`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ToolError {
    /// Flags that do not fit together (exit code 2, like clap's own errors).
    #[error("{0}")]
    Usage(String),
    /// The host name could not be resolved.
    #[error("cannot resolve {host}:{port}: {source}")]
    Resolve {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    /// The host name resolved to no address.
    #[error("{host}:{port} resolves to no address")]
    NoAddress { host: String, port: u16 },
    /// A TCP connection could not be made.
    #[error("cannot connect to {target}: {source} (is a receptor listening there?)")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    /// A socket could not be bound.
    #[error("cannot listen on {target}: {source}")]
    Bind {
        target: String,
        source: std::io::Error,
    },
    /// Sending failed (e.g. the receiver closed the connection).
    #[error("sending to {target} failed after {events} events: {source}")]
    Send {
        target: String,
        events: u64,
        source: std::io::Error,
    },
    /// A replayed line is too long for one UDP datagram.
    #[error("a line of {len} bytes does not fit in a UDP datagram (at most {MAX_DATAGRAM} bytes)")]
    LineTooLong { len: usize },
    /// Whoever reads the `debug` output went away (e.g. `| head`): the run just ends.
    #[error("the output was closed")]
    OutputClosed,
    /// A file or stdin could not be read or written, or another local I/O failure.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl ToolError {
    /// The process exit code for this error: 2 for bad flags, 1 otherwise.
    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            ToolError::Usage(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

/// `streamcell sensor --protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SensorProtocol {
    /// A TCP connection (to a passive receptor, or from an active one with --server)
    Tcp,
    /// One UDP datagram per batch (split when larger than 65,000 bytes)
    Udp,
    /// Write the events to stdout (or to --file) instead of the network
    Debug,
}

/// Flags of `streamcell sensor`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Events are CSV lines `id,timestamp,value...`: the id counts up from --increment in steps of \
--increment, the timestamp is the send time in Unix-epoch microseconds, the values are random \
integers in 0..2^31. Example (DataCell's): streamcell sensor --port 50500 --events 1000 \
--columns 3")]
pub(crate) struct SensorFlags {
    /// Host to connect to (with --server: the address to listen on)
    #[arg(long, value_name = "HOST", default_value = "localhost")]
    pub host: String,
    /// Port to connect to (with --server: the port to listen on)
    #[arg(long, value_name = "PORT", default_value_t = 50500)]
    pub port: u16,
    /// Name of this sensor, shown in the progress bar and the summary
    #[arg(long = "sensor", value_name = "NAME", default_value = "X")]
    pub name: String,
    /// How to send: tcp, udp (a datagram per batch) or debug (write to stdout or --file)
    #[arg(long, value_enum, value_name = "PROTOCOL", default_value_t = SensorProtocol::Tcp)]
    pub protocol: SensorProtocol,
    /// First event id and step between ids (0: no id column)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub increment: u64,
    /// Put the send time (Unix-epoch microseconds) after the id; --timestamp=false omits it
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value_t = true,
        default_missing_value = "true",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub timestamp: bool,
    /// Omit the timestamp column (the same as --timestamp=false)
    #[arg(long)]
    pub no_timestamp: bool,
    /// Columns per event, counting the id and the timestamp: 3 gives `id,timestamp,value`
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub columns: u32,
    /// Events to send, -1 for no end (with --replay: how many times to send the input)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    pub events: i64,
    /// Events per batch; above 1 every batch starts with a `#N` header line
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch: u64,
    /// Milliseconds between batches (0: no pause; negative: wait for Enter before each batch)
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    pub delay: i64,
    /// With --replay: the file to send (default: stdin); with --protocol debug: the output file
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Send the lines of --file (or stdin) as they are, instead of generated events
    #[arg(long)]
    pub replay: bool,
    /// With --replay: column (1 = first) holding each line's time (date-time or epoch µs);
    /// lines are sent as far apart as their times are
    #[arg(long = "time", value_name = "COL", requires = "replay",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub time: Option<u32>,
    /// Echo what is sent to stdout
    #[arg(long)]
    pub trace: bool,
    /// Listen on --host:--port and send the events to every client that connects (for an
    /// active receptor); runs until Ctrl-C
    #[arg(long, conflicts_with = "client")]
    pub server: bool,
    /// Connect to --host:--port and send the events (the default)
    #[arg(long)]
    pub client: bool,
    /// Seed of the random values (default: taken from the clock)
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

/// Runs `streamcell sensor` and returns its exit code.
pub(crate) fn run(flags: SensorFlags) -> ExitCode {
    let plan = match Plan::new(flags) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            eprintln!("streamcell sensor: {e}");
            return e.exit_code();
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamcell sensor: {e}");
            return e.exit_code();
        }
    };
    let result = rt.block_on(async {
        let stop = stop_signal()?;
        if plan.server {
            serve(plan.clone(), stop).await
        } else {
            send(plan.clone(), stop).await
        }
    });
    // Reader threads (stdin, replay files) may still be blocked; they end with the process.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamcell sensor: {e}");
            e.exit_code()
        }
    }
}

/// What to send between batches.
#[derive(Debug, Clone, Copy)]
enum Pause {
    /// Nothing: the next batch goes at once.
    None,
    /// Batches start this far apart.
    Every(Duration),
    /// Wait for Enter on stdin before each batch after the first.
    Enter,
}

/// Where events come from.
#[derive(Debug, Clone)]
enum Source {
    /// Generated events.
    Generate {
        /// First id and step; 0 leaves the id column out.
        increment: u64,
        timestamp: bool,
        /// Random values per event.
        values: usize,
        /// Events to send; `None` for no end.
        events: Option<u64>,
    },
    /// Lines of a file (or stdin), `passes` times (`None`: forever).
    Replay {
        file: Option<PathBuf>,
        passes: Option<u64>,
        /// 0-based column holding each line's time.
        time_column: Option<usize>,
    },
}

/// The checked flags.
#[derive(Debug)]
struct Plan {
    name: String,
    host: String,
    port: u16,
    protocol: SensorProtocol,
    server: bool,
    source: Source,
    batch: usize,
    pause: Pause,
    /// `--protocol debug --file F`: write there instead of stdout.
    debug_file: Option<PathBuf>,
    trace: bool,
    seed: u64,
}

impl Plan {
    fn new(f: SensorFlags) -> Result<Plan, ToolError> {
        let usage = |m: &str| Err(ToolError::Usage(m.to_string()));
        let events = match f.events {
            -1 => None,
            n if n >= 1 => Some(n.unsigned_abs()),
            _ => return usage("--events must be -1 (no end) or a positive number"),
        };
        if f.server && f.protocol != SensorProtocol::Tcp {
            return usage("--server needs --protocol tcp");
        }
        if f.file.is_some() && !f.replay && f.protocol != SensorProtocol::Debug {
            return usage(
                "--file needs --replay (to send the file) or --protocol debug (to write the events to it)",
            );
        }
        if f.time.is_some() && f.batch > 1 {
            return usage(
                "--time sends every line at its own time; it cannot be combined with --batch",
            );
        }
        let stdin_replay = f.replay && f.file.is_none();
        if stdin_replay && f.server {
            return usage("--server --replay needs --file (stdin can be read only once)");
        }
        if f.server && f.delay < 0 {
            return usage(
                "a negative --delay waits for Enter on stdin; it cannot be used with --server",
            );
        }
        if stdin_replay && f.delay < 0 {
            return usage("a negative --delay waits for Enter on stdin; replay a --file then");
        }
        if stdin_replay && events != Some(1) {
            return usage("--events repeats the replayed input, but stdin can be read only once; replay a --file");
        }
        if let (true, Some(path)) = (f.replay, &f.file) {
            // Fail before connecting anywhere.
            File::open(path).map_err(|source| ToolError::Io {
                what: format!("cannot open {}", path.display()),
                source,
            })?;
        }
        let source = if f.replay {
            Source::Replay {
                file: f.file.clone(),
                passes: events,
                time_column: f.time.map(|c| c as usize - 1),
            }
        } else {
            let timestamp = f.timestamp && !f.no_timestamp;
            let fixed = usize::from(f.increment > 0) + usize::from(timestamp);
            Source::Generate {
                increment: f.increment,
                timestamp,
                values: (f.columns as usize).saturating_sub(fixed),
                events,
            }
        };
        let pause = if f.time.is_some() {
            Pause::None
        } else if f.delay < 0 {
            Pause::Enter
        } else if f.delay == 0 {
            Pause::None
        } else {
            Pause::Every(Duration::from_millis(f.delay.unsigned_abs()))
        };
        // debug already writes the events to stdout: no need to echo them there too.
        let trace =
            f.trace && !(f.protocol == SensorProtocol::Debug && !f.replay && f.file.is_none());
        let debug_file = if f.protocol == SensorProtocol::Debug && !f.replay {
            f.file
        } else {
            None
        };
        let seed = f.seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 ^ u64::from(std::process::id()))
                .unwrap_or(0x5eed)
        });
        Ok(Plan {
            name: f.name,
            host: f.host,
            port: f.port,
            protocol: f.protocol,
            server: f.server,
            source,
            batch: usize::try_from(f.batch).unwrap_or(1),
            pause,
            debug_file,
            trace,
            seed,
        })
    }

    /// The total number of events, when it is known up front.
    fn total(&self) -> Option<u64> {
        match &self.source {
            Source::Generate { events, .. } => *events,
            Source::Replay { .. } => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shared with actuator.rs
// ---------------------------------------------------------------------------------------

/// A runtime for the tools: the main future on this thread, spawned tasks (connections, the
/// stop signal) on one worker, so a second Ctrl-C is seen even if the main thread is busy.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ToolError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|source| ToolError::Io {
            what: "cannot start the runtime".to_string(),
            source,
        })
}

/// Now, in microseconds since the Unix epoch.
pub(crate) fn epoch_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A watch that turns true on the first SIGINT (Ctrl-C) or SIGTERM. A second one ends the
/// process at once with code 130. Call inside the runtime.
pub(crate) fn stop_signal() -> Result<watch::Receiver<bool>, ToolError> {
    use tokio::signal::unix::{signal, SignalKind};
    let io = |source| ToolError::Io {
        what: "cannot listen for Ctrl-C".to_string(),
        source,
    };
    // Registered here, before anything is bound or announced, so a signal sent right after
    // the "listening" line is always handled.
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        let _ = tx.send(true);
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        std::process::exit(130);
    });
    Ok(rx)
}

/// Completes once the stop signal has fired.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The addresses `host:port` resolves to, IPv4 first (receptors bind 127.0.0.1 by default).
pub(crate) async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ToolError> {
    let found = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| ToolError::Resolve {
            host: host.to_string(),
            port,
            source,
        })?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for a in found {
        if !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    addrs.sort_by_key(|a| a.is_ipv6());
    if addrs.is_empty() {
        return Err(ToolError::NoAddress {
            host: host.to_string(),
            port,
        });
    }
    Ok(addrs)
}

/// Calls `bind` on every address `host:port` resolves to (for `localhost`: 127.0.0.1 and
/// ::1) and keeps what could be bound; fails only when nothing could be.
pub(crate) async fn bind_all<T, F, Fut>(
    who: &str,
    host: &str,
    port: u16,
    bind: F,
) -> Result<Vec<(T, SocketAddr)>, ToolError>
where
    F: Fn(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    let mut bound = Vec::new();
    let mut first_error = None;
    for addr in resolve(host, port).await? {
        match bind(addr).await {
            Ok(s) => bound.push((s, addr)),
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some((addr, e));
                } else {
                    eprintln!("{who}: not listening on {addr}: {e}");
                }
            }
        }
    }
    match (bound.is_empty(), first_error) {
        (true, Some((addr, source))) => Err(ToolError::Bind {
            target: addr.to_string(),
            source,
        }),
        (true, None) => Err(ToolError::NoAddress {
            host: host.to_string(),
            port,
        }),
        (false, Some((addr, e))) => {
            // e.g. ::1 on a machine without IPv6: worth a note, not a failure.
            eprintln!("{who}: not listening on {addr}: {e}");
            Ok(bound)
        }
        (false, None) => Ok(bound),
    }
}

/// Field `index` (0-based) of a CSV line, without surrounding spaces and double quotes.
pub(crate) fn csv_field(line: &[u8], index: usize) -> Option<&[u8]> {
    let field = line.split(|&b| b == b',').nth(index)?.trim_ascii();
    let field = field
        .strip_prefix(b"\"")
        .and_then(|f| f.strip_suffix(b"\""))
        .unwrap_or(field);
    Some(field)
}

/// Reads a time as microseconds since the Unix epoch: an integer is taken as epoch
/// microseconds; otherwise `YYYY-MM-DD[ T]HH:MM:SS[.fraction][Z|±HH[:MM]]`, UTC when no
/// offset is given.
pub(crate) fn parse_time_us(text: &[u8]) -> Option<i64> {
    let text = text.trim_ascii();
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
        return std::str::from_utf8(text).ok()?.parse().ok();
    }
    parse_datetime_us(text)
}

/// A fixed-width decimal number.
fn digits(text: &[u8]) -> Option<i64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
}

/// `YYYY-MM-DD[ T]HH:MM:SS[.fraction][Z|±HH[:MM]]` as epoch microseconds.
fn parse_datetime_us(t: &[u8]) -> Option<i64> {
    if t.len() < 19 || t[4] != b'-' || t[7] != b'-' || !matches!(t[10], b' ' | b'T' | b't') {
        return None;
    }
    if t[13] != b':' || t[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(&t[0..4])?, digits(&t[5..7])?, digits(&t[8..10])?);
    let (hour, minute, second) = (
        digits(&t[11..13])?,
        digits(&t[14..16])?,
        digits(&t[17..19])?,
    );
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[(month - 1) as usize]
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &t[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        let mut us = digits(&frac[..n.min(6)])?;
        for _ in n..6 {
            us *= 10;
        }
        micros = us;
        rest = &frac[n..];
    }
    let offset_s = match rest {
        b"" | b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), tz @ ..] => {
            let (h, m) = match tz.len() {
                2 => (digits(tz)?, 0),
                4 => (digits(&tz[..2])?, digits(&tz[2..])?),
                5 if tz[2] == b':' => (digits(&tz[..2])?, digits(&tz[3..])?),
                _ => return None,
            };
            let s = h * 3600 + m * 60;
            if *sign == b'+' {
                s
            } else {
                -s
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(seconds * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads one line from stdin on a thread of its own; `false` at end of input or on an error.
async fn wait_for_enter() -> bool {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let got = matches!(std::io::stdin().lock().read_line(&mut line), Ok(n) if n > 0);
        let _ = tx.send(got);
    });
    rx.await.unwrap_or(false)
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

/// xorshift64* (Vigna): small, fast, and good enough for test payloads.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so nearby seeds give unrelated streams and 0 is fine.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    /// The next value in 0..2^31 (like C's `rand()`, so it fits an SQL `integer`).
    fn next_value(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33
    }
}

/// Makes generated events.
struct Generator {
    step: u64,
    next_id: u64,
    timestamp: bool,
    values: usize,
    rng: Rng,
}

impl Generator {
    /// Appends one event line (with its `\n`).
    fn push_event(&mut self, out: &mut Vec<u8>) {
        let mut sep = false;
        if self.step > 0 {
            let _ = write!(out, "{}", self.next_id);
            self.next_id = self.next_id.wrapping_add(self.step);
            sep = true;
        }
        if self.timestamp {
            if sep {
                out.push(b',');
            }
            let _ = write!(out, "{}", epoch_us());
            sep = true;
        }
        for _ in 0..self.values {
            if sep {
                out.push(b',');
            }
            let _ = write!(out, "{}", self.rng.next_value());
            sep = true;
        }
        out.push(b'\n');
    }
}

/// The lines of one batch, each ending with `\n`.
#[derive(Default)]
struct Batch {
    text: Vec<u8>,
    /// Where each line ends (just after its `\n`).
    ends: Vec<usize>,
}

impl Batch {
    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn push_line(&mut self, line: &[u8]) {
        self.text.extend_from_slice(line);
        self.text.push(b'\n');
        self.ends.push(self.text.len());
    }

    /// Lines `from..to` as bytes.
    fn lines(&self, from: usize, to: usize) -> &[u8] {
        let start = if from == 0 { 0 } else { self.ends[from - 1] };
        let end = if to == 0 { 0 } else { self.ends[to - 1] };
        &self.text[start..end]
    }

    /// Appends lines `from..to` to `out`, after a `#N` header line when `header`.
    fn frame(&self, from: usize, to: usize, header: bool, out: &mut Vec<u8>) {
        if header {
            let _ = writeln!(out, "#{}", to - from);
        }
        out.extend_from_slice(self.lines(from, to));
    }
}

/// A line of replayed input, or what the reader thread has to say.
enum ReplayItem {
    /// A pass over the input starts (the replay clock restarts).
    PassStart,
    Line(Vec<u8>),
    Failed(ToolError),
}

/// Reads the replay input on a thread of its own (files and stdin are blocking), `passes`
/// times (`None`: until stopped), and hands its lines over with back-pressure.
fn spawn_replay_reader(
    file: Option<PathBuf>,
    passes: Option<u64>,
    skip_headers: bool,
) -> mpsc::Receiver<ReplayItem> {
    let (tx, rx) = mpsc::channel(1024);
    std::thread::spawn(move || {
        let mut pass = 0u64;
        while passes.is_none_or(|p| pass < p) {
            pass += 1;
            let (what, input): (String, Box<dyn BufRead>) = match &file {
                Some(path) => match File::open(path) {
                    Ok(f) => (path.display().to_string(), Box::new(BufReader::new(f))),
                    Err(source) => {
                        let what = format!("cannot open {}", path.display());
                        let _ =
                            tx.blocking_send(ReplayItem::Failed(ToolError::Io { what, source }));
                        return;
                    }
                },
                None => ("stdin".to_string(), Box::new(std::io::stdin().lock())),
            };
            if tx.blocking_send(ReplayItem::PassStart).is_err() {
                return;
            }
            let mut lines = 0u64;
            for line in input.split(b'\n') {
                let mut line = match line {
                    Ok(l) => l,
                    Err(source) => {
                        let what = format!("cannot read {what}");
                        let _ =
                            tx.blocking_send(ReplayItem::Failed(ToolError::Io { what, source }));
                        return;
                    }
                };
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.is_empty() || (skip_headers && line.first() == Some(&b'#')) {
                    continue;
                }
                lines += 1;
                if tx.blocking_send(ReplayItem::Line(line)).is_err() {
                    return;
                }
            }
            if lines == 0 {
                // An empty input repeated forever would spin.
                return;
            }
        }
    });
    rx
}

/// The producer of batches: a generator or a replay.
enum Feed {
    Generate {
        generator: Generator,
        remaining: Option<u64>,
    },
    Replay {
        lines: mpsc::Receiver<ReplayItem>,
        time_column: Option<usize>,
        /// The first time of this pass and when its line was sent.
        clock: Option<(i64, Instant)>,
        warned: bool,
    },
}

impl Feed {
    fn new(plan: &Plan, seed: u64) -> Feed {
        match &plan.source {
            Source::Generate {
                increment,
                timestamp,
                values,
                events,
            } => Feed::Generate {
                generator: Generator {
                    step: *increment,
                    next_id: *increment,
                    timestamp: *timestamp,
                    values: *values,
                    rng: Rng::new(seed),
                },
                remaining: *events,
            },
            Source::Replay {
                file,
                passes,
                time_column,
            } => Feed::Replay {
                lines: spawn_replay_reader(file.clone(), *passes, plan.batch > 1),
                time_column: *time_column,
                clock: None,
                warned: false,
            },
        }
    }

    /// Fills `batch` with up to `max` lines. `Ok(None)` when there is nothing more; otherwise
    /// when the batch is due (`None`: now).
    async fn next_batch(
        &mut self,
        batch: &mut Batch,
        max: usize,
    ) -> Result<Option<Option<Instant>>, ToolError> {
        batch.clear();
        match self {
            Feed::Generate {
                generator,
                remaining,
            } => {
                let n = match remaining {
                    Some(0) => return Ok(None),
                    Some(r) => {
                        let n = (*r).min(max as u64);
                        *r -= n;
                        n
                    }
                    None => max as u64,
                };
                for _ in 0..n {
                    generator.push_event(&mut batch.text);
                    batch.ends.push(batch.text.len());
                }
                Ok(Some(None))
            }
            Feed::Replay {
                lines,
                time_column,
                clock,
                warned,
            } => {
                let mut due = None;
                while batch.len() < max {
                    let Some(item) = lines.recv().await else {
                        break;
                    };
                    match item {
                        ReplayItem::PassStart => *clock = None,
                        ReplayItem::Failed(e) => return Err(e),
                        ReplayItem::Line(line) => {
                            if let Some(col) = *time_column {
                                match csv_field(&line, col).and_then(parse_time_us) {
                                    Some(t) => match *clock {
                                        None => *clock = Some((t, Instant::now())),
                                        Some((t0, at)) => {
                                            let ahead = u64::try_from(t - t0).unwrap_or(0);
                                            due = Some(at + Duration::from_micros(ahead));
                                        }
                                    },
                                    None if !*warned => {
                                        *warned = true;
                                        eprintln!(
                                            "streamcell sensor: no time in column {} of {:?}; such lines are sent at once",
                                            col + 1,
                                            String::from_utf8_lossy(&line)
                                        );
                                    }
                                    None => {}
                                }
                            }
                            batch.push_line(&line);
                        }
                    }
                }
                if batch.len() == 0 {
                    return Ok(None);
                }
                Ok(Some(due))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Transports
// ---------------------------------------------------------------------------------------

/// Where batches go.
enum Sink {
    Tcp {
        stream: TcpStream,
        peer: String,
    },
    Udp {
        socket: UdpSocket,
        target: SocketAddr,
    },
    Debug {
        out: Box<dyn Write + Send>,
        /// Flush after every batch (when batches are paced), so the output is live.
        flush: bool,
    },
}

impl Sink {
    /// Opens the sink of a client-mode run.
    async fn open(plan: &Plan) -> Result<Sink, ToolError> {
        match plan.protocol {
            SensorProtocol::Tcp => {
                let target = format!("{}:{}", plan.host, plan.port);
                let mut last = None;
                for addr in resolve(&plan.host, plan.port).await? {
                    match TcpStream::connect(addr).await {
                        Ok(stream) => {
                            let _ = stream.set_nodelay(true);
                            return Ok(Sink::Tcp {
                                stream,
                                peer: addr.to_string(),
                            });
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(ToolError::Connect {
                    target,
                    source: last.unwrap_or_else(|| std::io::ErrorKind::NotFound.into()),
                })
            }
            SensorProtocol::Udp => {
                let addrs = resolve(&plan.host, plan.port).await?;
                let target = addrs[0];
                let local: SocketAddr = if target.is_ipv6() {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                };
                let socket = UdpSocket::bind(local)
                    .await
                    .map_err(|source| ToolError::Bind {
                        target: local.to_string(),
                        source,
                    })?;
                Ok(Sink::Udp { socket, target })
            }
            SensorProtocol::Debug => {
                let flush = !matches!(plan.pause, Pause::None);
                let out: Box<dyn Write + Send> = match &plan.debug_file {
                    Some(path) => Box::new(std::io::BufWriter::new(File::create(path).map_err(
                        |source| ToolError::Io {
                            what: format!("cannot create {}", path.display()),
                            source,
                        },
                    )?)),
                    None => Box::new(std::io::BufWriter::new(std::io::stdout())),
                };
                Ok(Sink::Debug { out, flush })
            }
        }
    }

    /// Where the events go, for messages.
    fn target(&self, plan: &Plan) -> String {
        match self {
            Sink::Tcp { peer, .. } => format!("{peer} over tcp"),
            Sink::Udp { target, .. } => format!("{target} over udp"),
            Sink::Debug { .. } => match &plan.debug_file {
                Some(p) => p.display().to_string(),
                None => "stdout".to_string(),
            },
        }
    }

    /// Sends one batch; `sent` is the number of events sent before it (for messages).
    async fn send(
        &mut self,
        batch: &Batch,
        header: bool,
        sent: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), ToolError> {
        out.clear();
        match self {
            Sink::Tcp { stream, peer } => {
                batch.frame(0, batch.len(), header, out);
                stream
                    .write_all(out)
                    .await
                    .map_err(|source| ToolError::Send {
                        target: peer.clone(),
                        events: sent,
                        source,
                    })
            }
            Sink::Udp { socket, target } => {
                // Header room: `#` + up to 20 digits + `\n`.
                let room = MAX_DATAGRAM - if header { 22 } else { 0 };
                let mut from = 0;
                while from < batch.len() {
                    let mut to = from;
                    while to < batch.len() && batch.lines(from, to + 1).len() <= room {
                        to += 1;
                    }
                    if to == from {
                        return Err(ToolError::LineTooLong {
                            len: batch.lines(from, from + 1).len(),
                        });
                    }
                    out.clear();
                    batch.frame(from, to, header, out);
                    socket
                        .send_to(out, *target)
                        .await
                        .map_err(|source| ToolError::Send {
                            target: target.to_string(),
                            events: sent + from as u64,
                            source,
                        })?;
                    from = to;
                }
                Ok(())
            }
            Sink::Debug { out: w, flush } => {
                batch.frame(0, batch.len(), header, out);
                let mut r = w.write_all(out);
                if *flush {
                    r = r.and_then(|()| w.flush());
                }
                r.map_err(debug_write_error)
            }
        }
    }

    /// Flushes and closes: TCP gets a clean end of stream.
    async fn finish(&mut self) -> Result<(), ToolError> {
        match self {
            Sink::Tcp { stream, .. } => {
                let _ = stream.shutdown().await;
                Ok(())
            }
            Sink::Udp { .. } => Ok(()),
            Sink::Debug { out, .. } => match out.flush().map_err(debug_write_error) {
                Err(ToolError::OutputClosed) => Ok(()),
                r => r,
            },
        }
    }
}

/// A failed write of the `debug` output; a closed pipe is [`ToolError::OutputClosed`].
fn debug_write_error(source: std::io::Error) -> ToolError {
    if source.kind() == std::io::ErrorKind::BrokenPipe {
        ToolError::OutputClosed
    } else {
        ToolError::Io {
            what: "cannot write the events".to_string(),
            source,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Progress and the sending loop
// ---------------------------------------------------------------------------------------

/// The progress bar on stderr (only drawn when stderr is a terminal).
struct Progress {
    enabled: bool,
    name: String,
    total: Option<u64>,
    start: Instant,
    last_draw: Option<Instant>,
}

impl Progress {
    fn new(enabled: bool, name: &str, total: Option<u64>) -> Progress {
        Progress {
            enabled,
            name: name.to_string(),
            total,
            start: Instant::now(),
            last_draw: None,
        }
    }

    fn update(&mut self, sent: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .last_draw
            .is_some_and(|at| now.duration_since(at) < PROGRESS_EVERY)
        {
            return;
        }
        self.last_draw = Some(now);
        let secs = now.duration_since(self.start).as_secs_f64();
        let rate = if secs > 0.0 { sent as f64 / secs } else { 0.0 };
        let line = match self.total {
            Some(total) if total > 0 => {
                let done = (sent as f64 / total as f64).min(1.0);
                let filled = (done * BAR_WIDTH as f64) as usize;
                format!(
                    "sensor {}: [{}{}] {sent}/{total} events {:3.0}% {rate:.0} events/s",
                    self.name,
                    "=".repeat(filled),
                    " ".repeat(BAR_WIDTH - filled),
                    done * 100.0
                )
            }
            _ => format!("sensor {}: {sent} events {rate:.0} events/s", self.name),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
    }

    /// Removes the bar so the summary line starts clean.
    fn finish(&mut self) {
        if self.enabled && self.last_draw.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

/// Sends batches from `feed` to `sink` until the feed ends or the stop signal fires; returns
/// the number of events sent and whether it was stopped.
async fn pump(
    plan: &Plan,
    feed: &mut Feed,
    sink: &mut Sink,
    stop: &mut watch::Receiver<bool>,
    progress: &mut Progress,
    sent: &mut u64,
) -> Result<bool, ToolError> {
    let header = plan.batch > 1;
    let mut batch = Batch::default();
    let mut out = Vec::new();
    let mut traced = Vec::new();
    let mut next_at: Option<Instant> = None;
    loop {
        if let Some(at) = next_at {
            match plan.pause {
                Pause::None => {}
                Pause::Every(_) => tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = stopped(stop) => return Ok(true),
                },
                Pause::Enter => {
                    if std::io::stdin().is_terminal() {
                        eprint!(
                            "sensor {}: {sent} events sent; Enter sends the next batch ",
                            plan.name
                        );
                    }
                    tokio::select! {
                        more = wait_for_enter() => if !more { return Ok(false) },
                        _ = stopped(stop) => return Ok(true),
                    }
                }
            }
        }
        let due = tokio::select! {
            next = feed.next_batch(&mut batch, plan.batch) => match next? {
                Some(due) => due,
                None => return Ok(false),
            },
            _ = stopped(stop) => return Ok(true),
        };
        if let Some(due) = due {
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = stopped(stop) => return Ok(true),
            }
        }
        // Batches start `delay` apart; after a slow send the next one goes at once.
        let now = Instant::now();
        if let Pause::Every(d) = plan.pause {
            next_at = Some(next_at.map_or(now + d, |at| (at + d).max(now)));
        } else {
            next_at = Some(now);
        }
        tokio::select! {
            r = sink.send(&batch, header, *sent, &mut out) => match r {
                Ok(()) => {}
                Err(ToolError::OutputClosed) => return Ok(true),
                Err(e) => return Err(e),
            },
            _ = stopped(stop) => return Ok(true),
        }
        *sent += batch.len() as u64;
        if plan.trace {
            traced.clear();
            batch.frame(0, batch.len(), header, &mut traced);
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(&traced).and_then(|()| o.flush());
        }
        progress.update(*sent);
    }
}

/// A human rate: events per second over `secs`.
fn rate(events: u64, secs: f64) -> String {
    if secs > 0.0 {
        format!("{:.0}", events as f64 / secs)
    } else {
        "n/a".to_string()
    }
}

/// Client mode: open the sink, send everything, print the summary, and keep the connection
/// open until Enter when stdin is a terminal.
async fn send(plan: Arc<Plan>, mut stop: watch::Receiver<bool>) -> Result<(), ToolError> {
    let mut sink = Sink::open(&plan).await?;
    let mut feed = Feed::new(&plan, plan.seed);
    let mut progress = Progress::new(std::io::stderr().is_terminal(), &plan.name, plan.total());
    let start = Instant::now();
    let mut sent = 0;
    let result = pump(
        &plan,
        &mut feed,
        &mut sink,
        &mut stop,
        &mut progress,
        &mut sent,
    )
    .await;
    let secs = start.elapsed().as_secs_f64();
    progress.finish();
    let finished = sink.finish().await;
    eprintln!(
        "sensor {}: sent {sent} events in {secs:.2} s ({} events/s) to {}",
        plan.name,
        rate(sent, secs),
        sink.target(&plan)
    );
    let stopped_early = result?;
    finished?;
    // DataCell's sensor waits before closing, so the receiver is not confronted with a
    // broken channel; only ask when someone can answer.
    if !stopped_early && plan.protocol != SensorProtocol::Debug && std::io::stdin().is_terminal() {
        eprint!("sensor {}: press Enter to exit ", plan.name);
        tokio::select! {
            _ = wait_for_enter() => {}
            _ = stopped(&mut stop) => {}
        }
    }
    Ok(())
}

/// Server mode (for an active receptor): every client that connects gets the whole run.
async fn serve(plan: Arc<Plan>, mut stop: watch::Receiver<bool>) -> Result<(), ToolError> {
    let who = format!("sensor {}", plan.name);
    let listeners = bind_all(&who, &plan.host, plan.port, TcpListener::bind).await?;
    for (_, addr) in &listeners {
        eprintln!("{who}: listening on tcp {addr}");
    }
    let clients = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for (listener, _) in listeners {
        let (plan, stop, clients) = (plan.clone(), stop.clone(), clients.clone());
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("sensor {}: accept failed: {e}", plan.name);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let n = clients.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (plan, mut stop) = (plan.clone(), stop.clone());
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let peer = peer.to_string();
                    eprintln!("sensor {}: client {peer} connected", plan.name);
                    let mut sink = Sink::Tcp {
                        stream,
                        peer: peer.clone(),
                    };
                    let mut feed = Feed::new(&plan, plan.seed.wrapping_add(n));
                    let mut progress = Progress::new(false, &plan.name, None);
                    let start = Instant::now();
                    let mut sent = 0;
                    let r = pump(
                        &plan,
                        &mut feed,
                        &mut sink,
                        &mut stop,
                        &mut progress,
                        &mut sent,
                    )
                    .await;
                    let _ = sink.finish().await;
                    let secs = start.elapsed().as_secs_f64();
                    match r {
                        Ok(_) => eprintln!(
                            "sensor {}: sent {sent} events in {secs:.2} s ({} events/s) to {peer}",
                            plan.name,
                            rate(sent, secs)
                        ),
                        Err(e) => eprintln!("sensor {}: {e}", plan.name),
                    }
                });
            }
        });
    }
    stopped(&mut stop).await;
    eprintln!(
        "{who}: stopped after {} client(s)",
        clients.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(
            parse_time_us(b"1700000000123456"),
            Some(1_700_000_000_123_456)
        );
        assert_eq!(parse_time_us(b"1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_time_us(b"1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(
            parse_time_us(b"2024-02-29 12:34:56.123456"),
            Some(1_709_210_096_123_456)
        );
        assert_eq!(
            parse_time_us(b"2024-02-29T13:34:56.123456+01:00"),
            Some(1_709_210_096_123_456)
        );
        assert_eq!(parse_time_us(b"2023-02-29 00:00:00"), None);
        assert_eq!(parse_time_us(b"hello"), None);
        assert_eq!(parse_time_us(b""), None);
    }

    #[test]
    fn fields() {
        assert_eq!(csv_field(b"1, \"x\" ,3", 1), Some(&b"x"[..]));
        assert_eq!(csv_field(b"1,2", 2), None);
    }

    #[test]
    fn values_fit_an_integer_column() {
        let mut rng = Rng::new(0);
        for _ in 0..10_000 {
            assert!(rng.next_value() <= i32::MAX as u64);
        }
    }
}
