//! `streamcell sql` as a client: the real binary against a fake StreamCellSql service run in
//! this test process (statements split and sent one per call, rows and `Done.` printed as
//! received, errors and exit codes, `-e`, `-f` and stdin, Ctrl-C during a push query). The
//! real server's SQL is tested in sql_session.rs.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

mod common;

use std::io::{BufRead, BufReader, Write};
use std::pin::Pin;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamcell_proto::sqlapi::execute_response::Item;
use streamcell_proto::sqlapi::stream_cell_sql_server::{StreamCellSql, StreamCellSqlServer};
use streamcell_proto::sqlapi::{Columns, Done, ExecuteRequest, ExecuteResponse, Rows};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

/// What the fake server saw.
#[derive(Default)]
struct Seen {
    /// The `sql` of every call, in order.
    calls: Mutex<Vec<String>>,
    /// Push queries whose client went away (the call was cancelled).
    cancelled: AtomicUsize,
}

/// Answers by keywords in the statement text.
struct Fake(Arc<Seen>);

fn item(item: Item) -> Result<ExecuteResponse, Status> {
    Ok(ExecuteResponse { item: Some(item) })
}

#[tonic::async_trait]
impl StreamCellSql for Fake {
    type ExecuteStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<ExecuteResponse, Status>> + Send + 'static>>;

