//! Receptors and emitters over real loopback sockets, driven through the engine's `Sockets`
//! seam as the server drives them: lines in, rows in the basket; rows in the basket, lines
//! out; bad lines to the basket's errors; addresses outside the policy refused.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use streamcell_datacell::{NetworkPolicy, NetworkSockets, MAX_LINE};
use streamcell_engine::datacell::adapter::{AdapterSpec, Direction, Mode, Protocol, Run};
use streamcell_engine::datacell::{Basket, Sockets};
use streamcell_engine::EngineError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

fn basket() -> Arc<Basket> {
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("v", DataType::Float64, true),
    ]);
    Arc::new(Basket::new("datacell.b".into(), Arc::new(schema)))
}

fn spec(
    direction: Direction,
    basket: &Arc<Basket>,
    host: &str,
    protocol: Protocol,
    mode: Mode,
) -> AdapterSpec {
    AdapterSpec {
        direction,
        basket: basket.clone(),
        host: host.to_string(),
        port: 0,
        protocol,
        mode,
    }
}

/// Waits (polling, up to a minute: the machine may be busy) until `done` holds; whether it
/// did.
async fn until(done: impl Fn() -> bool) -> bool {
    for _ in 0..6000 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn a_passive_tcp_receptor_fills_its_basket_and_keeps_bad_lines_apart() {
    let b = basket();
    let sockets = NetworkSockets::default();
    let wake = Arc::new(Notify::new());
    let a = sockets
        .start(
            spec(
                Direction::Receptor,
                &b,
                "127.0.0.1",
                Protocol::Tcp,
                Mode::Passive,
            ),
            wake,
        )
        .await
        .expect("receptor");
    assert_ne!(a.spec.port, 0, "the bound port is reported");
    assert_eq!(a.state(), Run::Paused, "adapters start paused");
    a.set(Run::Running);

    let mut sensor = TcpStream::connect(("127.0.0.1", a.spec.port))
        .await
        .expect("connect");
    let long = "9".repeat(MAX_LINE + 10);
    let mut input = format!("1,1.5\nnot,a number\n#3 a batch header\n{long}\n2,2.5\n").into_bytes();
    input.extend_from_slice(b"\xff\xfe\n3,3.5");
    sensor.write_all(&input).await.expect("write");
    sensor.shutdown().await.expect("close");

    assert!(until(|| b.len() == 3).await, "3 rows, not {}", b.len());
    assert!(
        until(|| b.errors().len() == 3).await,
        "3 errors: {:?}",
        b.errors()
    );
    let errors = b.errors().join("\n");
    assert!(errors.contains("not,a number"), "{errors}");
    assert!(
        errors.contains(&format!("longer than {MAX_LINE}")),
        "{errors}"
    );
    assert!(errors.contains("not UTF-8"), "{errors}");
    let rows: Vec<RecordBatch> = b.snapshot();
    let ids: Vec<i64> = rows
        .iter()
        .flat_map(|r| {
            r.column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .expect("ids")
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(
        ids,
        vec![1, 2, 3],
        "the line after the long one and the last unterminated line count"
    );
    assert_eq!(a.events.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(a.rejected.load(std::sync::atomic::Ordering::Relaxed), 3);
    a.set(Run::Stopped);
}

#[tokio::test]
async fn a_passive_tcp_emitter_ships_rows_to_a_connected_actuator() {
    let b = basket();
    let mut p = streamcell_csv::LineParser::new(&b.schema);
    for line in ["1,0.5", "2,"] {
        p.push_line(line).expect("line");
    }
    b.append(p.finish().expect("batch")).expect("append");
    let sockets = NetworkSockets::default();
    let a = sockets
        .start(
            spec(
                Direction::Emitter,
                &b,
                "localhost",
                Protocol::Tcp,
                Mode::Passive,
            ),
            Arc::new(Notify::new()),
        )
        .await
        .expect("emitter");
    a.set(Run::Running);
    let mut actuator = TcpStream::connect(("127.0.0.1", a.spec.port))
        .await
        .expect("connect");
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.iter().filter(|&&c| c == b'\n').count() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(60), actuator.read(&mut buf))
            .await
            .expect("lines within a minute")
            .expect("read");
        assert_ne!(n, 0, "the emitter closed the connection");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(got).expect("UTF-8");
    let first: Vec<&str> = text
        .lines()
        .map(|l| l.split(',').next().unwrap_or(""))
        .collect();
    assert_eq!(first, vec!["1", "2"], "{text}");
    assert!(until(|| b.is_empty()).await, "the basket drained");
    a.set(Run::Stopped);
}

#[tokio::test]
async fn addresses_outside_the_policy_are_refused_before_any_socket_is_opened() {
    let b = basket();
    let sockets = NetworkSockets::new(NetworkPolicy::default());
    let cases = [
        // An emitter sending outside loopback without --emitter-allow.
        (
            Direction::Emitter,
            "192.0.2.1",
            Protocol::Udp,
            Mode::Active,
            "--emitter-allow",
        ),
        // A receptor listening on every interface while the server binds loopback.
        (
            Direction::Receptor,
            "0.0.0.0",
            Protocol::Tcp,
            Mode::Passive,
            "--bind",
        ),
        // A passive emitter serves over TCP only.
        (
            Direction::Emitter,
            "127.0.0.1",
            Protocol::Udp,
            Mode::Passive,
            "passive emitter",
        ),
    ];
    for (direction, host, protocol, mode, says) in cases {
        let r = sockets
            .start(
                spec(direction, &b, host, protocol, mode),
                Arc::new(Notify::new()),
            )
            .await;
        match r {
            Err(EngineError::Invalid(m)) => assert!(m.contains(says), "{host}: {m}"),
            Err(other) => panic!("{host}: expected an invalid-argument error, got {other:?}"),
            Ok(_) => panic!("{host}: expected a refusal"),
        }
    }
}
