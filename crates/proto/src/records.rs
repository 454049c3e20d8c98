//! Batch encoding of HStream records, as the official clients put it on the wire.
//!
//! An `Append` carries one [`BatchedRecord`]: `compressionType`, `batchSize` (the number of
//! records) and `payload`, which is a serialized [`BatchHStreamRecords`] (possibly compressed).
//! Each [`HStreamRecord`] has a header (flag RAW or JSON, key, attributes) and a payload.
//! This module builds uncompressed batches and parses batches of every compression the clients
//! use (none, gzip, zstd).

use std::io::Read;

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::api::{
    h_stream_record_header::Flag, BatchHStreamRecords, BatchedRecord, CompressionType,
    HStreamRecord, HStreamRecordHeader,
};

/// Why [`decode_batch`] could not return the records of a batch.
#[derive(Debug)]
pub enum DecodeBatchError {
    /// The compressed payload is not valid gzip/zstd, or has bytes after its last member.
    Corrupt(String),
    /// The payload decompresses to more than the limit given.
    TooLarge {
        /// The compression.
        format: &'static str,
        /// The limit, in bytes.
        limit: u64,
    },
    /// `compressionType` holds a value that is not a known `CompressionType`.
    UnknownCompression(i32),
    /// The payload is not a valid serialized `BatchHStreamRecords`.
    Decode(prost::DecodeError),
}

impl std::fmt::Display for DecodeBatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Corrupt(e) => write!(f, "{e}"),
            Self::TooLarge { format, limit } => {
                write!(f, "decompressed {format} batch exceeds {} MiB", limit >> 20)
            }
            Self::UnknownCompression(v) => write!(f, "unknown batch compression type {v}"),
            Self::Decode(e) => write!(f, "invalid BatchHStreamRecords payload: {e}"),
        }
    }
}

impl std::error::Error for DecodeBatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Decode(e) => Some(e),
            _ => None,
        }
    }
}

impl From<prost::DecodeError> for DecodeBatchError {
    fn from(e: prost::DecodeError) -> Self {
        Self::Decode(e)
    }
}

/// A RAW record with the given partition key (`""` is the clients' default key).
pub fn raw_record(key: &str, payload: impl Into<Bytes>) -> HStreamRecord {
    HStreamRecord {
        header: Some(HStreamRecordHeader {
            flag: Flag::Raw as i32,
            attributes: Default::default(),
            key: key.to_owned(),
        }),
        payload: payload.into(),
    }
}

/// Wraps `records` in an uncompressed [`BatchedRecord`]: `compressionType = None`,
/// `batchSize = records.len()`, `payload` = serialized `BatchHStreamRecords{records}`, no
/// `publishTime` (the clients leave it to the server).
///
/// The records are serialized in place, without cloning them into a `BatchHStreamRecords`; the
/// bytes are exactly what encoding `BatchHStreamRecords { records: records.to_vec() }` gives.
///
/// # Panics
/// If `records.len()` does not fit in a `u32` (`batchSize` is a uint32 on the wire).
#[allow(
    clippy::expect_used,
    reason = "callers build batches far under u32::MAX records (a batch is at most 128 MiB)"
)]
pub fn encode_batch(records: &[HStreamRecord]) -> BatchedRecord {
    let batch_size = u32::try_from(records.len()).expect("batch of more than u32::MAX records");
    let mut buf =
        BytesMut::with_capacity(prost::encoding::message::encoded_len_repeated(1, records));
    for record in records {
        // Field 1 of BatchHStreamRecords: `repeated HStreamRecord records = 1`.
        prost::encoding::message::encode(1, record, &mut buf);
    }
    BatchedRecord {
        compression_type: CompressionType::None as i32,
        publish_time: None,
        batch_size,
        payload: buf.freeze(),
    }
}

/// Largest decompressed size [`decode_batch`] accepts (guards against zip bombs).
pub const MAX_DECOMPRESSED: u64 = 256 << 20;

/// The serialized `BatchHStreamRecords` inside a batch payload. Every gzip member and zstd
/// frame is decoded (as the clients' decoders do), and anything after the last one is an
/// error; more than `limit` decompressed bytes is an error too.
pub fn decompress(
    payload: &Bytes,
    compression: CompressionType,
    limit: u64,
) -> Result<Bytes, DecodeBatchError> {
    match compression {
        CompressionType::None => Ok(payload.clone()),
        CompressionType::Gzip => Ok(Bytes::from(read_limited(
            flate2::read::MultiGzDecoder::new(&payload[..]),
            "gzip",
            limit,
        )?)),
        CompressionType::Zstd => {
            let mut input: &[u8] = payload;
            let mut out = Vec::new();
            while !input.is_empty() {
                let frame = ruzstd::decoding::StreamingDecoder::new(&mut input).map_err(|e| {
                    DecodeBatchError::Corrupt(format!("batch payload is not valid zstd: {e}"))
                })?;
                let left = limit.saturating_sub(out.len() as u64);
                out.extend(read_limited(frame, "zstd", left).map_err(|e| match e {
                    DecodeBatchError::TooLarge { format, .. } => {
                        DecodeBatchError::TooLarge { format, limit }
                    }
                    other => other,
                })?);
            }
            Ok(Bytes::from(out))
        }
    }
}

