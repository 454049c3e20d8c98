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
/// flag and payload without decoding it into messages (no allocation per record). It is both
/// the engine's record walk (push and persistent queries) and the server's append check
/// (`streamcell-service`, `batch::check`, which counts the records with it), so a batch is
/// stored only if this walk reads it.
///
/// Whatever it accepts, prost's `BatchHStreamRecords::decode` (which [`decode_payload`] and a
/// subscription's partial redelivery use on the same stored bytes, as the clients' protobuf
/// runtimes do on what they receive) decodes too, to the same records in the same order,
/// each with the flag prost's accessor gives and the same payload: it reads the wire as prost
/// 0.14 does (keys above `u32::MAX`, field number 0, wire types 6 and 7, varints past 64 bits,
/// lengths past the end, wrong wire types for the fields it knows, and invalid UTF-8 in `key`
/// and the attributes are errors) and gives the protobuf meaning to what prost accepts:
/// - a record without a header is RAW; a `flag` outside the enum is JSON (protobuf's default);
/// - a record with several `header` fields has one header, their merge: the last `flag` written
///   in any of them counts (JSON if none has one);
/// - a `flag` varint is an `int32`: a value past 32 bits is cut to its low 32 bits, as prost
///   and the other protobuf runtimes do (2^32 + 1 is RAW);
/// - unknown fields, in a record, a header or an attribute entry, are skipped whatever their
///   (valid) wire type; a later `payload` field replaces an earlier one.
///
/// Two things prost accepts are refused here, and so at append ([`RecordsProblem`]): a group
/// (wire type 3 or 4, deprecated since proto2; no HStream client writes one), which prost
/// skips as an unknown field, and an `attributes` field that is not length-delimited, which
/// prost 0.14 does not check (it reads a varint, or the bytes after the key, as the entry's
/// length). Malformed bytes are an error and nothing after them is visited.
pub fn visit_records<'a>(
    plain: &'a [u8],
    mut visit: impl FnMut(Flag, &'a [u8]),
) -> Result<(), RecordsError> {
    let mut batch = Fields::new(plain, BATCH_FIELDS);
    let between = |problem| RecordsError {
        record: None,
        problem,
    };
    let mut index = 0usize;
    while let Some((field, value)) = batch.next().map_err(between)? {
        if field != 1 {
            continue;
        }
        let record = value.bytes("records").map_err(between)?;
        let (flag, payload) = read_record(record).map_err(|problem| RecordsError {
            record: Some(index),
            problem,
        })?;
        visit(flag, payload);
        index += 1;
    }
    Ok(())
}

/// The flag and payload of one `HStreamRecord` (see [`visit_records`]).
fn read_record(bytes: &[u8]) -> Result<(Flag, &[u8]), RecordsProblem> {
    // None: no header (RAW); Some(v): the merged header's `flag` as prost holds it.
    let (mut flag, mut payload) = (None, &[][..]);
    let mut record = Fields::new(bytes, RECORD_FIELDS);
    while let Some((field, value)) = record.next()? {
        match field {
            1 => read_header(value.bytes("header")?, flag.get_or_insert(0))?,
            2 => payload = value.bytes("payload")?,
            _ => {}
        }
    }
    let flag = flag.map_or(Flag::Raw, |v| Flag::try_from(v).unwrap_or(Flag::Json));
    Ok((flag, payload))
}

