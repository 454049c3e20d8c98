//! End-to-end SQL against the real server: the seed's CLI session verbatim, push queries that
//! follow live appends, persistent queries, views, `FLUSH`, and clear errors.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

mod common;

use common::Server;

/// The statements of the seed's "Cliente CLI SQL" session, verbatim (the streams exist first,
/// as in HStreamDB).
const SEED_INSERTS: &str = r#"INSERT INTO info (product, category) VALUES ("Apple", "Fruit");
INSERT INTO visit (product, user, length) VALUES ("Apple", "Alice", 10);
INSERT INTO visit (product, user, length) VALUES ("Apple", "Bob", 20);
INSERT INTO visit (product, user, length) VALUES ("Apple", "Caleb", 10);"#;

#[tokio::test]
async fn the_seed_session_works_verbatim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]).await;
    server
        .sql_ok("CREATE STREAM info; CREATE STREAM visit;")
        .await;
    let out = server.sql_ok(SEED_INSERTS).await;
    assert_eq!(out, vec!["Done."; 4]);

    let rows = server
        .push_rows("SELECT * FROM info EMIT CHANGES;", 1, 20)
        .await;
    assert_eq!(rows, vec![r#"{"product": "Apple", "category": "Fruit"}"#]);

    let mut q = server
        .push("SELECT product, MAX(length) AS max_len FROM visit GROUP BY product EMIT CHANGES;")
        .await;
    assert_eq!(
        q.next_rows(3, 20).await,
        vec![
            r#"{"product": "Apple", "max_len": 10.0}"#,
            r#"{"product": "Apple", "max_len": 20.0}"#,
            r#"{"product": "Apple", "max_len": 20.0}"#,
        ]
    );
    // It keeps following the stream.
    server
        .sql_ok(r#"INSERT INTO visit (product, user, length) VALUES ("Apple", "Dan", 35);"#)
        .await;
    assert_eq!(
        q.next_rows(1, 20).await,
        vec![r#"{"product": "Apple", "max_len": 35.0}"#]
    );
    // Nothing more than one row per record.
    assert!(q.next_rows(1, 1).await.is_empty());
}

#[tokio::test]
async fn views_and_persistent_queries_survive_kill_9_without_double_counting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]).await;
    server.sql_ok("CREATE STREAM visit;").await;
    // Created before any record: binds when the first one arrives.
    server
        .sql_ok(
            "CREATE VIEW per_product AS SELECT product, COUNT(*) AS visits, SUM(length) AS total \
             FROM visit GROUP BY product;",
        )
        .await;
    server
        .sql_ok("CREATE STREAM long_visits AS SELECT user, length FROM visit WHERE length > 15;")
        .await;
    let mut inserts = String::new();
    for i in 0..30 {
        let product = ["Apple", "Pear", "Fig"][i % 3];
        inserts.push_str(&format!(
            "INSERT INTO visit (product, user, length) VALUES ('{product}', 'u{i}', {});\n",
            i
        ));
    }
    server.sql_ok(&inserts).await;
    server.sql_ok("FLUSH;").await;
    let expect = |rows: &[String], n: [u32; 3]| {
        let mut sorted = rows.to_vec();
        sorted.sort();
        // lengths: Apple 0,3,…,27 (sum 135); Pear 1,4,…,28 (145); Fig 2,5,…,29 (155).
        let want = vec![
            format!(
                r#"{{"product": "Apple", "visits": {}, "total": {}.0}}"#,
                n[0],
                135 * n[0] / 10
            ),
            format!(
                r#"{{"product": "Fig", "visits": {}, "total": {}.0}}"#,
                n[2],
                155 * n[2] / 10
            ),
            format!(
                r#"{{"product": "Pear", "visits": {}, "total": {}.0}}"#,
                n[1],
                145 * n[1] / 10
            ),
        ];
        assert_eq!(sorted, want);
    };
    let rows = server.sql_ok("SELECT * FROM per_product;").await;
    expect(&rows, [10, 10, 10]);
    let long = server
        .sql_ok("SELECT COUNT(*) AS n FROM long_visits;")
        .await;
    assert_eq!(long, vec![r#"{"n": 14}"#]);

    server.kill9();
    server.restart().await;
    // The same records once more: every count doubles exactly.
    server.sql_ok(&inserts).await;
    server.sql_ok("FLUSH;").await;
    let rows = server.sql_ok("SELECT * FROM per_product;").await;
    expect(&rows, [20, 20, 20]);
    let long = server
        .sql_ok("SELECT COUNT(*) AS n FROM long_visits;")
        .await;
    assert_eq!(long, vec![r#"{"n": 28}"#]);
    let shown = server.sql_ok("SHOW QUERIES;").await.join("\n");
    assert!(shown.contains(r#""query_id": "long_visits""#), "{shown}");
    assert!(shown.contains("RUNNING"), "{shown}");
}

#[tokio::test]
async fn bad_statements_get_clear_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]).await;
    server.sql_ok("CREATE STREAM s;").await;
    server
        .sql_ok(r#"INSERT INTO s VALUES '{"a": 1, "b": "x"}';"#)
        .await;

    let e = server.sql("SELEC * FROM s;").await.expect_err("syntax");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("line 1, column 1"), "{}", e.message());

    let e = server
        .sql("SELECT nope FROM s EMIT CHANGES;")
        .await
        .expect_err("unknown column");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("nope"), "{}", e.message());

    let e = server
        .sql("SELECT * FROM missing;")
        .await
        .expect_err("missing");
    assert_eq!(e.code(), tonic::Code::NotFound);

    let e = server
        .sql("INSERT INTO missing (a) VALUES (1);")
        .await
        .expect_err("missing");
    assert_eq!(e.code(), tonic::Code::NotFound);

    let e = server.sql("SELECT a / 0 FROM s;").await;
    // Float division by zero is infinity in SQL engines on doubles; integer division errors.
    assert!(e.is_ok() || e.as_ref().err().map(|e| e.code()) == Some(tonic::Code::InvalidArgument));

    let e = server
        .sql("CREATE VIEW v AS SELECT a FROM s;")
        .await
        .expect_err("a view must aggregate");
    assert!(e.message().contains("must aggregate"), "{}", e.message());
    let shown = server.sql_ok("SHOW VIEWS;").await;
    assert!(shown.is_empty(), "{shown:?}");

    // Still serving.
    let rows = server.sql_ok("SELECT a, b FROM s;").await;
    assert_eq!(rows, vec![r#"{"a": 1.0, "b": "x"}"#]);
}

#[tokio::test]
async fn hstream_function_names_work_in_pull_and_push_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]).await;
    server.sql_ok("CREATE STREAM s;").await;
    server
        .sql_ok(r#"INSERT INTO s VALUES '{"name": "  Robot ", "x": -2.5, "n": null}';"#)
        .await;
    let q = "SELECT TO_UPPER(TRIM(name)) AS up, STRLEN(name) AS len, ABS(x) AS a, SIGN(x) AS sg, \
             IFNULL(n, 7) AS d, TO_STR(x) AS t, ROUND(LOG(EXP(1.0))) AS one FROM s";
    // `n` is only ever null, so it is a STRING column (docs/sql.md): IFNULL gives "7".
    let want =
        r#"{"up": "ROBOT", "len": 8, "a": 2.5, "sg": -1.0, "d": "7", "t": "-2.5", "one": 1.0}"#;
    assert_eq!(server.sql_ok(&format!("{q};")).await, vec![want]);
    assert_eq!(
        server.push_rows(&format!("{q} EMIT CHANGES;"), 1, 20).await,
        vec![want]
    );
}

#[tokio::test]
async fn stream_stream_joins_match_within_the_bound_and_emit_outer_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]).await;
    server
        .sql_ok("CREATE STREAM orders; CREATE STREAM payments;")
        .await;
    server
        .sql_ok(
            "INSERT INTO orders (id, item) VALUES (1, 'bolt'), (2, 'nut'), (3, 'gear');
             INSERT INTO payments (order_id, amount) VALUES (1, 10), (3, 30), (4, 40);",
        )
        .await;
    server
        .sql_ok(
            "CREATE STREAM paid AS SELECT o.id, o.item, p.amount FROM orders AS o \
             JOIN payments AS p ON o.id = p.order_id WITHIN (INTERVAL 1 MINUTE);",
        )
        .await;
    server.sql_ok("FLUSH;").await;
    assert_eq!(
        server.sql_ok("SELECT * FROM paid ORDER BY id;").await,
        vec![
            r#"{"id": 1.0, "item": "bolt", "amount": 10.0}"#,
            r#"{"id": 3.0, "item": "gear", "amount": 30.0}"#,
        ]
    );
    // The saved query keeps its WITHIN.
    let shown = server.sql_ok("SHOW QUERIES;").await.join("\n");
    assert!(shown.contains("WITHIN (INTERVAL 1 MINUTE)"), "{shown}");

    // A push query sees matches as their second side arrives.
    let mut q = server
        .push(
            "SELECT o.item, p.amount FROM orders AS o JOIN payments AS p \
             ON o.id = p.order_id WITHIN (INTERVAL 1 MINUTE) EMIT CHANGES;",
        )
        .await;
    let mut first = q.next_rows(2, 20).await;
    first.sort();
    assert_eq!(
        first,
        vec![
            r#"{"item": "bolt", "amount": 10.0}"#,
            r#"{"item": "gear", "amount": 30.0}"#,
        ]
    );
    server
        .sql_ok("INSERT INTO orders (id, item) VALUES (5, 'cog');")
        .await;
    server
        .sql_ok("INSERT INTO payments (order_id, amount) VALUES (5, 50);")
        .await;
    assert_eq!(
        q.next_rows(1, 20).await,
        vec![r#"{"item": "cog", "amount": 50.0}"#]
    );
}

