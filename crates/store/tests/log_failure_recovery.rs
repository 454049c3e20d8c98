//! A shard whose log failed on a transient resource shortage recovers by itself once the cause
//! is gone, without a restart: appends fail while the cause holds, succeed again after it is
//! removed (and the back-off passed), continue at the next sequence number, and every
//! acknowledged batch reads back exactly, also after a restart.
//!
//! The shortage is real: the test opens `/dev/null` until the process runs out of file
//! descriptors (EMFILE), so the committer cannot open the next segment when it rolls. That is
//! process-wide, which is why this file holds a single test (each file in `tests/` is its own
//! process; the tests of one file run as threads of it).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

use std::fs::File;
use std::time::Duration;

use bytes::Bytes;
use streamcell_store::{
    LogOptions, NewBatch, NewStream, ReadLimits, Store, StoreError, SyncPolicy,
};

/// Long enough for the committer's back-off before it recovers a failed shard in place.
const BACK_OFF: Duration = Duration::from_millis(1100);

fn opts() -> LogOptions {
    LogOptions {
        sync: SyncPolicy::Always,
        // Small segments: the log rolls (opens a new segment file) every few appends.
        segment_bytes: 256,
        committer_threads: 1,
        max_inflight_bytes: 8 << 20,
        retention_check_interval: Duration::from_secs(3600),
    }
}

fn payload(n: u64) -> Bytes {
    Bytes::from(format!("batch-{n:06}-{}", "z".repeat((n % 29) as usize)))
}

async fn append(store: &Store, shard: u64, n: u64) -> Result<u64, StoreError> {
    store
        .log
        .append(
            shard,
            NewBatch {
                payload: payload(n),
                record_count: 1,
                flags: 0,
            },
        )
        .await
        .map(|a| a.seq)
}

/// Opens `/dev/null` until the process has no file descriptor left; `None` if the limit is
/// too high to reach that way.
fn exhaust_fds() -> Option<Vec<File>> {
    let mut held = Vec::new();
    while held.len() < 1 << 20 {
        match File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) if e.raw_os_error() == Some(24) => return Some(held), // EMFILE
            Err(e) => panic!("opening /dev/null: {e}"),
        }
    }
    None
}

fn read_all(store: &Store, shard: u64) -> Vec<(u64, Bytes)> {
    store
        .log
        .read(shard, 1, ReadLimits::batches(100_000))
        .expect("read")
        .into_iter()
        .map(|b| (b.seq, b.payload))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_shard_recovers_in_place_once_file_descriptors_are_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), opts()).expect("open");
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
        .expect("create stream");
    let shard = metas[0].id;
    store.log.create_shard(shard, 0).expect("create shard");

    // `acked[i]` is the payload number of the batch acknowledged with sequence number i + 1.
    let mut acked: Vec<u64> = Vec::new();
    let mut n = 0u64;
    for _ in 0..20 {
        n += 1;
        let seq = append(&store, shard, n).await.expect("append");
        acked.push(n);
        assert_eq!(seq, acked.len() as u64);
    }

    let Some(fds) = exhaust_fds() else {
        eprintln!("skipped: the open-files limit is too high to exhaust");
        return;
    };
    // Appends go on until the log must open its next segment, then the shard fails.
    let mut failure = None;
    for _ in 0..100 {
        n += 1;
        match append(&store, shard, n).await {
            Ok(seq) => {
                acked.push(n);
                assert_eq!(seq, acked.len() as u64);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("an append failed while no file descriptor was left");
    assert!(matches!(failure, StoreError::LogFailed { .. }), "{failure}");
    // While the cause holds: refused at once, and again after the back-off (the recovery in
    // place that the back-off allows fails too, with its own reason).
    n += 1;
    let err = append(&store, shard, n)
        .await
        .expect_err("refused while failed");
    assert!(matches!(err, StoreError::LogFailed { .. }), "{err}");
    tokio::time::sleep(BACK_OFF).await;
    n += 1;
    let err = append(&store, shard, n)
        .await
        .expect_err("refused while the cause holds");
    assert!(
        matches!(&err, StoreError::LogFailed { reason, .. } if reason.contains("recovering in place")),
        "{err}"
    );
    // Reads of the acknowledged batches are served meanwhile.
    let expect: Vec<(u64, Bytes)> = acked
        .iter()
        .enumerate()
        .map(|(i, &p)| (i as u64 + 1, payload(p)))
        .collect();

    drop(fds);
    assert_eq!(read_all(&store, shard), expect);
    tokio::time::sleep(BACK_OFF).await;

    // The cause is gone: the shard recovers on the next append, without a restart, and
    // continues right after the last acknowledged batch (no sequence number reused, none
    // skipped: the failed appends were never acknowledged).
    for _ in 0..20 {
        n += 1;
        let seq = append(&store, shard, n)
            .await
            .expect("append after recovery");
        acked.push(n);
        assert_eq!(seq, acked.len() as u64, "sequence number after recovery");
    }
    let expect: Vec<(u64, Bytes)> = acked
        .iter()
        .enumerate()
        .map(|(i, &p)| (i as u64 + 1, payload(p)))
        .collect();
    assert_eq!(read_all(&store, shard), expect);
    assert!(store.log.damage(shard).expect("damage").lost.is_empty());

    // A restart finds exactly the same log.
    store.shutdown().await;
    drop(store);
    let store = Store::open(dir.path(), opts()).expect("reopen");
    assert_eq!(read_all(&store, shard), expect);
    assert!(store.log.damage(shard).expect("damage").lost.is_empty());
    n += 1;
    let seq = append(&store, shard, n)
        .await
        .expect("append after restart");
    assert_eq!(seq, acked.len() as u64 + 1);
    store.shutdown().await;
}
