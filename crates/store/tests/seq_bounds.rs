//! The bounds on sequence numbers read back from a shard's files agree with each other: what
//! one start accepts, the next start accepts too (fuzz findings K7 and K8 in
//! `docs/fuzzing.md`, and the trim point and a base of 0, found with them). Each case writes
//! a shard directory by hand, opens it with `Shard::open` (the recovery `Store::open` runs per
//! shard), then opens it again.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use streamcell_store::frame::{self, FrameHeader, MAX_BATCH_SEQ, MAX_SEQ};
use streamcell_store::marker::{AckMarker, AckedPos};
use streamcell_store::segment::{self, IndexEntry, SealedIndex, SEGMENT_HEADER_LEN};
use streamcell_store::shard::Shard;
use streamcell_store::vfs::StdFs;
use streamcell_store::{
    LogOptions, NewBatch, NewStream, ReadLimits, Store, StoreError, SyncPolicy,
};

const SHARD: u64 = 1;

/// A segment file of `SHARD` based at `base` holding frames with these sequence numbers.
fn segment_bytes(base: u64, seqs: &[u64]) -> Vec<u8> {
    let mut out = segment::encode_segment_header(SHARD, base).to_vec();
    for &seq in seqs {
        let h = FrameHeader {
            seq,
            timestamp_ms: 1_000 + seq as i64 % 1_000,
            record_count: 1,
            flags: 0,
        };
        frame::encode(&mut out, &h, format!("batch {seq}").as_bytes());
    }
    out
}

fn write_segment(dir: &Path, base: u64, seqs: &[u64]) -> u64 {
    let bytes = segment_bytes(base, seqs);
    std::fs::write(dir.join(segment::segment_file_name(base)), &bytes).expect("segment");
    bytes.len() as u64
}

fn shard_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join(SHARD.to_string());
    std::fs::create_dir(&dir).expect("shard dir");
    (tmp, dir)
}

fn open(dir: &Path) -> Result<Arc<Shard>, StoreError> {
    Shard::open(dir.to_path_buf(), SHARD, 0)
}

/// Opens `dir` twice: the second start must accept what the first recovered, with the same
/// bounds (nothing is appended in between). Returns the second shard.
fn open_twice(dir: &Path) -> Arc<Shard> {
    let first = open(dir).expect("the first start");
    let b1 = first.bounds();
    assert!(
        b1.next_seq < MAX_SEQ,
        "next sequence number {}",
        b1.next_seq
    );
    drop(first);
    let second = open(dir)
        .unwrap_or_else(|e| panic!("a directory that recovered once fails the next start: {e}"));
    assert_eq!(second.bounds(), b1, "the second start sees other bounds");
    second
}

fn seqs_read(shard: &Shard, from: u64) -> Vec<u64> {
    shard
        .read(from, ReadLimits::batches(16))
        .expect("read")
        .iter()
        .map(|b| b.seq)
        .collect()
}

/// K7: a frame numbered 2^62 - 1 (valid checksum) is not taken as a batch: recovery would start
/// the next segment at 2^62, which the next start refuses. It ends the valid log (a torn tail).
#[test]
fn k7_a_frame_numbered_2pow62_minus_1_is_not_recovered() {
    let (_tmp, dir) = shard_dir();
    write_segment(&dir, 1, &[MAX_SEQ - 1]);
    let shard = open_twice(&dir);
    let b = shard.bounds();
    assert_eq!((b.tail_seq, b.next_seq), (0, 1));
    assert!(shard.damage().unreadable.is_empty());
    // The same after batches 1 and 2.
    let (_tmp, dir) = shard_dir();
    write_segment(&dir, 1, &[1, 2, MAX_SEQ - 1]);
    let shard = open_twice(&dir);
    assert_eq!(shard.bounds().next_seq, 3);
    assert_eq!(seqs_read(&shard, 1), vec![1, 2]);
}

