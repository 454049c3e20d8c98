//! The catalog: streams, shard ids, readers, and their persistence across reopen.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

use streamcell_store::{
    ConsumerCatalog, NewStream, ReaderMeta, RedbCatalog, StoreError, StreamCatalog,
};

fn new(name: &str, n: usize) -> NewStream {
    NewStream {
        name: name.into(),
        replication_factor: 3,
        backlog_secs: 60,
        created_ms: 1234,
        key_ranges: (0..n).map(|i| (format!("{i}0"), format!("{i}9"))).collect(),
        epoch: n as u64,
        shard_ids: vec![],
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

#[test]
fn subscriptions_checkpoints_and_archived_streams() {
    use streamcell_store::SubscriptionMeta;
    let dir = tempfile::tempdir().expect("tempdir");
    let c = RedbCatalog::open(&dir.path().join("catalog.redb")).expect("open");
    let (s, _) = c.create_stream(new("s", 2)).expect("stream");
    let sub = |id: &str, stream: &str| SubscriptionMeta {
        id: id.into(),
        stream: stream.into(),
        ack_timeout_secs: 60,
        max_unacked: 100,
        offset: 0,
        created_ms: 1,
        shards: s.shards.iter().map(|&id| (id, 1)).collect(),
    };
    assert!(matches!(
        c.create_subscription(sub("x", "nope")),
        Err(StoreError::StreamNotFound(_))
    ));
    c.create_subscription(sub("a", "s")).expect("a");
    c.create_subscription(sub("b", "s")).expect("b");
    assert!(matches!(
        c.create_subscription(sub("a", "s")),
        Err(StoreError::SubscriptionExists(_))
    ));
    c.save_checkpoints(&[
        ("a".into(), 1, vec![1, 2, 3]),
        ("a".into(), 2, vec![4]),
        ("gone".into(), 1, vec![9]),
    ])
    .expect("save");
    assert_eq!(
        c.load_checkpoints("a").expect("load"),
        vec![(1, vec![1, 2, 3]), (2, vec![4])]
    );
    assert!(c.load_checkpoints("gone").expect("load").is_empty());

    // A forced deletion archives the stream: its name is free, its shards stay for "a"/"b".
    let archived = c.archive_stream("s").expect("archive");
    assert!(c.get_stream("s").expect("get").is_none());
    assert_eq!(
        c.get_subscription("a").expect("get").map(|m| m.stream),
        Some(archived.clone())
    );
    assert_eq!(
        c.get_shard(1).expect("shard").map(|m| m.stream),
        Some(archived.clone())
    );
    c.create_stream(new("s", 1)).expect("name reusable");
    assert!(
        c.delete_subscription("a").expect("delete a").is_none(),
        "b still reads it"
    );
    assert!(c.load_checkpoints("a").expect("load").is_empty());
    let gone = c
        .delete_subscription("b")
        .expect("delete b")
        .expect("archived stream released");
    assert_eq!(gone.shards, vec![1, 2]);
    assert!(c.get_shard(1).expect("shard").is_none());
    assert!(matches!(
        c.delete_subscription("b"),
        Err(StoreError::SubscriptionNotFound(_))
    ));
}
