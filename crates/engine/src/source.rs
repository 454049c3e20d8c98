//! Sources: reading a stream's records, shard by shard, from saved positions, as JSON rows with
//! their publish time. A source is a cursor (a next sequence number per shard); it never holds
//! records itself, so a query's position is exactly its cursor.

use std::sync::Arc;
use std::time::Duration;

use streamcell_proto::api::{h_stream_record_header::Flag, CompressionType};
use streamcell_proto::records::{decompress, visit_records, MAX_DECOMPRESSED};
use streamcell_store::{Catalog, ReadLimits, ShardLog, StoredBatch};
use tokio::sync::watch;

use crate::decode::BatchDecoder;
use crate::error::{EngineError, Result};
use crate::value::{decode_struct, JsonRow};

/// One record read from a stream.
#[derive(Debug, Clone)]
pub(crate) struct SourceRecord {
    /// The record as a JSON object.
    pub row: JsonRow,
}

/// Where a new cursor starts.
#[derive(Debug, Clone)]
pub(crate) enum Start {
    /// At the first readable record of every shard.
    Earliest,
    /// At saved positions `(shard, next sequence number)`; shards not listed start at their
    /// earliest record.
    At(Vec<(u64, u64)>),
}

/// A cursor over every shard of one stream.
pub(crate) struct StreamCursor {
    /// The stream read.
    pub stream: String,
    log: Arc<dyn ShardLog>,
    /// `(shard, next sequence number to read)`, in key-range order.
    positions: Vec<(u64, u64)>,
    /// Round-robin start of [`gather`](Self::gather)'s visits.
    turn: usize,
    /// Records skipped because they are not JSON objects.
    pub skipped: u64,
}

impl StreamCursor {
    /// Opens a cursor on `stream`.
    pub(crate) fn open(
        catalog: &dyn Catalog,
        log: Arc<dyn ShardLog>,
        stream: &str,
        start: &Start,
    ) -> Result<Self> {
        let meta = catalog
            .get_stream(stream)?
            .ok_or_else(|| EngineError::NotFound(format!("stream {stream:?} does not exist")))?;
        let mut positions = Vec::with_capacity(meta.shards.len());
        for &shard in &meta.shards {
            let bounds = log.bounds(shard)?;
            let next = match start {
                Start::Earliest => bounds.start_seq,
                Start::At(saved) => saved
                    .iter()
                    .find(|(s, _)| *s == shard)
                    .map_or(bounds.start_seq, |(_, n)| *n),
            };
            positions.push((shard, next));
        }
        Ok(StreamCursor {
            stream: stream.to_string(),
            log,
            positions,
            turn: 0,
            skipped: 0,
        })
    }

    /// The cursor's positions `(shard, next sequence number)`.
    pub(crate) fn positions(&self) -> &[(u64, u64)] {
        &self.positions
    }

    /// Reads whole batches, from each shard in turn, until at least `max_records` records
    /// (or everything available) are in `out`. Returns how many records were added.
    /// Blocking file I/O.
    pub(crate) fn poll(
        &mut self,
        max_records: usize,
        out: &mut Vec<SourceRecord>,
    ) -> Result<usize> {
        let batches = self.gather(max_records)?;
        self.decode(batches, |_, flag, payload| {
            match json_object(flag, payload) {
                Some(row) => {
                    out.push(SourceRecord { row });
                    true
                }
                None => false,
            }
        })
    }

    /// Like [`poll`](Self::poll), decoding the records straight into `decoder`'s columns.
    pub(crate) fn poll_into(
        &mut self,
        max_records: usize,
        decoder: &mut BatchDecoder,
    ) -> Result<usize> {
        let batches = self.gather(max_records)?;
        self.decode(batches, |t, f, p| push_into(decoder, t, f, p))
    }

    /// Reads exactly the batches from the cursor's positions up to `end` (each shard's next
    /// sequence number after the read) into `decoder`, in the order [`poll_into`] decodes
    /// them: a micro-batch replayed after a restart is the micro-batch first read. Shards
    /// not in `end` are not read. Batches trimmed meanwhile (retention) are gone and not
    /// replayed; the cursor ends at `end` in any case.
    ///
    /// [`poll_into`]: Self::poll_into
    pub(crate) fn poll_until(
        &mut self,
        end: &[(u64, u64)],
        decoder: &mut BatchDecoder,
    ) -> Result<usize> {
        let mut batches = Vec::new();
        for (i, &(shard, from)) in self.positions.iter().enumerate() {
            let Some(&(_, stop)) = end.iter().find(|(s, _)| *s == shard) else {
                continue;
            };
            let mut next = from;
            let mut got = Vec::new();
            while next < stop {
                let read = self.log.read(shard, next, ReadLimits::batches(64))?;
                let Some(last) = read.last() else { break };
                next = last.seq + 1;
                got.extend(read.into_iter().filter(|b| b.seq < stop));
            }
            if from < stop && got.first().map(|b| b.seq) != Some(from) {
                tracing::warn!(
                    stream = %self.stream,
                    shard,
                    from,
                    first = got.first().map(|b| b.seq),
                    "batches a query had read before a restart were trimmed before it replayed them"
                );
            }
            batches.push((i, got));
        }
        let n = self.decode(batches, |t, f, p| push_into(decoder, t, f, p))?;
        for (shard, next) in self.positions.iter_mut() {
            if let Some(&(_, stop)) = end.iter().find(|(s, _)| s == shard) {
                *next = (*next).max(stop);
            }
        }
        Ok(n)
    }