/// The largest batch number the store accepts, `MAX_BATCH_SEQ` = 2^62 - 2, is recovered (the
/// numbers before it as damage) and the next segment starts at 2^62 - 1, which the next start
/// accepts.
#[test]
fn the_largest_batch_number_is_recovered_and_recovered_again() {
    let (_tmp, dir) = shard_dir();
    write_segment(&dir, 1, &[1, MAX_BATCH_SEQ]);
    let shard = open_twice(&dir);
    let b = shard.bounds();
    assert_eq!((b.tail_seq, b.next_seq), (MAX_BATCH_SEQ, MAX_SEQ - 1));
    assert_eq!(seqs_read(&shard, MAX_BATCH_SEQ), vec![MAX_BATCH_SEQ]);
    assert_eq!(shard.damage().unreadable, vec![(2, MAX_BATCH_SEQ - 1)]);
}

/// A last segment based at 2^62 - 1 (the largest base) is accepted, and accepted again.
#[test]
fn a_segment_at_the_largest_base_is_accepted_twice() {
    let (_tmp, dir) = shard_dir();
    write_segment(&dir, 1, &[1]);
    write_segment(&dir, MAX_SEQ - 1, &[]);
    let shard = open_twice(&dir);
    assert_eq!(shard.bounds().next_seq, MAX_SEQ - 1);
}

/// An `ACKED` that records the largest batch number as acknowledged, ahead of the log: the
/// batches are reported lost up to it, numbering continues at 2^62 - 1, and the next start
/// accepts that. (A marker one above it is refused by the marker itself: `marker::tests`.)
#[test]
fn an_acknowledged_end_at_the_largest_batch_number_is_recovered_twice() {
    let (_tmp, dir) = shard_dir();
    let end = write_segment(&dir, 1, &[1, 2]);
    let mut m = AckMarker::create(
        &dir,
        SHARD,
        AckedPos {
            base_seq: 1,
            end,
            last_seq: 2,
        },
    )
    .expect("marker");
    m.record(AckedPos {
        base_seq: 1,
        end: end + 100,
        last_seq: MAX_BATCH_SEQ,
    })
    .expect("record");
    m.sync(None).expect("sync");
    drop(m);
    let shard = open_twice(&dir);
    assert_eq!(shard.bounds().next_seq, MAX_SEQ - 1);
    assert_eq!(shard.damage().unreadable, vec![(3, MAX_BATCH_SEQ)]);
}

fn opts() -> LogOptions {
    LogOptions {
        sync: SyncPolicy::Always,
        segment_bytes: 4096,
        committer_threads: 1,
        max_inflight_bytes: 8 << 20,
        retention_check_interval: Duration::from_secs(3600),
    }
}

/// A shard whose next sequence number is 2^62 - 1 (its log ends in a segment based there, which
/// only a file the store did not write gives) refuses appends instead of numbering a batch the
/// next start would cut off below an acknowledged end it refuses; it is still served after a
/// restart.
#[tokio::test]
async fn appends_past_the_largest_batch_number_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let shard;
    {
        let store = Store::open(tmp.path(), opts()).expect("open");
        let (_, metas) = store
            .catalog
            .create_stream(NewStream {
                name: "s".into(),
                replication_factor: 1,
                backlog_secs: 0,
                created_ms: 0,
                key_ranges: vec![("0".into(), "0".into())],
                epoch: 1,
                shard_ids: vec![],
            })
            .expect("stream");
        shard = metas[0].id;
        store.log.create_shard(shard, 0).expect("shard");
        store.shutdown().await;
    }
    let dir = tmp.path().join("shards").join(shard.to_string());
    std::fs::write(
        dir.join(segment::segment_file_name(MAX_SEQ - 1)),
        segment::encode_segment_header(shard, MAX_SEQ - 1),
    )
    .expect("segment at the largest base");
    for _ in 0..2 {
        let store = Store::open(tmp.path(), opts()).expect("open");
        assert_eq!(
            store.log.bounds(shard).expect("served").next_seq,
            MAX_SEQ - 1
        );
        let err = store
            .log
            .append(
                shard,
                NewBatch {
                    payload: Bytes::from_static(b"x"),
                    record_count: 1,
                    flags: 0,
                },
            )
            .await
            .expect_err("no sequence number left");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert_eq!(
            store.log.bounds(shard).expect("served").next_seq,
            MAX_SEQ - 1
        );
        store.shutdown().await;
    }
}

