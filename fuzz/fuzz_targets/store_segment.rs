//! Feeds arbitrary bytes to the store as the bytes of a segment file (`streamcell-store`).
//!
//! The input is one segment file, `00000000000000000001.log`, of shard 1. Each run uses it
//! twice: as it is, and with its checksums recomputed (`fix_segment`: the header's, then each
//! frame's as far as the frame lengths chain up), so that mutations get past CRC32C to the
//! checks behind it (magic, version, shard and base, sequence order, reserved bytes, resync
//! after damage).
//!
//! It calls the pure decoders (`frame::frame_len`, `frame::decode`, `frame::verify`,
//! `frame::peek_seq`, `segment::decode_segment_header`, `segment::damaged_header_names`,
//! `segment::scan`) on the bytes, then writes them into a fresh shard directory (no `ACKED`, as
//! a shard written before the marker existed) and recovers it with `Shard::open` (what
//! `Store::open` runs for every shard), reads everything back, and opens it a second time.
//!
//! Asserts: nothing panics; `scan`'s report stays inside the data (index offsets ascending and
//! before the valid end, damaged ranges ordered, a torn tail running to the end of the data);
//! every read is `Ok` or `Err` and keeps the guarantees checked by `probe_shard` (the batch
//! asked for comes first, consecutive sequence numbers, only checksummed frames of the file are
//! served, nothing from a range `damage()` calls unreadable); a directory that recovered once
//! recovers again and serves the same batches.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use streamcell_fuzz::{
    fix_segment, has_huge_seq_frame, open_twice, scratch_dir, skip_known, SHARD_ID,
};
use streamcell_store::frame;
use streamcell_store::segment::{self, SEGMENT_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    run(data);
    let mut fixed = data.to_vec();
    fix_segment(&mut fixed);
    if fixed != data {
        run(&fixed);
    }
});

fn run(data: &[u8]) {
    if skip_known() && has_huge_seq_frame(data) {
        return; // K4, K5 (docs/fuzzing.md)
    }
    let bytes = Bytes::copy_from_slice(data);
    let header = segment::decode_segment_header(data);
    let _ = segment::damaged_header_names(data, SHARD_ID, 1);
    if let Some(body) = bytes.get(SEGMENT_HEADER_LEN as usize..) {
        let _ = frame::frame_len(body);
        let _ = frame::peek_seq(body);
        let _ = frame::verify(body);
        if let Ok((_, payload, len)) = frame::decode(&bytes.slice(SEGMENT_HEADER_LEN as usize..)) {
            assert!(len <= body.len() && payload.len() + frame::FRAME_HEADER_LEN == len);
        }
    }
    let base = match header {
        Ok((_, base)) if base != 0 => base,
        _ => 1,
    };
    let rep = segment::scan(&bytes, base);
    if data.len() >= SEGMENT_HEADER_LEN as usize {
        assert!(
            rep.valid_end <= data.len() as u64,
            "valid_end past the data: {rep:?}"
        );
        for w in rep.index.windows(2) {
            assert!(
                w[0].offset < w[1].offset && w[0].seq < w[1].seq,
                "index not ascending: {rep:?}"
            );
        }
        for e in &rep.index {
            assert!(
                e.offset >= SEGMENT_HEADER_LEN && e.offset < rep.valid_end,
                "index entry outside the valid data: {rep:?}"
            );
        }
        for &(a, z) in &rep.damaged {
            assert!(
                a <= z && z < rep.last_seq,
                "damaged range out of order: {rep:?}"
            );
        }
        if let Some((at, len)) = rep.torn_tail {
            assert_eq!(
                at + len,
                data.len() as u64,
                "torn tail does not reach the end: {rep:?}"
            );
        }
    }

    let tmp = scratch_dir();
    let dir = tmp.path().join(SHARD_ID.to_string());
    std::fs::create_dir(&dir).expect("shard directory");
    std::fs::write(dir.join(segment::segment_file_name(1)), data).expect("segment file");
    open_twice(&dir, 0, &[data], true);
}
