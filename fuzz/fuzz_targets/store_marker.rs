//! Feeds arbitrary bytes to the store as a shard's acknowledged-end marker, `ACKED`
//! (`streamcell-store`, `marker.rs`).
//!
//! The input is the whole `ACKED` file. Each run uses it as it is and, when it is 1024 bytes
//! long, with both slots' checksums recomputed (`fix_marker`), so mutations reach the
//! plausibility checks and the comparison of the acknowledged end with the log. It is placed
//! next to a valid segment written with the store's own encoders (batches 1..=3), and next to
//! that segment cut after its first batch (so a marker that acknowledged more must be reported
//! as loss). It calls `AckMarker::load` and recovers the directory with `Shard::open`, reads it
//! back and opens it again.
//!
//! Asserts: nothing panics; a loaded marker holds a plausible position (base ≥ 1, end ≥ the
//! segment header, `last_seq + 1 ≥ base`, `last_seq < 2^62`, as `decode_slot` promises); after
//! recovery no acknowledged sequence number is handed out again (`next_seq > last_seq` of the
//! marker, `docs/storage-format.md` §5.1) and the shard's recorded acknowledged end is not
//! below the marker's; plus every read guarantee `probe_shard` checks, and a second start
//! serving the same batches.
#![no_main]

use std::path::PathBuf;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use streamcell_fuzz::{
    encode_segment, fix_marker, has_max_generation_slot, open_twice, scratch_dir, skip_known,
    SHARD_ID,
};
use streamcell_store::frame::FrameHeader;
use streamcell_store::marker::{AckMarker, MARKER_FILE};
use streamcell_store::segment::{self, SEGMENT_HEADER_LEN};
use streamcell_store::shard::Shard;
use tempfile::TempDir;

fuzz_target!(|data: &[u8]| {
    let frames: Vec<(FrameHeader, Bytes)> = (1..=3u64)
        .map(|seq| {
            let h = FrameHeader {
                seq,
                timestamp_ms: 1_700_000_000_000 + seq as i64,
                record_count: 1,
                flags: 0,
            };
            (h, Bytes::from(format!("batch {seq}")))
        })
        .collect();
    let full = encode_segment(1, &frames);
    let cut = encode_segment(1, &frames[..1]);
    let mut fixed = data.to_vec();
    fix_marker(&mut fixed);
    for marker in [data, &fixed[..]] {
        for seg in [&full, &cut] {
            run(marker, seg);
        }
        if fixed == data {
            break;
        }
    }
});

/// A fresh shard directory holding `seg` as its only segment and `marker` as its `ACKED`.
fn shard_dir(marker: &[u8], seg: &[u8]) -> (TempDir, PathBuf) {
    let tmp = scratch_dir();
    let dir = tmp.path().join(SHARD_ID.to_string());
    std::fs::create_dir(&dir).expect("shard directory");
    std::fs::write(dir.join(segment::segment_file_name(1)), seg).expect("segment file");
    std::fs::write(dir.join(MARKER_FILE), marker).expect("marker file");
    (tmp, dir)
}

fn run(marker: &[u8], seg: &[u8]) {
    if skip_known() && has_max_generation_slot(marker) {
        return; // K6 (docs/fuzzing.md)
    }
    let (_tmp, dir) = shard_dir(marker, seg);

    let loaded = match AckMarker::load(&dir, SHARD_ID) {
        Ok(Some(m)) => Some(m.acked()),
        Ok(None) => unreachable!("the marker file was written"),
        Err(_) => None,
    };
    if let Some(p) = loaded {
        assert!(
            p.last_seq < 1 << 62
                && p.base_seq >= 1
                && p.end >= SEGMENT_HEADER_LEN
                && p.last_seq + 1 >= p.base_seq,
            "implausible position loaded: {p:?}"
        );
        if let Ok(shard) = Shard::open(dir.clone(), SHARD_ID, 0) {
            let b = shard.bounds();
            assert!(
                b.next_seq > p.last_seq,
                "acknowledged batches up to {} but the next append would get {}",
                p.last_seq,
                b.next_seq
            );
            assert!(
                shard.acked_seq() >= p.last_seq,
                "the acknowledged end went back from {} to {}",
                p.last_seq,
                shard.acked_seq()
            );
        }
    }
    // The open above already repaired the directory: start over from the input's files.
    let (_tmp, dir) = shard_dir(marker, seg);
    open_twice(&dir, 0, &[seg], true);
}
