//! Fixed scenarios on the fault-injecting file system (`tests/fault_fs`): first the fault model's
//! own behaviour, then each bug that `log_fault_model.rs` found in the shard log, as the shortest
//! sequence of steps that showed it (each of them fails without its fix).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

mod fault_fs;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fault_fs::{Effect, Fault, FaultFs, FsOp, Keep, Target};
use streamcell_store::vfs::{OpenMode, VfsFile};
use streamcell_store::{
    CatalogShards, LocalLog, LogEnv, LogOptions, NewBatch, ReadLimits, ShardLog, SyncPolicy,
};

const SHARD: u64 = 1;

// ---- the fault model -------------------------------------------------------------------

fn file(fs: &FaultFs, path: &str) -> Arc<dyn VfsFile> {
    fs.view()
        .open(Path::new(path), OpenMode::CreateNew)
        .expect("create")
}

#[test]
fn fault_fs_loses_what_was_not_synced() {
    let fs = FaultFs::new(1);
    fs.mkdir_durable(Path::new("/d"));
    let f = file(&fs, "/d/a");
    f.write_all_at(b"synced", 0).unwrap();
    f.sync_data().unwrap();
    fs.view().sync_dir(Path::new("/d")).unwrap();
    f.write_all_at(b" and not", 6).unwrap();
    let g = file(&fs, "/d/b");
    g.write_all_at(b"synced, name not", 0).unwrap();
    g.sync_data().unwrap();
    assert_eq!(
        fs.file_states(Path::new("/d/a")).unwrap(),
        (b"synced and not".to_vec(), b"synced".to_vec())
    );
    fs.crash(Keep::Nothing);
    assert_eq!(
        fs.view().read(Path::new("/d/a")).unwrap(),
        b"synced".to_vec()
    );
    assert!(!fs.view().try_exists(Path::new("/d/b")).unwrap());
    // The handles of the crashed process are dead.
    assert!(f.write_all_at(b"x", 0).is_err());
}

#[test]
fn fault_fs_a_kill_keeps_the_page_cache() {
    let fs = FaultFs::new(2);
    fs.mkdir_durable(Path::new("/d"));
    let f = file(&fs, "/d/a");
    f.write_all_at(b"cached", 0).unwrap();
    fs.kill();
    assert_eq!(
        fs.view().read(Path::new("/d/a")).unwrap(),
        b"cached".to_vec()
    );
    assert!(f.sync_data().is_err(), "the dead process's handle");
    // Still pending for the kernel: a later sync by the new process writes it.
    fs.view().sync_dir(Path::new("/d")).unwrap();
    let f = fs
        .view()
        .open(Path::new("/d/a"), OpenMode::ReadWrite)
        .unwrap();
    f.sync_data().unwrap();
    fs.crash(Keep::Nothing);
    assert_eq!(
        fs.view().read(Path::new("/d/a")).unwrap(),
        b"cached".to_vec()
    );
}

#[test]
fn fault_fs_a_failed_fsync_drops_what_it_did_not_write() {
    // Seeds vary which prefix the failed fsync writes; none ever reaches the disk later
    // without being written again.
    for seed in 0..20 {
        let fs = FaultFs::new(seed);
        fs.mkdir_durable(Path::new("/d"));
        let f = file(&fs, "/d/a");
        fs.view().sync_dir(Path::new("/d")).unwrap();
        f.write_all_at(b"first", 0).unwrap();
        f.write_all_at(b"second", 5).unwrap();
        fs.inject(Fault {
            op: FsOp::Sync,
            target: Target::Any,
            skip: 0,
            times: 1,
            effect: Effect::Io,
        });
        assert!(f.sync_data().is_err());
        f.sync_data().expect("the next fsync succeeds");
        let (cache, disk) = fs.file_states(Path::new("/d/a")).unwrap();
        assert_eq!(cache, b"firstsecond".to_vec());
        // The length is kept; the contents of the writes it did not make are zeros.
        assert!(
            [
                &b"\0\0\0\0\0\0\0\0\0\0\0"[..],
                b"first\0\0\0\0\0\0",
                b"firstsecond"
            ]
            .contains(&&disk[..]),
            "{disk:?}"
        );
        // Written again, it reaches the disk.
        f.write_all_at(&cache, 0).unwrap();
        f.sync_data().unwrap();
        assert_eq!(fs.file_states(Path::new("/d/a")).unwrap().1, cache);
    }
}

