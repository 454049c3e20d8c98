//! sqllogictest suite: every `tests/slt/*.slt` file runs, in name order, against the real
//! `streamcell` binary, one fresh server (and data directory) per file, through the
//! `StreamCellSql/Execute` gRPC call that `streamcell sql` speaks. The run goes on after a
//! failed record, and the test fails with every failure's report and the server's log.
//!
//! Values are rendered as sqllogictest strings: `NULL`, numbers as JSON prints them (a FLOAT
//! 10 is `10.0`, a count `10`), strings raw (`(empty)` for the empty string), booleans
//! `true`/`false`, arrays and objects as JSON text. A failed statement's error is
//! `<gRPC code>: <message>` (`NotFound: stream "x" does not exist`), which `statement error
//! <regex>` matches.
//!
//! `zz_known_failures.slt` keeps the correct expectations of cases the engine gets wrong
//! today; it runs only with `STREAMCELL_SLT_ALL=1`. `STREAMCELL_SLT=<substring>` runs only the
//! files whose name contains it.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

mod common;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Server;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Record};
use streamcell_proto::sqlapi::execute_response::Item;
use streamcell_proto::sqlapi::stream_cell_sql_client::StreamCellSqlClient;
use streamcell_proto::sqlapi::ExecuteRequest;
use tonic::transport::Channel;

/// A statement that has not answered by then is reported as a hang (`FLUSH` itself gives up
/// after 60 s).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(90);
/// The file of known engine bugs, run only with `STREAMCELL_SLT_ALL=1`.
const KNOWN_FAILURES: &str = "zz_known_failures.slt";

/// What a statement failed with: its gRPC code and message, or a fault of the harness.
#[derive(Debug)]
struct SqlError(String);

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlError {}

impl From<tonic::Status> for SqlError {
    fn from(s: tonic::Status) -> Self {
        SqlError(format!("{:?}: {}", s.code(), s.message()))
    }
}

/// One row as the server sent it: `(column, value)` in order, duplicate names kept.
struct OrderedRow(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for OrderedRow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedRow;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedRow, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(OrderedRow(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A value as sqllogictest text.
fn render(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.is_empty() => "(empty)".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn column_type(v: &Value) -> Option<DefaultColumnType> {
    match v {
        Value::Null => None,
        Value::Number(n) if n.is_f64() => Some(DefaultColumnType::FloatingPoint),
        Value::Number(_) => Some(DefaultColumnType::Integer),
        Value::String(_) => Some(DefaultColumnType::Text),
        _ => Some(DefaultColumnType::Any),
    }
}

/// The rows of one statement that returned rows.
struct RowSet {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

/// A connection to the server's SQL service.
struct StreamCell {
    client: StreamCellSqlClient<Channel>,
}

impl StreamCell {
    async fn execute(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let mut stream = self
            .client
            .execute(ExecuteRequest { sql: sql.into() })
            .await?
            .into_inner();
        // The output of the statement being received, and of the last one finished.
        let mut current: Option<RowSet> = None;
        let mut last: Option<RowSet> = None;
        let mut finished = 0usize;
        while let Some(msg) = stream.message().await? {
            match msg.item {
                Some(Item::Columns(c)) => {
                    current = Some(RowSet {
                        columns: c.names,
                        rows: Vec::new(),
                    })
                }
                Some(Item::Rows(r)) => {
                    let set = current.as_mut().ok_or_else(|| {
                        SqlError("protocol: rows before their columns".to_string())
                    })?;
                    for json in r.json {
                        let row: OrderedRow = serde_json::from_str(&json)
                            .map_err(|e| SqlError(format!("protocol: row {json}: {e}")))?;
                        let names: Vec<&str> = row.0.iter().map(|(k, _)| k.as_str()).collect();
                        if names != set.columns {
                            return Err(SqlError(format!(
                                "protocol: row {json} does not have the columns {:?}",
                                set.columns
                            )));
                        }
                        set.rows.push(row.0.into_iter().map(|(_, v)| v).collect());
                    }
                }
                Some(Item::Done(_)) => {
                    last = current.take();
                    finished += 1;
                }
                None => {}
            }
        }
        if current.is_some() || finished == 0 {
            return Err(SqlError(
                "protocol: the call ended before its statement was done".to_string(),
            ));
        }
        Ok(match last {
            None => DBOutput::StatementComplete(0),
            Some(set) => {
                let types = (0..set.columns.len())
                    .map(|i| {
                        set.rows
                            .iter()
                            .find_map(|r| column_type(&r[i]))
                            .unwrap_or(DefaultColumnType::Any)
                    })
                    .collect();
                let rows = set
                    .rows
                    .iter()
                    .map(|r| r.iter().map(render).collect())
                    .collect();
                DBOutput::Rows { types, rows }
            }
        })
    }
}

#[async_trait::async_trait]
impl AsyncDB for StreamCell {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        match tokio::time::timeout(STATEMENT_TIMEOUT, self.execute(sql)).await {
            Ok(r) => r,
            Err(_) => Err(SqlError(format!(
                "no answer within {}s (the statement hangs)",
                STATEMENT_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "streamcell"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// The `.slt` files to run, in name order.
fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let all = std::env::var("STREAMCELL_SLT_ALL").is_ok_and(|v| v == "1");
    let only = std::env::var("STREAMCELL_SLT").unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            (all || name != KNOWN_FAILURES) && name.contains(&only)
        })
        .collect();
    files.sort();
    files
}

/// Runs one file on a fresh server; returns every failed record's report (the run goes on
/// after a failure, so one run shows them all).
async fn run_file(path: PathBuf) -> Vec<String> {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let records = match sqllogictest::parse_file::<DefaultColumnType>(&path) {
        Ok(r) => r,
        Err(e) => return vec![format!("{name}: does not parse: {e}")],
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let server = &server;
    let mut runner = sqllogictest::Runner::new(move || async move {
        Ok::<_, SqlError>(StreamCell {
            client: server.sql_client().await,
        })
    });
    let mut failures = Vec::new();
    for record in records {
        if let Record::Halt { .. } = record {
            break;
        }
        if let Err(e) = runner.run_async(record).await {
            failures.push(format!("{name}: {}", e.display(false)));
        }
    }
    runner.shutdown_async().await;
    if let Some(last) = failures.last_mut() {
        let log = server.log_text();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(20)..];
        last.push_str(&format!(
            "{name}: the server's log ends with:\n{}\n",
            tail.join("\n")
        ));
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt file selected");
    let mut failures = Vec::new();
    for path in &files {
        eprintln!("running {}", path.display());
        failures.extend(run_file(path.clone()).await);
    }
    assert!(
        failures.is_empty(),
        "{} sqllogictest failure(s):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}
