//! The clients: one producer and one consumer per system, each through that system's own
//! protocol and its usual Rust client: StreamCell through the HStreamDB gRPC API (the
//! project's tonic client), Redis through `redis` (RESP, pipelined), NATS through `async-nats`
//! (JetStream publish with asynchronous acks, a durable pull consumer).
//!
//! Every system stores the benchmark's records in one ordered log: a StreamCell stream with one
//! shard, one Redis stream key, one JetStream stream with one subject.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, stream::StorageType};
use bytes::Bytes;
use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use streamcell_bench::{
    bounded, connect, create_stream, list_shards, rpc_err, BenchError, Result, XorShift,
    RPC_TIMEOUT,
};
use streamcell_proto::api::{
    BatchedRecord, GetSubscriptionRequest, GetTailRecordIdRequest, RecordId, SpecialOffset,
    StreamingFetchRequest, Subscription,
};
use streamcell_proto::records::{decode_batch, encode_batch, raw_record};
use streamcell_proto::HStreamApiClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;

use crate::servers::{Durability, Server, System};

/// The stream (StreamCell), key (Redis), stream and subject (NATS) every case writes.
pub const STREAM: &str = "bench";
/// The subscription / consumer group / durable consumer every consume case reads with.
const GROUP: &str = "bench_group";
/// How long a consume case may go without progress before it is reported as stalled.
const STALL: Duration = Duration::from_secs(60);

fn redis_err(what: &str) -> impl FnOnce(redis::RedisError) -> BenchError + '_ {
    move |e| BenchError::Protocol(format!("redis {what}: {e}"))
}

fn nats_err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> BenchError + '_ {
    move |e| BenchError::Protocol(format!("nats {what}: {e}"))
}

/// One batch of records, in the form each client sends: a pre-encoded HStream batch for
/// StreamCell, the payloads for Redis and NATS. The payloads are the same bytes.
pub struct Batch {
    streamcell: BatchedRecord,
    payloads: Vec<Bytes>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.payloads.len()
    }
}

/// `count` batches of `batch_size` random records of `record_size` bytes.
pub fn make_batches(seed: u64, record_size: usize, batch_size: usize, count: usize) -> Vec<Batch> {
    let mut rng = XorShift::new(seed);
    (0..count)
        .map(|_| {
            let payloads: Vec<Bytes> = (0..batch_size)
                .map(|_| {
                    let mut p = vec![0u8; record_size];
                    rng.fill(&mut p);
                    Bytes::from(p)
                })
                .collect();
            let records: Vec<_> = payloads.iter().map(|p| raw_record("", p.clone())).collect();
            Batch {
                streamcell: encode_batch(&records),
                payloads,
            }
        })
        .collect()
}