#[test]
fn fault_fs_short_writes_and_skips() {
    let fs = FaultFs::new(3);
    fs.mkdir_durable(Path::new("/d"));
    let f = file(&fs, "/d/x.log");
    fs.inject(Fault {
        op: FsOp::Write,
        target: Target::Segment,
        skip: 1,
        times: 1,
        effect: Effect::Short,
    });
    f.write_all_at(b"0123456789", 0).expect("skipped");
    let e = f.write_all_at(b"abcdefghij", 10).expect_err("short");
    assert_eq!(e.raw_os_error(), Some(28));
    let (cache, _) = fs.file_states(Path::new("/d/x.log")).unwrap();
    assert!(cache.len() >= 10 && cache.len() < 20, "{}", cache.len());
    f.write_all_at(b"ok", 20).expect("disarmed");
    assert_eq!(fs.fired().len(), 1);
}

// ---- the shard log on it ------------------------------------------------------------------

fn root() -> PathBuf {
    PathBuf::from("/data/shards")
}

fn opts(sync: SyncPolicy, segment_bytes: u64) -> LogOptions {
    LogOptions {
        sync,
        segment_bytes,
        committer_threads: 1,
        max_inflight_bytes: 8 << 20,
        retention_check_interval: Duration::from_secs(3600),
    }
}

/// A data directory that exists durably, as an operator's would.
fn disk(seed: u64) -> FaultFs {
    let fs = FaultFs::new(seed);
    fs.mkdir_durable(Path::new("/data"));
    fs
}

fn env(fs: &FaultFs) -> LogEnv {
    let mut env = LogEnv::default();
    env.fs = fs.view();
    env.recover_after = Duration::ZERO;
    env
}

fn catalog(listed: bool) -> CatalogShards {
    CatalogShards {
        listed: if listed { vec![(SHARD, 0)] } else { Vec::new() },
        next_shard_id: SHARD + 1,
        deleted: Vec::new(),
        deletions_recorded_from: 1,
    }
}

/// A log with shard 1 created.
fn create(fs: &FaultFs, opts: LogOptions) -> Arc<LocalLog> {
    let log = LocalLog::open_in(root(), opts, &catalog(false), env(fs)).expect("first start");
    log.create_shard(SHARD, 0).expect("create shard");
    log
}

/// Starts the log again on what the file system holds now.
fn start(fs: &FaultFs, opts: LogOptions) -> Arc<LocalLog> {
    LocalLog::open_in(root(), opts, &catalog(true), env(fs)).expect("start")
}

fn payload(n: u64) -> Bytes {
    Bytes::from(format!("batch {n:06} {}", "x".repeat((n % 50) as usize)))
}

async fn append(log: &LocalLog, n: u64) -> Result<u64, streamcell_store::StoreError> {
    log.append(
        SHARD,
        NewBatch {
            payload: payload(n),
            record_count: 1,
            flags: 0,
        },
    )
    .await
    .map(|a| a.seq)
}

fn read_all(log: &LocalLog) -> Vec<(u64, Bytes)> {
    log.read(SHARD, 1, ReadLimits::batches(10_000))
        .expect("read")
        .into_iter()
        .map(|b| (b.seq, b.payload))
        .collect()
}

// ---- bugs the model found ---------------------------------------------------------------

/// The first start creates `<data-dir>/shards`; the shard directories in it are synced into it,
/// but its own name must be synced into the data directory too, or a power loss takes every
/// shard with it.
#[tokio::test]
async fn a_power_loss_after_the_first_start_keeps_the_shards_directory() {
    let fs = disk(1);
    let log = create(&fs, opts(SyncPolicy::Always, 1 << 20));
    assert_eq!(append(&log, 1).await.expect("append"), 1);
    fs.crash(Keep::Nothing);
    drop(log);
    let log = start(&fs, opts(SyncPolicy::Always, 1 << 20));
    assert_eq!(read_all(&log), vec![(1, payload(1))]);
    log.shutdown().await;
}