#[tokio::test]
async fn a_left_join_emits_unmatched_rows_once_they_leave_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]).await;
    server.sql_ok("CREATE STREAM a; CREATE STREAM b;").await;
    server
        .sql_ok("INSERT INTO a (k, x) VALUES (1, 'one'), (2, 'two'); INSERT INTO b (k, y) VALUES (1, 'uno');")
        .await;
    let mut q = server
        .push(
            "SELECT a.k, a.x, b.y FROM a LEFT JOIN b ON a.k = b.k WITHIN (INTERVAL 1 SECOND) \
             EMIT CHANGES;",
        )
        .await;
    assert_eq!(
        q.next_rows(1, 20).await,
        vec![r#"{"k": 1.0, "x": "one", "y": "uno"}"#]
    );
    // Publish times move on by more than the bound (plus the 1 s lateness): the next record
    // pushes the watermark past row 2, which never matched.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    server
        .sql_ok("INSERT INTO b (k, y) VALUES (2, 'dos (too late)');")
        .await;
    assert_eq!(
        q.next_rows(1, 20).await,
        vec![r#"{"k": 2.0, "x": "two", "y": null}"#]
    );
    assert!(q.next_rows(1, 1).await.is_empty());
}

#[tokio::test]
async fn json_operators_reach_into_nested_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]).await;
    server.sql_ok("CREATE STREAM robots;").await;
    server
        .sql_ok(
            r#"INSERT INTO robots VALUES '{"id": "r1", "pose": {"x": 1.5, "tags": ["arm", "cam"]}, "meta": {"fw": "2.1"}}';"#,
        )
        .await;
    let q = "SELECT pose -> 'x' AS x, pose -> 'tags' -> 1 AS tag, meta ->> 'fw' AS fw, \
             meta -> 'fw' AS fw_json, pose #>> '{tags,0}' AS first, pose ->> 'nope' AS missing, \
             CAST(pose ->> 'x' AS DOUBLE) * 2 AS x2 FROM robots";
    let want = r#"{"x": "1.5", "tag": "\"cam\"", "fw": "2.1", "fw_json": "\"2.1\"", "first": "arm", "missing": null, "x2": 3.0}"#;
    assert_eq!(server.sql_ok(&format!("{q};")).await, vec![want]);
    assert_eq!(
        server.push_rows(&format!("{q} EMIT CHANGES;"), 1, 20).await,
        vec![want]
    );
}