/// Creates the benchmark stream on `server` (Redis creates its key on the first `XADD`).
pub async fn create_log(server: &Server) -> Result<()> {
    match server.system {
        System::StreamCell => {
            let mut client = HStreamApiClient::new(connect(&server.addr()).await?);
            create_stream(&mut client, STREAM, 1).await?;
        }
        System::Redis => {}
        System::Nats => {
            let js = jetstream::new(nats_connect(server).await?);
            let storage = match server.durability {
                Durability::Memory => StorageType::Memory,
                Durability::Fsync | Durability::Os => StorageType::File,
            };
            js.create_stream(jetstream::stream::Config {
                name: STREAM.into(),
                subjects: vec![STREAM.into()],
                storage,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(nats_err("creating the stream"))?;
        }
    }
    Ok(())
}

async fn nats_connect(server: &Server) -> Result<async_nats::Client> {
    async_nats::connect(server.addr())
        .await
        .map_err(nats_err("connecting"))
}

async fn redis_connect(server: &Server) -> Result<MultiplexedConnection> {
    redis::Client::open(format!("redis://{}/", server.addr()))
        .map_err(redis_err("client"))?
        .get_multiplexed_async_connection()
        .await
        .map_err(redis_err("connecting"))
}

/// A producer on one connection; clones share it (an HTTP/2 channel, a multiplexed RESP
/// connection, a NATS connection).
#[derive(Clone)]
pub enum Producer {
    StreamCell {
        client: HStreamApiClient<Channel>,
        shard: u64,
    },
    Redis(MultiplexedConnection),
    Nats(jetstream::Context),
}

/// What an acknowledged batch tells about where it landed (for the recovery check).
#[derive(Debug, Clone, Copy, Default)]
pub struct Acked {
    /// StreamCell: the batch id the server gave the batch.
    pub batch_id: u64,
}

impl Producer {
    /// A new connection to `server` (the benchmark stream must exist).
    pub async fn connect(server: &Server) -> Result<Producer> {
        match server.system {
            System::StreamCell => {
                let mut client = HStreamApiClient::new(connect(&server.addr()).await?);
                let shard = list_shards(&mut client, STREAM).await?[0];
                Ok(Producer::StreamCell { client, shard })
            }
            System::Redis => Ok(Producer::Redis(redis_connect(server).await?)),
            System::Nats => Ok(Producer::Nats(jetstream::new(nats_connect(server).await?))),
        }
    }

    /// Sends one batch and returns once every record of it is acknowledged: one `Append`
    /// call; one pipeline of `XADD`s; one JetStream publish per record, all sent before the
    /// first ack is awaited.
    pub async fn send(&mut self, batch: &Batch) -> Result<Acked> {
        match self {
            Producer::StreamCell { client, shard } => {
                let response = client
                    .append(streamcell_proto::api::AppendRequest {
                        stream_name: STREAM.into(),
                        shard_id: *shard,
                        records: Some(batch.streamcell.clone()),
                    })
                    .await
                    .map_err(rpc_err("Append"))?
                    .into_inner();
                if response.record_ids.len() != batch.len() {
                    return Err(BenchError::Protocol(format!(
                        "Append returned {} record ids for {} records",
                        response.record_ids.len(),
                        batch.len()
                    )));
                }
                Ok(Acked {
                    batch_id: response.record_ids.first().map_or(0, |r| r.batch_id),
                })
            }
            Producer::Redis(conn) => {
                let mut pipe = redis::pipe();
                for p in &batch.payloads {
                    pipe.cmd("XADD")
                        .arg(STREAM)
                        .arg("*")
                        .arg("d")
                        .arg(p.as_ref());
                }
                let ids: Vec<String> = pipe.query_async(conn).await.map_err(redis_err("XADD"))?;
                if ids.len() != batch.len() {
                    return Err(BenchError::Protocol(format!(
                        "a pipeline of {} XADDs returned {} ids",
                        batch.len(),
                        ids.len()
                    )));
                }
                Ok(Acked::default())
            }
            Producer::Nats(js) => {
                let mut acks = Vec::with_capacity(batch.len());
                for p in &batch.payloads {
                    acks.push(
                        js.publish(STREAM, p.clone())
                            .await
                            .map_err(nats_err("publish"))?,
                    );
                }
                for ack in acks {
                    ack.await.map_err(nats_err("publish ack"))?;
                }
                Ok(Acked::default())
            }
        }
    }
}

/// How many records the server holds in the benchmark log, and (StreamCell) the last batch
/// id. Used after `kill -9` to see what survived.
pub async fn stored(server: &Server) -> Result<(u64, u64)> {
    match server.system {
        System::StreamCell => {
            let mut client = HStreamApiClient::new(connect(&server.addr()).await?);
            let shard = list_shards(&mut client, STREAM).await?[0];
            let what = "GetTailRecordId";
            let tail = bounded(RPC_TIMEOUT, what, async {
                client
                    .get_tail_record_id(GetTailRecordIdRequest {
                        stream_name: STREAM.into(),
                        shard_id: shard,
                    })
                    .await
                    .map_err(rpc_err(what))
            })
            .await?
            .into_inner()
            .tail_record_id
            .unwrap_or_default();
            // Record counts are not kept per shard; the tail batch id is the check.
            Ok((0, tail.batch_id))
        }
        System::Redis => {
            let mut conn = redis_connect(server).await?;
            let n: u64 = redis::cmd("XLEN")
                .arg(STREAM)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("XLEN"))?;
            Ok((n, 0))
        }
        System::Nats => {
            let js = jetstream::new(nats_connect(server).await?);
            let mut stream = js
                .get_stream(STREAM)
                .await
                .map_err(nats_err("get stream"))?;
            let info = stream.info().await.map_err(nats_err("stream info"))?;
            Ok((info.state.messages, 0))
        }
    }
}

/// What consuming the whole log with acknowledgements took.
#[derive(Debug, Clone, Copy)]
pub struct Consumed {
    pub records: u64,
    pub payload_bytes: u64,
    /// From the first fetch request until every record was received and its ack sent.
    pub seconds: f64,
    /// From the first fetch request until the server showed nothing left unacknowledged.
    pub confirmed_seconds: f64,
}

/// Reads all `total` records from the start with one consumer, acknowledging each delivery
/// (StreamCell: `maxUnackedRecords` = `window`; Redis: `XREADGROUP COUNT batch`, its `XACK`
/// pipelined with the next read; NATS: a durable pull consumer, `AckExplicit`,
/// `max_ack_pending` = `window`, batches of `batch`, one ack per message as the protocol
/// requires). `last_batch` is StreamCell's last appended batch id (for the confirmation).
pub async fn consume(
    server: &Server,
    total: u64,
    batch: usize,
    window: usize,
    last_batch: u64,
) -> Result<Consumed> {
    match server.system {
        System::StreamCell => consume_streamcell(server, total, window, last_batch).await,
        System::Redis => consume_redis(server, total, batch).await,
        System::Nats => consume_nats(server, total, batch, window).await,
    }
}

async fn consume_streamcell(
    server: &Server,
    total: u64,
    window: usize,
    last_batch: u64,
) -> Result<Consumed> {
    let channel = connect(&server.addr()).await?;
    let mut admin = HStreamApiClient::new(channel.clone());
    let what = "CreateSubscription";
    bounded(RPC_TIMEOUT, what, async {
        admin
            .create_subscription(Subscription {
                subscription_id: GROUP.into(),
                stream_name: STREAM.into(),
                ack_timeout_seconds: 600,
                max_unacked_records: i32::try_from(window).unwrap_or(i32::MAX),
                offset: SpecialOffset::Earliest as i32,
                creation_time: None,
            })
            .await
            .map_err(rpc_err(what))
    })
    .await?;
    let mut client = HStreamApiClient::new(channel);
    let (tx, rx) = mpsc::unbounded_channel();
    let request = |ack_ids: Vec<RecordId>| StreamingFetchRequest {
        subscription_id: GROUP.into(),
        consumer_name: "c1".into(),
        ack_ids,
    };
    let closed = || BenchError::Protocol("the fetch request stream closed".into());
    let started = Instant::now();
    tx.send(request(Vec::new())).map_err(|_| closed())?;
    let mut inbound = bounded(RPC_TIMEOUT, "StreamingFetch", async {
        client
            .streaming_fetch(UnboundedReceiverStream::new(rx))
            .await
            .map_err(rpc_err("StreamingFetch"))
    })
    .await?
    .into_inner();
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < total {
        let message = tokio::time::timeout(STALL, inbound.message())
            .await
            .map_err(|_| {
                BenchError::Stalled(format!("no delivery for {STALL:?} after {records} records"))
            })?
            .map_err(rpc_err("StreamingFetch"))?
            .ok_or_else(|| BenchError::Protocol("the server ended the fetch stream".into()))?;
        let Some(received) = message.received_records else {
            continue;
        };
        tx.send(request(received.record_ids.clone()))
            .map_err(|_| closed())?;
        let batch = received
            .record
            .as_ref()
            .ok_or_else(|| BenchError::Protocol("a delivery without records".into()))?;
        let decoded = decode_batch(batch)
            .map_err(|e| BenchError::Protocol(format!("cannot decode a delivery: {e}")))?;
        records += decoded.len() as u64;
        bytes += decoded.iter().map(|r| r.payload.len() as u64).sum::<u64>();
    }
    let done = started.elapsed();
    let deadline = Instant::now() + STALL;
    loop {
        let what = "GetSubscription";
        let offsets = bounded(RPC_TIMEOUT, what, async {
            admin
                .get_subscription(GetSubscriptionRequest { id: GROUP.into() })
                .await
                .map_err(rpc_err(what))
        })
        .await?
        .into_inner()
        .offsets;
        if offsets.iter().any(|o| o.batch_id > last_batch) {
            break;
        }
        if Instant::now() > deadline {
            return Err(BenchError::Stalled(format!(
                "every record was delivered and acked, but the subscription's offsets {offsets:?} \
                 do not pass batch {last_batch}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let confirmed = started.elapsed();
    drop(tx);
    Ok(Consumed {
        records,
        payload_bytes: bytes,
        seconds: done.as_secs_f64(),
        confirmed_seconds: confirmed.as_secs_f64(),
    })
}

async fn consume_redis(server: &Server, total: u64, batch: usize) -> Result<Consumed> {
    let mut conn = redis_connect(server).await?;
    let _: String = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(STREAM)
        .arg(GROUP)
        .arg("0")
        .query_async(&mut conn)
        .await
        .map_err(redis_err("XGROUP CREATE"))?;
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut to_ack: Vec<String> = Vec::new();
    let mut idle_since = Instant::now();
    while records < total {
        let mut pipe = redis::pipe();
        if !to_ack.is_empty() {
            pipe.cmd("XACK")
                .arg(STREAM)
                .arg(GROUP)
                .arg(&to_ack)
                .ignore();
        }
        pipe.cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg("c1")
            .arg("COUNT")
            .arg(batch)
            .arg("STREAMS")
            .arg(STREAM)
            .arg(">");
        let (reply,): (Option<redis::streams::StreamReadReply>,) = pipe
            .query_async(&mut conn)
            .await
            .map_err(redis_err("XACK + XREADGROUP"))?;
        to_ack.clear();
        let mut got = 0u64;
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                if let Some(redis::Value::BulkString(p)) = entry.map.get("d") {
                    bytes += p.len() as u64;
                }
                got += 1;
                to_ack.push(entry.id);
            }
        }
        records += got;
        if got > 0 {
            idle_since = Instant::now();
        } else if idle_since.elapsed() > STALL {
            return Err(BenchError::Stalled(format!(
                "XREADGROUP returned nothing for {STALL:?} after {records} records"
            )));
        }
    }
    let _: u64 = redis::cmd("XACK")
        .arg(STREAM)
        .arg(GROUP)
        .arg(&to_ack)
        .query_async(&mut conn)
        .await
        .map_err(redis_err("XACK"))?;
    let done = started.elapsed();
    // XPENDING's summary form: [count, first id, last id, consumers].
    let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg(GROUP)
        .query_async(&mut conn)
        .await
        .map_err(redis_err("XPENDING"))?;
    if pending.0 != 0 {
        return Err(BenchError::Protocol(format!(
            "{} records still pending after every XACK was answered",
            pending.0
        )));
    }
    let confirmed = started.elapsed();
    Ok(Consumed {
        records,
        payload_bytes: bytes,
        seconds: done.as_secs_f64(),
        confirmed_seconds: confirmed.as_secs_f64(),
    })
}

async fn consume_nats(
    server: &Server,
    total: u64,
    batch: usize,
    window: usize,
) -> Result<Consumed> {
    let js = jetstream::new(nats_connect(server).await?);
    let stream = js
        .get_stream(STREAM)
        .await
        .map_err(nats_err("get stream"))?;
    let mut consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(GROUP.into()),
            ack_policy: AckPolicy::Explicit,
            max_ack_pending: i64::try_from(window).unwrap_or(i64::MAX),
            ..Default::default()
        })
        .await
        .map_err(nats_err("create consumer"))?;
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(batch)
        .messages()
        .await
        .map_err(nats_err("pull"))?;
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < total {
        let message = tokio::time::timeout(STALL, messages.next())
            .await
            .map_err(|_| {
                BenchError::Stalled(format!("no message for {STALL:?} after {records} records"))
            })?
            .ok_or_else(|| BenchError::Protocol("the pull stream ended".into()))?
            .map_err(nats_err("message"))?;
        bytes += message.payload.len() as u64;
        records += 1;
        message.ack().await.map_err(nats_err("ack"))?;
    }
    let done = started.elapsed();
    drop(messages);
    let deadline = Instant::now() + STALL;
    loop {
        let info = consumer.info().await.map_err(nats_err("consumer info"))?;
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(BenchError::Stalled(format!(
                "every message was received and acked, but the consumer shows {} ack pending, \
                 {} pending",
                info.num_ack_pending, info.num_pending
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let confirmed = started.elapsed();
    Ok(Consumed {
        records,
        payload_bytes: bytes,
        seconds: done.as_secs_f64(),
        confirmed_seconds: confirmed.as_secs_f64(),
    })
}
