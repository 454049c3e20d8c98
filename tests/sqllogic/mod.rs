//! The sqllogictest runner both doors share: which `slt/*.slt` files run, one fresh server
//! (and data directory) per file, every record run even after a failure, and one report of
//! all failures with the end of the server's log. A door supplies only its connection
//! ([`Door`]): `sqllogic_grpc.rs` speaks `StreamCellSql/Execute`, `sqllogic_pg.rs` the
//! PostgreSQL protocol. Both render results and errors the same way, so one file of
//! expectations checks that both doors give the same answers.
//!
//! Values are sqllogictest strings: `NULL`, numbers as JSON prints them (a FLOAT 10 is
//! `10.0`, a count `10`), strings raw (`(empty)` for the empty string), booleans
//! `true`/`false`, timestamps `2024-01-01T10:00:00`, arrays and objects as JSON text. A failed
//! statement's error is `<gRPC code>: <message>` (`NotFound: stream "x" does not exist`),
//! which `statement error <regex>` matches; over PostgreSQL the code is the gRPC code of the
//! same error kind, read back from the SQLSTATE (see `sqllogic_pg.rs`).
//!
//! `zz_known_failures.slt` keeps the correct expectations of cases the engine gets wrong
//! today; it runs only with `STREAMCELL_SLT_ALL=1`. `STREAMCELL_SLT=<substring>` runs only the
//! files whose name contains it.
#![allow(clippy::expect_used, clippy::panic, unreachable_pub)] // a test harness

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Record};

use crate::common::Server;

/// A statement that has not answered by then is reported as a hang (`FLUSH` itself gives up
/// after 60 s).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(90);
/// The file of known engine bugs, run only with `STREAMCELL_SLT_ALL=1`.
const KNOWN_FAILURES: &str = "zz_known_failures.slt";

/// What a statement failed with: its gRPC code and message, or a fault of the harness.
#[derive(Debug)]
pub struct SqlError(pub String);

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlError {}

/// One door's connection to a running server.
pub trait Door: Sized + Send {
    /// The engine name that `onlyif`/`skipif` records name.
    const NAME: &'static str;
    /// Connects to `server` through this door.
    fn connect(server: &Server) -> impl Future<Output = Result<Self, SqlError>> + Send;
    /// Runs one record's SQL: its rows (rendered with [`render`]) or its error.
    fn execute(
        &mut self,
        sql: &str,
    ) -> impl Future<Output = Result<DBOutput<DefaultColumnType>, SqlError>> + Send;
}

/// A door's connection as sqllogictest drives it, every statement bounded by
/// [`STATEMENT_TIMEOUT`].
pub struct Conn<D>(D);

#[async_trait::async_trait]
impl<D: Door> AsyncDB for Conn<D> {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        match tokio::time::timeout(STATEMENT_TIMEOUT, self.0.execute(sql)).await {
            Ok(r) => r,
            Err(_) => Err(SqlError(format!(
                "no answer within {}s (the statement hangs)",
                STATEMENT_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        D::NAME
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// A value as sqllogictest text.
pub fn render(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.is_empty() => "(empty)".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The sqllogictest column type of a value.
pub fn column_type(v: &Value) -> Option<DefaultColumnType> {
    match v {
        Value::Null => None,
        Value::Number(n) if n.is_f64() => Some(DefaultColumnType::FloatingPoint),
        Value::Number(_) => Some(DefaultColumnType::Integer),
        Value::String(_) => Some(DefaultColumnType::Text),
        _ => Some(DefaultColumnType::Any),
    }
}

/// The `.slt` files to run, in name order.
fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("slt");
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

/// Runs one file on a fresh server through door `D`; returns every failed record's report
/// (the run goes on after a failure, so one run shows them all).
async fn run_file<D: Door>(path: PathBuf) -> Vec<String> {
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
    let mut runner =
        sqllogictest::Runner::new(move || async move { D::connect(server).await.map(Conn) });
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

/// Runs every selected file through door `D` and fails with all the failures' reports.
pub async fn run_all<D: Door>() {
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt file selected");
    let mut failures = Vec::new();
    for path in &files {
        eprintln!("running {}", path.display());
        failures.extend(run_file::<D>(path.clone()).await);
    }
    assert!(
        failures.is_empty(),
        "{} sqllogictest failure(s):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}
