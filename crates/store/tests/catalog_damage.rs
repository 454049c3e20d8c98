//! A damaged or older catalog never costs shard data, nor hides it: start-up finishes only the
//! deletions the catalog recorded and removes only shard directories that provably hold nothing
//! (a creation interrupted by a crash); any other directory the catalog does not list means the
//! catalog is older than the logs, and the start is refused with every directory left as it
//! is. A listed shard whose directory is missing is never recreated empty. A catalog that redb
//! finds damaged is refused with an error instead of a panic.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use streamcell_store::{
    LogOptions, NewBatch, NewStream, ReadLimits, RedbCatalog, Store, StoreError, SubscriptionMeta,
    SyncPolicy,
};

fn opts() -> LogOptions {
    LogOptions {
        sync: SyncPolicy::Always,
        segment_bytes: 4096,
        committer_threads: 2,
        max_inflight_bytes: 8 << 20,
        retention_check_interval: Duration::from_secs(3600),
    }
}

/// A stream of one shard, with the id given (reserved) or allocated by the catalog.
fn new_stream(name: &str, shard_ids: Vec<u64>) -> NewStream {
    NewStream {
        name: name.into(),
        replication_factor: 1,
        backlog_secs: 0,
        created_ms: 0,
        key_ranges: vec![("0".into(), "0".into())],
        epoch: 1,
        shard_ids,
    }
}

fn payload(seq: u64) -> Bytes {
    Bytes::from(format!(
        "batch-{seq:06}-{}",
        "z".repeat((seq % 53) as usize)
    ))
}

/// Creates stream `name` with one shard and its log, as the server does; returns the shard.
fn one_shard_stream(store: &Store, name: &str) -> u64 {
    let (_, metas) = store
        .catalog
        .create_stream(new_stream(name, vec![]))
        .expect("create stream");
    store
        .log
        .create_shard(metas[0].id, 0)
        .expect("create shard");
    metas[0].id
}

async fn append_n(store: &Store, shard: u64, n: u64) {
    for seq in 1..=n {
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
        assert_eq!(a.seq, seq);
    }
}

fn shard_dir(dir: &Path, shard: u64) -> PathBuf {
    dir.join("shards").join(shard.to_string())
}

/// Every file under `dir` with its bytes, sorted by path.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("list") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).expect("read");
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

fn read_all(store: &Store, shard: u64) -> Vec<u64> {
    let got = store
        .log
        .read(shard, 1, ReadLimits::batches(10_000))
        .expect("read");
    for b in &got {
        assert_eq!(b.payload, payload(b.seq));
    }
    got.iter().map(|b| b.seq).collect()
}

/// The catalog's records of deleted shards whose directories may remain (the store closed).
fn deleted_shards(dir: &Path) -> Vec<u64> {
    RedbCatalog::open(&dir.join("catalog.redb"))
        .expect("open catalog")
        .deleted_shards()
        .expect("deleted shards")
}

