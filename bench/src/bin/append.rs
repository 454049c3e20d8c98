//! `append`: durable append throughput of a real streamcell server, driven through the HStreamDB
//! gRPC API (`hstream.server.HStreamApi/Append`) with the generated tonic client.
//!
//! By default it starts `target/release/streamcell server` itself on free 127.0.0.1 ports with a
//! fresh temporary data directory and `--sync always`, waits until the gRPC port answers `Echo`,
//! and kills the server and deletes the directory at the end (also on error or Ctrl-C). With
//! `--addr HOST:PORT` it uses an already running server instead.
//!
//! For every (record size, batch size) case it creates a fresh stream, runs `--concurrency`
//! tasks over `--connections` gRPC channels that each loop `Append` (one batch of N RAW records
//! per call), and after a 1 s warm-up counts, for `--seconds`, the appends acknowledged in the
//! window and their ack latencies (HdrHistogram, microseconds). It prints records/s, payload
//! MB/s (10^6 bytes of record payload, not wire bytes) and p50/p99/p99.9 ack latency, and can
//! write the same as JSON.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use serde::Serialize;
use streamcell_proto::api::{
    AppendRequest, BatchedRecord, DeleteStreamRequest, EchoRequest, ListShardsRequest, Stream,
};
use streamcell_proto::records::{encode_batch, raw_record};
use streamcell_proto::HStreamApiClient;
use tempfile::TempDir;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

