//! Feeds arbitrary bytes to the gRPC decoding of an `AppendRequest` (`streamcell-proto`): the
//! generated server's `StrictCodec` decoder, driven by tonic's `Streaming` exactly as a request
//! body is (the input is the message; it is put in a gRPC frame, uncompressed, first), then the
//! HStream batch decoding of the request's `BatchedRecord` (`records::decompress` with a 1 MiB
//! limit, `records::decode_batch`, `records::visit_records`).
//!
//! Asserts: nothing panics; a body that is not a valid `AppendRequest` is answered
//! INVALID_ARGUMENT, never INTERNAL (the point of `StrictCodec`); a decoded request is what
//! prost's own `AppendRequest::decode` gives for the same bytes.
#![no_main]

use bytes::{BufMut, BytesMut};
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use streamcell_fuzz::poll_ready;
use streamcell_proto::api::{AppendRequest, AppendResponse, CompressionType};
use streamcell_proto::codec::StrictCodec;
use streamcell_proto::records;
use tonic::codec::{Codec, Streaming};
use tonic::Code;

fuzz_target!(|data: &[u8]| {
    let mut body = BytesMut::with_capacity(5 + data.len());
    body.put_u8(0);
    body.put_u32(data.len() as u32);
    body.put_slice(data);
    let mut codec = StrictCodec::<AppendResponse, AppendRequest>::default();
    let mut stream = Streaming::new_request(codec.decoder(), Full::new(body.freeze()), None, None);
    let got = poll_ready(stream.message(), 16).expect("an in-memory body is never pending");
    let direct = AppendRequest::decode(data);
    let request = match got {
        Ok(Some(r)) => r,
        Ok(None) => panic!("a framed message decoded to no message"),
        Err(status) => {
            assert_ne!(
                status.code(),
                Code::Internal,
                "a bad body answered INTERNAL: {status:?}"
            );
            assert!(
                direct.is_err(),
                "tonic refused what prost decodes: {status:?}"
            );
            return;
        }
    };
    assert_eq!(
        direct.ok().as_ref(),
        Some(&request),
        "tonic and prost decode differently"
    );
    let Some(batch) = request.records else {
        return;
    };
    let Ok(compression) = CompressionType::try_from(batch.compression_type) else {
        let _ = records::decode_batch(&batch);
        return;
    };
    // decode_batch decompresses up to 256 MiB: only once the payload is known to be small.
    if let Ok(plain) = records::decompress(&batch.payload, compression, 1 << 20) {
        let _ = records::decode_batch(&batch);
        let _ = records::visit_records(&plain, |_, _| {});
    }
});
