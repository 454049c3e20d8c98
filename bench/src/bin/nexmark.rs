//! `nexmark`: StreamCell's continuous SQL on Nexmark bid events, for a side-by-side comparison
//! with Apache Flink SQL (`bench/nexmark/run.sh` runs both and prints the ratio).
//!
//! The events are the bids of the `nexmark` crate's generator
//! (`EventGenerator::new(NexmarkConfig::default())` with a fixed `base_time`, so every run sees
//! the same events): `auction`, `bidder`, `price`, `channel`, `url`, `date_time` (epoch
//! milliseconds), `extra`.
//!
//! What it does:
//! 1. starts `target/release/streamcell server` on free ports with a fresh data directory;
//! 2. `CREATE STREAM bid;` and appends the first `--events` bids to it as JSON records
//!    (`google.protobuf.Struct` payloads with the JSON flag, as the official clients write them;
//!    numbers are doubles there), `--batch-size` records per `Append`, one append in flight so
//!    that the stream is in event-time order; with `--events-dir` it writes the same bids as
//!    JSON lines for Flink (round robin over `--event-files` files, each in event-time order);
//! 3. for each query and run, on that backlog: creates the query (`CREATE VIEW` for the
//!    windowed aggregation, `CREATE STREAM … AS SELECT` for the filter) and times from sending
//!    the statement until `FLUSH;` returns, i.e. until the query has processed every bid
//!    (events/s = events / that time); then reads the results back with pull queries and
//!    compares them with the expected results computed here from the same bids, and drops the
//!    query (names carry the run number, so every run starts from scratch).
//!
//! The statements go through StreamCell's own SQL service (`streamcell.sql.StreamCellSql`).
//! Nothing here asserts on timings.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use nexmark::config::NexmarkConfig;
use nexmark::event::{Bid, Event};
use nexmark::EventGenerator;
use prost::Message;
use serde::Serialize;
use serde_json::Value;
use streamcell_bench::{
    bounded, connect, cpu_seconds, io_err, log_tail, start_server, BenchError, Result, RPC_TIMEOUT,
};
use streamcell_proto::api::h_stream_record_header::Flag;
use streamcell_proto::api::{AppendRequest, HStreamRecord, HStreamRecordHeader, ListShardsRequest};
use streamcell_proto::records::encode_batch;
use streamcell_proto::sqlapi::execute_response::Item;
use streamcell_proto::sqlapi::stream_cell_sql_client::StreamCellSqlClient;
use streamcell_proto::sqlapi::ExecuteRequest;
use streamcell_proto::HStreamApiClient;
use tonic::transport::Channel;

/// Tumbling window of the aggregation query, milliseconds.
const WINDOW_MS: u64 = 10_000;
/// The filter keeps bids whose auction id is a multiple of this.
const AUCTION_MODULUS: u64 = 123;
/// Euros per dollar-cent in the projection (Nexmark q1's rate).
const EUR_RATE: f64 = 0.908;
/// How many times `FLUSH;` is sent again after it timed out on the server (60 s each) before
/// the benchmark gives up: a query slower than this is reported as stalled.
const FLUSH_RETRIES: u32 = 30;
/// Largest gRPC message the SQL client accepts (pull-query results can be large).
const MAX_MESSAGE_BYTES: usize = 256 << 20;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "nexmark",
    about = "StreamCell continuous SQL on Nexmark bid events (windowed aggregation, filter)"
)]
struct Args {
    /// Bid events to load and process.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// streamcell server binary to start.
    #[arg(long, default_value = "target/release/streamcell")]
    server_bin: PathBuf,
    /// `--sync` mode given to the server (also applies to what `q_filter` writes).
    #[arg(long, default_value = "always")]
    sync: String,
    /// Records per Append call while loading.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Queries to run, comma separated: `win` (tumbling-window aggregation), `filter`
    /// (filter and projection).
    #[arg(long, value_delimiter = ',', default_value = "win,filter")]
    queries: Vec<String>,
    /// Timed runs of each query (each a new query over the whole stream).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// The generator's base time, epoch milliseconds (fixed so that every run sees the same
    /// events; a multiple of the 10 s window).
    #[arg(long, default_value_t = 1_700_000_000_000)]
    base_time: u64,
    /// Also write the bids as JSON lines into this directory (for Flink).
    #[arg(long)]
    events_dir: Option<PathBuf>,
    /// Files the JSON lines are spread over (round robin, each in event-time order).
    #[arg(long, default_value_t = 2)]
    event_files: usize,
    /// Only generate: write `--events-dir` and the expected results, start no server.
    #[arg(long)]
    generate_only: bool,
    /// Write the results (and the expected results) as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One bid as a JSON line for Flink: integers, as the generator made them.
#[derive(Serialize)]
struct BidLine<'a> {
    auction: u64,
    bidder: u64,
    price: u64,
    channel: &'a str,
    url: &'a str,
    date_time: u64,
    extra: &'a str,
}

