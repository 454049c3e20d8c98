//! `subscribe`: subscription delivery of a real streamcell server, driven through the HStreamDB
//! gRPC API (`CreateSubscription`, bidirectional `StreamingFetch`) with the generated tonic
//! client.
//!
//! Like `append`, it starts `target/release/streamcell server` itself on free 127.0.0.1 ports
//! with a fresh temporary data directory and `--sync always` (killed and deleted at the end,
//! also on error or Ctrl-C), or uses an already running server with `--addr HOST:PORT`.
//!
//! Two measurements:
//! - **Throughput.** A stream with `--shards` (4) shards is filled with `--records` (2,000,000)
//!   RAW records of `--record-size` (100) random bytes, appended in batches of `--batch-size`
//!   (1000) by `--fill-concurrency` concurrent tasks, evenly over the shards. Then, for every
//!   count C in `--consumers` (1,2,4), a new subscription (EARLIEST, `ackTimeoutSeconds` 600,
//!   `maxUnackedRecords` `--max-unacked`) gets C consumers, each on its own HTTP/2 connection
//!   with one `StreamingFetch` call that acks every delivered `ReceivedRecord` at once with one
//!   `StreamingFetchRequest` carrying all its record ids. The time runs from opening the fetch
//!   streams until every record id of the fill has been delivered (and its ack sent) at least
//!   once; deliveries of an id already seen count as duplicates. Afterwards the subscription's
//!   offsets (`GetSubscription`) must show every batch acknowledged.
//! - **End-to-end latency.** On a fresh stream, a subscription created with LATEST gets one
//!   consumer; then a producer appends a batch of `--latency-batch` (10) records every
//!   `latency-batch / --rate` seconds (1 ms at 10,000 records/s), round robin over the shards,
//!   each payload starting with its send time (ns since an `Instant` shared with the consumer).
//!   After a 1 s warm-up, for `--seconds` (10), it records the time from the producer's send to
//!   the consumer receiving the record (HdrHistogram, microseconds), and waits until every
//!   record sent in the window has arrived.
//!
//! Every wait is bounded: a case fails with the subscription's offsets, its consumers and the
//! server log tail when nothing new is delivered for `--stall-timeout` (10) seconds, or when it
//! runs longer than `--case-timeout` (600) seconds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use serde::Serialize;
use streamcell_bench::{
    bounded, connect, cpu_seconds, create_stream, delete_stream, make_batches, merge_histogram,
    new_histogram, prepare, record_latency, rpc_err, BenchError, LatencyMs, Result, XorShift,
    RPC_TIMEOUT,
};
use streamcell_proto::api::{
    AppendRequest, BatchedRecord, DeleteSubscriptionRequest, GetSubscriptionRequest,
    ListConsumersRequest, ReceivedRecord, RecordId, SpecialOffset, StreamingFetchRequest,
    Subscription,
};
use streamcell_proto::records::{decode_batch, encode_batch, raw_record};
use streamcell_proto::HStreamApiClient;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;

/// Warm-up of the latency case; records sent during it are not measured.
const WARMUP: Duration = Duration::from_secs(1);
/// How often the coordinators look at the progress counters.
const POLL: Duration = Duration::from_millis(20);
/// Distinct pre-encoded batches per fill task, rotated so consecutive appends differ.
const BATCHES_PER_TASK: usize = 4;
/// Most appends the latency producer keeps in flight before it waits.
const MAX_PRODUCER_IN_FLIGHT: usize = 256;
/// Bytes at the start of a latency record's payload that hold its send time.
const STAMP_BYTES: usize = 8;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "subscribe",
    about = "Subscription delivery throughput and end-to-end latency of a streamcell server over \
             the HStreamDB gRPC API"
)]
struct Args {
    /// streamcell server binary to start (ignored with --addr).
    #[arg(long, default_value = "target/release/streamcell")]
    server_bin: PathBuf,
    /// Use an already running server at HOST:PORT instead of starting one.
    #[arg(long)]
    addr: Option<String>,
    /// `--sync` mode passed to a server this benchmark starts.
    #[arg(long, default_value = "always")]
    sync: String,
    /// Records the throughput stream is filled with.
    #[arg(long, default_value_t = 2_000_000)]
    records: u64,
    /// Record payload size in bytes (throughput and latency cases).
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Records per Append call when filling the throughput stream.
    #[arg(long, default_value_t = 1000)]
    batch_size: u32,
    /// Shards of the benchmark streams.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Consumer counts of the throughput cases, comma separated (one subscription each).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    consumers: Vec<usize>,
    /// `maxUnackedRecords` of every subscription.
    #[arg(long, default_value_t = 10_000)]
    max_unacked: u32,
    /// `ackTimeoutSeconds` of every subscription.
    #[arg(long, default_value_t = 600)]
    ack_timeout: u32,
    /// Appends in flight at once while filling the throughput stream.
    #[arg(long, default_value_t = 8)]
    fill_concurrency: usize,
    /// gRPC channels the fill tasks (and the latency producer) are spread over.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Records per second the latency producer sends.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Records per Append call of the latency producer.
    #[arg(long, default_value_t = 10)]
    latency_batch: u32,
    /// Measured seconds of the latency case (after a 1 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Fail a case when no new record arrives (or no append completes) for this many seconds.
    #[arg(long, default_value_t = 10)]
    stall_timeout: u64,
    /// Fail a case that runs longer than this many seconds in all.
    #[arg(long, default_value_t = 600)]
    case_timeout: u64,
    /// Skip the throughput cases.
    #[arg(long)]
    skip_throughput: bool,
    /// Skip the latency case.
    #[arg(long)]
    skip_latency: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl Args {
    fn stall(&self) -> Duration {
        Duration::from_secs(self.stall_timeout)
    }

    fn case_limit(&self) -> Duration {
        Duration::from_secs(self.case_timeout)
    }
}

/// CPU used by the server and by this benchmark process over an interval, in cores (CPU seconds
/// per second of wall time: 1.0 is one core busy). `None` where `/proc` is not readable or the
/// server is external.
#[derive(Serialize, Clone, Copy, Debug)]
struct CpuUse {
    server_cores: Option<f64>,
    client_cores: Option<f64>,
}

/// A CPU-time snapshot of the server and this process.
struct CpuMeter {
    server_pid: Option<u32>,
    server: Option<f64>,
    client: Option<f64>,
    at: Instant,
}

impl CpuMeter {
    fn start(server_pid: Option<u32>) -> Self {
        Self {
            server_pid,
            server: server_pid.and_then(|p| cpu_seconds(Some(p))),
            client: cpu_seconds(None),
            at: Instant::now(),
        }
    }

