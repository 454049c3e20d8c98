//! Subscription progress survives `kill -9` exactly: records acknowledged before the crash are
//! not delivered again, records not acknowledged are all delivered, even when the acks were
//! scattered inside batches. Also: ack-timeout redelivery sends only the unacknowledged
//! records of a batch, with their original record ids.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use streamcell_proto::api::{
    AppendRequest, ListShardsRequest, RecordId, SpecialOffset, Stream, StreamingFetchRequest,
    StreamingFetchResponse, Subscription,
};
use streamcell_proto::records::{decode_batch, encode_batch, raw_record};
use streamcell_proto::HStreamApiClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

type Rid = (u64, u64, u32);

struct Consumer {
    acks: mpsc::Sender<StreamingFetchRequest>,
    deliveries: tonic::Streaming<StreamingFetchResponse>,
    sub: String,
    name: String,
}

impl Consumer {
    async fn start(client: &mut HStreamApiClient<Channel>, sub: &str, name: &str) -> Consumer {
        let (tx, rx) = mpsc::channel(64);
        tx.send(StreamingFetchRequest {
            subscription_id: sub.into(),
            consumer_name: name.into(),
            ack_ids: vec![],
        })
        .await
        .expect("first message");
        let deliveries = client
            .streaming_fetch(ReceiverStream::new(rx))
            .await
            .expect("streaming fetch")
            .into_inner();
        Consumer {
            acks: tx,
            deliveries,
            sub: sub.into(),
            name: name.into(),
        }
    }

    /// Receives deliveries until `idle` passes without one or `max` records arrived.
    async fn receive(&mut self, idle: Duration, max: usize) -> Vec<(Rid, Bytes)> {
        let mut got = Vec::new();
        while got.len() < max {
            let Ok(Some(Ok(msg))) = tokio::time::timeout(idle, self.deliveries.message())
                .await
                .map(|r| r.transpose())
            else {
                break;
            };
            let rec = msg.received_records.expect("a batch");
            let batch = rec.record.expect("batched record");
            let records = decode_batch(&batch).expect("decodes");
            assert_eq!(
                records.len(),
                rec.record_ids.len(),
                "ids and records line up"
            );
            for (id, r) in rec.record_ids.iter().zip(records) {
                got.push(((id.shard_id, id.batch_id, id.batch_index), r.payload));
            }
        }
        got
    }

    async fn ack(&self, ids: &[Rid]) {
        for chunk in ids.chunks(500) {
            self.acks
                .send(StreamingFetchRequest {
                    subscription_id: self.sub.clone(),
                    consumer_name: self.name.clone(),
                    ack_ids: chunk
                        .iter()
                        .map(|&(s, b, i)| RecordId {
                            shard_id: s,
                            batch_id: b,
                            batch_index: i,
                        })
                        .collect(),
                })
                .await
                .expect("ack");
        }
    }
}

