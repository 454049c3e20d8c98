//! Writes the hand-made seed corpora, `corpus/<target>/seed-*`, with the crates' own encoders:
//! segments, an index and an `ACKED` file written by the store itself (`Store::open`,
//! `create_shard`, `append`, `roll`), statements from `docs/sql.md`, HStream batches made by
//! `records::encode_batch` (plain, gzip, zstd), and a PostgreSQL session encoded by pgwire.
//!
//! Built with the fuzz targets' flags, so it reuses their build (docs/fuzzing.md, "Seeds"):
//! `cargo +nightly fuzz build --fuzz-dir fuzz --features seeds seeds` from the repository root,
//! then, in `fuzz/`, `$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/seeds corpus`. The
//! store's seeds carry the time they were written, so each run writes different bytes.

use std::io::Write;
use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use pgwire::messages::extendedquery::{Bind, Close, Describe, Execute, Parse, Sync};
use pgwire::messages::simplequery::Query;
use pgwire::messages::startup::{SASLInitialResponse, SASLResponse, SslRequest, Startup};
use pgwire::messages::terminate::Terminate;
use pgwire::messages::Message;
use prost::Message as _;
use streamcell_proto::api::{AppendRequest, BatchedRecord, CompressionType};
use streamcell_proto::records::{encode_batch, raw_record};
use streamcell_store::{LogOptions, NewBatch, Store, SyncPolicy};

fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "corpus".into());
    let out = Path::new(&out);
    store_seeds(out);
    sql_seeds(out);
    proto_seeds(out);
    pgwire_seeds(out);
}

fn write(out: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = out.join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed file");
}

fn batches() -> Vec<BatchedRecord> {
    let plain = encode_batch(&[
        raw_record("", Bytes::from_static(b"hello")),
        raw_record("key-1", vec![0u8, 1, 2, 255]),
    ]);
    let mut json = raw_record(
        "k",
        Bytes::from_static(br#"{"product":"Apple","length":10}"#),
    );
    if let Some(h) = json.header.as_mut() {
        h.flag = 0; // JSON
        h.attributes.insert("attr".into(), "value".into());
    }
    let with_json = encode_batch(&[json, raw_record("", Bytes::new())]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain.payload).expect("gzip");
    let gzip = BatchedRecord {
        compression_type: CompressionType::Gzip as i32,
        payload: Bytes::from(gz.finish().expect("gzip")),
        ..plain.clone()
    };
    let zstd = BatchedRecord {
        compression_type: CompressionType::Zstd as i32,
        payload: Bytes::from(ruzstd::encoding::compress_to_vec(
            &with_json.payload[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        )),
        ..with_json.clone()
    };
    vec![plain, with_json, gzip, zstd]
}

fn store_seeds(out: &Path) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let opts = LogOptions {
        sync: SyncPolicy::Never,
        ..LogOptions::default()
    };
    let store = Store::open(tmp.path(), opts).expect("store");
    store.log.create_shard(1, 0).expect("create shard");
    rt.block_on(async {
        let bs = batches();
        for b in &bs[..3] {
            let batch = NewBatch {
                payload: b.payload.clone(),
                record_count: b.batch_size,
                flags: b.compression_type as u16,
            };
            store.log.append(1, batch).await.expect("append");
        }
        store.log.roll(1).expect("roll");
        for b in &bs[2..] {
            let batch = NewBatch {
                payload: b.payload.clone(),
                record_count: b.batch_size,
                flags: b.compression_type as u16,
            };
            store.log.append(1, batch).await.expect("append");
        }
        store.shutdown().await;
    });
    drop(store);
    let shard = tmp.path().join("shards").join("1");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&shard)
        .expect("shard directory")
        .map(|e| {
            let e = e.expect("entry");
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("shard file"))
        })
        .collect();
    files.sort();
    // store_shard: opts byte, then tag, name (u64 LE), len (u32 LE), bytes per file.
    let mut dir = vec![0u8];
    let mut dir_fixed = vec![0u8];
    for (name, bytes) in &files {
        let (tag, base) = if let Some(b) = name.strip_suffix(".log") {
            write(out, "store_segment", name, bytes);
            (0u8, b.parse::<u64>().expect("segment base"))
        } else if let Some(b) = name.strip_suffix(".idx") {
            (1, b.parse::<u64>().expect("index base"))
        } else if name == "ACKED" {
            write(out, "store_marker", "ACKED", bytes);
            (2, 0)
        } else {
            continue;
        };
        for (v, t) in [(&mut dir, tag), (&mut dir_fixed, tag | 0x80)] {
            v.push(t);
            v.extend_from_slice(&base.to_le_bytes());
            v.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            v.extend_from_slice(bytes);
        }
    }
    write(out, "store_shard", "dir", &dir);
    write(out, "store_shard", "dir-fix", &dir_fixed);
}