/// Results per window of the windowed aggregation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
struct WindowTotals {
    /// Rows (one per auction with bids in the window).
    groups: u64,
    /// Sum of `bids` (COUNT(*)) over the rows: the bids in the window.
    bids: u64,
    /// Sum of `max_price` over the rows.
    sum_max_price: u64,
}

/// Totals of the filter query's output.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct FilterTotals {
    rows: u64,
    sum_auction: u64,
    sum_price_eur: f64,
}

/// What the queries must produce, computed from the bids themselves.
#[derive(Default)]
struct Expected {
    /// Per window start (epoch ms): auction -> (bids, max price).
    windows: BTreeMap<u64, HashMap<u64, (u64, u64)>>,
    filter: FilterTotals,
    first_ms: u64,
    last_ms: u64,
}

impl Expected {
    fn add(&mut self, b: &Bid) {
        let (auction, price, t) = (b.auction as u64, b.price as u64, b.date_time);
        let start = t - t % WINDOW_MS;
        let e = self
            .windows
            .entry(start)
            .or_default()
            .entry(auction)
            .or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.max(price);
        if auction.is_multiple_of(AUCTION_MODULUS) {
            self.filter.rows += 1;
            self.filter.sum_auction += auction;
            self.filter.sum_price_eur += price as f64 * EUR_RATE;
        }
        if self.first_ms == 0 {
            self.first_ms = t;
        }
        self.first_ms = self.first_ms.min(t);
        self.last_ms = self.last_ms.max(t);
    }

    fn window_totals(&self) -> BTreeMap<u64, WindowTotals> {
        self.windows
            .iter()
            .map(|(&start, groups)| {
                let mut w = WindowTotals {
                    groups: groups.len() as u64,
                    ..WindowTotals::default()
                };
                for &(bids, max) in groups.values() {
                    w.bids += bids;
                    w.sum_max_price += max;
                }
                (start, w)
            })
            .collect()
    }
}

/// The first `n` bids of the default Nexmark generator with `base_time`.
fn bids(base_time: u64, n: u64) -> impl Iterator<Item = Bid> {
    let config = NexmarkConfig {
        base_time,
        ..NexmarkConfig::default()
    };
    EventGenerator::new(config)
        .filter_map(|e| match e {
            Event::Bid(b) => Some(b),
            _ => None,
        })
        .take(n as usize)
}

/// A bid as a JSON record: a serialized `google.protobuf.Struct` (numbers are doubles).
fn json_record(b: &Bid) -> HStreamRecord {
    use prost_types::value::Kind;
    let num = |x: f64| prost_types::Value {
        kind: Some(Kind::NumberValue(x)),
    };
    let text = |s: &str| prost_types::Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    let mut s = prost_types::Struct::default();
    s.fields.insert("auction".into(), num(b.auction as f64));
    s.fields.insert("bidder".into(), num(b.bidder as f64));
    s.fields.insert("price".into(), num(b.price as f64));
    s.fields.insert("channel".into(), text(&b.channel));
    s.fields.insert("url".into(), text(&b.url));
    s.fields.insert("date_time".into(), num(b.date_time as f64));
    s.fields.insert("extra".into(), text(&b.extra));
    HStreamRecord {
        header: Some(HStreamRecordHeader {
            flag: Flag::Json as i32,
            attributes: Default::default(),
            key: String::new(),
        }),
        payload: s.encode_to_vec().into(),
    }
}

