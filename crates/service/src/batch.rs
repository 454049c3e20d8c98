//! Incoming batches: the checks an `Append` must pass before anything is stored. A batch is
//! stored exactly as it came (compressed or not); to refuse garbage early, the server walks it
//! once (decompressing gzip/zstd) with the engine's record walk, `records::visit_records`,
//! and checks that it holds `batchSize` records: what is stored, every reader reads alike.

use bytes::Bytes;
use prost::Message;
use streamcell_proto::api::{BatchHStreamRecords, BatchedRecord, CompressionType, ErrorCode};
use streamcell_proto::records::{self, MAX_DECOMPRESSED};

use crate::error::{Result, ServiceError};

/// A batch that passed the checks.
#[derive(Debug, Clone)]
pub struct CheckedBatch {
    /// The batch payload as sent (possibly compressed).
    pub payload: Bytes,
    /// The number of records.
    pub record_count: u32,
    /// The compression type (stored as the batch's flags).
    pub compression: CompressionType,
}

/// Checks an append's batch: present, non-empty, within `max_record_size` (measured as the
/// serialized `BatchedRecord`, as HStreamDB does), of a known compression, and decodable into
/// exactly `batchSize` records.
pub fn check(batch: Option<BatchedRecord>, max_record_size: usize) -> Result<CheckedBatch> {
    let Some(batch) = batch else {
        return Err(ServiceError::invalid(
            ErrorCode::StreamEmptyBatchedRecord,
            "append request has no records (field `records` is missing)",
        ));
    };
    if batch.batch_size == 0 || batch.payload.is_empty() {
        return Err(ServiceError::invalid(
            ErrorCode::StreamEmptyBatchedRecord,
            format!(
                "batch is empty (batchSize {}, payload {} bytes)",
                batch.batch_size,
                batch.payload.len()
            ),
        ));
    }
    let size = batch.encoded_len();
    if size > max_record_size {
        return Err(ServiceError::invalid(
            ErrorCode::StreamInvalidRecordSize,
            format!("batch is {size} bytes, larger than the server's limit of {max_record_size} bytes (max-record-size)"),
        ));
    }
    let compression = CompressionType::try_from(batch.compression_type).map_err(|_| {
        ServiceError::invalid(
            ErrorCode::StreamEmptyBatchedRecord,
            format!("unknown compression type {}", batch.compression_type),
        )
    })?;
    let plain = decompress(&batch.payload, compression)?;
    let n = count_records(&plain)?;
    if n != batch.batch_size as usize {
        return Err(ServiceError::invalid(
            ErrorCode::StreamEmptyBatchedRecord,
            format!(
                "batchSize is {} but the payload holds {n} records",
                batch.batch_size
            ),
        ));
    }
    Ok(CheckedBatch {
        payload: batch.payload,
        record_count: batch.batch_size,
        compression,
    })
}

/// Returns the serialized `BatchHStreamRecords` inside a batch payload (see
/// [`records::decompress`]); bad or oversized payloads are INVALID_ARGUMENT.
pub fn decompress(payload: &Bytes, compression: CompressionType) -> Result<Bytes> {
    records::decompress(payload, compression, MAX_DECOMPRESSED)
        .map_err(|e| ServiceError::invalid(ErrorCode::StreamEmptyBatchedRecord, e.to_string()))
}