/// The start's refusal message: the store must not open.
fn refusal(dir: &Path) -> String {
    match Store::open(dir, opts()) {
        Ok(_) => panic!("the store opened"),
        Err(StoreError::Catalog(msg)) => msg,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn a_catalog_older_than_the_logs_refuses_to_start_and_deletes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let older = dir.path().join("catalog.older");
    let (shard, deleted, interrupted);
    {
        let store = Store::open(dir.path(), opts()).expect("open");
        // Ids reserved, then the catalog file as of then is kept aside (a copy taken while it
        // is open, as a crash would leave it).
        let ids = store.catalog.reserve_shard_ids(3).expect("reserve");
        (shard, deleted, interrupted) = (ids[0], ids[1], ids[2]);
        std::fs::copy(dir.path().join("catalog.redb"), &older).expect("copy catalog");
        store.log.create_shard(shard, 0).expect("create shard");
        store
            .catalog
            .create_stream(new_stream("s", vec![shard]))
            .expect("create stream");
        append_n(&store, shard, 150).await;
        // A stream deleted, its removal cut short by a crash; a creation cut short by a crash.
        store.log.create_shard(deleted, 0).expect("create shard");
        store
            .catalog
            .create_stream(new_stream("d", vec![deleted]))
            .expect("create stream");
        append_n(&store, deleted, 5).await;
        store.catalog.delete_stream("d").expect("delete stream");
        store
            .log
            .create_shard(interrupted, 0)
            .expect("create shard");
        store.shutdown().await;
    }
    let removing = dir
        .path()
        .join("shards")
        .join(format!("{deleted}.removing"));
    std::fs::rename(shard_dir(dir.path(), deleted), &removing).expect("rename");
    let newer = dir.path().join("catalog.newer");
    std::fs::rename(dir.path().join("catalog.redb"), &newer).expect("keep catalog");
    std::fs::copy(&older, dir.path().join("catalog.redb")).expect("older catalog");
    let before = snapshot(&dir.path().join("shards"));
    assert!(before.len() > 6, "several segments");

    // The older catalog has no stream "s": the start is refused, naming the directory and the
    // remedy, and not a file under shards/ is touched (not even the removals it could finish).
    let msg = refusal(dir.path());
    let named = shard_dir(dir.path(), shard).display().to_string();
    assert!(msg.contains("older than the shard logs"), "{msg}");
    assert!(msg.contains(&format!("{named} (")), "{msg}");
    assert!(msg.contains("Restore catalog.redb from a backup"), "{msg}");
    assert!(msg.contains("move these directories out of"), "{msg}");
    assert!(msg.contains("nothing was deleted"), "{msg}");
    assert!(!msg.contains("older server version"), "{msg}");
    assert!(
        msg.contains(": 1 shard log(s)"),
        "only the unexplained one: {msg}"
    );
    assert_eq!(snapshot(&dir.path().join("shards")), before);

    // With the right catalog back, every batch is there and the leftovers are cleaned up.
    std::fs::rename(&newer, dir.path().join("catalog.redb")).expect("restore catalog");
    {
        let store = Store::open(dir.path(), opts()).expect("open with the restored catalog");
        assert_eq!(read_all(&store, shard), (1..=150).collect::<Vec<_>>());
        assert!(store.log.damage(shard).expect("damage").lost.is_empty());
        assert!(!removing.exists());
        assert!(!shard_dir(dir.path(), interrupted).exists());
        store.shutdown().await;
    }
    assert!(
        deleted_shards(dir.path()).is_empty(),
        "the record is dropped once the log is gone"
    );
}

#[tokio::test]
async fn moving_the_unlisted_logs_aside_lets_an_older_catalog_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let older = dir.path().join("catalog.older");
    let shard;
    {
        let store = Store::open(dir.path(), opts()).expect("open");
        shard = store.catalog.reserve_shard_ids(1).expect("reserve")[0];
        std::fs::copy(dir.path().join("catalog.redb"), &older).expect("copy catalog");
        store.log.create_shard(shard, 0).expect("create shard");
        store
            .catalog
            .create_stream(new_stream("s", vec![shard]))
            .expect("create stream");
        append_n(&store, shard, 20).await;
        store.shutdown().await;
    }
    std::fs::copy(&older, dir.path().join("catalog.redb")).expect("older catalog");
    refusal(dir.path());
    // The remedy the message gives, for streams deleted on purpose.
    let aside = dir.path().join(format!("shard-{shard}-aside"));
    std::fs::rename(shard_dir(dir.path(), shard), &aside).expect("move aside");
    let kept = snapshot(&aside);
    let store = Store::open(dir.path(), opts()).expect("open without the unlisted log");
    assert!(matches!(
        store.log.read(shard, 1, ReadLimits::batches(1)),
        Err(StoreError::ShardNotFound(_))
    ));
    // Its id is never handed out again.
    assert!(store.catalog.reserve_shard_ids(1).expect("reserve")[0] > shard);
    assert_eq!(snapshot(&aside), kept);
}

#[tokio::test]
async fn a_deletion_committed_just_before_a_crash_is_finished_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gone, kept);
    {
        let store = Store::open(dir.path(), opts()).expect("open");
        let mut ids = Vec::new();
        for name in ["gone", "kept"] {
            let shard = one_shard_stream(&store, name);
            append_n(&store, shard, 30).await;
            ids.push(shard);
        }
        (gone, kept) = (ids[0], ids[1]);
        // The catalog commits the deletion; the process dies before the log is renamed aside.
        store.catalog.delete_stream("gone").expect("delete stream");
        store.shutdown().await;
    }
    assert!(shard_dir(dir.path(), gone).exists());
    assert_eq!(deleted_shards(dir.path()), vec![gone]);
    {
        let store = Store::open(dir.path(), opts()).expect("reopen");
        assert!(!shard_dir(dir.path(), gone).exists());
        assert_eq!(read_all(&store, kept), (1..=30).collect::<Vec<_>>());
        store.shutdown().await;
    }
    assert!(deleted_shards(dir.path()).is_empty());
}

