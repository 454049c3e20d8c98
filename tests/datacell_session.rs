//! DataCell end to end on the real server: the seed's example (receptor → basket → query →
//! basket → emitter), bad lines in `datacell.errors()`, scheduling predicates, procedures
//! delivering to several places, failing queries, and every adapter mode. Sensors and
//! actuators are sockets in the test (and the real `streamcell sensor` where noted); every
//! port is picked by binding port 0.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

mod common;

use std::net::{TcpListener as StdListener, UdpSocket as StdUdp};
use std::time::{Duration, Instant};

use common::{free_port, Server};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// A free UDP port.
fn free_udp_port() -> u16 {
    StdUdp::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// Polls `sql` until one of its rows contains `want` (20 s at most).
async fn wait_for(server: &Server, sql: &str, want: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = server.sql_ok(sql).await;
        if rows.iter().any(|r| r.contains(want)) {
            return rows;
        }
        if Instant::now() > deadline {
            panic!(
                "{sql}: never showed {want:?}; last answer {rows:?}\n{}",
                server.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]).await;
    (dir, server)
}

/// Reads UDP datagrams until `n` lines came (20 s at most).
async fn udp_lines(socket: &UdpSocket, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.recv_from(&mut buf)).await {
            Ok(Ok((len, _))) => {
                let text = String::from_utf8_lossy(&buf[..len]).to_string();
                lines.extend(text.lines().map(str::to_string));
            }
            _ => panic!("got {} of {n} lines: {lines:?}", lines.len()),
        }
    }
    lines
}