/// Warm-up before each case's measurement window; appends acked during it are not counted.
const WARMUP: Duration = Duration::from_secs(1);
/// How long a started server gets to answer `Echo`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Distinct pre-encoded batches per task, rotated so consecutive appends differ.
const BATCHES_PER_TASK: usize = 4;
/// Highest latency the histograms track (60 s, in microseconds); larger values saturate.
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "append",
    about = "Durable append throughput of a streamcell server over the HStreamDB gRPC API"
)]
struct Args {
    /// streamcell server binary to start (ignored with --addr).
    #[arg(long, default_value = "target/release/streamcell")]
    server_bin: PathBuf,
    /// Use an already running server at HOST:PORT instead of starting one.
    #[arg(long)]
    addr: Option<String>,
    /// Measured seconds per case (after a 1 s warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Record payload sizes in bytes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1024")]
    record_sizes: Vec<usize>,
    /// Records per Append call, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    batch_sizes: Vec<u32>,
    /// Appends in flight at once (one task each).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// gRPC channels (HTTP/2 connections) the tasks are spread over.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Shards of each benchmark stream; tasks are spread over them.
    #[arg(long, default_value_t = 1)]
    shards: u32,
    /// `--sync` mode passed to a server this benchmark starts.
    #[arg(long, default_value = "always")]
    sync: String,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("invalid arguments: {0}")]
    Config(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{what} failed: {code:?}: {message}", code = .status.code(), message = .status.message())]
    Rpc { what: String, status: tonic::Status },
    #[error("{0}")]
    Protocol(String),
    #[error("server did not start: {0}")]
    ServerStart(String),
    #[error("benchmark task failed")]
    Task(#[from] tokio::task::JoinError),
    #[error("writing JSON results")]
    Json(#[from] serde_json::Error),
    #[error("interrupted")]
    Interrupted,
}

type Result<T, E = BenchError> = std::result::Result<T, E>;

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let context = context.into();
    move |source| BenchError::Io { context, source }
}

/// A streamcell server started by the benchmark. Dropping it kills the process and then (by
/// dropping `dir`) deletes its data directory and log.
struct ServerGuard {
    child: Child,
    dir: TempDir,
}

impl ServerGuard {
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
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
fn free_ports(n: usize) -> Result<Vec<u16>> {
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
fn log_tail(path: &Path, n: usize) -> String {
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

async fn connect(addr: &str) -> Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| BenchError::Config(format!("bad address {addr:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|source| BenchError::Connect {
            addr: addr.to_owned(),
            source,
        })
}

async fn echo(addr: &str) -> Result<()> {
    let mut client = HStreamApiClient::new(connect(addr).await?);
    client
        .echo(EchoRequest { msg: "ping".into() })
        .await
        .map_err(|status| BenchError::Rpc {
            what: "Echo".into(),
            status,
        })?;
    Ok(())
}

/// Starts `<server-bin> server ...` on free ports with a fresh data dir and waits for `Echo`.
async fn start_server(args: &Args) -> Result<(ServerGuard, String)> {
    if !args.server_bin.is_file() {
        return Err(BenchError::ServerStart(format!(
            "server binary {} not found: build it with `cargo build --release`, or pass \
             --server-bin PATH or --addr HOST:PORT",
            args.server_bin.display()
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

    let child = Command::new(&args.server_bin)
        .arg("server")
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--bind", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .args(["--pg-port", &pg_port.to_string()])
        .args(["--http-port", &http_port.to_string()])
        .args(["--sync", &args.sync])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(io_err(format!("starting {}", args.server_bin.display())))?;
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
                args.server_bin.display(),
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

/// xorshift64*: cheap random-ish payload bytes, so payloads do not compress trivially.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Any non-zero state works; mix the seed so neighbouring seeds diverge at once.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// `count` pre-encoded batches of `batch_size` RAW records of `record_size` random bytes each.
fn make_batches(
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

/// What one append task saw inside the measurement window.
struct TaskStats {
    appends: u64,
    records: u64,
    payload_bytes: u64,
    latency_us: Histogram<u64>,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

struct TaskPlan {
    client: HStreamApiClient<Channel>,
    stream: String,
    shard_id: u64,
    batches: Vec<BatchedRecord>,
    batch_size: u32,
    record_size: usize,
    measure_start: Instant,
    measure_end: Instant,
}

/// Loops `Append` until `measure_end`; counts the appends acknowledged inside
/// `[measure_start, measure_end]`.
async fn append_task(mut p: TaskPlan) -> Result<TaskStats> {
    let mut stats = TaskStats {
        appends: 0,
        records: 0,
        payload_bytes: 0,
        latency_us: new_histogram(),
    };
    let mut i = 0usize;
    while Instant::now() < p.measure_end {
        let request = AppendRequest {
            stream_name: p.stream.clone(),
            shard_id: p.shard_id,
            records: Some(p.batches[i % p.batches.len()].clone()),
        };
        i += 1;
        let sent = Instant::now();
        let response = p
            .client
            .append(request)
            .await
            .map_err(|status| BenchError::Rpc {
                what: format!("Append to stream {} shard {}", p.stream, p.shard_id),
                status,
            })?
            .into_inner();
        let acked = Instant::now();
        if response.record_ids.len() != p.batch_size as usize {
            return Err(BenchError::Protocol(format!(
                "Append to stream {} shard {} returned {} record ids for a batch of {}",
                p.stream,
                p.shard_id,
                response.record_ids.len(),
                p.batch_size
            )));
        }
        if acked >= p.measure_start && acked <= p.measure_end {
            let us = u64::try_from((acked - sent).as_micros()).unwrap_or(u64::MAX);
            stats.latency_us.saturating_record(us.max(1));
            stats.appends += 1;
            stats.records += u64::from(p.batch_size);
            stats.payload_bytes += u64::from(p.batch_size) * p.record_size as u64;
        }
    }
    Ok(stats)
}

#[derive(Serialize)]
struct LatencyMs {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
}

#[derive(Serialize)]
struct CaseResult {
    record_size: usize,
    batch_size: u32,
    seconds: f64,
    appends: u64,
    records: u64,
    payload_bytes: u64,
    records_per_sec: f64,
    payload_mb_per_sec: f64,
    ack_latency_ms: LatencyMs,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    server_addr: String,
    server_started_by_bench: bool,
    /// `--sync` given to the server; `None` for an external server (unknown).
    sync: Option<String>,
    concurrency: usize,
    connections: usize,
    shards: u32,
    warmup_seconds: f64,
    results: Vec<CaseResult>,
}

async fn run_case(
    clients: &[HStreamApiClient<Channel>],
    args: &Args,
    case: usize,
    record_size: usize,
    batch_size: u32,
) -> Result<CaseResult> {
    let mut admin = clients[0].clone();
    let stream = format!(
        "bench_append_{}_{case}_{record_size}b_x{batch_size}",
        std::process::id()
    );
    admin
        .create_stream(Stream {
            stream_name: stream.clone(),
            replication_factor: 1,
            backlog_duration: 0,
            shard_count: args.shards,
            creation_time: None,
        })
        .await
        .map_err(|status| BenchError::Rpc {
            what: format!("CreateStream {stream}"),
            status,
        })?;
    let shards = admin
        .list_shards(ListShardsRequest {
            stream_name: stream.clone(),
        })
        .await
        .map_err(|status| BenchError::Rpc {
            what: format!("ListShards {stream}"),
            status,
        })?
        .into_inner()
        .shards;
    if shards.is_empty() {
        return Err(BenchError::Protocol(format!(
            "ListShards {stream} returned no shards"
        )));
    }

    let measure_start = Instant::now() + WARMUP;
    let measure_end = measure_start + Duration::from_secs(args.seconds);
    let mut tasks = JoinSet::new();
    for t in 0..args.concurrency {
        let seed = ((case as u64) << 32) | t as u64;
        tasks.spawn(append_task(TaskPlan {
            client: clients[t % clients.len()].clone(),
            stream: stream.clone(),
            shard_id: shards[t % shards.len()].shard_id,
            batches: make_batches(seed, record_size, batch_size, BATCHES_PER_TASK),
            batch_size,
            record_size,
            measure_start,
            measure_end,
        }));
    }

    let mut latency = new_histogram();
    let (mut appends, mut records, mut payload_bytes) = (0u64, 0u64, 0u64);
    while let Some(joined) = tasks.join_next().await {
        // On the first error the JoinSet is dropped, which aborts the other tasks.
        let stats = joined??;
        appends += stats.appends;
        records += stats.records;
        payload_bytes += stats.payload_bytes;
        latency
            .add(&stats.latency_us)
            .expect("histograms with the same bounds always merge");
    }

    if let Err(status) = admin
        .delete_stream(DeleteStreamRequest {
            stream_name: stream.clone(),
            ignore_non_exist: true,
            force: true,
        })
        .await
    {
        eprintln!(
            "warning: DeleteStream {stream} failed ({:?}: {}); continuing",
            status.code(),
            status.message()
        );
    }

    let secs = (measure_end - measure_start).as_secs_f64();
    let ms = |us: u64| us as f64 / 1000.0;
    let quantile = |q: f64| {
        if latency.is_empty() {
            0.0
        } else {
            ms(latency.value_at_quantile(q))
        }
    };
    Ok(CaseResult {
        record_size,
        batch_size,
        seconds: secs,
        appends,
        records,
        payload_bytes,
        records_per_sec: records as f64 / secs,
        payload_mb_per_sec: payload_bytes as f64 / secs / 1e6,
        ack_latency_ms: LatencyMs {
            p50: quantile(0.50),
            p99: quantile(0.99),
            p999: quantile(0.999),
            max: if latency.is_empty() {
                0.0
            } else {
                ms(latency.max())
            },
            mean: if latency.is_empty() {
                0.0
            } else {
                latency.mean() / 1000.0
            },
        },
    })
}

fn validate(args: &Args) -> Result<()> {
    let bad = |m: &str| Err(BenchError::Config(m.to_owned()));
    if args.seconds == 0 {
        return bad("--seconds must be at least 1");
    }
    if args.concurrency == 0 || args.connections == 0 || args.shards == 0 {
        return bad("--concurrency, --connections and --shards must be at least 1");
    }
    if args.record_sizes.is_empty() || args.batch_sizes.is_empty() {
        return bad("--record-sizes and --batch-sizes need at least one value");
    }
    if args.batch_sizes.contains(&0) {
        return bad("--batch-sizes must be at least 1 (the server rejects empty batches)");
    }
    Ok(())
}

fn print_header() {
    println!(
        "{:>8} {:>6} {:>12} {:>9} {:>9} {:>9} {:>9}",
        "record_B", "batch", "records/s", "MB/s", "p50_ms", "p99_ms", "p999_ms"
    );
}

fn print_row(r: &CaseResult) {
    println!(
        "{:>8} {:>6} {:>12.0} {:>9.2} {:>9.3} {:>9.3} {:>9.3}",
        r.record_size,
        r.batch_size,
        r.records_per_sec,
        r.payload_mb_per_sec,
        r.ack_latency_ms.p50,
        r.ack_latency_ms.p99,
        r.ack_latency_ms.p999
    );
}

async fn run(args: Args) -> Result<()> {
    validate(&args)?;
    // Open the JSON file first so a bad path fails before minutes of benchmarking.
    let json_file = match &args.json {
        Some(path) => {
            Some(File::create(path).map_err(io_err(format!("creating {}", path.display())))?)
        }
        None => None,
    };
    // Declared before the clients so it is dropped (server killed, dir deleted) last.
    let (server, addr) = match &args.addr {
        Some(addr) => {
            echo(addr).await?;
            (None, addr.clone())
        }
        None => {
            let (guard, addr) = start_server(&args).await?;
            (Some(guard), addr)
        }
    };
    let started = server.is_some();

    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        clients.push(HStreamApiClient::new(connect(&addr).await?));
    }

    println!(
        "append benchmark: server {addr} ({}), sync={}, concurrency={}, connections={}, \
         shards={}, {} s per case after {} s warm-up",
        if started {
            "started by the bench"
        } else {
            "external"
        },
        if started {
            args.sync.as_str()
        } else {
            "unknown"
        },
        args.concurrency,
        args.connections,
        args.shards,
        args.seconds,
        WARMUP.as_secs()
    );
    print_header();
    let mut results = Vec::new();
    for &record_size in &args.record_sizes {
        for &batch_size in &args.batch_sizes {
            let r = run_case(&clients, &args, results.len(), record_size, batch_size).await?;
            print_row(&r);
            results.push(r);
        }
    }

    if let (Some(file), Some(path)) = (json_file, &args.json) {
        let report = Report {
            benchmark: "append",
            server_addr: addr.clone(),
            server_started_by_bench: started,
            sync: started.then(|| args.sync.clone()),
            concurrency: args.concurrency,
            connections: args.connections,
            shards: args.shards,
            warmup_seconds: WARMUP.as_secs_f64(),
            results,
        };
        serde_json::to_writer_pretty(std::io::BufWriter::new(file), &report)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("append: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        // Dropping `run` on Ctrl-C drops its ServerGuard: the server is killed, the dir deleted.
        tokio::select! {
            r = run(args) => r,
            _ = tokio::signal::ctrl_c() => Err(BenchError::Interrupted),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Print the whole cause chain: tonic's transport errors say little at the top level.
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            eprintln!("append: {message}");
            ExitCode::FAILURE
        }
    }
}