/// A roll whose new segment cannot be made durable (its header's `fsync` fails) must not leave
/// that segment behind: the in-place recovery took it as the active segment (it looks whole in
/// the page cache), although neither its header nor its name in the directory were on disk, and
/// the batches acknowledged into it under `always` were gone after a power loss.
#[tokio::test]
async fn a_segment_whose_creation_failed_is_not_appended_to() {
    let fs = disk(2);
    // Every segment holds one batch: the second append rolls.
    let o = || opts(SyncPolicy::Always, 64);
    let log = create(&fs, o());
    assert_eq!(append(&log, 1).await.expect("append"), 1);
    // The roll syncs the old segment, then creates the new one: its header's fsync fails.
    fs.inject(Fault {
        op: FsOp::Sync,
        target: Target::Segment,
        skip: 1,
        times: 1,
        effect: Effect::Io,
    });
    append(&log, 2).await.expect_err("the roll fails");
    assert_eq!(fs.fired().len(), 1, "{:?}", fs.fired());
    // Recovered in place, the shard acknowledges the next batch durably.
    assert_eq!(append(&log, 3).await.expect("append after recovery"), 2);
    log.shutdown().await;
    drop(log);
    fs.crash(Keep::Nothing);
    let log = start(&fs, o());
    assert_eq!(read_all(&log), vec![(1, payload(1)), (2, payload(3))]);
    assert!(log.damage(SHARD).expect("damage").lost.is_empty());
    log.shutdown().await;
}

/// fsyncgate: after a failed `fdatasync`, Linux marks the pages it could not write clean: the
/// page cache still shows them, no later `fdatasync` writes them, and that later `fdatasync`
/// succeeds. The recovery in place synced again and went on, so a clean shutdown later claimed
/// durable a batch that was never on the disk (under `never` here; `interval` alike): it was gone
/// after a power loss. The recovery must write the unsynced bytes again before it syncs them.
#[tokio::test]
async fn after_a_failed_fsync_the_recovery_in_place_writes_the_data_again() {
    let fs = disk(3);
    fs.failed_syncs_write_nothing();
    // Every segment holds one batch: the second append rolls, and the roll syncs.
    let o = || opts(SyncPolicy::Never, 64);
    let log = create(&fs, o());
    assert_eq!(append(&log, 1).await.expect("append"), 1);
    fs.inject(Fault {
        op: FsOp::Sync,
        target: Target::Segment,
        skip: 0,
        times: 1,
        effect: Effect::Io,
    });
    append(&log, 2)
        .await
        .expect_err("the roll's fdatasync fails");
    assert_eq!(append(&log, 3).await.expect("append after recovery"), 2);
    log.shutdown().await;
    drop(log);
    fs.crash(Keep::Nothing);
    let log = start(&fs, o());
    assert_eq!(read_all(&log), vec![(1, payload(1)), (2, payload(3))]);
    assert!(log.damage(SHARD).expect("damage").lost.is_empty());
    log.shutdown().await;
}

/// A roll that fails after the old segment was flagged sealed (its index file could not be
/// synced) left the shard's only writable segment flagged sealed: retention then deleted it as
/// an expired sealed segment, `bounds().next_seq` fell back to 1, and the recovery reported the
/// expired batches as lost. The old segment may be flagged sealed only once the new one exists.
#[tokio::test]
async fn a_failed_roll_leaves_the_active_segment_to_its_shard() {
    let fs = disk(5);
    let clock = Arc::new(AtomicI64::new(1_700_000_000_000));
    let mut e = env(&fs);
    let c = clock.clone();
    e.clock = Arc::new(move || c.load(Ordering::SeqCst));
    let o = opts(SyncPolicy::Always, 1 << 20);
    let log = LocalLog::open_in(root(), o, &catalog(false), e).expect("start");
    log.create_shard(SHARD, 10)
        .expect("create with 10 s of retention");
    assert_eq!(append(&log, 1).await.expect("append"), 1);
    // The segment is old enough to be rolled (a quarter of the retention): the housekeeping
    // rolls it, and the index file's fsync fails.
    fs.inject(Fault {
        op: FsOp::Sync,
        target: Target::Tmp,
        skip: 0,
        times: 1,
        effect: Effect::Io,
    });
    clock.fetch_add(3_000, Ordering::SeqCst);
    log.quiesce().await;
    assert_eq!(fs.fired().len(), 1, "{:?}", fs.fired());
    // Batch 1 expires; the active segment stays.
    clock.fetch_add(20_000, Ordering::SeqCst);
    log.enforce_retention().expect("retention");
    log.quiesce().await;
    assert_eq!(log.bounds(SHARD).expect("bounds").next_seq, 2);
    assert_eq!(append(&log, 2).await.expect("append after recovery"), 2);
    assert!(log.damage(SHARD).expect("damage").lost.is_empty());
    log.shutdown().await;
}

