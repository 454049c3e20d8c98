//! One shard's log: its segments, what readers may see, recovery at open, reads by sequence
//! number and by time, trimming and retention. Appends go through the committer, which is
//! the only writer of a shard's active segment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::env::LogEnv;
use crate::error::{Result, StoreError};
use crate::marker::{AckMarker, AckedPos};
use crate::segment::{self, IndexEntry, SealedIndex, Segment, SEGMENT_HEADER_LEN};
use crate::vfs::{OpenMode, Vfs, VfsFile};
use crate::{ReadLimits, ShardDamage, StoredBatch};

/// Bytes read per `pread` when scanning frames.
const READ_CHUNK: usize = 1 << 20;
/// Name of the file that records a shard's trim point.
const TRIM_FILE: &str = "TRIM";
/// Name of the note a shard whose log failed leaves for the next start (see
/// [`Shard::note_failure`]).
pub const RESYNC_FILE: &str = "RESYNC";

/// Mutable state of a shard, shared by readers and the committer.
#[derive(Debug)]
pub struct ShardState {
    /// Segments by base sequence number; the last one is the active segment.
    pub segments: BTreeMap<u64, Segment>,
    /// First sequence number that may be read (everything before was trimmed or expired).
    pub start_seq: u64,
    /// Set once the shard's log failed; appends are refused until the shard is recovered
    /// (in place by the committer, see [`Shard::recover_in_place`], or by a restart).
    pub failed: Option<String>,
    /// When `failed` was last set (the committer waits a while before recovering in place).
    pub failed_at: Option<Instant>,
    /// Acknowledged batches that the recovery of this start found missing (inclusive ranges).
    pub lost: Vec<(u64, u64)>,
}

/// One shard's log.
#[derive(Debug)]
pub struct Shard {
    /// Shard id.
    pub id: u64,
    /// Directory holding the shard's segment files.
    pub dir: PathBuf,
    state: RwLock<ShardState>,
    /// Last sequence number visible to readers (0 when nothing was ever appended).
    tail: watch::Sender<u64>,
    /// Retention in milliseconds (0 keeps everything).
    retention_ms: AtomicU64,
    /// Set when the shard is being deleted: the committer refuses further appends.
    pub(crate) closed: AtomicBool,
    /// The acknowledged-end marker (written by the committer only).
    marker: Mutex<AckMarker>,
    /// The file system and clock the shard runs on.
    pub(crate) env: LogEnv,
}

impl Shard {
    /// Creates the directory and first segment of a new shard (on the real file system).
    pub fn create(dir: PathBuf, id: u64, retention_secs: u32) -> Result<Arc<Shard>> {
        Self::create_in(&LogEnv::default(), dir, id, retention_secs)
    }

    /// [`Shard::create`] in the environment `env`.
    pub fn create_in(
        env: &LogEnv,
        dir: PathBuf,
        id: u64,
        retention_secs: u32,
    ) -> Result<Arc<Shard>> {
        let fs = &*env.fs;
        fs.create_dir_all(&dir)
            .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
        if let Some(parent) = dir.parent() {
            segment::sync_dir(fs, parent)?;
        }
        let marker = AckMarker::create_in(
            fs,
            &dir,
            id,
            AckedPos {
                base_seq: 1,
                end: SEGMENT_HEADER_LEN,
                last_seq: 0,
            },
        )?;
        let (path, file) = segment::create_segment(fs, &dir, id, 1)?;
        let seg = Segment {
            base_seq: 1,
            path,
            file,
            index: Vec::new(),
            last_seq: 0,
            first_ts: 0,
            last_ts: 0,
            end: SEGMENT_HEADER_LEN,
            damaged: Vec::new(),
            sealed: false,
        };
        Ok(Self::assemble(
            env,
            id,
            dir,
            BTreeMap::from([(1, seg)]),
            1,
            retention_secs,
            marker,
            Vec::new(),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        env: &LogEnv,
        id: u64,
        dir: PathBuf,
        segments: BTreeMap<u64, Segment>,
        start_seq: u64,
        retention_secs: u32,
        marker: AckMarker,
        lost: Vec<(u64, u64)>,
    ) -> Arc<Shard> {
        let tail = segments.values().next_back().map_or(0, |s| s.last_seq);
        Arc::new(Shard {
            id,
            dir,
            state: RwLock::new(ShardState {
                segments,
                start_seq,
                failed: None,
                failed_at: None,
                lost,
            }),
            tail: watch::Sender::new(tail),
            retention_ms: AtomicU64::new(u64::from(retention_secs) * 1000),
            closed: AtomicBool::new(false),
            marker: Mutex::new(marker),
            env: env.clone(),
        })
    }

    /// Opens an existing shard directory and recovers it: sealed segments are taken from their
    /// index files (or re-scanned when the index is missing or stale), the last segment is
    /// scanned in full and a torn tail is cut off. When the acknowledged-end marker shows that
    /// acknowledged batches are missing (a truncated, zero-filled or deleted segment), they are
    /// reported as lost, recorded as a damaged range that reads refuse, and new appends continue
    /// after them: their sequence numbers are never handed out again. Batches missing before
    /// the first segment (below the recorded start) are reported and recorded the same way.
    ///
    /// On the real file system; [`Shard::open_in`] takes another environment.
    pub fn open(dir: PathBuf, id: u64, retention_secs: u32) -> Result<Arc<Shard>> {
        Self::open_in(&LogEnv::default(), dir, id, retention_secs)
    }

    /// [`Shard::open`] in the environment `env`.
    pub fn open_in(env: &LogEnv, dir: PathBuf, id: u64, retention_secs: u32) -> Result<Arc<Shard>> {
        let r = match recover(env, &dir, id, retention_secs, true) {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, StoreError::Io { .. }) {
                    // It may have failed in an fdatasync: the next start must not trust the page
                    // cache either.
                    leave_resync_note(&*env.fs, &dir, id);
                }
                return Err(e);
            }
        };
        Ok(Self::assemble(
            env,
            id,
            dir,
            r.segments,
            r.start_seq,
            retention_secs,
            r.marker,
            r.lost,
        ))
    }

