//! The acknowledged-end marker: a small per-shard file (`ACKED`) that records how far the
//! shard's log had been acknowledged, so that recovery can tell a torn tail (an append that was
//! never acknowledged: cut off silently) from acknowledged batches that vanished (a truncated,
//! zero-filled or deleted segment: reported as data loss, their sequence numbers never handed
//! out again). Byte layout and guarantees: `docs/storage-format.md` §5.1.
//!
//! The file is 1024 bytes and holds two 512-byte slots, written alternately in place (the
//! generation number decides which is newer), so a write torn by a power cut can destroy at
//! most the slot being written; the other still holds the previous, smaller position.
//! The committer writes a slot after the round's data is written (and, under `sync = always`,
//! `fdatasync`ed) and before it acknowledges or publishes the round: the page cache keeps it
//! across a process kill. The file itself is `fdatasync`ed at most once per second per shard
//! (and when the data is synced under `interval`, and at shutdown), never in the path of an
//! append round.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Result, StoreError};
use crate::frame;
use crate::segment;
use crate::vfs::{OpenMode, StdFs, Vfs, VfsFile};

/// Name of the marker file in a shard directory.
pub const MARKER_FILE: &str = "ACKED";
/// Magic bytes at the start of each slot.
pub const MARKER_MAGIC: &[u8; 8] = b"SCACKv01";
/// Length of the marker file.
pub const MARKER_FILE_LEN: u64 = 1024;
/// Distance between the two slots (different disk sectors).
const SLOT_STRIDE: u64 = 512;
/// Bytes of a slot that carry data (the rest of its 512 bytes are zero).
const SLOT_LEN: usize = 52;

/// A position in a shard's log: everything up to and including `last_seq` was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckedPos {
    /// Base sequence number of the segment that held the last acknowledged batch (the active
    /// segment when the position was recorded).
    pub base_seq: u64,
    /// Length in bytes that segment had just after that batch.
    pub end: u64,
    /// The last acknowledged sequence number (0 when none was ever acknowledged).
    pub last_seq: u64,
}

/// One decoded slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    shard: u64,
    generation: u64,
    pos: AckedPos,
}

fn encode_slot(shard: u64, generation: u64, pos: AckedPos) -> [u8; SLOT_LEN] {
    let mut b = [0u8; SLOT_LEN];
    b[0..8].copy_from_slice(MARKER_MAGIC);
    b[8..16].copy_from_slice(&shard.to_le_bytes());
    b[16..24].copy_from_slice(&generation.to_le_bytes());
    b[24..32].copy_from_slice(&pos.base_seq.to_le_bytes());
    b[32..40].copy_from_slice(&pos.end.to_le_bytes());
    b[40..48].copy_from_slice(&pos.last_seq.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..48]);
    b[48..52].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_slot(b: &[u8]) -> std::result::Result<Slot, String> {
    let Some(b) = b.get(..SLOT_LEN) else {
        return Err("slot is short".into());
    };
    if &b[0..8] != MARKER_MAGIC {
        return Err("bad magic".into());
    }
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let crc = u32::from_le_bytes(b[48..52].try_into().unwrap_or([0; 4]));
    if crc32c::crc32c(&b[0..48]) != crc {
        return Err("checksum mismatch".into());
    }
    let pos = AckedPos {
        base_seq: u64_at(24),
        end: u64_at(32),
        last_seq: u64_at(40),
    };
    if pos.base_seq == 0
        || pos.end < segment::SEGMENT_HEADER_LEN
        || pos.last_seq.checked_add(1).is_none_or(|n| n < pos.base_seq)
        // Not just below MAX_SEQ: recovery starts the next segment at `last_seq + 1`, which
        // must be a base the next start accepts (K7, see `frame::MAX_BATCH_SEQ`).
        || pos.last_seq > frame::MAX_BATCH_SEQ
    {
        return Err(format!("implausible position {pos:?}"));
    }
    if u64_at(16) >= frame::MAX_SEQ {
        // No marker is recorded 2^62 times; a larger generation is damage (and its next
        // record would overflow).
        return Err(format!("implausible generation {}", u64_at(16)));
    }
    Ok(Slot {
        shard: u64_at(8),
        generation: u64_at(16),
        pos,
    })
}

/// The open marker file of one shard.
#[derive(Debug)]
pub struct AckMarker {
    file: Arc<dyn VfsFile>,
    path: PathBuf,
    shard: u64,
    generation: u64,
    current: AckedPos,
    dirty: bool,
    synced_at: Instant,
}

impl AckMarker {
    /// Creates the marker file durably (temporary file, fsync, rename, directory fsync), with
    /// both slots holding `pos`, on the real file system.
    pub fn create(dir: &Path, shard: u64, pos: AckedPos) -> Result<AckMarker> {
        Self::create_in(&StdFs, dir, shard, pos)
    }