    fn finish(&self) -> CpuUse {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let used = |before: Option<f64>, now: Option<f64>| Some((now? - before?) / wall);
        CpuUse {
            server_cores: used(
                self.server,
                self.server_pid.and_then(|p| cpu_seconds(Some(p))),
            ),
            client_cores: used(self.client, cpu_seconds(None)),
        }
    }
}

fn cores(c: Option<f64>) -> String {
    c.map_or_else(|| String::from("-"), |c| format!("{c:.2}"))
}

/// What every case needs: the server, an admin client, and where its log is.
struct Ctx {
    addr: String,
    admin: HStreamApiClient<Channel>,
    clients: Vec<HStreamApiClient<Channel>>,
    log: Option<PathBuf>,
    server_pid: Option<u32>,
    args: Args,
}

impl Ctx {
    fn name(&self, what: &str) -> String {
        format!("bench_sub_{}_{what}", std::process::id())
    }

    /// The subscription's offsets and consumers and the server log tail, for stall reports.
    async fn diagnose(&self, sub: &str) -> String {
        let mut admin = self.admin.clone();
        let limit = Duration::from_secs(5);
        let offsets = match tokio::time::timeout(
            limit,
            admin.get_subscription(GetSubscriptionRequest { id: sub.into() }),
        )
        .await
        {
            Ok(Ok(r)) => r
                .into_inner()
                .offsets
                .iter()
                .map(|o| format!("shard {} at batch {}", o.shard_id, o.batch_id))
                .collect::<Vec<_>>()
                .join(", "),
            Ok(Err(s)) => format!("GetSubscription failed: {:?}: {}", s.code(), s.message()),
            Err(_) => format!("GetSubscription did not answer within {limit:?}"),
        };
        let consumers = match tokio::time::timeout(
            limit,
            admin.list_consumers(ListConsumersRequest {
                subscription_id: sub.into(),
            }),
        )
        .await
        {
            Ok(Ok(r)) => r
                .into_inner()
                .consumers
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
                .join(", "),
            Ok(Err(s)) => format!("ListConsumers failed: {:?}: {}", s.code(), s.message()),
            Err(_) => format!("ListConsumers did not answer within {limit:?}"),
        };
        let log = match &self.log {
            Some(path) => streamcell_bench::log_tail(path, 20),
            None => String::from("(external server: no log)"),
        };
        format!(
            "subscription {sub}: offsets (first batch not fully acked): [{offsets}]; \
             consumers: [{consumers}]; last server log lines:\n{log}"
        )
    }

    async fn delete_subscription(&self, sub: &str) {
        let mut admin = self.admin.clone();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            admin.delete_subscription(DeleteSubscriptionRequest {
                subscription_id: sub.into(),
                force: true,
            }),
        )
        .await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(s)) => eprintln!(
                "warning: DeleteSubscription {sub} failed ({:?}: {}); continuing",
                s.code(),
                s.message()
            ),
            Err(_) => eprintln!("warning: DeleteSubscription {sub} timed out; continuing"),
        }
    }

    async fn create_subscription(
        &self,
        sub: &str,
        stream: &str,
        offset: SpecialOffset,
    ) -> Result<()> {
        let mut admin = self.admin.clone();
        let what = format!("CreateSubscription {sub} on {stream}");
        bounded(RPC_TIMEOUT, &what, async {
            admin
                .create_subscription(Subscription {
                    subscription_id: sub.into(),
                    stream_name: stream.into(),
                    ack_timeout_seconds: i32::try_from(self.args.ack_timeout).unwrap_or(i32::MAX),
                    max_unacked_records: i32::try_from(self.args.max_unacked).unwrap_or(i32::MAX),
                    offset: offset as i32,
                    creation_time: None,
                })
                .await
                .map_err(rpc_err(what.clone()))
        })
        .await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Consumers

/// Called with the receive time and each delivered `ReceivedRecord` (after its ack was sent).
type Handler = Box<dyn FnMut(Instant, &ReceivedRecord) -> Result<()> + Send>;

/// One consumer: opens `StreamingFetch` on `channel`, acks every delivery at once with all its
/// record ids, hands it to `handle`, and returns when `stop` turns true (dropping the request
/// stream, so the server sees the consumer leave). The server ending the stream is an error.
async fn run_consumer(
    channel: Channel,
    sub: String,
    name: String,
    mut stop: watch::Receiver<bool>,
    open_timeout: Duration,
    mut handle: Handler,
) -> Result<()> {
    let mut client = HStreamApiClient::new(channel);
    let (tx, rx) = mpsc::unbounded_channel();
    let request = |ack_ids: Vec<RecordId>| StreamingFetchRequest {
        subscription_id: sub.clone(),
        consumer_name: name.clone(),
        ack_ids,
    };
    let closed = || BenchError::Protocol(format!("the fetch request stream of {name} closed"));
    tx.send(request(Vec::new())).map_err(|_| closed())?;
    let mut inbound = tokio::time::timeout(
        open_timeout,
        client.streaming_fetch(UnboundedReceiverStream::new(rx)),
    )
    .await
    .map_err(|_| {
        BenchError::Stalled(format!(
            "StreamingFetch of {name} on {sub} did not answer within {open_timeout:?}"
        ))
    })?
    .map_err(rpc_err(format!("StreamingFetch of {name} on {sub}")))?
    .into_inner();
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return Ok(());
                }
            }
            message = inbound.message() => {
                let received_at = Instant::now();
                let response = match message {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        return Err(BenchError::Protocol(format!(
                            "the server ended the fetch stream of {name} on {sub}"
                        )))
                    }
                    Err(status) => {
                        return Err(rpc_err(format!("StreamingFetch of {name} on {sub}"))(status))
                    }
                };
                let Some(record) = response.received_records else {
                    return Err(BenchError::Protocol(format!(
                        "{name} on {sub}: StreamingFetchResponse without receivedRecords"
                    )));
                };
                tx.send(request(record.record_ids.clone())).map_err(|_| closed())?;
                handle(received_at, &record)?;
            }
        }
    }
}

