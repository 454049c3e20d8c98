//! Rows written to streams: a persistent query's output, an `INSERT`, a DataCell emitter
//! into a stream. Rows become JSON records (key `""`, payload an encoded `Struct`) appended
//! through the stream service in as few batches as `--max-record-size` allows, in order, each
//! durable before the next; the service stores the batches it is handed without decoding
//! them again.

use streamcell_proto::api::{self, h_stream_record_header::Flag};
use streamcell_service::Service;

use crate::error::Result;
use crate::value::{self, JsonRow};

/// One batch to append: its payloads and the header attributes of its records.
type Chunk = (Vec<Vec<u8>>, Vec<(String, String)>);

/// Splits `rows` into batches under `limit` bytes, in order. `attributes(end)` gives the
/// header attributes of the records of a batch that ends with `rows[end - 1]` (a persistent
/// query records how many rows it had written once that batch was). A single row larger than
/// the limit is a batch of its own (which the service refuses with its size error).
fn chunks(
    rows: &[JsonRow],
    limit: usize,
    attributes: impl Fn(usize) -> Vec<(String, String)>,
) -> Vec<Chunk> {
    // The serialized batch also holds each record's header and framing: count the attributes
    // as they will be at the end (the longest numbers) plus a fixed per-record overhead, and
    // keep an eighth of the limit for the batch's own framing.
    let budget = limit - limit / 8;
    let per_record = 16
        + attributes(rows.len())
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum::<usize>();
    let mut out = Vec::new();
    let mut chunk: Vec<Vec<u8>> = Vec::new();
    let mut size = 0;
    for (i, row) in rows.iter().enumerate() {
        let payload = value::encode_struct(row);
        let cost = payload.len() + per_record;
        if !chunk.is_empty() && size + cost > budget {
            out.push((std::mem::take(&mut chunk), attributes(i)));
            size = 0;
        }
        chunk.push(payload);
        size += cost;
    }
    if !chunk.is_empty() {
        out.push((chunk, attributes(rows.len())));
    }
    out
}

/// Appends `rows` to `stream` as JSON records in as few batches as the service's size limit
/// allows, in order, each durably before the next; see [`chunks`] for `attributes`.
pub(crate) async fn append_rows(
    service: &Service,
    stream: &str,
    rows: &[JsonRow],
    attributes: impl Fn(usize) -> Vec<(String, String)>,
) -> Result<()> {
    for (payloads, attributes) in chunks(rows, service.max_record_size(), attributes) {
        let records: Vec<api::HStreamRecord> = payloads
            .into_iter()
            .map(|payload| api::HStreamRecord {
                header: Some(api::HStreamRecordHeader {
                    flag: Flag::Json as i32,
                    attributes: attributes.iter().cloned().collect(),
                    key: String::new(),
                }),
                payload: payload.into(),
            })
            .collect();
        service.append_records(stream, "", &records).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rows(n: usize) -> Vec<JsonRow> {
        (0..n)
            .map(|i| match json!({"i": i, "pad": "x".repeat(90)}) {
                serde_json::Value::Object(m) => m,
                _ => unreachable!(),
            })
            .collect()
    }

    fn split(rows: &[JsonRow], limit: usize) -> Vec<Chunk> {
        chunks(rows, limit, |end| {
            vec![("streamcell.rows".to_string(), (1000 + end).to_string())]
        })
    }

    #[test]
    fn rows_are_split_under_the_limit_in_order_with_their_end() {
        let rows = rows(200);
        let out = split(&rows, 4096);
        assert!(out.len() > 1, "200 rows of ~100 B need several batches");
        let mut end = 0;
        for (payloads, attributes) in &out {
            let bytes: usize = payloads.iter().map(Vec::len).sum();
            assert!(bytes < 4096 - 4096 / 8, "{bytes} bytes in one batch");
            for p in payloads {
                assert_eq!(*p, value::encode_struct(&rows[end]));
                end += 1;
            }
            assert_eq!(attributes[0].1, (1000 + end).to_string());
        }
        assert_eq!(end, 200);
    }

    #[test]
    fn small_input_is_one_batch_and_empty_input_none() {
        assert_eq!(split(&rows(3), 1 << 20).len(), 1);
        assert_eq!(split(&rows(3), 1 << 20)[0].0.len(), 3);
        assert!(split(&[], 1 << 20).is_empty());
    }

    #[test]
    fn a_row_over_the_limit_is_a_batch_of_its_own() {
        let mut big = rows(3);
        big[1].insert("pad".into(), json!("y".repeat(10_000)));
        let out = split(&big, 4096);
        let sizes: Vec<usize> = out.iter().map(|(p, _)| p.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
    }
}