/// `TRIM` is written durably; under `never` the batches it trims may not be. After a power loss
/// the log ended below the trim point, and numbering went on at its end, below the readable
/// range: the next appends were acknowledged at sequence numbers that were trimmed already,
/// and no read ever returned them. Numbering must continue at the trim point at least.
#[tokio::test]
async fn after_a_power_loss_numbering_continues_at_the_trim_point_at_least() {
    let fs = disk(6);
    let o = || opts(SyncPolicy::Never, 1 << 20);
    let log = create(&fs, o());
    for n in 1..=3 {
        assert_eq!(append(&log, n).await.expect("append"), n);
    }
    log.trim(SHARD, 2).expect("trim");
    fs.crash(Keep::Nothing);
    drop(log);
    let log = start(&fs, o());
    let b = log.bounds(SHARD).expect("bounds");
    assert_eq!(b.start_seq, 3);
    assert!(b.next_seq >= 3, "{b:?}");
    let seq = append(&log, 4).await.expect("append");
    assert!(seq >= 3, "appended at {seq}, below the trim point");
    assert_eq!(read_all(&log), vec![(seq, payload(4))]);
    assert!(log.damage(SHARD).expect("damage").lost.is_empty());
    // And a start after that agrees.
    log.shutdown().await;
    drop(log);
    fs.kill();
    let log = start(&fs, o());
    assert_eq!(read_all(&log), vec![(seq, payload(4))]);
    assert!(log.damage(SHARD).expect("damage").lost.is_empty());
    log.shutdown().await;
}

/// Retention deletes a segment's index file before the segment, so that an index file left
/// without its segment proves batches lost (storage-format.md §5, a missing front). It went
/// on to delete the segment when the index file could not be deleted, and the next start
/// reported the expired batches as lost.
#[tokio::test]
async fn retention_keeps_a_segment_whose_index_file_it_could_not_delete() {
    let fs = disk(7);
    let clock = Arc::new(AtomicI64::new(1_700_000_000_000));
    let env = || {
        let mut e = env(&fs);
        let c = clock.clone();
        e.clock = Arc::new(move || c.load(Ordering::SeqCst));
        e
    };
    // Every segment holds one batch.
    let o = || opts(SyncPolicy::Always, 64);
    let listed = CatalogShards {
        listed: vec![(SHARD, 10)],
        ..catalog(true)
    };
    let log = LocalLog::open_in(root(), o(), &catalog(false), env()).expect("start");
    log.create_shard(SHARD, 10)
        .expect("create with 10 s of retention");
    for n in 1..=3 {
        assert_eq!(append(&log, n).await.expect("append"), n);
    }
    fs.inject(Fault {
        op: FsOp::Remove,
        target: Target::Index,
        skip: 0,
        times: 1,
        effect: Effect::Io,
    });
    clock.fetch_add(20_000, Ordering::SeqCst);
    let _ = log.enforce_retention();
    log.quiesce().await;
    assert_eq!(fs.fired().len(), 1, "{:?}", fs.fired());
    log.shutdown().await;
    drop(log);
    fs.kill();
    let log = LocalLog::open_in(root(), o(), &listed, env()).expect("restart");
    let d = log.damage(SHARD).expect("damage");
    assert!(d.lost.is_empty(), "{d:?} {:?}", fs.list(&root().join("1")));
    log.shutdown().await;
}