/// The records of a delivery, checked against its record ids.
fn delivered_records(r: &ReceivedRecord) -> Result<Vec<streamcell_proto::api::HStreamRecord>> {
    let batch = r
        .record
        .as_ref()
        .ok_or_else(|| BenchError::Protocol("ReceivedRecord without a record batch".into()))?;
    let records = decode_batch(batch)
        .map_err(|e| BenchError::Protocol(format!("cannot decode a delivered batch: {e}")))?;
    if records.len() != r.record_ids.len() {
        return Err(BenchError::Protocol(format!(
            "a delivery holds {} records but {} record ids",
            records.len(),
            r.record_ids.len()
        )));
    }
    Ok(records)
}

// ---------------------------------------------------------------------------------------------
// Throughput: fill

/// Where each appended batch's records sit in the dense numbering 0..total.
struct FillIndex {
    /// (shard, batch id) -> (first record number, records in the batch).
    batches: HashMap<(u64, u64), (u64, u32)>,
    /// shard -> highest batch id appended.
    last_batch: BTreeMap<u64, u64>,
    total: u64,
}

#[derive(Serialize)]
struct FillResult {
    records: u64,
    batches: u64,
    seconds: f64,
    records_per_sec: f64,
    payload_mb_per_sec: f64,
    append_latency_ms: LatencyMs,
    cpu: CpuUse,
}

/// Appends `args.records` records to `shards`, evenly, with `fill_concurrency` tasks.
async fn fill(ctx: &Ctx, stream: &str, shards: &[u64]) -> Result<(FillIndex, FillResult)> {
    let args = &ctx.args;
    // Per shard, its share of the records in batches of batch_size (the last one may be short),
    // interleaved so that the tasks keep every shard busy.
    let per_shard: Vec<u64> = (0..shards.len() as u64)
        .map(|i| {
            let n = shards.len() as u64;
            args.records / n + u64::from(i < args.records % n)
        })
        .collect();
    let mut queues: Vec<Vec<(u64, u32)>> = shards
        .iter()
        .zip(&per_shard)
        .map(|(&shard, &n)| {
            let bs = u64::from(args.batch_size);
            (0..n.div_ceil(bs))
                .map(|b| {
                    (
                        shard,
                        u32::try_from((n - b * bs).min(bs)).unwrap_or(u32::MAX),
                    )
                })
                .collect()
        })
        .collect();
    let mut jobs = Vec::new();
    loop {
        let mut any = false;
        for q in &mut queues {
            if !q.is_empty() {
                jobs.push(q.remove(0));
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));

    let cpu = CpuMeter::start(ctx.server_pid);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for t in 0..args.fill_concurrency {
        let mut client = ctx.clients[t % ctx.clients.len()].clone();
        let jobs = jobs.clone();
        let next = next.clone();
        let stream = stream.to_owned();
        let full = make_batches(
            t as u64,
            args.record_size,
            args.batch_size,
            BATCHES_PER_TASK,
        );
        let record_size = args.record_size;
        let stall = args.stall();
        tasks.spawn(async move {
            let mut appended: Vec<(u64, u64, u32)> = Vec::new();
            let mut latency = new_histogram();
            let mut k = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(shard, len)) = jobs.get(i) else {
                    break;
                };
                let records = if len as usize == full.first().map_or(0, |b| b.batch_size as usize) {
                    k += 1;
                    full[k % full.len()].clone()
                } else {
                    make_batches(i as u64, record_size, len, 1).remove(0)
                };
                let sent = Instant::now();
                let what = format!("Append to stream {stream} shard {shard}");
                let response = tokio::time::timeout(
                    stall,
                    client.append(AppendRequest {
                        stream_name: stream.clone(),
                        shard_id: shard,
                        records: Some(records),
                    }),
                )
                .await
                .map_err(|_| BenchError::Stalled(format!("{what} took more than {stall:?}")))?
                .map_err(rpc_err(what.clone()))?
                .into_inner();
                record_latency(&mut latency, sent.elapsed());
                let ids = &response.record_ids;
                let batch_id = ids.first().map(|id| id.batch_id);
                let consistent = ids.len() == len as usize
                    && ids.iter().enumerate().all(|(j, id)| {
                        id.shard_id == shard
                            && Some(id.batch_id) == batch_id
                            && id.batch_index as usize == j
                    });
                match (consistent, batch_id) {
                    (true, Some(b)) => appended.push((shard, b, len)),
                    _ => {
                        return Err(BenchError::Protocol(format!(
                            "{what}: a batch of {len} records got {} record ids that are not \
                             one batch numbered 0..{len}: first {:?}",
                            ids.len(),
                            ids.first()
                        )))
                    }
                }
            }
            Ok::<_, BenchError>((appended, latency))
        });
    }
    let mut appended = Vec::new();
    let mut latency = new_histogram();
    while let Some(joined) = tasks.join_next().await {
        let (a, l) = joined??;
        appended.extend(a);
        merge_histogram(&mut latency, &l);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu.finish();

    appended.sort_unstable();
    let mut index = FillIndex {
        batches: HashMap::with_capacity(appended.len()),
        last_batch: BTreeMap::new(),
        total: 0,
    };
    for &(shard, batch, len) in &appended {
        if index
            .batches
            .insert((shard, batch), (index.total, len))
            .is_some()
        {
            return Err(BenchError::Protocol(format!(
                "two appends to shard {shard} got the same batch id {batch}"
            )));
        }
        index.total += u64::from(len);
        let last = index.last_batch.entry(shard).or_insert(batch);
        *last = (*last).max(batch);
    }
    let result = FillResult {
        records: index.total,
        batches: appended.len() as u64,
        seconds,
        records_per_sec: index.total as f64 / seconds,
        payload_mb_per_sec: (index.total * args.record_size as u64) as f64 / seconds / 1e6,
        append_latency_ms: LatencyMs::from_us(&latency),
        cpu,
    };
    Ok((index, result))
}

