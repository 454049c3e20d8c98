//! Appends: a client's batch is checked ([`crate::batch::check`]) and stored exactly as sent;
//! records built inside the server (query output, DataCell emitters) are encoded once and
//! stored without being decoded again. Either way the batch is acknowledged once durable.

use std::time::Instant;

use streamcell_proto::api::{self, CompressionType, ErrorCode};
use streamcell_proto::records::encode_batch;
use streamcell_store::NewBatch;

use crate::batch;
use crate::error::{Result, ServiceError};
use crate::keys;
use crate::service::Service;

/// Where an appended batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The shard.
    pub shard: u64,
    /// The batch's sequence number: a record's id is `(shard, seq, index)`.
    pub seq: u64,
    /// Records in the batch.
    pub record_count: u32,
}

impl Service {
    /// Appends a client's batch to `shard` of `stream`, after checking it.
    pub async fn append(
        &self,
        stream: &str,
        shard: u64,
        records: Option<api::BatchedRecord>,
    ) -> Result<Appended> {
        let arrived = Instant::now();
        let checked = batch::check(records, self.max_record_size())?;
        self.shard_meta(Some(stream), shard)?;
        let bytes = checked.payload.len();
        let appended = self
            .store
            .log
            .append(
                shard,
                NewBatch {
                    payload: checked.payload,
                    record_count: checked.record_count,
                    flags: checked.compression as u16,
                },
            )
            .await?;
        self.metrics
            .stream(stream)
            .appended(checked.record_count, bytes, arrived.elapsed());
        Ok(Appended {
            shard,
            seq: appended.seq,
            record_count: checked.record_count,
        })
    }

    /// Appends records the server built itself to the shard of `stream` that owns `key`, as
    /// one uncompressed batch. They are not decoded again; the batch must still fit
    /// [`Service::max_record_size`].
    pub async fn append_records(
        &self,
        stream: &str,
        key: &str,
        records: &[api::HStreamRecord],
    ) -> Result<Appended> {
        let arrived = Instant::now();
        if records.is_empty() {
            return Err(ServiceError::invalid(
                ErrorCode::StreamEmptyBatchedRecord,
                "an append needs at least one record",
            ));
        }
        // A read-only catalog lookup runs inline, as on the client append path: a hop to the
        // blocking pool would cost more than the lookup (bench/ANALYSIS.md).
        let (_, shards) = self
            .store
            .catalog
            .stream_shards(stream)?
            .ok_or_else(|| streamcell_store::StoreError::StreamNotFound(stream.to_string()))?;
        let hash = keys::key_hash(key);
        let Some(shard) = shards
            .iter()
            .find(|s| keys::in_range(hash, &s.start_key, &s.end_key))
        else {
            return Err(ServiceError::Store(streamcell_store::StoreError::Invalid(
                format!("stream {stream:?} has no shard for key {key:?}"),
            )));
        };
        let batch = encode_batch(records);
        let size = prost::Message::encoded_len(&batch);
        let limit = self.max_record_size();
        if size > limit {
            return Err(ServiceError::invalid(
                ErrorCode::StreamInvalidRecordSize,
                format!("batch is {size} bytes, larger than the server's limit of {limit} bytes (max-record-size)"),
            ));
        }
        let bytes = batch.payload.len();
        let appended = self
            .store
            .log
            .append(
                shard.id,
                NewBatch {
                    payload: batch.payload,
                    record_count: batch.batch_size,
                    flags: CompressionType::None as u16,
                },
            )
            .await?;
        self.metrics
            .stream(stream)
            .appended(batch.batch_size, bytes, arrived.elapsed());
        Ok(Appended {
            shard: shard.id,
            seq: appended.seq,
            record_count: batch.batch_size,
        })
    }
}