    /// [`AckMarker::create`] on the file system `fs`.
    pub fn create_in(fs: &dyn Vfs, dir: &Path, shard: u64, pos: AckedPos) -> Result<AckMarker> {
        let path = dir.join(MARKER_FILE);
        let mut bytes = vec![0u8; MARKER_FILE_LEN as usize];
        bytes[..SLOT_LEN].copy_from_slice(&encode_slot(shard, 0, pos));
        let s1 = SLOT_STRIDE as usize;
        bytes[s1..s1 + SLOT_LEN].copy_from_slice(&encode_slot(shard, 1, pos));
        segment::write_atomically(fs, dir, MARKER_FILE, &bytes, "")?;
        let file = fs
            .open(&path, OpenMode::ReadWrite)
            .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
        Ok(AckMarker {
            file,
            path,
            shard,
            generation: 1,
            current: pos,
            dirty: false,
            synced_at: Instant::now(),
        })
    }

    /// Opens and verifies the marker file of `shard`. `Ok(None)` when there is none (a shard
    /// written before the marker existed). A file of the wrong length, one with no valid slot,
    /// or one naming another shard is an error: the shard is then not served (see
    /// `docs/storage-format.md` §5.1 for what to do). On the real file system.
    pub fn load(dir: &Path, shard: u64) -> Result<Option<AckMarker>> {
        Self::load_in(&StdFs, dir, shard)
    }

