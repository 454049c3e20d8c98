//! `streamcell_bench`: what the benchmark binaries (`append`, `subscribe`) share.
//!
//! - [`start_server`] starts a streamcell server on free 127.0.0.1 ports with a fresh temporary
//!   data directory and waits until it answers `Echo`; the returned [`ServerGuard`] kills it and
//!   deletes the directory when dropped (also on error or Ctrl-C, see [`main_with`]).
//! - [`connect`] / [`echo`] open gRPC channels to a server; [`create_stream`] and
//!   [`delete_stream`] manage the benchmark streams.
//! - [`XorShift`] and [`make_batches`] build pre-encoded batches of random RAW records.
//! - [`new_histogram`] and [`LatencyMs`] record and summarise latencies in microseconds.
//! - [`BenchError`] is the error type of every benchmark; [`main_with`] runs a benchmark on a
//!   tokio runtime and prints the whole cause chain of a failure.

use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use streamcell_proto::api::{
    BatchedRecord, DeleteStreamRequest, EchoRequest, ListShardsRequest, Stream,
};
use streamcell_proto::records::{encode_batch, raw_record};
use streamcell_proto::HStreamApiClient;
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};

/// How long a started server gets to answer `Echo`.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one unary RPC (or opening a connection) may take before a benchmark gives up.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Highest latency the histograms track (60 s, in microseconds); larger values saturate.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// Why a benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad command-line arguments.
    #[error("invalid arguments: {0}")]
    Config(String),
    /// A local I/O operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A gRPC channel could not be opened.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The server address.
        addr: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// An RPC returned an error status.
    #[error("{what} failed: {code:?}: {message}", code = .status.code(), message = .status.message())]
    Rpc {
        /// Which call failed.
        what: String,
        /// The status the server (or tonic) returned.
        status: tonic::Status,
    },
    /// The server answered something the benchmark did not expect.
    #[error("{0}")]
    Protocol(String),
    /// A case made no progress for too long, or did not finish in time.
    #[error("stalled: {0}")]
    Stalled(String),
    /// The server process could not be started.
    #[error("server did not start: {0}")]
    ServerStart(String),
    /// A benchmark task panicked or was cancelled.
    #[error("benchmark task failed")]
    Task(#[from] tokio::task::JoinError),
    /// The JSON results could not be written.
    #[error("writing JSON results")]
    Json(#[from] serde_json::Error),
    /// Ctrl-C or SIGTERM.
    #[error("interrupted")]
    Interrupted,
}

/// `Result` with [`BenchError`].
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// Maps an I/O error to [`BenchError::Io`] with `context`.
pub fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let context = context.into();
    move |source| BenchError::Io { context, source }
}

/// Maps an error status of the RPC `what` to [`BenchError::Rpc`].
pub fn rpc_err(what: impl Into<String>) -> impl FnOnce(tonic::Status) -> BenchError {
    let what = what.into();
    move |status| BenchError::Rpc { what, status }
}

/// Runs `fut`, failing with [`BenchError::Stalled`] naming `what` if it takes longer than
/// `limit`.
pub async fn bounded<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| BenchError::Stalled(format!("{what} did not finish within {limit:?}")))?
}

/// A streamcell server started by the benchmark. Dropping it kills the process and then (by
/// dropping `dir`) deletes its data directory and log.
pub struct ServerGuard {
    child: Child,
    dir: TempDir,
}

impl ServerGuard {
    /// The server's combined stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        // Already exited is fine; nothing useful to do with a kill/wait error while dropping.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reserves `n` distinct free ports on 127.0.0.1 (all bound at once, then released).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io_err("binding 127.0.0.1:0 to find a free port"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io_err("reading a free port"))
}

/// The last `n` lines of the server log, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let Ok(file) = File::open(path) else {
        return String::from("(no server log)");
    };
    let lines: Vec<String> = BufReader::new(file).lines().map_while(|l| l.ok()).collect();
    let start = lines.len().saturating_sub(n);
    if lines.is_empty() {
        String::from("(server log is empty)")
    } else {
        lines[start..].join("\n")
    }
}

/// Opens a gRPC channel (one HTTP/2 connection) to `addr` (`HOST:PORT`), within
/// [`RPC_TIMEOUT`].
pub async fn connect(addr: &str) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| BenchError::Config(format!("bad address {addr:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    bounded(RPC_TIMEOUT, &format!("connecting to {addr}"), async {
        endpoint
            .connect()
            .await
            .map_err(|source| BenchError::Connect {
                addr: addr.to_owned(),
                source,
            })
    })
    .await
}