#[tokio::test]
async fn topk_and_topkdistinct_in_views_and_push_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]).await;
    server.sql_ok("CREATE STREAM m;").await;
    server
        .sql_ok("INSERT INTO m (k, v) VALUES ('a', 3), ('a', 9), ('a', 3), ('a', 7), ('b', 1);")
        .await;
    server
        .sql_ok("CREATE VIEW tops AS SELECT k, TOPK(v, 3) AS top, TOPKDISTINCT(v, 2) AS topd FROM m GROUP BY k;")
        .await;
    server.sql_ok("FLUSH;").await;
    assert_eq!(
        server.sql_ok("SELECT * FROM tops ORDER BY k;").await,
        vec![
            r#"{"k": "a", "top": [9.0, 7.0, 3.0], "topd": [9.0, 7.0]}"#,
            r#"{"k": "b", "top": [1.0], "topd": [1.0]}"#,
        ]
    );
    let rows = server
        .push_rows(
            "SELECT TOPK(v, 2) AS t FROM m WHERE k = 'a' EMIT CHANGES;",
            4,
            20,
        )
        .await;
    assert_eq!(
        rows,
        vec![
            r#"{"t": [3.0]}"#,
            r#"{"t": [9.0, 3.0]}"#,
            r#"{"t": [9.0, 3.0]}"#,
            r#"{"t": [9.0, 7.0]}"#,
        ]
    );
    let e = server
        .sql("SELECT TOPK(v, 0) FROM m;")
        .await
        .expect_err("k 0");
    assert!(e.message().contains("k must be"), "{}", e.message());
}