    /// Marks the shard failed for `reason` (replacing an earlier reason) as of now: appends
    /// are refused until it is recovered.
    pub(crate) fn set_failed(&self, reason: String) {
        {
            let mut st = self.state_mut();
            st.failed = Some(reason);
            st.failed_at = Some(Instant::now());
        }
        self.note_failure();
    }

    /// Leaves the note `RESYNC` in the shard's directory (see [`leave_resync_note`]).
    pub(crate) fn note_failure(&self) {
        leave_resync_note(&*self.env.fs, &self.dir, self.id);
    }

    /// Recovers a failed shard while the process keeps running, as a restart would: called by
    /// the committer (the only writer of the active segment and of `ACKED`) once the cause of
    /// the failure may be gone. It writes `ACKED` again and makes it durable, cuts off what was
    /// written after the last acknowledged batch (appends whose failure was reported; the
    /// committer normally cut them already, but that may have failed too: they must not
    /// reappear), writes the active segment's bytes again and makes them durable (an
    /// `fdatasync` that still fails means the cause is not gone), then re-runs the recovery of
    /// [`Shard::open`] on the directory, makes the segment it takes as the active one durable
    /// the same way (with its name in the directory), and takes its result: segments, marker,
    /// the next sequence number (after every acknowledged or lost one, never reused). On
    /// success the failed state is cleared; on error the in-memory state is left as it was
    /// (the caller records the new reason).
    ///
    /// Why write them again: the failure may have been a failed `fdatasync`, after which Linux
    /// marks the pages it could not write clean. The page cache still shows them, but no later
    /// `fdatasync` writes them, and that later `fdatasync` succeeds ("fsyncgate"). Sealed
    /// segments were synced before they were sealed; the active segment may hold acknowledged
    /// batches that were never on the disk (under `interval` and `never`), a roll that failed
    /// may have left a new segment whose header is not (if removing it failed too), and a slot
    /// of `ACKED` may be torn on the disk but whole in the cache. So their bytes are read back
    /// and written again, which makes the pages dirty once more. (A page the kernel dropped
    /// from the cache reads back as what the disk holds: the re-scan then finds those batches
    /// damaged, and `ACKED` reports them lost, as after a power loss.)
    pub(crate) fn recover_in_place(&self) -> Result<()> {
        let mut marker = self.marker();
        let acked = marker.acked();
        marker
            .write_again()
            .map_err(|e| StoreError::io(format!("syncing {}", marker.path().display()), e))?;
        // Readers wait on the lock while the re-scan runs (it reads the active segment in full;
        // sealed segments come from their index files), and retention and trimming cannot
        // change the segments underneath it.
        let mut st = self.state_mut();
        if let Some(active) = st.segments.values().next_back() {
            let ctx = |what: &str| format!("{what} {}", active.path.display());
            let keep = match active.base_seq.cmp(&acked.base_seq) {
                std::cmp::Ordering::Equal => Some(acked.end),
                // A segment started after the last acknowledged batch holds none.
                std::cmp::Ordering::Greater => Some(SEGMENT_HEADER_LEN),
                std::cmp::Ordering::Less => None,
            };
            let len = active
                .file
                .file_len()
                .map_err(|e| StoreError::io(ctx("stat"), e))?;
            let mut end = len;
            if let Some(keep) = keep.filter(|&k| len > k) {
                tracing::warn!(shard = self.id, path = %active.path.display(), offset = keep,
                    bytes = len - keep, "cutting off appends that were never acknowledged");
                active
                    .file
                    .set_len(keep)
                    .map_err(|e| StoreError::io(ctx("truncating"), e))?;
                end = keep;
            }
            segment::write_again(&*active.file, end)
                .and_then(|_| active.file.sync_all())
                .map_err(|e| StoreError::io(ctx("writing again and syncing"), e))?;
        }
        let rewritten = st.segments.values().next_back().map(|s| s.base_seq);
        let retention_secs = u32::try_from(self.retention_ms() / 1000).unwrap_or(u32::MAX);
        let r = recover(&self.env, &self.dir, self.id, retention_secs, false)?;
        if let Some(active) = r.segments.values().next_back() {
            if Some(active.base_seq) != rewritten {
                let ctx = format!("writing again and syncing {}", active.path.display());
                active
                    .file
                    .file_len()
                    .and_then(|len| segment::write_again(&*active.file, len))
                    .and_then(|_| active.file.sync_all())
                    .map_err(|e| StoreError::io(ctx, e))?;
            }
        }
        segment::sync_dir(&*self.env.fs, &self.dir)?;
        let _ = self.env.fs.remove_file(&self.dir.join(RESYNC_FILE));
        let tail = r.segments.values().next_back().map_or(0, |s| s.last_seq);
        st.segments = r.segments;
        // Retention does not record how far it deleted: keep the start it reached.
        st.start_seq = st.start_seq.max(r.start_seq);
        for range in r.lost {
            if !st.lost.contains(&range) {
                st.lost.push(range);
            }
        }
        st.failed = None;
        st.failed_at = None;
        *marker = r.marker;
        drop(st);
        drop(marker);
        // Never below what readers saw: everything published was acknowledged, and recovery
        // keeps every acknowledged batch (or records it as lost).
        self.tail.send_if_modified(|t| {
            let grew = tail > *t;
            *t = (*t).max(tail);
            grew
        });
        Ok(())
    }

