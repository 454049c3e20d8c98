//! Reading: shard readers (stored in the catalog, their position kept in memory, a read
//! waiting up to the reader's timeout when nothing is there) and live-following reads of a
//! shard or a whole stream, which send what the log holds and then wait on the shard's tail
//! until their end offset or batch budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamcell_proto::api::{self, ErrorCode};
use streamcell_store::{now_ms, ReadLimits, ReaderMeta, Store, StoreError, StoredBatch};
use tokio::sync::{mpsc, watch};

use crate::counters::{ReadVia, StreamCounters};
use crate::error::{Result, ServiceError};
use crate::names::validate_name;
use crate::offsets::Position;
use crate::records::fit;
use crate::service::Service;

/// Most encoded bytes in one shard-reader read: gRPC clients refuse messages over 4 MiB by
/// default. A single batch is always sent, whatever its size (it is at most
/// `--max-record-size` plus its record ids).
pub const MAX_RESPONSE_BYTES: usize = (4 << 20) - (256 << 10);
/// Most encoded bytes in one message of a live read (smaller: a reader that does not keep up
/// holds a message per shard in memory).
pub const MAX_STREAM_MESSAGE_BYTES: usize = 1 << 20;
/// Most batches put in one message of a live read.
const MAX_BATCHES_PER_MESSAGE: usize = 256;

/// A shard reader to create.
#[derive(Debug, Clone)]
pub struct ReaderSpec {
    /// Its id.
    pub id: String,
    /// The stream.
    pub stream: String,
    /// The shard of the stream it reads.
    pub shard: u64,
    /// Where it starts.
    pub from: Position,
    /// How long a read waits for records when none are there, in ms (0: it does not wait).
    pub timeout_ms: u32,
}

/// The messages of a live read, each at most [`MAX_STREAM_MESSAGE_BYTES`] (one batch is
/// always sent whole); the channel closes when the read is done, and an error ends it.
pub type LiveRead = mpsc::Receiver<Result<Vec<api::ReceivedRecord>>>;

/// Where a live read of one shard starts and ends.
#[derive(Debug, Clone, Copy)]
struct ShardRange {
    shard: u64,
    start: u64,
    /// `None`: no end; `Some(None)`: the end lies before anything readable.
    end: Option<Option<u64>>,
}

impl Service {
    /// Creates a shard reader.
    pub async fn create_reader(&self, spec: ReaderSpec) -> Result<()> {
        validate_name(
            "shard reader",
            &spec.id,
            ErrorCode::ShardReaderInvalidObjectIdentifier,
        )?;
        self.shard_meta(Some(&spec.stream), spec.shard)?;
        let from = spec.from;
        let reader = ReaderMeta {
            id: spec.id,
            stream: spec.stream,
            shard: spec.shard,
            start_seq: 0,
            offset: from.describe(),
            timeout_ms: spec.timeout_ms,
            created_ms: now_ms(),
        };
        self.blocking(move |s| {
            let start_seq = from.start_seq(s.log.as_ref(), reader.shard)?;
            Ok(s.catalog.create_reader(ReaderMeta {
                start_seq,
                ..reader
            })?)
        })
        .await
    }

    /// The shard reader `id`.
    pub async fn reader(&self, id: &str) -> Result<ReaderMeta> {
        let id = id.to_string();
        self.blocking(move |s| {
            s.catalog
                .get_reader(&id)?
                .ok_or(ServiceError::Store(StoreError::ReaderNotFound(id)))
        })
        .await
    }

    /// Every shard reader.
    pub async fn list_readers(&self) -> Result<Vec<ReaderMeta>> {
        self.blocking(|s| Ok(s.catalog.list_readers()?)).await
    }

    /// Deletes a shard reader, ending a read that waits on it.
    pub async fn delete_reader(&self, id: &str) -> Result<()> {
        let rid = id.to_string();
        self.blocking(move |s| Ok(s.catalog.delete_reader(&rid)?))
            .await?;
        self.readers.remove(id);
        Ok(())
    }

