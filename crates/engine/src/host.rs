//! What the engine asks of the server: creating, deleting and appending to streams go through
//! the same code paths (validation, DDL serialization, key-to-shard mapping) as the gRPC API,
//! so the engine implements none of that twice.

use std::future::Future;
use std::pin::Pin;

use crate::error::Result;
use crate::value::JsonRow;

/// A boxed, sendable future.
pub type HostFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// A new stream.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Name.
    pub name: String,
    /// Replication factor.
    pub replication_factor: u32,
    /// Retention in seconds (0 = forever).
    pub backlog_secs: u32,
    /// Number of shards.
    pub shard_count: u32,
}

/// Stream operations the engine needs, implemented by the server.
pub trait StreamHost: Send + Sync {
    /// Creates a stream (`AlreadyExists` if it exists).
    fn create_stream(&self, spec: StreamSpec) -> HostFuture<'_, ()>;
    /// Deletes a stream; `Ok(false)` if it did not exist.
    fn delete_stream<'a>(&'a self, name: &'a str) -> HostFuture<'a, bool>;
    /// Appends JSON records (key `""`) to a stream as one batch, durably, each with the given
    /// header attributes.
    fn append_json<'a>(
        &'a self,
        stream: &'a str,
        rows: Vec<JsonRow>,
        attributes: Vec<(String, String)>,
    ) -> HostFuture<'a, ()>;
}