    fn marker(&self) -> MutexGuard<'_, AckMarker> {
        self.marker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that everything up to `pos` is about to be acknowledged (one `pwrite` into the
    /// marker file, no sync). Called by the committer before it publishes and acknowledges.
    pub(crate) fn record_acked(&self, pos: AckedPos) -> std::io::Result<()> {
        self.marker().record(pos)
    }

    /// Makes the recorded acknowledged end durable: always when `every` is `None`, otherwise
    /// only if at least `every` passed since the last time.
    pub(crate) fn sync_acked(&self, every: Option<Duration>) -> std::io::Result<()> {
        self.marker().sync(every)
    }

    /// The last sequence number recorded as acknowledged.
    pub fn acked_seq(&self) -> u64 {
        self.marker().acked().last_seq
    }

    /// What this shard cannot serve: acknowledged batches found missing when it was opened,
    /// and every range of sequence numbers (at or after the first readable one) that reads
    /// refuse with a corruption error.
    pub fn damage(&self) -> ShardDamage {
        let acked_seq = self.acked_seq();
        let st = self.state();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let mut prev: Option<&Segment> = None;
        for seg in st.segments.values() {
            if let Some(p) = prev {
                if p.last_seq + 1 < seg.base_seq {
                    ranges.push((p.last_seq + 1, seg.base_seq - 1));
                }
            }
            ranges.extend(seg.damaged.iter().copied());
            prev = Some(seg);
        }
        let mut unreadable: Vec<(u64, u64)> = Vec::new();
        ranges.sort_unstable();
        for (a, b) in ranges {
            let a = a.max(st.start_seq);
            if a > b {
                continue;
            }
            match unreadable.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => unreadable.push((a, b)),
            }
        }
        ShardDamage {
            lost: st.lost.clone(),
            unreadable,
            acked_seq,
        }
    }

    /// Read access to the shard state.
    pub fn state(&self) -> RwLockReadGuard<'_, ShardState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write access to the shard state.
    pub fn state_mut(&self) -> RwLockWriteGuard<'_, ShardState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes a new visible tail to waiting readers.
    pub fn publish_tail(&self, seq: u64) {
        self.tail.send_replace(seq);
    }

    /// A receiver that changes whenever new batches become visible.
    pub fn watch_tail(&self) -> watch::Receiver<u64> {
        self.tail.subscribe()
    }

    /// Retention in milliseconds (0 = keep forever).
    pub fn retention_ms(&self) -> u64 {
        self.retention_ms.load(Ordering::Relaxed)
    }

    /// First readable sequence number, last visible sequence number, and its publish time.
    pub fn bounds(&self) -> crate::ShardBounds {
        let st = self.state();
        let tail_ts = st
            .segments
            .values()
            .rev()
            .find(|s| !s.is_empty())
            .map_or(0, |s| s.last_ts);
        // The last segment's end, as `watch_tail` publishes it: batches lost in a gap in front
        // of an empty active segment count (reads of them fail), as batches lost at its end do.
        let next = st
            .segments
            .values()
            .next_back()
            .map_or(1, |s| s.last_seq + 1);
        crate::ShardBounds {
            start_seq: st.start_seq,
            tail_seq: (next - 1).max(st.start_seq.saturating_sub(1)),
            tail_timestamp_ms: tail_ts,
            next_seq: next,
        }
    }

    /// Reads batches starting at sequence number `from` (or at the first readable one if `from`
    /// is smaller). Stops at `limits` or at the visible tail. A damaged batch is an error when it
    /// is the first one asked for; otherwise the read ends before it (in whatever segment).
    pub fn read(&self, from: u64, limits: ReadLimits) -> Result<Vec<StoredBatch>> {
        let mut out: Vec<StoredBatch> = Vec::new();
        let mut bytes = 0usize;
        let mut seq = from;
        let mut full = false;
        while !full && out.len() < limits.max_batches {
            // Locate the next frame under the lock; read it without.
            let (file, path, offset, end, seg_last) = {
                let st = self.state();
                seq = seq.max(st.start_seq);
                let Some((_, seg)) = st.segments.range(..=seq).next_back() else {
                    break;
                };
                if let Some((a, b)) = seg.damage_at(seq) {
                    if out.is_empty() {
                        return Err(StoreError::Corrupt {
                            path: seg.path.clone(),
                            detail: format!(
                                "batches {a}..={b} of shard {} are damaged or lost",
                                self.id
                            ),
                        });
                    }
                    break;
                }
                if seq > seg.last_seq {
                    // Past this segment: either the tail, or damage at the end of a sealed one.
                    // (No segment starts after u64::MAX: a client may ask to read from there.)
                    let after = seq
                        .checked_add(1)
                        .and_then(|n| st.segments.range(n..).next());
                    if let Some((&next_base, _)) = after {
                        if seg.sealed && seq < next_base && out.is_empty() {
                            return Err(StoreError::Corrupt {
                                path: seg.path.clone(),
                                detail: format!(
                                    "batches {seq}..={} of shard {} are damaged or lost",
                                    next_base - 1,
                                    self.id
                                ),
                            });
                        }
                    }
                    break;
                }
                (
                    seg.file.clone(),
                    seg.path.clone(),
                    seg.seek(seq),
                    seg.end,
                    seg.last_seq,
                )
            };
            let before = out.len();
            let target = seq;
            let mut expected = target;
            let mut mismatch = None;
            let scanned = segment::read_frames(
                &*file,
                &path,
                offset,
                end,
                READ_CHUNK,
                target,
                |h, payload| {
                    if h.seq < target {
                        return true;
                    }
                    if h.seq != expected {
                        // Frames are consecutive: anything else means the way here (a length
                        // stepped over) was damaged. Never skip silently.
                        mismatch = Some(h.seq);
                        return false;
                    }
                    if !out.is_empty() && bytes + payload.len() > limits.max_bytes {
                        full = true;
                        return false;
                    }
                    bytes += payload.len();
                    expected += 1;
                    out.push(StoredBatch {
                        seq: h.seq,
                        timestamp_ms: h.timestamp_ms,
                        record_count: h.record_count,
                        flags: h.flags,
                        payload,
                    });
                    out.len() < limits.max_batches
                },
            );
            let served = out.len() - before;
            match scanned {
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => break, // serve what came before the damage; the next read reports it
                Ok(()) => {}
            }
            if served == 0 {
                if full {
                    break;
                }
                if target <= seg_last || mismatch.is_some() {
                    if !out.is_empty() {
                        // Batches from earlier segments are intact: serve them, the next read
                        // reports this.
                        break;
                    }
                    return Err(StoreError::Corrupt {
                        path,
                        detail: format!(
                            "batch {target} of shard {} is not where the index says (found {})",
                            self.id,
                            mismatch.map_or("nothing".to_string(), |m| format!("batch {m}"))
                        ),
                    });
                }
                break;
            }
            seq = expected;
            if mismatch.is_some() {
                break;
            }
        }
        Ok(out)
    }

