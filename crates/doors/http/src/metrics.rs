//! `/metrics`, rendered at scrape time in the Prometheus text exposition format 0.0.4 from
//! the stream service's counters (per stream: appends, append latency, records read; per
//! subscription: deliveries, acknowledgements, redeliveries, unacknowledged records,
//! `streamcell_service::counters`) and from what the engine (queries, views, DataCell), the
//! store (bytes on disk) and the process (resident memory, uptime) report.
//!
//! There is no global registry: every counter is an atomic owned by the component that
//! counts, and a scrape reads them. The text format is written here ([`Exposition`]) rather
//! than with a client library: it is small, and the values are pulled from the components,
//! which the libraries' registries would need custom collectors for.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use streamcell_engine::datacell::adapter::{Adapter, Direction};
use streamcell_engine::Engine;
use streamcell_service::counters::{
    Histogram, HistogramSnapshot, ReadVia, StreamCounters, SubscriptionCounters, LATENCY_BUCKETS,
};
use streamcell_service::Service;
use streamcell_store::{now_ms, ReadLimits, ShardDamage, Store};

/// Most streams a scrape lists one by one: the busiest; the others are summed into one series
/// labelled [`OTHER_STREAMS`], so that a server with 10,000 streams answers a small scrape.
pub const MAX_STREAM_SERIES: usize = 200;

/// The `stream` label of the sum of the streams past [`MAX_STREAM_SERIES`] (stream names start
/// with a letter, so no stream has it).
pub const OTHER_STREAMS: &str = "_other";

// ---- the text format -------------------------------------------------------------------

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when the server restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

/// A sample value: integers are written exactly, floats as Prometheus reads them.
#[derive(Debug, Clone, Copy)]
pub enum Value {
    /// An integer.
    Int(u64),
    /// A float.
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

/// Writes a float as the text format reads it (`+Inf`, `-Inf`, `NaN`; no exponent needed).
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a `# HELP` text: backslash and line feed.
pub fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A Prometheus text exposition (format 0.0.4) being written: families one after the
/// other, each with its `# HELP` and `# TYPE` lines and then all of its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family; its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], extra: Option<(&str, &str)>) {
        if labels.is_empty() && extra.is_none() {
            return;
        }
        self.out.push('{');
        for (i, (k, v)) in labels.iter().chain(extra.as_ref()).enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "{k}=\"{}\"", escape_label_value(v));
        }
        self.out.push('}');
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        self.out.push_str(name);
        self.labels(labels, None);
        match value.into() {
            Value::Int(v) => {
                let _ = writeln!(self.out, " {v}");
            }
            Value::Float(v) => {
                let _ = writeln!(self.out, " {}", format_float(v));
            }
        }
    }

    /// A histogram's samples: cumulative `_bucket{le=…}` lines ending with `+Inf`, then
    /// `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for (le, n) in &h.buckets {
            self.out.push_str(&bucket);
            self.labels(labels, Some(("le", &format_float(*le))));
            let _ = writeln!(self.out, " {n}");
        }
        self.out.push_str(&bucket);
        self.labels(labels, Some(("le", "+Inf")));
        let _ = writeln!(self.out, " {}", h.count);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

// ---- the scrape -------------------------------------------------------------------------

/// What a scrape reads.
pub struct Sources {
    /// The stream service: its store (streams, shard bounds, bytes on disk), its counters
    /// and its running subscriptions.
    pub service: Arc<Service>,
    /// The SQL engine (queries, views, DataCell).
    pub engine: Arc<Engine>,
}

/// What a query lags behind its sources' tails.
#[derive(Debug, Clone, Copy, Default)]
struct Lag {
    /// Batches appended to its sources that it has not processed.
    batches: u64,
    /// Age of the oldest of those batches (publish time to now), in seconds.
    seconds: f64,
}

/// How far `progress` (processed `(shard, next sequence number)`) is behind each shard's
/// tail. Blocking: it reads the first unprocessed batch of each shard for its time.
fn lag(store: &Store, progress: &[(u64, u64)], now: i64) -> Lag {
    let mut lag = Lag::default();
    for &(shard, next) in progress {
        let Ok(bounds) = store.log.bounds(shard) else {
            continue;
        };
        let from = next.max(bounds.start_seq);
        let behind = bounds.next_seq.saturating_sub(from);
        if behind == 0 {
            continue;
        }
        lag.batches += behind;
        let first = store.log.read(
            shard,
            from,
            ReadLimits {
                max_batches: 1,
                max_bytes: 1,
            },
        );
        if let Some(b) = first.ok().and_then(|v| v.into_iter().next()) {
            let age = (now - b.timestamp_ms).max(0) as f64 / 1000.0;
            lag.seconds = lag.seconds.max(age);
        }
    }
    lag
}

