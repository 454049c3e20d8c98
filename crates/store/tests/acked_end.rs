//! The acknowledged-end marker: a segment cut, zeroed or deleted below what was acknowledged is
//! reported as data loss (reads fail at the gap, sequence numbers are never reused), while a
//! torn tail of bytes that were never acknowledged is still cut off silently. Also: a damaged
//! marker file, and data directories written before the marker existed.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use streamcell_store::marker::MARKER_FILE;
use streamcell_store::{
    LogOptions, NewBatch, NewStream, ReadLimits, ShardDamage, Store, StoreError, SyncPolicy,
};

fn opts_with(segment_bytes: u64, sync: SyncPolicy) -> LogOptions {
    LogOptions {
        sync,
        segment_bytes,
        committer_threads: 2,
        max_inflight_bytes: 8 << 20,
        retention_check_interval: Duration::from_secs(3600),
    }
}

fn opts(segment_bytes: u64) -> LogOptions {
    opts_with(segment_bytes, SyncPolicy::Always)
}

fn new_stream(store: &Store, name: &str) -> u64 {
    new_stream_with_backlog(store, name, 0)
}

/// A stream of one shard whose retention is `backlog` seconds; returns the shard id.
fn new_stream_with_backlog(store: &Store, name: &str, backlog: u32) -> u64 {
    let (_, metas) = store
        .catalog
        .create_stream(NewStream {
            name: name.into(),
            replication_factor: 1,
            backlog_secs: backlog,
            created_ms: 0,
            key_ranges: vec![("0".into(), "0".into())],
            epoch: 1,
            shard_ids: vec![],
        })
        .expect("create stream");
    for m in &metas {
        store.log.create_shard(m.id, backlog).expect("create shard");
    }
    metas[0].id
}

fn payload(seq: u64) -> Bytes {
    Bytes::from(format!("seq-{seq:06}-{}", "y".repeat((seq % 61) as usize)))
}

/// Appends batches `from..from + n` (by sequence number, which the payload names) and checks
/// that each got the sequence number it names.
async fn append_seqs(store: &Store, shard: u64, from: u64, n: u64) {
    for seq in from..from + n {
        let a = store
            .log
            .append(
                shard,
                NewBatch {
                    payload: payload(seq),
                    record_count: 1,
                    flags: 0,
                },
            )
            .await
            .expect("append");
        assert_eq!(a.seq, seq, "sequence number handed out");
    }
}

/// A data directory with one stream "s" of one shard holding batches `1..=n` (1 MiB
/// segments), closed cleanly; returns it and the shard id.
async fn closed_shard(n: u64) -> (tempfile::TempDir, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), opts(1 << 20)).expect("open");
    let shard = new_stream(&store, "s");
    append_seqs(&store, shard, 1, n).await;
    drop(store);
    (dir, shard)
}

/// Like [`closed_shard`] with 4 KiB segments (so most are sealed), shut down cleanly.
async fn sealed_segments(n: u64) -> (tempfile::TempDir, u64) {
    sealed_segments_with_backlog(n, 0).await
}

/// Like [`sealed_segments`], for a stream whose retention is `backlog` seconds.
async fn sealed_segments_with_backlog(n: u64, backlog: u32) -> (tempfile::TempDir, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), opts(4096)).expect("open");
    let shard = new_stream_with_backlog(&store, "s", backlog);
    append_seqs(&store, shard, 1, n).await;
    store.shutdown().await;
    drop(store);
    (dir, shard)
}

fn shard_dir(dir: &Path, shard: u64) -> PathBuf {
    dir.join("shards").join(shard.to_string())
}