    /// The first sequence number whose publish time is at or after `ts_ms`, or the next
    /// sequence number to be written if there is none yet.
    pub fn find_time(&self, ts_ms: i64) -> Result<u64> {
        let (file, path, offset, end, next, lost_tail) = {
            let st = self.state();
            let next = st
                .segments
                .values()
                .next_back()
                .map_or(1, |s| s.last_seq + 1);
            let Some(seg) = st
                .segments
                .values()
                .find(|s| !s.is_empty() && s.last_ts >= ts_ms && s.last_seq >= st.start_seq)
            else {
                return Ok(next);
            };
            if seg.first_ts >= ts_ms {
                return Ok(seg.base_seq.max(st.start_seq));
            }
            // Batches lost at the end of the segment were published after its last frame.
            let lost_tail = seg
                .damaged
                .iter()
                .find(|&&(_, b)| b == seg.last_seq)
                .map(|&(a, _)| a);
            (
                seg.file.clone(),
                seg.path.clone(),
                seg.seek_time(ts_ms),
                seg.end,
                next,
                lost_tail,
            )
        };
        let mut found = None;
        segment::read_frames(&*file, &path, offset, end, READ_CHUNK, 0, |h, _| {
            if h.timestamp_ms >= ts_ms {
                found = Some(h.seq);
                false
            } else {
                true
            }
        })?;
        Ok(found
            .or(lost_tail)
            .unwrap_or(next)
            .max(self.state().start_seq))
    }

    /// Makes every batch up to and including `seq` unreadable; deletes sealed segments that
    /// hold nothing readable any more. The trim point is recorded durably first.
    ///
    /// A `seq` past `frame::MAX_BATCH_SEQ` is refused (`Invalid`): no batch has such a number,
    /// and the next start would refuse the trim point it gives.
    pub fn trim(&self, seq: u64) -> Result<()> {
        if seq > crate::frame::MAX_BATCH_SEQ {
            return Err(StoreError::Invalid(format!(
                "cannot trim shard {} up to {seq}: no batch is numbered past 2^62 - 2",
                self.id
            )));
        }
        let new_start = seq + 1;
        {
            let st = self.state();
            if new_start <= st.start_seq {
                return Ok(());
            }
        }
        write_trim(&*self.env.fs, &self.dir, new_start)?;
        self.state_mut().start_seq = new_start;
        self.drop_segments_before(new_start)
    }

    /// Deletes sealed segments whose last publish time is older than the retention allows.
    /// Returns true when the active segment is old enough that it should be rolled.
    pub fn apply_retention(&self, now_ms: i64) -> Result<bool> {
        let ret = self.retention_ms();
        if ret == 0 {
            return Ok(false);
        }
        let cutoff = now_ms - ret as i64;
        let (expired_upto, active_expired) = {
            let st = self.state();
            let mut upto = None;
            for seg in st.segments.values() {
                if seg.sealed && (seg.is_empty() || seg.last_ts < cutoff) {
                    upto = Some(seg.last_seq + 1);
                } else {
                    break;
                }
            }
            let active_expired = st
                .segments
                .values()
                .next_back()
                .is_some_and(|s| !s.sealed && !s.is_empty() && s.last_ts < cutoff);
            (upto, active_expired)
        };
        if let Some(next) = expired_upto {
            {
                let mut st = self.state_mut();
                st.start_seq = st.start_seq.max(next);
            }
            self.drop_segments_before(next)?;
        }
        Ok(active_expired)
    }

    fn drop_segments_before(&self, start: u64) -> Result<()> {
        let doomed: Vec<(u64, PathBuf)> = self
            .state()
            .segments
            .values()
            .filter(|s| s.sealed && s.last_seq < start)
            .map(|s| (s.base_seq, s.path.clone()))
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        // Index files whose segment was deleted by hand, below the new start, first: later
        // they would be taken for batches missing at the front (see `missing_front`).
        self.remove_orphan_indexes_below(start);
        let fs = &*self.env.fs;
        let gone = |r: std::io::Result<()>| match r {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        };
        // From the front, one at a time. A segment leaves the shard's state only once its files
        // are gone, and a deletion that fails ends the pass: the next pass (or start) begins
        // with that segment, so what is left of the log never has a gap, which would be taken
        // for batches lost. The index file goes first: an index file left without its segment
        // also proves batches lost (see `missing_front`).
        let mut deleted = Ok(());
        for (base, path) in &doomed {
            let index = self.dir.join(segment::index_file_name(*base));
            deleted = gone(fs.remove_file(&index))
                .map_err(|e| StoreError::io(format!("removing {}", index.display()), e))
                .and_then(|_| {
                    gone(fs.remove_file(path))
                        .map_err(|e| StoreError::io(format!("removing {}", path.display()), e))
                });
            if deleted.is_err() {
                break;
            }
            self.state_mut().segments.remove(base);
            tracing::debug!(shard = self.id, path = %path.display(), "removed expired segment");
        }
        let synced = segment::sync_dir(fs, &self.dir);
        deleted.and(synced)
    }