/// Re-encodes part of a stored batch for redelivery: the records at `indexes` (in that
/// order), compressed as the stored batch was, as one batch, or as several if one would be
/// larger than `max_bytes` (clients refuse messages over 4 MiB; a compressed batch can expand
/// many times when re-encoded). Returns each batch's record indexes and payload. A single
/// record is never split.
pub fn subset_batches(
    payload: &Bytes,
    compression: CompressionType,
    indexes: &[u32],
    max_bytes: usize,
) -> Result<Vec<(Vec<u32>, Bytes)>> {
    let plain = decompress(payload, compression)?;
    let all = BatchHStreamRecords::decode(plain).map_err(|e| {
        ServiceError::invalid(
            ErrorCode::StreamEmptyBatchedRecord,
            format!("stored batch does not decode: {e}"),
        )
    })?;
    let mut out = Vec::new();
    let mut pending = vec![indexes.to_vec()];
    while let Some(part) = pending.pop() {
        let mut picked = Vec::with_capacity(part.len());
        for &i in &part {
            match all.records.get(i as usize) {
                Some(r) => picked.push(r.clone()),
                None => {
                    return Err(ServiceError::invalid(
                        ErrorCode::StreamEmptyBatchedRecord,
                        format!(
                            "record index {i} is beyond the batch's {} records",
                            all.records.len()
                        ),
                    ))
                }
            }
        }
        let encoded = compress(
            &BatchHStreamRecords { records: picked }.encode_to_vec(),
            compression,
        )?;
        if encoded.len() <= max_bytes || part.len() == 1 {
            out.push((part, Bytes::from(encoded)));
        } else {
            // Too large: halve it (the second half is pushed first so order is kept).
            let (a, b) = part.split_at(part.len() / 2);
            pending.push(b.to_vec());
            pending.push(a.to_vec());
        }
    }
    Ok(out)
}

/// Compresses a serialized `BatchHStreamRecords` with `compression`.
fn compress(plain: &[u8], compression: CompressionType) -> Result<Vec<u8>> {
    use std::io::Write;
    match compression {
        CompressionType::None => Ok(plain.to_vec()),
        CompressionType::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(plain)
                .and_then(|_| e.finish())
                .map_err(|e| ServiceError::Store(streamcell_store::StoreError::io("gzip", e)))
        }
        CompressionType::Zstd => Ok(ruzstd::encoding::compress_to_vec(
            plain,
            ruzstd::encoding::CompressionLevel::Fastest,
        )),
    }
}