#[tokio::test]
async fn a_join_keeps_its_buffered_records_across_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]).await;
    // Declared columns: the query binds at once, before any payment exists.
    server
        .sql_ok(
            "CREATE STREAM orders (id INTEGER); \
             CREATE STREAM payments (order_id INTEGER, amount INTEGER);",
        )
        .await;
    server
        .sql_ok(
            "CREATE STREAM paid AS SELECT o.id, p.amount FROM orders AS o \
             JOIN payments AS p ON o.id = p.order_id WITHIN (INTERVAL 10 MINUTE);",
        )
        .await;
    server
        .sql_ok("INSERT INTO orders (id) VALUES (1), (2);")
        .await;
    server.sql_ok("FLUSH;").await;
    // Let the idle query checkpoint its positions (past the orders) with its buffers.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    server.kill9();
    server.restart().await;
    server
        .sql_ok("INSERT INTO payments (order_id, amount) VALUES (2, 20), (1, 10);")
        .await;
    server.sql_ok("FLUSH;").await;
    assert_eq!(
        server.sql_ok("SELECT * FROM paid ORDER BY id;").await,
        vec![
            r#"{"id": 1.0, "amount": 10.0}"#,
            r#"{"id": 2.0, "amount": 20.0}"#
        ]
    );
}

#[tokio::test]
async fn session_windows_keep_their_sessions_across_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]).await;
    server.sql_ok("CREATE STREAM taps;").await;
    server
        .sql_ok(
            "CREATE VIEW tap_sessions AS SELECT window_start, window_end, user, COUNT(*) AS n \
             FROM SESSION(taps, INTERVAL 10 SECOND, ts) GROUP BY user;",
        )
        .await;
    server
        .sql_ok("INSERT INTO taps (user, ts) VALUES ('a', 1000), ('b', 2000), ('a', 5000);\nFLUSH;")
        .await;
    let mut rows = server.sql_ok("SELECT * FROM tap_sessions;").await;
    rows.sort();
    assert_eq!(
        rows,
        vec![
            r#"{"window_start": "1970-01-01T00:00:01", "window_end": "1970-01-01T00:00:15", "user": "a", "n": 2}"#,
            r#"{"window_start": "1970-01-01T00:00:02", "window_end": "1970-01-01T00:00:12", "user": "b", "n": 1}"#,
        ]
    );

    server.kill9();
    server.restart().await;
    // 12 s is within the gap of a's last record (5 s): the restored session grows to
    // [1 s, 22 s); 40 s starts a new one. b's session is untouched.
    server
        .sql_ok("INSERT INTO taps (user, ts) VALUES ('a', 12000), ('a', 40000);\nFLUSH;")
        .await;
    let mut rows = server.sql_ok("SELECT * FROM tap_sessions;").await;
    rows.sort();
    assert_eq!(
        rows,
        vec![
            r#"{"window_start": "1970-01-01T00:00:01", "window_end": "1970-01-01T00:00:22", "user": "a", "n": 3}"#,
            r#"{"window_start": "1970-01-01T00:00:02", "window_end": "1970-01-01T00:00:12", "user": "b", "n": 1}"#,
            r#"{"window_start": "1970-01-01T00:00:40", "window_end": "1970-01-01T00:00:50", "user": "a", "n": 1}"#,
        ]
    );
}

#[tokio::test]
async fn inserts_and_query_output_larger_than_one_append_are_split() {
    // A 4 KiB append limit: 600 rows of ~120 bytes need many appends, both for the INSERT and
    // for the persistent query's first micro-batch (which reads every batch already there).
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &["--max-record-size", "4096"]).await;
    server.sql_ok("CREATE STREAM src;").await;
    let pad = "p".repeat(100);
    let values: Vec<String> = (0..600).map(|i| format!("({i}, '{pad}')")).collect();
    server
        .sql_ok(&format!(
            "INSERT INTO src (i, pad) VALUES {};",
            values.join(", ")
        ))
        .await;
    server
        .sql_ok("CREATE STREAM copy AS SELECT i, pad FROM src;")
        .await;
    server.sql_ok("FLUSH;").await;
    let out = server
        .sql_ok("SELECT COUNT(*) AS n, SUM(i) AS s FROM copy;")
        .await;
    assert_eq!(out, vec![r#"{"n": 600, "s": 179700.0}"#]);
    let queries = server.sql_ok("SHOW QUERIES;").await.join("\n");
    assert!(!queries.contains("FAILED"), "{queries}");
}