    /// Removes the index files below `start` that have no segment file (best effort).
    fn remove_orphan_indexes_below(&self, start: u64) {
        let fs = &*self.env.fs;
        let Ok(names) = fs.read_dir(&self.dir) else {
            return;
        };
        for name in names {
            let Some(base) = segment::parse_index_file_name(&name.to_string_lossy()) else {
                continue;
            };
            let segment_file = self.dir.join(segment::segment_file_name(base));
            if base < start && !fs.try_exists(&segment_file).unwrap_or(false) {
                let _ = fs.remove_file(&self.dir.join(&name));
            }
        }
    }
}

/// What recovering a shard directory found: the segments (the last one writable), the first
/// readable sequence number, the acknowledged-end marker and the acknowledged batches missing.
struct Recovered {
    segments: BTreeMap<u64, Segment>,
    start_seq: u64,
    marker: AckMarker,
    lost: Vec<(u64, u64)>,
}

/// Recovers the shard directory `dir` (see [`Shard::open`]). `at_start`: at the start of the
/// process, when nothing else can be writing a file of it; leftover temporary files (`*.tmp`)
/// are removed then, and a `RESYNC` note is acted on (see [`Shard::note_failure`]).
fn recover(
    env: &LogEnv,
    dir: &Path,
    id: u64,
    retention_secs: u32,
    at_start: bool,
) -> Result<Recovered> {
    let fs = &*env.fs;
    // How far the log was acknowledged. Shards written before the marker existed have none:
    // they recover as they always did, and get a marker below.
    let marker = AckMarker::load_in(fs, dir, id)?;
    let acked = marker.as_ref().map(AckMarker::acked);
    let mut bases = Vec::new();
    // Index files, by base: one whose segment is missing names batches that were lost.
    let mut index_bases = Vec::new();
    let names = fs
        .read_dir(dir)
        .map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
    for os_name in names {
        let name = os_name.to_string_lossy();
        if let Some(base) = segment::parse_segment_file_name(&name) {
            bases.push(base);
        } else if let Some(base) = segment::parse_index_file_name(&name) {
            index_bases.push(base);
        } else if at_start && name.ends_with(".tmp") {
            let _ = fs.remove_file(&dir.join(&os_name));
        }
    }
    bases.sort_unstable();
    if let Some(&base) = bases
        .iter()
        .find(|&&b| b == 0 || b >= crate::frame::MAX_SEQ)
    {
        // No log reaches 2^62 batches, and numbering starts at 1: such a name was not written
        // by the store. (Accepted once, either would record an acknowledged end in `ACKED`
        // that the next start refuses: a base of 0, or 2^62 - 1 and more as the last batch.)
        return Err(StoreError::Corrupt {
            path: dir.join(segment::segment_file_name(base)),
            detail: format!(
                "segment base {base} is implausible (0, or at least 2^62); the shard is not \
                 served"
            ),
        });
    }
    if bases.is_empty() {
        tracing::warn!(shard = id, "shard directory has no segment");
    }
    let resync_note = dir.join(RESYNC_FILE);
    let resync = at_start && !matches!(fs.try_exists(&resync_note), Ok(false));
    if resync {
        // The last process left this shard failed: bytes that the page cache shows may never
        // have reached the disk, in its active segment, in a segment a failed roll left behind
        // (the last two), or in `ACKED`. Written again, the sync writes them.
        tracing::warn!(
            shard = id,
            "the shard's log failed in the last run: writing its last segments and {} again",
            crate::marker::MARKER_FILE
        );
        for &base in bases.iter().rev().take(2) {
            let path = dir.join(segment::segment_file_name(base));
            let file = segment::open_segment(fs, &path)?;
            file.file_len()
                .and_then(|len| segment::write_again(&*file, len))
                .and_then(|_| file.sync_all())
                .map_err(|e| StoreError::io(format!("writing {} again", path.display()), e))?;
        }
    }
    let mut marker = marker;
    if let (true, Some(m)) = (resync, marker.as_mut()) {
        m.write_again()
            .map_err(|e| StoreError::io(format!("writing {} again", m.path().display()), e))?;
    }
    let mut segments = BTreeMap::new();
    // Lengths of the segment files as found, before any repair (for reports).
    let mut found_len = BTreeMap::new();
    let last_base = bases.last().copied().unwrap_or(1);
    let mut damaged_header = false;
    for (i, &base) in bases.iter().enumerate() {
        let path = dir.join(segment::segment_file_name(base));
        let is_last = base == last_base;
        let file = segment::open_segment(fs, &path)?;
        let file_len = file
            .file_len()
            .map_err(|e| StoreError::io(format!("stat {}", path.display()), e))?;
        found_len.insert(base, file_len);
        if !is_last && header_matches(&*file, &path, id, base)? {
            if let Some(ix) = SealedIndex::load(fs, dir, base)?.filter(|ix| ix.data_len == file_len)
            {
                // Not the last segment: a next one exists. An index whose bounds cannot be
                // this segment's is damaged, like one that fails its checksum (K8): re-scanned.
                let next_base = bases.get(i + 1).copied().unwrap_or(crate::frame::MAX_SEQ);
                match ix.check(base, next_base) {
                    Ok(()) => {
                        segments.insert(base, sealed_from_index(base, path, file, ix));
                        continue;
                    }
                    Err(why) => tracing::warn!(shard = id, path = %path.display(),
                        "ignoring the segment's index file: {why}; re-scanning the segment"),
                }
            }
        }
        let (data, header_problem) = segment::read_segment(fs, &path, id, base)?;
        if let Some(problem) = header_problem {
            if is_last && file_len <= SEGMENT_HEADER_LEN {
                // A crash while a new segment was being created: nothing was ever acked in
                // it. (If the marker says otherwise, the loss is reported below.)
                tracing::warn!(path = %path.display(), "removing half-created segment: {problem}");
                fs.remove_file(&path)
                    .map_err(|e| StoreError::io(format!("removing {}", path.display()), e))?;
                continue;
            }
            if segment::damaged_header_names(&data, id, base) {
                // Bytes other than the shard and base went bad: the file is this shard's,
                // and each frame is still verified before it is served.
                tracing::error!(path = %path.display(), shard = id,
                        "segment header is damaged ({problem}) but names this shard and base; its frames are verified one by one and appends continue in a new segment");
                damaged_header |= is_last;
            } else if let Some(&next) = bases.get(i + 1) {
                // A sealed segment that may not be this shard's: none of it is served, the
                // rest of the shard is. The file is left as it is.
                let range = (base, next - 1);
                tracing::error!(path = %path.display(), shard = id,
                        "segment header: {problem}; batches {}..={} in it are not served", range.0, range.1);
                let prev_ts = segments.values().next_back().map(|s: &Segment| s.last_ts);
                segments.insert(
                    base,
                    unreadable_segment(env, dir, base, path, file, range, prev_ts)?,
                );
                continue;
            } else {
                return Err(StoreError::Corrupt {
                    path,
                    detail: format!("segment header: {problem}"),
                });
            }
        }
        let rep = segment::scan(&data, base);
        for &(a, b) in &rep.damaged {
            tracing::error!(path = %path.display(), shard = id, "batches {a}..={b} are damaged and will not be served");
        }
        let mut seg = Segment {
            base_seq: base,
            path: path.clone(),
            file,
            index: rep.index,
            last_seq: rep.last_seq,
            first_ts: rep.first_ts,
            last_ts: rep.last_ts,
            end: rep.valid_end,
            damaged: rep.damaged,
            sealed: !is_last,
        };
        if let Some((at, len)) = rep.torn_tail {
            if is_last {
                if acked.is_some_and(|a| a.last_seq > seg.last_seq) {
                    tracing::error!(path = %path.display(), shard = id, offset = at, bytes = len,
                            "the segment ends in bytes that are not frames, below the acknowledged end; cutting them off (the loss is reported below)");
                } else {
                    tracing::warn!(path = %path.display(), shard = id, offset = at, bytes = len,
                            "cutting off a torn tail (an append that was never acknowledged)");
                }
                seg.file
                    .set_len(at)
                    .and_then(|_| seg.file.sync_all())
                    .map_err(|e| StoreError::io(format!("truncating {}", path.display()), e))?;
            } else {
                tracing::error!(path = %path.display(), shard = id, offset = at, bytes = len,
                        "sealed segment ends in damaged bytes; batches after {} in it are lost", seg.last_seq);
            }
        }
        if seg.sealed {
            seg.sealed_index().write(fs, dir, base)?;
        } else if !seg.damaged.is_empty() || damaged_header {
            // Never append after damage: seal this segment and continue in a fresh one.
            seg.sealed = true;
            seg.sealed_index().write(fs, dir, base)?;
        }
        segments.insert(base, seg);
    }
    let mut lost = Vec::new();
    let trim_start = read_trim(fs, dir)?.max(1);
    // A gap between two segments is acknowledged batches lost: everything before a segment's
    // base was written and synced before it was created (a sealed segment cut short, whose
    // remaining bytes are kept for inspection, or a sealed segment deleted). Such a gap is
    // found again at every start; reads of it fail. (Below the trim point nothing is read:
    // a gap there is no loss, see the numbering below.)
    let mut prev: Option<&Segment> = None;
    for seg in segments.values() {
        if let Some(p) = prev {
            if p.last_seq + 1 < seg.base_seq && seg.base_seq > trim_start {
                let (a, b) = ((p.last_seq + 1).max(trim_start), seg.base_seq - 1);
                tracing::error!(
                    shard = id,
                    "DATA LOSS: acknowledged batches {a}..={b} of shard {id} are missing \
                         between segments {} and {}; they will be reported as lost to readers",
                    segment::segment_file_name(p.base_seq),
                    segment::segment_file_name(seg.base_seq),
                );
                lost.push((a, b));
            }
        }
        prev = Some(seg);
    }
    if let Some(range) = missing_front(&segments, &index_bases, trim_start, retention_secs) {
        let first_base = range.1 + 1;
        tracing::error!(
            shard = id,
            "DATA LOSS: acknowledged batches {}..={} of shard {id} are missing before its first \
                 segment {} (the shard's recorded start is {trim_start}); they will be reported as \
                 lost to readers",
            range.0,
            range.1,
            segment::segment_file_name(first_base),
        );
        lost.insert(0, range);
        // An empty sealed segment stands for them, so that reads of them fail instead of
        // skipping them; they were published no later than the first batch that is left.
        let ts = segments
            .values()
            .next()
            .filter(|s| !s.is_empty())
            .map_or_else(|| env.now_ms(), |s| s.first_ts);
        let (path, file) = segment::create_segment(fs, dir, id, range.0)?;
        let mut seg = empty_segment(range.0, path, file);
        seg.sealed = true;
        seg.damaged.push(range);
        seg.last_seq = range.1;
        seg.first_ts = ts;
        seg.last_ts = ts;
        seg.sealed_index().write(fs, dir, range.0)?;
        segments.insert(range.0, seg);
    }
    if let Some(acked) = acked {
        // Trimmed batches are not missed.
        let first_missing = segments
            .values()
            .next_back()
            .map_or(trim_start, |s| s.last_seq + 1)
            .max(trim_start);
        if first_missing <= acked.last_seq {
            let range = (first_missing, acked.last_seq);
            let found = match found_len.get(&acked.base_seq) {
                Some(len) => format!("was found {len} bytes long"),
                None => "is missing".to_string(),
            };
            tracing::error!(
                    shard = id,
                    "DATA LOSS: acknowledged batches {}..={} of shard {id} are missing from its log \
                     (segment {} was acknowledged up to byte {} and {found}); they will be reported \
                     as lost to readers and their sequence numbers are not reused",
                    range.0,
                    range.1,
                    segment::segment_file_name(acked.base_seq),
                    acked.end,
                );
            lost.push(range);
            match segments.values_mut().next_back() {
                Some(seg) => {
                    mark_lost(seg, range, env.now_ms());
                    seg.sealed_index().write(fs, dir, seg.base_seq)?;
                }
                None => {
                    // Every segment is gone: an empty sealed segment stands for the lost
                    // batches, so that reads of them fail instead of skipping them.
                    let (path, file) = segment::create_segment(fs, dir, id, first_missing)?;
                    let mut seg = empty_segment(first_missing, path, file);
                    mark_lost(&mut seg, range, env.now_ms());
                    seg.sealed_index().write(fs, dir, first_missing)?;
                    segments.insert(first_missing, seg);
                }
            }
        }
    }
    // Numbering goes on after every batch acknowledged or lost, and at the trim point at
    // least: `TRIM` is synced, the batches it trims may not be (under `never` and `interval`),
    // and after a power loss the log can end below it. A number below the trim point would be
    // acknowledged and never read, so the last segment is sealed and the next one starts there.
    if let Some(seg) = segments.values_mut().next_back() {
        if !seg.sealed && seg.last_seq + 1 < trim_start {
            tracing::warn!(
                shard = id,
                "the log ends at {} below the trim point {trim_start} (trimmed batches that were \
                 not synced before a power loss); numbering continues at the trim point",
                seg.last_seq
            );
            seg.sealed = true;
            seg.sealed_index().write(fs, dir, seg.base_seq)?;
        }
    }
    // The last segment must be writable; if it was sealed (damage, loss, the trim point) or
    // removed, start one.
    let needs_new = segments.values().next_back().is_none_or(|s| s.sealed);
    if needs_new {
        let next = segments
            .values()
            .next_back()
            .map_or(trim_start, |s| s.last_seq + 1)
            .max(trim_start);
        let (path, file) = segment::create_segment(fs, dir, id, next)?;
        segments.insert(next, empty_segment(next, path, file));
    }
    // An empty last segment: nothing was appended to it yet, so its creation may have been cut
    // short (a process killed in a roll, or in a recovery) after the file was written and
    // before its name was synced in the directory, while the page cache shows it whole.
    // Appends are about to go there, and their fdatasync does not make its name durable.
    if let (true, Some(last)) = (at_start, segments.values().next_back()) {
        if last.is_empty() {
            last.file
                .sync_all()
                .map_err(|e| StoreError::io(format!("syncing {}", last.path.display()), e))?;
            segment::sync_dir(fs, dir)?;
        }
    }
    let first_base = segments.keys().next().copied().unwrap_or(1);
    let start_seq = trim_start.max(first_base);
    // Everything now in the log is visible, so it counts as acknowledged from here on.
    // (After a clean close the marker already says so: nothing is written then.)
    let pos = segments.values().next_back().map_or(
        AckedPos {
            base_seq: trim_start,
            end: SEGMENT_HEADER_LEN,
            last_seq: trim_start - 1,
        },
        |s| AckedPos {
            base_seq: s.base_seq,
            end: s.end,
            last_seq: s.last_seq,
        },
    );
    let marker = match marker {
        Some(m) if m.acked().last_seq == pos.last_seq => m,
        Some(mut m) => {
            m.record(pos)
                .and_then(|_| m.sync(None))
                .map_err(|e| StoreError::io(format!("writing {}", m.path().display()), e))?;
            m
        }
        None => {
            tracing::info!(
                shard = id,
                "shard has no acknowledged-end marker (written by an older version); creating one"
            );
            AckMarker::create_in(fs, dir, id, pos)?
        }
    };
    if resync {
        let _ = fs.remove_file(&resync_note);
    }
    Ok(Recovered {
        segments,
        start_seq,
        marker,
        lost,
    })
}