/// The JSON-lines files for Flink.
struct EventFiles {
    files: Vec<BufWriter<File>>,
    next: usize,
}

impl EventFiles {
    fn create(dir: &Path, n: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        // Old files of another run (other count) would be read by Flink too.
        for entry in std::fs::read_dir(dir).map_err(io_err(format!("reading {}", dir.display())))? {
            let path = entry.map_err(io_err("listing the events dir"))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                std::fs::remove_file(&path)
                    .map_err(io_err(format!("removing {}", path.display())))?;
            }
        }
        let files = (0..n)
            .map(|i| {
                let path = dir.join(format!("bids-{i}.json"));
                File::create(&path)
                    .map(|f| BufWriter::with_capacity(1 << 20, f))
                    .map_err(io_err(format!("creating {}", path.display())))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { files, next: 0 })
    }

    fn write(&mut self, b: &Bid) -> Result<()> {
        let line = BidLine {
            auction: b.auction as u64,
            bidder: b.bidder as u64,
            price: b.price as u64,
            channel: &b.channel,
            url: &b.url,
            date_time: b.date_time,
            extra: &b.extra,
        };
        let i = self.next % self.files.len();
        self.next += 1;
        let f = &mut self.files[i];
        serde_json::to_writer(&mut *f, &line)?;
        f.write_all(b"\n")
            .map_err(io_err("writing the events file"))
    }

    fn finish(self) -> Result<()> {
        for mut f in self.files {
            f.flush().map_err(io_err("writing the events file"))?;
        }
        Ok(())
    }
}

/// A statement's output: its rows (JSON objects; none for a command).
struct StatementOutput {
    rows: Vec<serde_json::Map<String, Value>>,
}

/// Runs `sql` (one or more statements) and collects every statement's output.
async fn execute(
    sql: &mut StreamCellSqlClient<Channel>,
    stmt: &str,
) -> Result<Vec<StatementOutput>> {
    let what = format!("Execute {stmt:?}");
    let mut stream = sql
        .execute(ExecuteRequest {
            sql: stmt.to_owned(),
        })
        .await
        .map_err(|status| BenchError::Rpc {
            what: what.clone(),
            status,
        })?
        .into_inner();
    let mut outputs = Vec::new();
    let mut current = StatementOutput { rows: Vec::new() };
    while let Some(msg) = stream.message().await.map_err(|status| BenchError::Rpc {
        what: what.clone(),
        status,
    })? {
        match msg.item {
            Some(Item::Columns(_)) | None => {}
            Some(Item::Rows(rows)) => {
                for json in rows.json {
                    match serde_json::from_str::<Value>(&json)? {
                        Value::Object(m) => current.rows.push(m),
                        other => {
                            return Err(BenchError::Protocol(format!(
                                "{what}: a row that is not a JSON object: {other}"
                            )))
                        }
                    }
                }
            }
            Some(Item::Done(_)) => {
                outputs.push(std::mem::replace(
                    &mut current,
                    StatementOutput { rows: Vec::new() },
                ));
            }
        }
    }
    Ok(outputs)
}

/// Runs one statement that returns rows and gives them.
async fn query_rows(
    sql: &mut StreamCellSqlClient<Channel>,
    stmt: &str,
) -> Result<Vec<serde_json::Map<String, Value>>> {
    let mut out = execute(sql, stmt).await?;
    match out.pop() {
        Some(o) => Ok(o.rows),
        None => Err(BenchError::Protocol(format!("{stmt:?} returned nothing"))),
    }
}

