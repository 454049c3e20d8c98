//! The committer: a thread that owns the active segments of a group of shards and performs
//! group commit. It drains every append waiting in its queue, assigns each its sequence
//! number and publish time, writes each shard's frames with one `write`, makes them durable
//! with one `fdatasync` per shard (under the `always` policy), and only then makes them
//! visible to readers and acknowledges them. Just before that it records the shard's new
//! acknowledged end in the shard's marker file (one `pwrite`, no sync: see `marker.rs`). It
//! also rolls segments (by size, or by age for shards with a retention limit) and seals them
//! with an index file.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::error::{Result, StoreError};
use crate::frame::{self, FrameHeader};
use crate::marker::{AckedPos, MARKER_FILE};
use crate::segment::{self, IndexEntry, INDEX_INTERVAL_BYTES};
use crate::shard::{empty_segment, Shard};
use crate::vfs::VfsFile;
use crate::{Appended, NewBatch, SyncPolicy};

/// A request to a committer thread.
pub(crate) enum Request {
    /// Append one batch to a shard.
    Append {
        shard: Arc<Shard>,
        batch: NewBatch,
        reply: oneshot::Sender<Result<Appended>>,
        _permit: OwnedSemaphorePermit,
    },
    /// Seal the shard's active segment if it holds anything (retention of an idle shard).
    Roll { shard: Arc<Shard> },
    /// Forget the shard (it is being deleted); replies once no append of it is in progress.
    Close {
        shard: u64,
        reply: oneshot::Sender<()>,
    },
    /// Make everything durable, reply, and stop.
    Shutdown { reply: oneshot::Sender<()> },
    /// Reply once everything sent before is handled, and the periodic work after it is done.
    Quiesce { reply: oneshot::Sender<()> },
}

/// One append waiting in a round: the batch and where to send its outcome.
type AppendOne = (NewBatch, oneshot::Sender<Result<Appended>>);

/// Settings of a committer.
#[derive(Debug, Clone)]
pub(crate) struct CommitterConfig {
    pub sync: SyncPolicy,
    pub segment_bytes: u64,
    /// How long after a failure a shard is first recovered in place ([`RECOVER_AFTER`](crate::env::RECOVER_AFTER)).
    pub recover_after: Duration,
    /// How often, at most, a shard's `ACKED` is synced while it receives appends
    /// ([`MARKER_SYNC_EVERY`](crate::env::MARKER_SYNC_EVERY)).
    pub marker_sync_every: Duration,
}

/// Write-side state of one shard's active segment.
struct Writer {
    shard: Arc<Shard>,
    file: Arc<dyn VfsFile>,
    base_seq: u64,
    offset: u64,
    next_seq: u64,
    last_ts: i64,
    first_ts: Option<i64>,
    last_indexed: Option<u64>,
    dirty: bool,
}

impl Writer {
    fn new(shard: Arc<Shard>) -> Writer {
        let st = shard.state();
        let last_ts = st
            .segments
            .values()
            .rev()
            .find(|s| !s.is_empty())
            .map_or(0, |s| s.last_ts);
        let (file, base, offset, next, first_ts, last_indexed) =
            match st.segments.values().next_back() {
                Some(a) => (
                    a.file.clone(),
                    a.base_seq,
                    a.end,
                    a.last_seq + 1,
                    (!a.is_empty()).then_some(a.first_ts),
                    a.index.last().map(|e| e.offset),
                ),
                // Shard::open/create always leave an active segment; this is unreachable in practice.
                None => unreachable_state(),
            };
        drop(st);
        Writer {
            shard,
            file,
            base_seq: base,
            offset,
            next_seq: next,
            last_ts,
            first_ts,
            last_indexed,
            dirty: false,
        }
    }

    fn is_empty(&self) -> bool {
        self.next_seq == self.base_seq
    }
}

#[allow(clippy::panic)]
fn unreachable_state() -> ! {
    panic!("shard has no active segment: Shard::open/create invariant broken")
}

/// A shard's appends of one commit round, written but not yet acknowledged.
struct Pending {
    shard: u64,
    replies: Vec<(oneshot::Sender<Result<Appended>>, Appended)>,
    index: Vec<IndexEntry>,
    prev_offset: u64,
    prev_next_seq: u64,
}

pub(crate) struct Committer {
    rx: Receiver<Request>,
    cfg: CommitterConfig,
    writers: HashMap<u64, Writer>,
    buf: Vec<u8>,
    last_sync: Instant,
    /// `Quiesce` requests of this round, answered after its housekeeping.
    quiesced: Vec<oneshot::Sender<()>>,
}