#[tokio::test]
async fn the_seed_example_moves_sensor_events_to_the_actuator() {
    let (_dir, server) = start().await;
    let rport = free_port();
    let actuator = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    let eport = actuator.local_addr().expect("addr").port();
    // The seed's statements, on ports the test picked.
    let setup = format!(
        "set optimizer = 'datacell_pipe';
         create table datacell.bsktin (id integer, tag timestamp, payload integer);
         create table datacell.bsktout (like datacell.bsktin);
         call datacell.receptor('datacell.bsktin', 'localhost', {rport});
         call datacell.emitter('datacell.bsktout', 'localhost', {eport});
         call datacell.query('datacell.pass', 'insert into datacell.bsktout select * from datacell.bsktin;');
         call datacell.resume();"
    );
    let out = server.sql_ok(&setup).await;
    assert_eq!(out, vec!["Done."; 7]);

    // A sensor: 1000 events `id,epoch µs,payload` over TCP, in batches with `#N` headers.
    let mut sent = Vec::new();
    let mut sensor = TcpStream::connect(("127.0.0.1", rport))
        .await
        .expect("connect");
    for batch in 0..10 {
        let mut text = String::from("#100\n");
        for i in 0..100 {
            let id = batch * 100 + i + 1;
            let line = format!("{id},{},{}", 1_700_000_000_000_000i64 + id, id * 7);
            text.push_str(&line);
            text.push('\n');
            sent.push(line);
        }
        sensor.write_all(text.as_bytes()).await.expect("send");
    }
    sensor.shutdown().await.expect("close");

    let got = udp_lines(&actuator, 1000).await;
    assert_eq!(got, sent, "the actuator gets every event, in order, as CSV");

    let receptors = wait_for(
        &server,
        "select * from datacell.receptors();",
        "\"received\": 1000",
    )
    .await;
    assert!(
        receptors[0].contains(r#""nme": "datacell.bsktin""#),
        "{receptors:?}"
    );
    assert!(receptors[0].contains(r#""protocol": "TCP", "mode": "passive", "status": "running""#));
    let emitters = wait_for(
        &server,
        "select * from datacell.emitters();",
        "\"sent\": 1000",
    )
    .await;
    assert!(
        emitters[0].contains(r#""protocol": "UDP", "mode": "active""#),
        "{emitters:?}"
    );
    let queries = server
        .sql_ok("select nme, status, events, error, def from datacell.queries();")
        .await;
    assert_eq!(
        queries,
        vec![
            r#"{"nme": "datacell.pass", "status": "running", "events": 1000, "error": null, "def": "insert into datacell.bsktout select * from datacell.bsktin;"}"#
        ]
    );
    let baskets = server
        .sql_ok("select nme, events from datacell.baskets();")
        .await;
    assert_eq!(
        baskets,
        vec![
            r#"{"nme": "datacell.bsktin", "events": 0}"#,
            r#"{"nme": "datacell.bsktout", "events": 0}"#
        ]
    );
}

#[tokio::test]
async fn bad_lines_go_to_errors_and_the_rest_arrives() {
    let (_dir, server) = start().await;
    let rport = free_port();
    server
        .sql_ok(&format!(
            "create table datacell.t (id integer, at timestamp, v double, name string);
             call datacell.receptor('datacell.t', '127.0.0.1', {rport});
             call datacell.resume('datacell.t');"
        ))
        .await;
    let mut s = TcpStream::connect(("127.0.0.1", rport))
        .await
        .expect("connect");
    s.write_all(
        b"1,2024-01-02T03:04:05Z,1.5,a\n\
          two,2024-01-02T03:04:05Z,1.5,b\n\
          3,1700000000000000,,\"c,d\"\n\
          4,1700000000000000,2.5\n\
          5,not a time,2.5,e\n\
          6,1700000000000000,x,f\n\
          7,,,\n",
    )
    .await
    .expect("send");
    s.shutdown().await.expect("close");
    wait_for(
        &server,
        "select * from datacell.receptors();",
        "\"received\": 3",
    )
    .await;
    let rows = server
        .sql_ok("select id, at, v, name from datacell.t;")
        .await;
    assert_eq!(
        rows,
        vec![
            r#"{"id": 1, "at": "2024-01-02T03:04:05", "v": 1.5, "name": "a"}"#,
            r#"{"id": 3, "at": "2023-11-14T22:13:20", "v": null, "name": "c,d"}"#,
            r#"{"id": 7, "at": null, "v": null, "name": null}"#,
        ]
    );
    let errors = wait_for(&server, "select * from datacell.errors();", "not a time").await;
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        errors[0].contains(r#"column id (INTEGER): \"two\" is not an integer: two,2024"#),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("3 fields, the basket has 4 columns: 4,1700000000000000,2.5"),
        "{errors:?}"
    );
    assert!(errors[2].contains("column at (TIMESTAMP)"), "{errors:?}");
    assert!(errors[3].contains("column v (DOUBLE)"), "{errors:?}");
    // A plain SELECT sees the basket without emptying it.
    assert_eq!(
        server.sql_ok("select count(*) as n from datacell.t;").await,
        vec![r#"{"n": 3}"#]
    );
}

#[tokio::test]
async fn a_line_over_the_limit_is_dropped_whole() {
    let (_dir, server) = start().await;
    let rport = free_port();
    server
        .sql_ok(&format!(
            "create table datacell.n (id integer);
             call datacell.receptor('datacell.n', '127.0.0.1', {rport});
             call datacell.resume('datacell.n');"
        ))
        .await;
    let mut s = TcpStream::connect(("127.0.0.1", rport))
        .await
        .expect("connect");
    // 70,000 bytes without a newline, then (in later reads) the end of that line: "7". Before,
    // the line was rejected at 64 KiB and its tail stored as a line of its own.
    s.write_all(b"1\n").await.expect("send");
    s.write_all(&vec![b' '; 70_000]).await.expect("send");
    s.flush().await.expect("flush");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    s.write_all(b"7\n8\n").await.expect("send");
    s.shutdown().await.expect("close");
    wait_for(
        &server,
        "select * from datacell.receptors();",
        "\"received\": 2",
    )
    .await;
    assert_eq!(
        server.sql_ok("select id from datacell.n;").await,
        vec![r#"{"id": 1}"#, r#"{"id": 8}"#]
    );
    let errors = wait_for(&server, "select * from datacell.errors();", "longer than").await;
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[tokio::test]
async fn a_full_basket_refuses_rows_instead_of_growing() {
    let (_dir, server) = start().await;
    server
        .sql_ok(
            "create table datacell.big (id bigint);
             insert into datacell.big select unnest(generate_series(1, 4000000));",
        )
        .await;
    let e = server
        .sql("insert into datacell.big select unnest(generate_series(1, 2000000));")
        .await
        .expect_err("over the cap");
    assert!(e.message().contains("is full"), "{}", e.message());
    // All or nothing: the refused INSERT added no row; a smaller one still fits.
    server
        .sql_ok("insert into datacell.big select unnest(generate_series(1, 1000000));")
        .await;
    assert_eq!(
        server
            .sql_ok("select count(*) as n from datacell.big;")
            .await,
        vec![r#"{"n": 5000000}"#]
    );
}

#[tokio::test]
async fn count_windows_thresholds_and_time_windows_schedule_queries() {
    let (_dir, server) = start().await;
    server
        .sql_ok(
            "create table datacell.win (id integer, at timestamp);
             create table datacell.wout (n bigint, lo bigint, hi bigint);
             call datacell.query('datacell.slide', 'insert into datacell.wout select count(*), min(id), max(id) from datacell.win where datacell.window(''datacell.win'', 4, 2);');
             call datacell.resume();",
        )
        .await;
    // Ten events: windows of 4 sliding by 2 see 1–4, 3–6, 5–8, 7–10; 9 and 10 stay.
    let values: Vec<String> = (1..=10).map(|i| format!("({i}, {})", i * 1000)).collect();
    server
        .sql_ok(&format!(
            "insert into datacell.win values {};",
            values.join(", ")
        ))
        .await;
    wait_for(
        &server,
        "select cycles from datacell.queries();",
        "\"cycles\": 4",
    )
    .await;
    let mut rows = server.sql_ok("select * from datacell.wout;").await;
    rows.sort();
    assert_eq!(
        rows,
        vec![
            r#"{"n": 4, "lo": 1, "hi": 4}"#,
            r#"{"n": 4, "lo": 3, "hi": 6}"#,
            r#"{"n": 4, "lo": 5, "hi": 8}"#,
            r#"{"n": 4, "lo": 7, "hi": 10}"#,
        ]
    );
    assert_eq!(
        server.sql_ok("select id from datacell.win;").await,
        vec![r#"{"id": 9}"#, r#"{"id": 10}"#]
    );
    let baskets = server
        .sql_ok("select nme, threshold, winsize, winstride from datacell.baskets() where nme = 'datacell.win';")
        .await;
    assert_eq!(
        baskets,
        vec![r#"{"nme": "datacell.win", "threshold": 4, "winsize": 4, "winstride": 2}"#]
    );

    // A threshold: nothing moves until 3 events are there, then all of them do.
    server
        .sql_ok(
            "create table datacell.tin (id integer);
             create table datacell.tout (id integer);
             call datacell.query('datacell.three', 'insert into datacell.tout select id from datacell.tin where datacell.threshold(''datacell.tin'', 3);');
             call datacell.resume('datacell.three');
             insert into datacell.tin values (1), (2);",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server
            .sql_ok("select count(*) as n from datacell.tin;")
            .await,
        vec![r#"{"n": 2}"#]
    );
    server.sql_ok("insert into datacell.tin values (3);").await;
    wait_for(
        &server,
        "select count(*) as n from datacell.tout;",
        "\"n\": 3",
    )
    .await;

    // A time window of 10 s sliding by 5 s on the first TIMESTAMP column.
    server
        .sql_ok(
            "create table datacell.tw (at timestamp, v integer);
             create table datacell.twout (lo timestamp, n bigint, total bigint);
             call datacell.query('datacell.tenths', 'insert into datacell.twout select min(at), count(*), sum(v) from datacell.tw where datacell.window(''datacell.tw'', interval ''10'' second, interval ''5'' second);');
             call datacell.resume('datacell.tenths');
             insert into datacell.tw values ('2024-01-01 00:00:00', 1), ('2024-01-01 00:00:04', 2), ('2024-01-01 00:00:07', 4), ('2024-01-01 00:00:12', 8), ('2024-01-01 00:00:21', 16);",
        )
        .await;
    // Windows [0 s, 10 s): 1+2+4; [5 s, 15 s): 4+8; [10 s, 20 s): 8 (then [15 s, 25 s) waits
    // for an event at or past 25 s).
    wait_for(
        &server,
        "select count(*) as n from datacell.twout;",
        "\"n\": 3",
    )
    .await;
    let mut rows = server.sql_ok("select n, total from datacell.twout;").await;
    rows.sort();
    assert_eq!(
        rows,
        vec![
            r#"{"n": 1, "total": 8}"#,
            r#"{"n": 2, "total": 12}"#,
            r#"{"n": 3, "total": 7}"#,
        ]
    );
}

#[tokio::test]
async fn a_procedure_delivers_to_a_basket_a_table_and_a_stream() {
    let (_dir, server) = start().await;
    server
        .sql_ok(
            "create table datacell.barrelin (id integer, temp double);
             create table datacell.barrelout (like datacell.barrelin);
             create table barrellog (n bigint, hottest double);
             create stream hot;
             create procedure datacell.splitter()
             begin
               insert into datacell.barrelout select * from datacell.barrelin;
               insert into barrellog select count(*), max(temp) from datacell.barrelin;
               insert into hot select id, temp from datacell.barrelin where temp > 50;
             end;
             call datacell.query('datacell.splitter');
             call datacell.resume();
             insert into datacell.barrelin values (1, 20.5), (2, 70.25), (3, 55.0);",
        )
        .await;
    wait_for(&server, "select * from barrellog;", "\"n\": 3").await;
    // The stream is written after the table in the same firing (a schemaless stream: its
    // numbers are doubles).
    wait_for(&server, "select count(*) as n from hot;", "\"n\": 2").await;
    assert_eq!(
        server.sql_ok("select * from barrellog;").await,
        vec![r#"{"n": 3, "hottest": 70.25}"#]
    );
    assert_eq!(
        server.sql_ok("select id, temp from hot order by id;").await,
        vec![
            r#"{"id": 2.0, "temp": 70.25}"#,
            r#"{"id": 3.0, "temp": 55.0}"#
        ]
    );
    assert_eq!(
        server
            .sql_ok("select count(*) as n from datacell.barrelout;")
            .await,
        vec![r#"{"n": 3}"#]
    );
    let q = server
        .sql_ok("select nme, def from datacell.queries();")
        .await;
    assert!(
        q[0].contains("datacell.splitter") && q[0].contains("insert into barrellog"),
        "{q:?}"
    );
}

#[tokio::test]
async fn a_failing_query_records_its_error_keeps_its_input_and_others_go_on() {
    let (_dir, server) = start().await;
    server
        .sql_ok(
            "create table datacell.a (x integer);
             create table datacell.b (x integer);
             create table datacell.aout (x integer);
             create table datacell.bout (x integer);
             call datacell.query('datacell.bad', 'insert into datacell.aout select 10 / x from datacell.a;');
             call datacell.query('datacell.good', 'insert into datacell.bout select x from datacell.b;');
             call datacell.resume();
             insert into datacell.a values (0);
             insert into datacell.b values (5);",
        )
        .await;
    let q = wait_for(
        &server,
        "select nme, status, error from datacell.queries();",
        "Query datacell.bad failed",
    )
    .await;
    let bad = q.iter().find(|r| r.contains("datacell.bad")).expect("bad");
    assert!(
        bad.contains(r#""status": "error""#) && bad.contains("Query datacell.bad failed"),
        "{q:?}"
    );
    assert!(bad.contains("Divide by zero"), "{bad}");
    // The row it took is back in its basket; the other query ran.
    assert_eq!(
        server.sql_ok("select x from datacell.a;").await,
        vec![r#"{"x": 0}"#]
    );
    wait_for(&server, "select x from datacell.bout;", "\"x\": 5").await;
}

#[tokio::test]
async fn bad_calls_get_clear_errors() {
    let (_dir, server) = start().await;
    server
        .sql_ok("create table datacell.in1 (id integer); create table datacell.out1 (id integer);")
        .await;
    let port = free_port();
    let busy = StdListener::bind(("127.0.0.1", port)).expect("bind");
    let cases = [
        (format!("call datacell.receptor('datacell.nope', 'localhost', {port});"), "no basket \"datacell.nope\""),
        (format!("call datacell.receptor('datacell.in1', 'localhost', {port});"), "port in use"),
        ("call datacell.receptor('datacell.in1', 'localhost', 1, 'sctp');".into(), "expected 'tcp' or 'udp'"),
        ("call datacell.emitter('datacell.out1', 'localhost', 1, 'udp', 'passive');".into(), "passive emitter serves actuators over TCP"),
        ("call datacell.query('q', 'insert into datacell.out1 select nosuch from datacell.in1;');".into(), "nosuch"),
        ("call datacell.query('q', 'select * from datacell.in1;');".into(), "INSERT INTO"),
        ("call datacell.query('q', 'insert into datacell.out1 select id from datacell.in1 where datacell.window(''datacell.in1'', 2, 3);');".into(), "must not exceed"),
        ("call datacell.frobnicate();".into(), "unknown DataCell procedure"),
        ("call datacell.pause('ghost');".into(), "no query, receptor or emitter named"),
        ("create table datacell.in1 (id integer);".into(), "exists already"),
        ("create table datacell.x (v blob);".into(), "basket columns are"),
        // The server binds 127.0.0.1: SQL may not open a port on every interface, nor make
        // the server connect beyond loopback (the cloud metadata address, a LAN host).
        ("call datacell.receptor('datacell.in1', '0.0.0.0', 0);".into(), "listen only on the server's address 127.0.0.1"),
        ("call datacell.emitter('datacell.out1', '169.254.169.254', 80, 'tcp', 'active');".into(), "connecting to 169.254.169.254 is not allowed"),
        ("call datacell.emitter('datacell.out1', '10.1.2.3', 9);".into(), "--emitter-allow"),
        ("call datacell.receptor('datacell.in1', '192.0.2.1', 9, 'tcp', 'active');".into(), "not allowed"),
    ];
    for (sql, want) in cases {
        match server.sql(&sql).await {
            Ok(rows) => panic!("{sql}: should fail, got {rows:?}"),
            Err(e) => assert!(e.message().contains(want), "{sql}: {}", e.message()),
        }
    }
    drop(busy);
    // One consumer per basket.
    server
        .sql_ok(
            "call datacell.query('q1', 'insert into datacell.out1 select id from datacell.in1;');",
        )
        .await;
    let e = server
        .sql("call datacell.query('q2', 'insert into datacell.out1 select id from datacell.in1;');")
        .await
        .expect_err("second consumer");
    let e2 = server
        .sql("call datacell.emitter('datacell.in1', '127.0.0.1', 9);")
        .await
        .expect_err("an emitter on a consumed basket");
    assert!(
        e2.message().contains("cannot drain it too"),
        "{}",
        e2.message()
    );
    assert!(
        e.message().contains("consumed by query \"q1\""),
        "{}",
        e.message()
    );
    // Still serving.
    assert_eq!(
        server
            .sql_ok("select count(*) as n from datacell.in1;")
            .await,
        vec![r#"{"n": 0}"#]
    );
}

#[tokio::test]
async fn every_adapter_mode_moves_events() {
    let (_dir, server) = start().await;
    // A sensor that serves events (for an active receptor), and an actuator that listens
    // (for an active TCP emitter).
    let sensor = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sensor_port = sensor.local_addr().expect("addr").port();
    let actuator = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let actuator_port = actuator.local_addr().expect("addr").port();
    let udp_in = free_udp_port();
    let passive_out = free_port();
    server
        .sql_ok(&format!(
            "create table datacell.s1 (id integer);
             create table datacell.s2 (like datacell.s1);
             create table datacell.o1 (like datacell.s1);
             create table datacell.o2 (like datacell.s1);
             call datacell.receptor('datacell.s1', '127.0.0.1', {sensor_port}, 'tcp', 'active');
             call datacell.receptor('datacell.s2', '127.0.0.1', {udp_in}, 'udp');
             call datacell.emitter('datacell.o1', '127.0.0.1', {actuator_port}, 'tcp', 'active');
             call datacell.emitter('datacell.o2', '127.0.0.1', {passive_out}, 'tcp', 'passive');
             call datacell.query('p1', 'insert into datacell.o1 select * from datacell.s1;');
             call datacell.query('p2', 'insert into datacell.o2 select * from datacell.s2;');
             call datacell.resume();"
        ))
        .await;
    // Active receptor: it connects to our sensor.
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(20), sensor.accept())
        .await
        .expect("the receptor connects")
        .expect("accept");
    conn.write_all(b"1\n2\n3\n").await.expect("send");
    // Active TCP emitter: it connects to our actuator.
    let (out, _) = tokio::time::timeout(Duration::from_secs(20), actuator.accept())
        .await
        .expect("the emitter connects")
        .expect("accept");
    let mut lines = BufReader::new(out).lines();
    for want in ["1", "2", "3"] {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(line.as_deref(), Some(want));
    }
    // Passive emitter: we connect as the actuator; events sent by UDP reach us.
    let mut reader = loop {
        match TcpStream::connect(("127.0.0.1", passive_out)).await {
            Ok(s) => break BufReader::new(s).lines(),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    // Give the emitter a moment to register the connection before events arrive.
    wait_for(
        &server,
        "select * from datacell.emitters() where nme = 'datacell.o2';",
        "running",
    )
    .await;
    let sender = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    sender
        .send_to(b"10\n11\n", ("127.0.0.1", udp_in))
        .await
        .expect("send");
    for want in ["10", "11"] {
        let line = tokio::time::timeout(Duration::from_secs(20), reader.next_line())
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(line.as_deref(), Some(want));
    }
    // Pause and stop.
    server
        .sql_ok("call datacell.pause('p1'); call datacell.stop('datacell.s1');")
        .await;
    let q = server
        .sql_ok("select nme, status from datacell.queries() where nme = 'p1';")
        .await;
    assert_eq!(q, vec![r#"{"nme": "p1", "status": "paused"}"#]);
    let r = server.sql_ok("select nme from datacell.receptors();").await;
    assert_eq!(r, vec![r#"{"nme": "datacell.s2"}"#]);
}

#[tokio::test]
async fn a_query_joins_a_basket_with_a_durable_table_and_aggregates() {
    let (_dir, server) = start().await;
    server
        .sql_ok(
            "create table limits (id integer, maxv double);
             insert into limits values (1, 10.0), (2, 50.0);
             create table datacell.readings (id integer, v double);
             create table datacell.alerts (id integer, worst double, n bigint);
             call datacell.query('datacell.watch', 'insert into datacell.alerts select r.id, max(r.v), count(*) from datacell.readings r join limits l on r.id = l.id where r.v > l.maxv group by r.id;');
             call datacell.resume();
             insert into datacell.readings values (1, 5.0), (1, 12.5), (1, 30.0), (2, 49.0), (2, 51.0), (3, 99.0);",
        )
        .await;
    wait_for(
        &server,
        "select count(*) as n from datacell.alerts;",
        "\"n\": 2",
    )
    .await;
    let mut rows = server.sql_ok("select * from datacell.alerts;").await;
    rows.sort();
    assert_eq!(
        rows,
        vec![
            r#"{"id": 1, "worst": 30.0, "n": 2}"#,
            r#"{"id": 2, "worst": 51.0, "n": 1}"#
        ]
    );
    // The readings were consumed; the table was only read.
    assert_eq!(
        server
            .sql_ok("select count(*) as n from datacell.readings;")
            .await,
        vec![r#"{"n": 0}"#]
    );
    assert_eq!(
        server.sql_ok("select count(*) as n from limits;").await,
        vec![r#"{"n": 2}"#]
    );
}

#[tokio::test]
async fn the_real_sensor_and_actuator_run_the_seed_example() {
    let (_dir, server) = start().await;
    let rport = free_port();
    let aport = free_udp_port();
    server
        .sql_ok(&format!(
            "set optimizer = 'datacell_pipe';
             create table datacell.bsktin (id integer, tag timestamp, payload integer);
             create table datacell.bsktout (like datacell.bsktin);
             call datacell.receptor('datacell.bsktin', 'localhost', {rport});
             call datacell.emitter('datacell.bsktout', 'localhost', {aport});
             call datacell.query('datacell.pass', 'insert into datacell.bsktout select * from datacell.bsktin;');
             call datacell.resume();"
        ))
        .await;
    let bin = common::bin();
    // The actuator listens for the emitter's UDP datagrams and stops after 1000 events.
    let mut actuator = std::process::Command::new(&bin)
        .args([
            "actuator",
            "--host",
            "127.0.0.1",
            "--port",
            &aport.to_string(),
        ])
        .args(["--events", "1000"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("actuator");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The seed's sensor command line, on the test's port.
    let sensor = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .arg("sensor")
            .arg("--host=localhost")
            .arg(format!("--port={rport}"))
            .args(["--events=1000", "--columns=3"])
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await
    .expect("join")
    .expect("sensor");
    assert!(sensor.status.success(), "{sensor:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match actuator.try_wait().expect("try_wait") {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = actuator.kill();
                panic!(
                    "the actuator did not get 1000 events\n{}",
                    server.log_text()
                );
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let mut text = String::new();
    std::io::Read::read_to_string(actuator.stdout.as_mut().expect("stdout"), &mut text)
        .expect("read");
    assert!(text.contains("1000 events"), "{text}");
    assert!(text.contains("latency us p50"), "{text}");
    wait_for(
        &server,
        "select * from datacell.emitters();",
        "\"sent\": 1000",
    )
    .await;
}