/// Connects to `addr` and calls `Echo` once, within [`RPC_TIMEOUT`].
pub async fn echo(addr: &str) -> Result<()> {
    let mut client = HStreamApiClient::new(connect(addr).await?);
    bounded(RPC_TIMEOUT, &format!("Echo to {addr}"), async {
        client
            .echo(EchoRequest { msg: "ping".into() })
            .await
            .map_err(rpc_err("Echo"))
    })
    .await?;
    Ok(())
}

/// Starts `<server_bin> server ...` on free ports with a fresh data dir and `--sync <sync>`,
/// and waits for `Echo`. Returns the guard and the gRPC address.
pub async fn start_server(server_bin: &Path, sync: &str) -> Result<(ServerGuard, String)> {
    if !server_bin.is_file() {
        return Err(BenchError::ServerStart(format!(
            "server binary {} not found: build it with `cargo build --release`, or pass \
             --server-bin PATH or --addr HOST:PORT",
            server_bin.display()
        )));
    }
    let ports = free_ports(3)?;
    let (port, pg_port, http_port) = (ports[0], ports[1], ports[2]);
    let dir = tempfile::Builder::new()
        .prefix("streamcell-bench-")
        .tempdir()
        .map_err(io_err("creating a temporary data directory"))?;
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).map_err(io_err(format!("creating {}", data_dir.display())))?;
    let log_path = dir.path().join("server.log");
    let log =
        File::create(&log_path).map_err(io_err(format!("creating {}", log_path.display())))?;
    let log_err = log
        .try_clone()
        .map_err(io_err("duplicating the log file handle"))?;

    let child = Command::new(server_bin)
        .arg("server")
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--bind", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .args(["--pg-port", &pg_port.to_string()])
        .args(["--http-port", &http_port.to_string()])
        .args(["--sync", sync])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(io_err(format!("starting {}", server_bin.display())))?;
    let mut guard = ServerGuard { child, dir };

    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(status) = guard
            .child
            .try_wait()
            .map_err(io_err("checking the server process"))?
        {
            return Err(BenchError::ServerStart(format!(
                "{} exited with {status} before answering Echo; last log lines:\n{}",
                server_bin.display(),
                log_tail(&guard.log_path(), 30)
            )));
        }
        match tokio::time::timeout(Duration::from_secs(2), echo(&addr)).await {
            Ok(Ok(())) => return Ok((guard, addr)),
            Ok(Err(_)) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => {
                return Err(BenchError::ServerStart(format!(
                    "no Echo answer on {addr} within {STARTUP_TIMEOUT:?} (last error: {e}); \
                     last log lines:\n{}",
                    log_tail(&guard.log_path(), 30)
                )))
            }
            Err(_) => {
                return Err(BenchError::ServerStart(format!(
                    "no Echo answer on {addr} within {STARTUP_TIMEOUT:?}; last log lines:\n{}",
                    log_tail(&guard.log_path(), 30)
                )))
            }
        }
    }
}

/// Creates stream `name` with `shards` shards (replication factor 1, no backlog limit) and
/// returns its shard ids as `ListShards` gives them. Each call is bounded by [`RPC_TIMEOUT`].
/// What every benchmark run starts with: the JSON output file (opened first, so that a bad
/// path fails before minutes of benchmarking) and the server to measure: the one at `addr`,
/// or one started from `server_bin` (its guard is returned; keep it alive longer than the
/// clients so that it is dropped, killing the server and deleting its data, last).
pub async fn prepare(
    json: Option<&Path>,
    addr: Option<&str>,
    server_bin: &Path,
    sync: &str,
) -> Result<(Option<std::fs::File>, Option<ServerGuard>, String)> {
    let json_file = match json {
        Some(path) => Some(
            std::fs::File::create(path).map_err(io_err(format!("creating {}", path.display())))?,
        ),
        None => None,
    };
    match addr {
        Some(addr) => {
            echo(addr).await?;
            Ok((json_file, None, addr.to_string()))
        }
        None => {
            let (guard, addr) = start_server(server_bin, sync).await?;
            Ok((json_file, Some(guard), addr))
        }
    }
}

/// Creates stream `name` with `shards` shards (replication 1, no retention); returns its
/// shard ids.
pub async fn create_stream(
    client: &mut HStreamApiClient<Channel>,
    name: &str,
    shards: u32,
) -> Result<Vec<u64>> {
    let what = format!("CreateStream {name}");
    bounded(RPC_TIMEOUT, &what, async {
        client
            .create_stream(Stream {
                stream_name: name.to_owned(),
                replication_factor: 1,
                backlog_duration: 0,
                shard_count: shards,
                creation_time: None,
            })
            .await
            .map_err(rpc_err(what.clone()))
    })
    .await?;
    list_shards(client, name).await
}