/// Reads one `HStreamRecordHeader` field into `flag` (merged, as prost merges a repeated
/// embedded message): `flag` as an `int32`, the attributes and the key as strings.
fn read_header(bytes: &[u8], flag: &mut i32) -> Result<(), RecordsProblem> {
    let mut header = Fields::new(bytes, HEADER_FIELDS);
    while let Some((field, value)) = header.next()? {
        match field {
            // int32: the low 32 bits of the varint, as prost's (and C++'s) `as i32` cast.
            1 => *flag = value.varint("flag")? as i32,
            2 => {
                let mut entry = Fields::new(value.bytes("attributes")?, ENTRY_FIELDS);
                while let Some((field, value)) = entry.next()? {
                    match field {
                        1 => {
                            value.str("attributes key")?;
                        }
                        2 => {
                            value.str("attributes value")?;
                        }
                        _ => {}
                    }
                }
            }
            3 => {
                value.str("key")?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Why [`visit_records`] refused a batch: where and what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordsError {
    /// The record the problem lies in, counted from 0 in batch order; `None` if it lies
    /// between records (in the batch message itself).
    pub record: Option<usize>,
    /// What is wrong.
    pub problem: RecordsProblem,
}

/// What [`visit_records`] found wrong in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordsProblem {
    /// The bytes end inside a field, or a length goes past the end of its message.
    Truncated,
    /// A varint of more than 10 bytes, or whose value does not fit in 64 bits.
    BadVarint,
    /// A field key above `u32::MAX`, with field number 0 or wire type 6 or 7.
    BadKey,
    /// A group (wire type 3 or 4) as an unknown field, which prost skips but no HStream
    /// client writes.
    Group,
    /// A known field of the wrong wire type (`attributes` included, which prost 0.14 does not
    /// check), found before its value is read.
    WrongWireType {
        /// The field, as the `.proto` names it.
        field: &'static str,
        /// The wire type found.
        wire_type: u8,
    },
    /// A string field (`key`, an attribute's key or value) that is not UTF-8.
    NotUtf8(&'static str),
}

impl std::fmt::Display for RecordsProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated => f.write_str("the bytes end inside a field (a length past the end)"),
            Self::BadVarint => f.write_str("a varint longer than 10 bytes or larger than 64 bits"),
            Self::BadKey => {
                f.write_str("a field key with field number 0, above 2^29-1, or wire type 6 or 7")
            }
            Self::Group => {
                f.write_str("a group field (wire type 3 or 4), which StreamCell does not accept")
            }
            Self::WrongWireType { field, wire_type } => write!(
                f,
                "field `{field}` has wire type {wire_type}, not the one its type needs"
            ),
            Self::NotUtf8(field) => write!(f, "string field `{field}` is not valid UTF-8"),
        }
    }
}

impl std::fmt::Display for RecordsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("protobuf message is malformed: ")?;
        if let Some(i) = self.record {
            write!(f, "record {i} (counted from 0): ")?;
        }
        write!(f, "{}", self.problem)
    }
}

impl std::error::Error for RecordsError {}

/// The fields of one message in order, read exactly as prost 0.14 reads them (`decode_key`,
/// `decode_varint`, `skip_field`), except that groups are refused instead of skipped. (The
/// borrowing reader of [`crate::wire`] is laxer: it accepts keys up to 2^35 and a tenth varint
/// byte above 1, which prost refuses.)
struct Fields<'a> {
    buf: &'a [u8],
    /// The message's known fields: number, name, wire type. As prost does, a known field's
    /// wire type is checked before its value is read.
    known: &'static [(u32, &'static str, u8)],
}

/// The known fields of `BatchHStreamRecords` (see [`Fields`]).
const BATCH_FIELDS: &[(u32, &str, u8)] = &[(1, "records", 2)];
/// The known fields of `HStreamRecord`.
const RECORD_FIELDS: &[(u32, &str, u8)] = &[(1, "header", 2), (2, "payload", 2)];
/// The known fields of `HStreamRecordHeader`.
const HEADER_FIELDS: &[(u32, &str, u8)] = &[(1, "flag", 0), (2, "attributes", 2), (3, "key", 2)];
/// The known fields of an entry of `HStreamRecordHeader.attributes` (a `map<string, string>`).
const ENTRY_FIELDS: &[(u32, &str, u8)] = &[(1, "attributes key", 2), (2, "attributes value", 2)];