/// The process's resident memory in bytes (Linux: `/proc/self/statm`; elsewhere `None`).
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().map(|p| pages * p)
}

/// Renders every metric (the body of `GET /metrics`).
pub async fn render(src: &Sources) -> Result<String, String> {
    let queries = src.engine.query_stats();
    let store = src.service.store().clone();
    let progress: Vec<Vec<(u64, u64)>> = queries.iter().map(|q| q.progress.clone()).collect();
    // Catalog, directory sizes and lag reads touch the disk: off the async executor.
    let (streams, stream_bytes, total_bytes, lags, damaged) =
        tokio::task::spawn_blocking(move || {
            let streams = store.catalog.list_streams().map_err(|e| e.to_string())?;
            let bytes: Vec<u64> = streams
                .iter()
                .map(|s| s.shards.iter().map(|&id| store.shard_disk_bytes(id)).sum())
                .collect();
            // Only damaged shards get a series, so a healthy server's scrape stays small.
            let damaged: Vec<(String, u64, ShardDamage)> = streams
                .iter()
                .flat_map(|s| s.shards.iter().map(move |&id| (s, id)))
                .filter_map(|(s, id)| {
                    let d = store.log.damage(id).ok()?;
                    (d.lost_batches() + d.unreadable_batches() > 0).then(|| (s.name.clone(), id, d))
                })
                .collect();
            let total = store.disk_bytes();
            let now = now_ms();
            let lags: Vec<Option<Lag>> = progress
                .iter()
                .map(|p| (!p.is_empty()).then(|| lag(&store, p, now)))
                .collect();
            Ok::<_, String>((streams, bytes, total, lags, damaged))
        })
        .await
        .map_err(|e| format!("the metrics task failed: {e}"))??;

    let mut x = Exposition::new();
    let m = src.service.metrics();

    // -- streams
    x.family(
        "streamcell_streams",
        Kind::Gauge,
        "Streams in the catalog (past 200, per-stream series list the busiest 200 and sum the \
         rest under stream=\"_other\").",
    );
    x.sample("streamcell_streams", &[], streams.len() as u64);
    let mut listed: Vec<(String, Option<Arc<StreamCounters>>, u64)> = streams
        .iter()
        .zip(&stream_bytes)
        .map(|(s, &b)| (s.name.clone(), m.stream_if_counted(&s.name), b))
        .collect();
    if listed.len() > MAX_STREAM_SERIES {
        let busy = |c: &Option<Arc<StreamCounters>>| c.as_ref().map_or(0, |c| c.activity());
        listed.sort_by(|a, b| busy(&b.1).cmp(&busy(&a.1)).then_with(|| a.0.cmp(&b.0)));
        let rest = listed.split_off(MAX_STREAM_SERIES);
        let other = Arc::new(StreamCounters::default());
        let mut other_bytes = 0;
        for (_, c, b) in &rest {
            if let Some(c) = c {
                c.add_into(&other);
            }
            other_bytes += b;
        }
        listed.push((OTHER_STREAMS.to_string(), Some(other), other_bytes));
    }
    let counted: Vec<(String, Option<Arc<StreamCounters>>)> = listed
        .iter()
        .map(|(n, c, _)| (n.clone(), c.clone()))
        .collect();
    let per_stream =
        |x: &mut Exposition, name: &str, help: &str, f: &dyn Fn(&StreamCounters) -> u64| {
            x.family(name, Kind::Counter, help);
            for (stream, c) in &counted {
                x.sample(name, &[("stream", stream)], c.as_deref().map_or(0, f));
            }
        };
    per_stream(
        &mut x,
        "streamcell_stream_appended_records_total",
        "Records appended to the stream (acknowledged appends).",
        &|c| c.appended_records.load(Ordering::Relaxed),
    );
    per_stream(
        &mut x,
        "streamcell_stream_appended_bytes_total",
        "Bytes appended to the stream (batch payloads as stored, compressed as sent).",
        &|c| c.appended_bytes.load(Ordering::Relaxed),
    );
    per_stream(
        &mut x,
        "streamcell_stream_appended_batches_total",
        "Batches appended to the stream (one per Append call).",
        &|c| c.appended_batches.load(Ordering::Relaxed),
    );
    x.family(
        "streamcell_stream_append_latency_seconds",
        Kind::Histogram,
        "Time from an Append reaching its handler to its durable acknowledgement.",
    );
    let empty = Histogram::new(&LATENCY_BUCKETS).snapshot();
    for (stream, c) in &counted {
        let snap = c
            .as_ref()
            .map_or_else(|| empty.clone(), |c| c.append_latency.snapshot());
        x.histogram(
            "streamcell_stream_append_latency_seconds",
            &[("stream", stream)],
            &snap,
        );
    }
    x.family(
        "streamcell_stream_read_records_total",
        Kind::Counter,
        "Records sent to clients, by how they were read (shard_reader: ReadShard; \
         streaming_read: ReadShardStream, ReadStream, ReadSingleShardStream; subscription: \
         deliveries, redeliveries included).",
    );
    for (stream, c) in &counted {
        for via in ReadVia::ALL {
            x.sample(
                "streamcell_stream_read_records_total",
                &[("stream", stream), ("via", via.label())],
                c.as_ref().map_or(0, |c| c.read_count(via)),
            );
        }
    }
    x.family(
        "streamcell_stream_storage_bytes",
        Kind::Gauge,
        "Bytes of the stream's shard logs on disk (segments and indexes).",
    );
    for (name, _, b) in &listed {
        x.sample("streamcell_stream_storage_bytes", &[("stream", name)], *b);
    }

    for (name, help, count) in [
        (
            "streamcell_shard_lost_batches",
            "Acknowledged batches the recovery at this start found missing from a shard's log \
             (only damaged shards are listed; see docs/storage-format.md).",
            ShardDamage::lost_batches as fn(&ShardDamage) -> u64,
        ),
        (
            "streamcell_shard_unreadable_batches",
            "Batches of a shard that reads refuse as damaged or lost (DATA_LOSS); only damaged \
             shards are listed.",
            ShardDamage::unreadable_batches,
        ),
    ] {
        x.family(name, Kind::Gauge, help);
        for (stream, shard, d) in &damaged {
            x.sample(
                name,
                &[("stream", stream), ("shard", &shard.to_string())],
                count(d),
            );
        }
    }

    // -- subscriptions
    let subs: Vec<_> = src
        .service
        .subscriptions()
        .list()
        .into_iter()
        .map(|h| (h.meta.id.clone(), h.meta.stream.clone(), h.counters.clone()))
        .collect();
    let sub_family =
        |x: &mut Exposition,
         name: &str,
         kind: Kind,
         help: &str,
         f: &dyn Fn(&SubscriptionCounters) -> &std::sync::atomic::AtomicU64| {
            x.family(name, kind, help);
            for (id, stream, c) in &subs {
                x.sample(
                    name,
                    &[("subscription", id), ("stream", stream)],
                    f(c).load(Ordering::Relaxed),
                );
            }
        };
    sub_family(
        &mut x,
        "streamcell_subscription_delivered_records_total",
        Kind::Counter,
        "Records sent to the subscription's consumers (redeliveries included).",
        &|c| &c.delivered,
    );
    sub_family(
        &mut x,
        "streamcell_subscription_acked_records_total",
        Kind::Counter,
        "Records acknowledged by the subscription's consumers.",
        &|c| &c.acked,
    );
    sub_family(
        &mut x,
        "streamcell_subscription_redelivered_records_total",
        Kind::Counter,
        "Records sent again (ack timeout passed, or their consumer left).",
        &|c| &c.redelivered,
    );
    sub_family(
        &mut x,
        "streamcell_subscription_unacked_records",
        Kind::Gauge,
        "Records sent and not acknowledged yet.",
        &|c| &c.unacked,
    );
    sub_family(
        &mut x,
        "streamcell_subscription_consumers",
        Kind::Gauge,
        "Consumers attached to the subscription.",
        &|c| &c.consumers,
    );
    sub_family(
        &mut x,
        "streamcell_subscription_damage_holds_total",
        Kind::Counter,
        "Times delivery of one of the subscription's shards stopped at damaged or lost data.",
        &|c| &c.holds,
    );
    sub_family(
        &mut x,
        "streamcell_subscription_held_shards",
        Kind::Gauge,
        "Shards whose delivery is held at damaged data until an operator skips it \
         (POST /api/v1/subscriptions/{id}/skip-damaged).",
        &|c| &c.held_shards,
    );
    sub_family(
        &mut x,
        "streamcell_subscription_skipped_batches_total",
        Kind::Counter,
        "Unreadable batches an operator skipped (their records are lost to the subscription).",
        &|c| &c.skipped_batches,
    );

    // -- persistent queries and views
    let qlabels: Vec<(String, &'static str)> = queries
        .iter()
        .map(|q| (q.name.clone(), q.kind.label()))
        .collect();
    x.family(
        "streamcell_query_records_in_total",
        Kind::Counter,
        "Records a persistent query or view read from its sources (since the server started).",
    );
    for ((name, kind), q) in qlabels.iter().zip(&queries) {
        x.sample(
            "streamcell_query_records_in_total",
            &[("query", name), ("kind", kind)],
            q.records_in,
        );
    }
    x.family(
        "streamcell_query_rows_out_total",
        Kind::Counter,
        "Rows a persistent query or view produced (since the server started).",
    );
    for ((name, kind), q) in qlabels.iter().zip(&queries) {
        x.sample(
            "streamcell_query_rows_out_total",
            &[("query", name), ("kind", kind)],
            q.rows_out,
        );
    }
    x.family(
        "streamcell_query_lag_batches",
        Kind::Gauge,
        "Batches appended to the query's sources that it has not processed yet (once it runs).",
    );
    for ((name, kind), l) in qlabels.iter().zip(&lags) {
        if let Some(l) = l {
            x.sample(
                "streamcell_query_lag_batches",
                &[("query", name), ("kind", kind)],
                l.batches,
            );
        }
    }
    x.family(
        "streamcell_query_lag_seconds",
        Kind::Gauge,
        "Age of the oldest batch of its sources the query has not processed (0 when caught up).",
    );
    for ((name, kind), l) in qlabels.iter().zip(&lags) {
        if let Some(l) = l {
            x.sample(
                "streamcell_query_lag_seconds",
                &[("query", name), ("kind", kind)],
                l.seconds,
            );
        }
    }
    x.family(
        "streamcell_query_status",
        Kind::Gauge,
        "1 for the query's current status (WAITING, RUNNING, PAUSED, TERMINATED, FAILED).",
    );
    for ((name, kind), q) in qlabels.iter().zip(&queries) {
        x.sample(
            "streamcell_query_status",
            &[
                ("query", name),
                ("kind", kind),
                ("status", &q.status.label()),
            ],
            1u64,
        );
    }

    // -- DataCell
    let dc = src.engine.datacell();
    let adapters = dc.adapters();
    let adapter_labels = |a: &Adapter| {
        (
            a.spec.basket.name.clone(),
            format!("{}:{}", a.spec.host, a.spec.port),
            a.spec.protocol.label(),
            a.spec.mode.label(),
        )
    };
    let adapter_family = |x: &mut Exposition,
                          name: &str,
                          help: &str,
                          dir: Direction,
                          f: &dyn Fn(&Adapter) -> u64| {
        x.family(name, Kind::Counter, help);
        for a in adapters.iter().filter(|a| a.spec.direction == dir) {
            let (basket, address, protocol, mode) = adapter_labels(a);
            x.sample(
                name,
                &[
                    ("basket", &basket),
                    ("address", &address),
                    ("protocol", protocol),
                    ("mode", mode),
                ],
                f(a),
            );
        }
    };
    adapter_family(
        &mut x,
        "streamcell_datacell_receptor_events_total",
        "Events a DataCell receptor put into its basket.",
        Direction::Receptor,
        &|a| a.events.load(Ordering::Relaxed),
    );
    adapter_family(
        &mut x,
        "streamcell_datacell_receptor_rejected_total",
        "Lines a DataCell receptor could not parse (kept in datacell.errors()).",
        Direction::Receptor,
        &|a| a.rejected.load(Ordering::Relaxed),
    );
    adapter_family(
        &mut x,
        "streamcell_datacell_emitter_events_total",
        "Events a DataCell emitter sent to actuators.",
        Direction::Emitter,
        &|a| a.events.load(Ordering::Relaxed),
    );
    let baskets = dc.baskets();
    x.family(
        "streamcell_datacell_basket_rows",
        Kind::Gauge,
        "Rows now in a DataCell basket.",
    );
    for b in &baskets {
        x.sample(
            "streamcell_datacell_basket_rows",
            &[("basket", &b.name)],
            b.len() as u64,
        );
    }
    x.family(
        "streamcell_datacell_basket_events_total",
        Kind::Counter,
        "Rows ever added to a DataCell basket.",
    );
    for b in &baskets {
        x.sample(
            "streamcell_datacell_basket_events_total",
            &[("basket", &b.name)],
            b.counters().1,
        );
    }

    // -- storage and process
    x.family(
        "streamcell_storage_bytes",
        Kind::Gauge,
        "Bytes of every file in the data directory (catalog and shard logs).",
    );
    x.sample("streamcell_storage_bytes", &[], total_bytes);
    if let Some(rss) = resident_memory_bytes() {
        x.family(
            "streamcell_process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory of the server process.",
        );
        x.sample("streamcell_process_resident_memory_bytes", &[], rss);
    }
    x.family(
        "streamcell_uptime_seconds",
        Kind::Gauge,
        "Seconds since the server started.",
    );
    x.sample("streamcell_uptime_seconds", &[], m.uptime().as_secs_f64());
    x.family(
        "streamcell_build_info",
        Kind::Gauge,
        "Always 1; the version is in the label.",
    );
    x.sample(
        "streamcell_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1u64,
    );
    Ok(x.finish())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label_value("line\nbreak"), "line\\nbreak");
        assert_eq!(escape_label_value("plain ünïcode"), "plain ünïcode");
        assert_eq!(
            escape_help("back\\slash\nnewline \"q\""),
            "back\\\\slash\\nnewline \"q\""
        );
        let mut x = Exposition::new();
        x.family("t_total", Kind::Counter, "Help with \\ and\nnewline.");
        x.sample(
            "t_total",
            &[("stream", "we\"ird\\na\nme"), ("via", "x")],
            7u64,
        );
        x.sample("t_total", &[], 0u64);
        assert_eq!(
            x.finish(),
            "# HELP t_total Help with \\\\ and\\nnewline.\n\
             # TYPE t_total counter\n\
             t_total{stream=\"we\\\"ird\\\\na\\nme\",via=\"x\"} 7\n\
             t_total 0\n"
        );
    }

    #[test]
    fn floats_are_written_as_prometheus_reads_them() {
        assert_eq!(format_float(0.25), "0.25");
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(0.0001), "0.0001");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        static BOUNDS: [f64; 3] = [0.001, 0.01, 0.1];
        let h = Histogram::new(&BOUNDS);
        h.observe(Duration::from_micros(500)); // <= 0.001
        h.observe(Duration::from_millis(1)); // exactly on a bound: counted in it (le)
        h.observe(Duration::from_millis(5)); // <= 0.01
        h.observe(Duration::from_secs(2)); // above every bound
        let snap = h.snapshot();
        assert_eq!(snap.buckets, vec![(0.001, 2), (0.01, 3), (0.1, 3)]);
        assert_eq!(snap.count, 4);
        assert!((snap.sum - 2.0065).abs() < 1e-9, "{}", snap.sum);
        let mut x = Exposition::new();
        x.family("lat_seconds", Kind::Histogram, "Latency.");
        x.histogram("lat_seconds", &[("stream", "s")], &snap);
        assert_eq!(
            x.finish(),
            "# HELP lat_seconds Latency.\n\
             # TYPE lat_seconds histogram\n\
             lat_seconds_bucket{stream=\"s\",le=\"0.001\"} 2\n\
             lat_seconds_bucket{stream=\"s\",le=\"0.01\"} 3\n\
             lat_seconds_bucket{stream=\"s\",le=\"0.1\"} 3\n\
             lat_seconds_bucket{stream=\"s\",le=\"+Inf\"} 4\n\
             lat_seconds_sum{stream=\"s\"} 2.0065\n\
             lat_seconds_count{stream=\"s\"} 4\n"
        );
    }

    #[test]
    fn an_empty_histogram_has_zero_buckets() {
        let snap = Histogram::new(&LATENCY_BUCKETS).snapshot();
        assert_eq!(snap.buckets.len(), LATENCY_BUCKETS.len());
        assert!(snap.buckets.iter().all(|(_, n)| *n == 0));
        assert_eq!((snap.count, snap.sum), (0, 0.0));
    }
}