/// Whether the shard directory `dir` is provably what a creation interrupted by a crash leaves:
/// at most an `ACKED` that records nothing acknowledged (or its temporary file) and a first
/// segment no longer than its header. `Err` says what else it holds (then it may hold data and
/// must be kept).
pub(crate) fn interrupted_creation(
    fs: &dyn Vfs,
    dir: &Path,
    id: u64,
) -> std::result::Result<(), String> {
    let names = fs
        .read_dir(dir)
        .map_err(|e| format!("cannot list it: {e}"))?;
    let first = segment::segment_file_name(1);
    for os_name in names {
        let name = os_name.to_string_lossy().to_string();
        let meta = fs
            .metadata(&dir.join(&os_name))
            .map_err(|e| format!("cannot stat {name}: {e}"))?;
        if !meta.is_file {
            return Err(format!("it holds {name}, which is not a file"));
        }
        if name == format!("{}.tmp", crate::marker::MARKER_FILE) || name == RESYNC_FILE {
            continue;
        }
        if name == crate::marker::MARKER_FILE {
            match AckMarker::load_in(fs, dir, id) {
                Ok(Some(m)) if m.acked().last_seq == 0 => continue,
                Ok(Some(m)) => {
                    return Err(format!(
                        "its ACKED records batches up to {} as acknowledged",
                        m.acked().last_seq
                    ))
                }
                Ok(None) => continue,
                Err(e) => return Err(format!("its ACKED cannot be read: {e}")),
            }
        }
        if name == first && meta.len <= SEGMENT_HEADER_LEN {
            continue;
        }
        return Err(format!("it holds {name} ({} bytes)", meta.len));
    }
    Ok(())
}