    /// Reads up to `max_batches` batches with reader `id` and advances it past what is
    /// returned. What is there is returned at once; when nothing is, the read waits for an
    /// append up to the reader's timeout.
    pub async fn read_reader(
        &self,
        id: &str,
        max_batches: usize,
    ) -> Result<Vec<api::ReceivedRecord>> {
        let reader = self.reader(id).await?;
        let state = self.readers.get(&reader);
        let mut next = state.next.lock().await;
        let deadline = Instant::now() + Duration::from_millis(u64::from(reader.timeout_ms));
        let mut tail = self.store.log.watch_tail(reader.shard)?;
        let mut out = Vec::new();
        while max_batches > 0 && out.is_empty() {
            tail.borrow_and_update();
            let limits = ReadLimits {
                max_batches,
                max_bytes: MAX_RESPONSE_BYTES,
            };
            let (shard, from) = (reader.shard, *next);
            let got = self
                .blocking(move |s| Ok(s.log.read(shard, from, limits)?))
                .await?;
            if !got.is_empty() {
                // Advance only past what this response carries.
                out = fit(reader.shard, &got, MAX_RESPONSE_BYTES);
                *next = got[out.len() - 1].seq + 1;
            } else {
                // Nothing yet: wait for an append, the timeout, or the reader's deletion.
                let deleted = state.deleted.notified();
                tokio::select! {
                    changed = tokio::time::timeout_at(deadline.into(), tail.changed()) => {
                        if !matches!(changed, Ok(Ok(()))) {
                            break;
                        }
                    }
                    () = deleted => {
                        return Err(StoreError::ReaderNotFound(reader.id.clone()).into());
                    }
                }
            }
        }
        let records: usize = out.iter().map(|r| r.record_ids.len()).sum();
        self.metrics
            .stream(&reader.stream)
            .read(ReadVia::ShardReader, records as u64);
        Ok(out)
    }

    /// Follows `shard` from `from` until `until` (inclusive; `None`: no end) or until
    /// `max_batches` batches were sent (0: no limit).
    pub async fn read_shard_live(
        &self,
        shard: u64,
        from: Position,
        until: Option<Position>,
        max_batches: u64,
    ) -> Result<LiveRead> {
        let meta = self.shard_meta(None, shard)?;
        let range = self
            .blocking(move |s| shard_range(s, shard, from, until))
            .await?;
        Ok(self.follow(vec![range], max_batches, &meta.stream))
    }

    /// The one shard of `stream`; a stream of several shards is refused (for reads that
    /// need a single-shard stream).
    pub async fn single_shard(&self, stream: &str) -> Result<u64> {
        let meta = self.stream_meta(stream).await?;
        match meta.shards[..] {
            [shard] => Ok(shard),
            _ => Err(ServiceError::invalid(
                ErrorCode::ShardReaderTooManyShards,
                format!(
                    "stream {:?} has {} shards; ReadSingleShardStream needs a stream with one",
                    meta.name, meta.shard_count
                ),
            )),
        }
    }

    /// Follows every shard of `stream` from `from` until `until` (inclusive; `None`: no
    /// end) or until `max_batches` batches were sent in all (0: no limit).
    pub async fn read_stream_live(
        &self,
        stream: &str,
        from: Position,
        until: Option<Position>,
        max_batches: u64,
    ) -> Result<LiveRead> {
        let meta = self.stream_meta(stream).await?;
        let shards = meta.shards.clone();
        let ranges = self
            .blocking(move |s| {
                shards
                    .into_iter()
                    .map(|shard| shard_range(s, shard, from, until))
                    .collect()
            })
            .await?;
        Ok(self.follow(ranges, max_batches, &meta.name))
    }

