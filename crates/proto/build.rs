//! Compiles `proto/HStream/Server/HStreamApi.proto` (the HStreamDB v0.6.1 wire API) and
//! `proto/streamcell/sql.proto` (StreamCell's own SQL service) into Rust.
//!
//! The `.proto` is parsed by `protox`, a pure-Rust protobuf compiler, so no system `protoc` is
//! needed anywhere. `tonic-prost-build` then turns the descriptor set into prost messages plus a
//! tonic client and server for `hstream.server.HStreamApi`, written to `$OUT_DIR/hstream.server.rs`
//! (and `streamcell.sql.rs`).

use std::path::Path;

const PROTO_ROOT: &str = "proto";
const PROTO_FILE: &str = "proto/HStream/Server/HStreamApi.proto";
const SQL_PROTO_FILE: &str = "proto/streamcell/sql.proto";

fn main() -> Result<(), String> {
    println!("cargo:rerun-if-changed={PROTO_FILE}");
    println!("cargo:rerun-if-changed={SQL_PROTO_FILE}");
    println!("cargo:rerun-if-changed=build.rs");

    let protos = [Path::new(PROTO_FILE), Path::new(SQL_PROTO_FILE)];
    // protox resolves google/protobuf/*.proto itself; include_imports(true) is set by compile().
    let fds = protox::compile(protos, [PROTO_ROOT])
        .map_err(|e| format!("protox failed to compile {PROTO_FILE}: {e:?}"))?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Every `bytes` field (record payloads) becomes `bytes::Bytes`: zero-copy slicing from
        // the decode buffer instead of a `Vec<u8>` copy per record.
        .bytes(".")
        // Bad request bodies are INVALID_ARGUMENT, not INTERNAL (src/codec.rs).
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(fds)
        .map_err(|e| format!("tonic-prost-build failed to generate code for {PROTO_FILE}: {e}"))
}
