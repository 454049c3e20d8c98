//! The catalog after an I/O error (a full disk): redb refuses all work on a `Database` that saw
//! one, so the catalog reopens it. These tests run the catalog on a file backend that can be
//! made to fail writes and syncs with ENOSPC, and check that once it stops failing every
//! operation works again on the same `RedbCatalog`, with what was committed before intact and
//! nothing of the failed change left behind.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use streamcell_store::{
    ConsumerCatalog, NewStream, ObjectCatalog, ReaderMeta, RedbCatalog, StoreError, StreamCatalog,
    SubscriptionMeta,
};

/// A real file backend whose writes, length changes and syncs fail with ENOSPC while `full`.
#[derive(Debug)]
struct FullDiskBackend {
    inner: FileBackend,
    full: Arc<AtomicBool>,
    /// Only `sync_data` fails (the writes reach the page cache, the flush does not).
    sync_only: bool,
}

impl FullDiskBackend {
    fn check(&self) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            Err(io::Error::from_raw_os_error(28))
        } else {
            Ok(())
        }
    }
}

impl StorageBackend for FullDiskBackend {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        if !self.sync_only {
            self.check()?;
        }
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if !self.sync_only {
            self.check()?;
        }
        self.inner.write(offset, data)
    }
    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }
    fn try_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(s, e)
    }
    fn try_lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(s, e)
    }
    fn lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(s, e)
    }
    fn lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(s, e)
    }
    fn unlock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(s, e)
    }
    fn query_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(s, e)
    }
}

/// A catalog on `path` whose disk is full while the returned flag is set; the counter counts
/// how many times the catalog opened the file.
fn catalog_on_failing_disk(
    path: &Path,
    sync_only: bool,
) -> (RedbCatalog, Arc<AtomicBool>, Arc<AtomicUsize>) {
    let full = Arc::new(AtomicBool::new(false));
    let opens = Arc::new(AtomicUsize::new(0));
    let (f, o, p) = (full.clone(), opens.clone(), path.to_path_buf());
    let catalog = RedbCatalog::open_with_backend_for_tests(path, move || {
        o.fetch_add(1, Ordering::SeqCst);
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)?;
        let inner = FileBackend::new(file).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(FullDiskBackend {
            inner,
            full: f.clone(),
            sync_only,
        })
    })
    .expect("the catalog opens");
    (catalog, full, opens)
}

fn stream(name: &str, shards: usize) -> NewStream {
    NewStream {
        name: name.into(),
        replication_factor: 1,
        backlog_secs: 0,
        created_ms: 1,
        key_ranges: (0..shards)
            .map(|i| (format!("{i}0"), format!("{i}9")))
            .collect(),
        epoch: 0,
        shard_ids: vec![],
    }
}

fn subscription(id: &str, stream: &str) -> SubscriptionMeta {
    SubscriptionMeta {
        id: id.into(),
        stream: stream.into(),
        ack_timeout_secs: 60,
        max_unacked: 100,
        offset: 0,
        created_ms: 1,
        shards: vec![],
    }
}

fn reader(id: &str, stream: &str, shard: u64) -> ReaderMeta {
    ReaderMeta {
        id: id.into(),
        stream: stream.into(),
        shard,
        start_seq: 1,
        offset: "EARLIEST".into(),
        timeout_ms: 100,
        created_ms: 1,
    }
}