// ---------------------------------------------------------------------------------------------
// Throughput: consume

/// Which record ids have been delivered, shared by the consumers of one case.
struct Tracker {
    index: Arc<FillIndex>,
    bits: Vec<AtomicU64>,
    distinct: AtomicU64,
    duplicates: AtomicU64,
    done_at: OnceLock<Instant>,
    done: Notify,
}

impl Tracker {
    fn new(index: Arc<FillIndex>) -> Self {
        let words = index.total.div_ceil(64) as usize;
        Self {
            bits: (0..words).map(|_| AtomicU64::new(0)).collect(),
            index,
            distinct: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            done_at: OnceLock::new(),
            done: Notify::new(),
        }
    }

    /// Marks `id` delivered; false if it had been already (a duplicate).
    fn mark(&self, id: &RecordId, at: Instant) -> Result<bool> {
        let Some(&(base, len)) = self.index.batches.get(&(id.shard_id, id.batch_id)) else {
            return Err(BenchError::Protocol(format!(
                "delivered record {}-{}-{} belongs to no batch the fill appended",
                id.shard_id, id.batch_id, id.batch_index
            )));
        };
        if id.batch_index >= len {
            return Err(BenchError::Protocol(format!(
                "delivered record {}-{}-{}: that batch holds {len} records",
                id.shard_id, id.batch_id, id.batch_index
            )));
        }
        let n = base + u64::from(id.batch_index);
        let bit = 1u64 << (n % 64);
        let word = &self.bits[(n / 64) as usize];
        if word.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        if self.distinct.fetch_add(1, Ordering::Relaxed) + 1 == self.index.total {
            let _ = self.done_at.set(at);
            self.done.notify_one();
        }
        Ok(true)
    }
}

/// What one consumer has received, by shard (positions as in the stream's shard list).
struct ConsumerStats {
    records: AtomicU64,
    deliveries: AtomicU64,
    per_shard: Vec<AtomicU64>,
}

#[derive(Serialize)]
struct ConsumerResult {
    name: String,
    records: u64,
    deliveries: u64,
    /// Records received per shard id (redeliveries included).
    records_by_shard: BTreeMap<u64, u64>,
}

#[derive(Serialize)]
struct ThroughputResult {
    consumers: usize,
    subscription: String,
    records: u64,
    payload_bytes: u64,
    /// From opening the fetch streams until every record was delivered (and its ack sent).
    seconds: f64,
    records_per_sec: f64,
    payload_mb_per_sec: f64,
    /// Deliveries of a record id that had been delivered before, to any consumer.
    duplicates: u64,
    /// From opening the fetch streams until `GetSubscription` showed every batch acked.
    acks_confirmed_seconds: f64,
    /// CPU use while the records were being delivered.
    cpu: CpuUse,
    per_consumer: Vec<ConsumerResult>,
}

async fn throughput_case(
    ctx: &Ctx,
    stream: &str,
    shards: &[u64],
    index: &Arc<FillIndex>,
    consumers: usize,
) -> Result<ThroughputResult> {
    let args = &ctx.args;
    let sub = ctx.name(&format!("{consumers}c"));
    ctx.create_subscription(&sub, stream, SpecialOffset::Earliest)
        .await?;
    let r = consume_all(ctx, &sub, shards, index, consumers).await;
    ctx.delete_subscription(&sub).await;
    let (seconds, confirmed, duplicates, cpu, per_consumer) = r?;
    let records = index.total;
    let payload_bytes = records * args.record_size as u64;
    Ok(ThroughputResult {
        consumers,
        subscription: sub,
        records,
        payload_bytes,
        seconds,
        records_per_sec: records as f64 / seconds,
        payload_mb_per_sec: payload_bytes as f64 / seconds / 1e6,
        duplicates,
        acks_confirmed_seconds: confirmed,
        cpu,
        per_consumer,
    })
}