/// fsyncgate across a restart: the shutdown's `fdatasync` fails and the kernel drops the pages
/// it could not write; the next process reads them from the page cache, appends after them,
/// and its clean shutdown syncs "everything", which cannot write them. After a power loss the
/// batches acknowledged before the failure were gone, and so was the batch the healthy shutdown
/// promised (behind the hole in its segment). The failed process leaves a note (`RESYNC`, in
/// the page cache only) so that the next start writes the active segment again first.
#[tokio::test]
async fn after_a_failed_fsync_the_next_start_writes_the_data_again() {
    let fs = disk(8);
    fs.failed_syncs_write_nothing();
    let o = || opts(SyncPolicy::Never, 1 << 20);
    let log = create(&fs, o());
    for n in 1..=2 {
        assert_eq!(append(&log, n).await.expect("append"), n);
    }
    fs.inject(Fault {
        op: FsOp::Sync,
        target: Target::Segment,
        skip: 0,
        times: 1,
        effect: Effect::Io,
    });
    log.shutdown().await;
    assert_eq!(fs.fired().len(), 1, "{:?}", fs.fired());
    drop(log);
    fs.kill();
    let log = start(&fs, o());
    assert_eq!(append(&log, 3).await.expect("append"), 3);
    log.shutdown().await;
    drop(log);
    fs.crash(Keep::Nothing);
    let log = start(&fs, o());
    assert_eq!(
        read_all(&log),
        vec![(1, payload(1)), (2, payload(2)), (3, payload(3))]
    );
    assert!(!fs.list(&root().join("1")).contains(&"RESYNC".to_string()));
    log.shutdown().await;
}

/// `bounds().tail_seq` is the last sequence number a reader may ask for: lost batches at the
/// end of the log count (reads of them fail with DATA_LOSS), as the tail that `watch_tail`
/// publishes does. It skipped a gap of lost batches in front of an empty active segment (here
/// a sealed segment deleted by hand; also after a torn-tail repair that a power loss undid),
/// and a read just past it failed.
#[tokio::test]
async fn the_tail_counts_lost_batches_in_front_of_an_empty_active_segment() {
    let fs = disk(9);
    let o = || opts(SyncPolicy::Always, 64);
    let log = create(&fs, o());
    for n in 1..=3 {
        assert_eq!(append(&log, n).await.expect("append"), n);
    }
    log.roll(SHARD).expect("roll");
    log.quiesce().await;
    log.shutdown().await;
    drop(log);
    let dir = root().join("1");
    for name in ["00000000000000000003.log", "00000000000000000003.idx"] {
        fs.view().remove_file(&dir.join(name)).expect("rm");
    }
    fs.kill();
    let log = start(&fs, o());
    assert_eq!(log.damage(SHARD).expect("damage").lost, vec![(3, 3)]);
    let b = log.bounds(SHARD).expect("bounds");
    assert_eq!((b.tail_seq, b.next_seq), (3, 4), "{b:?}");
    assert_eq!(*log.watch_tail(SHARD).expect("watch").borrow(), b.tail_seq);
    assert!(log
        .read(SHARD, b.tail_seq + 1, ReadLimits::batches(1))
        .expect("read past the tail")
        .is_empty());
    log.shutdown().await;
}

/// Trimming and retention delete segments from the front, so that what is left is a log
/// without gaps. When a deletion failed, the segment was already gone from the shard's state:
/// the next pass deleted the segments after it, and the next start took the gap between the
/// leftover and the rest for batches lost.
#[tokio::test]
async fn retention_deletes_from_the_front_after_a_failed_deletion() {
    let fs = disk(10);
    let clock = Arc::new(AtomicI64::new(1_700_000_000_000));
    let env = || {
        let mut e = env(&fs);
        let c = clock.clone();
        e.clock = Arc::new(move || c.load(Ordering::SeqCst));
        e
    };
    let o = || opts(SyncPolicy::Always, 64);
    let listed = CatalogShards {
        listed: vec![(SHARD, 10)],
        ..catalog(true)
    };
    let log = LocalLog::open_in(root(), o(), &catalog(false), env()).expect("start");
    log.create_shard(SHARD, 10)
        .expect("create with 10 s of retention");
    for n in 1..=3 {
        assert_eq!(append(&log, n).await.expect("append"), n);
    }
    fs.inject(Fault {
        op: FsOp::Remove,
        target: Target::Index,
        skip: 0,
        times: 1,
        effect: Effect::Io,
    });
    clock.fetch_add(20_000, Ordering::SeqCst);
    log.enforce_retention()
        .expect_err("the first index file stays");
    log.quiesce().await;
    log.enforce_retention().expect("retention");
    log.quiesce().await;
    log.shutdown().await;
    drop(log);
    fs.kill();
    let log = LocalLog::open_in(root(), o(), &listed, env()).expect("restart");
    let d = log.damage(SHARD).expect("damage");
    assert!(d.lost.is_empty(), "{d:?} {:?}", fs.list(&root().join("1")));
    log.shutdown().await;
}