/// A sealed segment (batches 1..=3) and its index file with `last_seq` set to `last` (the
/// checksum valid), before an active segment at 4.
fn sealed_with_index(dir: &Path, last: u64, tweak: impl FnOnce(&mut SealedIndex)) {
    let data_len = write_segment(dir, 1, &[1, 2, 3]);
    write_segment(dir, 4, &[]);
    let mut ix = SealedIndex {
        entries: vec![IndexEntry {
            seq: 1,
            timestamp_ms: 1_001,
            offset: SEGMENT_HEADER_LEN,
        }],
        last_seq: last,
        first_ts: 1_001,
        last_ts: 1_003,
        data_len,
        damaged: Vec::new(),
    };
    tweak(&mut ix);
    ix.write(&StdFs, dir, 1).expect("index");
}

fn load_index(dir: &Path, base: u64) -> SealedIndex {
    SealedIndex::load(&StdFs, dir, base)
        .expect("read index")
        .expect("a valid index")
}

/// K8: a sealed segment's index file whose `last_seq` cannot be this segment's (past the
/// batch bound, `u64::MAX`, below the base, at or past the next segment's base) is treated
/// as damaged: the segment is scanned, its index written again, and the next start accepts
/// the result. Before, recovery took `last_seq` as the log's end: an `ACKED` the next start
/// refused (2^62), a segment at 2^62 (2^62 - 1), or an overflow of `last_seq + 1` (u64::MAX).
#[test]
fn k8_an_implausible_index_end_is_ignored_and_the_segment_scanned() {
    for last in [
        MAX_SEQ - 1,
        MAX_SEQ,
        u64::MAX - 65_531,
        u64::MAX,
        4,
        5,
        1_000,
    ] {
        let (_tmp, dir) = shard_dir();
        sealed_with_index(&dir, last, |_| {});
        let shard = open_twice(&dir);
        let b = shard.bounds();
        assert_eq!((b.tail_seq, b.next_seq), (3, 4), "index last_seq {last}");
        assert_eq!(seqs_read(&shard, 1), vec![1, 2, 3], "index last_seq {last}");
        assert!(
            shard.damage().unreadable.is_empty(),
            "index last_seq {last}"
        );
        assert_eq!(
            load_index(&dir, 1).last_seq,
            3,
            "the index is written again"
        );
    }
    // An index naming an empty segment (last_seq = base - 1) is plausible and taken as it is:
    // batches 1..=3 are then a gap before segment 4, reported unreadable.
    let (_tmp, dir) = shard_dir();
    sealed_with_index(&dir, 0, |ix| ix.entries.clear());
    let shard = open_twice(&dir);
    assert_eq!(load_index(&dir, 1).last_seq, 0);
    assert_eq!(shard.damage().unreadable, vec![(1, 3)]);
    assert!(shard.read(1, ReadLimits::batches(1)).is_err());
}

/// The K8 index as the fuzzer found it: segment 1's index has `last_seq` 2^64 - 65532 and the
/// next segment is an empty file, which recovery removes as half-created, so that segment 1
/// is sealed yet the last one and the next segment would start after that `last_seq`.
#[test]
fn k8_an_implausible_index_before_a_half_created_segment() {
    for last in [MAX_SEQ - 1, MAX_SEQ, u64::MAX - 65_531, u64::MAX] {
        let (_tmp, dir) = shard_dir();
        sealed_with_index(&dir, last, |_| {});
        std::fs::write(dir.join(segment::segment_file_name(4)), b"").expect("empty");
        let shard = open_twice(&dir);
        assert_eq!(shard.bounds().next_seq, 4, "index last_seq {last}");
        assert_eq!(seqs_read(&shard, 1), vec![1, 2, 3]);
    }
}