/// Reads a decompressing reader to the end, refusing more than `limit` bytes.
fn read_limited(
    reader: impl Read,
    format: &'static str,
    limit: u64,
) -> Result<Vec<u8>, DecodeBatchError> {
    let mut out = Vec::new();
    reader.take(limit + 1).read_to_end(&mut out).map_err(|e| {
        DecodeBatchError::Corrupt(format!("batch payload is not valid {format}: {e}"))
    })?;
    if out.len() as u64 > limit {
        return Err(DecodeBatchError::TooLarge { format, limit });
    }
    Ok(out)
}

/// The records of a batch, decompressed if need be (at most [`MAX_DECOMPRESSED`] bytes).
/// Payloads share the (decompressed) batch's buffer (no copy).
///
/// `batchSize` is not checked against the number of decoded records: callers that care compare
/// it themselves.
pub fn decode_batch(b: &BatchedRecord) -> Result<Vec<HStreamRecord>, DecodeBatchError> {
    let compression = CompressionType::try_from(b.compression_type)
        .map_err(|_| DecodeBatchError::UnknownCompression(b.compression_type))?;
    decode_payload(&b.payload, compression)
}

/// The records of a stored batch payload of the given compression (see [`decode_batch`]).
pub fn decode_payload(
    payload: &Bytes,
    compression: CompressionType,
) -> Result<Vec<HStreamRecord>, DecodeBatchError> {
    let plain = decompress(payload, compression, MAX_DECOMPRESSED)?;
    Ok(BatchHStreamRecords::decode(plain)?.records)
}