/// Fills the disk, fails a stream creation on it, frees the disk, and checks that the same
/// catalog serves every kind of operation again with the earlier data intact.
fn recovers_after_failed_commit(sync_only: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("catalog.redb");
    let (catalog, full, _) = catalog_on_failing_disk(&path, sync_only);
    let (kept, _) = catalog.create_stream(stream("kept", 2)).expect("kept");
    catalog
        .create_subscription(subscription("s1", "kept"))
        .expect("s1");
    catalog
        .put_object("view", "v1", "{}", false)
        .expect("object");

    full.store(true, Ordering::SeqCst);
    let failed = catalog.create_stream(stream("lost", 3));
    assert!(matches!(failed, Err(StoreError::Catalog(_))), "{failed:?}");
    // Still full: later writes keep failing, with an error rather than a panic or a hang.
    assert!(catalog.create_stream(stream("lost2", 1)).is_err());
    assert!(catalog
        .create_subscription(subscription("s-lost", "kept"))
        .is_err());

    full.store(false, Ordering::SeqCst);
    // Reads, stream creation, subscriptions, readers and objects work again, on the same catalog.
    assert_eq!(
        catalog.get_stream("kept").expect("read"),
        Some(kept.clone())
    );
    let (after, _) = catalog.create_stream(stream("after", 1)).expect("after");
    assert!(
        after.shards.iter().all(|id| !kept.shards.contains(id)),
        "a shard id was handed out twice: {after:?} {kept:?}"
    );
    catalog
        .create_subscription(subscription("s2", "after"))
        .expect("s2");
    catalog
        .create_reader(reader("r1", "after", after.shards[0]))
        .expect("reader");
    catalog
        .put_object("view", "v2", "{}", false)
        .expect("object after");

    // The failed creation is all or nothing, now and after a real reopen. When the writes
    // failed it is absent. When only the sync failed, redb had already written the whole commit
    // (pages and header) to the page cache, so the reopened file may hold it: a commit whose
    // sync fails has an unknown outcome, with or without a restart.
    let check = |c: &RedbCatalog| {
        let streams = c.list_streams().expect("list");
        let names: Vec<&str> = streams.iter().map(|s| s.name.as_str()).collect();
        if sync_only {
            let failed = |n: &&str| *n == "lost" || *n == "lost2";
            let committed: Vec<&str> = names.iter().copied().filter(|n| !failed(n)).collect();
            assert_eq!(committed, vec!["after", "kept"]);
        } else {
            assert_eq!(names, vec!["after", "kept"]);
        }
        // Every listed stream has all its shards, no shard id serves two streams, and no
        // shard is left without its stream.
        let mut listed: Vec<u64> = streams.iter().flat_map(|s| s.shards.clone()).collect();
        listed.sort_unstable();
        let mut stored: Vec<u64> = c
            .all_shards()
            .expect("shards")
            .into_iter()
            .map(|(m, _)| m.id)
            .collect();
        stored.sort_unstable();
        assert_eq!(listed, stored);
        let count = listed.len();
        listed.dedup();
        assert_eq!(listed.len(), count, "a shard id is used twice");
        let subs: Vec<String> = c
            .list_subscriptions()
            .expect("subs")
            .into_iter()
            .map(|s| s.id)
            .filter(|id| !(sync_only && id == "s-lost"))
            .collect();
        assert_eq!(subs, vec!["s1", "s2"]);
        assert_eq!(
            c.get_object("view", "v1").expect("v1").as_deref(),
            Some("{}")
        );
        assert!(c.get_reader("r1").expect("r1").is_some());
    };
    check(&catalog);
    drop(catalog);
    check(&RedbCatalog::open(&path).expect("reopen from disk"));
}

#[test]
fn catalog_recovers_after_writes_fail_with_a_full_disk() {
    recovers_after_failed_commit(false);
}

#[test]
fn catalog_recovers_after_a_sync_fails_with_a_full_disk() {
    recovers_after_failed_commit(true);
}

#[test]
fn concurrent_operations_after_a_failure_reopen_the_catalog_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("catalog.redb");
    let (catalog, full, opens) = catalog_on_failing_disk(&path, false);
    catalog.create_stream(stream("kept", 1)).expect("kept");
    full.store(true, Ordering::SeqCst);
    assert!(catalog.create_stream(stream("lost", 1)).is_err());
    full.store(false, Ordering::SeqCst);

    let before = opens.load(Ordering::SeqCst);
    let catalog = Arc::new(catalog);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let c = catalog.clone();
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    c.get_stream("kept").map(|s| s.is_some())
                } else {
                    c.create_stream(stream(&format!("t{i}"), 1)).map(|_| true)
                }
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().expect("thread").expect("operation after recovery"));
    }
    assert_eq!(opens.load(Ordering::SeqCst), before + 1);
    assert_eq!(catalog.list_streams().expect("list").len(), 5);
}