/// `FLUSH;`, sent again while the server reports its own 60 s timeout.
async fn flush(sql: &mut StreamCellSqlClient<Channel>) -> Result<u32> {
    let mut retries = 0;
    loop {
        match execute(sql, "FLUSH;").await {
            Ok(_) => return Ok(retries),
            Err(BenchError::Rpc { status, .. })
                if status.message().contains("FLUSH timed out") && retries < FLUSH_RETRIES =>
            {
                retries += 1;
                eprintln!("  FLUSH timed out on the server ({retries}); sending it again");
            }
            Err(e) => return Err(e),
        }
    }
}

fn num(row: &serde_json::Map<String, Value>, col: &str) -> Result<f64> {
    match row.get(col) {
        Some(Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| BenchError::Protocol(format!("column {col}: {n} is not a number"))),
        Some(Value::Null) => Ok(0.0),
        other => Err(BenchError::Protocol(format!(
            "column {col}: expected a number, got {other:?} in {row:?}"
        ))),
    }
}

/// One timed run of one query.
#[derive(Serialize)]
struct QueryRun {
    query: String,
    run: usize,
    sql: String,
    /// From sending the CREATE statement until FLUSH returned.
    seconds: f64,
    events_per_sec: f64,
    /// Just the CREATE statement's round trip (planning; the query starts in the background).
    create_seconds: f64,
    flush_retries: u32,
    /// CPU seconds of the server process over the timed interval, per second.
    server_cpu_cores: Option<f64>,
    /// From SHOW QUERIES after FLUSH.
    records_in: Option<u64>,
    rows_out: Option<u64>,
    /// What the pull queries read back.
    window_totals: Option<BTreeMap<u64, WindowTotals>>,
    filter_totals: Option<FilterTotals>,
    /// The results equal the expected ones (window totals exactly; the filter's row count and
    /// auction sum exactly, its price sum within 1e-9 relative).
    matches_expected: bool,
    mismatches: Vec<String>,
}

#[derive(Serialize)]
struct ExpectedReport {
    first_event_ms: u64,
    last_event_ms: u64,
    windows: BTreeMap<u64, WindowTotals>,
    filter: FilterTotals,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    events: u64,
    base_time: u64,
    batch_size: usize,
    sync: String,
    load_seconds: Option<f64>,
    load_events_per_sec: Option<f64>,
    events_dir: Option<PathBuf>,
    event_files: usize,
    expected: ExpectedReport,
    runs: Vec<QueryRun>,
}

fn win_sql(name: &str) -> String {
    format!(
        "CREATE VIEW {name} AS SELECT auction, window_start, window_end, COUNT(*) AS bids, \
         MAX(price) AS max_price FROM TUMBLE(bid, INTERVAL 10 SECOND, date_time) \
         GROUP BY auction, window_start, window_end;"
    )
}

fn filter_sql(name: &str) -> String {
    format!(
        "CREATE STREAM {name} AS SELECT auction, price * {EUR_RATE} AS price_eur, bidder, \
         date_time FROM bid WHERE auction % {AUCTION_MODULUS} = 0;"
    )
}

/// `records_in` and `rows_out` of query `name` from SHOW QUERIES.
async fn query_counters(
    sql: &mut StreamCellSqlClient<Channel>,
    name: &str,
) -> Result<(Option<u64>, Option<u64>)> {
    let rows = query_rows(sql, "SHOW QUERIES;").await?;
    for r in rows {
        if r.get("query_id").and_then(Value::as_str) == Some(name) {
            let status = r.get("status").and_then(Value::as_str).unwrap_or("?");
            if status != "RUNNING" {
                return Err(BenchError::Protocol(format!(
                    "query {name} is {status} after FLUSH: {r:?}"
                )));
            }
            return Ok((
                r.get("records_in").and_then(Value::as_u64),
                r.get("rows_out").and_then(Value::as_u64),
            ));
        }
    }
    Ok((None, None))
}