/// Runs `consumers` consumers on `sub` until every record of `index` is delivered and the
/// server shows it acked. Returns (delivery seconds, ack-confirmed seconds, duplicates, CPU use
/// while delivering, per-consumer results).
async fn consume_all(
    ctx: &Ctx,
    sub: &str,
    shards: &[u64],
    index: &Arc<FillIndex>,
    consumers: usize,
) -> Result<(f64, f64, u64, CpuUse, Vec<ConsumerResult>)> {
    let args = &ctx.args;
    let stall = args.stall();
    let tracker = Arc::new(Tracker::new(index.clone()));
    let shard_pos: Arc<HashMap<u64, usize>> =
        Arc::new(shards.iter().enumerate().map(|(i, &s)| (s, i)).collect());
    let mut channels = Vec::with_capacity(consumers);
    for _ in 0..consumers {
        channels.push(connect(&ctx.addr).await?);
    }
    let stats: Vec<Arc<ConsumerStats>> = (0..consumers)
        .map(|_| {
            Arc::new(ConsumerStats {
                records: AtomicU64::new(0),
                deliveries: AtomicU64::new(0),
                per_shard: shards.iter().map(|_| AtomicU64::new(0)).collect(),
            })
        })
        .collect();
    let names: Vec<String> = (0..consumers).map(|i| format!("consumer-{i}")).collect();
    let (stop_tx, stop_rx) = watch::channel(false);

    let cpu = CpuMeter::start(ctx.server_pid);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, channel) in channels.into_iter().enumerate() {
        let tracker = tracker.clone();
        let stats = stats[i].clone();
        let shard_pos = shard_pos.clone();
        let record_size = args.record_size;
        let handler: Handler = Box::new(move |at, r: &ReceivedRecord| {
            let records = delivered_records(r)?;
            if let Some(bad) = records.iter().find(|x| x.payload.len() != record_size) {
                return Err(BenchError::Protocol(format!(
                    "a delivered record has {} payload bytes, the fill wrote {record_size}",
                    bad.payload.len()
                )));
            }
            stats.deliveries.fetch_add(1, Ordering::Relaxed);
            stats
                .records
                .fetch_add(r.record_ids.len() as u64, Ordering::Relaxed);
            for id in &r.record_ids {
                tracker.mark(id, at)?;
                if let Some(&p) = shard_pos.get(&id.shard_id) {
                    stats.per_shard[p].fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        });
        tasks.spawn(run_consumer(
            channel,
            sub.to_owned(),
            names[i].clone(),
            stop_rx.clone(),
            stall,
            handler,
        ));
    }

    let outcome = async {
        // Until every record id has been delivered once.
        let mut last = 0u64;
        let mut last_progress = Instant::now();
        let done_at = loop {
            if let Some(&t) = tracker.done_at.get() {
                break t;
            }
            tokio::select! {
                () = tracker.done.notified() => continue,
                joined = tasks.join_next() => {
                    return Err(match joined {
                        Some(Ok(Err(e))) => e,
                        Some(Err(e)) => BenchError::Task(e),
                        _ => BenchError::Protocol("a consumer stopped before the end".into()),
                    });
                }
                () = tokio::time::sleep(POLL) => {}
            }
            let now = Instant::now();
            let distinct = tracker.distinct.load(Ordering::Relaxed);
            if distinct != last {
                last = distinct;
                last_progress = now;
            }
            let why = if now - last_progress > stall {
                Some(format!("no new record delivered for {stall:?}"))
            } else if now - started > args.case_limit() {
                Some(format!("not finished after {:?}", args.case_limit()))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(BenchError::Stalled(format!(
                    "{consumers} consumer(s): {why}: {distinct} of {} records delivered, {} \
                     duplicates; received per consumer by shard: {}; {}",
                    tracker.index.total,
                    tracker.duplicates.load(Ordering::Relaxed),
                    per_consumer(&names, &stats, shards)
                        .iter()
                        .map(|c| format!("{} {:?}", c.name, c.records_by_shard))
                        .collect::<Vec<_>>()
                        .join(", "),
                    ctx.diagnose(sub).await
                )));
            }
        };
        let cpu = cpu.finish();
        // Until the server shows every batch acknowledged (the consumers stay attached).
        let mut admin = ctx.admin.clone();
        let confirm_deadline = Instant::now() + stall;
        let confirmed_at = loop {
            let what = format!("GetSubscription {sub}");
            let offsets = bounded(stall, &what, async {
                admin
                    .get_subscription(GetSubscriptionRequest { id: sub.into() })
                    .await
                    .map_err(rpc_err(what.clone()))
            })
            .await?
            .into_inner()
            .offsets;
            let all_acked = tracker.index.last_batch.iter().all(|(shard, last)| {
                offsets
                    .iter()
                    .any(|o| o.shard_id == *shard && o.batch_id > *last)
            });
            if all_acked {
                break Instant::now();
            }
            if Instant::now() > confirm_deadline {
                return Err(BenchError::Stalled(format!(
                    "{consumers} consumer(s): every record was delivered and acked, but after \
                     {stall:?} the subscription does not show them acknowledged (last batch \
                     per shard: {:?}); {}",
                    tracker.index.last_batch,
                    ctx.diagnose(sub).await
                )));
            }
            tokio::time::sleep(POLL).await;
        };
        Ok((done_at, confirmed_at, cpu))
    }
    .await;

    let _ = stop_tx.send(true);
    let (done_at, confirmed_at, cpu) = outcome?;
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok((
        (done_at - started).as_secs_f64(),
        (confirmed_at - started).as_secs_f64(),
        tracker.duplicates.load(Ordering::Relaxed),
        cpu,
        per_consumer(&names, &stats, shards),
    ))
}

fn per_consumer(
    names: &[String],
    stats: &[Arc<ConsumerStats>],
    shards: &[u64],
) -> Vec<ConsumerResult> {
    names
        .iter()
        .zip(stats)
        .map(|(name, s)| ConsumerResult {
            name: name.clone(),
            records: s.records.load(Ordering::Relaxed),
            deliveries: s.deliveries.load(Ordering::Relaxed),
            records_by_shard: shards
                .iter()
                .zip(&s.per_shard)
                .map(|(&shard, n)| (shard, n.load(Ordering::Relaxed)))
                .filter(|&(_, n)| n > 0)
                .collect(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Latency

#[derive(Serialize)]
struct LatencyResult {
    target_records_per_sec: u64,
    batch_size: u32,
    send_interval_ms: f64,
    warmup_seconds: f64,
    seconds: f64,
    /// Records whose send time fell in the measured window.
    records_sent: u64,
    achieved_records_per_sec: f64,
    /// Records of the window that reached the consumer (all of them, or the case fails).
    records_received: u64,
    duplicates: u64,
    /// Producer send to consumer receive.
    end_to_end_ms: LatencyMs,
    /// Producer send to the append's acknowledgement, for the same window.
    append_ack_ms: LatencyMs,
    /// CPU use from the first append until every record of the window arrived.
    cpu: CpuUse,
    /// Per second of the window (by send time): where the tail latencies come from.
    per_second: Vec<SecondStats>,
}

/// One second of the latency window, by send time.
#[derive(Serialize, Clone, Copy, Default)]
struct SecondStats {
    records_received: u64,
    end_to_end_max_ms: f64,
    append_ack_max_ms: f64,
}

/// The consumer's histogram and per-second maxima.
struct Window {
    histogram: Histogram<u64>,
    seconds: Vec<SecondStats>,
}

/// What the latency consumer has seen.
struct LatencyStats {
    window: std::sync::Mutex<Window>,
    received_in_window: AtomicU64,
    received: AtomicU64,
    duplicates: AtomicU64,
}

async fn latency_case(ctx: &Ctx) -> Result<LatencyResult> {
    let args = &ctx.args;
    let stream = ctx.name("latency");
    let mut admin = ctx.admin.clone();
    let shards = create_stream(&mut admin, &stream, args.shards).await?;
    let sub = ctx.name("latency_sub");
    let r = async {
        ctx.create_subscription(&sub, &stream, SpecialOffset::Latest)
            .await?;
        let r = measure_latency(ctx, &stream, &sub, &shards).await;
        ctx.delete_subscription(&sub).await;
        r
    }
    .await;
    delete_stream(&mut admin, &stream).await;
    r
}

async fn measure_latency(
    ctx: &Ctx,
    stream: &str,
    sub: &str,
    shards: &[u64],
) -> Result<LatencyResult> {
    let args = &ctx.args;
    let stall = args.stall();
    let interval = Duration::from_secs_f64(f64::from(args.latency_batch) / args.rate as f64);
    let epoch = Instant::now();
    let window_start = WARMUP;
    let window_end = WARMUP + Duration::from_secs(args.seconds);
    let window_seconds = usize::try_from(args.seconds).unwrap_or(usize::MAX);
    // The second of the window `ns` (send time since `epoch`) falls in, if any.
    let second_of = move |ns: u64| {
        let t = Duration::from_nanos(ns);
        (t >= window_start && t < window_end)
            .then(|| ((t - window_start).as_secs() as usize).min(window_seconds - 1))
    };

    // The consumer joins before the first append (the subscription starts at LATEST anyway).
    let stats = Arc::new(LatencyStats {
        window: std::sync::Mutex::new(Window {
            histogram: new_histogram(),
            seconds: vec![SecondStats::default(); window_seconds],
        }),
        received_in_window: AtomicU64::new(0),
        received: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let handler: Handler = {
        let stats = stats.clone();
        let mut seen: HashSet<(u64, u64, u32)> = HashSet::new();
        Box::new(move |at, r: &ReceivedRecord| {
            let now_ns = u64::try_from((at - epoch).as_nanos()).unwrap_or(u64::MAX);
            let records = delivered_records(r)?;
            let mut w = stats
                .window
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (id, record) in r.record_ids.iter().zip(&records) {
                if !seen.insert((id.shard_id, id.batch_id, id.batch_index)) {
                    stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                stats.received.fetch_add(1, Ordering::Relaxed);
                let stamp: [u8; STAMP_BYTES] = record
                    .payload
                    .get(..STAMP_BYTES)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| {
                        BenchError::Protocol(format!(
                            "a delivered record has {} payload bytes, fewer than the {STAMP_BYTES} \
                             of its send time",
                            record.payload.len()
                        ))
                    })?;
                let sent_ns = u64::from_le_bytes(stamp);
                if let Some(second) = second_of(sent_ns) {
                    let latency = Duration::from_nanos(now_ns.saturating_sub(sent_ns));
                    record_latency(&mut w.histogram, latency);
                    let s = &mut w.seconds[second];
                    s.records_received += 1;
                    s.end_to_end_max_ms = s.end_to_end_max_ms.max(latency.as_secs_f64() * 1e3);
                    stats.received_in_window.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
    };
    let consumer_channel = connect(&ctx.addr).await?;
    let mut consumer = tokio::spawn(run_consumer(
        consumer_channel,
        sub.to_owned(),
        "latency-consumer".into(),
        stop_rx,
        stall,
        handler,
    ));

    let cpu = CpuMeter::start(ctx.server_pid);
    let outcome = async {
        let (sent_in_window, append_hist, append_max_ms) = produce(
            ctx,
            stream,
            shards,
            epoch,
            interval,
            window_end,
            &mut consumer,
        )
        .await?;
        // Wait for every record sent in the window.
        let mut last = 0u64;
        let mut last_progress = Instant::now();
        loop {
            let got = stats.received_in_window.load(Ordering::Relaxed);
            if got >= sent_in_window {
                break;
            }
            if got != last {
                last = got;
                last_progress = Instant::now();
            }
            if last_progress.elapsed() > stall || epoch.elapsed() > args.case_limit() {
                return Err(BenchError::Stalled(format!(
                    "latency: {got} of the {sent_in_window} records sent in the window arrived \
                     ({} distinct records received in all); nothing new for {:?}; {}",
                    stats.received.load(Ordering::Relaxed),
                    last_progress.elapsed(),
                    ctx.diagnose(sub).await
                )));
            }
            tokio::select! {
                joined = &mut consumer => {
                    return Err(match joined {
                        Ok(Err(e)) => e,
                        Err(e) => BenchError::Task(e),
                        Ok(Ok(())) => BenchError::Protocol("the consumer stopped early".into()),
                    });
                }
                () = tokio::time::sleep(POLL) => {}
            }
        }
        Ok((sent_in_window, append_hist, append_max_ms, cpu.finish()))
    }
    .await;
    let _ = stop_tx.send(true);
    let (sent_in_window, append_hist, append_max_ms, cpu) = outcome?;
    consumer.await??;

    let seconds = (window_end - window_start).as_secs_f64();
    let (h, mut per_second) = {
        let w = stats
            .window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (w.histogram.clone(), w.seconds.clone())
    };
    for (s, append_max) in per_second.iter_mut().zip(&append_max_ms) {
        s.append_ack_max_ms = *append_max;
    }
    Ok(LatencyResult {
        target_records_per_sec: args.rate,
        batch_size: args.latency_batch,
        send_interval_ms: interval.as_secs_f64() * 1000.0,
        warmup_seconds: window_start.as_secs_f64(),
        seconds,
        records_sent: sent_in_window,
        achieved_records_per_sec: sent_in_window as f64 / seconds,
        records_received: stats.received_in_window.load(Ordering::Relaxed),
        duplicates: stats.duplicates.load(Ordering::Relaxed),
        end_to_end_ms: LatencyMs::from_us(&h),
        append_ack_ms: LatencyMs::from_us(&append_hist),
        cpu,
        per_second,
    })
}

/// Appends a batch every `interval` (catching up when a timer fires late) until `end` after
/// `epoch`, each append in its own task. Returns the records sent inside the measured window
/// (all acknowledged) and their append ack latencies.
async fn produce(
    ctx: &Ctx,
    stream: &str,
    shards: &[u64],
    epoch: Instant,
    interval: Duration,
    end: Duration,
    consumer: &mut tokio::task::JoinHandle<Result<()>>,
) -> Result<(u64, Histogram<u64>, Vec<f64>)> {
    let args = &ctx.args;
    let stall = args.stall();
    let mut rng = XorShift::new(0x5eed);
    let mut tails: Vec<Vec<u8>> = (0..args.latency_batch)
        .map(|_| vec![0u8; args.record_size.saturating_sub(STAMP_BYTES)])
        .collect();
    for t in &mut tails {
        rng.fill(t);
    }
    let in_flight = Arc::new(Semaphore::new(MAX_PRODUCER_IN_FLIGHT));
    let window_seconds = usize::try_from(args.seconds).unwrap_or(usize::MAX);
    let mut appends: JoinSet<Result<(Option<usize>, u64, Duration)>> = JoinSet::new();
    let mut append_hist = new_histogram();
    let mut append_max_ms = vec![0.0f64; window_seconds];
    let mut sent_in_window = 0u64;
    let mut absorb = |r: (Option<usize>, u64, Duration), h: &mut Histogram<u64>| {
        let (second, records, latency) = r;
        if let Some(second) = second {
            sent_in_window += records;
            record_latency(h, latency);
            let max = &mut append_max_ms[second];
            *max = max.max(latency.as_secs_f64() * 1e3);
        }
    };
    let mut k: u64 = 0;
    loop {
        let next = epoch + interval.mul_f64(k as f64);
        if next - epoch >= end {
            break;
        }
        tokio::select! {
            joined = &mut *consumer => {
                return Err(match joined {
                    Ok(Err(e)) => e,
                    Err(e) => BenchError::Task(e),
                    Ok(Ok(())) => BenchError::Protocol("the consumer stopped early".into()),
                });
            }
            Some(joined) = appends.join_next() => {
                absorb(joined??, &mut append_hist);
                continue;
            }
            () = tokio::time::sleep_until(next.into()) => {}
        }
        let permit = tokio::time::timeout(stall, in_flight.clone().acquire_owned())
            .await
            .map_err(|_| {
                BenchError::Stalled(format!(
                    "latency producer: {MAX_PRODUCER_IN_FLIGHT} appends in flight and none \
                     completed for {stall:?}"
                ))
            })?
            .map_err(|_| BenchError::Protocol("producer semaphore closed".into()))?;
        let sent = Instant::now();
        let sent_ns = u64::try_from((sent - epoch).as_nanos()).unwrap_or(u64::MAX);
        let second = {
            let t = Duration::from_nanos(sent_ns);
            (t >= WARMUP && t < end)
                .then(|| ((t - WARMUP).as_secs() as usize).min(window_seconds - 1))
        };
        let records: Vec<_> = tails
            .iter()
            .map(|tail| {
                let mut payload = Vec::with_capacity(STAMP_BYTES + tail.len());
                payload.extend_from_slice(&sent_ns.to_le_bytes());
                payload.extend_from_slice(tail);
                raw_record("", payload)
            })
            .collect();
        let batch: BatchedRecord = encode_batch(&records);
        let shard = shards[(k as usize) % shards.len()];
        let mut client = ctx.clients[(k as usize) % ctx.clients.len()].clone();
        let stream = stream.to_owned();
        let n = u64::from(args.latency_batch);
        appends.spawn(async move {
            let _permit = permit;
            let what = format!("Append to stream {stream} shard {shard}");
            let response = tokio::time::timeout(
                stall,
                client.append(AppendRequest {
                    stream_name: stream.clone(),
                    shard_id: shard,
                    records: Some(batch),
                }),
            )
            .await
            .map_err(|_| BenchError::Stalled(format!("{what} took more than {stall:?}")))?
            .map_err(rpc_err(what.clone()))?
            .into_inner();
            if response.record_ids.len() as u64 != n {
                return Err(BenchError::Protocol(format!(
                    "{what}: {} record ids for a batch of {n}",
                    response.record_ids.len()
                )));
            }
            Ok((second, n, sent.elapsed()))
        });
        k += 1;
    }
    while let Some(joined) = appends.join_next().await {
        absorb(joined??, &mut append_hist);
    }
    Ok((sent_in_window, append_hist, append_max_ms))
}

// ---------------------------------------------------------------------------------------------
// Driver

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    server_addr: String,
    server_started_by_bench: bool,
    /// `--sync` given to the server; `None` for an external server (unknown).
    sync: Option<String>,
    shards: u32,
    record_size: usize,
    max_unacked_records: u32,
    ack_timeout_seconds: u32,
    fill: Option<FillResult>,
    throughput: Vec<ThroughputResult>,
    latency: Option<LatencyResult>,
}

fn validate(args: &Args) -> Result<()> {
    let bad = |m: &str| Err(BenchError::Config(m.to_owned()));
    if args.shards == 0 || args.fill_concurrency == 0 || args.connections == 0 {
        return bad("--shards, --fill-concurrency and --connections must be at least 1");
    }
    if args.records == 0 || args.batch_size == 0 || args.record_size == 0 {
        return bad("--records, --batch-size and --record-size must be at least 1");
    }
    if args.consumers.is_empty() || args.consumers.contains(&0) {
        return bad("--consumers needs at least one count, each at least 1");
    }
    if args.max_unacked == 0 || args.ack_timeout == 0 {
        return bad("--max-unacked and --ack-timeout must be at least 1");
    }
    if args.rate == 0 || args.latency_batch == 0 || args.seconds == 0 {
        return bad("--rate, --latency-batch and --seconds must be at least 1");
    }
    if !args.skip_latency && args.record_size < STAMP_BYTES {
        return bad("--record-size must be at least 8 for the latency case (the send time)");
    }
    if args.stall_timeout == 0 || args.case_timeout == 0 {
        return bad("--stall-timeout and --case-timeout must be at least 1");
    }
    Ok(())
}

fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
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
    let ctx = Ctx {
        addr: addr.clone(),
        admin: HStreamApiClient::new(connect(&addr).await?),
        clients,
        log: server.as_ref().map(|s| s.log_path()),
        server_pid: server.as_ref().map(|s| s.pid()),
        args: args.clone(),
    };

    println!(
        "subscribe benchmark: server {addr} ({}), sync={}, {} shards, {} B records, \
         maxUnackedRecords={}, ackTimeoutSeconds={}",
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
        args.shards,
        args.record_size,
        args.max_unacked,
        args.ack_timeout
    );

    let mut fill_result = None;
    let mut throughput = Vec::new();
    if !args.skip_throughput {
        let stream = ctx.name("fill");
        let mut admin = ctx.admin.clone();
        let shards = create_stream(&mut admin, &stream, args.shards).await?;
        let r =
            async {
                let (index, f) = fill(&ctx, &stream, &shards).await?;
                println!(
                    "fill: {} records in {} batches of up to {} over {} shards, {} appends in \
                 flight: {:.2} s, {} records/s, {:.2} MB/s, append p50 {:.2} ms, p99 {:.2} ms, \
                 CPU cores server {} client {}",
                    f.records,
                    f.batches,
                    args.batch_size,
                    shards.len(),
                    args.fill_concurrency,
                    f.seconds,
                    thousands(f.records_per_sec),
                    f.payload_mb_per_sec,
                    f.append_latency_ms.p50,
                    f.append_latency_ms.p99,
                    cores(f.cpu.server_cores),
                    cores(f.cpu.client_cores)
                );
                fill_result = Some(f);
                let index = Arc::new(index);
                println!(
                "{:>9} {:>12} {:>9} {:>8} {:>10} {:>8} {:>7} {:>7}  records per consumer (shards)",
                "consumers", "records/s", "MB/s", "secs", "duplicates", "acked_s", "srv_cpu",
                "cli_cpu"
            );
                for &c in &args.consumers {
                    let r = throughput_case(&ctx, &stream, &shards, &index, c).await?;
                    println!(
                        "{:>9} {:>12.0} {:>9.2} {:>8.3} {:>10} {:>8.3} {:>7} {:>7}  {}",
                        r.consumers,
                        r.records_per_sec,
                        r.payload_mb_per_sec,
                        r.seconds,
                        r.duplicates,
                        r.acks_confirmed_seconds,
                        cores(r.cpu.server_cores),
                        cores(r.cpu.client_cores),
                        r.per_consumer
                            .iter()
                            .map(|p| format!(
                                "{} ({})",
                                p.records,
                                p.records_by_shard
                                    .keys()
                                    .map(u64::to_string)
                                    .collect::<Vec<_>>()
                                    .join(",")
                            ))
                            .collect::<Vec<_>>()
                            .join(" ")
                    );
                    throughput.push(r);
                }
                Ok::<_, BenchError>(())
            }
            .await;
        delete_stream(&mut admin, &stream).await;
        r?;
    }

    let mut latency = None;
    if !args.skip_latency {
        println!(
            "latency: 1 consumer, {} records of {} B per append every {:.3} ms, {} s after {} s \
             warm-up",
            args.latency_batch,
            args.record_size,
            f64::from(args.latency_batch) / args.rate as f64 * 1000.0,
            args.seconds,
            WARMUP.as_secs()
        );
        let r = latency_case(&ctx).await?;
        println!(
            "{:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>13} {:>7} {:>7}",
            "target/s",
            "sent/s",
            "p50_ms",
            "p99_ms",
            "p999_ms",
            "max_ms",
            "duplicates",
            "append_p50_ms",
            "srv_cpu",
            "cli_cpu"
        );
        println!(
            "{:>9} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10} {:>13.3} {:>7} {:>7}",
            r.target_records_per_sec,
            r.achieved_records_per_sec,
            r.end_to_end_ms.p50,
            r.end_to_end_ms.p99,
            r.end_to_end_ms.p999,
            r.end_to_end_ms.max,
            r.duplicates,
            r.append_ack_ms.p50,
            cores(r.cpu.server_cores),
            cores(r.cpu.client_cores)
        );
        println!(
            "per second, max end-to-end / max append ack ms: {}",
            r.per_second
                .iter()
                .map(|s| format!("{:.1}/{:.1}", s.end_to_end_max_ms, s.append_ack_max_ms))
                .collect::<Vec<_>>()
                .join(" ")
        );
        latency = Some(r);
    }

    if let (Some(file), Some(path)) = (json_file, &args.json) {
        let report = Report {
            benchmark: "subscribe",
            server_addr: addr.clone(),
            server_started_by_bench: started,
            sync: started.then(|| args.sync.clone()),
            shards: args.shards,
            record_size: args.record_size,
            max_unacked_records: args.max_unacked,
            ack_timeout_seconds: args.ack_timeout,
            fill: fill_result,
            throughput,
            latency,
        };
        serde_json::to_writer_pretty(std::io::BufWriter::new(file), &report)?;
        println!("wrote {}", path.display());
    }
    drop(ctx);
    drop(server);
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    streamcell_bench::main_with("subscribe", run(args))
}