/// Two faults in a roll: the new segment's header cannot be synced, and removing the segment
/// fails too. The recovery in place took the half-created segment as the active one (whole
/// in the page cache) and acknowledged batches into it under `always`, while its header was
/// not on the disk and its name not synced: they were gone after a power loss. What the
/// recovery takes as the active segment is written again and synced, with its directory.
#[tokio::test]
async fn a_half_created_segment_that_could_not_be_removed_is_made_durable() {
    let fs = disk(11);
    fs.failed_syncs_write_nothing();
    let o = || opts(SyncPolicy::Always, 64);
    let log = create(&fs, o());
    assert_eq!(append(&log, 1).await.expect("append"), 1);
    for fault in [
        // The roll syncs the old segment, then the new one's header: that fails.
        (FsOp::Sync, 1),
        (FsOp::Remove, 0),
    ] {
        fs.inject(Fault {
            op: fault.0,
            target: Target::Segment,
            skip: fault.1,
            times: 1,
            effect: Effect::Io,
        });
    }
    append(&log, 2).await.expect_err("the roll fails");
    assert_eq!(fs.fired().len(), 2, "{:?}", fs.fired());
    assert_eq!(append(&log, 3).await.expect("append after recovery"), 2);
    log.shutdown().await;
    drop(log);
    fs.crash(Keep::Nothing);
    let log = start(&fs, o());
    assert_eq!(read_all(&log), vec![(1, payload(1)), (2, payload(3))]);
    log.shutdown().await;
}

/// `ACKED` after a failed sync at start: a power loss tore one slot; the next start wrote a
/// new slot over it, but that write's `fdatasync` failed (the kernel dropped it) and the
/// start failed. The start after it read the slot from the page cache and went on, while on
/// the disk it was still torn, so one more torn write (of the other slot, at the next power
/// loss) left no valid slot and the shard unserved. A start that fails leaves `RESYNC` too, and
/// a start that finds it writes `ACKED` again.
#[tokio::test]
async fn after_a_failed_start_the_next_start_makes_acked_durable_again() {
    let fs = disk(12);
    fs.failed_syncs_write_nothing();
    let o = || opts(SyncPolicy::Always, 1 << 20);
    let log = create(&fs, o());
    for n in 1..=2 {
        assert_eq!(append(&log, n).await.expect("append"), n);
    }
    log.shutdown().await;
    drop(log);
    // Slots: generation 2 (batch 1) at 0, generation 3 (batch 2) at 512. A torn write of the
    // newest, on the disk as in the cache.
    let marker = root().join("1").join("ACKED");
    let f = fs.view().open(&marker, OpenMode::ReadWrite).expect("open");
    f.write_all_at(&[0xff; 16], 512 + 20).expect("tear");
    f.sync_data().expect("sync");
    drop(f);
    // The start records batch 2 again, in the torn slot: its fdatasync fails.
    fs.inject(Fault {
        op: FsOp::Sync,
        target: Target::Marker,
        skip: 0,
        times: 1,
        effect: Effect::Io,
    });
    fs.kill();
    let log = start(&fs, o());
    assert!(log.bounds(SHARD).is_err(), "the start fails");
    drop(log);
    fs.kill();
    let log = start(&fs, o());
    assert_eq!(read_all(&log), vec![(1, payload(1)), (2, payload(2))]);
    let (cache, disk) = fs.file_states(&marker).expect("ACKED");
    assert!(
        cache == disk,
        "ACKED on the disk is not what the page cache shows"
    );
    log.shutdown().await;
}