/// Reads the window totals of view `name` back.
async fn read_window_totals(
    sql: &mut StreamCellSqlClient<Channel>,
    name: &str,
) -> Result<BTreeMap<u64, WindowTotals>> {
    let stmt = format!(
        "SELECT CAST(window_start AS BIGINT) AS ws, COUNT(*) AS n_groups, SUM(bids) AS bids, \
         SUM(max_price) AS sum_max_price FROM {name} GROUP BY window_start ORDER BY ws;"
    );
    let mut out = BTreeMap::new();
    for r in query_rows(sql, &stmt).await? {
        out.insert(
            num(&r, "ws")? as u64,
            WindowTotals {
                groups: num(&r, "n_groups")? as u64,
                bids: num(&r, "bids")? as u64,
                sum_max_price: num(&r, "sum_max_price")? as u64,
            },
        );
    }
    Ok(out)
}

async fn read_filter_totals(
    sql: &mut StreamCellSqlClient<Channel>,
    name: &str,
) -> Result<FilterTotals> {
    let stmt = format!(
        "SELECT COUNT(*) AS n, SUM(auction) AS sum_auction, SUM(price_eur) AS sum_price_eur \
         FROM {name};"
    );
    let rows = query_rows(sql, &stmt).await?;
    let r = rows
        .first()
        .ok_or_else(|| BenchError::Protocol(format!("{stmt:?} returned no row")))?;
    Ok(FilterTotals {
        rows: num(r, "n")? as u64,
        sum_auction: num(r, "sum_auction")? as u64,
        sum_price_eur: num(r, "sum_price_eur")?,
    })
}

fn compare_windows(
    got: &BTreeMap<u64, WindowTotals>,
    want: &BTreeMap<u64, WindowTotals>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (start, w) in want {
        match got.get(start) {
            Some(g) if g == w => {}
            Some(g) => out.push(format!("window {start}: got {g:?}, expected {w:?}")),
            None => out.push(format!("window {start}: missing (expected {w:?})")),
        }
    }
    for start in got.keys().filter(|s| !want.contains_key(s)) {
        out.push(format!("window {start}: not expected ({:?})", got[start]));
    }
    out
}

fn compare_filter(got: &FilterTotals, want: &FilterTotals) -> Vec<String> {
    let close =
        (got.sum_price_eur - want.sum_price_eur).abs() <= 1e-9 * want.sum_price_eur.abs().max(1.0);
    if got.rows == want.rows && got.sum_auction == want.sum_auction && close {
        Vec::new()
    } else {
        vec![format!("filter: got {got:?}, expected {want:?}")]
    }
}

struct Ctx<'a> {
    sql: &'a mut StreamCellSqlClient<Channel>,
    server_pid: u32,
    events: u64,
    windows: &'a BTreeMap<u64, WindowTotals>,
    filter: &'a FilterTotals,
}

async fn run_query(ctx: &mut Ctx<'_>, query: &str, run: usize) -> Result<QueryRun> {
    let name = format!("q_{query}_{run}");
    let create = match query {
        "win" => win_sql(&name),
        "filter" => filter_sql(&name),
        other => {
            return Err(BenchError::Config(format!(
                "unknown query {other:?} (win, filter)"
            )))
        }
    };
    let cpu0 = cpu_seconds(Some(ctx.server_pid));
    let t0 = Instant::now();
    execute(ctx.sql, &create).await?;
    let create_seconds = t0.elapsed().as_secs_f64();
    let flush_retries = flush(ctx.sql).await?;
    let seconds = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(Some(ctx.server_pid));
    let server_cpu_cores = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some((b - a) / seconds),
        _ => None,
    };
    let (records_in, rows_out) = query_counters(ctx.sql, &name).await?;
    let mut mismatches = Vec::new();
    if records_in != Some(ctx.events) {
        mismatches.push(format!(
            "SHOW QUERIES records_in {records_in:?}, expected {}",
            ctx.events
        ));
    }
    let (mut window_totals, mut filter_totals) = (None, None);
    if query == "win" {
        let got = read_window_totals(ctx.sql, &name).await?;
        mismatches.extend(compare_windows(&got, ctx.windows));
        window_totals = Some(got);
        execute(ctx.sql, &format!("DROP VIEW {name};")).await?;
    } else {
        let got = read_filter_totals(ctx.sql, &name).await?;
        mismatches.extend(compare_filter(&got, ctx.filter));
        filter_totals = Some(got);
        execute(ctx.sql, &format!("DROP QUERY {name};")).await?;
    }
    Ok(QueryRun {
        query: query.to_owned(),
        run,
        sql: create,
        seconds,
        events_per_sec: ctx.events as f64 / seconds,
        create_seconds,
        flush_retries,
        server_cpu_cores,
        records_in,
        rows_out,
        window_totals,
        filter_totals,
        matches_expected: mismatches.is_empty(),
        mismatches,
    })
}