impl Committer {
    pub(crate) fn new(rx: Receiver<Request>, cfg: CommitterConfig) -> Self {
        Committer {
            rx,
            cfg,
            writers: HashMap::new(),
            buf: Vec::with_capacity(1 << 20),
            last_sync: Instant::now(),
            quiesced: Vec::new(),
        }
    }

    /// Runs until a `Shutdown` request arrives or every sender is gone.
    pub(crate) fn run(mut self) {
        let tick = match self.cfg.sync {
            SyncPolicy::Interval(d) => d.min(Duration::from_millis(200)),
            _ => Duration::from_millis(200),
        };
        loop {
            let first = match self.rx.recv_timeout(tick) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => {
                    self.housekeeping();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.sync_all();
                    return;
                }
            };
            let mut round = vec![first];
            let mut bytes = 0usize;
            while bytes < 32 << 20 && round.len() < 8192 {
                match self.rx.try_recv() {
                    Ok(r) => {
                        if let Request::Append { batch, .. } = &r {
                            bytes += batch.payload.len();
                        }
                        round.push(r);
                    }
                    Err(_) => break,
                }
            }
            if self.process(round) {
                return;
            }
            self.housekeeping();
            for reply in self.quiesced.drain(..) {
                let _ = reply.send(());
            }
        }
    }

    /// Handles one round of requests; returns true when asked to shut down.
    fn process(&mut self, round: Vec<Request>) -> bool {
        let mut groups: Vec<(Arc<Shard>, Vec<AppendOne>)> = Vec::new();
        let mut slot: HashMap<u64, usize> = HashMap::new();
        let mut control = Vec::new();
        let mut permits = Vec::new();
        for r in round {
            match r {
                Request::Append {
                    shard,
                    batch,
                    reply,
                    _permit,
                } => {
                    permits.push(_permit);
                    let i = *slot.entry(shard.id).or_insert_with(|| {
                        groups.push((shard.clone(), Vec::new()));
                        groups.len() - 1
                    });
                    groups[i].1.push((batch, reply));
                }
                other => control.push(other),
            }
        }
        let mut pending = Vec::with_capacity(groups.len());
        for (shard, group) in groups {
            if let Some(p) = self.write_group(shard, group) {
                pending.push(p);
            }
        }
        if self.cfg.sync == SyncPolicy::Always {
            for p in &mut pending {
                if let Some(w) = self.writers.get_mut(&p.shard) {
                    if let Err(e) = w.file.sync_data() {
                        let err = format!("fdatasync failed: {e}");
                        let _ = w.file.set_len(p.prev_offset);
                        w.offset = p.prev_offset;
                        w.next_seq = p.prev_next_seq;
                        fail_shard(&w.shard, &err);
                        for (reply, _) in p.replies.drain(..) {
                            let _ = reply.send(Err(log_failed(w.shard.id, &err)));
                        }
                    } else {
                        w.dirty = false;
                    }
                }
            }
            self.last_sync = Instant::now();
        }
        for p in pending {
            self.publish(p);
        }
        drop(permits);
        let mut shutdown = false;
        for c in control {
            match c {
                // A failed shard is not rolled: its writer may not match the log any more, and
                // it is recovered (and rebuilt) on its next append.
                Request::Roll { shard } if shard.state().failed.is_some() => {}
                Request::Roll { shard } => {
                    let id = shard.id;
                    let w = self.writers.entry(id).or_insert_with(|| Writer::new(shard));
                    if !w.is_empty() {
                        if let Err(e) = roll(w) {
                            fail_shard(&w.shard, &e.to_string());
                        }
                    }
                }
                Request::Close { shard, reply } => {
                    self.writers.remove(&shard);
                    let _ = reply.send(());
                }
                Request::Shutdown { reply } => {
                    self.sync_all();
                    let _ = reply.send(());
                    shutdown = true;
                }
                Request::Quiesce { reply } => self.quiesced.push(reply),
                Request::Append { .. } => {}
            }
        }
        shutdown
    }

    /// Why appends to `shard` are refused, if they are: the shard failed. Once the back-off
    /// (`recover_after`, [`RECOVER_AFTER`](crate::env::RECOVER_AFTER) by default) has passed since the failure, its log is
    /// first recovered in place (see [`Shard::recover_in_place`]); if that succeeds, nothing is
    /// refused and the shard's writer is rebuilt from the recovered state; if not, the new
    /// reason is recorded and the next attempt waits again.
    fn refusal(&mut self, shard: &Arc<Shard>) -> Option<String> {
        let (reason, since) = {
            let st = shard.state();
            (st.failed.clone()?, st.failed_at)
        };
        if since.is_some_and(|t| t.elapsed() < self.cfg.recover_after) {
            return Some(reason);
        }
        match shard.recover_in_place() {
            Ok(()) => {
                self.writers.remove(&shard.id);
                tracing::info!(
                    shard = shard.id,
                    "shard log recovered in place after a failure ({reason}); appends continue"
                );
                None
            }
            Err(e) => {
                let reason = format!("{e} (recovering in place after: {reason})");
                tracing::error!(
                    shard = shard.id,
                    "shard log is still failed, recovering it in place failed: {reason}"
                );
                shard.set_failed(reason.clone());
                Some(reason)
            }
        }
    }

    /// Encodes and writes one shard's appends of this round.
    fn write_group(&mut self, shard: Arc<Shard>, group: Vec<AppendOne>) -> Option<Pending> {
        let id = shard.id;
        if shard.closed.load(Ordering::Acquire) {
            for (_, reply) in group {
                let _ = reply.send(Err(StoreError::ShardNotFound(id)));
            }
            return None;
        }
        if let Some(reason) = self.refusal(&shard) {
            for (_, reply) in group {
                let _ = reply.send(Err(log_failed(id, &reason)));
            }
            return None;
        }
        let segment_bytes = self.cfg.segment_bytes;
        let w = self.writers.entry(id).or_insert_with(|| Writer::new(shard));
        if w.offset >= segment_bytes && !w.is_empty() {
            if let Err(e) = roll(w) {
                let reason = e.to_string();
                fail_shard(&w.shard, &reason);
                for (_, reply) in group {
                    let _ = reply.send(Err(log_failed(id, &reason)));
                }
                return None;
            }
        }
        let buf = &mut self.buf;
        buf.clear();
        let now = w.shard.env.now_ms();
        let mut p = Pending {
            shard: id,
            replies: Vec::with_capacity(group.len()),
            index: Vec::new(),
            prev_offset: w.offset,
            prev_next_seq: w.next_seq,
        };
        for (batch, reply) in group {
            if w.next_seq > frame::MAX_BATCH_SEQ {
                // A batch numbered past the bound would be cut off by the next start, below an
                // acknowledged end it refuses (see `frame::MAX_BATCH_SEQ`). No log gets here by
                // appending: only files the store did not write (a segment named or a frame
                // numbered near 2^62) lead here.
                let _ = reply.send(Err(StoreError::Corrupt {
                    path: w.shard.dir.clone(),
                    detail: format!(
                        "shard {id} has no sequence number left for another batch (the next \
                         would be {}, the largest is 2^62 - 2): its log was not written by \
                         the store",
                        w.next_seq
                    ),
                }));
                continue;
            }
            let offset = w.offset + buf.len() as u64;
            let h = FrameHeader {
                seq: w.next_seq,
                timestamp_ms: now.max(w.last_ts),
                record_count: batch.record_count,
                flags: batch.flags,
            };
            if w.last_indexed
                .is_none_or(|l| offset - l >= INDEX_INTERVAL_BYTES)
            {
                p.index.push(IndexEntry {
                    seq: h.seq,
                    timestamp_ms: h.timestamp_ms,
                    offset,
                });
                w.last_indexed = Some(offset);
            }
            frame::encode(buf, &h, &batch.payload);
            w.next_seq += 1;
            w.last_ts = h.timestamp_ms;
            w.first_ts.get_or_insert(h.timestamp_ms);
            p.replies.push((
                reply,
                Appended {
                    seq: h.seq,
                    timestamp_ms: h.timestamp_ms,
                },
            ));
        }
        if p.replies.is_empty() {
            return None;
        }
        if let Err(e) = w.file.write_all_at(buf, w.offset) {
            let reason = format!("write failed: {e}");
            let _ = w.file.set_len(p.prev_offset);
            w.next_seq = p.prev_next_seq;
            fail_shard(&w.shard, &reason);
            for (reply, _) in p.replies {
                let _ = reply.send(Err(log_failed(id, &reason)));
            }
            return None;
        }
        w.offset += buf.len() as u64;
        w.dirty = true;
        Some(p)
    }

    /// Makes a written (and, under `always`, synced) group visible and acknowledges it, after
    /// recording the new acknowledged end in the shard's marker file.
    fn publish(&mut self, p: Pending) {
        let Some(w) = self.writers.get_mut(&p.shard) else {
            return;
        };
        let Some(last) = p.replies.last().map(|(_, a)| *a) else {
            return;
        };
        let acked = AckedPos {
            base_seq: w.base_seq,
            end: w.offset,
            last_seq: last.seq,
        };
        if let Err(e) = w.shard.record_acked(acked) {
            // Without the record, a later loss of these batches could not be told from a torn
            // tail: do not acknowledge them.
            let err = format!("writing {MARKER_FILE} failed: {e}");
            let _ = w.file.set_len(p.prev_offset);
            w.offset = p.prev_offset;
            w.next_seq = p.prev_next_seq;
            fail_shard(&w.shard, &err);
            for (reply, _) in p.replies {
                let _ = reply.send(Err(log_failed(w.shard.id, &err)));
            }
            return;
        }
        {
            let mut st = w.shard.state_mut();
            if let Some(seg) = st.segments.get_mut(&w.base_seq) {
                if seg.is_empty() {
                    seg.first_ts = w.first_ts.unwrap_or(last.timestamp_ms);
                }
                seg.index.extend_from_slice(&p.index);
                seg.last_seq = last.seq;
                seg.last_ts = last.timestamp_ms;
                seg.end = w.offset;
            }
        }
        w.shard.publish_tail(last.seq);
        for (reply, appended) in p.replies {
            let _ = reply.send(Ok(appended));
        }
    }

    /// Periodic work: interval syncs, `ACKED` syncs and age-based rolls. A failed shard gets
    /// none of the last two (as it is not rolled on request either): its writer may not match
    /// the log any more, and its recovery in place syncs `ACKED` first.
    fn housekeeping(&mut self) {
        if let SyncPolicy::Interval(d) = self.cfg.sync {
            if self.last_sync.elapsed() >= d {
                self.sync_all();
            }
        }
        for w in self.writers.values_mut() {
            if w.shard.state().failed.is_some() {
                continue;
            }
            if let Err(e) = w.shard.sync_acked(Some(self.cfg.marker_sync_every)) {
                fail_shard(&w.shard, &format!("fdatasync of {MARKER_FILE} failed: {e}"));
            }
            let ret = w.shard.retention_ms();
            if ret == 0 || w.is_empty() {
                continue;
            }
            let roll_age = (ret / 4).max(1000) as i64;
            let now = w.shard.env.now_ms();
            if w.first_ts.is_some_and(|f| now - f >= roll_age) {
                if let Err(e) = roll(w) {
                    fail_shard(&w.shard, &e.to_string());
                }
            }
        }
    }

    fn sync_all(&mut self) {
        for w in self.writers.values_mut() {
            if w.dirty {
                match w.file.sync_data() {
                    Ok(()) => w.dirty = false,
                    Err(e) => fail_shard(&w.shard, &format!("fdatasync failed: {e}")),
                }
            }
            // After the data, so that the marker on disk rarely claims more than the data.
            if let Err(e) = w.shard.sync_acked(None) {
                fail_shard(&w.shard, &format!("fdatasync of {MARKER_FILE} failed: {e}"));
            }
        }
        self.last_sync = Instant::now();
    }
}