#[tokio::test]
async fn the_last_subscription_of_a_force_deleted_stream_records_the_deletion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shard;
    {
        let store = Store::open(dir.path(), opts()).expect("open");
        shard = one_shard_stream(&store, "s");
        append_n(&store, shard, 10).await;
        store
            .catalog
            .create_subscription(SubscriptionMeta {
                id: "sub".into(),
                stream: "s".into(),
                ack_timeout_secs: 60,
                max_unacked: 100,
                offset: 0,
                created_ms: 0,
                shards: vec![(shard, 1)],
            })
            .expect("subscription");
        // Forced deletion keeps the shard for the subscription; its deletion frees it.
        store.catalog.archive_stream("s").expect("archive");
        let released = store
            .catalog
            .delete_subscription("sub")
            .expect("delete subscription")
            .expect("archived stream released");
        assert_eq!(released.shards, vec![shard]);
        // The process dies before the log is removed.
        store.shutdown().await;
    }
    assert_eq!(deleted_shards(dir.path()), vec![shard]);
    let _store = Store::open(dir.path(), opts()).expect("reopen");
    assert!(!shard_dir(dir.path(), shard).exists());
}

#[tokio::test]
async fn a_listed_shard_whose_log_directory_is_missing_is_not_recreated_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shard;
    {
        let store = Store::open(dir.path(), opts()).expect("open");
        shard = one_shard_stream(&store, "s");
        append_n(&store, shard, 10).await;
        store.shutdown().await;
    }
    std::fs::remove_dir_all(shard_dir(dir.path(), shard)).expect("lose the log");
    {
        let store = Store::open(dir.path(), opts()).expect("open");
        // Reads and appends fail with the reason; no empty log takes its place.
        match store.log.read(shard, 1, ReadLimits::batches(1)) {
            Err(StoreError::LogFailed { reason, .. }) => {
                assert!(reason.contains("is missing"), "{reason}");
                assert!(reason.contains("not recreated empty"), "{reason}");
            }
            other => panic!("read of a shard without its log: {other:?}"),
        }
        let appended = store
            .log
            .append(
                shard,
                NewBatch {
                    payload: payload(1),
                    record_count: 1,
                    flags: 0,
                },
            )
            .await;
        assert!(matches!(appended, Err(StoreError::LogFailed { .. })));
        assert!(!shard_dir(dir.path(), shard).exists());
        // Deleting the stream is the way out.
        store.catalog.delete_stream("s").expect("delete stream");
        store.log.remove_shard(shard).await.expect("remove shard");
        store.shutdown().await;
    }
    let _store = Store::open(dir.path(), opts()).expect("reopen after the deletion");
}

#[tokio::test]
async fn a_leftover_of_a_server_that_recorded_no_deletions_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shard;
    {
        let store = Store::open(dir.path(), opts()).expect("open");
        shard = one_shard_stream(&store, "s");
        append_n(&store, shard, 10).await;
        store.shutdown().await;
    }
    // What an older server leaves: the stream deleted in the catalog, no record of deletions
    // kept, and a crash before the log was removed.
    {
        let db = redb::Database::create(dir.path().join("catalog.redb")).expect("redb");
        let tx = db.begin_write().expect("write");
        {
            let streams: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("streams");
            let shards: redb::TableDefinition<u64, &str> = redb::TableDefinition::new("shards");
            let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
            tx.open_table(streams)
                .expect("streams")
                .remove("s")
                .expect("remove");
            tx.open_table(shards)
                .expect("shards")
                .remove(shard)
                .expect("remove");
            tx.open_table(meta)
                .expect("meta")
                .remove("deletions_recorded_from")
                .expect("remove");
            let deleted: redb::TableDefinition<u64, ()> =
                redb::TableDefinition::new("deleted_shards");
            tx.delete_table(deleted).expect("drop deleted_shards");
        }
        tx.commit().expect("commit");
    }
    let before = snapshot(&dir.path().join("shards"));
    let msg = refusal(dir.path());
    assert!(msg.contains("older server version"), "{msg}");
    assert_eq!(snapshot(&dir.path().join("shards")), before);
}