    /// Starts one task per shard range, all sending into one channel under one budget.
    fn follow(&self, ranges: Vec<ShardRange>, max_batches: u64, stream: &str) -> LiveRead {
        let (tx, rx) = mpsc::channel(1);
        let budget = Arc::new(AtomicU64::new(if max_batches == 0 {
            u64::MAX
        } else {
            max_batches
        }));
        let counted = self.metrics.stream(stream);
        for range in ranges {
            tokio::spawn(follow_shard(
                self.stopping.clone(),
                self.store.clone(),
                range,
                budget.clone(),
                tx.clone(),
                counted.clone(),
            ));
        }
        rx
    }
}

/// Resolves a live read's start and end in `shard`.
fn shard_range(
    s: &Store,
    shard: u64,
    from: Position,
    until: Option<Position>,
) -> Result<ShardRange> {
    let start = from.start_seq(s.log.as_ref(), shard)?;
    let end = until
        .map(|u| u.until_seq(s.log.as_ref(), shard))
        .transpose()?;
    Ok(ShardRange { shard, start, end })
}

/// Follows one shard and sends its batches, in messages of up to `MAX_BATCHES_PER_MESSAGE`,
/// until the range's end is passed, `budget` batches have been sent in all (shared by the
/// shards of one read), or the receiver goes away.
async fn follow_shard(
    mut stopping: watch::Receiver<bool>,
    store: Arc<Store>,
    range: ShardRange,
    budget: Arc<AtomicU64>,
    tx: mpsc::Sender<Result<Vec<api::ReceivedRecord>>>,
    counted: Arc<StreamCounters>,
) {
    let ShardRange {
        shard,
        start: mut from,
        end: until,
    } = range;
    let mut tail = match store.log.watch_tail(shard) {
        Ok(w) => w,
        Err(e) => {
            let _ = tx.send(Err(e.into())).await;
            return;
        }
    };
    loop {
        if let Some(u) = until {
            if u.is_none_or(|u| from > u) {
                return;
            }
        }
        let left = budget.load(Ordering::Acquire);
        if left == 0 {
            return;
        }
        let max_batches = MAX_BATCHES_PER_MESSAGE.min(left as usize);
        let s = store.clone();
        let read = tokio::task::spawn_blocking(move || {
            s.log.read(
                shard,
                from,
                ReadLimits {
                    max_batches,
                    max_bytes: MAX_STREAM_MESSAGE_BYTES,
                },
            )
        })
        .await;
        let mut batches: Vec<StoredBatch> = match read {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
            Err(e) => {
                let _ = tx
                    .send(Err(
                        StoreError::io("a read task", std::io::Error::other(e)).into()
                    ))
                    .await;
                return;
            }
        };
        if let Some(Some(u)) = until {
            batches.retain(|b| b.seq <= u);
        }
        if batches.is_empty() {
            if until.is_some_and(|u| u.is_some_and(|u| from > u)) {
                return;
            }
            tokio::select! {
                changed = tail.changed() => if changed.is_err() {
                    // The shard's log is gone: its stream was deleted.
                    let _ = tx
                        .send(Err(ServiceError::not_found(
                            ErrorCode::StreamNotFound,
                            format!("shard {shard} was deleted while being read"),
                        )))
                        .await;
                    return;
                },
                _ = tx.closed() => return,
                _ = stopping.changed() => {
                    // The flag only ever goes from false to true: the server is stopping.
                    let _ = tx.send(Err(ServiceError::shutting_down())).await;
                    return;
                }
            }
            continue;
        }
        let mut msg = fit(shard, &batches, MAX_STREAM_MESSAGE_BYTES);
        // Take from the shared budget; send only what was granted.
        let want = msg.len() as u64;
        let granted = match budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
            (b > 0).then(|| b - b.min(want))
        }) {
            Ok(before) => before.min(want),
            Err(_) => return,
        };
        msg.truncate(granted as usize);
        from = batches[msg.len() - 1].seq + 1;
        let records: usize = msg.iter().map(|r| r.record_ids.len()).sum();
        if tx.send(Ok(msg)).await.is_err() {
            return;
        }
        counted.read(ReadVia::StreamingRead, records as u64);
    }
}
