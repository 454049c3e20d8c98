//! Feeds arbitrary bytes to the HStream batch decoding of `streamcell-proto` (`records.rs`):
//! the payload of a `BatchedRecord`, as a client appends it and as the engine reads it back.
//!
//! Input: the first byte picks `compressionType` (0 none, 1 gzip, 2 zstd; any other value is
//! used as is, an unknown compression), the rest is the payload. It runs `decompress` (gzip
//! members and zstd frames, with a 1 MiB limit so that runs stay fast; the limit logic is the
//! same at 256 MiB), `decode_batch` on the `BatchedRecord` when the payload is within that
//! limit, `decode_payload`, `BatchHStreamRecords::decode` (the server's append check) and
//! `visit_records` (the engine's record walk) on the decompressed bytes.
//!
//! Asserts: nothing panics; an unknown compression is `UnknownCompression`; `decompress`
//! never returns more than its limit, and returns `TooLarge` rather than a cut payload;
//! `decode_batch` and `decode_payload` agree with decompressing then decoding.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use streamcell_proto::api::{BatchHStreamRecords, BatchedRecord, CompressionType};
use streamcell_proto::records::{self, DecodeBatchError};

const LIMIT: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let payload = Bytes::copy_from_slice(payload);
    let batch = BatchedRecord {
        compression_type: i32::from(kind),
        publish_time: None,
        batch_size: 1,
        payload: payload.clone(),
    };
    let Ok(compression) = CompressionType::try_from(i32::from(kind)) else {
        assert!(
            matches!(
                records::decode_batch(&batch),
                Err(DecodeBatchError::UnknownCompression(_))
            ),
            "compression {kind} is not a CompressionType"
        );
        return;
    };
    let plain = match records::decompress(&payload, compression, LIMIT) {
        Ok(plain) => plain,
        Err(DecodeBatchError::TooLarge { limit, .. }) => {
            assert_eq!(limit, LIMIT);
            return;
        }
        Err(_) => {
            assert!(records::decode_payload(&payload, compression).is_err());
            return;
        }
    };
    assert!(
        plain.len() as u64 <= LIMIT,
        "decompressed {} bytes, limit {LIMIT}",
        plain.len()
    );
    // Within the limit, the 256 MiB one of decode_batch/decode_payload gives the same bytes.
    let direct = BatchHStreamRecords::decode(plain.clone()).map(|b| b.records);
    let via_batch = records::decode_batch(&batch);
    let via_payload = records::decode_payload(&payload, compression);
    match (&direct, &via_batch, &via_payload) {
        (Ok(a), Ok(b), Ok(c)) => assert!(a == b && b == c, "decoders disagree"),
        (Err(_), Err(DecodeBatchError::Decode(_)), Err(DecodeBatchError::Decode(_))) => {}
        _ => panic!("decoders disagree: {direct:?} / {via_batch:?} / {via_payload:?}"),
    }
    let _ = records::visit_records(&plain, |_, _| {});
});
