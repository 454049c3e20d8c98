//! Stored batches as HStreamDB's data model shows them to readers and consumers: a
//! `ReceivedRecord` carries a batch exactly as it was appended plus the ids of its records,
//! and responses are filled up to an encoded-size budget.

use prost::Message;
use streamcell_proto::api;
use streamcell_store::StoredBatch;

/// A protobuf timestamp from milliseconds since the Unix epoch.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A stored batch as readers get it: record ids plus the batch as it was appended.
pub fn received_record(shard: u64, b: &StoredBatch) -> api::ReceivedRecord {
    api::ReceivedRecord {
        record_ids: (0..b.record_count)
            .map(|i| api::RecordId {
                shard_id: shard,
                batch_id: b.seq,
                batch_index: i,
            })
            .collect(),
        record: Some(api::BatchedRecord {
            compression_type: i32::from(b.flags),
            publish_time: Some(timestamp(b.timestamp_ms)),
            batch_size: b.record_count,
            payload: b.payload.clone(),
        }),
    }
}

/// Turns stored batches into received records, stopping before the encoded size would pass
/// `budget` (the first batch is always included, so a read always makes progress).
pub fn fit(shard: u64, batches: &[StoredBatch], budget: usize) -> Vec<api::ReceivedRecord> {
    let mut out = Vec::new();
    let mut size = 0;
    for b in batches {
        let r = received_record(shard, b);
        // The record plus its field tag and length prefix in the enclosing message.
        let len = r.encoded_len() + 8;
        if !out.is_empty() && size + len > budget {
            break;
        }
        size += len;
        out.push(r);
    }
    out
}
