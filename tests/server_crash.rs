//! The durability promise, tested the hard way: concurrent clients append to the real server,
//! which is killed with SIGKILL mid-load again and again. After every restart each
//! acknowledged record must be there, at the record id it was acknowledged with, with the
//! same bytes; a batch that was sent but not acknowledged may be there or not, but must be
//! intact; nothing else may appear.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use streamcell_proto::api::{
    shard_offset, AppendRequest, ListShardsRequest, ReadShardStreamRequest, ShardOffset,
    SpecialOffset, Stream,
};
use streamcell_proto::records::{decode_batch, encode_batch, raw_record};

/// Payloads of one batch, as sent.
type Batch = Vec<Bytes>;

#[derive(Default, Clone)]
struct Ledger {
    /// (shard, batch id) -> payloads, for every acknowledged append.
    acked: BTreeMap<(u64, u64), Batch>,
    /// Batches sent whose fate is unknown (the server died before answering), by
    /// (round, task, batch number).
    in_doubt: HashMap<(u32, u64, u64), (u64, Batch)>,
}

fn rand(seed: &mut u64) -> u64 {
    // xorshift64*: deterministic per test run, good enough to vary sizes and timings.
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_appends_survive_repeated_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Small segments so that crashes also hit segment rolls and index writes.
    let mut server = common::Server::start(&data, &["--segment-bytes", "65536"]).await;
    let mut client = server.client().await;
    client
        .create_stream(Stream {
            stream_name: "crash".into(),
            replication_factor: 1,
            backlog_duration: 0,
            shard_count: 4,
            creation_time: None,
        })
        .await
        .expect("create stream");
    let shards: Vec<u64> = client
        .list_shards(ListShardsRequest {
            stream_name: "crash".into(),
        })
        .await
        .expect("shards")
        .into_inner()
        .shards
        .iter()
        .map(|s| s.shard_id)
        .collect();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    let rounds = 6;
    for round in 0..rounds {
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let mut c = server.client().await;
            let ledger = ledger.clone();
            let shards = shards.clone();
            let mut s = rand(&mut seed) | 1;
            tasks.push(tokio::spawn(async move {
                let mut acked = 0u64;
                for i in 0u64.. {
                    let shard = shards[(rand(&mut s) % shards.len() as u64) as usize];
                    let n = 1 + rand(&mut s) % 40;
                    let pad = (rand(&mut s) % 300) as usize;
                    let payloads: Batch = (0..n)
                        .map(|j| Bytes::from(format!("r{round}-t{t}-b{i}-{j}-{}", "p".repeat(pad))))
                        .collect();
                    let records: Vec<_> =
                        payloads.iter().map(|p| raw_record("", p.clone())).collect();
                    let req = AppendRequest {
                        stream_name: "crash".into(),
                        shard_id: shard,
                        records: Some(encode_batch(&records)),
                    };
                    ledger
                        .lock()
                        .expect("ledger")
                        .in_doubt
                        .insert((round, t, i), (shard, payloads.clone()));
                    match c.append(req).await {
                        Ok(resp) => {
                            let ids = resp.into_inner().record_ids;
                            assert_eq!(ids.len(), payloads.len());
                            assert!(ids
                                .iter()
                                .enumerate()
                                .all(|(k, id)| id.batch_index as usize == k
                                    && id.batch_id == ids[0].batch_id
                                    && id.shard_id == shard));
                            let mut l = ledger.lock().expect("ledger");
                            l.in_doubt.remove(&(round, t, i));
                            let prev = l.acked.insert((shard, ids[0].batch_id), payloads);
                            assert!(
                                prev.is_none(),
                                "batch id {} of shard {shard} acknowledged twice",
                                ids[0].batch_id
                            );
                            acked += 1;
                        }
                        Err(_) => return acked, // the server is gone
                    }
                }
                acked
            }));
        }
        tokio::time::sleep(Duration::from_millis(300 + rand(&mut seed) % 900)).await;
        server.kill9();
        let mut acked_this_round = 0;
        for t in tasks {
            acked_this_round += t.await.expect("append task");
        }
        assert!(
            acked_this_round > 0,
            "round {round}: no append was acknowledged"
        );
        server.restart().await;
        let snapshot = ledger.lock().expect("ledger").clone();
        verify(&server, &shards, &snapshot, round).await;
    }
    // After a clean stop nothing is in doubt and everything reads back once more.
    assert!(server.stop(), "clean shutdown: {}", server.log_text());
    server.restart().await;
    let snapshot = ledger.lock().expect("ledger").clone();
    verify(&server, &shards, &snapshot, rounds).await;
}

async fn verify(server: &common::Server, shards: &[u64], ledger: &Ledger, round: u32) {
    let mut client = server.client().await;
    let doubtful: HashMap<u64, HashSet<Batch>> =
        ledger
            .in_doubt
            .values()
            .fold(HashMap::new(), |mut m, (shard, b)| {
                m.entry(*shard).or_default().insert(b.clone());
                m
            });
    let mut found = 0usize;
    for &shard in shards {
        let earliest = ShardOffset {
            offset: Some(shard_offset::Offset::SpecialOffset(
                SpecialOffset::Earliest as i32,
            )),
        };
        let latest = ShardOffset {
            offset: Some(shard_offset::Offset::SpecialOffset(
                SpecialOffset::Latest as i32,
            )),
        };
        let mut stream = client
            .read_shard_stream(ReadShardStreamRequest {
                reader_id: format!("verify{round}"),
                shard_id: shard,
                from: Some(earliest),
                max_read_batches: 0,
                until: Some(latest),
            })
            .await
            .expect("read stream")
            .into_inner();
        let mut seen = BTreeMap::new();
        let mut last = 0u64;
        while let Some(msg) = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("read did not stall")
            .expect("read succeeded")
        {
            for r in msg.received_records {
                let batch = r.record.expect("batch");
                let id = r.record_ids[0].batch_id;
                assert!(
                    id > last,
                    "shard {shard}: batch ids not increasing ({last} then {id})"
                );
                last = id;
                let payloads: Batch = decode_batch(&batch)
                    .expect("stored batch decodes")
                    .into_iter()
                    .map(|rec| rec.payload)
                    .collect();
                assert_eq!(r.record_ids.len(), payloads.len());
                seen.insert(id, payloads);
            }
        }
        for ((s, id), want) in ledger.acked.range((shard, 0)..=(shard, u64::MAX)) {
            let got = seen.get(id);
            assert_eq!(
                got,
                Some(want),
                "round {round}: acknowledged batch {s}/{id} lost or changed"
            );
        }
        for (id, got) in &seen {
            if ledger.acked.contains_key(&(shard, *id)) {
                continue;
            }
            assert!(
                doubtful.get(&shard).is_some_and(|d| d.contains(got)),
                "round {round}: shard {shard} batch {id} was never sent: {:?}",
                got.first()
            );
        }
        found += seen.len();
    }
    let acked = ledger.acked.len();
    println!(
        "round {round}: {acked} batches acknowledged in all, {found} found, {} in doubt",
        ledger.in_doubt.len()
    );
    assert!(found >= acked);
}
