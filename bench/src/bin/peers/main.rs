//! `peers`: StreamCell side by side with Redis Streams and NATS JetStream, one load shape for
//! all three, each server started by the benchmark on a fresh directory for every case.
//!
//! - `peers append`: durable append. `--concurrency` tasks over `--connections` connections
//!   each send a batch of `--batch-sizes` records of `--record-sizes` bytes and wait until every
//!   record of it is acknowledged (StreamCell: one `Append`; Redis: a pipeline of `XADD`s;
//!   NATS: one JetStream publish per record, then their acks), then send the next. After a
//!   1 s warm-up, records acknowledged in the `--seconds` window count; latency is a batch's
//!   send-to-last-ack time. Every system runs in each `--durability` mode (see servers.rs).
//! - `peers consume`: consume with acks. A fresh server is filled with `--records` records
//!   (not timed), then one consumer reads them all from the start and acknowledges them.
//! - `peers footprint`: binary size, cold start (spawn → first answer, median of 3), idle RSS,
//!   and recovery after `kill -9` with `--log-mib` MiB of acknowledged log.
//!
//! Each writes its results as JSON (`--json`); `bench/report.py` turns them into
//! `bench/RESULTS.md` and charts. Timed numbers are measurements, never assertions.

mod clients;
mod servers;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use serde::Serialize;
use streamcell_bench::{
    merge_histogram, new_histogram, record_latency, BenchError, LatencyMs, Result,
};
use tokio::task::JoinSet;

use clients::{create_log, make_batches, Batch, Producer};
use servers::{Bins, Durability, Server, System};

/// Warm-up before each append case's measurement window.
const WARMUP: Duration = Duration::from_secs(1);
/// Distinct batches per task, rotated.
const BATCHES_PER_TASK: usize = 4;

#[derive(Parser, Debug)]
#[command(
    name = "peers",
    about = "StreamCell side by side with Redis Streams and NATS JetStream"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    what: What,
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// The streamcell binary.
    #[arg(long, global = true, default_value = "target/release/streamcell")]
    streamcell_bin: PathBuf,
    /// The redis-server binary (a bare name is looked up on PATH).
    #[arg(long, global = true, default_value = "redis-server")]
    redis_bin: PathBuf,
    /// The nats-server binary (a bare name is looked up on PATH).
    #[arg(long, global = true, default_value = "nats-server")]
    nats_bin: PathBuf,
    /// Systems to measure, comma separated.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "streamcell,redis,nats"
    )]
    systems: Vec<System>,
    /// Write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Durable append: records/s and ack latency.
    Append(AppendArgs),
    /// Consume a filled log from the start with acknowledgements.
    Consume(ConsumeArgs),
    /// Binary size, cold start, idle RSS, recovery after kill -9.
    Footprint(FootprintArgs),
}

#[derive(Args, Debug)]
struct AppendArgs {
    /// Durability modes, comma separated (fsync, os, memory).
    #[arg(long, value_delimiter = ',', default_value = "fsync,os,memory")]
    durability: Vec<Durability>,
    /// Record payload sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "100,1024")]
    record_sizes: Vec<usize>,
    /// Records per batch.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    batch_sizes: Vec<usize>,
    /// Measured seconds per case (after a 1 s warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Batches in flight at once (one task each).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Client connections the tasks are spread over.
    #[arg(long, default_value_t = 2)]
    connections: usize,
}

#[derive(Args, Debug)]
struct ConsumeArgs {
    /// Durability modes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "os")]
    durability: Vec<Durability>,
    /// Records in the log.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Record payload size in bytes.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Records per fetch (Redis COUNT, NATS batch; StreamCell's server sends its own batches,
    /// which are the appended batches: the fill appends batches of this size).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Unacknowledged records allowed in flight (StreamCell maxUnackedRecords, NATS
    /// max_ack_pending; Redis has no such limit).
    #[arg(long, default_value_t = 10_000)]
    window: usize,
}

