//! Helpers shared by the fuzz targets in `fuzz_targets/` (and the `seeds` binary): scratch
//! directories, checksum repair so that mutated store files get past their CRC32C checks, the
//! read-back of a recovered shard with the store's documented guarantees as assertions, and a
//! one-poll executor for futures that never wait.
//!
//! Nothing here changes the crates under test: it only calls their public API.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use streamcell_store::frame::{self, FrameHeader, FRAME_HEADER_LEN, MAX_BODY_LEN};
use streamcell_store::segment::SEGMENT_HEADER_LEN;
use streamcell_store::shard::Shard;
use streamcell_store::{ReadLimits, StoredBatch};

/// Whether the targets step around the crashes already found and reported (listed in
/// `docs/fuzzing.md`, "Known crashes"), so that a run explores past them: set
/// `STREAMCELL_FUZZ_SKIP_KNOWN=1`. Without it the targets hit them again (and
/// `scripts/fuzz.sh` fails) until they are fixed.
pub fn skip_known() -> bool {
    static SKIP: OnceLock<bool> = OnceLock::new();
    *SKIP.get_or_init(|| std::env::var("STREAMCELL_FUZZ_SKIP_KNOWN").is_ok_and(|v| v == "1"))
}

/// The largest sequence number the store targets read from: `u64::MAX` normally; one less
/// with [`skip_known`], because `Shard::read(u64::MAX)` overflows (K1).
fn max_from() -> u64 {
    if skip_known() {
        u64::MAX - 1
    } else {
        u64::MAX
    }
}

/// Whether `data` holds, anywhere, a frame with a valid checksum whose sequence number is at
/// least 2^62: recovery accepts such a frame (K4, K5 in `docs/fuzzing.md`), records an
/// acknowledged end its next start refuses, and overflows at `u64::MAX`. With [`skip_known`]
/// the store targets leave such inputs out.
pub fn has_huge_seq_frame(data: &[u8]) -> bool {
    let bytes = Bytes::copy_from_slice(data);
    (0..data.len().saturating_sub(FRAME_HEADER_LEN - 1)).any(|q| {
        frame::peek_seq(&data[q..]).is_some_and(|s| s >= 1 << 62)
            && frame::decode(&bytes.slice(q..)).is_ok()
    })
}

/// Whether an index file's bytes are a well-formed sealed index (magic, counts matching the
/// length; the checksum is not looked at) whose `last_seq` is at least 2^62 - 1: recovery
/// trusts a sealed segment's index without bounding it, records an end its next start
/// refuses, or starts the next segment at a base of 2^62 or more, which the next start
/// refuses, or overflows at `u64::MAX` (K8 in `docs/fuzzing.md`). With [`skip_known`] the
/// `store_shard` target leaves such inputs out.
pub fn has_implausible_index_end(index: &[u8]) -> bool {
    let n = index.len();
    if n < 16 + 36 || &index[0..8] != b"SCIDXv01" {
        return false;
    }
    let count = |o: usize| u32::from_le_bytes(index[o..o + 4].try_into().expect("4 bytes"));
    let (entries, damaged) = (count(8) as usize, count(12) as usize);
    let last_seq = u64::from_le_bytes(index[n - 36..n - 28].try_into().expect("8 bytes"));
    n == 16 + entries * 24 + damaged * 16 + 36 && last_seq >= frame::MAX_SEQ - 1
}

/// Whether an `ACKED` file's bytes hold a slot with a valid checksum and the generation
/// `u64::MAX`: `AckMarker::record` overflows on the next generation (K6 in `docs/fuzzing.md`).
/// With [`skip_known`] the store targets leave such inputs out.
pub fn has_max_generation_slot(marker: &[u8]) -> bool {
    [0usize, 512].iter().any(|&at| {
        marker.get(at..at + 52).is_some_and(|s| {
            s[16..24] == [0xff; 8] && crc32c::crc32c(&s[0..48]).to_le_bytes() == s[48..52]
        })
    })
}

/// The shard id every store target uses.
pub const SHARD_ID: u64 = 1;

/// A fresh directory for one run, on tmpfs (`/dev/shm`) when there is one: the store syncs
/// every file it creates, which on a disk would make each run take milliseconds.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let mut b = tempfile::Builder::new();
    b.prefix("streamcell-fuzz-");
    if shm.is_dir() {
        if let Ok(d) = b.tempdir_in(shm) {
            return d;
        }
    }
    b.tempdir().expect("creating a scratch directory")
}

