//! The service's counters: per stream (appends, append latency, records read by each way of
//! reading) and per subscription (deliveries, acknowledgements, redeliveries, holds). Every
//! counter is an atomic owned by what counts; the HTTP door's `/metrics` reads them at scrape
//! time (there is no global registry).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the append latency histogram's buckets: 100 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A histogram of durations on fixed buckets, updated with atomics (no lock on the hot path).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last one is above every bound.
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

/// A histogram as read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations at or below it)`, cumulative, without `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Observations in all (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum: f64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending, in seconds).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Adds this histogram's observations to `total` (same bounds).
    pub fn add_into(&self, total: &Histogram) {
        for (mine, theirs) in self.counts.iter().zip(&total.counts) {
            theirs.fetch_add(mine.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        total
            .sum_ns
            .fetch_add(self.sum_ns.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The current counts. The count is the sum of the buckets read, so the `+Inf` bucket
    /// and `_count` always agree even while observations are being added.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(self.bounds.len());
        let mut cumulative = 0u64;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        let count = cumulative + self.counts.last().map_or(0, |c| c.load(Ordering::Relaxed));
        HistogramSnapshot {
            buckets,
            count,
            sum: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// How records were read from a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadVia {
    /// `ReadShard` through a shard reader.
    ShardReader,
    /// `ReadShardStream`, `ReadStream`, `ReadSingleShardStream`.
    StreamingRead,
    /// Subscription deliveries (redeliveries included).
    Subscription,
}

impl ReadVia {
    /// Every way, in the order of their counters.
    pub const ALL: [ReadVia; 3] = [
        ReadVia::ShardReader,
        ReadVia::StreamingRead,
        ReadVia::Subscription,
    ];

    /// The `via` label of `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            ReadVia::ShardReader => "shard_reader",
            ReadVia::StreamingRead => "streaming_read",
            ReadVia::Subscription => "subscription",
        }
    }
}

/// One stream's counters, since the server started (or the stream was created).
#[derive(Debug)]
pub struct StreamCounters {
    /// Records appended.
    pub appended_records: AtomicU64,
    /// Bytes appended (batch payloads as stored).
    pub appended_bytes: AtomicU64,
    /// Batches appended (one per `Append` call).
    pub appended_batches: AtomicU64,
    /// From the handler receiving an `Append` to its durable acknowledgement.
    pub append_latency: Histogram,
    read: [AtomicU64; 3],
}

impl Default for StreamCounters {
    fn default() -> Self {
        StreamCounters {
            appended_records: AtomicU64::new(0),
            appended_bytes: AtomicU64::new(0),
            appended_batches: AtomicU64::new(0),
            append_latency: Histogram::new(&LATENCY_BUCKETS),
            read: Default::default(),
        }
    }
}

impl StreamCounters {
    /// Counts one acknowledged append.
    pub fn appended(&self, records: u32, bytes: usize, latency: Duration) {
        self.appended_records
            .fetch_add(u64::from(records), Ordering::Relaxed);
        self.appended_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.appended_batches.fetch_add(1, Ordering::Relaxed);
        self.append_latency.observe(latency);
    }

    /// Counts records sent to a client.
    pub fn read(&self, via: ReadVia, records: u64) {
        self.read[via as usize].fetch_add(records, Ordering::Relaxed);
    }

    /// Records read so far through `via`.
    pub fn read_count(&self, via: ReadVia) -> u64 {
        self.read[via as usize].load(Ordering::Relaxed)
    }

    /// Records appended and read: how busy the stream is, to pick the streams a scrape
    /// lists one by one.
    pub fn activity(&self) -> u64 {
        self.appended_records.load(Ordering::Relaxed)
            + self
                .read
                .iter()
                .map(|r| r.load(Ordering::Relaxed))
                .sum::<u64>()
    }

    /// Adds every count of this stream to `total`.
    pub fn add_into(&self, total: &StreamCounters) {
        for (mine, theirs) in [
            (&self.appended_records, &total.appended_records),
            (&self.appended_bytes, &total.appended_bytes),
            (&self.appended_batches, &total.appended_batches),
        ]
        .into_iter()
        .chain(self.read.iter().zip(&total.read))
        {
            theirs.fetch_add(mine.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.append_latency.add_into(&total.append_latency);
    }
}

/// One subscription's counters, kept by its actor.
#[derive(Debug, Default)]
pub struct SubscriptionCounters {
    /// Records sent to consumers (redeliveries included).
    pub delivered: AtomicU64,
    /// Records acknowledged (each record once).
    pub acked: AtomicU64,
    /// Records sent again (ack timeout passed or their consumer left).
    pub redelivered: AtomicU64,
    /// Records sent and not acknowledged yet (a gauge).
    pub unacked: AtomicU64,
    /// Consumers attached (a gauge).
    pub consumers: AtomicU64,
    /// Times a shard's delivery was held at damaged or lost data.
    pub holds: AtomicU64,
    /// Shards held now (a gauge).
    pub held_shards: AtomicU64,
    /// Batches an operator skipped as unreadable.
    pub skipped_batches: AtomicU64,
}

/// The server's own counters, by stream.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    streams: RwLock<HashMap<String, Arc<StreamCounters>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// No counts yet; uptime starts now.
    pub fn new() -> Self {
        Metrics {
            started: Instant::now(),
            streams: RwLock::new(HashMap::new()),
        }
    }

    /// Time since the server started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The counters of `stream` (created at zero the first time).
    pub fn stream(&self, stream: &str) -> Arc<StreamCounters> {
        if let Some(c) = self
            .streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
        {
            return c.clone();
        }
        self.streams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(stream.to_string())
            .or_default()
            .clone()
    }

    /// The counters of `stream` if it has any.
    pub fn stream_if_counted(&self, stream: &str) -> Option<Arc<StreamCounters>> {
        self.streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
            .cloned()
    }

    /// A new stream of this name starts from zero.
    pub fn reset_stream(&self, stream: &str) {
        self.streams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(stream.to_string(), Arc::default());
    }

    /// The stream is gone.
    pub fn remove_stream(&self, stream: &str) {
        self.streams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_counters_reset_when_a_stream_is_recreated() {
        let m = Metrics::new();
        m.stream("s").appended(3, 100, Duration::from_millis(2));
        m.stream("s").read(ReadVia::Subscription, 3);
        let c = m.stream_if_counted("s").expect("counted");
        assert_eq!(c.appended_records.load(Ordering::Relaxed), 3);
        assert_eq!(c.appended_bytes.load(Ordering::Relaxed), 100);
        assert_eq!(c.appended_batches.load(Ordering::Relaxed), 1);
        assert_eq!(c.read_count(ReadVia::Subscription), 3);
        assert_eq!(c.read_count(ReadVia::ShardReader), 0);
        m.reset_stream("s");
        let fresh = m.stream_if_counted("s").expect("counted");
        assert_eq!(fresh.appended_records.load(Ordering::Relaxed), 0);
        m.remove_stream("s");
        assert!(m.stream_if_counted("s").is_none());
    }
}