fn files_with_ext(dir: &Path, shard: u64, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(shard_dir(dir, shard))
        .expect("shard dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// The base sequence number a segment or index file is named by.
fn base_of(p: &Path) -> u64 {
    p.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("base")
}

fn active_segment(dir: &Path, shard: u64) -> PathBuf {
    files_with_ext(dir, shard, "log").pop().expect("a segment")
}

/// Offsets of the frames of a segment file, in order.
fn frame_offsets(seg: &Path) -> Vec<u64> {
    let data = std::fs::read(seg).expect("read segment");
    let mut out = Vec::new();
    let mut pos = 32usize;
    while pos + 8 <= data.len() {
        out.push(pos as u64);
        pos += 8 + u32::from_le_bytes(data[pos..pos + 4].try_into().expect("len")) as usize;
    }
    out
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open")
        .set_len(len)
        .expect("truncate");
}

fn write_at(path: &Path, bytes: &[u8], at: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open")
        .write_all_at(bytes, at)
        .expect("write");
}

/// Reads from `from` until the tail or the first error; returns what was read and the error.
fn read_until_error(store: &Store, shard: u64, from: u64) -> (Vec<u64>, Option<StoreError>) {
    let mut seqs = Vec::new();
    let mut from = from;
    loop {
        match store.log.read(shard, from, ReadLimits::batches(7)) {
            Ok(got) if got.is_empty() => return (seqs, None),
            Ok(got) => {
                for b in got {
                    assert_eq!(b.seq, from, "reads are consecutive");
                    assert_eq!(b.payload, payload(b.seq), "batch {} intact", b.seq);
                    seqs.push(b.seq);
                    from += 1;
                }
            }
            Err(e) => return (seqs, Some(e)),
        }
    }
}

fn assert_corrupt(store: &Store, shard: u64, seq: u64) {
    match store.log.read(shard, seq, ReadLimits::batches(10)) {
        Err(StoreError::Corrupt { detail, .. }) => {
            assert!(detail.contains("lost"), "{detail}")
        }
        other => panic!("reading lost batch {seq}: expected a corruption error, got {other:?}"),
    }
}

fn damage(store: &Store, shard: u64) -> ShardDamage {
    store.log.damage(shard).expect("damage report")
}

/// Everything that must hold once batches `lost.0..=lost.1` were acknowledged and then lost,
/// with `last` the last acknowledged batch: reads stop before the gap and fail in it, the
/// tail and the next sequence number are past it, and a new append continues after `last`.
async fn check_loss(store: &Store, shard: u64, lost: (u64, u64), last: u64) {
    let (seqs, err) = read_until_error(store, shard, 1);
    assert_eq!(
        seqs,
        (1..lost.0).collect::<Vec<_>>(),
        "batches before the gap"
    );
    assert!(
        matches!(err, Some(StoreError::Corrupt { .. })),
        "reading on reaches the gap: {err:?}"
    );
    for seq in [lost.0, (lost.0 + lost.1) / 2, lost.1] {
        assert_corrupt(store, shard, seq);
    }
    let b = store.log.bounds(shard).expect("bounds");
    assert!(
        b.next_seq > last,
        "next_seq {} reuses an acknowledged number",
        b.next_seq
    );
    assert_eq!(b.next_seq, last + 1);
    assert_eq!(b.tail_seq, last);
    assert_eq!(*store.log.watch_tail(shard).expect("watch").borrow(), last);
    append_seqs(store, shard, last + 1, 2).await;
    let after = store
        .log
        .read(shard, last + 1, ReadLimits::batches(10))
        .expect("read new batches");
    assert_eq!(
        after.iter().map(|b| b.seq).collect::<Vec<_>>(),
        vec![last + 1, last + 2]
    );
}

#[tokio::test]
async fn truncating_the_active_segment_after_a_clean_close_is_data_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shard;
    {
        let store = Store::open(dir.path(), opts(1 << 20)).expect("open");
        shard = new_stream(&store, "s");
        append_seqs(&store, shard, 1, 50).await;
        store.shutdown().await;
    }
    let seg = active_segment(dir.path(), shard);
    let offsets = frame_offsets(&seg);
    assert_eq!(offsets.len(), 50);
    // Cut exactly at a frame boundary: what is left is a perfectly valid, shorter log.
    truncate(&seg, offsets[30]);
    tokio::time::sleep(Duration::from_millis(5)).await;
    {
        let store = Store::open(dir.path(), opts(1 << 20)).expect("reopen");
        let d = damage(&store, shard);
        assert_eq!(d.lost, vec![(31, 50)]);
        assert_eq!(d.unreadable, vec![(31, 50)]);
        assert_eq!(d.lost_batches(), 20);
        // A time look-up past the last surviving batch lands on the gap, not after it.
        let ts30 = store
            .log
            .read(shard, 30, ReadLimits::batches(1))
            .expect("read 30")[0]
            .timestamp_ms;
        assert_eq!(store.log.find_time(shard, ts30 + 1).expect("find"), 31);
        check_loss(&store, shard, (31, 50), 50).await;
        assert_eq!(damage(&store, shard).acked_seq, 52);
        store.shutdown().await;
    }
    // The loss is permanent: the next start still refuses the gap and continues the numbering,
    // but does not report it as newly lost.
    let store = Store::open(dir.path(), opts(1 << 20)).expect("reopen again");
    let d = damage(&store, shard);
    assert!(d.lost.is_empty(), "{d:?}");
    assert_eq!(d.unreadable, vec![(31, 50)]);
    assert_corrupt(&store, shard, 31);
    assert_corrupt(&store, shard, 50);
    assert_eq!(store.log.bounds(shard).expect("bounds").next_seq, 53);
    append_seqs(&store, shard, 53, 1).await;
}

#[tokio::test]
async fn truncating_the_active_segment_after_a_crash_is_data_loss() {
    for sync in [SyncPolicy::Always, SyncPolicy::Never] {
        let dir = tempfile::tempdir().expect("tempdir");
        let shard;
        {
            let store = Store::open(dir.path(), opts_with(1 << 20, sync)).expect("open");
            shard = new_stream(&store, "s");
            append_seqs(&store, shard, 1, 50).await;
            // A crash: dropped without shutdown (a killed process keeps the page cache).
        }
        let seg = active_segment(dir.path(), shard);
        let offsets = frame_offsets(&seg);
        // Cut in the middle of batch 41's frame: it looks exactly like a torn append.
        truncate(&seg, offsets[40] + 10);
        let store = Store::open(dir.path(), opts_with(1 << 20, sync)).expect("reopen");
        assert_eq!(damage(&store, shard).lost, vec![(41, 50)], "{sync}");
        assert_eq!(
            std::fs::metadata(&seg).expect("stat").len(),
            offsets[40],
            "the partial frame is cut off"
        );
        check_loss(&store, shard, (41, 50), 50).await;
    }
}

#[tokio::test]
async fn a_torn_unacknowledged_tail_is_still_cut_silently() {
    let (dir, shard) = closed_shard(20).await;
    let seg = active_segment(dir.path(), shard);
    let good_len = std::fs::metadata(&seg).expect("stat").len();
    // Half of the frame of an append that was never acknowledged (batch 21).
    let mut frame = Vec::new();
    streamcell_store::frame::encode(
        &mut frame,
        &streamcell_store::frame::FrameHeader {
            seq: 21,
            timestamp_ms: 1,
            record_count: 1,
            flags: 0,
        },
        &[9u8; 300],
    );
    write_at(&seg, &frame[..frame.len() / 2], good_len);
    {
        let store = Store::open(dir.path(), opts(1 << 20)).expect("reopen");
        assert_eq!(
            damage(&store, shard),
            ShardDamage {
                lost: vec![],
                unreadable: vec![],
                acked_seq: 20,
            }
        );
        assert_eq!(std::fs::metadata(&seg).expect("stat").len(), good_len);
        let (seqs, err) = read_until_error(&store, shard, 1);
        assert_eq!((seqs.len(), err.is_none()), (20, true));
        assert_eq!(store.log.bounds(shard).expect("bounds").next_seq, 21);
    }
    // Random garbage after the end: also a torn tail.
    write_at(&seg, b"\x13\x37garbage that is no frame at all", good_len);
    let store = Store::open(dir.path(), opts(1 << 20)).expect("reopen");
    assert!(damage(&store, shard).unreadable.is_empty());
    assert_eq!(std::fs::metadata(&seg).expect("stat").len(), good_len);
    append_seqs(&store, shard, 21, 1).await;
    assert_eq!(read_until_error(&store, shard, 1).0.len(), 21);
}

#[tokio::test]
async fn a_zero_filled_acknowledged_region_is_data_loss() {
    let (dir, shard) = closed_shard(30).await;
    let seg = active_segment(dir.path(), shard);
    let len = std::fs::metadata(&seg).expect("stat").len();
    let offsets = frame_offsets(&seg);
    // What a lost write-back cache leaves: the file has its length, the end of it is zeros.
    write_at(&seg, &vec![0u8; (len - offsets[25]) as usize], offsets[25]);
    let store = Store::open(dir.path(), opts(1 << 20)).expect("reopen");
    assert_eq!(damage(&store, shard).lost, vec![(26, 30)]);
    check_loss(&store, shard, (26, 30), 30).await;
}

#[tokio::test]
async fn zeros_past_the_acknowledged_end_are_still_a_torn_tail() {
    let (dir, shard) = closed_shard(10).await;
    let seg = active_segment(dir.path(), shard);
    let len = std::fs::metadata(&seg).expect("stat").len();
    write_at(&seg, &[0u8; 4096], len);
    let store = Store::open(dir.path(), opts(1 << 20)).expect("reopen");
    assert_eq!(damage(&store, shard).lost, vec![]);
    assert_eq!(std::fs::metadata(&seg).expect("stat").len(), len);
    append_seqs(&store, shard, 11, 1).await;
}

#[tokio::test]
async fn a_deleted_active_segment_is_data_loss() {
    let (dir, shard) = sealed_segments(300).await;
    let seg = active_segment(dir.path(), shard);
    let base: u64 = seg
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("base");
    assert!(base > 1 && base <= 300);
    std::fs::remove_file(&seg).expect("rm");
    let store = Store::open(dir.path(), opts(4096)).expect("reopen");
    assert_eq!(damage(&store, shard).lost, vec![(base, 300)]);
    check_loss(&store, shard, (base, 300), 300).await;
}

#[tokio::test]
async fn an_active_segment_cut_to_nothing_is_data_loss() {
    let (dir, shard) = closed_shard(12).await;
    // Cut to zero bytes: it looks like a segment whose creation a crash interrupted.
    truncate(&active_segment(dir.path(), shard), 0);
    let store = Store::open(dir.path(), opts(1 << 20)).expect("reopen");
    assert_eq!(damage(&store, shard).lost, vec![(1, 12)]);
    check_loss(&store, shard, (1, 12), 12).await;
}

#[tokio::test]
async fn a_shard_whose_segments_all_vanished_keeps_its_numbers() {
    let (dir, shard) = sealed_segments(200).await;
    for ext in ["log", "idx"] {
        for f in files_with_ext(dir.path(), shard, ext) {
            std::fs::remove_file(f).expect("rm");
        }
    }
    {
        let store = Store::open(dir.path(), opts(4096)).expect("reopen");
        assert_eq!(damage(&store, shard).lost, vec![(1, 200)]);
        check_loss(&store, shard, (1, 200), 200).await;
        store.shutdown().await;
    }
    let store = Store::open(dir.path(), opts(4096)).expect("reopen again");
    assert_eq!(damage(&store, shard).unreadable, vec![(1, 200)]);
    assert_corrupt(&store, shard, 1);
    assert_eq!(store.log.bounds(shard).expect("bounds").next_seq, 203);
}

#[tokio::test]
async fn a_truncated_sealed_segment_is_reported_as_lost() {
    let (dir, shard) = sealed_segments(200).await;
    let segs = files_with_ext(dir.path(), shard, "log");
    assert!(segs.len() > 3);
    let sealed = &segs[1];
    let offsets = frame_offsets(sealed);
    let first: u64 = sealed
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("base");
    let next: u64 = segs[2]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("base");
    truncate(sealed, offsets[3] + 5);
    let store = Store::open(dir.path(), opts(4096)).expect("reopen");
    let d = damage(&store, shard);
    assert_eq!(d.lost, vec![(first + 3, next - 1)]);
    assert_eq!(d.unreadable, vec![(first + 3, next - 1)]);
    assert!(matches!(
        store.log.read(shard, first + 3, ReadLimits::batches(1)),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(store.log.bounds(shard).expect("bounds").next_seq, 201);
}

#[tokio::test]
async fn a_deleted_sealed_segment_is_reported_as_lost() {
    let (dir, shard) = sealed_segments(200).await;
    let segs = files_with_ext(dir.path(), shard, "log");
    let base = |p: &Path| -> u64 {
        p.file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("base")
    };
    let (gone, next) = (base(&segs[2]), base(&segs[3]));
    std::fs::remove_file(&segs[2]).expect("rm");
    std::fs::remove_file(segs[2].with_extension("idx")).expect("rm idx");
    for _ in 0..2 {
        let store = Store::open(dir.path(), opts(4096)).expect("reopen");
        let d = damage(&store, shard);
        assert_eq!(d.lost, vec![(gone, next - 1)]);
        assert_eq!(d.unreadable, vec![(gone, next - 1)]);
        let (seqs, err) = read_until_error(&store, shard, 1);
        assert_eq!(seqs, (1..gone).collect::<Vec<_>>());
        assert!(matches!(err, Some(StoreError::Corrupt { .. })), "{err:?}");
        assert_eq!(
            read_until_error(&store, shard, next).0,
            (next..=200).collect::<Vec<_>>()
        );
        assert_eq!(store.log.bounds(shard).expect("bounds").next_seq, 201);
        store.shutdown().await;
    }
}

async fn store_with_marker_problem(damage_marker: impl Fn(&Path)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (bad, good);
    {
        let store = Store::open(dir.path(), opts(1 << 20)).expect("open");
        bad = new_stream(&store, "bad");
        good = new_stream(&store, "good");
        append_seqs(&store, bad, 1, 5).await;
        append_seqs(&store, good, 1, 5).await;
        store.shutdown().await;
    }
    let marker = shard_dir(dir.path(), bad).join(MARKER_FILE);
    damage_marker(&marker);
    {
        let store = Store::open(dir.path(), opts(1 << 20)).expect("the store still opens");
        match store.log.read(bad, 1, ReadLimits::batches(10)) {
            Err(StoreError::LogFailed { reason, .. }) => {
                assert!(reason.contains(MARKER_FILE), "{reason}")
            }
            other => panic!("expected the shard to be unavailable, got {other:?}"),
        }
        let r = store
            .log
            .append(
                bad,
                NewBatch {
                    payload: payload(6),
                    record_count: 1,
                    flags: 0,
                },
            )
            .await;
        assert!(matches!(r, Err(StoreError::LogFailed { .. })), "{r:?}");
        assert_eq!(read_until_error(&store, good, 1).0.len(), 5);
        store.shutdown().await;
    }
    // The documented way out: remove the marker; the shard recovers as an old one and gets a
    // new marker.
    std::fs::remove_file(&marker).expect("rm marker");
    let store = Store::open(dir.path(), opts(1 << 20)).expect("reopen");
    assert_eq!(read_until_error(&store, bad, 1).0.len(), 5);
    append_seqs(&store, bad, 6, 1).await;
    assert!(marker.exists());
}

#[tokio::test]
async fn a_marker_with_no_valid_slot_makes_the_shard_unavailable() {
    store_with_marker_problem(|m| {
        write_at(m, &[0x5a; 64], 0);
        write_at(m, &[0x5a; 64], 512);
    })
    .await;
}

#[tokio::test]
async fn a_marker_of_the_wrong_length_makes_the_shard_unavailable() {
    store_with_marker_problem(|m| truncate(m, 0)).await;
    store_with_marker_problem(|m| truncate(m, 1000)).await;
}

#[tokio::test]
async fn a_marker_from_another_shard_makes_the_shard_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b);
    {
        let store = Store::open(dir.path(), opts(1 << 20)).expect("open");
        a = new_stream(&store, "a");
        b = new_stream(&store, "b");
        append_seqs(&store, b, 1, 3).await;
        store.shutdown().await;
    }
    std::fs::copy(
        shard_dir(dir.path(), b).join(MARKER_FILE),
        shard_dir(dir.path(), a).join(MARKER_FILE),
    )
    .expect("copy");
    let store = Store::open(dir.path(), opts(1 << 20)).expect("open");
    assert!(matches!(
        store.log.bounds(a),
        Err(StoreError::LogFailed { .. })
    ));
    assert_eq!(store.log.bounds(b).expect("bounds").next_seq, 4);
}

#[tokio::test]
async fn one_torn_marker_slot_is_no_loss() {
    for slot in [0u64, 512] {
        let dir = tempfile::tempdir().expect("tempdir");
        let shard;
        {
            let store = Store::open(dir.path(), opts(1 << 20)).expect("open");
            shard = new_stream(&store, "s");
            append_seqs(&store, shard, 1, 9).await;
        }
        // A power cut while one slot was being written: the other slot is older, which is
        // never more than what was acknowledged.
        write_at(
            &shard_dir(dir.path(), shard).join(MARKER_FILE),
            &[0xee; 16],
            slot + 20,
        );
        let store = Store::open(dir.path(), opts(1 << 20)).expect("reopen");
        let d = damage(&store, shard);
        assert!(d.lost.is_empty() && d.unreadable.is_empty(), "{d:?}");
        assert_eq!(d.acked_seq, 9);
        assert_eq!(read_until_error(&store, shard, 1).0.len(), 9);
        append_seqs(&store, shard, 10, 1).await;
    }
}

#[tokio::test]
async fn a_data_directory_without_markers_recovers_as_before_and_gets_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shard;
    {
        let store = Store::open(dir.path(), opts(1 << 20)).expect("open");
        shard = new_stream(&store, "s");
        append_seqs(&store, shard, 1, 30).await;
        store.shutdown().await;
    }
    // What a version before the marker left behind.
    let marker = shard_dir(dir.path(), shard).join(MARKER_FILE);
    std::fs::remove_file(&marker).expect("rm marker");
    let seg = active_segment(dir.path(), shard);
    let offsets = frame_offsets(&seg);
    truncate(&seg, offsets[20] + 3);
    {
        // Nothing records what was acknowledged: the cut is taken for a torn tail, as before.
        let store = Store::open(dir.path(), opts(1 << 20)).expect("reopen");
        assert!(damage(&store, shard).lost.is_empty());
        assert_eq!(read_until_error(&store, shard, 1).0.len(), 20);
        assert!(marker.exists(), "the marker is created");
        append_seqs(&store, shard, 21, 5).await;
        store.shutdown().await;
    }
    // From then on, losses are detected.
    let offsets = frame_offsets(&seg);
    truncate(&seg, offsets[22]);
    let store = Store::open(dir.path(), opts(1 << 20)).expect("reopen");
    assert_eq!(damage(&store, shard).lost, vec![(23, 25)]);
    check_loss(&store, shard, (23, 25), 25).await;
}