/// Leaves the note `RESYNC` in the shard directory `dir`, created but not synced: the page
/// cache keeps it across a restart of the process (not across a power loss, after which the
/// disk is what it is, and the note is not needed). The shard's log failed, possibly in an
/// `fdatasync`, after which the page cache may show bytes that no later `fdatasync` writes
/// (Linux marks such pages clean). The recovery in place writes them again; if the process
/// stops first, the next start does when it finds the note, and removes it.
fn leave_resync_note(fs: &dyn Vfs, dir: &Path, id: u64) {
    let path = dir.join(RESYNC_FILE);
    if let Err(e) = fs.open(&path, OpenMode::Truncate) {
        tracing::warn!(shard = id, path = %path.display(),
            "cannot leave the note that this shard's log failed (a restart will not write its files again): {e}");
    }
}

/// Whether the segment file starts with a valid header naming this shard and base. (The scan
/// path checks the same and reports the problem; this only decides whether the index file can
/// be trusted for this segment.)
///
/// A file shorter than a header does not match; a read that fails is an error (it says nothing
/// about the header, and a re-scan would rewrite the index file, which may be the only record
/// of batches lost).
fn header_matches(file: &dyn VfsFile, path: &Path, shard: u64, base: u64) -> Result<bool> {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    match file.read_exact_at(&mut h, 0) {
        Ok(()) => Ok(segment::decode_segment_header(&h) == Ok((shard, base))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
    }
}

/// The acknowledged batches missing before the first segment, if any: the log should start at
/// the recorded trim point (`TRIM`, or 1 without one), and only trimming and retention delete
/// segments from the front. Retention does not record how far it deleted, so for a shard with
/// retention only an index file left without its segment proves a loss (retention and trimming
/// delete the index before the segment).
fn missing_front(
    segments: &BTreeMap<u64, Segment>,
    index_bases: &[u64],
    trim_start: u64,
    retention_secs: u32,
) -> Option<(u64, u64)> {
    let first_base = *segments.keys().next()?;
    let floor = if retention_secs == 0 {
        trim_start
    } else {
        index_bases
            .iter()
            .copied()
            .filter(|&b| b >= trim_start && b < first_base)
            .min()?
    };
    (floor < first_base).then(|| (floor, first_base - 1))
}

/// A sealed segment none of whose batches (`range`) is served: its header does not prove that
/// it belongs to this shard. Publish times come from its index file if that is readable, else
/// from the segment before it (`prev_ts`), else now.
fn unreadable_segment(
    env: &LogEnv,
    dir: &Path,
    base: u64,
    path: PathBuf,
    file: Arc<dyn VfsFile>,
    range: (u64, u64),
    prev_ts: Option<i64>,
) -> Result<Segment> {
    let (first_ts, last_ts) = SealedIndex::load(&*env.fs, dir, base)?.map_or_else(
        || {
            let ts = prev_ts.unwrap_or_else(|| env.now_ms());
            (ts, ts)
        },
        |ix| (ix.first_ts, ix.last_ts),
    );
    Ok(Segment {
        base_seq: base,
        path,
        file,
        index: Vec::new(),
        last_seq: range.1,
        first_ts,
        last_ts,
        end: SEGMENT_HEADER_LEN,
        damaged: vec![range],
        sealed: true,
    })
}

/// Seals `seg` and records the acknowledged batches `a..=b` after its last one as lost: reads of
/// them fail, and the next segment starts after `b`. `now_ms` is the time of detection.
fn mark_lost(seg: &mut Segment, (a, b): (u64, u64), now_ms: i64) {
    let was_empty = seg.is_empty();
    seg.sealed = true;
    seg.damaged.push((a, b));
    seg.last_seq = b;
    // The lost batches were published before now; retention counts from here.
    seg.last_ts = seg.last_ts.max(now_ms);
    if was_empty {
        seg.first_ts = seg.last_ts;
    }
}

fn sealed_from_index(base: u64, path: PathBuf, file: Arc<dyn VfsFile>, ix: SealedIndex) -> Segment {
    Segment {
        base_seq: base,
        path,
        file,
        index: ix.entries,
        last_seq: ix.last_seq,
        first_ts: ix.first_ts,
        last_ts: ix.last_ts,
        end: ix.data_len,
        damaged: ix.damaged,
        sealed: true,
    }
}

/// An empty, writable segment.
pub fn empty_segment(base: u64, path: PathBuf, file: Arc<dyn VfsFile>) -> Segment {
    Segment {
        base_seq: base,
        path,
        file,
        index: Vec::<IndexEntry>::new(),
        last_seq: base - 1,
        first_ts: 0,
        last_ts: 0,
        end: SEGMENT_HEADER_LEN,
        damaged: Vec::new(),
        sealed: false,
    }
}

fn read_trim(fs: &dyn Vfs, dir: &Path) -> Result<u64> {
    let path = dir.join(TRIM_FILE);
    match fs.read(&path) {
        Ok(b) if b.len() == 12 => {
            let v = u64::from_le_bytes(b[0..8].try_into().unwrap_or([0; 8]));
            let crc = u32::from_le_bytes(b[8..12].try_into().unwrap_or([0; 4]));
            if crc32c::crc32c(&b[0..8]) != crc {
                Err(StoreError::Corrupt {
                    path,
                    detail: "trim point checksum mismatch".into(),
                })
            } else if v >= crate::frame::MAX_SEQ {
                // The trim point is the first readable sequence number, and numbering
                // continues there at least: a segment may start at it, so it is bounded as a
                // base is (below 2^62), or recovery would start a segment the next start
                // refuses.
                Err(StoreError::Corrupt {
                    path,
                    detail: format!("implausible trim point {v} (2^62 or more)"),
                })
            } else {
                Ok(v)
            }
        }
        Ok(_) => Err(StoreError::Corrupt {
            path,
            detail: "trim point file has the wrong length".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(1),
        Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
    }
}

fn write_trim(fs: &dyn Vfs, dir: &Path, start: u64) -> Result<()> {
    let mut b = start.to_le_bytes().to_vec();
    b.extend_from_slice(&crc32c::crc32c(&start.to_le_bytes()).to_le_bytes());
    segment::write_atomically(fs, dir, TRIM_FILE, &b, "")
}