/// Creates a stream and an EARLIEST subscription `<stream>_sub`, appends, and returns every
/// record id with its payload.
async fn setup(
    client: &mut HStreamApiClient<Channel>,
    stream: &str,
    shards: u32,
    batches: u32,
    per_batch: u32,
    ack_timeout: i32,
) -> BTreeMap<Rid, Bytes> {
    client
        .create_stream(Stream {
            stream_name: stream.into(),
            replication_factor: 1,
            backlog_duration: 0,
            shard_count: shards,
            creation_time: None,
        })
        .await
        .expect("stream");
    let shard_ids: Vec<u64> = client
        .list_shards(ListShardsRequest {
            stream_name: stream.into(),
        })
        .await
        .expect("shards")
        .into_inner()
        .shards
        .iter()
        .map(|s| s.shard_id)
        .collect();
    client
        .create_subscription(Subscription {
            subscription_id: format!("{stream}_sub"),
            stream_name: stream.into(),
            ack_timeout_seconds: ack_timeout,
            max_unacked_records: 100_000,
            offset: SpecialOffset::Earliest as i32,
            creation_time: None,
        })
        .await
        .expect("subscription");
    let mut all = BTreeMap::new();
    for b in 0..batches {
        let shard = shard_ids[(b % shards) as usize];
        let payloads: Vec<Bytes> = (0..per_batch)
            .map(|i| Bytes::from(format!("b{b}-r{i}")))
            .collect();
        let records: Vec<_> = payloads.iter().map(|p| raw_record("", p.clone())).collect();
        let ids = client
            .append(AppendRequest {
                stream_name: stream.into(),
                shard_id: shard,
                records: Some(encode_batch(&records)),
            })
            .await
            .expect("append")
            .into_inner()
            .record_ids;
        for (id, p) in ids.iter().zip(payloads) {
            all.insert((id.shard_id, id.batch_id, id.batch_index), p);
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_are_not_delivered_again_after_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = common::Server::start(&dir.path().join("data"), &[]).await;
    let mut client = server.client().await;
    let all = setup(&mut client, "resume", 4, 120, 5, 600).await;

    let mut c = Consumer::start(&mut client, "resume_sub", "first").await;
    let got = c.receive(Duration::from_millis(800), usize::MAX).await;
    let delivered: BTreeSet<Rid> = got.iter().map(|(id, _)| *id).collect();
    let all_ids: BTreeSet<Rid> = all.keys().copied().collect();
    assert_eq!(delivered, all_ids, "everything delivered once");
    assert_eq!(got.len(), all.len(), "no duplicates before the crash");
    // Acknowledge a scattered 60%: whole batches, single records inside batches, gaps.
    let acked: Vec<Rid> = all_ids
        .iter()
        .copied()
        .filter(|&(s, b, i)| (s * 7 + b * 3 + u64::from(i)) % 5 < 3)
        .collect();
    c.ack(&acked).await;
    // Let the acks reach the server and its checkpoint (a commit takes milliseconds).
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill9();
    drop(c);
    server.restart().await;

    let mut client = server.client().await;
    let mut c = Consumer::start(&mut client, "resume_sub", "second").await;
    let got = c.receive(Duration::from_millis(800), usize::MAX).await;
    let again: Vec<Rid> = got.iter().map(|(id, _)| *id).collect();
    let again_set: BTreeSet<Rid> = again.iter().copied().collect();
    let acked_set: BTreeSet<Rid> = acked.iter().copied().collect();
    let expected: BTreeSet<Rid> = all_ids.difference(&acked_set).copied().collect();
    assert_eq!(again.len(), again_set.len(), "no record twice");
    assert!(
        again_set.is_disjoint(&acked_set),
        "an acknowledged record was delivered again"
    );
    assert_eq!(
        again_set, expected,
        "every unacknowledged record is delivered"
    );
    for (id, p) in &got {
        assert_eq!(all.get(id), Some(p), "payload of {id:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_timeout_redelivers_only_unacknowledged_records_with_their_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::Server::start(&dir.path().join("data"), &[]).await;
    let mut client = server.client().await;
    let all = setup(&mut client, "redeliver", 1, 1, 5, 1).await;
    let mut c = Consumer::start(&mut client, "redeliver_sub", "only").await;
    let first = c.receive(Duration::from_millis(300), 5).await;
    assert_eq!(first.len(), 5);
    let ids: Vec<Rid> = all.keys().copied().collect();
    c.ack(&[ids[0], ids[2]]).await;
    let start = Instant::now();
    let again = c.receive(Duration::from_millis(2500), 3).await;
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "not before the timeout"
    );
    let again_ids: Vec<Rid> = again.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        &again_ids[..3],
        &[ids[1], ids[3], ids[4]],
        "only the unacked, original ids"
    );
    for (id, p) in &again[..3] {
        assert_eq!(all.get(id), Some(p), "same payload for the same id");
    }
}