/// Recomputes the checksums of a segment file in place: the header's, then each frame's for
/// as long as the frame lengths chain up inside the file. Everything else (magic, version,
/// shard, base, sequence numbers, reserved bytes, lengths) is left as it was, so the fuzzer's
/// mutations reach the checks behind the checksums.
pub fn fix_segment(b: &mut [u8]) {
    let h = SEGMENT_HEADER_LEN as usize;
    if b.len() < h {
        return;
    }
    let crc = crc32c::crc32c(&b[0..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    let mut pos = h;
    while pos + 8 <= b.len() {
        let body_len = u32::from_le_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]]) as usize;
        if !(FRAME_HEADER_LEN - 8..=MAX_BODY_LEN).contains(&body_len)
            || pos + 8 + body_len > b.len()
        {
            return;
        }
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&b[pos..pos + 4]),
            &b[pos + 8..pos + 8 + body_len],
        );
        b[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos += 8 + body_len;
    }
}

/// Recomputes the checksums of both slots of an `ACKED` file (1024 bytes, slots at 0 and 512,
/// each `magic, shard, generation, base, end, last` then a CRC32C of those 48 bytes).
pub fn fix_marker(b: &mut [u8]) {
    for slot in [0usize, 512] {
        if b.len() >= slot + 52 {
            let crc = crc32c::crc32c(&b[slot..slot + 48]);
            b[slot + 48..slot + 52].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

/// Makes an index file's counts agree with its length (keeping at most 3 damaged ranges) and
/// recomputes its trailing checksum. Layout: magic(8), entries(4), damaged(4), 24 bytes per
/// entry, 16 per damaged range, last_seq, first_ts, last_ts, data_len (8 each), crc(4).
pub fn fix_index(b: &mut Vec<u8>) {
    const FIXED: usize = 16 + 36;
    if b.len() < FIXED {
        return;
    }
    let mut damaged = (b[12] % 4) as usize;
    if b.len() < FIXED + damaged * 16 {
        damaged = 0;
    }
    let entries = (b.len() - FIXED - damaged * 16) / 24;
    b.truncate(FIXED + entries * 24 + damaged * 16);
    b[8..12].copy_from_slice(&(entries as u32).to_le_bytes());
    b[12..16].copy_from_slice(&(damaged as u32).to_le_bytes());
    let n = b.len();
    let crc = crc32c::crc32c(&b[..n - 4]);
    b[n - 4..].copy_from_slice(&crc.to_le_bytes());
}

/// Recomputes the checksum of a `TRIM` file (a u64 and its CRC32C) when it has the right length.
pub fn fix_trim(b: &mut [u8]) {
    if b.len() == 12 {
        let crc = crc32c::crc32c(&b[0..8]);
        b[8..12].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The batches a probe of a shard was served, by sequence number.
pub type Served = BTreeMap<u64, StoredBatch>;

/// Reads a recovered shard back through its public API and checks what the store promises
/// (`docs/storage-format.md` §3.2 and §5):
/// - a read returns `Ok` or `Err`, never panics, and at most `max_batches` batches;
/// - a read that returns batches returns the one asked for first (`max(from, start_seq)`):
///   "a frame stepped over by a damaged length can never make a read return a later batch in
///   place of the one asked for", and then consecutive sequence numbers;
/// - every served batch is a frame whose checksum holds, byte for byte one of the frames in
///   the files the shard was recovered from ("a batch whose checksum fails is never
///   returned");
/// - with `strict`: no served batch lies in a range [`Shard::damage`] calls unreadable (not
///   checked when the input supplied index files: a crafted index with a valid checksum may
///   declare damage over intact frames, which only a forged file can do);
/// - a sequence number read twice gives the same batch;
/// - `find_time` returns `Ok` or `Err`, and an `Ok` is never below the first readable batch.
///
/// `files` are the bytes of every segment file written into the shard directory before it
/// was opened. Returns what was served, for comparison with a second recovery.
pub fn probe_shard(shard: &Shard, files: &[&[u8]], strict: bool) -> Served {
    let bounds = shard.bounds();
    let damage = shard.damage();
    let limits = ReadLimits {
        max_batches: 8,
        max_bytes: 1 << 16,
    };
    let mut served = Served::new();
    let check = |from: u64, got: &[StoredBatch], served: &mut Served| {
        assert!(
            got.len() <= limits.max_batches,
            "read({from}) returned {} batches",
            got.len()
        );
        let Some(first) = got.first() else { return };
        let asked = from.max(bounds.start_seq);
        assert_eq!(
            first.seq, asked,
            "read({from}) returned batch {} in place of {asked}",
            first.seq
        );
        for w in got.windows(2) {
            assert_eq!(
                w[1].seq,
                w[0].seq + 1,
                "read({from}) skipped from {} to {}",
                w[0].seq,
                w[1].seq
            );
        }
        for b in got {
            assert!(
                !strict
                    || !damage
                        .unreadable
                        .iter()
                        .any(|&(a, z)| a <= b.seq && b.seq <= z),
                "batch {} was served but damage() calls it unreadable: {damage:?}",
                b.seq
            );
            let mut encoded = Vec::with_capacity(frame::encoded_len(b.payload.len()));
            frame::encode(
                &mut encoded,
                &FrameHeader {
                    seq: b.seq,
                    timestamp_ms: b.timestamp_ms,
                    record_count: b.record_count,
                    flags: b.flags,
                },
                &b.payload,
            );
            assert!(
                files.iter().any(|f| contains(f, &encoded)),
                "batch {} was served but is not a verified frame of the files given",
                b.seq
            );
            if let Some(before) = served.get(&b.seq) {
                assert_eq!(before, b, "batch {} read twice differs", b.seq);
            }
            served.insert(b.seq, b.clone());
        }
    };

    // Probes at the edges: the bounds, and around every damaged or lost range.
    let mut probes = vec![
        0,
        1,
        bounds.start_seq,
        bounds.tail_seq,
        bounds.next_seq,
        u64::MAX,
    ];
    for &(a, z) in damage.unreadable.iter().chain(&damage.lost) {
        probes.extend([a.saturating_sub(1), a, z, z.saturating_add(1)]);
    }
    probes.sort_unstable();
    probes.dedup();
    for from in probes {
        let from = from.min(max_from());
        if let Ok(got) = shard.read(from, limits) {
            check(from, &got, &mut served);
        }
    }

    // A reader's walk from the start: past damage by its range, bounded in steps.
    let mut from = bounds.start_seq;
    for _ in 0..64 {
        if from > max_from() {
            break;
        }
        match shard.read(from, limits) {
            Ok(got) if got.is_empty() => break,
            Ok(got) => {
                check(from, &got, &mut served);
                from = got[got.len() - 1].seq + 1;
            }
            Err(_) => {
                let past = damage
                    .unreadable
                    .iter()
                    .find(|&&(a, z)| a <= from && from <= z)
                    .map_or(from.saturating_add(1), |&(_, z)| z.saturating_add(1));
                if past <= from {
                    break;
                }
                from = past;
            }
        }
    }

    let mut times: Vec<i64> = vec![i64::MIN, -1, 0, 1, i64::MAX];
    times.extend(served.values().map(|b| b.timestamp_ms));
    times.extend(served.values().map(|b| b.timestamp_ms.saturating_add(1)));
    for t in times {
        if let Ok(seq) = shard.find_time(t) {
            let start = shard.bounds().start_seq;
            assert!(
                seq >= start,
                "find_time({t}) = {seq}, below the first readable batch {start}"
            );
        }
    }
    served
}

/// Opens (recovers) the shard directory `dir`, probes it, then opens it a second time: a
/// directory that recovered once must recover again, and (with `strict`, see [`probe_shard`],
/// and when its segments do not overlap) serve the same batches: recovery cuts a torn tail and
/// seals damage, so the second start finds nothing new to cut.
pub fn open_twice(dir: &Path, retention_secs: u32, files: &[&[u8]], strict: bool) {
    let Ok(shard) = Shard::open(dir.to_path_buf(), SHARD_ID, retention_secs) else {
        return;
    };
    // Segments whose sequence ranges overlap (a segment holding frames at or past the next
    // one's base: only files named by hand make that) are not told apart by recovery
    // (observation O2 in docs/fuzzing.md): a read from an earlier batch serves the frames
    // that a read starting at them refuses. The strict checks assume a proper log.
    let strict = strict && {
        let st = shard.state();
        let segs: Vec<_> = st.segments.values().collect();
        !segs.windows(2).any(|w| w[0].last_seq >= w[1].base_seq)
    };
    let first = probe_shard(&shard, files, strict);
    if skip_known() && shard.bounds().next_seq >= 1 << 62 {
        // K7, K8 (K4, K4b, fixed, came here too): recovery records an acknowledged end, or
        // starts a segment, that its next start refuses as implausible.
        return;
    }
    drop(shard);
    let again = Shard::open(dir.to_path_buf(), SHARD_ID, retention_secs);
    let shard = match again {
        Ok(s) => s,
        Err(e) => panic!("a shard directory that recovered once fails the next start: {e}"),
    };
    let second = probe_shard(&shard, files, strict);
    assert!(
        !strict || first == second,
        "the second start serves other batches than the first: {:?} then {:?}",
        first.keys().collect::<Vec<_>>(),
        second.keys().collect::<Vec<_>>()
    );
}

/// Polls `f` until it is ready, at most `polls` times, with a waker that does nothing: for
/// futures that only wait on data already in memory. `None` if it was still pending.
pub fn poll_ready<F: Future>(f: F, polls: usize) -> Option<F::Output> {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..polls {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return Some(v);
        }
    }
    None
}

/// The payload of a frame as the store hands it out (for the seeds and the marker target).
pub fn encode_segment(base: u64, frames: &[(FrameHeader, Bytes)]) -> Vec<u8> {
    let mut out = streamcell_store::segment::encode_segment_header(SHARD_ID, base).to_vec();
    for (h, p) in frames {
        frame::encode(&mut out, h, p);
    }
    out
}