async fn shard_of(api: &mut HStreamApiClient<Channel>, stream: &str) -> Result<u64> {
    let shards = api
        .list_shards(ListShardsRequest {
            stream_name: stream.to_owned(),
        })
        .await
        .map_err(|status| BenchError::Rpc {
            what: format!("ListShards {stream}"),
            status,
        })?
        .into_inner()
        .shards;
    match shards.as_slice() {
        [one] => Ok(one.shard_id),
        other => Err(BenchError::Protocol(format!(
            "stream {stream} has {} shards, expected 1",
            other.len()
        ))),
    }
}

/// Generates the bids; appends them to stream `bid` (when `api` is given) and writes the
/// events files (when `files` is given). Returns the expected results and the load time.
async fn load(
    args: &Args,
    mut api: Option<(&mut HStreamApiClient<Channel>, u64)>,
    mut files: Option<EventFiles>,
) -> Result<(Expected, f64)> {
    let mut expected = Expected::default();
    let mut batch: Vec<HStreamRecord> = Vec::with_capacity(args.batch_size);
    let t0 = Instant::now();
    let mut generated = 0u64;
    let mut bids = bids(args.base_time, args.events).peekable();
    while bids.peek().is_some() {
        batch.clear();
        for b in bids.by_ref().take(args.batch_size) {
            expected.add(&b);
            if let Some(f) = files.as_mut() {
                f.write(&b)?;
            }
            if api.is_some() {
                batch.push(json_record(&b));
            }
            generated += 1;
        }
        if let Some((client, shard)) = api.as_mut() {
            let request = AppendRequest {
                stream_name: "bid".into(),
                shard_id: *shard,
                records: Some(encode_batch(&batch)),
            };
            let ids = bounded(RPC_TIMEOUT, "Append to bid", async {
                client
                    .append(request)
                    .await
                    .map_err(|status| BenchError::Rpc {
                        what: "Append to bid".into(),
                        status,
                    })
            })
            .await?
            .into_inner()
            .record_ids;
            if ids.len() != batch.len() {
                return Err(BenchError::Protocol(format!(
                    "Append returned {} ids for {} records",
                    ids.len(),
                    batch.len()
                )));
            }
        }
    }
    if generated != args.events {
        return Err(BenchError::Protocol(format!(
            "the generator gave {generated} bids, expected {}",
            args.events
        )));
    }
    if let Some(f) = files {
        f.finish()?;
    }
    Ok((expected, t0.elapsed().as_secs_f64()))
}

fn validate(args: &Args) -> Result<()> {
    let bad = |m: &str| Err(BenchError::Config(m.to_owned()));
    if args.events == 0 || args.batch_size == 0 || args.runs == 0 || args.event_files == 0 {
        return bad("--events, --batch-size, --runs and --event-files must be at least 1");
    }
    if !args.base_time.is_multiple_of(WINDOW_MS) {
        return bad("--base-time must be a multiple of 10000 (the window)");
    }
    if args.generate_only && args.events_dir.is_none() {
        return bad("--generate-only needs --events-dir");
    }
    for q in &args.queries {
        if q != "win" && q != "filter" {
            return bad("--queries takes win and filter");
        }
    }
    Ok(())
}

