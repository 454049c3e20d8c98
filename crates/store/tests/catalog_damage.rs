//! A damaged or older catalog never costs shard data: start-up removes only shard directories
//! that provably hold nothing (a creation interrupted by a crash), keeps the others in place,
//! never hands their ids out again, and refuses a catalog that redb finds damaged with an error
//! instead of a panic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use streamcell_store::{
    LogOptions, NewBatch, NewStream, ReadLimits, Store, StoreError, SyncPolicy,
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

#[tokio::test]
async fn a_catalog_older_than_the_logs_never_deletes_shard_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let older = dir.path().join("catalog.older");
    let shard;
    {
        let store = Store::open(dir.path(), opts()).expect("open");
        // Ids reserved and the log created: the catalog file as of then is kept aside (a copy
        // taken while it is open, as a crash would leave it).
        shard = store.catalog.reserve_shard_ids(1).expect("reserve")[0];
        store.log.create_shard(shard, 0).expect("create shard");
        std::fs::copy(dir.path().join("catalog.redb"), &older).expect("copy catalog");
        store
            .catalog
            .create_stream(new_stream("s", vec![shard]))
            .expect("create stream");
        append_n(&store, shard, 150).await;
        store.shutdown().await;
    }
    let newer = dir.path().join("catalog.newer");
    std::fs::rename(dir.path().join("catalog.redb"), &newer).expect("keep catalog");
    std::fs::copy(&older, dir.path().join("catalog.redb")).expect("older catalog");
    let before = snapshot(&shard_dir(dir.path(), shard));
    assert!(before.len() > 3, "several segments");
    {
        // The older catalog has no stream: the shard is not served, and its log is untouched.
        let store = Store::open(dir.path(), opts()).expect("open with the older catalog");
        assert!(matches!(
            store.log.read(shard, 1, ReadLimits::batches(1)),
            Err(StoreError::ShardNotFound(_))
        ));
        // Its id is never handed out again, and its directory is never overwritten.
        let fresh = store.catalog.reserve_shard_ids(1).expect("reserve")[0];
        assert!(fresh > shard);
        assert!(store.log.create_shard(shard, 0).is_err());
        store.shutdown().await;
    }
    assert_eq!(snapshot(&shard_dir(dir.path(), shard)), before);
    // With the right catalog back, every batch is there.
    std::fs::rename(&newer, dir.path().join("catalog.redb")).expect("restore catalog");
    let store = Store::open(dir.path(), opts()).expect("open with the restored catalog");
    assert_eq!(read_all(&store, shard), (1..=150).collect::<Vec<_>>());
    assert!(store.log.damage(shard).expect("damage").lost.is_empty());
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
        let (_, metas) = store
            .catalog
            .create_stream(new_stream("s", vec![]))
            .expect("create stream");
        let shard = metas[0].id;
        store.log.create_shard(shard, 0).expect("create shard");
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
async fn a_damaged_catalog_page_is_refused_with_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut shards = Vec::new();
    {
        let store = Store::open(dir.path(), opts()).expect("open");
        for name in ["a", "b", "c"] {
            let (_, metas) = store
                .catalog
                .create_stream(new_stream(name, vec![]))
                .expect("create stream");
            for m in &metas {
                store.log.create_shard(m.id, 0).expect("create shard");
                append_n(&store, m.id, 20).await;
                shards.push(m.id);
            }
        }
        store.shutdown().await;
    }
    let catalog = std::fs::read(dir.path().join("catalog.redb")).expect("read catalog");
    let logs = snapshot(&dir.path().join("shards"));
    let mut refused = 0;
    for (page, bytes) in catalog.chunks(4096).enumerate() {
        if bytes.iter().all(|&b| b == 0) {
            continue;
        }
        let mut damaged = catalog.clone();
        damaged[page * 4096..page * 4096 + bytes.len()].fill(0);
        std::fs::write(dir.path().join("catalog.redb"), &damaged).expect("write catalog");
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Store::open(dir.path(), opts())
        }));
        match opened {
            Err(_) => panic!("zeroing catalog page {page} made opening the store panic"),
            Ok(Ok(store)) => drop(store),
            Ok(Err(StoreError::Catalog(msg))) => {
                assert!(msg.contains("damaged"), "page {page}: {msg}");
                refused += 1;
            }
            // A catalog rolled back to before the shards were allocated: refused too.
            Ok(Err(StoreError::Corrupt { detail, .. })) if detail.contains("catalog") => {
                refused += 1
            }
            Ok(Err(e)) => panic!("zeroing catalog page {page}: unexpected error {e}"),
        }
        // Whatever the catalog says, no shard log lost a byte.
        assert_eq!(
            snapshot(&dir.path().join("shards")),
            logs,
            "catalog page {page} zeroed"
        );
    }
    assert!(refused > 0, "some damage is detected");
    std::fs::write(dir.path().join("catalog.redb"), &catalog).expect("restore catalog");
    let store = Store::open(dir.path(), opts()).expect("open with the catalog restored");
    for shard in shards {
        assert_eq!(read_all(&store, shard), (1..=20).collect::<Vec<_>>());
    }
}
