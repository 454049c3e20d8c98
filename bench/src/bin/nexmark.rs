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
//!    JSON lines for Flink (round robin over `--event-files` files, each in event-time order)
//!    and the expected results as `_expected.json` there (Flink's file source skips names
//!    starting with `_`);
//! 3. for each run and query, on that backlog: creates the query and times from sending the
//!    CREATE statement until `FLUSH;` returns (every bid processed), plus, for q5 and q7, the
//!    pull query that finishes them (events/s = events / that time; CPU = the server's CPU
//!    seconds over the same interval, from /proc/<pid>/stat); then reads the results back and
//!    compares them with the expected results computed here from the same bids, and drops the
//!    query (names carry the run number, so every run starts from scratch).
//!
//! The queries (`--queries`, default all) and what in each is continuous:
//! - `win`: continuous. `CREATE VIEW` of a 10 s TUMBLE window GROUP BY auction with COUNT(*)
//!   and MAX(price). Check: per window, rows, sum of counts, sum of max prices.
//! - `filter`: continuous. `CREATE STREAM … AS SELECT` (a persistent query writing its rows into
//!   a stream): `auction % 123 = 0`, `price * 0.908`. Check: rows, sum(auction), sum(price_eur).
//! - `q0` (Nexmark pass-through): continuous persistent query `SELECT auction, bidder, price,
//!   date_time, extra FROM bid` into a stream (every bid written again). Check: rows and sums
//!   of auction, bidder, price, date_time - base_time, length(extra).
//! - `q1` (currency conversion): continuous persistent query, `price * 0.908 AS price`.
//!   q0 and q1 write every bid into their output stream again (`--sync always`). A server built
//!   before commit 9ecd06e fails them (`error: … (max-record-size)`: a micro-batch's rows went
//!   out as one 14 MB batch, over the default 1 MiB `--max-record-size`).
//! - `q2` (selection): continuous persistent query `SELECT auction, price … WHERE auction % 123
//!   = 0`.
//! - `q5` (hot items): continuous `CREATE VIEW` of COUNT(*) per (auction, HOP window of 10 s
//!   every 2 s); then, once FLUSH returns, ONE PULL QUERY over the view picks per window the
//!   auctions whose count equals the window's largest (a join with the per-window MAX). The
//!   continuous part cannot do that itself (no subqueries in continuous queries).
//! - `q7` (highest bid): continuous `CREATE VIEW` of MAX(price) per 10 s TUMBLE window; then ONE
//!   PULL QUERY joins the view with the history of stream `bid` (a pull query reads at most
//!   2,000,000 records of a stream: more events make it fail, reported as `unsupported`) on
//!   price = max and window_start <= date_time < window_end.
//!   For q5 and q7 the timed interval includes the pull query, and the check is on its rows.
//!
//! JSON (`--json PATH`), stable; the top-level orchestrator bench/run.sh reads it:
//!
//! ```text
//! {"system": "streamcell", "events": N,
//!  "queries": {"<name>": {
//!      "events": N,
//!      "seconds": [each run: CREATE sent .. FLUSH returned (.. pull query answered for q5/q7)],
//!      "events_per_s": median of events / seconds,
//!      "cpu_cores": median of the server's CPU seconds / seconds,
//!      "events_per_s_per_core": median of events / server CPU seconds
//!          (= events/s divided by cpu_cores of the same run),
//!      "check": "ok" | "mismatch: …" | "unsupported: <the server's error>" | "error: …"
//!               | "unchecked: <why>",
//!      "shape": "<what is continuous and what is a pull query>",
//!      "sql": ["<statements of the timed interval>"]}},
//!  … plus "runs" (every run in detail), "expected" (the expected results), "benchmark",
//!  "base_time", "batch_size", "sync", "load_seconds", "load_events_per_sec", "events_dir",
//!  "event_files"}
//! ```
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
use serde_json::{json, Value};
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

/// Tumbling window of the aggregation queries (win, q7) and q5's HOP window size, ms.
const WINDOW_MS: u64 = 10_000;
/// q5's hop, ms.
const HOP_MS: u64 = 2_000;
/// The filter and q2 keep bids whose auction id is a multiple of this.
const AUCTION_MODULUS: u64 = 123;
/// Euros per dollar-cent in the projection (Nexmark q1's rate).
const EUR_RATE: f64 = 0.908;
/// How many times `FLUSH;` is sent again after it timed out on the server (60 s each) before
/// the benchmark gives up: a query slower than this is reported as stalled.
const FLUSH_RETRIES: u32 = 30;
/// Largest gRPC message the SQL client accepts (pull-query results can be large).
const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// Every query, in the default order.
const ALL_QUERIES: [&str; 7] = ["win", "filter", "q0", "q1", "q2", "q5", "q7"];

