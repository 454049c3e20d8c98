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

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use serde::Serialize;
use streamcell_bench::{
    connect, create_stream, delete_stream, make_batches, merge_histogram, new_histogram, prepare,
    record_latency, BenchError, LatencyMs, Result,
};
use streamcell_proto::api::{AppendRequest, BatchedRecord};
use streamcell_proto::HStreamApiClient;
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// Warm-up before each case's measurement window; appends acked during it are not counted.
const WARMUP: Duration = Duration::from_secs(1);
/// Distinct pre-encoded batches per task, rotated so consecutive appends differ.
const BATCHES_PER_TASK: usize = 4;

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

/// What one append task saw inside the measurement window.
struct TaskStats {
    appends: u64,
    records: u64,
    payload_bytes: u64,
    latency_us: Histogram<u64>,
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
            record_latency(&mut stats.latency_us, acked - sent);
            stats.appends += 1;
            stats.records += u64::from(p.batch_size);
            stats.payload_bytes += u64::from(p.batch_size) * p.record_size as u64;
        }
    }
    Ok(stats)
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
    let shards = create_stream(&mut admin, &stream, args.shards).await?;

    let measure_start = Instant::now() + WARMUP;
    let measure_end = measure_start + Duration::from_secs(args.seconds);
    let mut tasks = JoinSet::new();
    for t in 0..args.concurrency {
        let seed = ((case as u64) << 32) | t as u64;
        tasks.spawn(append_task(TaskPlan {
            client: clients[t % clients.len()].clone(),
            stream: stream.clone(),
            shard_id: shards[t % shards.len()],
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
        merge_histogram(&mut latency, &stats.latency_us);
    }

    delete_stream(&mut admin, &stream).await;

    let secs = (measure_end - measure_start).as_secs_f64();
    Ok(CaseResult {
        record_size,
        batch_size,
        seconds: secs,
        appends,
        records,
        payload_bytes,
        records_per_sec: records as f64 / secs,
        payload_mb_per_sec: payload_bytes as f64 / secs / 1e6,
        ack_latency_ms: LatencyMs::from_us(&latency),
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
    // The server guard is declared before the clients so that it is dropped last.
    let (json_file, server, addr) = prepare(
        args.json.as_deref(),
        args.addr.as_deref(),
        &args.server_bin,
        &args.sync,
    )
    .await?;
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
    streamcell_bench::main_with("append", run(args))
}