/// Seals the writer's active segment (sync, index file) and starts a new one at `next_seq`.
fn roll(w: &mut Writer) -> Result<()> {
    w.file
        .sync_data()
        .map_err(|e| StoreError::io("syncing a segment before sealing it", e))?;
    w.dirty = false;
    let sealed = {
        let st = w.shard.state();
        let Some(seg) = st.segments.get(&w.base_seq) else {
            return Err(StoreError::Invalid("active segment vanished".into()));
        };
        seg.sealed_index()
    };
    let fs = &*w.shard.env.fs;
    sealed.write(fs, &w.shard.dir, w.base_seq)?;
    let (path, file) = segment::create_segment(fs, &w.shard.dir, w.shard.id, w.next_seq)?;
    let seg = empty_segment(w.next_seq, path, file);
    let file = seg.file.clone();
    {
        // Sealed only now that the next segment exists: a roll that fails leaves the shard its
        // active segment (else trimming and retention could delete it as a sealed one).
        let mut st = w.shard.state_mut();
        if let Some(old) = st.segments.get_mut(&w.base_seq) {
            old.sealed = true;
        }
        st.segments.insert(w.next_seq, seg);
    }
    w.file = file;
    w.base_seq = w.next_seq;
    w.offset = segment::SEGMENT_HEADER_LEN;
    w.first_ts = None;
    w.last_indexed = None;
    tracing::debug!(
        shard = w.shard.id,
        base = w.base_seq,
        "rolled to a new segment"
    );
    Ok(())
}

fn fail_shard(shard: &Shard, reason: &str) {
    tracing::error!(
        shard = shard.id,
        "shard log failed, refusing further appends: {reason}"
    );
    {
        let mut st = shard.state_mut();
        if st.failed.is_none() {
            st.failed = Some(reason.to_string());
            st.failed_at = Some(Instant::now());
        }
    }
    shard.note_failure();
}

fn log_failed(shard: u64, reason: &str) -> StoreError {
    StoreError::LogFailed {
        shard,
        reason: reason.to_string(),
    }
}