#[derive(Parser, Debug, Clone)]
#[command(
    name = "nexmark",
    about = "StreamCell continuous SQL on Nexmark bid events (win, filter, q0, q1, q2, q5, q7)"
)]
struct Args {
    /// Bid events to load and process.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// streamcell server binary to start.
    #[arg(long, default_value = "target/release/streamcell")]
    server_bin: PathBuf,
    /// `--sync` mode given to the server (also applies to what the persistent queries write).
    #[arg(long, default_value = "always")]
    sync: String,
    /// Records per Append call while loading.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Queries to run, comma separated: win (tumbling-window aggregation), filter (filter and
    /// projection), q0, q1, q2, q5, q7 (Nexmark's).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "win,filter,q0,q1,q2,q5,q7"
    )]
    queries: Vec<String>,
    /// Timed runs of each query (each a new query over the whole stream).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// The generator's base time, epoch milliseconds (fixed so that every run sees the same
    /// events; a multiple of the 10 s window).
    #[arg(long, default_value_t = 1_700_000_000_000)]
    base_time: u64,
    /// Also write the bids as JSON lines into this directory (for Flink), with the expected
    /// results as `_expected.json`.
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

/// Totals of a query's output by name (`rows`, `sum_auction`, …): integers are compared
/// exactly, floats within 1e-9 relative.
type Totals = BTreeMap<String, Value>;