/// Entries and damaged ranges outside the segment, or out of order, make the index implausible
/// too; the store never writes them.
#[test]
fn an_index_with_entries_or_damage_outside_the_segment_is_scanned() {
    type Tweak = fn(&mut SealedIndex);
    let tweaks: [(&str, Tweak); 6] = [
        ("entry below the base", |ix| ix.entries[0].seq = 0),
        ("entry past the last batch", |ix| ix.entries[0].seq = 4),
        ("entry in the header", |ix| ix.entries[0].offset = 0),
        ("entry past the data", |ix| {
            ix.entries[0].offset = ix.data_len
        }),
        ("damage past the last batch", |ix| ix.damaged.push((2, 4))),
        ("damage reversed", |ix| ix.damaged.push((3, 2))),
    ];
    for (what, tweak) in tweaks {
        let (_tmp, dir) = shard_dir();
        sealed_with_index(&dir, 3, tweak);
        let shard = open_twice(&dir);
        assert_eq!(seqs_read(&shard, 1), vec![1, 2, 3], "{what}");
        assert!(shard.damage().unreadable.is_empty(), "{what}");
        assert_eq!(load_index(&dir, 1).damaged, vec![], "{what}");
    }
    // A plausible index is taken without a scan: its damaged range is kept.
    let (_tmp, dir) = shard_dir();
    sealed_with_index(&dir, 3, |ix| ix.damaged.push((2, 2)));
    let shard = open_twice(&dir);
    assert_eq!(shard.damage().unreadable, vec![(2, 2)]);
}

fn write_trim(dir: &Path, start: u64) {
    let mut b = start.to_le_bytes().to_vec();
    b.extend_from_slice(&crc32c::crc32c(&start.to_le_bytes()).to_le_bytes());
    std::fs::write(dir.join("TRIM"), b).expect("TRIM");
}

/// A `TRIM` point of 2^62 or more is refused as damage (at every start) rather than taken as
/// the place numbering continues from: recovery would start a segment there that the next
/// start refuses. The largest base, 2^62 - 1, is a trim point the next start accepts.
#[test]
fn an_implausible_trim_point_is_refused_and_the_largest_is_kept() {
    for start in [MAX_SEQ, MAX_SEQ + 1, u64::MAX] {
        let (_tmp, dir) = shard_dir();
        write_segment(&dir, 1, &[1, 2]);
        write_trim(&dir, start);
        for _ in 0..2 {
            let err = open(&dir).expect_err("an implausible trim point");
            assert!(err.to_string().contains("implausible trim point"), "{err}");
        }
    }
    let (_tmp, dir) = shard_dir();
    write_segment(&dir, 1, &[1, 2]);
    write_trim(&dir, MAX_SEQ - 1);
    let shard = open_twice(&dir);
    let b = shard.bounds();
    assert_eq!((b.start_seq, b.next_seq), (MAX_SEQ - 1, MAX_SEQ - 1));
    let err = shard
        .trim(MAX_BATCH_SEQ + 1)
        .expect_err("trim past the bound");
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
}

/// A segment named 0 (and so based at 0, its header valid) was not written by the store, whose
/// numbering starts at 1: the shard is refused as damaged at every start, as for a base of
/// 2^62 or more (K4b). Before, the first start served it and recorded an `ACKED` with base 0,
/// which the next start refused.
#[test]
fn a_segment_based_at_0_is_refused_at_every_start() {
    for extra in [false, true] {
        let (_tmp, dir) = shard_dir();
        write_segment(&dir, 0, &[]);
        if extra {
            write_segment(&dir, 1, &[1]);
        }
        for _ in 0..2 {
            let err = open(&dir).expect_err("a segment based at 0");
            assert!(
                err.to_string().contains("segment base 0 is implausible"),
                "{err}"
            );
        }
    }
}
