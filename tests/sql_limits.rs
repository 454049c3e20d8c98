//! Statements too deep to run safely, against the real server: refused with a clear error
//! before planning, and a saved query that can no longer start (saved by a server without the
//! limit) is marked FAILED at start instead of crashing the server at every restart.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

mod common;

use common::Server;
use streamcell_store::ObjectCatalog;

fn chain(op: &str, n: usize, term: &str) -> String {
    vec![term; n].join(&format!(" {op} "))
}

#[tokio::test]
async fn deep_expressions_are_refused_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]).await;
    server.sql_ok("CREATE STREAM s;").await;
    for text in [
        format!("SELECT {} FROM s;", chain("+", 1_200, "x")),
        format!("SELECT * FROM s WHERE {};", chain("OR", 20_000, "x = 1")),
        format!(
            "CREATE VIEW v AS SELECT k, SUM({}) AS t FROM s GROUP BY k;",
            chain("+", 2_000, "x")
        ),
    ] {
        let e = server.sql(&text).await.expect_err("too deep");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("too complex"), "{}", e.message());
    }
    // Within the limit, a view evaluates it on its query thread.
    server
        .sql_ok(&format!(
            "CREATE VIEW v AS SELECT k, SUM({}) AS t FROM s GROUP BY k;",
            chain("+", 900, "x")
        ))
        .await;
    server.sql_ok("INSERT INTO s (k, x) VALUES ('a', 1);").await;
    server.sql_ok("FLUSH;").await;
    assert_eq!(
        server.sql_ok("SELECT t FROM v;").await,
        vec![r#"{"t": 900.0}"#]
    );
}

#[tokio::test]
async fn a_saved_query_that_cannot_start_is_failed_and_the_server_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[]).await;
    server.sql_ok("CREATE STREAM s;").await;
    server.sql_ok("INSERT INTO s (k, x) VALUES ('a', 1);").await;
    server
        .sql_ok("CREATE VIEW v AS SELECT k, SUM(x + x) AS t FROM s GROUP BY k;")
        .await;
    server.sql_ok("FLUSH;").await;
    assert!(server.stop(), "graceful stop");

    // What a data directory written before the depth limit can hold: a view whose expression
    // (8,000 levels) crashed the server at its first record, and again at every start.
    {
        let catalog =
            streamcell_store::RedbCatalog::open(&data.join("catalog.redb")).expect("catalog opens");
        let (name, doc) = catalog
            .list_objects("sql.query")
            .expect("list")
            .into_iter()
            .find(|(n, _)| n == "v")
            .expect("the view is saved");
        let deep = doc.replace("x + x", &chain("+", 8_000, "x"));
        assert_ne!(deep, doc);
        catalog
            .put_object("sql.query", &name, &deep, false)
            .expect("rewritten");
    }

    server.restart().await;
    let shown = server.sql_ok("SHOW QUERIES;").await.join("\n");
    assert!(shown.contains("FAILED"), "{shown}");
    assert!(shown.contains("too complex"), "{shown}");
    // Everything else is served, and new records do not bring the server down.
    server.sql_ok("INSERT INTO s (k, x) VALUES ('a', 2);").await;
    server
        .sql_ok("CREATE VIEW w AS SELECT k, COUNT(*) AS n FROM s GROUP BY k;")
        .await;
    server.sql_ok("FLUSH;").await;
    assert_eq!(server.sql_ok("SELECT n FROM w;").await, vec![r#"{"n": 2}"#]);
    server.restart().await;
    assert_eq!(server.sql_ok("SELECT n FROM w;").await, vec![r#"{"n": 2}"#]);
}