/// One field's value: wire types 0 and 2 as read, 1 and 5 skipped.
#[derive(Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed(u8),
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8], known: &'static [(u32, &'static str, u8)]) -> Self {
        Fields { buf, known }
    }

    fn next(&mut self) -> Result<Option<(u32, Value<'a>)>, RecordsProblem> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = u32::try_from(self.varint()?).map_err(|_| RecordsProblem::BadKey)?;
        let (field, wire_type) = (key >> 3, (key & 7) as u8);
        if field == 0 || wire_type > 5 {
            return Err(RecordsProblem::BadKey);
        }
        if let Some(&(_, name, want)) = self.known.iter().find(|k| k.0 == field) {
            if wire_type != want {
                return Err(RecordsProblem::WrongWireType {
                    field: name,
                    wire_type,
                });
            }
        }
        let value = match wire_type {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed(1)
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| RecordsProblem::Truncated)?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed(5)
            }
            _ => return Err(RecordsProblem::Group),
        };
        Ok(Some((field, value)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordsProblem> {
        if n > self.buf.len() {
            return Err(RecordsProblem::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A varint of at most 10 bytes whose tenth byte, if any, is 0 or 1 (prost's and
    /// protobuf-go's check that the value fits in 64 bits).
    fn varint(&mut self) -> Result<u64, RecordsProblem> {
        let mut value = 0u64;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                if i == 9 && b > 1 {
                    return Err(RecordsProblem::BadVarint);
                }
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(if self.buf.len() < 10 {
            RecordsProblem::Truncated
        } else {
            RecordsProblem::BadVarint
        })
    }
}

impl<'a> Value<'a> {
    fn wire_type(self) -> u8 {
        match self {
            Value::Varint(_) => 0,
            Value::Bytes(_) => 2,
            Value::Fixed(w) => w,
        }
    }

    fn varint(self, field: &'static str) -> Result<u64, RecordsProblem> {
        match self {
            Value::Varint(v) => Ok(v),
            other => Err(RecordsProblem::WrongWireType {
                field,
                wire_type: other.wire_type(),
            }),
        }
    }

    fn bytes(self, field: &'static str) -> Result<&'a [u8], RecordsProblem> {
        match self {
            Value::Bytes(b) => Ok(b),
            other => Err(RecordsProblem::WrongWireType {
                field,
                wire_type: other.wire_type(),
            }),
        }
    }

    fn str(self, field: &'static str) -> Result<&'a str, RecordsProblem> {
        std::str::from_utf8(self.bytes(field)?).map_err(|_| RecordsProblem::NotUtf8(field))
    }
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

    /// Each record's flag (prost's accessor: RAW without a header) and payload, as prost's
    /// `BatchHStreamRecords::decode` reads `plain`.
    fn prost_view(plain: &[u8]) -> Result<Vec<(Flag, Vec<u8>)>, prost::DecodeError> {
        Ok(BatchHStreamRecords::decode(plain)?
            .records
            .iter()
            .map(|r| {
                let flag = r.header.as_ref().map_or(Flag::Raw, |h| h.flag());
                (flag, r.payload.to_vec())
            })
            .collect())
    }

    /// The same, as `visit_records` reads it; when it reads a batch, asserts that prost reads
    /// the same records, and when it refuses one prost reads, that the reason is one of the two
    /// it documents (K3 in docs/fuzzing.md).
    fn walk_view(plain: &[u8]) -> Result<Vec<(Flag, Vec<u8>)>, RecordsError> {
        let mut seen = Vec::new();
        let walked = visit_records(plain, |flag, payload| seen.push((flag, payload.to_vec())));
        match (&walked, prost_view(plain)) {
            (Ok(()), Ok(want)) => assert_eq!(seen, want, "visit_records and prost differ"),
            (Ok(()), Err(e)) => panic!("visit_records reads a batch prost refuses: {e}"),
            (Err(e), Ok(_)) => assert!(
                matches!(
                    e.problem,
                    RecordsProblem::Group
                        | RecordsProblem::WrongWireType {
                            field: "attributes",
                            ..
                        }
                ),
                "visit_records refuses a batch prost reads: {e}"
            ),
            (Err(_), Err(_)) => {}
        }
        walked.map(|()| seen)
    }

    // K3 (docs/fuzzing.md), one test per input kept in fuzz/regressions/proto_records_agree/:
    // the server's append check used prost, which read these batches, while this walk refused
    // them or read other flags; the append check now uses this walk.

    macro_rules! k3 {
        ($name:literal) => {
            include_bytes!(concat!(
                "../../../fuzz/regressions/proto_records_agree/",
                $name
            ))
        };
    }

    #[test]
    fn k3_a_group_after_a_record_is_refused() {
        let plain = k3!("record-then-group");
        assert_eq!(prost_view(plain).expect("prost skips the group").len(), 1);
        let e = walk_view(plain).expect_err("refused");
        assert_eq!(
            e,
            RecordsError {
                record: None,
                problem: RecordsProblem::Group
            }
        );
        assert!(
            e.to_string().contains("group field (wire type 3 or 4)"),
            "{e}"
        );
    }

    #[test]
    fn k3_a_fuzzed_group_field_is_refused() {
        let plain = k3!("group-field-fuzzed");
        assert!(prost_view(plain).is_ok());
        assert_eq!(
            walk_view(plain).expect_err("refused").problem,
            RecordsProblem::Group
        );
    }

    #[test]
    fn k3_attributes_as_a_varint_are_refused() {
        let plain = k3!("attributes-as-varint");
        assert!(prost_view(plain).is_ok());
        let e = walk_view(plain).expect_err("refused");
        assert_eq!(
            e,
            RecordsError {
                record: Some(0),
                problem: RecordsProblem::WrongWireType {
                    field: "attributes",
                    wire_type: 0
                }
            }
        );
        assert!(
            e.to_string()
                .contains("record 0 (counted from 0): field `attributes` has wire type 0"),
            "{e}"
        );
    }

    #[test]
    fn k3_fuzzed_attributes_of_another_wire_type_are_refused() {
        let plain = k3!("map-wire-type-fuzzed");
        assert!(prost_view(plain).is_ok());
        assert!(matches!(
            walk_view(plain).expect_err("refused").problem,
            RecordsProblem::WrongWireType {
                field: "attributes",
                ..
            }
        ));
    }

    #[test]
    fn k3_attributes_as_a_fixed64_are_refused_for_their_wire_type() {
        // Found after the first fix: the header ends 1 byte after the key of an `attributes`
        // of wire type 1; prost reads that byte as the entry's length, the walk read 8 bytes
        // and called the batch truncated (refused, for the wrong reason). The wire type of a
        // known field is now checked before its value is read, as prost does.
        let plain = k3!("attributes-as-fixed64-fuzzed");
        assert!(prost_view(plain).is_ok());
        assert_eq!(
            walk_view(plain).expect_err("refused").problem,
            RecordsProblem::WrongWireType {
                field: "attributes",
                wire_type: 1
            }
        );
    }

    #[test]
    fn k3_an_unknown_non_string_field_in_an_attribute_entry_is_skipped_as_prost_does() {
        let plain = k3!("entry-unknown-field-fuzzed");
        let seen = walk_view(plain).expect("read as prost reads it");
        assert!(!seen.is_empty());
        // By hand: entry {key "a", value "b", field 3 = varint 7, field 4 = fixed32}.
        let entry = [0x0a, 1, b'a', 0x12, 1, b'b', 0x18, 7, 0x25, 1, 2, 3, 4];
        let mut header = vec![0x08, 0x01, 0x12, entry.len() as u8];
        header.extend(entry);
        let mut record = vec![0x0a, header.len() as u8];
        record.extend(header);
        record.extend([0x12, 1, b'x']);
        let mut plain = vec![0x0a, record.len() as u8];
        plain.extend(record);
        assert_eq!(
            walk_view(&plain).expect("read"),
            [(Flag::Raw, b"x".to_vec())]
        );
    }

    #[test]
    fn k3_two_headers_merge_as_prost_merges_them() {
        // Header {flag RAW}, then an empty header: one header, flag RAW.
        let plain = k3!("header-twice");
        assert_eq!(
            walk_view(plain).expect("read"),
            [(Flag::Raw, b"a".to_vec())]
        );
        // A later header's flag counts; one without a flag keeps the earlier one.
        let plain = [
            0x0a, 0x0b, 0x0a, 0x02, 0x08, 0x01, 0x0a, 0x02, 0x08, 0x00, 0x12, 0x01, b'b',
        ];
        assert_eq!(
            walk_view(&plain).expect("read"),
            [(Flag::Json, b"b".to_vec())]
        );
    }

    #[test]
    fn k3_fuzzed_two_headers_merge_as_prost_merges_them() {
        let seen = walk_view(k3!("header-twice-fuzzed")).expect("read");
        assert!(seen.iter().any(|(flag, _)| *flag == Flag::Raw), "{seen:?}");
    }

    #[test]
    fn k3_a_flag_beyond_i32_is_cut_to_32_bits_as_prost_does() {
        // flag = 2^32 + 1: RAW, as prost's int32 (and every protobuf runtime) reads it.
        let plain = k3!("flag-beyond-i32");
        assert_eq!(
            walk_view(plain).expect("read"),
            [(Flag::Raw, b"b".to_vec())]
        );
        // -1, as int32 writes it (10 bytes, sign-extended): outside the enum, JSON.
        let mut plain = vec![0x0a, 0x10, 0x0a, 0x0b, 0x08];
        plain.extend([0xff; 9]);
        plain.extend([0x01, 0x12, 0x01, b'c']);
        assert_eq!(
            walk_view(&plain).expect("read"),
            [(Flag::Json, b"c".to_vec())]
        );
    }

    /// What prost refuses, the walk refuses too (the append check relies on it: a batch it
    /// stores must decode for subscriptions), including what `wire::Reader` lets through.
    #[test]
    fn what_prost_refuses_is_refused() {
        let refused = |plain: &[u8], problem: RecordsProblem| {
            assert!(prost_view(plain).is_err(), "prost reads {plain:02x?}");
            assert_eq!(
                walk_view(plain).expect_err("refused").problem,
                problem,
                "{plain:02x?}"
            );
        };
        // A 10-byte varint whose last byte is above 1 (bits past 64): as a key, as a value.
        let mut key = vec![0x88];
        key.extend([0x80; 8]);
        key.extend([0x02, 0x00]);
        refused(&key, RecordsProblem::BadVarint);
        let mut value = vec![0x18];
        value.extend([0x80; 9]);
        value.push(0x02);
        refused(&value, RecordsProblem::BadVarint);
        refused(&[0x18, 0xff, 0xff], RecordsProblem::Truncated);
        // Keys above u32::MAX (field 2^29), field 0, wire types 6 and 7, a stray end group.
        refused(
            &[0x80, 0x80, 0x80, 0x80, 0x10, 0x00],
            RecordsProblem::BadKey,
        );
        refused(&[0x00, 0x00], RecordsProblem::BadKey);
        refused(&[0x0e], RecordsProblem::BadKey);
        refused(&[0x0f], RecordsProblem::BadKey);
        refused(&[0x14], RecordsProblem::Group);
        refused(
            &[0x0c],
            RecordsProblem::WrongWireType {
                field: "records",
                wire_type: 4,
            },
        );
        // Known fields of the wrong wire type.
        let wrong = |field, wire_type| RecordsProblem::WrongWireType { field, wire_type };
        refused(&[0x08, 0x01], wrong("records", 0));
        refused(&[0x0a, 0x02], RecordsProblem::Truncated);
        refused(&[0x0a, 0x02, 0x08, 0x01], wrong("header", 0));
        refused(&[0x0a, 0x02, 0x10, 0x01], wrong("payload", 0));
        refused(&[0x0a, 0x04, 0x0a, 0x02, 0x0a, 0x00], wrong("flag", 2));
        refused(&[0x0a, 0x04, 0x0a, 0x02, 0x18, 0x00], wrong("key", 0));
        refused(
            &[0x0a, 0x06, 0x0a, 0x04, 0x12, 0x02, 0x08, 0x00],
            wrong("attributes key", 0),
        );
        // Invalid UTF-8 in the key and in an attribute.
        refused(
            &[0x0a, 0x05, 0x0a, 0x03, 0x1a, 0x01, 0xff],
            RecordsProblem::NotUtf8("key"),
        );
        refused(
            &[0x0a, 0x07, 0x0a, 0x05, 0x12, 0x03, 0x12, 0x01, 0xff],
            RecordsProblem::NotUtf8("attributes value"),
        );
        // A field running past the end of its record.
        refused(
            &[0x0a, 0x02, 0x12, 0x05, b'a', b'b'],
            RecordsProblem::Truncated,
        );
    }

    /// Many small mutations of a batch of every kind of record: whatever the walk reads, prost
    /// reads alike; whatever prost reads and the walk refuses, it refuses for a group or a
    /// non-length-delimited `attributes` (asserted by `walk_view`).
    #[test]
    fn mutated_batches_are_read_alike_or_refused() {
        let mut json = raw_record("k", Bytes::from_static(b"{}"));
        if let Some(h) = json.header.as_mut() {
            h.flag = Flag::Json as i32;
            h.attributes.insert("a".into(), "b".into());
        }
        let headerless = HStreamRecord {
            header: None,
            payload: Bytes::from_static(b"x"),
        };
        let seed = encode_batch(&[raw_record("", Bytes::from_static(b"a")), json, headerless])
            .payload
            .to_vec();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut read, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut b = seed.clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % (b.len() + 1);
                match next() % 4 {
                    0 if at < b.len() => b[at] = next() as u8,
                    1 => b.insert(at, next() as u8),
                    2 if at < b.len() => {
                        b.remove(at);
                    }
                    _ if at < b.len() => b[at] ^= 1 << (next() % 8),
                    _ => {}
                }
            }
            match walk_view(&b) {
                Ok(_) => read += 1,
                Err(_) => refused += 1,
            }
        }
        assert!(
            read > 1000 && refused > 1000,
            "{read} read, {refused} refused"
        );
    }
}