#[derive(Args, Debug)]
struct FootprintArgs {
    /// MiB of record payload to append before `kill -9` (1 KiB records).
    #[arg(long, default_value_t = 1024)]
    log_mib: u64,
    /// Durability mode of the recovery case. `os` by default: each system's recommended mode
    /// for Redis and NATS, and NATS with `fsync` fills at a few MB/s (one fsync per message).
    /// `kill -9` ends the process, not the machine, so what reached the OS survives either way.
    #[arg(long, default_value = "os")]
    durability: Durability,
    /// Seconds to let a fresh server sit idle before reading its RSS.
    #[arg(long, default_value_t = 3)]
    idle_seconds: u64,
}

fn bins(c: &Common) -> Bins {
    Bins {
        streamcell: c.streamcell_bin.clone(),
        redis: c.redis_bin.clone(),
        nats: c.nats_bin.clone(),
    }
}

#[derive(Serialize)]
struct Versions {
    streamcell: String,
    redis: String,
    nats: String,
}

fn versions(b: &Bins) -> Versions {
    Versions {
        streamcell: b.version(System::StreamCell),
        redis: b.version(System::Redis),
        nats: b.version(System::Nats),
    }
}

/// CPU seconds this process (the clients) has used so far.
fn own_cpu_seconds() -> f64 {
    streamcell_bench::cpu_seconds(None).unwrap_or(0.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// Load

/// What one producer task saw inside the measurement window.
struct TaskStats {
    records: u64,
    latency_us: Histogram<u64>,
    last: clients::Acked,
}

/// Sends batches in a loop until `end`, counting acks inside `[start, end]`.
async fn produce(
    mut producer: Producer,
    batches: Vec<Batch>,
    start: Instant,
    end: Instant,
) -> Result<TaskStats> {
    let mut stats = TaskStats {
        records: 0,
        latency_us: new_histogram(),
        last: clients::Acked::default(),
    };
    let mut i = 0;
    while Instant::now() < end {
        let batch = &batches[i % batches.len()];
        i += 1;
        let sent = Instant::now();
        stats.last = producer.send(batch).await?;
        let acked = Instant::now();
        if acked >= start && acked <= end {
            record_latency(&mut stats.latency_us, acked - sent);
            stats.records += batch.len() as u64;
        }
    }
    Ok(stats)
}

/// Sends exactly `batches_each` batches per task (for filling a log); returns the records
/// acknowledged and the highest StreamCell batch id.
async fn fill(
    server: &Server,
    record_size: usize,
    batch_size: usize,
    batches_each: u64,
    tasks: usize,
    connections: usize,
) -> Result<(u64, u64)> {
    let producers = connect_producers(server, connections).await?;
    let mut set = JoinSet::new();
    for t in 0..tasks {
        let mut producer = producers[t % producers.len()].clone();
        let batches = make_batches(t as u64 + 1000, record_size, batch_size, BATCHES_PER_TASK);
        set.spawn(async move {
            let (mut records, mut last) = (0u64, 0u64);
            for i in 0..batches_each {
                let batch = &batches[i as usize % batches.len()];
                last = last.max(producer.send(batch).await?.batch_id);
                records += batch.len() as u64;
            }
            Ok::<_, BenchError>((records, last))
        });
    }
    let (mut records, mut last) = (0, 0);
    while let Some(joined) = set.join_next().await {
        let (r, l) = joined.map_err(|e| BenchError::Protocol(format!("fill task: {e}")))??;
        records += r;
        last = last.max(l);
    }
    Ok((records, last))
}

async fn connect_producers(server: &Server, connections: usize) -> Result<Vec<Producer>> {
    let mut producers = Vec::new();
    for _ in 0..connections.max(1) {
        producers.push(Producer::connect(server).await?);
    }
    Ok(producers)
}

// ---------------------------------------------------------------------------------------------
// append

#[derive(Serialize)]
struct AppendCase {
    system: &'static str,
    durability: &'static str,
    setting: &'static str,
    record_size: usize,
    batch_size: usize,
    records: u64,
    records_per_s: f64,
    payload_mb_per_s: f64,
    ack_latency_ms: LatencyMs,
    /// Server CPU seconds per second over warm-up and window.
    server_cpu_cores: f64,
    /// This benchmark process's CPU seconds per second (the clients), over the same time.
    client_cpu_cores: f64,
    server_peak_rss_mib: f64,
    /// Bytes in the data directory at the end (payload written: records × record size).
    data_bytes: u64,
    error: Option<String>,
}

#[derive(Serialize)]
struct AppendReport {
    benchmark: &'static str,
    seconds: u64,
    warmup_seconds: f64,
    concurrency: usize,
    connections: usize,
    versions: Versions,
    cases: Vec<AppendCase>,
}

async fn append_case(
    bins: &Bins,
    a: &AppendArgs,
    system: System,
    durability: Durability,
    record_size: usize,
    batch_size: usize,
) -> Result<AppendCase> {
    let (server, _) = Server::start(system, durability, bins).await?;
    create_log(&server).await?;
    let producers = connect_producers(&server, a.connections).await?;
    let cpu0 = server.cpu_seconds();
    let client0 = own_cpu_seconds();
    let t0 = Instant::now();
    let start = t0 + WARMUP;
    let end = start + Duration::from_secs(a.seconds);
    let mut set = JoinSet::new();
    for t in 0..a.concurrency {
        let batches = make_batches(t as u64, record_size, batch_size, BATCHES_PER_TASK);
        set.spawn(produce(
            producers[t % producers.len()].clone(),
            batches,
            start,
            end,
        ));
    }
    let mut latency = new_histogram();
    let mut records = 0;
    while let Some(joined) = set.join_next().await {
        let s = joined.map_err(|e| BenchError::Protocol(format!("producer task: {e}")))??;
        records += s.records;
        merge_histogram(&mut latency, &s.latency_us);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (server.cpu_seconds() - cpu0) / elapsed;
    let client_cpu = (own_cpu_seconds() - client0) / elapsed;
    let secs = a.seconds as f64;
    Ok(AppendCase {
        system: system.name(),
        durability: durability.name(),
        setting: durability.setting(system),
        record_size,
        batch_size,
        records,
        records_per_s: records as f64 / secs,
        payload_mb_per_s: (records * record_size as u64) as f64 / secs / 1e6,
        ack_latency_ms: LatencyMs::from_us(&latency),
        server_cpu_cores: cpu,
        client_cpu_cores: client_cpu,
        server_peak_rss_mib: mib(server.rss_kib().1),
        data_bytes: server.data_bytes(),
        error: None,
    })
}

async fn run_append(c: &Common, a: &AppendArgs) -> Result<()> {
    let bins = bins(c);
    let mut cases = Vec::new();
    for &record_size in &a.record_sizes {
        for &batch_size in &a.batch_sizes {
            for &durability in &a.durability {
                for &system in &c.systems {
                    let label = format!(
                        "append {system} {} {record_size} B x {batch_size}",
                        durability.name()
                    );
                    let case =
                        match append_case(&bins, a, system, durability, record_size, batch_size)
                            .await
                        {
                            Ok(case) => case,
                            Err(e) => {
                                eprintln!("{label}: failed: {e}");
                                AppendCase {
                                    system: system.name(),
                                    durability: durability.name(),
                                    setting: durability.setting(system),
                                    record_size,
                                    batch_size,
                                    records: 0,
                                    records_per_s: 0.0,
                                    payload_mb_per_s: 0.0,
                                    ack_latency_ms: LatencyMs::from_us(&new_histogram()),
                                    server_cpu_cores: 0.0,
                                    client_cpu_cores: 0.0,
                                    server_peak_rss_mib: 0.0,
                                    data_bytes: 0,
                                    error: Some(e.to_string()),
                                }
                            }
                        };
                    if case.error.is_none() {
                        println!(
                            "{label:<40} {:>12.0} rec/s {:>8.1} MB/s  p50 {:>7.2} ms  p99 {:>7.2} ms  cpu {:.2} (client {:.2})  rss {:.0} MiB",
                            case.records_per_s,
                            case.payload_mb_per_s,
                            case.ack_latency_ms.p50,
                            case.ack_latency_ms.p99,
                            case.server_cpu_cores,
                            case.client_cpu_cores,
                            case.server_peak_rss_mib
                        );
                    }
                    cases.push(case);
                }
            }
        }
    }
    write_json(
        c,
        &AppendReport {
            benchmark: "append",
            seconds: a.seconds,
            warmup_seconds: WARMUP.as_secs_f64(),
            concurrency: a.concurrency,
            connections: a.connections,
            versions: versions(&bins),
            cases,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// consume

#[derive(Serialize)]
struct ConsumeCase {
    system: &'static str,
    durability: &'static str,
    setting: &'static str,
    records: u64,
    fill_records_per_s: f64,
    records_per_s: f64,
    payload_mb_per_s: f64,
    seconds: f64,
    confirmed_seconds: f64,
    server_cpu_cores: f64,
    client_cpu_cores: f64,
    error: Option<String>,
}

#[derive(Serialize)]
struct ConsumeReport {
    benchmark: &'static str,
    records: u64,
    record_size: usize,
    batch: usize,
    window: usize,
    versions: Versions,
    cases: Vec<ConsumeCase>,
}

async fn consume_case(
    bins: &Bins,
    a: &ConsumeArgs,
    system: System,
    durability: Durability,
) -> Result<ConsumeCase> {
    let (server, _) = Server::start(system, durability, bins).await?;
    create_log(&server).await?;
    let tasks = 8u64;
    let batches_each = a.records.div_ceil(a.batch as u64 * tasks);
    let t = Instant::now();
    let (filled, last_batch) = fill(
        &server,
        a.record_size,
        a.batch,
        batches_each,
        tasks as usize,
        2,
    )
    .await?;
    let fill_rate = filled as f64 / t.elapsed().as_secs_f64();
    let cpu0 = server.cpu_seconds();
    let client0 = own_cpu_seconds();
    let done = clients::consume(&server, filled, a.batch, a.window, last_batch).await?;
    let cpu = (server.cpu_seconds() - cpu0) / done.confirmed_seconds.max(1e-9);
    let client_cpu = (own_cpu_seconds() - client0) / done.confirmed_seconds.max(1e-9);
    if done.records != filled {
        return Err(BenchError::Protocol(format!(
            "filled {filled} records but consumed {}",
            done.records
        )));
    }
    Ok(ConsumeCase {
        system: system.name(),
        durability: durability.name(),
        setting: durability.setting(system),
        records: done.records,
        fill_records_per_s: fill_rate,
        records_per_s: done.records as f64 / done.seconds,
        payload_mb_per_s: done.payload_bytes as f64 / done.seconds / 1e6,
        seconds: done.seconds,
        confirmed_seconds: done.confirmed_seconds,
        server_cpu_cores: cpu,
        client_cpu_cores: client_cpu,
        error: None,
    })
}

async fn run_consume(c: &Common, a: &ConsumeArgs) -> Result<()> {
    let bins = bins(c);
    let mut cases = Vec::new();
    for &durability in &a.durability {
        for &system in &c.systems {
            let label = format!("consume {system} {}", durability.name());
            let case = match consume_case(&bins, a, system, durability).await {
                Ok(case) => {
                    println!(
                        "{label:<28} {:>12.0} rec/s {:>8.1} MB/s  all acked after {:.2} s  cpu {:.2} (client {:.2})  (fill {:.0} rec/s)",
                        case.records_per_s,
                        case.payload_mb_per_s,
                        case.confirmed_seconds,
                        case.server_cpu_cores,
                        case.client_cpu_cores,
                        case.fill_records_per_s
                    );
                    case
                }
                Err(e) => {
                    eprintln!("{label}: failed: {e}");
                    ConsumeCase {
                        system: system.name(),
                        durability: durability.name(),
                        setting: durability.setting(system),
                        records: 0,
                        fill_records_per_s: 0.0,
                        records_per_s: 0.0,
                        payload_mb_per_s: 0.0,
                        seconds: 0.0,
                        confirmed_seconds: 0.0,
                        server_cpu_cores: 0.0,
                        client_cpu_cores: 0.0,
                        error: Some(e.to_string()),
                    }
                }
            };
            cases.push(case);
        }
    }
    write_json(
        c,
        &ConsumeReport {
            benchmark: "consume",
            records: a.records,
            record_size: a.record_size,
            batch: a.batch,
            window: a.window,
            versions: versions(&bins),
            cases,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// footprint

#[derive(Serialize)]
struct Recovery {
    durability: &'static str,
    setting: &'static str,
    records_acked: u64,
    payload_bytes: u64,
    fill_seconds: f64,
    data_bytes: u64,
    rss_after_fill_mib: f64,
    /// Spawn after `kill -9` → first answer.
    ready_seconds: f64,
    /// Spawn after `kill -9` → the whole acknowledged log visible (count or tail checked).
    recovered_seconds: f64,
    /// What the server holds after the restart (Redis, NATS: records; StreamCell: the tail
    /// batch id, against the last acknowledged one).
    check: String,
    rss_after_recovery_mib: f64,
}

#[derive(Serialize)]
struct Footprint {
    system: &'static str,
    binary: String,
    binary_bytes: u64,
    /// The same file after `strip` (a copy; `None` where `strip` is not installed).
    stripped_bytes: Option<u64>,
    cold_start_ms: Vec<f64>,
    cold_start_ms_median: f64,
    idle_rss_mib: f64,
    recovery: Option<Recovery>,
    error: Option<String>,
}

#[derive(Serialize)]
struct FootprintReport {
    benchmark: &'static str,
    log_mib: u64,
    idle_seconds: u64,
    versions: Versions,
    systems: Vec<Footprint>,
}

async fn footprint(bins: &Bins, a: &FootprintArgs, system: System) -> Result<Footprint> {
    let binary = bins.resolve(system)?;
    let binary_bytes = std::fs::metadata(&binary)
        .map_err(streamcell_bench::io_err(format!(
            "reading {}",
            binary.display()
        )))?
        .len();
    let stripped_bytes = stripped_size(&binary);
    let mut cold = Vec::new();
    let mut idle_rss = 0.0;
    for i in 0..3 {
        let (server, ready) = Server::start(system, Durability::Fsync, bins).await?;
        cold.push(ready.as_secs_f64() * 1e3);
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(a.idle_seconds)).await;
            idle_rss = mib(server.rss_kib().0);
        }
    }
    let mut sorted = cold.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];

    let recovery = if a.log_mib > 0 {
        Some(recovery(bins, a, system).await?)
    } else {
        None
    };
    Ok(Footprint {
        system: system.name(),
        binary: binary.display().to_string(),
        binary_bytes,
        stripped_bytes,
        cold_start_ms: cold,
        cold_start_ms_median: median,
        idle_rss_mib: idle_rss,
        recovery,
        error: None,
    })
}

/// The size of `binary` without symbols: `strip` run on a temporary copy.
fn stripped_size(binary: &std::path::Path) -> Option<u64> {
    let dir = tempfile::tempdir().ok()?;
    let copy = dir.path().join("binary");
    std::fs::copy(binary, &copy).ok()?;
    let status = std::process::Command::new("strip")
        .arg(&copy)
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    std::fs::metadata(&copy).ok().map(|m| m.len())
}

async fn recovery(bins: &Bins, a: &FootprintArgs, system: System) -> Result<Recovery> {
    const RECORD: usize = 1024;
    const BATCH: usize = 1000;
    const TASKS: u64 = 4;
    let (mut server, _) = Server::start(system, a.durability, bins).await?;
    create_log(&server).await?;
    let total_batches = (a.log_mib * 1024 * 1024).div_ceil((RECORD * BATCH) as u64);
    let t = Instant::now();
    let (acked, last_batch) = fill(
        &server,
        RECORD,
        BATCH,
        total_batches.div_ceil(TASKS),
        TASKS as usize,
        2,
    )
    .await?;
    let fill_seconds = t.elapsed().as_secs_f64();
    let rss_after_fill = mib(server.rss_kib().0);
    let data_bytes = server.data_bytes();
    let spawned = Instant::now();
    let ready = server.kill9_and_restart().await?;
    // Until everything acknowledged is visible (the server may answer before it has
    // recovered every stream; then this poll is what waits).
    let deadline = Instant::now() + servers::READY_TIMEOUT;
    let check = loop {
        match clients::stored(&server).await {
            Ok((records, tail)) => {
                let ok = match system {
                    System::StreamCell => tail >= last_batch,
                    System::Redis | System::Nats => records >= acked,
                };
                if ok {
                    break match system {
                        System::StreamCell => {
                            format!("tail batch {tail} >= last acked batch {last_batch}")
                        }
                        _ => format!("{records} records >= {acked} acked"),
                    };
                }
                if Instant::now() > deadline {
                    return Err(BenchError::Protocol(format!(
                        "after kill -9 and restart {system} holds {records} records (tail batch \
                         {tail}) of {acked} acknowledged (last batch {last_batch})"
                    )));
                }
            }
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let recovered = spawned.elapsed();
    Ok(Recovery {
        durability: a.durability.name(),
        setting: a.durability.setting(system),
        records_acked: acked,
        payload_bytes: acked * RECORD as u64,
        fill_seconds,
        data_bytes,
        rss_after_fill_mib: rss_after_fill,
        ready_seconds: ready.as_secs_f64(),
        recovered_seconds: recovered.as_secs_f64(),
        check,
        rss_after_recovery_mib: mib(server.rss_kib().0),
    })
}

async fn run_footprint(c: &Common, a: &FootprintArgs) -> Result<()> {
    let bins = bins(c);
    let mut systems = Vec::new();
    for &system in &c.systems {
        let f = match footprint(&bins, a, system).await {
            Ok(f) => {
                print!(
                    "footprint {system:<11} binary {:>6.1} MB  cold start {:>6.1} ms  idle RSS {:>6.1} MiB",
                    f.binary_bytes as f64 / 1e6,
                    f.cold_start_ms_median,
                    f.idle_rss_mib
                );
                if let Some(r) = &f.recovery {
                    print!(
                        "  recovery of {:.0} MiB: ready {:.2} s, all visible {:.2} s ({})",
                        r.payload_bytes as f64 / 1048576.0,
                        r.ready_seconds,
                        r.recovered_seconds,
                        r.check
                    );
                }
                println!();
                f
            }
            Err(e) => {
                eprintln!("footprint {system}: failed: {e}");
                Footprint {
                    system: system.name(),
                    binary: bins.path(system).display().to_string(),
                    binary_bytes: 0,
                    stripped_bytes: None,
                    cold_start_ms: Vec::new(),
                    cold_start_ms_median: 0.0,
                    idle_rss_mib: 0.0,
                    recovery: None,
                    error: Some(e.to_string()),
                }
            }
        };
        systems.push(f);
    }
    write_json(
        c,
        &FootprintReport {
            benchmark: "footprint",
            log_mib: a.log_mib,
            idle_seconds: a.idle_seconds,
            versions: versions(&bins),
            systems,
        },
    )
}

// ---------------------------------------------------------------------------------------------

fn write_json<T: Serialize>(c: &Common, report: &T) -> Result<()> {
    let Some(path) = &c.json else {
        return Ok(());
    };
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| BenchError::Protocol(format!("encoding the report: {e}")))?;
    std::fs::write(path, text).map_err(streamcell_bench::io_err(format!(
        "writing {}",
        path.display()
    )))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    streamcell_bench::main_with("peers", async move {
        match &cli.what {
            What::Append(a) => run_append(&cli.common, a).await,
            What::Consume(a) => run_consume(&cli.common, a).await,
            What::Footprint(a) => run_footprint(&cli.common, a).await,
        }
    })
}