/// A read that fails during recovery (EIO) is not a missing or damaged index file: the
/// recovery took it for one, re-scanned the segment and rewrote its index file, and the
/// batches that index file recorded as lost (found by an earlier start) were no longer
/// recorded: a trim then deleted the segment, and reads of them returned nothing instead of
/// failing with DATA_LOSS.
#[tokio::test]
async fn a_read_error_at_start_does_not_rewrite_an_index_file() {
    let fs = disk(13);
    // Every segment holds one batch.
    let o = || opts(SyncPolicy::Always, 64);
    let log = create(&fs, o());
    for n in 1..=2 {
        assert_eq!(append(&log, n).await.expect("append"), n);
    }
    log.shutdown().await;
    drop(log);
    // Batch 2 is lost: its segment cut to the header by hand. The next start records the loss
    // in that segment's index file.
    let seg2 = root().join("1").join("00000000000000000002.log");
    let f = fs.view().open(&seg2, OpenMode::ReadWrite).expect("open");
    f.set_len(32).expect("cut");
    f.sync_data().expect("sync");
    drop(f);
    fs.kill();
    let log = start(&fs, o());
    assert_eq!(log.damage(SHARD).expect("damage").lost, vec![(2, 2)]);
    log.shutdown().await;
    drop(log);
    // Reading segment 2's header fails once (segment 1's goes through).
    fs.inject(Fault {
        op: FsOp::Read,
        target: Target::Segment,
        skip: 1,
        times: 1,
        effect: Effect::Io,
    });
    fs.kill();
    drop(start(&fs, o()));
    assert_eq!(fs.fired().len(), 1, "{:?}", fs.fired());
    fs.kill();
    let log = start(&fs, o());
    log.trim(SHARD, 1).expect("trim");
    assert!(
        matches!(
            log.read(SHARD, 2, ReadLimits::batches(10)),
            Err(streamcell_store::StoreError::Corrupt { .. })
        ),
        "{:?}",
        log.read(SHARD, 2, ReadLimits::batches(10))
    );
    log.shutdown().await;
}

/// A process killed in a roll, after it created the next segment and before it synced the
/// directory: the next start took that segment (whole in the page cache) as the active one and
/// acknowledged batches into it, under `always` too; `fdatasync` of the file does not make its
/// name durable, and after a power loss the segment and the batches were gone. A start that
/// finds the last segment empty (nothing was appended to it yet, so its name may never have
/// been synced) syncs it and the directory.
#[tokio::test]
async fn a_segment_left_by_a_roll_that_was_killed_is_made_durable() {
    let fs = disk(14);
    let o = || opts(SyncPolicy::Always, 1 << 20);
    let log = create(&fs, o());
    assert_eq!(append(&log, 1).await.expect("append"), 1);
    log.shutdown().await;
    drop(log);
    // The roll sealed segment 1 (its index file written and synced) and got as far as the new
    // segment's header: written and synced, its name not.
    let dir = root().join("1");
    let ts = {
        let log = start(&fs, o());
        let ts = log.read(SHARD, 1, ReadLimits::batches(1)).expect("read")[0].timestamp_ms;
        log.shutdown().await;
        ts
    };
    fs.kill();
    let len = fs
        .view()
        .metadata(&dir.join("00000000000000000001.log"))
        .expect("stat")
        .len;
    let index = streamcell_store::segment::SealedIndex {
        entries: vec![streamcell_store::segment::IndexEntry {
            seq: 1,
            timestamp_ms: ts,
            offset: 32,
        }],
        last_seq: 1,
        first_ts: ts,
        last_ts: ts,
        data_len: len,
        damaged: Vec::new(),
    };
    index.write(&*fs.view(), &dir, 1).expect("index");
    let seg2 = dir.join("00000000000000000002.log");
    let f = fs.view().open(&seg2, OpenMode::CreateNew).expect("create");
    f.write_all_at(
        &streamcell_store::segment::encode_segment_header(SHARD, 2),
        0,
    )
    .expect("header");
    f.sync_all().expect("sync");
    drop(f);
    fs.kill();
    let log = start(&fs, o());
    assert_eq!(append(&log, 2).await.expect("append"), 2);
    log.shutdown().await;
    drop(log);
    fs.crash(Keep::Nothing);
    let log = start(&fs, o());
    assert_eq!(read_all(&log), vec![(1, payload(1)), (2, payload(2))]);
    log.shutdown().await;
}