async fn run(args: Args) -> Result<()> {
    validate(&args)?;
    let json_file = match &args.json {
        Some(path) => {
            Some(File::create(path).map_err(io_err(format!("creating {}", path.display())))?)
        }
        None => None,
    };
    let files = match &args.events_dir {
        Some(dir) => Some(EventFiles::create(dir, args.event_files)?),
        None => None,
    };

    let mut runs = Vec::new();
    let (expected, load_seconds);
    if args.generate_only {
        let (e, secs) = load(&args, None, files).await?;
        println!(
            "wrote {} bids to {} in {secs:.1} s",
            args.events,
            args.events_dir
                .as_deref()
                .unwrap_or(Path::new(""))
                .display()
        );
        expected = e;
        load_seconds = None;
    } else {
        // The guard is declared before the clients so that it is dropped (server killed, data
        // deleted) last.
        let (server, addr) = start_server(&args.server_bin, &args.sync).await?;
        let channel = connect(&addr).await?;
        let mut api = HStreamApiClient::new(channel.clone());
        let mut sql = StreamCellSqlClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        println!(
            "nexmark: server {addr} (pid {}, --sync {}), {} bid events, base time {}",
            server.pid(),
            args.sync,
            args.events,
            args.base_time
        );
        execute(&mut sql, "CREATE STREAM bid;").await?;
        let shard = shard_of(&mut api, "bid").await?;
        let (e, secs) = load(&args, Some((&mut api, shard)), files).await?;
        println!(
            "loaded {} bids in {secs:.1} s ({:.0} events/s, {} per Append, one in flight)",
            args.events,
            args.events as f64 / secs,
            args.batch_size
        );
        expected = e;
        load_seconds = Some(secs);

        let windows = expected.window_totals();
        let mut ctx = Ctx {
            sql: &mut sql,
            server_pid: server.pid(),
            events: args.events,
            windows: &windows,
            filter: &expected.filter,
        };
        println!(
            "{:<8} {:>4} {:>9} {:>12} {:>9} {:>10} {:>10}  check",
            "query", "run", "seconds", "events/s", "srv_cpu", "records_in", "rows_out"
        );
        for run in 1..=args.runs {
            for q in &args.queries {
                let r = match run_query(&mut ctx, q, run).await {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("server log tail:\n{}", log_tail(&server.log_path(), 20));
                        return Err(e);
                    }
                };
                println!(
                    "{:<8} {:>4} {:>9.3} {:>12.0} {:>9} {:>10} {:>10}  {}",
                    r.query,
                    r.run,
                    r.seconds,
                    r.events_per_sec,
                    r.server_cpu_cores.map_or("-".into(), |c| format!("{c:.2}")),
                    r.records_in.map_or("-".into(), |n| n.to_string()),
                    r.rows_out.map_or("-".into(), |n| n.to_string()),
                    if r.matches_expected {
                        "ok".to_string()
                    } else {
                        format!("MISMATCH: {}", r.mismatches.join("; "))
                    }
                );
                runs.push(r);
            }
        }
        drop(server);
    }

    let windows = expected.window_totals();
    println!(
        "expected: {} windows, {} (auction, window) rows, filter keeps {} bids; event time \
         {} .. {} ({:.0} s)",
        windows.len(),
        windows.values().map(|w| w.groups).sum::<u64>(),
        expected.filter.rows,
        expected.first_ms,
        expected.last_ms,
        (expected.last_ms - expected.first_ms) as f64 / 1000.0
    );
    let mismatched = runs.iter().any(|r| !r.matches_expected);
    if let (Some(file), Some(path)) = (json_file, &args.json) {
        let report = Report {
            benchmark: "nexmark",
            events: args.events,
            base_time: args.base_time,
            batch_size: args.batch_size,
            sync: args.sync.clone(),
            load_seconds,
            load_events_per_sec: load_seconds.map(|s| args.events as f64 / s),
            events_dir: args.events_dir.clone(),
            event_files: args.event_files,
            expected: ExpectedReport {
                first_event_ms: expected.first_ms,
                last_event_ms: expected.last_ms,
                windows,
                filter: expected.filter,
            },
            runs,
        };
        serde_json::to_writer_pretty(BufWriter::new(file), &report)?;
        println!("wrote {}", path.display());
    }
    if mismatched {
        return Err(BenchError::Protocol(
            "StreamCell's results differ from the expected ones (see above)".into(),
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    streamcell_bench::main_with("nexmark", run(args))
}
