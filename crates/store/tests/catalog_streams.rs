//! The catalog: streams, shard ids, readers, and their persistence across reopen.

use streamcell_store::{Catalog, NewStream, ReaderMeta, RedbCatalog, StoreError};

fn new(name: &str, n: usize) -> NewStream {
    NewStream {
        name: name.into(),
        replication_factor: 3,
        backlog_secs: 60,
        created_ms: 1234,
        key_ranges: (0..n).map(|i| (format!("{i}0"), format!("{i}9"))).collect(),
        epoch: n as u64,
    }
}

#[test]
fn streams_shards_and_readers_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("catalog.redb");
    {
        let c = RedbCatalog::open(&path).expect("open");
        let (a, shards_a) = c.create_stream(new("a", 2)).expect("a");
        let (b, _) = c.create_stream(new("b", 3)).expect("b");
        assert_eq!(a.shards, vec![1, 2]);
        assert_eq!(b.shards, vec![3, 4, 5]);
        assert_eq!(shards_a[1].start_key, "10");
        assert!(matches!(
            c.create_stream(new("a", 1)),
            Err(StoreError::StreamExists(_))
        ));
        c.create_reader(ReaderMeta {
            id: "r1".into(),
            stream: "a".into(),
            shard: 1,
            start_seq: 1,
            offset: "EARLIEST".into(),
            timeout_ms: 100,
            created_ms: 1,
        })
        .expect("reader");
        let dup = c.create_reader(ReaderMeta {
            id: "r1".into(),
            stream: "b".into(),
            shard: 3,
            start_seq: 1,
            offset: "EARLIEST".into(),
            timeout_ms: 100,
            created_ms: 1,
        });
        assert!(matches!(dup, Err(StoreError::ReaderExists(_))));
    }
    let c = RedbCatalog::open(&path).expect("reopen");
    let names: Vec<String> = c
        .list_streams()
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["a", "b"]);
    assert_eq!(
        c.get_shard(4).expect("get").map(|s| s.stream),
        Some("b".into())
    );
    assert_eq!(c.get_reader("r1").expect("get").map(|r| r.shard), Some(1));
    // Deleting a stream deletes its shards and readers; shard ids are never reused.
    c.delete_stream("a").expect("delete");
    assert!(c.get_shard(1).expect("get").is_none());
    assert!(c.get_reader("r1").expect("get").is_none());
    assert!(matches!(
        c.delete_stream("a"),
        Err(StoreError::StreamNotFound(_))
    ));
    let (a2, _) = c.create_stream(new("a", 1)).expect("recreate");
    assert_eq!(a2.shards, vec![6]);
    assert_eq!(c.all_shards().expect("all").len(), 4);
    assert!(matches!(
        c.delete_reader("nope"),
        Err(StoreError::ReaderNotFound(_))
    ));
}