fn totals<const N: usize>(pairs: [(&str, Value); N]) -> Totals {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Running sums of the projection queries (filter, q0, q1, q2).
#[derive(Default)]
struct ProjectionSums {
    rows: u64,
    sum_auction: u64,
    sum_bidder: u64,
    sum_price: u64,
    sum_price_eur: f64,
    sum_dt: u64,
    sum_extra_chars: u64,
}

/// What the queries must produce, computed from the bids themselves.
#[derive(Default)]
struct Expected {
    base_time: u64,
    /// Per window start (epoch ms): auction -> (bids, max price).
    windows: BTreeMap<u64, HashMap<u64, (u64, u64)>>,
    /// Per HOP window start: auction -> bids (q5).
    hop: BTreeMap<u64, HashMap<u64, u64>>,
    /// Per tumbling window start: the largest price and the bids (auction, bidder) with it (q7).
    highest: BTreeMap<u64, (u64, Vec<(u64, u64)>)>,
    all: ProjectionSums,
    filtered: ProjectionSums,
    first_ms: u64,
    last_ms: u64,
}

impl Expected {
    fn new(base_time: u64) -> Self {
        Self {
            base_time,
            ..Self::default()
        }
    }

    fn add(&mut self, b: &Bid) {
        let (auction, bidder, price, t) = (
            b.auction as u64,
            b.bidder as u64,
            b.price as u64,
            b.date_time,
        );
        let start = t - t % WINDOW_MS;
        let e = self
            .windows
            .entry(start)
            .or_default()
            .entry(auction)
            .or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.max(price);
        // The HOP windows holding t: starts at multiples of the hop in (t - size, t].
        let last = t - t % HOP_MS;
        for k in 0..WINDOW_MS / HOP_MS {
            *self
                .hop
                .entry(last - k * HOP_MS)
                .or_default()
                .entry(auction)
                .or_insert(0) += 1;
        }
        let h = self.highest.entry(start).or_insert((0, Vec::new()));
        if price > h.0 || h.1.is_empty() {
            *h = (price, vec![(auction, bidder)]);
        } else if price == h.0 {
            h.1.push((auction, bidder));
        }
        let a = &mut self.all;
        a.rows += 1;
        a.sum_auction += auction;
        a.sum_bidder += bidder;
        a.sum_price += price;
        a.sum_price_eur += price as f64 * EUR_RATE;
        a.sum_dt += t - self.base_time;
        a.sum_extra_chars += b.extra.chars().count() as u64;
        if auction.is_multiple_of(AUCTION_MODULUS) {
            let f = &mut self.filtered;
            f.rows += 1;
            f.sum_auction += auction;
            f.sum_price += price;
            f.sum_price_eur += price as f64 * EUR_RATE;
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

    /// The expected totals of every query but `win` (checked per window).
    fn totals(&self) -> BTreeMap<&'static str, Totals> {
        let (a, f) = (&self.all, &self.filtered);
        let mut out = BTreeMap::new();
        out.insert(
            "filter",
            totals([
                ("rows", json!(f.rows)),
                ("sum_auction", json!(f.sum_auction)),
                ("sum_price_eur", json!(f.sum_price_eur)),
            ]),
        );
        out.insert(
            "q0",
            totals([
                ("rows", json!(a.rows)),
                ("sum_auction", json!(a.sum_auction)),
                ("sum_bidder", json!(a.sum_bidder)),
                ("sum_price", json!(a.sum_price)),
                ("sum_date_time_minus_base", json!(a.sum_dt)),
                ("sum_extra_chars", json!(a.sum_extra_chars)),
            ]),
        );
        out.insert(
            "q1",
            totals([
                ("rows", json!(a.rows)),
                ("sum_auction", json!(a.sum_auction)),
                ("sum_bidder", json!(a.sum_bidder)),
                ("sum_price", json!(a.sum_price_eur)),
            ]),
        );
        out.insert(
            "q2",
            totals([
                ("rows", json!(f.rows)),
                ("sum_auction", json!(f.sum_auction)),
                ("sum_price", json!(f.sum_price)),
            ]),
        );
        let (mut rows, mut sum_auction, mut sum_num) = (0u64, 0u64, 0u64);
        for counts in self.hop.values() {
            let max = counts.values().copied().max().unwrap_or(0);
            for (&auction, &n) in counts {
                if n == max {
                    rows += 1;
                    sum_auction += auction;
                    sum_num += n;
                }
            }
        }
        out.insert(
            "q5",
            totals([
                ("rows", json!(rows)),
                ("windows", json!(self.hop.len())),
                ("sum_auction", json!(sum_auction)),
                ("sum_num", json!(sum_num)),
            ]),
        );
        let (mut rows, mut sum_auction, mut sum_price, mut sum_bidder) = (0u64, 0u64, 0u64, 0u64);
        for (price, bids) in self.highest.values() {
            for &(auction, bidder) in bids {
                rows += 1;
                sum_auction += auction;
                sum_price += price;
                sum_bidder += bidder;
            }
        }
        out.insert(
            "q7",
            totals([
                ("rows", json!(rows)),
                ("sum_auction", json!(sum_auction)),
                ("sum_price", json!(sum_price)),
                ("sum_bidder", json!(sum_bidder)),
            ]),
        );
        out
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
    /// The continuous query's CREATE statement.
    sql: String,
    /// The pull query of the timed interval (q5, q7).
    pull_sql: Option<String>,
    /// From sending the CREATE statement until FLUSH returned (and the pull query answered).
    seconds: f64,
    events_per_sec: f64,
    /// Just the CREATE statement's round trip (planning; the query starts in the background).
    create_seconds: f64,
    /// From sending the CREATE statement until FLUSH returned.
    flush_seconds: f64,
    /// The pull query's round trip (q5, q7).
    pull_seconds: Option<f64>,
    flush_retries: u32,
    /// CPU seconds of the server process over the timed interval.
    server_cpu_seconds: Option<f64>,
    /// The same, per second of the interval.
    server_cpu_cores: Option<f64>,
    /// events / server CPU seconds.
    events_per_sec_per_core: Option<f64>,
    /// From SHOW QUERIES after FLUSH.
    records_in: Option<u64>,
    rows_out: Option<u64>,
    /// What the pull queries read back (`win`).
    window_totals: Option<BTreeMap<u64, WindowTotals>>,
    /// What the pull queries read back (every other query).
    totals: Option<Totals>,
    /// The results equal the expected ones (window totals and integer totals exactly, float
    /// totals within 1e-9 relative).
    matches_expected: bool,
    mismatches: Vec<String>,
    /// "ok", "mismatch: …" or "unchecked: …".
    check: String,
}

#[derive(Serialize)]
struct ExpectedReport {
    events: u64,
    base_time: u64,
    first_event_ms: u64,
    last_event_ms: u64,
    windows: BTreeMap<u64, WindowTotals>,
    /// `totals.filter`, under its old name.
    filter: Totals,
    totals: BTreeMap<&'static str, Totals>,
}

/// One query's figures over its runs (the `queries` member of the JSON).
#[derive(Serialize)]
struct QuerySummary {
    events: u64,
    seconds: Vec<f64>,
    events_per_s: Option<f64>,
    cpu_cores: Option<f64>,
    events_per_s_per_core: Option<f64>,
    check: String,
    shape: &'static str,
    sql: Vec<String>,
}

#[derive(Serialize)]
struct Report {
    system: &'static str,
    benchmark: &'static str,
    events: u64,
    queries: BTreeMap<String, QuerySummary>,
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

/// What a continuous query creates.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    View,
    Stream,
}

/// One query as StreamCell runs it.
struct Spec {
    kind: Kind,
    /// The CREATE statement.
    create: String,
    /// The pull query that finishes it, inside the timed interval.
    pull: Option<String>,
    /// The untimed pull query that totals a stream's output (names as in `Expected::totals`).
    check: Option<String>,
}

fn shape(query: &str) -> &'static str {
    match query {
        "win" => {
            "continuous: materialized view (TUMBLE 10 s GROUP BY auction, COUNT and MAX), timed \
             CREATE..FLUSH"
        }
        "filter" => {
            "continuous: persistent query (filter + projection) writing its rows into a stream, \
             timed CREATE..FLUSH"
        }
        "q0" => {
            "continuous: persistent query (projection of every bid) writing every row into a \
             stream, timed CREATE..FLUSH"
        }
        "q1" => {
            "continuous: persistent query (projection, price * 0.908) writing every row into a \
             stream, timed CREATE..FLUSH"
        }
        "q2" => {
            "continuous: persistent query (filter auction % 123 = 0) writing its rows into a \
             stream, timed CREATE..FLUSH"
        }
        "q5" => {
            "continuous: materialized view of COUNT(*) per (auction, HOP 10 s every 2 s); then \
             one pull query over the view picks each window's auctions with the largest count \
             (join with the per-window MAX); timed CREATE..FLUSH + the pull query"
        }
        "q7" => {
            "continuous: materialized view of MAX(price) per TUMBLE 10 s window; then one pull \
             query joins it with the history of stream bid (at most 2,000,000 records) on price \
             and the window's bounds; timed CREATE..FLUSH + the pull query"
        }
        _ => "unknown",
    }
}

fn spec(query: &str, name: &str, base_time: u64) -> Result<Spec> {
    let stream = |create: String, check: String| Spec {
        kind: Kind::Stream,
        create,
        pull: None,
        check: Some(check),
    };
    Ok(match query {
        "win" => Spec {
            kind: Kind::View,
            create: format!(
                "CREATE VIEW {name} AS SELECT auction, window_start, window_end, COUNT(*) AS \
                 bids, MAX(price) AS max_price FROM TUMBLE(bid, INTERVAL 10 SECOND, date_time) \
                 GROUP BY auction, window_start, window_end;"
            ),
            pull: None,
            check: None,
        },
        "filter" => stream(
            format!(
                "CREATE STREAM {name} AS SELECT auction, price * {EUR_RATE} AS price_eur, \
                 bidder, date_time FROM bid WHERE auction % {AUCTION_MODULUS} = 0;"
            ),
            format!(
                "SELECT COUNT(*) AS n_rows, SUM(auction) AS sum_auction, SUM(price_eur) AS \
                 sum_price_eur FROM {name};"
            ),
        ),
        "q0" => stream(
            format!(
                "CREATE STREAM {name} AS SELECT auction, bidder, price, date_time, extra \
                 FROM bid;"
            ),
            format!(
                "SELECT COUNT(*) AS n_rows, SUM(auction) AS sum_auction, SUM(bidder) AS \
                 sum_bidder, SUM(price) AS sum_price, SUM(date_time - {base_time}) AS \
                 sum_date_time_minus_base, SUM(length(extra)) AS sum_extra_chars FROM {name};"
            ),
        ),
        "q1" => stream(
            format!(
                "CREATE STREAM {name} AS SELECT auction, bidder, price * {EUR_RATE} AS price, \
                 date_time, extra FROM bid;"
            ),
            format!(
                "SELECT COUNT(*) AS n_rows, SUM(auction) AS sum_auction, SUM(bidder) AS \
                 sum_bidder, SUM(price) AS sum_price FROM {name};"
            ),
        ),
        "q2" => stream(
            format!(
                "CREATE STREAM {name} AS SELECT auction, price FROM bid \
                 WHERE auction % {AUCTION_MODULUS} = 0;"
            ),
            format!(
                "SELECT COUNT(*) AS n_rows, SUM(auction) AS sum_auction, SUM(price) AS sum_price \
                 FROM {name};"
            ),
        ),
        "q5" => Spec {
            kind: Kind::View,
            create: format!(
                "CREATE VIEW {name} AS SELECT auction, window_start, window_end, COUNT(*) AS num \
                 FROM HOP(bid, INTERVAL 10 SECOND, INTERVAL 2 SECOND, date_time) \
                 GROUP BY auction, window_start, window_end;"
            ),
            pull: Some(format!(
                "SELECT c.auction AS auction, c.num AS num, CAST(c.window_start AS BIGINT) AS ws \
                 FROM {name} c JOIN (SELECT window_start, MAX(num) AS maxn FROM {name} \
                 GROUP BY window_start) m ON c.window_start = m.window_start \
                 WHERE c.num >= m.maxn;"
            )),
            check: None,
        },
        "q7" => Spec {
            kind: Kind::View,
            create: format!(
                "CREATE VIEW {name} AS SELECT window_start, window_end, MAX(price) AS maxprice \
                 FROM TUMBLE(bid, INTERVAL 10 SECOND, date_time) \
                 GROUP BY window_start, window_end;"
            ),
            pull: Some(format!(
                "SELECT b.auction AS auction, b.price AS price, b.bidder AS bidder, \
                 b.date_time AS date_time, b.extra AS extra FROM bid b JOIN {name} m \
                 ON b.price = m.maxprice WHERE b.date_time >= CAST(m.window_start AS BIGINT) \
                 AND b.date_time < CAST(m.window_end AS BIGINT);"
            )),
            check: None,
        },
        other => {
            return Err(BenchError::Config(format!(
                "unknown query {other:?} ({})",
                ALL_QUERIES.join(", ")
            )))
        }
    })
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
                let error = r
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("no error given");
                return Err(BenchError::Protocol(format!(
                    "query {name} is {status} after FLUSH: {error}"
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

/// The one row of a totals query, as `Totals` (every column a number; `n_rows` is `rows`).
fn row_totals(rows: &[serde_json::Map<String, Value>], stmt: &str) -> Result<Totals> {
    let r = rows
        .first()
        .ok_or_else(|| BenchError::Protocol(format!("{stmt:?} returned no row")))?;
    let mut out = Totals::new();
    for k in r.keys() {
        let name = if k == "n_rows" { "rows" } else { k.as_str() };
        out.insert(name.to_owned(), json!(num(r, k)?));
    }
    Ok(out)
}

/// q5's totals from the rows of its pull query.
fn q5_totals(rows: &[serde_json::Map<String, Value>]) -> Result<Totals> {
    let (mut sum_auction, mut sum_num) = (0f64, 0f64);
    let mut windows = std::collections::BTreeSet::new();
    for r in rows {
        sum_auction += num(r, "auction")?;
        sum_num += num(r, "num")?;
        windows.insert(num(r, "ws")? as i64);
    }
    Ok(totals([
        ("rows", json!(rows.len())),
        ("windows", json!(windows.len())),
        ("sum_auction", json!(sum_auction)),
        ("sum_num", json!(sum_num)),
    ]))
}

/// q7's totals from the rows of its pull query.
fn q7_totals(rows: &[serde_json::Map<String, Value>]) -> Result<Totals> {
    let (mut sum_auction, mut sum_price, mut sum_bidder) = (0f64, 0f64, 0f64);
    for r in rows {
        sum_auction += num(r, "auction")?;
        sum_price += num(r, "price")?;
        sum_bidder += num(r, "bidder")?;
    }
    Ok(totals([
        ("rows", json!(rows.len())),
        ("sum_auction", json!(sum_auction)),
        ("sum_price", json!(sum_price)),
        ("sum_bidder", json!(sum_bidder)),
    ]))
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

/// Differences between totals: integers (in `want`) exactly, floats within 1e-9 relative.
fn compare_totals(query: &str, got: &Totals, want: &Totals) -> Vec<String> {
    let mut out = Vec::new();
    for (k, w) in want {
        let g = got.get(k).and_then(Value::as_f64);
        let ok = match (g, w.as_u64(), w.as_f64()) {
            (Some(g), Some(wi), _) => g == wi as f64,
            (Some(g), None, Some(wf)) => (g - wf).abs() <= 1e-9 * wf.abs().max(1.0),
            _ => false,
        };
        if !ok {
            out.push(format!("{query} {k}: got {g:?}, expected {w}"));
        }
    }
    out
}

struct Ctx<'a> {
    sql: &'a mut StreamCellSqlClient<Channel>,
    server_pid: u32,
    events: u64,
    base_time: u64,
    windows: &'a BTreeMap<u64, WindowTotals>,
    totals: &'a BTreeMap<&'static str, Totals>,
}

/// Drops what query `name` made, ignoring errors (it may not exist).
async fn drop_query(sql: &mut StreamCellSqlClient<Channel>, kind: Kind, name: &str) {
    let stmts = match kind {
        Kind::View => vec![format!("DROP VIEW IF EXISTS {name};")],
        Kind::Stream => vec![
            format!("DROP QUERY IF EXISTS {name};"),
            format!("DROP STREAM IF EXISTS {name};"),
        ],
    };
    for stmt in stmts {
        if let Err(e) = execute(sql, &stmt).await {
            eprintln!("  {stmt} failed: {e}");
        }
    }
}

/// How a query run failed: the statement was refused (`unsupported`) or something else broke.
enum RunError {
    Unsupported(String),
    Failed(BenchError),
}

impl From<BenchError> for RunError {
    fn from(e: BenchError) -> Self {
        RunError::Failed(e)
    }
}

/// Runs `stmt`, a statement of the query itself: a refusal by the server is `Unsupported`.
async fn query_statement(
    sql: &mut StreamCellSqlClient<Channel>,
    stmt: &str,
) -> std::result::Result<Vec<StatementOutput>, RunError> {
    match execute(sql, stmt).await {
        Ok(out) => Ok(out),
        Err(BenchError::Rpc { status, .. })
            if matches!(
                status.code(),
                tonic::Code::InvalidArgument
                    | tonic::Code::Unimplemented
                    | tonic::Code::FailedPrecondition
            ) =>
        {
            Err(RunError::Unsupported(status.message().to_owned()))
        }
        Err(e) => Err(RunError::Failed(e)),
    }
}

async fn run_query(
    ctx: &mut Ctx<'_>,
    query: &str,
    run: usize,
) -> std::result::Result<QueryRun, RunError> {
    let name = format!("q_{query}_{run}");
    let spec = spec(query, &name, ctx.base_time)?;
    let result = timed_query(ctx, query, run, &name, &spec).await;
    drop_query(ctx.sql, spec.kind, &name).await;
    result
}

async fn timed_query(
    ctx: &mut Ctx<'_>,
    query: &str,
    run: usize,
    name: &str,
    spec: &Spec,
) -> std::result::Result<QueryRun, RunError> {
    let cpu0 = cpu_seconds(Some(ctx.server_pid));
    let t0 = Instant::now();
    query_statement(ctx.sql, &spec.create).await?;
    let create_seconds = t0.elapsed().as_secs_f64();
    let flush_retries = flush(ctx.sql).await?;
    let flush_seconds = t0.elapsed().as_secs_f64();
    let mut pull_rows = None;
    if let Some(pull) = &spec.pull {
        let mut out = query_statement(ctx.sql, pull).await?;
        pull_rows = Some(out.pop().map(|o| o.rows).unwrap_or_default());
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(Some(ctx.server_pid));
    let server_cpu_seconds = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let (records_in, rows_out) = query_counters(ctx.sql, name).await?;
    let mut mismatches = Vec::new();
    if records_in != Some(ctx.events) {
        mismatches.push(format!(
            "SHOW QUERIES records_in {records_in:?}, expected {}",
            ctx.events
        ));
    }
    let (mut window_totals, mut got_totals, mut unchecked) = (None, None, None);
    if query == "win" {
        let got = read_window_totals(ctx.sql, name).await?;
        mismatches.extend(compare_windows(&got, ctx.windows));
        window_totals = Some(got);
    } else {
        let got = match (&spec.check, &pull_rows) {
            (Some(check), _) => match execute(ctx.sql, check).await {
                Ok(mut out) => Some(row_totals(
                    &out.pop().map(|o| o.rows).unwrap_or_default(),
                    check,
                )?),
                Err(e) => {
                    // The output is there, only reading it back failed (a pull query reads at
                    // most 2,000,000 records of a stream).
                    unchecked = Some(format!("unchecked: the check query failed: {e}"));
                    None
                }
            },
            (None, Some(rows)) if query == "q5" => Some(q5_totals(rows)?),
            (None, Some(rows)) => Some(q7_totals(rows)?),
            (None, None) => None,
        };
        if let (Some(got), Some(want)) = (&got, ctx.totals.get(query)) {
            mismatches.extend(compare_totals(query, got, want));
        }
        got_totals = got;
    }
    let check = if !mismatches.is_empty() {
        format!("mismatch: {}", mismatches.join("; "))
    } else if let Some(u) = unchecked {
        u
    } else {
        "ok".to_owned()
    };
    Ok(QueryRun {
        query: query.to_owned(),
        run,
        sql: spec.create.clone(),
        pull_sql: spec.pull.clone(),
        seconds,
        events_per_sec: ctx.events as f64 / seconds,
        create_seconds,
        flush_seconds,
        pull_seconds: spec.pull.as_ref().map(|_| seconds - flush_seconds),
        flush_retries,
        server_cpu_seconds,
        server_cpu_cores: server_cpu_seconds.map(|c| c / seconds),
        events_per_sec_per_core: server_cpu_seconds
            .filter(|&c| c > 0.0)
            .map(|c| ctx.events as f64 / c),
        records_in,
        rows_out,
        window_totals,
        totals: got_totals,
        matches_expected: mismatches.is_empty(),
        mismatches,
        check,
    })
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// The `queries` member: per query, the medians of its runs and one check verdict.
fn summarize(
    args: &Args,
    runs: &[QueryRun],
    failed: &HashMap<String, String>,
) -> BTreeMap<String, QuerySummary> {
    let mut out = BTreeMap::new();
    for q in &args.queries {
        let mine: Vec<&QueryRun> = runs.iter().filter(|r| &r.query == q).collect();
        let check = if let Some(f) = failed.get(q) {
            f.clone()
        } else if let Some(bad) = mine.iter().find(|r| r.check != "ok") {
            format!("{} (run {})", bad.check, bad.run)
        } else if mine.is_empty() {
            "unchecked: not run".to_owned()
        } else {
            "ok".to_owned()
        };
        let mut sql = Vec::new();
        if let Ok(s) = spec(q, &format!("q_{q}_N"), args.base_time) {
            sql.push(s.create);
            sql.extend(s.pull);
        }
        let all_cpu = mine.iter().all(|r| r.events_per_sec_per_core.is_some());
        out.insert(
            q.clone(),
            QuerySummary {
                events: args.events,
                seconds: mine.iter().map(|r| r.seconds).collect(),
                events_per_s: median(mine.iter().map(|r| r.events_per_sec).collect()),
                cpu_cores: median(mine.iter().filter_map(|r| r.server_cpu_cores).collect()),
                events_per_s_per_core: if all_cpu {
                    median(
                        mine.iter()
                            .filter_map(|r| r.events_per_sec_per_core)
                            .collect(),
                    )
                } else {
                    None
                },
                check,
                shape: shape(q),
                sql,
            },
        );
    }
    out
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
    let mut expected = Expected::new(args.base_time);
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
        if !ALL_QUERIES.contains(&q.as_str()) {
            return Err(BenchError::Config(format!(
                "unknown query {q:?}: --queries takes {}",
                ALL_QUERIES.join(",")
            )));
        }
    }
    Ok(())
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let file = File::create(path).map_err(io_err(format!("creating {}", path.display())))?;
    let mut w = BufWriter::new(file);
    serde_json::to_writer_pretty(&mut w, value)?;
    w.flush()
        .map_err(io_err(format!("writing {}", path.display())))
}

async fn run(args: Args) -> Result<()> {
    validate(&args)?;
    if let Some(path) = &args.json {
        // Fail early on an unwritable path, not after the runs.
        File::create(path).map_err(io_err(format!("creating {}", path.display())))?;
    }
    let files = match &args.events_dir {
        Some(dir) => Some(EventFiles::create(dir, args.event_files)?),
        None => None,
    };

    let mut runs = Vec::new();
    let mut failed: HashMap<String, String> = HashMap::new();
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
        let totals = expected.totals();
        let mut ctx = Ctx {
            sql: &mut sql,
            server_pid: server.pid(),
            events: args.events,
            base_time: args.base_time,
            windows: &windows,
            totals: &totals,
        };
        println!(
            "{:<7} {:>3} {:>8} {:>11} {:>7} {:>11} {:>10} {:>9}  check",
            "query", "run", "seconds", "events/s", "srv_cpu", "ev/s/core", "records_in", "rows_out"
        );
        for run in 1..=args.runs {
            for q in &args.queries {
                if failed.contains_key(q) {
                    continue;
                }
                let r = match run_query(&mut ctx, q, run).await {
                    Ok(r) => r,
                    Err(RunError::Unsupported(message)) => {
                        println!("{q:<7} {run:>3} unsupported: {message}");
                        failed.insert(q.clone(), format!("unsupported: {message}"));
                        continue;
                    }
                    Err(RunError::Failed(e)) => {
                        eprintln!("{q} run {run} failed: {e}");
                        eprintln!("server log tail:\n{}", log_tail(&server.log_path(), 20));
                        failed.insert(q.clone(), format!("error: {e}"));
                        continue;
                    }
                };
                let opt = |v: Option<f64>, digits: usize| {
                    v.map_or("-".into(), |c| format!("{c:.digits$}"))
                };
                println!(
                    "{:<7} {:>3} {:>8.3} {:>11.0} {:>7} {:>11} {:>10} {:>9}  {}",
                    r.query,
                    r.run,
                    r.seconds,
                    r.events_per_sec,
                    opt(r.server_cpu_cores, 2),
                    opt(r.events_per_sec_per_core, 0),
                    r.records_in.map_or("-".into(), |n| n.to_string()),
                    r.rows_out.map_or("-".into(), |n| n.to_string()),
                    r.check
                );
                runs.push(r);
            }
        }
        drop(server);
    }

    let windows = expected.window_totals();
    let totals = expected.totals();
    let expected_report = ExpectedReport {
        events: args.events,
        base_time: args.base_time,
        first_event_ms: expected.first_ms,
        last_event_ms: expected.last_ms,
        windows,
        filter: totals.get("filter").cloned().unwrap_or_default(),
        totals,
    };
    println!(
        "expected: {} windows, {} (auction, window) rows, filter keeps {} bids; q5 {}, q7 {}; \
         event time {} .. {} ({:.0} s)",
        expected_report.windows.len(),
        expected_report
            .windows
            .values()
            .map(|w| w.groups)
            .sum::<u64>(),
        expected.filtered.rows,
        serde_json::to_string(&expected_report.totals.get("q5"))?,
        serde_json::to_string(&expected_report.totals.get("q7"))?,
        expected.first_ms,
        expected.last_ms,
        (expected.last_ms - expected.first_ms) as f64 / 1000.0
    );
    if let Some(dir) = &args.events_dir {
        // For flink_job.py, next to the bids (its file source skips names starting with `_`).
        write_json(&dir.join("_expected.json"), &expected_report)?;
    }
    let queries = summarize(&args, &runs, &failed);
    let not_ok: Vec<String> = queries
        .iter()
        .filter(|(_, s)| s.check.starts_with("mismatch") || s.check.starts_with("error"))
        .map(|(q, s)| format!("{q}: {}", s.check))
        .collect();
    if let Some(path) = &args.json {
        let report = Report {
            system: "streamcell",
            benchmark: "nexmark",
            events: args.events,
            queries,
            base_time: args.base_time,
            batch_size: args.batch_size,
            sync: args.sync.clone(),
            load_seconds,
            load_events_per_sec: load_seconds.map(|s| args.events as f64 / s),
            events_dir: args.events_dir.clone(),
            event_files: args.event_files,
            expected: expected_report,
            runs,
        };
        write_json(path, &report)?;
        println!("wrote {}", path.display());
    }
    if !not_ok.is_empty() {
        return Err(BenchError::Protocol(format!(
            "StreamCell's results are not all as expected: {}",
            not_ok.join("; ")
        )));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    streamcell_bench::main_with("nexmark", run(args))
}