    async fn execute(
        &self,
        request: Request<ExecuteRequest>,
    ) -> Result<Response<Self::ExecuteStream>, Status> {
        let sql = request.into_inner().sql;
        if let Ok(mut calls) = self.0.calls.lock() {
            calls.push(sql.clone());
        }
        if sql.contains("boom") {
            return Err(Status::invalid_argument(
                "syntax error at line 1, column 8: expected an expression, found boom",
            ));
        }
        if sql.contains("missing") {
            return Err(Status::not_found("stream \"missing\" does not exist"));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        if sql.contains("forever") {
            let seen = self.0.clone();
            tokio::spawn(async move {
                let columns = Columns {
                    names: vec!["n".into()],
                };
                if tx.send(item(Item::Columns(columns))).await.is_err() {
                    return;
                }
                for n in 0u64.. {
                    let rows = Rows {
                        json: vec![format!("{{\"n\": {n}}}")],
                    };
                    if tx.send(item(Item::Rows(rows))).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // The client dropped the call.
                seen.cancelled.fetch_add(1, Ordering::SeqCst);
            });
        } else if sql
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .contains("SELECT 1")
        {
            let items = [
                Item::Columns(Columns {
                    names: vec!["product".into(), "max_len".into()],
                }),
                Item::Rows(Rows {
                    json: vec![
                        r#"{"product": "Apple", "max_len": 10.0}"#.into(),
                        r#"{"product": "Pear", "max_len": 2.5}"#.into(),
                    ],
                }),
                Item::Rows(Rows {
                    json: vec![r#"{"product": "Apple", "max_len": 20.0}"#.into()],
                }),
                Item::Done(Done {
                    message: String::new(),
                }),
            ];
            for i in items {
                let _ = tx.try_send(item(i));
            }
        } else {
            let _ = tx.try_send(item(Item::Done(Done {
                message: "Done.".into(),
            })));
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A fake server on its own thread and runtime, on a free port, for the whole test.
struct FakeServer {
    port: u16,
    seen: Arc<Seen>,
}

impl FakeServer {
    fn start() -> FakeServer {
        FakeServer::start_with(None)
    }

    /// With TLS, e.g. requiring client certificates.
    fn start_with(tls: Option<tonic::transport::ServerTlsConfig>) -> FakeServer {
        let seen = Arc::new(Seen::default());
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let svc = Fake(seen.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let port = listener.local_addr().expect("local addr").port();
                port_tx.send(port).expect("send port");
                let mut builder = tonic::transport::Server::builder();
                if let Some(tls) = tls {
                    builder = builder.tls_config(tls).expect("server TLS config");
                }
                builder
                    .add_service(StreamCellSqlServer::new(svc))
                    .serve_with_incoming(TcpListenerStream::new(listener))
                    .await
                    .expect("serve");
            });
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("fake server port");
        FakeServer { port, seen }
    }

    fn calls(&self) -> Vec<String> {
        self.seen
            .calls
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// `streamcell sql --port <port>` plus `args`, stdin closed unless set otherwise.
    fn shell(&self, args: &[&str]) -> Command {
        let mut c = Command::new(common::bin());
        c.args(["sql", "--port", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("run streamcell sql")
}

/// Runs with `input` on stdin.
fn run_with_stdin(mut cmd: Command, input: &str) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    child.wait_with_output().expect("wait")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const SELECT_1_OUT: &str = r#"{"product": "Apple", "max_len": 10.0}
{"product": "Pear", "max_len": 2.5}
{"product": "Apple", "max_len": 20.0}
"#;

#[test]
fn execute_flag_runs_each_statement_as_one_call() {
    let srv = FakeServer::start();
    let o = run(srv.shell(&[
        "-e",
        "INSERT INTO s (a) VALUES ('x;y'); SELECT 1; -- comment\nCREATE STREAM t",
    ]));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), format!("Done.\n{SELECT_1_OUT}Done.\n"));
    assert_eq!(stderr(&o), "");
    assert_eq!(
        srv.calls(),
        [
            "INSERT INTO s (a) VALUES ('x;y');",
            "SELECT 1;",
            "-- comment\nCREATE STREAM t"
        ]
    );
}

#[test]
fn a_failing_statement_stops_the_run_with_exit_code_1() {
    let srv = FakeServer::start();
    let o = run(srv.shell(&["-e", "INSERT INTO s (a) VALUES (1); SELECT boom; SELECT 1;"]));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "Done.\n");
    assert_eq!(
        stderr(&o),
        "ERROR: syntax error at line 1, column 8: expected an expression, found boom\n"
    );
    assert_eq!(
        srv.calls(),
        ["INSERT INTO s (a) VALUES (1);", "SELECT boom;"]
    );

    // Other codes than INVALID_ARGUMENT are named.
    let o = run(srv.shell(&["-e", "SELECT * FROM missing;"]));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "ERROR (NOT_FOUND): stream \"missing\" does not exist\n"
    );
}

#[test]
fn file_flag_runs_the_files_statements() {
    let srv = FakeServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("script.sql");
    std::fs::write(
        &path,
        "-- set up\nCREATE STREAM s;\n\nINSERT INTO s (a, b)\n  VALUES ('semi;colon', \"q;\");\n\
         /* a block; comment */\nSELECT 1\n;\n-- trailing comment\n",
    )
    .expect("write script");
    let o = run(srv.shell(&["-f", path.to_str().expect("utf-8 path")]));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), format!("Done.\nDone.\n{SELECT_1_OUT}"));
    assert_eq!(
        srv.calls(),
        [
            "-- set up\nCREATE STREAM s;",
            "INSERT INTO s (a, b)\n  VALUES ('semi;colon', \"q;\");",
            "/* a block; comment */\nSELECT 1\n;",
        ]
    );

    // A failing statement in a file.
    std::fs::write(&path, "CREATE STREAM s;\nSELECT boom;\nCREATE STREAM t;\n").expect("write");
    let o = run(srv.shell(&["-f", path.to_str().expect("utf-8 path")]));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "Done.\n");
    assert!(stderr(&o).starts_with("ERROR: syntax error at line 1, column 8"));

    // A file that is not there.
    let o = run(srv.shell(&["-f", "/nonexistent/script.sql"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read /nonexistent/script.sql"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn statements_piped_on_stdin() {
    let srv = FakeServer::start();
    let o = run_with_stdin(
        srv.shell(&[]),
        "CREATE STREAM s;\nSELECT\n  1;  INSERT INTO s (a)\nVALUES (1)",
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), format!("Done.\n{SELECT_1_OUT}Done.\n"));
    assert_eq!(
        srv.calls(),
        [
            "CREATE STREAM s;",
            "SELECT\n  1;",
            "INSERT INTO s (a)\nVALUES (1)"
        ]
    );

    // `-f -` is stdin too; an error stops there.
    let o = run_with_stdin(
        srv.shell(&["-f", "-"]),
        "CREATE STREAM s;\nSELECT boom;\nSELECT 1;\n",
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "Done.\n");
    assert!(stderr(&o).starts_with("ERROR: syntax error"));
    assert_eq!(srv.calls().len(), 5);

    // Nothing but comments: nothing to send.
    let o = run_with_stdin(srv.shell(&[]), "-- nothing\n/* at all */\n;\n");
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "");
    assert_eq!(srv.calls().len(), 5);
}

#[test]
fn connection_refused_names_the_address() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let mut cmd = Command::new(common::bin());
    cmd.args(["sql", "--port", &port.to_string(), "-e", "SELECT 1;"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let o = run(cmd);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("connection refused"),
        "{err}"
    );
    assert_eq!(stdout(&o), "");
}

#[test]
fn bad_flags_exit_with_code_2() {
    let srv = FakeServer::start();
    // A client certificate needs its key (and a CA).
    let o = run(srv.shell(&["--tls-cert", "c.pem", "-e", "SELECT 1;"]));
    assert_eq!(o.status.code(), Some(2));
    // -e and -f together.
    let o = run(srv.shell(&["-e", "SELECT 1;", "-f", "x.sql"]));
    assert_eq!(o.status.code(), Some(2));
    // A CA file that is not there.
    let o = run(srv.shell(&["--tls-ca", "/nonexistent/ca.pem", "-e", "SELECT 1;"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/ca.pem"), "{}", stderr(&o));
    assert!(srv.calls().is_empty());
}

/// Waits for the first row of a push query on the child's stdout, sends SIGINT, and returns
/// the exit code and how long the exit took.
fn interrupt_after_first_row(child: &mut Child) -> (Option<i32>, Duration) {
    let out = child.stdout.take().expect("stdout");
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Rows arrive while the call is running: stdout is flushed per item, not at exit.
    let first = line_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a row before Ctrl-C");
    assert_eq!(first, r#"{"n": 0}"#);
    // SAFETY: kill only sends a signal to the child we started.
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let sent = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return (status.code(), sent.elapsed());
        }
        if sent.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("streamcell sql did not exit after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the fake server noticed `n` cancelled push queries.
fn wait_cancelled(srv: &FakeServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while srv.seen.cancelled.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "the server did not see the call end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_stops_a_push_query_with_exit_code_130() {
    let srv = FakeServer::start();
    // Statements piped on stdin, which stays open: the shell is busy with the push query.
    let mut child = srv.shell(&[]).stdin(Stdio::piped()).spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"SELECT * FROM s -- forever\nEMIT CHANGES;\n")
        .expect("write stdin");
    stdin.flush().expect("flush stdin");
    let (code, took) = interrupt_after_first_row(&mut child);
    assert_eq!(code, Some(130));
    assert!(took < Duration::from_secs(2), "took {took:?}");
    wait_cancelled(&srv, 1);
    drop(stdin);

    // The same with -e.
    let mut child = srv
        .shell(&["-e", "SELECT forever EMIT CHANGES; SELECT 1;"])
        .spawn()
        .expect("spawn");
    let (code, took) = interrupt_after_first_row(&mut child);
    assert_eq!(code, Some(130));
    assert!(took < Duration::from_secs(2), "took {took:?}");
    wait_cancelled(&srv, 2);
    // The statement after the push query never ran.
    assert_eq!(srv.calls().len(), 2);
}

/// Runs openssl (the CLI, as the Python TLS tests do) in `dir` with space-separated `args`.
fn openssl(dir: &std::path::Path, args: &str) {
    let o = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("openssl (the CLI) is needed for the TLS test");
    assert!(o.status.success(), "openssl {args}: {}", stderr(&o));
}

#[test]
fn mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let write = |f: &str, text: &str| std::fs::write(d.join(f), text).expect("write");
    write("server.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    write("client.ext", "extendedKeyUsage=clientAuth\n");
    openssl(
        d,
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -subj /CN=ca -days 2",
    );
    for n in ["server", "client"] {
        openssl(
            d,
            &format!("req -newkey rsa:2048 -nodes -keyout {n}.key -out {n}.csr -subj /CN={n}"),
        );
        openssl(
            d,
            &format!(
                "x509 -req -in {n}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {n}.pem \
                 -extfile {n}.ext -days 2"
            ),
        );
    }
    let read = |f: &str| std::fs::read(d.join(f)).expect("read PEM");
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            read("server.pem"),
            read("server.key"),
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(read("ca.pem")));
    let srv = FakeServer::start_with(Some(tls));
    let dir_arg = d.to_string_lossy();
    // `streamcell sql --port <port>` with space-separated flags, `{d}` standing for the
    // certificates' directory, and `-e stmt`.
    let shell = |flags: &str, stmt: &str| {
        let flags = flags.replace("{d}", &dir_arg);
        let mut args: Vec<&str> = flags.split_whitespace().collect();
        args.extend(["-e", stmt]);
        run(srv.shell(&args))
    };
    let mtls = "--tls-ca {d}/ca.pem --tls-cert {d}/client.pem --tls-key {d}/client.key";

    let o = shell(mtls, "SELECT 1;");
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), SELECT_1_OUT);
    // By name, which the certificate also carries.
    let o = shell(&format!("--host localhost {mtls}"), "CREATE STREAM s;");
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "Done.\n");
    assert_eq!(srv.calls().len(), 2);

    // Without a client certificate, without TLS, or for a name the server certificate does
    // not carry, nothing gets through.
    for flags in [
        "--tls-ca {d}/ca.pem".to_string(),
        String::new(),
        format!("{mtls} --tls-domain other.example"),
    ] {
        let o = shell(&flags, "SELECT 1;");
        assert_eq!(o.status.code(), Some(1), "{flags}");
        let err = stderr(&o);
        assert!(err.starts_with("ERROR"), "{flags}: {err}");
        assert!(err.contains(&format!("127.0.0.1:{}", srv.port)), "{err}");
    }
    assert_eq!(srv.calls().len(), 2);
}

/// A pseudo-terminal for the interactive shell: the child's side and, for the test, a writer
/// and everything the shell wrote so far. The reader answers the shell's cursor position
/// queries (`ESC [6n`) as a terminal would.
struct Terminal {
    input: std::fs::File,
    screen: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    /// Opens a pty and returns it with the child's end.
    fn open() -> (Terminal, std::os::fd::OwnedFd) {
        use std::os::fd::FromRawFd;
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two new descriptors, which are owned from here on.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and belong to nobody else.
        let (master, slave) = unsafe {
            (
                std::fs::File::from_raw_fd(master),
                std::os::fd::OwnedFd::from_raw_fd(slave),
            )
        };
        let screen = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, mut answer) = (
            master.try_clone().expect("clone pty"),
            master.try_clone().expect("clone pty"),
        );
        let shared = screen.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            let mut queries_answered = 0;
            // Ends with EIO once the child has exited and the last descriptor is closed.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                let Ok(mut screen) = shared.lock() else {
                    return;
                };
                screen.extend_from_slice(&buf[..n]);
                let queries = screen.windows(4).filter(|w| w == b"\x1b[6n").count();
                while queries_answered < queries {
                    let _ = answer.write_all(b"\x1b[1;1R");
                    queries_answered += 1;
                }
            }
        });
        (
            Terminal {
                input: master,
                screen,
            },
            slave,
        )
    }

    fn text(&self) -> String {
        let bytes = self.screen.lock().map(|s| s.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Waits until the screen shows `what` `count` times in all.
    fn wait_for(&self, what: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.text().matches(what).count() < count {
            assert!(
                Instant::now() < deadline,
                "no {count}x {what:?} on the screen:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn type_keys(&mut self, keys: &str) {
        self.input.write_all(keys.as_bytes()).expect("type");
        self.input.flush().expect("flush");
    }
}

#[test]
fn interactive_session_in_a_terminal() {
    use std::os::unix::process::CommandExt;
    let srv = FakeServer::start();
    let home = tempfile::tempdir().expect("tempdir");
    let (mut term, child_end) = Terminal::open();
    let mut cmd = srv.shell(&[]);
    cmd.env("HOME", home.path())
        .env("TERM", "xterm")
        .stdin(child_end.try_clone().expect("clone"))
        .stdout(child_end.try_clone().expect("clone"))
        .stderr(child_end);
    // SAFETY: only async-signal-safe calls between fork and exec. The child gets a session
    // of its own with the pty (its stdin) as controlling terminal, so that Ctrl-C typed on
    // it becomes a SIGINT for the child, as in a real terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn");
    drop(cmd);

    term.wait_for("streamcell> ", 1);
    // A statement over two lines: the second prompt is the continuation prompt.
    term.type_keys("SELECT 1,\r");
    term.wait_for("         -> ", 1);
    term.type_keys("  'a;b';\r");
    term.wait_for(r#"{"product": "Apple", "max_len": 20.0}"#, 1);
    term.wait_for("streamcell> ", 2);
    // An error is reported and the shell goes on.
    term.type_keys("SELECT boom;\r");
    term.wait_for("ERROR: syntax error at line 1, column 8", 1);
    term.wait_for("streamcell> ", 3);
    // Ctrl-C stops a push query and returns to the prompt.
    term.type_keys("SELECT forever EMIT CHANGES;\r");
    term.wait_for(r#"{"n": 2}"#, 1);
    term.type_keys("\x03");
    term.wait_for("Cancelled.", 1);
    term.wait_for("streamcell> ", 4);
    wait_cancelled(&srv, 1);
    // Ctrl-C at the prompt drops the typed input.
    term.type_keys("SELECT 2,\r");
    term.wait_for("         -> ", 2);
    term.type_keys("\x03");
    term.wait_for("streamcell> ", 5);
    term.type_keys("help\r");
    term.wait_for("leave the shell", 1);
    term.wait_for("streamcell> ", 6);
    term.type_keys("CREATE STREAM s;\r");
    term.wait_for("Done.", 1);
    term.wait_for("streamcell> ", 7);
    term.type_keys("\\q\r");

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the shell did not leave on \\q:\n{}", term.text());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0), "{}", term.text());
    assert_eq!(
        srv.calls(),
        [
            "SELECT 1,\n  'a;b';",
            "SELECT boom;",
            "SELECT forever EMIT CHANGES;",
            "CREATE STREAM s;"
        ]
    );
    // The history holds whole statements (multi-line ones escaped by rustyline).
    let history =
        std::fs::read_to_string(home.path().join(".streamcell_history")).expect("history file");
    assert!(
        history.contains("SELECT 1,\\n  'a;b';\n") && history.contains("CREATE STREAM s;\n"),
        "{history}"
    );
    assert!(!history.contains("SELECT 2,"), "{history}");
}
