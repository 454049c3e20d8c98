//! The PostgreSQL wire protocol with a real Rust driver, tokio-postgres: prepared
//! statements with typed parameters (binary), typed binary results, simple queries, errors
//! with SQLSTATEs, and a push query streamed row by row and cancelled.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

mod common;

use std::time::Duration;

use common::Server;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

async fn connect(server: &Server) -> Client {
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=streamcell dbname=streamcell connect_timeout=10",
            server.pg_port
        ),
        NoTls,
    )
    .await
    .expect("connect over the PostgreSQL protocol");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

#[tokio::test]
async fn prepared_statements_with_typed_parameters_and_results() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let client = connect(&server).await;
    client
        .batch_execute(
            "CREATE STREAM readings (robot STRING, n INTEGER, temp DOUBLE, ok BOOLEAN, at TIMESTAMP)",
        )
        .await
        .unwrap();
    let insert = client
        .prepare("INSERT INTO readings (robot, n, temp, ok, at) VALUES ($1, $2, $3, $4, $5)")
        .await
        .unwrap();
    // The server typed each parameter from the stream's declared columns.
    let types: Vec<String> = insert
        .params()
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    assert_eq!(types, ["text", "int8", "float8", "bool", "timestamp"]);
    let t0 = chrono::NaiveDate::from_ymd_opt(2026, 11, 22)
        .unwrap()
        .and_hms_milli_opt(10, 0, 0, 250)
        .unwrap();
    for i in 0..5i64 {
        let n = client
            .execute(
                &insert,
                &[
                    &format!("r{}", i % 2),
                    &i,
                    &(i as f64 * 1.5),
                    &(i % 2 == 0),
                    &(t0 + chrono::Duration::seconds(i)),
                ],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    // A pull query with a parameter whose type the planner infers from the comparison.
    let rows = client
        .query(
            "SELECT robot, n, temp, ok, at FROM readings WHERE n >= $1 ORDER BY n",
            &[&3i64],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let robot: &str = rows[0].get(0);
    let n: i64 = rows[0].get(1);
    let temp: f64 = rows[0].get(2);
    let ok: bool = rows[0].get(3);
    let at: chrono::NaiveDateTime = rows[0].get(4);
    assert_eq!((robot, n, temp, ok), ("r1", 3, 4.5, false));
    assert_eq!(at, t0 + chrono::Duration::seconds(3));
    // Aggregates come back with their own types.
    let row = client
        .query_one(
            "SELECT count(*) AS c, avg(temp) AS a FROM readings WHERE robot = $1",
            &[&"r0"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>("c"), 3);
    assert!((row.get::<_, f64>("a") - 3.0).abs() < 1e-9);
    // A NULL parameter.
    let none: Option<i64> = None;
    let rows = client
        .query("SELECT robot FROM readings WHERE n = $1", &[&none])
        .await
        .unwrap();
    assert!(rows.is_empty());
}

#[tokio::test]
async fn errors_carry_sqlstates_and_the_connection_survives() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let client = connect(&server).await;
    let e = client.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::SYNTAX_ERROR), "{e:?}");
    let e = client
        .query("SELECT * FROM no_such_stream", &[])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_TABLE), "{e:?}");
    let e = client.simple_query("COPY x FROM STDIN").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e:?}");
    let e = client.prepare("SELECT 1; SELECT 2").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::SYNTAX_ERROR), "{e:?}");
    let rows = client
        .simple_query("SELECT 1 AS one; SHOW server_version")
        .await
        .unwrap();
    let values: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["1", "16.6"]);
}

#[tokio::test]
async fn push_query_rows_arrive_as_they_are_appended_and_cancel_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    let client = connect(&server).await;
    client
        .batch_execute("CREATE STREAM live (robot STRING, temp DOUBLE)")
        .await
        .unwrap();
    let cancel = client.cancel_token();
    let stream = client
        .query_raw(
            "SELECT robot, temp * 2 AS t2 FROM live WHERE temp > 0 EMIT CHANGES",
            std::iter::empty::<i64>(),
        )
        .await
        .unwrap();
    let writer = connect(&server).await;
    let mut stream = std::pin::pin!(stream);
    use futures::StreamExt as _;
    for i in 1..=3 {
        writer
            .execute(
                "INSERT INTO live (robot, temp) VALUES ($1, $2)",
                &[&format!("r{i}"), &(i as f64)],
            )
            .await
            .unwrap();
        let row = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("a pushed row")
            .expect("a row")
            .expect("no error");
        assert_eq!(row.get::<_, &str>(0), format!("r{i}"));
        assert_eq!(row.get::<_, f64>(1), i as f64 * 2.0);
    }
    cancel.cancel_query(NoTls).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("the stream ends after the cancel");
    let e = end.expect("an error item").unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e:?}");
    // The connection runs the next statement.
    let row = client
        .query_one("SELECT count(*) FROM live", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 3);
}
