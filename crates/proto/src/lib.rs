//! The HStreamDB v0.6.1 gRPC protocol (`hstream.server.HStreamApi`) for StreamCell.
//!
//! This crate owns the wire contract with the official HStreamDB clients:
//! - `proto/HStream/Server/HStreamApi.proto`, written from the published v0.6.1 descriptors
//!   (all 63 RPCs and 125 messages), compiled at build time by `protox` and `tonic-prost-build`
//!   into prost messages (every `bytes` field is [`bytes::Bytes`]) plus a tonic client and server;
//! - [`records`], hand-written helpers for the batch encoding that clients put inside
//!   `AppendRequest.records` (`BatchedRecord` wrapping a serialized `BatchHStreamRecords`);
//! - [`wire`], a borrowing protobuf wire reader for the paths that must not allocate per record.
//!
//! Generated items live under [`hstream::server`] (mirroring the protobuf package), also
//! reachable as [`api`]: e.g. `streamcell_proto::api::h_stream_api_server::HStreamApiServer`.

/// Generated code, one module per protobuf package.
pub mod hstream {
    /// The `hstream.server` protobuf package: messages, enums, `h_stream_api_client` and
    /// `h_stream_api_server`.
    #[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
    pub mod server {
        include!(concat!(env!("OUT_DIR"), "/hstream.server.rs"));
    }
}

/// StreamCell's own SQL service (`proto/streamcell/sql.proto`), what `streamcell sql` speaks.
pub mod streamcell {
    /// The `streamcell.sql` protobuf package.
    #[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
    pub mod sql {
        include!(concat!(env!("OUT_DIR"), "/streamcell.sql.rs"));
    }
}

pub use hstream::server as api;
pub use hstream::server::h_stream_api_client::HStreamApiClient;
pub use hstream::server::h_stream_api_server::{HStreamApi, HStreamApiServer};
pub use streamcell::sql as sqlapi;

pub mod codec;
pub mod records;
pub mod wire;