    /// [`AckMarker::load`] on the file system `fs`.
    pub fn load_in(fs: &dyn Vfs, dir: &Path, shard: u64) -> Result<Option<AckMarker>> {
        let path = dir.join(MARKER_FILE);
        let file = match fs.open(&path, OpenMode::ReadWrite) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(format!("opening {}", path.display()), e)),
        };
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.clone(),
            detail: format!(
                "{detail}; the acknowledged end of shard {shard} is unknown, so the shard is not \
                 served. If its log is known to be complete, remove this file and restart (see \
                 docs/storage-format.md §5.1)"
            ),
        };
        let len = file
            .file_len()
            .map_err(|e| StoreError::io(format!("stat {}", path.display()), e))?;
        if len != MARKER_FILE_LEN {
            return Err(corrupt(format!(
                "acknowledged-end marker is {len} bytes, expected {MARKER_FILE_LEN}"
            )));
        }
        let mut bytes = vec![0u8; MARKER_FILE_LEN as usize];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?;
        let s1 = SLOT_STRIDE as usize;
        let slots = [decode_slot(&bytes[..s1]), decode_slot(&bytes[s1..])];
        for s in slots.iter().flatten() {
            if s.shard != shard {
                return Err(corrupt(format!(
                    "acknowledged-end marker belongs to shard {}, not {shard}",
                    s.shard
                )));
            }
        }
        let best = slots.iter().flatten().max_by_key(|s| s.generation).copied();
        let Some(best) = best else {
            let why = |r: &std::result::Result<Slot, String>| match r {
                Ok(_) => String::new(),
                Err(e) => e.clone(),
            };
            return Err(corrupt(format!(
                "acknowledged-end marker has no valid slot (slot 0: {}; slot 1: {})",
                why(&slots[0]),
                why(&slots[1])
            )));
        };
        for (i, s) in slots.iter().enumerate() {
            if let Err(e) = s {
                // A write torn by a crash: the other slot holds the previous position, which
                // is a safe lower bound of what was acknowledged.
                tracing::warn!(path = %path.display(), shard,
                    "slot {i} of the acknowledged-end marker is invalid ({e}); using the other");
            }
        }
        Ok(Some(AckMarker {
            file,
            path,
            shard,
            generation: best.generation,
            current: best.pos,
            dirty: false,
            synced_at: Instant::now(),
        }))
    }

    /// The last recorded position.
    pub fn acked(&self) -> AckedPos {
        self.current
    }

    /// The marker file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a new position in the slot not holding the current one (one `pwrite`, no sync).
    pub fn record(&mut self, pos: AckedPos) -> std::io::Result<()> {
        let generation = self.generation + 1;
        let slot = encode_slot(self.shard, generation, pos);
        self.file
            .write_all_at(&slot, (generation % 2) * SLOT_STRIDE)?;
        self.generation = generation;
        self.current = pos;
        self.dirty = true;
        Ok(())
    }

    /// Writes the whole file again as the page cache shows it and `fdatasync`s it: after a
    /// failed `fdatasync` the disk may hold less than the cache shows, and no later sync writes
    /// it (see `Shard::recover_in_place`).
    pub(crate) fn write_again(&mut self) -> std::io::Result<()> {
        segment::write_again(&*self.file, MARKER_FILE_LEN)?;
        self.file.sync_data()?;
        self.dirty = false;
        self.synced_at = Instant::now();
        Ok(())
    }

    /// `fdatasync`s the file if a position was recorded since the last sync and either `every`
    /// is `None` or at least `every` has passed since the last sync.
    pub fn sync(&mut self, every: Option<Duration>) -> std::io::Result<()> {
        if !self.dirty || every.is_some_and(|d| self.synced_at.elapsed() < d) {
            return Ok(());
        }
        self.file.sync_data()?;
        self.dirty = false;
        self.synced_at = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::os::unix::fs::FileExt;

    fn pos(last: u64) -> AckedPos {
        AckedPos {
            base_seq: 1,
            end: 32 + last * 40,
            last_seq: last,
        }
    }

    #[test]
    fn slots_alternate_and_the_newest_valid_one_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = AckMarker::create(dir.path(), 7, pos(0)).expect("create");
        for i in 1..=5 {
            m.record(pos(i)).expect("record");
        }
        m.sync(None).expect("sync");
        let m2 = AckMarker::load(dir.path(), 7)
            .expect("load")
            .expect("present");
        assert_eq!(m2.acked(), pos(5));
        // Tear the newest slot: the previous position is used.
        let path = dir.path().join(MARKER_FILE);
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        let newest = (m.generation % 2) * SLOT_STRIDE;
        f.write_all_at(&[0xff; 20], newest + 10).expect("tear");
        let m3 = AckMarker::load(dir.path(), 7)
            .expect("load")
            .expect("present");
        assert_eq!(m3.acked(), pos(4));
        // Both slots bad: an error, never a guess.
        f.write_all_at(&[0xff; 20], (SLOT_STRIDE - newest) + 10)
            .expect("tear");
        assert!(matches!(
            AckMarker::load(dir.path(), 7),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn wrong_length_wrong_shard_and_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(AckMarker::load(dir.path(), 1).expect("load").is_none());
        AckMarker::create(dir.path(), 1, pos(3)).expect("create");
        assert!(matches!(
            AckMarker::load(dir.path(), 2),
            Err(StoreError::Corrupt { .. })
        ));
        std::fs::write(dir.path().join(MARKER_FILE), b"short").expect("write");
        assert!(matches!(
            AckMarker::load(dir.path(), 1),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn every_bit_flip_in_a_slot_is_detected() {
        let s = encode_slot(3, 9, pos(2));
        assert_eq!(decode_slot(&s).map(|s| s.pos), Ok(pos(2)));
        for byte in 0..SLOT_LEN {
            for bit in 0..8 {
                let mut b = s;
                b[byte] ^= 1 << bit;
                assert!(decode_slot(&b).is_err(), "byte {byte} bit {bit}");
            }
        }
        assert!(decode_slot(&[0u8; 512]).is_err());
    }

    /// A slot whose last acknowledged batch leaves no room for the next base (recovery starts
    /// the next segment at `last_seq + 1`) is refused: what a start accepts, the next accepts
    /// too (fuzz finding K7). `frame::MAX_BATCH_SEQ` itself is kept.
    #[test]
    fn a_last_batch_past_the_batch_bound_is_refused() {
        let at = |last: u64| AckedPos {
            base_seq: last,
            end: 72,
            last_seq: last,
        };
        let s = encode_slot(3, 9, at(frame::MAX_BATCH_SEQ));
        assert_eq!(decode_slot(&s).map(|s| s.pos), Ok(at(frame::MAX_BATCH_SEQ)));
        for last in [frame::MAX_BATCH_SEQ + 1, frame::MAX_SEQ, u64::MAX] {
            let r = decode_slot(&encode_slot(3, 9, at(last)));
            assert!(
                r.as_ref()
                    .is_err_and(|e| e.contains("implausible position")),
                "last {last}: {:?}",
                r.map(|s| s.pos)
            );
        }
    }

    /// A slot whose generation could never have been written is refused, so recording after
    /// it never overflows (fuzz regression K6).
    #[test]
    fn an_implausible_generation_is_refused() {
        for generation in [u64::MAX, frame::MAX_SEQ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut m = AckMarker::create(dir.path(), 7, pos(0)).expect("create");
            m.record(pos(1)).expect("record");
            m.sync(None).expect("sync");
            // Over the newest slot: a well-formed slot with an impossible generation.
            let f = OpenOptions::new()
                .write(true)
                .open(dir.path().join(MARKER_FILE))
                .expect("open");
            f.write_all_at(
                &encode_slot(7, generation, pos(2)),
                (m.generation % 2) * SLOT_STRIDE,
            )
            .expect("write");
            let mut loaded = AckMarker::load(dir.path(), 7)
                .expect("load")
                .expect("present");
            assert_eq!(
                loaded.acked(),
                pos(0),
                "generation {generation}: the other slot wins"
            );
            loaded.record(pos(3)).expect("record after it");
        }
    }
}