#[tokio::test]
async fn an_interrupted_stream_creation_is_still_cleaned_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shard;
    {
        // A crash between creating the logs and committing the stream.
        let store = Store::open(dir.path(), opts()).expect("open");
        shard = store.catalog.reserve_shard_ids(1).expect("reserve")[0];
        store.log.create_shard(shard, 0).expect("create shard");
    }
    assert!(shard_dir(dir.path(), shard).exists());
    let _store = Store::open(dir.path(), opts()).expect("reopen");
    assert!(!shard_dir(dir.path(), shard).exists());
}

#[tokio::test]
async fn a_deletion_interrupted_by_a_crash_is_finished_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let aside;
    {
        let store = Store::open(dir.path(), opts()).expect("open");
        let shard = one_shard_stream(&store, "s");
        append_n(&store, shard, 5).await;
        store.catalog.delete_stream("s").expect("delete stream");
        store.shutdown().await;
        // The deletion renamed the log aside, then the process died.
        aside = dir.path().join("shards").join(format!("{shard}.removing"));
        std::fs::rename(shard_dir(dir.path(), shard), &aside).expect("rename");
    }
    let _store = Store::open(dir.path(), opts()).expect("reopen");
    assert!(!aside.exists());
}

#[tokio::test]
async fn a_damaged_catalog_is_refused_with_an_error_or_opened_with_every_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut shards = Vec::new();
    let catalog;
    {
        let store = Store::open(dir.path(), opts()).expect("open");
        for name in ["a", "b", "c"] {
            // As the server creates a stream: ids reserved, logs created, stream committed.
            let shard = store.catalog.reserve_shard_ids(1).expect("reserve")[0];
            store.log.create_shard(shard, 0).expect("create shard");
            store
                .catalog
                .create_stream(new_stream(name, vec![shard]))
                .expect("create stream");
            append_n(&store, shard, 20).await;
            shards.push(shard);
        }
        // The catalog as a crash leaves it: on such a file redb opens the commit before a
        // damaged latest one (on a cleanly closed file it refuses the damage).
        catalog = std::fs::read(dir.path().join("catalog.redb")).expect("read catalog");
        store.shutdown().await;
    }
    let logs = snapshot(&dir.path().join("shards"));
    let mut refused = 0;
    // Every used 512 bytes zeroed in turn.
    let zeroed: Vec<(String, std::ops::Range<usize>)> = catalog
        .chunks(512)
        .enumerate()
        .filter(|(_, bytes)| bytes.iter().any(|&b| b != 0))
        .map(|(i, bytes)| {
            (
                format!("bytes {}..+512", i * 512),
                i * 512..i * 512 + bytes.len(),
            )
        })
        .collect();
    for (what, range) in zeroed {
        let mut damaged = catalog.clone();
        damaged[range].fill(0);
        std::fs::write(dir.path().join("catalog.redb"), &damaged).expect("write catalog");
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Store::open(dir.path(), opts())
        }));
        match opened {
            Err(_) => panic!("zeroing catalog {what} made opening the store panic"),
            // Opened: then on a catalog that still has every stream, each served in full.
            Ok(Ok(store)) => {
                let names: Vec<String> = store
                    .catalog
                    .list_streams()
                    .expect("list")
                    .into_iter()
                    .map(|s| s.name)
                    .collect();
                assert_eq!(names, ["a", "b", "c"], "catalog {what} zeroed");
                for &shard in &shards {
                    assert_eq!(read_all(&store, shard), (1..=20).collect::<Vec<_>>());
                }
            }
            // Damaged, or rolled back to a commit older than the logs: refused.
            Ok(Err(StoreError::Catalog(msg))) => {
                assert!(
                    msg.contains("damaged") || msg.contains("older than the shard logs"),
                    "catalog {what} zeroed: {msg}"
                );
                refused += 1;
            }
            // A catalog rolled back to before the shards were allocated: refused too.
            Ok(Err(StoreError::Corrupt { detail, .. })) if detail.contains("catalog") => {
                refused += 1
            }
            Ok(Err(e)) => panic!("zeroing catalog {what}: unexpected error {e}"),
        }
        // Whatever the catalog says, no shard log lost a byte.
        assert_eq!(
            snapshot(&dir.path().join("shards")),
            logs,
            "catalog {what} zeroed"
        );
    }
    assert!(refused > 0, "some damage is detected");
    std::fs::write(dir.path().join("catalog.redb"), &catalog).expect("restore catalog");
    let store = Store::open(dir.path(), opts()).expect("open with the catalog restored");
    for shard in shards {
        assert_eq!(read_all(&store, shard), (1..=20).collect::<Vec<_>>());
    }
}