fn sql_seeds(out: &Path) {
    // From docs/sql.md.
    let statements = [
        "CREATE STREAM s;",
        "CREATE STREAM s (a INTEGER, b STRING);",
        "CREATE STREAM s WITH (REPLICATE = 3, DURATION = INTERVAL 7 DAY);",
        "CREATE STREAM big AS SELECT product, length FROM visit WHERE length > 10;",
        "CREATE VIEW v AS SELECT product, MAX(length) AS max_len FROM visit GROUP BY product;",
        "SELECT product, MAX(length) AS max_len FROM visit GROUP BY product EMIT CHANGES;",
        "INSERT INTO s (c1, c2) VALUES (\"Apple\", \"Fruit\"), (\"Leek\", \"Vegetable\");",
        "INSERT INTO s VALUES '{\"product\": \"Apple\", \"length\": 10}' :: JSONB;",
        "DROP STREAM s IF EXISTS; SHOW QUERIES; TERMINATE ALL; FLUSH;",
        "EXPLAIN SELECT * FROM a AS x LEFT JOIN b AS y ON x.k = y.k WITHIN (INTERVAL 1 MINUTE);",
        "CREATE PROCEDURE datacell.p() BEGIN INSERT INTO datacell.b SELECT * FROM datacell.a; END;",
        // From docs/datacell.md.
        "set optimizer = 'datacell_pipe';\ncreate table datacell.bsktin (id integer, tag timestamp, payload integer);\ncreate table datacell.bsktout (like datacell.bsktin);\ncall datacell.receptor('datacell.bsktin', 'localhost', 50500);\ncall datacell.query('datacell.pass', 'insert into datacell.bsktout select * from datacell.bsktin;');",
    ];
    for (i, s) in statements.iter().enumerate() {
        if let Err(e) = streamcell_sql::parse(s) {
            panic!("seed {s:?} does not parse: {e}");
        }
        write(out, "sql_parse", &format!("{i:02}"), s.as_bytes());
    }
}

fn proto_seeds(out: &Path) {
    for (i, b) in batches().iter().enumerate() {
        let mut with_kind = vec![b.compression_type as u8];
        with_kind.extend_from_slice(&b.payload);
        write(out, "proto_batch", &format!("{i}"), &with_kind);
        let req = AppendRequest {
            stream_name: "s".into(),
            shard_id: 1,
            records: Some(b.clone()),
        };
        write(out, "proto_append", &format!("{i}"), &req.encode_to_vec());
        if b.compression_type == CompressionType::None as i32 {
            write(out, "proto_records_agree", &format!("{i}"), &b.payload);
        }
    }
}

fn encode(buf: &mut BytesMut, m: &impl Message) {
    m.encode(buf).expect("encoding a frontend message");
}

fn pgwire_seeds(out: &Path) {
    let mut startup = Startup::new();
    startup.parameters.insert("user".into(), "alice".into());
    startup
        .parameters
        .insert("database".into(), "streamcell".into());
    let parse = Parse::new(
        Some("s1".into()),
        "SELECT * FROM s WHERE a = $1".into(),
        vec![20],
    );
    let bind = Bind::new(
        Some("p1".into()),
        Some("s1".into()),
        vec![0],
        vec![Some(Bytes::from_static(b"42")), None],
        vec![0, 1],
    );
    let extended = |buf: &mut BytesMut| {
        encode(buf, &parse);
        encode(buf, &bind);
        encode(buf, &Describe::new(b'P', Some("p1".into())));
        encode(buf, &Execute::new(Some("p1".into()), 0));
        encode(buf, &Sync::new());
        encode(buf, &Close::new(b'S', Some("s1".into())));
    };

    // From the first byte: SSL request, startup, SCRAM, extended and simple queries.
    let mut buf = BytesMut::new();
    buf.put_u8(0);
    encode(&mut buf, &SslRequest::new());
    encode(&mut buf, &startup);
    let first = Bytes::from_static(b"n,,n=alice,r=rOprNGfwEbeRWgbNEkqO");
    encode(
        &mut buf,
        &SASLInitialResponse::new("SCRAM-SHA-256".into(), Some(first)),
    );
    encode(&mut buf, &SASLResponse::new(Bytes::from_static(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")));
    extended(&mut buf);
    encode(&mut buf, &Query::new("SELECT 1; SHOW STREAMS;".into()));
    encode(&mut buf, &Terminate::new());
    write(out, "pgwire_frontend", "session", &buf);

    // After start-up: the extended protocol alone.
    let mut buf = BytesMut::new();
    buf.put_u8(2);
    extended(&mut buf);
    write(out, "pgwire_frontend", "extended", &buf);

    // Before the startup message, protocol 3.0.
    let mut buf = BytesMut::new();
    buf.put_u8(1 | 4);
    encode(&mut buf, &startup);
    encode(&mut buf, &Query::new("SELECT 1".into()));
    write(out, "pgwire_frontend", "startup", &buf);

    // SCRAM: client-first NUL client-final (RFC 7677's example messages).
    for opts in [0u8, 1] {
        let mut s = vec![opts];
        s.extend_from_slice(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO\0c=biws,r=x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        write(out, "pgwire_scram", &format!("{opts}"), &s);
    }
}