    /// Takes whole batches from each shard in turn (up to 64 per visit, so one busy shard
    /// does not starve the others) until they hold at least `max_records` records or no
    /// shard has more, and moves the positions past them. Returns them per shard index.
    fn gather(&mut self, max_records: usize) -> Result<Vec<(usize, Vec<StoredBatch>)>> {
        let n = self.positions.len();
        let mut per_shard: Vec<(usize, Vec<StoredBatch>)> = Vec::new();
        let mut records = 0usize;
        let mut idle = 0;
        while records < max_records && idle < n {
            let i = self.turn % n;
            self.turn = self.turn.wrapping_add(1);
            let (shard, next) = self.positions[i];
            let batches = self.log.read(shard, next, ReadLimits::batches(64))?;
            let Some(last) = batches.last() else {
                idle += 1;
                continue;
            };
            idle = 0;
            self.positions[i].1 = last.seq + 1;
            records += batches
                .iter()
                .map(|b| b.record_count as usize)
                .sum::<usize>();
            match per_shard.iter_mut().find(|(j, _)| *j == i) {
                Some((_, v)) => v.extend(batches),
                None => per_shard.push((i, batches)),
            }
        }
        Ok(per_shard)
    }

    /// Hands every record of `batches` to `take` (publish time, flag, payload), shard by
    /// shard in key-range order and each shard's batches in sequence order, whatever order
    /// they were read in: the rows of a micro-batch depend only on the ranges read. `take`
    /// says whether the record was a JSON object; the others are counted in `skipped`.
    /// Returns how many were taken.
    fn decode(
        &mut self,
        mut batches: Vec<(usize, Vec<StoredBatch>)>,
        mut take: impl FnMut(i64, Flag, &[u8]) -> bool,
    ) -> Result<usize> {
        batches.sort_by_key(|(i, _)| *i);
        let mut added = 0;
        for b in batches.iter().flat_map(|(_, v)| v) {
            let compression = CompressionType::try_from(i32::from(b.flags)).map_err(|_| {
                EngineError::internal(format!(
                    "stream {}: batch {} has unknown compression {}",
                    self.stream, b.seq, b.flags
                ))
            })?;
            let plain = decompress(&b.payload, compression, MAX_DECOMPRESSED).map_err(|e| {
                EngineError::internal(format!("stream {}: batch {}: {e}", self.stream, b.seq))
            })?;
            let mut skipped = 0;
            visit_records(&plain, |flag, payload| {
                if take(b.timestamp_ms, flag, payload) {
                    added += 1;
                } else {
                    skipped += 1;
                }
            })
            .map_err(|e| {
                EngineError::internal(format!("stream {}: batch {}: {e}", self.stream, b.seq))
            })?;
            self.skipped += skipped;
        }
        Ok(added)
    }

    /// Watches on each shard's tail, to wait for new records.
    pub(crate) fn watchers(&self) -> Result<Vec<watch::Receiver<u64>>> {
        self.positions
            .iter()
            .map(|&(shard, _)| Ok(self.log.watch_tail(shard)?))
            .collect()
    }
}

/// Decodes one record into `decoder`; false if it is not a JSON object.
fn push_into(decoder: &mut BatchDecoder, time_ms: i64, flag: Flag, payload: &[u8]) -> bool {
    match flag {
        Flag::Json => decoder.push_struct(payload, time_ms),
        Flag::Raw => match json_object(flag, payload) {
            Some(row) => {
                decoder.push_row(&row, time_ms);
                true
            }
            None => false,
        },
    }
}

/// A record as a JSON object, if it is one: a JSON record's `Struct`, or a RAW record holding
/// a JSON object's text.
fn json_object(flag: Flag, payload: &[u8]) -> Option<JsonRow> {
    match flag {
        Flag::Json => decode_struct(payload),
        Flag::Raw => match serde_json::from_slice::<serde_json::Value>(payload) {
            Ok(serde_json::Value::Object(m)) => Some(m),
            _ => None,
        },
    }
}

/// Waits until any of `watchers` changes or `timeout` passes.
pub(crate) async fn wait_any(watchers: &mut [watch::Receiver<u64>], timeout: Duration) {
    if watchers.is_empty() {
        tokio::time::sleep(timeout).await;
        return;
    }
    let changed = watchers.iter_mut().map(|w| Box::pin(w.changed()));
    let any = futures_select_all(changed);
    let _ = tokio::time::timeout(timeout, any).await;
}

/// Resolves when the first of the futures does.
async fn futures_select_all<F: std::future::Future + Unpin>(futs: impl Iterator<Item = F>) {
    let mut futs: Vec<F> = futs.collect();
    std::future::poll_fn(|cx| {
        for f in futs.iter_mut() {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Reads a sample of a stream (up to `max` records from the start of every shard) for schema
/// inference.
pub(crate) fn sample(
    catalog: &dyn Catalog,
    log: Arc<dyn ShardLog>,
    stream: &str,
    max: usize,
) -> Result<Vec<SourceRecord>> {
    let mut c = StreamCursor::open(catalog, log, stream, &Start::Earliest)?;
    let mut out = Vec::new();
    c.poll(max, &mut out)?;
    Ok(out)
}
