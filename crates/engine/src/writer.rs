//! What the engine asks of the server: creating, deleting and appending to streams go through
//! the same code paths (validation, DDL serialization, key-to-shard mapping) as the gRPC API,
//! so the engine implements none of that twice.

use std::future::Future;
use std::pin::Pin;

use crate::error::Result;
use crate::value::{self, JsonRow};

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
    /// Appends JSON records (key `""`) whose payloads are encoded `Struct`s
    /// ([`value::encode_struct`]) to a stream as one batch, durably, each with the given header
    /// attributes. The batch must fit [`StreamHost::max_batch_bytes`]: [`append_rows`] splits
    /// rows into such batches.
    fn append_structs<'a>(
        &'a self,
        stream: &'a str,
        payloads: Vec<Vec<u8>>,
        attributes: Vec<(String, String)>,
    ) -> HostFuture<'a, ()>;
    /// The largest batch one append may carry, in bytes (the server's `max-record-size`).
    fn max_batch_bytes(&self) -> usize;
}

/// Appends `rows` to `stream` in as few batches as the host's size limit allows, in order,
/// each durably before the next. `attributes(end)` gives the header attributes of the records
/// of a batch that holds `rows[..end]`'s last rows (a persistent query records how many rows it
/// had written once that batch was). A single row larger than the limit is sent alone and
/// refused by the host with its size error.
pub async fn append_rows(
    host: &dyn StreamHost,
    stream: &str,
    rows: &[JsonRow],
    attributes: impl Fn(usize) -> Vec<(String, String)>,
) -> Result<()> {
    // The serialized batch also holds each record's header and framing: count the attributes
    // as they will be at the end (the longest numbers) plus a fixed per-record overhead, and
    // keep an eighth of the limit for the batch's own framing.
    let limit = host.max_batch_bytes();
    let budget = limit - limit / 8;
    let per_record = 16
        + attributes(rows.len())
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum::<usize>();
    let mut chunk: Vec<Vec<u8>> = Vec::new();
    let mut size = 0;
    for (i, row) in rows.iter().enumerate() {
        let payload = value::encode_struct(row);
        let cost = payload.len() + per_record;
        if !chunk.is_empty() && size + cost > budget {
            host.append_structs(stream, std::mem::take(&mut chunk), attributes(i))
                .await?;
            size = 0;
        }
        chunk.push(payload);
        size += cost;
    }
    if !chunk.is_empty() {
        host.append_structs(stream, chunk, attributes(rows.len()))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    /// One recorded append: payload bytes in all, records, attributes.
    type Append = (usize, usize, Vec<(String, String)>);

    /// Records every append.
    struct Recorder {
        limit: usize,
        appends: Mutex<Vec<Append>>,
    }

    impl StreamHost for Recorder {
        fn create_stream(&self, _: StreamSpec) -> HostFuture<'_, ()> {
            Box::pin(async { Ok(()) })
        }
        fn delete_stream<'a>(&'a self, _: &'a str) -> HostFuture<'a, bool> {
            Box::pin(async { Ok(true) })
        }
        fn append_structs<'a>(
            &'a self,
            _: &'a str,
            payloads: Vec<Vec<u8>>,
            attributes: Vec<(String, String)>,
        ) -> HostFuture<'a, ()> {
            let bytes = payloads.iter().map(Vec::len).sum();
            self.appends
                .lock()
                .unwrap()
                .push((bytes, payloads.len(), attributes));
            Box::pin(async { Ok(()) })
        }
        fn max_batch_bytes(&self) -> usize {
            self.limit
        }
    }

    fn rows(n: usize) -> Vec<JsonRow> {
        (0..n)
            .map(|i| match json!({"i": i, "pad": "x".repeat(90)}) {
                serde_json::Value::Object(m) => m,
                _ => unreachable!(),
            })
            .collect()
    }

    fn run(host: &Recorder, rows: &[JsonRow]) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(append_rows(host, "s", rows, |end| {
            vec![("streamcell.rows".to_string(), (1000 + end).to_string())]
        }))
        .unwrap();
    }

    #[test]
    fn rows_are_split_under_the_limit_in_order_with_their_end() {
        let host = Recorder {
            limit: 4096,
            appends: Mutex::new(Vec::new()),
        };
        let rows = rows(200);
        run(&host, &rows);
        let appends = host.appends.lock().unwrap();
        assert!(appends.len() > 1, "200 rows of ~100 B need several batches");
        let mut end = 0;
        for (bytes, n, attributes) in appends.iter() {
            assert!(*bytes < 4096 - 4096 / 8, "{bytes} bytes in one batch");
            end += n;
            assert_eq!(attributes[0].1, (1000 + end).to_string());
        }
        assert_eq!(end, 200);
    }

    #[test]
    fn small_input_is_one_batch_and_empty_input_none() {
        let host = Recorder {
            limit: 1 << 20,
            appends: Mutex::new(Vec::new()),
        };
        run(&host, &rows(3));
        run(&host, &[]);
        let appends = host.appends.lock().unwrap();
        assert_eq!(appends.len(), 1);
        assert_eq!(appends[0].1, 3);
    }
}
