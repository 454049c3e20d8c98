//! `streamcell sensor` and `streamcell actuator`: the real binary against sockets this test
//! opens on 127.0.0.1 (ports picked by binding port 0): the sensor's TCP, UDP, debug, replay
//! and server modes, its flags and failures; the actuator's UDP and TCP servers, its client
//! mode, its reports and Ctrl-C; and the two talking to each other. Every child process is
//! killed when its handle is dropped. The timeouts are safety nets, never assertions on speed.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long anything may take before the test gives up (a hang guard, not a speed check).
const WAIT: Duration = Duration::from_secs(60);

/// Lines of one output of a child, read on a thread of their own.
struct Lines {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn new(pipe: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle` and returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; got {:#?}", self.seen),
            }
        }
    }

    /// Everything until the pipe closes.
    fn all(&mut self) -> Vec<String> {
        while let Ok(line) = self.rx.recv_timeout(WAIT) {
            self.seen.push(line);
        }
        self.seen.clone()
    }
}

/// A running `streamcell`; killed when dropped.
struct Proc {
    child: Child,
    out: Lines,
    err: Lines,
}

impl Proc {
    fn start(args: &[&str]) -> Proc {
        Proc::start_with_stdin(args, Stdio::null())
    }

    fn start_with_stdin(args: &[&str], stdin: Stdio) -> Proc {
        let mut child = Command::new(common::bin())
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start streamcell");
        let out = Lines::new(child.stdout.take().expect("stdout"));
        let err = Lines::new(child.stderr.take().expect("stderr"));
        Proc { child, out, err }
    }

    /// Sends SIGINT, as Ctrl-C does.
    fn interrupt(&self) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(pid, libc::SIGINT) };
        assert_eq!(rc, 0, "kill -INT {pid}");
    }

    /// Waits for the exit; returns the status, stdout and stderr lines.
    fn finish(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.child.try_wait().expect("try_wait") {
                Some(status) => {
                    let (out, err) = (self.out.all(), self.err.all());
                    return (status, out, err);
                }
                None if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    panic!(
                        "streamcell did not exit; stdout {:#?} stderr {:#?}",
                        self.out.seen, self.err.seen
                    );
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs to completion.
fn run(args: &[&str]) -> (ExitStatus, Vec<String>, Vec<String>) {
    Proc::start(args).finish()
}

/// A free TCP port on 127.0.0.1 (bound and released).
fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A free UDP port on 127.0.0.1 (bound and released).
fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port().to_string();
    (l, port)
}

/// Accepts one connection, giving up after [`WAIT`].
fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + WAIT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).expect("blocking");
                s.set_read_timeout(Some(WAIT)).expect("timeout");
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("no connection: {e}"),
        }
    }
}

/// Reads a connection to its end, as lines.
fn read_all(mut s: TcpStream) -> Vec<String> {
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the events");
    text.lines().map(str::to_string).collect()
}

fn now_us() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    i64::try_from(d.as_micros()).expect("µs")
}

/// Checks a generated `id,ts,value...` line with `values` random values; returns the id.
fn check_event(line: &str, values: usize) -> u64 {
    let fields: Vec<&str> = line.split(',').collect();
    assert_eq!(fields.len(), 2 + values, "fields of {line:?}");
    let id: u64 = fields[0].parse().expect("id");
    let ts: i64 = fields[1].parse().expect("timestamp");
    // Epoch microseconds: after 2020 and not after now.
    assert!(
        ts > 1_577_836_800_000_000 && ts <= now_us(),
        "timestamp of {line:?}"
    );
    for v in &fields[2..] {
        let v: u64 = v.parse().expect("value");
        assert!(v <= i32::MAX as u64, "value of {line:?}");
    }
    id
}

#[test]
fn help_describes_the_options() {
    let (status, out, _) = run(&["sensor", "--help"]);
    assert!(status.success());
    let text = out.join("\n");
    for flag in [
        "--host",
        "--port",
        "--sensor",
        "--protocol",
        "--increment",
        "--timestamp",
        "--columns",
        "--events",
        "--batch",
        "--delay",
        "--file",
        "--replay",
        "--time",
        "--trace",
        "--server",
        "--client",
        "--seed",
    ] {
        assert!(text.contains(flag), "sensor --help lacks {flag}:\n{text}");
    }
    let (status, out, _) = run(&["actuator", "--help"]);
    assert!(status.success());
    let text = out.join("\n");
    for flag in [
        "--host",
        "--port",
        "--protocol",
        "--actuator",
        "--events",
        "--statistics",
        "--server",
        "--client",
        "--trace",
        "--time-column",
    ] {
        assert!(text.contains(flag), "actuator --help lacks {flag}:\n{text}");
    }
}

#[test]
fn sensor_sends_events_over_tcp() {
    let (l, port) = listener();
    let sensor = Proc::start(&[
        "sensor",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--events",
        "25",
        "--columns",
        "3",
        "--delay",
        "0",
        "--sensor",
        "S1",
    ]);
    let lines = read_all(accept(&l));
    let (status, _, err) = sensor.finish();
    assert!(status.success(), "{err:?}");
    assert_eq!(lines.len(), 25, "{lines:?}");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(check_event(line, 1), i as u64 + 1);
    }
    assert!(
        err.iter().any(|l| l.contains("sensor S1: sent 25 events")),
        "{err:?}"
    );
}

#[test]
fn sensor_batches_start_with_a_header() {
    let (l, port) = listener();
    let sensor = Proc::start(&[
        "sensor",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--events",
        "10",
        "--batch",
        "4",
        "--delay",
        "0",
    ]);
    let lines = read_all(accept(&l));
    assert!(sensor.finish().0.success());
    let shape: Vec<String> = lines
        .iter()
        .map(|l| {
            if l.starts_with('#') {
                l.clone()
            } else {
                // The default --columns=1 still sends id and timestamp.
                check_event(l, 0);
                "event".to_string()
            }
        })
        .collect();
    let mut want = vec!["#4"];
    want.extend(["event"; 4]);
    want.push("#4");
    want.extend(["event"; 4]);
    want.push("#2");
    want.extend(["event"; 2]);
    assert_eq!(shape, want);
}

#[test]
fn sensor_debug_writes_to_stdout() {
    let args = [
        "sensor",
        "--protocol",
        "debug",
        "--events",
        "5",
        "--columns",
        "4",
        "--seed",
        "42",
    ];
    let (status, first, _) = run(&args);
    assert!(status.success());
    assert_eq!(first.len(), 5, "{first:?}");
    for (i, line) in first.iter().enumerate() {
        assert_eq!(check_event(line, 2), i as u64 + 1);
    }
    // The same seed gives the same values.
    let (_, second, _) = run(&args);
    let values = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .map(|l| l.splitn(3, ',').nth(2).unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(values(&first), values(&second));

    // No id and no timestamp: every column is a value.
    let (status, out, _) = run(&[
        "sensor",
        "--protocol",
        "debug",
        "--events",
        "3",
        "--columns",
        "2",
        "--increment",
        "0",
        "--timestamp=false",
    ]);
    assert!(status.success());
    assert_eq!(out.len(), 3);
    for line in &out {
        let fields: Vec<u64> = line.split(',').map(|f| f.parse().expect("value")).collect();
        assert_eq!(fields.len(), 2, "{line:?}");
    }

    // --increment is the first id and the step; --no-timestamp drops the time.
    let (status, out, _) = run(&[
        "sensor",
        "--protocol",
        "debug",
        "--events",
        "3",
        "--columns",
        "2",
        "--increment",
        "10",
        "--no-timestamp",
    ]);
    assert!(status.success());
    let ids: Vec<&str> = out
        .iter()
        .map(|l| l.split(',').next().unwrap_or(""))
        .collect();
    assert_eq!(ids, ["10", "20", "30"]);
    assert!(out.iter().all(|l| l.split(',').count() == 2), "{out:?}");
}

#[test]
fn sensor_sends_a_datagram_per_batch_over_udp() {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(WAIT)).expect("timeout");
    let port = socket.local_addr().expect("addr").port().to_string();
    let sensor = Proc::start(&[
        "sensor",
        "--protocol",
        "udp",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--events",
        "20",
        "--batch",
        "5",
        "--columns",
        "3",
        "--delay",
        "0",
    ]);
    let mut ids = Vec::new();
    let mut buf = vec![0u8; 70_000];
    for _ in 0..4 {
        let n = socket.recv(&mut buf).expect("a datagram");
        let text = std::str::from_utf8(&buf[..n]).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#5", "{text:?}");
        assert_eq!(lines.len(), 6, "{text:?}");
        for line in &lines[1..] {
            ids.push(check_event(line, 1));
        }
    }
    assert!(sensor.finish().0.success());
    ids.sort_unstable();
    assert_eq!(ids, (1..=20).collect::<Vec<u64>>());

    // A batch larger than a datagram is split; every part has its own header.
    let sensor = Proc::start(&[
        "sensor",
        "--protocol",
        "udp",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--events",
        "1000",
        "--batch",
        "1000",
        "--columns",
        "10",
    ]);
    let (mut events, mut datagrams) = (0, 0);
    while events < 1000 {
        let n = socket.recv(&mut buf).expect("a datagram");
        assert!(n <= 65_000, "a datagram of {n} bytes");
        let text = std::str::from_utf8(&buf[..n]).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("#{}", lines.len() - 1));
        for line in &lines[1..] {
            check_event(line, 8);
        }
        events += lines.len() - 1;
        datagrams += 1;
    }
    assert_eq!(events, 1000);
    assert!(datagrams > 1);
    assert!(sensor.finish().0.success());
}

#[test]
fn sensor_replays_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.csv");
    std::fs::write(
        &path,
        "a,2024-01-01 00:00:00.000,1\nb,2024-01-01 00:00:00.010,2\n\nc,2024-01-01 00:00:00.020,3\n",
    )
    .expect("write");
    let file = path.to_str().expect("path");
    let (l, port) = listener();
    // At the original pace (--time), twice (--events 2).
    let sensor = Proc::start(&[
        "sensor",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--replay",
        "--file",
        file,
        "--time",
        "2",
        "--events",
        "2",
    ]);
    let lines = read_all(accept(&l));
    assert!(sensor.finish().0.success());
    let once = [
        "a,2024-01-01 00:00:00.000,1",
        "b,2024-01-01 00:00:00.010,2",
        "c,2024-01-01 00:00:00.020,3",
    ];
    let twice: Vec<&str> = once.iter().chain(once.iter()).copied().collect();
    assert_eq!(lines, twice);

    // From stdin, in batches, to stdout.
    let mut sensor = Proc::start_with_stdin(
        &["sensor", "--protocol", "debug", "--replay", "--batch", "2"],
        Stdio::piped(),
    );
    let mut stdin = sensor.child.stdin.take().expect("stdin");
    stdin.write_all(b"x,1\ny,2\nz,3\n").expect("write stdin");
    drop(stdin);
    let (status, out, _) = sensor.finish();
    assert!(status.success());
    assert_eq!(out, ["#2", "x,1", "y,2", "#1", "z,3"]);
}

#[test]
fn sensor_server_serves_every_client() {
    let port = free_tcp_port().to_string();
    let mut sensor = Proc::start(&[
        "sensor",
        "--server",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--events",
        "10",
        "--columns",
        "3",
        "--delay",
        "0",
    ]);
    sensor.err.wait_for("listening on tcp 127.0.0.1:");
    for _ in 0..2 {
        let s = TcpStream::connect(("127.0.0.1", port.parse::<u16>().expect("port")))
            .expect("connect to the sensor");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let lines = read_all(s);
        assert_eq!(lines.len(), 10, "{lines:?}");
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(check_event(line, 1), i as u64 + 1);
        }
    }
    sensor.interrupt();
    let (status, _, err) = sensor.finish();
    assert!(status.success(), "{err:?}");
    assert!(
        err.iter().any(|l| l.contains("stopped after 2 client(s)")),
        "{err:?}"
    );
}

#[test]
fn sensor_fails_clearly() {
    let port = free_tcp_port().to_string();
    let (status, _, err) = run(&["sensor", "--host", "127.0.0.1", "--port", &port]);
    assert_eq!(status.code(), Some(1), "{err:?}");
    assert!(
        err.iter()
            .any(|l| l.contains(&format!("cannot connect to 127.0.0.1:{port}"))),
        "{err:?}"
    );
    let (status, _, err) = run(&["sensor", "--server", "--protocol", "udp"]);
    assert_eq!(status.code(), Some(2), "{err:?}");
    assert!(
        err.iter()
            .any(|l| l.contains("--server needs --protocol tcp")),
        "{err:?}"
    );
    let (status, _, _) = run(&["sensor", "--events", "0"]);
    assert_eq!(status.code(), Some(2));
}

/// The final report line of an actuator.
fn report(out: &[String], name: &str, events: u64) -> String {
    let prefix = format!("actuator {name}: {events} events in ");
    out.iter()
        .rev()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no report of {events} events in {out:#?}"))
        .clone()
}

/// Checks that a report has latency percentiles.
fn assert_latency(line: &str) {
    let tail = line
        .split("latency us ")
        .nth(1)
        .unwrap_or_else(|| panic!("no latency in {line:?}"));
    let words: Vec<&str> = tail.split_whitespace().collect();
    assert!(words.len() >= 8, "{line:?}");
    for (i, key) in ["p50", "p90", "p99", "max"].iter().enumerate() {
        assert_eq!(words[2 * i], *key, "{line:?}");
        words[2 * i + 1].parse::<u64>().expect("a latency in µs");
    }
}

#[test]
fn actuator_counts_udp_events_and_reports_latency() {
    let port = free_udp_port().to_string();
    let mut actuator = Proc::start(&[
        "actuator",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--events",
        "12",
        "--actuator",
        "A1",
    ]);
    actuator.err.wait_for("listening on udp 127.0.0.1:");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let target = format!("127.0.0.1:{port}");
    let mut id = 0;
    let mut datagram = |n: usize, header: bool| {
        let mut text = if header {
            format!("#{n}\n")
        } else {
            String::new()
        };
        for _ in 0..n {
            id += 1;
            text.push_str(&format!("{id},{},7\n", now_us()));
        }
        text
    };
    let batches = [datagram(5, true), datagram(4, false), datagram(2, false)];
    for b in &batches {
        socket.send_to(b.as_bytes(), &target).expect("send");
    }
    // A line without a time is counted, but not in the latency.
    socket.send_to(b"12,not-a-time,7", &target).expect("send");
    let (status, out, err) = actuator.finish();
    assert!(status.success(), "{err:?}");
    let line = report(&out, "A1", 12);
    assert_latency(&line);
    assert!(line.contains("(1 without a time)"), "{line:?}");
}

#[test]
fn actuator_accepts_several_tcp_connections() {
    let port = free_tcp_port().to_string();
    let mut actuator = Proc::start(&[
        "actuator",
        "--protocol",
        "tcp",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--events",
        "20",
        "--statistics",
        "10",
        "--trace",
    ]);
    actuator.err.wait_for("listening on tcp 127.0.0.1:");
    let port: u16 = port.parse().expect("port");
    let mut a = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut b = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    for conn in 0..2 {
        let s = if conn == 0 { &mut a } else { &mut b };
        let mut text = String::from("#5\n");
        for i in 0..10 {
            if i == 5 {
                text.push_str("#5\n");
            }
            text.push_str(&format!("{},{},1\n", conn * 100 + i, now_us()));
        }
        s.write_all(text.as_bytes()).expect("write");
    }
    drop((a, b));
    let (status, out, err) = actuator.finish();
    assert!(status.success(), "{err:?}");
    let events = out
        .iter()
        .filter(|l| !l.starts_with('#') && !l.starts_with("actuator"))
        .count();
    assert_eq!(events, 20, "trace lines: {out:#?}");
    assert!(
        out.iter()
            .any(|l| l.starts_with("actuator X: 10 events in ")),
        "{out:#?}"
    );
    assert_latency(&report(&out, "X", 20));
}

#[test]
fn actuator_client_reconnects_to_a_passive_emitter() {
    let (l, port) = listener();
    let actuator = Proc::start(&[
        "actuator",
        "--client",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--events",
        "5",
    ]);
    let mut first = accept(&l);
    first
        .write_all(format!("1,{},0\n2,{},0\n", now_us(), now_us()).as_bytes())
        .expect("write");
    drop(first);
    // The actuator connects again (after a second) and reads the rest.
    let mut second = accept(&l);
    let mut text = String::new();
    for id in 3..=5 {
        text.push_str(&format!("{id},{},0\n", now_us()));
    }
    second.write_all(text.as_bytes()).expect("write");
    let (status, out, err) = actuator.finish();
    assert!(status.success(), "{err:?}");
    assert_latency(&report(&out, "X", 5));
}

#[test]
fn actuator_reports_on_ctrl_c() {
    let port = free_tcp_port().to_string();
    let mut actuator = Proc::start(&[
        "actuator",
        "--protocol",
        "tcp",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--statistics",
        "5",
        "--time-column",
        "0",
    ]);
    actuator.err.wait_for("listening on tcp");
    let mut s =
        TcpStream::connect(("127.0.0.1", port.parse::<u16>().expect("port"))).expect("connect");
    let text: String = (1..=10).map(|i| format!("{i},x\n")).collect();
    s.write_all(text.as_bytes()).expect("write");
    actuator.out.wait_for("actuator X: 10 events");
    actuator.interrupt();
    let (status, out, err) = actuator.finish();
    assert!(status.success(), "{err:?}");
    assert!(
        out.iter().any(|l| l.starts_with("actuator X: 5 events")),
        "{out:#?}"
    );
    // --time-column 0: no latency, and no complaint about missing times.
    let last = out.last().cloned().unwrap_or_default();
    assert!(last.starts_with("actuator X: 10 events in "), "{out:#?}");
    assert!(last.ends_with("latency us n/a"), "{last:?}");
    drop(s);
}

#[test]
fn sensor_feeds_actuator() {
    for protocol in ["udp", "tcp"] {
        let port = if protocol == "udp" {
            free_udp_port()
        } else {
            free_tcp_port()
        }
        .to_string();
        let mut actuator = Proc::start(&[
            "actuator",
            "--protocol",
            protocol,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--events",
            "200",
        ]);
        actuator.err.wait_for("listening on");
        let sensor = Proc::start(&[
            "sensor",
            "--protocol",
            protocol,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--events",
            "200",
            "--batch",
            "10",
            "--columns",
            "3",
        ]);
        let (status, out, err) = actuator.finish();
        assert!(status.success(), "{protocol}: {err:?}");
        assert_latency(&report(&out, "X", 200));
        assert!(sensor.finish().0.success());
    }
}