#[tokio::test]
async fn rolled_segments_and_many_restarts_report_no_false_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shard;
    {
        let store = Store::open(dir.path(), opts(2048)).expect("open");
        shard = new_stream(&store, "s");
    }
    let mut next = 1;
    for round in 0..4 {
        let store = Store::open(dir.path(), opts(2048)).expect("open");
        append_seqs(&store, shard, next, 40).await;
        next += 40;
        if round % 2 == 0 {
            // A roll right before a clean close leaves an empty active segment.
            store.log.roll(shard).expect("roll");
            store.shutdown().await;
        }
        // Odd rounds: a crash (dropped without shutdown).
        drop(store);
        let store = Store::open(dir.path(), opts(2048)).expect("reopen");
        let d = damage(&store, shard);
        assert!(d.lost.is_empty() && d.unreadable.is_empty(), "{d:?}");
        assert_eq!(read_until_error(&store, shard, 1).0.len() as u64, next - 1);
        assert_eq!(store.log.bounds(shard).expect("bounds").next_seq, next);
    }
}

/// After the acknowledged batches `1..next` of the first segment went missing: reported as lost
/// at the start that finds them (`reported`), unreadable at every start, and everything after
/// them served.
async fn check_front_loss(dir: &Path, shard: u64, next: u64, reported: bool) {
    let store = Store::open(dir, opts(4096)).expect("reopen");
    let d = damage(&store, shard);
    let lost = if reported {
        vec![(1, next - 1)]
    } else {
        vec![]
    };
    assert_eq!(d.lost, lost);
    assert_eq!(d.unreadable, vec![(1, next - 1)]);
    for seq in [1, next - 1] {
        assert_corrupt(&store, shard, seq);
    }
    assert!(matches!(
        store.log.read(shard, 0, ReadLimits::batches(10)),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(
        read_until_error(&store, shard, next).0,
        (next..=200).collect::<Vec<_>>()
    );
    let b = store.log.bounds(shard).expect("bounds");
    assert_eq!((b.start_seq, b.next_seq), (1, 201));
    store.shutdown().await;
}

#[tokio::test]
async fn a_deleted_first_segment_is_reported_as_lost() {
    let (dir, shard) = sealed_segments(200).await;
    let segs = files_with_ext(dir.path(), shard, "log");
    let next = base_of(&segs[1]);
    // Its index file stays behind.
    std::fs::remove_file(&segs[0]).expect("rm");
    check_front_loss(dir.path(), shard, next, true).await;
    check_front_loss(dir.path(), shard, next, false).await;
}

#[tokio::test]
async fn a_first_segment_deleted_with_its_index_is_reported_as_lost() {
    let (dir, shard) = sealed_segments(200).await;
    let segs = files_with_ext(dir.path(), shard, "log");
    let next = base_of(&segs[1]);
    std::fs::remove_file(&segs[0]).expect("rm");
    std::fs::remove_file(segs[0].with_extension("idx")).expect("rm idx");
    check_front_loss(dir.path(), shard, next, true).await;
}

#[tokio::test]
async fn a_deleted_first_segment_of_a_stream_with_retention_is_reported_by_its_index() {
    let (dir, shard) = sealed_segments_with_backlog(200, 3600).await;
    let segs = files_with_ext(dir.path(), shard, "log");
    let next = base_of(&segs[1]);
    std::fs::remove_file(&segs[0]).expect("rm");
    check_front_loss(dir.path(), shard, next, true).await;
}

#[tokio::test]
async fn segments_removed_by_retention_or_trimming_are_not_reported_as_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kept, expiring);
    {
        let store = Store::open(dir.path(), opts(4096)).expect("open");
        kept = new_stream(&store, "trimmed");
        expiring = new_stream_with_backlog(&store, "expiring", 1);
        append_seqs(&store, kept, 1, 200).await;
        append_seqs(&store, expiring, 1, 200).await;
        store.log.trim(kept, 120).expect("trim");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        store.log.enforce_retention().expect("retention");
        assert!(store.log.bounds(expiring).expect("bounds").start_seq > 100);
        store.shutdown().await;
    }
    assert!(base_of(&files_with_ext(dir.path(), kept, "log")[0]) > 1);
    assert!(base_of(&files_with_ext(dir.path(), expiring, "log")[0]) > 100);
    for _ in 0..2 {
        let store = Store::open(dir.path(), opts(4096)).expect("reopen");
        for shard in [kept, expiring] {
            assert_eq!(
                damage(&store, shard),
                ShardDamage {
                    acked_seq: 200,
                    ..Default::default()
                }
            );
        }
        assert_eq!(store.log.bounds(kept).expect("bounds").start_seq, 121);
        let from_start = store
            .log
            .read(kept, 1, ReadLimits::batches(1))
            .expect("read");
        assert_eq!(from_start[0].seq, 121);
        assert_eq!(
            read_until_error(&store, kept, 121).0,
            (121..=200).collect::<Vec<_>>()
        );
        store.shutdown().await;
    }
}

#[tokio::test]
async fn an_index_left_by_a_deleted_middle_segment_is_no_loss_once_retention_passed_it() {
    let (dir, shard) = sealed_segments_with_backlog(400, 1).await;
    let segs = files_with_ext(dir.path(), shard, "log");
    assert!(segs.len() > 4);
    let (gone, next) = (base_of(&segs[1]), base_of(&segs[2]));
    // Deleted by hand; its index file stays behind.
    std::fs::remove_file(&segs[1]).expect("rm");
    {
        let store = Store::open(dir.path(), opts(4096)).expect("reopen");
        assert_eq!(damage(&store, shard).lost, vec![(gone, next - 1)]);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        store.log.enforce_retention().expect("retention");
        assert!(store.log.bounds(shard).expect("bounds").start_seq > next);
        store.shutdown().await;
    }
    let store = Store::open(dir.path(), opts(4096)).expect("reopen");
    assert_eq!(damage(&store, shard).lost, vec![]);
}