/// Visits the records of a decompressed `BatchHStreamRecords` in order, giving each record's
/// flag and payload without decoding it into messages (no allocation per record). A record
/// without a header is RAW; a flag value outside the enum is JSON (protobuf's default, as
/// prost's accessor gives). Malformed bytes are an error and nothing after them is visited.
pub fn visit_records<'a>(
    plain: &'a [u8],
    mut visit: impl FnMut(Flag, &'a [u8]),
) -> Result<(), crate::wire::WireError> {
    use crate::wire::Reader;
    let mut batch = Reader::new(plain);
    while let Some((field, value)) = batch.next()? {
        if field != 1 {
            continue;
        }
        let mut record = Reader::new(value.bytes()?);
        let (mut flag, mut payload) = (Flag::Raw, &[][..]);
        while let Some((field, value)) = record.next()? {
            match field {
                1 => {
                    flag = Flag::Json;
                    let mut header = Reader::new(value.bytes()?);
                    while let Some((field, value)) = header.next()? {
                        match field {
                            1 => {
                                flag = i32::try_from(value.varint()?)
                                    .ok()
                                    .and_then(|v| Flag::try_from(v).ok())
                                    .unwrap_or(Flag::Json)
                            }
                            // Attributes and key: checked to be strings of the right shape.
                            2 => {
                                let mut entry = Reader::new(value.bytes()?);
                                while let Some((_, v)) = entry.next()? {
                                    v.str()?;
                                }
                            }
                            3 => {
                                value.str()?;
                            }
                            _ => {}
                        }
                    }
                }
                2 => payload = value.bytes()?,
                _ => {}
            }
        }
        visit(flag, payload);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{shard_offset, ShardOffset, SpecialOffset, Subscription};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn raw_record_sets_flag_key_and_payload() {
        let r = raw_record("k1", &b"hello"[..]);
        let h = r.header.as_ref().expect("header");
        assert_eq!(h.flag(), Flag::Raw);
        assert_eq!(h.key, "k1");
        assert!(h.attributes.is_empty());
        assert_eq!(r.payload, Bytes::from_static(b"hello"));
    }

    #[test]
    fn batch_round_trip() {
        let records = vec![
            raw_record("", Bytes::from_static(b"a")),
            raw_record("key", vec![0u8, 1, 2, 255]),
            raw_record("", Bytes::new()),
        ];
        let batch = encode_batch(&records);
        assert_eq!(batch.compression_type(), CompressionType::None);
        assert_eq!(batch.batch_size, 3);
        assert_eq!(batch.publish_time, None);
        assert_eq!(decode_batch(&batch).expect("decode"), records);

        // Same bytes as going through the generated BatchHStreamRecords message.
        let via_message = BatchHStreamRecords {
            records: records.clone(),
        }
        .encode_to_vec();
        assert_eq!(batch.payload.as_ref(), via_message.as_slice());

        // And the whole BatchedRecord survives its own wire round trip.
        let again = BatchedRecord::decode(batch.encode_to_vec().as_slice()).expect("decode");
        assert_eq!(again, batch);
        assert_eq!(decode_batch(&again).expect("decode"), records);
    }

    #[test]
    fn visit_records_sees_what_decode_batch_sees() {
        let mut json = raw_record("k", Bytes::from_static(b"{}"));
        if let Some(h) = json.header.as_mut() {
            h.flag = Flag::Json as i32;
            h.attributes.insert("a".into(), "b".into());
        }
        let headerless = HStreamRecord {
            header: None,
            payload: Bytes::from_static(b"x"),
        };
        let records = vec![
            raw_record("", Bytes::from_static(b"a")),
            json,
            headerless,
            raw_record("key", Bytes::new()),
        ];
        let batch = encode_batch(&records);
        let mut seen = Vec::new();
        visit_records(&batch.payload, |flag, payload| {
            seen.push((flag, payload.to_vec()))
        })
        .expect("visit");
        let want: Vec<(Flag, Vec<u8>)> = decode_batch(&batch)
            .expect("decode")
            .iter()
            .map(|r| {
                let flag = r.header.as_ref().map_or(Flag::Raw, |h| h.flag());
                (flag, r.payload.to_vec())
            })
            .collect();
        assert_eq!(seen, want);
        assert_eq!(seen[1].0, Flag::Json);
        assert_eq!(seen[2].0, Flag::Raw);

        // Cut short anywhere: an error, never a panic.
        for cut in 1..batch.payload.len() {
            let _ = visit_records(&batch.payload[..cut], |_, _| {});
        }
        assert!(visit_records(&batch.payload[..batch.payload.len() - 1], |_, _| {}).is_err());
    }

    #[test]
    fn empty_batch() {
        let batch = encode_batch(&[]);
        assert_eq!(batch.batch_size, 0);
        assert!(batch.payload.is_empty());
        assert!(decode_batch(&batch).expect("decode").is_empty());
    }

    #[test]
    fn compressed_batches_decode_and_bad_ones_are_rejected() {
        use std::io::Write;
        let records = vec![raw_record("k", Bytes::from_static(b"hello"))];
        let plain = encode_batch(&records);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain.payload).expect("gzip");
        let mut batch = plain.clone();
        batch.compression_type = CompressionType::Gzip as i32;
        batch.payload = Bytes::from(gz.finish().expect("gzip"));
        assert_eq!(decode_batch(&batch).expect("gzip batch"), records);

        let mut trailing = batch.payload.to_vec();
        trailing.extend_from_slice(b"junk");
        batch.payload = Bytes::from(trailing);
        assert!(matches!(
            decode_batch(&batch),
            Err(DecodeBatchError::Corrupt(_))
        ));

        batch.compression_type = CompressionType::Zstd as i32;
        batch.payload = plain.payload.clone();
        assert!(matches!(
            decode_batch(&batch),
            Err(DecodeBatchError::Corrupt(_))
        ));

        batch.compression_type = 7;
        assert!(matches!(
            decode_batch(&batch),
            Err(DecodeBatchError::UnknownCompression(7))
        ));
    }

    #[test]
    fn garbage_payload_is_a_decode_error() {
        let batch = BatchedRecord {
            compression_type: CompressionType::None as i32,
            publish_time: None,
            batch_size: 1,
            payload: Bytes::from_static(&[0x0a, 0x05, 0x01]), // length 5, only 1 byte follows
        };
        let err = decode_batch(&batch).expect_err("must fail");
        assert!(matches!(err, DecodeBatchError::Decode(_)));
        assert!(err.to_string().contains("BatchHStreamRecords"));
    }

    /// `hstreamdb.md` §1.4: a oneof member is written even when it holds the default value.
    #[test]
    fn shard_offset_earliest_wire_bytes() {
        let off = ShardOffset {
            offset: Some(shard_offset::Offset::SpecialOffset(
                SpecialOffset::Earliest as i32,
            )),
        };
        assert_eq!(off.encode_to_vec(), vec![0x08, 0x00]);
    }

    /// `hstreamdb.md` §1.4: the bytes the Python client sends for
    /// `create_subscription("a", "b", 600, 10000, EARLIEST)`; offset 0 is omitted.
    #[test]
    fn subscription_wire_bytes() {
        let sub = Subscription {
            subscription_id: "a".into(),
            stream_name: "b".into(),
            ack_timeout_seconds: 600,
            max_unacked_records: 10000,
            offset: SpecialOffset::Earliest as i32,
            creation_time: None,
        };
        assert_eq!(hex(&sub.encode_to_vec()), "0a016112016218d80420904e");
    }

    /// Record payloads decode as `Bytes` slices of the input buffer, not copies.
    #[test]
    fn decoded_payloads_share_the_batch_buffer() {
        let big = vec![7u8; 4096];
        let batch = encode_batch(&[raw_record("", big)]);
        let decoded = decode_batch(&batch).expect("decode");
        let start = batch.payload.as_ptr() as usize;
        let p = decoded[0].payload.as_ptr() as usize;
        assert!(p >= start && p < start + batch.payload.len());
    }
}