/// The shard ids of stream `name` as `ListShards` gives them (at least one). Bounded by
/// [`RPC_TIMEOUT`].
pub async fn list_shards(client: &mut HStreamApiClient<Channel>, name: &str) -> Result<Vec<u64>> {
    let what = format!("ListShards {name}");
    let shards = bounded(RPC_TIMEOUT, &what, async {
        client
            .list_shards(ListShardsRequest {
                stream_name: name.to_owned(),
            })
            .await
            .map_err(rpc_err(what.clone()))
    })
    .await?
    .into_inner()
    .shards;
    if shards.is_empty() {
        return Err(BenchError::Protocol(format!(
            "ListShards {name} returned no shards"
        )));
    }
    Ok(shards.into_iter().map(|s| s.shard_id).collect())
}

/// Force-deletes stream `name`; a failure (or no answer within [`RPC_TIMEOUT`]) is only a
/// warning on stderr (the data directory of a started server goes away anyway).
pub async fn delete_stream(client: &mut HStreamApiClient<Channel>, name: &str) {
    let request = client.delete_stream(DeleteStreamRequest {
        stream_name: name.to_owned(),
        ignore_non_exist: true,
        force: true,
    });
    match tokio::time::timeout(RPC_TIMEOUT, request).await {
        Ok(Ok(_)) => {}
        Ok(Err(status)) => eprintln!(
            "warning: DeleteStream {name} failed ({:?}: {}); continuing",
            status.code(),
            status.message()
        ),
        Err(_) => eprintln!(
            "warning: DeleteStream {name} did not answer within {RPC_TIMEOUT:?}; continuing"
        ),
    }
}

/// xorshift64*: cheap random-ish payload bytes, so payloads do not compress trivially.
pub struct XorShift(u64);

impl XorShift {
    /// A generator seeded with `seed` (any value, including 0).
    pub fn new(seed: u64) -> Self {
        // Any non-zero state works; mix the seed so neighbouring seeds diverge at once.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// `count` pre-encoded batches of `batch_size` RAW records of `record_size` random bytes each.
pub fn make_batches(
    seed: u64,
    record_size: usize,
    batch_size: u32,
    count: usize,
) -> Vec<BatchedRecord> {
    let mut rng = XorShift::new(seed);
    (0..count)
        .map(|_| {
            let records: Vec<_> = (0..batch_size)
                .map(|_| {
                    let mut payload = vec![0u8; record_size];
                    rng.fill(&mut payload);
                    raw_record("", payload)
                })
                .collect();
            encode_batch(&records)
        })
        .collect()
}

/// A histogram of latencies in microseconds, 1 µs to [`MAX_LATENCY_US`], 3 significant digits.
#[allow(
    clippy::expect_used,
    reason = "the bounds are constants that hdrhistogram accepts"
)]
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// Records `latency` (saturating at [`MAX_LATENCY_US`], at least 1 µs) into `h`.
pub fn record_latency(h: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    h.saturating_record(us.max(1));
}

/// Merges `from` into `into` (both made by [`new_histogram`]).
#[allow(
    clippy::expect_used,
    reason = "histograms of the same bounds always merge"
)]
pub fn merge_histogram(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    into.add(from)
        .expect("histograms with the same bounds always merge");
}

/// A latency summary in milliseconds (all 0 for an empty histogram).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl LatencyMs {
    /// Summarises a histogram of microseconds made by [`new_histogram`].
    pub fn from_us(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self {
                p50: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// Runs the benchmark future `run` on a new multi-threaded tokio runtime, stopping it on
/// Ctrl-C, and turns the outcome into an exit code. A failure is printed as `<name>: <error>:
/// <cause>: ...` on stderr.
pub fn main_with<F>(name: &str, run: F) -> ExitCode
where
    F: Future<Output = Result<()>>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        // Dropping `run` on Ctrl-C or SIGTERM (a wrapping script stopped) drops its servers'
        // guards: the servers are killed, their directories deleted.
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            r = run => r,
            _ = tokio::signal::ctrl_c() => Err(BenchError::Interrupted),
            _ = terminate => Err(BenchError::Interrupted),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// CPU time (user + system, seconds) that process `pid` (`None`: this process) has used so
/// far, from `/proc/<pid>/stat`; `None` where that is not readable (not Linux, process gone).
/// Assumes the usual 100 clock ticks per second.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    const TICKS_PER_SEC: f64 = 100.0;
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => String::from("/proc/self/stat"),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// `e` and all its sources joined with `": "` (tonic's transport errors say little at the top
/// level).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