/// The number of records in a decompressed batch, counted by the engine's own record walk
/// ([`records::visit_records`]): a batch is stored only if the queries that read it can walk
/// it, and whatever that walk accepts prost decodes to the same records (fuzz finding K3 in
/// `docs/fuzzing.md`: prost alone accepted batches the walk refused or read differently).
/// The walk allocates nothing per record, where prost's decode built every record, key and
/// attribute map only to count them.
fn count_records(plain: &Bytes) -> Result<usize> {
    let mut n = 0usize;
    records::visit_records(plain, |_, _| n += 1).map_err(|e| {
        ServiceError::invalid(
            ErrorCode::StreamEmptyBatchedRecord,
            format!("batch payload is not a serialized BatchHStreamRecords: {e}"),
        )
    })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamcell_proto::records::{encode_batch, raw_record};

    #[test]
    fn accepts_a_well_formed_batch() {
        let b = encode_batch(&[raw_record("k", "a"), raw_record("k", "b")]);
        let c = check(Some(b), 1 << 20).expect("valid");
        assert_eq!(c.record_count, 2);
    }

    #[test]
    fn refuses_bad_batches_with_reasons() {
        let msg = |r: Result<CheckedBatch>| match r {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        assert!(msg(check(None, 100)).contains("no records"));
        let mut b = encode_batch(&[raw_record("", "x")]);
        b.batch_size = 0;
        assert!(msg(check(Some(b), 100)).contains("empty"));
        let b = encode_batch(&[raw_record("", "x".repeat(200))]);
        assert!(msg(check(Some(b), 100)).contains("limit of 100"));
        let mut b = encode_batch(&[raw_record("", "x")]);
        b.batch_size = 3;
        assert!(msg(check(Some(b), 1000)).contains("holds 1 records"));
        let b = BatchedRecord {
            compression_type: 0,
            publish_time: None,
            batch_size: 1,
            payload: Bytes::from_static(b"\xff\xff\xff"),
        };
        assert!(msg(check(Some(b), 1000)).contains("not a serialized"));
        let b = BatchedRecord {
            compression_type: 1,
            publish_time: None,
            batch_size: 1,
            payload: Bytes::from_static(b"not gzip"),
        };
        assert!(msg(check(Some(b), 1000)).contains("gzip"));
        let b = BatchedRecord {
            compression_type: 9,
            publish_time: None,
            batch_size: 1,
            payload: Bytes::from_static(b"x"),
        };
        assert!(msg(check(Some(b), 1000)).contains("compression type 9"));
    }

    #[test]
    fn partial_redelivery_keeps_compression_and_fits_the_message_limit() {
        use std::io::Write;
        // 200 compressible records of 7 KiB: 1.4 MB plain, a few KiB gzipped.
        let records: Vec<_> = (0..200)
            .map(|i| raw_record("", format!("{i:05}{}", "abcdefg".repeat(1024))))
            .collect();
        let plain = encode_batch(&records).payload;
        for compression in [CompressionType::Gzip, CompressionType::Zstd] {
            let payload = match compression {
                CompressionType::Gzip => {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    e.write_all(&plain).expect("gzip");
                    Bytes::from(e.finish().expect("gzip"))
                }
                _ => Bytes::from(ruzstd::encoding::compress_to_vec(
                    &plain[..],
                    ruzstd::encoding::CompressionLevel::Fastest,
                )),
            };
            let wanted: Vec<u32> = (0..200).filter(|i| i % 7 != 0).collect();
            // Generous limit: one compressed batch, far smaller than the plain records.
            let one = subset_batches(&payload, compression, &wanted, 4 << 20).expect("subset");
            assert_eq!(one.len(), 1);
            assert!(one[0].1.len() < 200 << 10, "{compression:?} re-compressed");
            // Tight limit: split, every part within it, records and order preserved.
            let parts = subset_batches(&payload, compression, &wanted, 2 << 10).expect("subset");
            assert!(parts.len() > 1);
            let mut seen = Vec::new();
            for (idx, bytes) in &parts {
                assert!(bytes.len() <= 2 << 10 || idx.len() == 1);
                let back =
                    BatchHStreamRecords::decode(decompress(bytes, compression).expect("decodes"))
                        .expect("records");
                assert_eq!(back.records.len(), idx.len());
                for (i, r) in idx.iter().zip(&back.records) {
                    assert_eq!(r, &records[*i as usize]);
                }
                seen.extend(idx.iter().copied());
            }
            assert_eq!(seen, wanted);
        }
    }

    #[test]
    fn every_gzip_member_counts_and_trailing_garbage_is_refused() {
        use std::io::Write;
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).expect("gzip");
            e.finish().expect("gzip")
        };
        let plain = encode_batch(&[raw_record("", "a"), raw_record("", "b")]).payload;
        let (first, second) = plain.split_at(plain.len() / 2);
        let mut two_members = gz(first);
        two_members.extend(gz(second));
        let batch = |payload: Vec<u8>| BatchedRecord {
            compression_type: CompressionType::Gzip as i32,
            publish_time: None,
            batch_size: 2,
            payload: Bytes::from(payload),
        };
        assert_eq!(
            check(Some(batch(two_members)), 1000)
                .expect("valid")
                .record_count,
            2
        );
        let mut garbage = gz(&plain);
        garbage.extend_from_slice(b"trailing junk");
        assert!(check(Some(batch(garbage)), 1000).is_err());
    }

    #[test]
    fn gzip_batches_are_checked_after_decompression() {
        use std::io::Write;
        let plain = encode_batch(&[raw_record("", "a"), raw_record("", "b")]).payload;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).expect("gzip");
        let b = BatchedRecord {
            compression_type: CompressionType::Gzip as i32,
            publish_time: None,
            batch_size: 2,
            payload: Bytes::from(gz.finish().expect("gzip")),
        };
        assert_eq!(check(Some(b), 1000).expect("valid").record_count, 2);
    }

    // K3 (docs/fuzzing.md), one test per input kept in fuzz/regressions/proto_records_agree/:
    // the append check decoded batches with prost alone, and stored some that the engine's
    // record walk (`records::visit_records`, push and persistent queries) refused or read with
    // other flags, so every query reading them failed or saw other records. Each batch below
    // says as many records in `batchSize` as prost decodes, so the old check stored it.

    macro_rules! k3 {
        ($name:literal) => {
            include_bytes!(concat!(
                "../../../fuzz/regressions/proto_records_agree/",
                $name
            ))
        };
    }

    use streamcell_proto::api::h_stream_record_header::Flag;

    /// Each record's flag and payload as prost reads `plain` (the subscriptions' and readers'
    /// decoding).
    fn prost_records(plain: &[u8]) -> Vec<(Flag, Vec<u8>)> {
        BatchHStreamRecords::decode(plain)
            .expect("prost decodes every K3 input")
            .records
            .iter()
            .map(|r| {
                let flag = r.header.as_ref().map_or(Flag::Raw, |h| h.flag());
                (flag, r.payload.to_vec())
            })
            .collect()
    }

    /// The uncompressed batch of `plain`, `batchSize` as prost counts its records.
    fn k3_batch(plain: &[u8]) -> BatchedRecord {
        BatchedRecord {
            compression_type: CompressionType::None as i32,
            publish_time: None,
            batch_size: prost_records(plain).len() as u32,
            payload: Bytes::copy_from_slice(plain),
        }
    }

    /// The append check refuses the batch as INVALID_ARGUMENT naming `reason`.
    fn refused(plain: &[u8], reason: &str) {
        match check(Some(k3_batch(plain)), 1 << 20) {
            Err(ServiceError::Invalid { code, message }) => {
                assert_eq!(code, ErrorCode::StreamEmptyBatchedRecord);
                assert!(
                    message.contains("not a serialized BatchHStreamRecords")
                        && message.contains(reason),
                    "{message}"
                );
            }
            other => panic!("stored a batch the engine cannot walk: {other:?}"),
        }
    }

    /// The append check stores the batch, and the engine's walk reads from what is stored the
    /// records prost reads.
    fn stored_and_read_alike(plain: &'static [u8]) -> Vec<(Flag, Vec<u8>)> {
        let stored = check(Some(k3_batch(plain)), 1 << 20).expect("stored");
        let mut walked = Vec::new();
        records::visit_records(&stored.payload, |flag, payload| {
            walked.push((flag, payload.to_vec()))
        })
        .expect("the engine walks a stored batch");
        assert_eq!(walked, prost_records(plain));
        assert_eq!(stored.record_count as usize, walked.len());
        walked
    }

    #[test]
    fn k3_a_batch_with_a_group_is_not_stored() {
        refused(k3!("record-then-group"), "group field (wire type 3 or 4)");
        // Compressed, the same.
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(k3!("record-then-group")).expect("gzip");
        let batch = BatchedRecord {
            compression_type: CompressionType::Gzip as i32,
            publish_time: None,
            batch_size: 1,
            payload: Bytes::from(gz.finish().expect("gzip")),
        };
        assert!(check(Some(batch), 1 << 20).is_err());
    }

    #[test]
    fn k3_a_fuzzed_batch_with_a_group_is_not_stored() {
        // Prost reads no record in it (the old check called it empty): after one record.
        let mut plain = vec![0x0a, 0x03, 0x12, 0x01, b'x'];
        plain.extend_from_slice(k3!("group-field-fuzzed"));
        refused(&plain, "group field");
    }

    #[test]
    fn k3_attributes_as_a_varint_are_not_stored() {
        refused(
            k3!("attributes-as-varint"),
            "record 0 (counted from 0): field `attributes` has wire type 0",
        );
    }

    #[test]
    fn k3_fuzzed_attributes_of_another_wire_type_are_not_stored() {
        refused(
            k3!("map-wire-type-fuzzed"),
            "field `attributes` has wire type",
        );
    }

    #[test]
    fn k3_attributes_as_a_fixed64_are_not_stored_and_the_reason_says_so() {
        refused(
            k3!("attributes-as-fixed64-fuzzed"),
            "field `attributes` has wire type 1",
        );
    }

    #[test]
    fn k3_an_unknown_field_in_an_attribute_entry_is_stored_and_read_alike() {
        stored_and_read_alike(k3!("entry-unknown-field-fuzzed"));
    }

    #[test]
    fn k3_two_headers_are_stored_and_read_alike() {
        assert_eq!(
            stored_and_read_alike(k3!("header-twice")),
            [(Flag::Raw, b"a".to_vec())]
        );
    }

    #[test]
    fn k3_fuzzed_two_headers_are_stored_and_read_alike() {
        stored_and_read_alike(k3!("header-twice-fuzzed"));
    }

    #[test]
    fn k3_a_flag_beyond_i32_is_stored_and_read_alike() {
        assert_eq!(
            stored_and_read_alike(k3!("flag-beyond-i32")),
            [(Flag::Raw, b"b".to_vec())]
        );
    }
}
