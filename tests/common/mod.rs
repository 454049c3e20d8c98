//! Test harness: runs the real `streamcell` binary on a port it picks itself, in a temporary
//! data directory, and gives tests a gRPC client. Every process is killed when dropped.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // test helpers: a failed expectation fails the test
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamcell_proto::api::EchoRequest;
use streamcell_proto::HStreamApiClient;
use tonic::transport::Channel;

/// The `streamcell` binary under test: `$STREAMCELL_BIN` if set, else the one cargo built
/// in this test's target directory (`target/<profile>/streamcell`, beside `deps/` where the
/// test runs from). `cargo test --workspace` builds it before any test runs; alone, run
/// `cargo build -p streamcell` first.
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("STREAMCELL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let bin = profile_dir.join(format!("streamcell{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} not found: build it with `cargo build -p streamcell` (`cargo test --workspace` \
         does), or name a binary in STREAMCELL_BIN",
        bin.display()
    );
    bin
}

/// A free 127.0.0.1 port (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running server process.
pub struct Server {
    pub child: Option<Child>,
    pub port: u16,
    /// The PostgreSQL wire protocol port.
    pub pg_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    extra: Vec<String>,
}

impl Server {
    /// Starts a server on `data_dir` with extra flags and waits until it answers.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let mut s = Server {
            child: None,
            port: free_port(),
            pg_port: free_port(),
            data_dir: data_dir.to_path_buf(),
            log: data_dir.with_extension("log"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn().await;
        s
    }

    fn command(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("server")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--pg-port", &self.pg_port.to_string()])
            .args(["--http-port", &free_port().to_string()])
            .args(&self.extra);
        c
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn streamcell");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = self.try_client().await {
                if c.echo(EchoRequest { msg: "up".into() }).await.is_ok() {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("server exited early with {status}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "server did not start: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn try_client(&self) -> Result<HStreamApiClient<Channel>, tonic::transport::Error> {
        let ch = Channel::from_shared(format!("http://127.0.0.1:{}", self.port))
            .expect("uri")
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await?;
        Ok(HStreamApiClient::new(ch).max_decoding_message_size(64 << 20))
    }

    pub async fn client(&self) -> HStreamApiClient<Channel> {
        self.try_client().await.expect("connect")
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Starts again on the same data directory and port.
    pub async fn restart(&mut self) {
        self.spawn().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What one SQL call printed, as `streamcell sql` would: rows and `Done.` lines.
pub type SqlLines = Vec<String>;

impl Server {
    /// A client of StreamCell's SQL service.
    pub async fn sql_client(
        &self,
    ) -> streamcell_proto::sqlapi::stream_cell_sql_client::StreamCellSqlClient<Channel> {
        let ch = Channel::from_shared(format!("http://127.0.0.1:{}", self.port))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        streamcell_proto::sqlapi::stream_cell_sql_client::StreamCellSqlClient::new(ch)
    }

    /// Runs statements that end (no push query) and returns the printed lines, or the error.
    pub async fn sql(&self, text: &str) -> Result<SqlLines, tonic::Status> {
        use streamcell_proto::sqlapi::{execute_response::Item, ExecuteRequest};
        let mut c = self.sql_client().await;
        let mut stream = c
            .execute(ExecuteRequest { sql: text.into() })
            .await?
            .into_inner();
        let mut lines = Vec::new();
        while let Some(msg) = stream.message().await? {
            match msg.item {
                Some(Item::Rows(r)) => lines.extend(r.json),
                Some(Item::Done(d)) if !d.message.is_empty() => lines.push(d.message),
                _ => {}
            }
        }
        Ok(lines)
    }

    /// Runs statements that must succeed.
    pub async fn sql_ok(&self, text: &str) -> SqlLines {
        match self.sql(text).await {
            Ok(l) => l,
            Err(e) => panic!("{text}: {e:?}\n{}", self.log_text()),
        }
    }

    /// Starts a push query and returns its first `n` rows (waiting at most `secs`), then
    /// cancels it.
    pub async fn push_rows(&self, text: &str, n: usize, secs: u64) -> SqlLines {
        let mut p = self.push(text).await;
        let rows = p.next_rows(n, secs).await;
        assert_eq!(rows.len(), n, "{text}: got only {rows:?}");
        rows
    }

    /// Starts a push query.
    pub async fn push(&self, text: &str) -> PushQuery {
        use streamcell_proto::sqlapi::ExecuteRequest;
        let mut c = self.sql_client().await;
        let stream = c
            .execute(ExecuteRequest { sql: text.into() })
            .await
            .unwrap_or_else(|e| panic!("{text}: {e:?}"))
            .into_inner();
        PushQuery {
            stream,
            buffered: Vec::new(),
        }
    }
}

/// A running push query.
pub struct PushQuery {
    pub stream: tonic::Streaming<streamcell_proto::sqlapi::ExecuteResponse>,
    buffered: Vec<String>,
}

impl PushQuery {
    /// The next `n` rows, or fewer if `secs` pass first (or the query ends).
    pub async fn next_rows(&mut self, n: usize, secs: u64) -> Vec<String> {
        use streamcell_proto::sqlapi::execute_response::Item;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while self.buffered.len() < n {
            match tokio::time::timeout_at(deadline, self.stream.message()).await {
                Ok(Ok(Some(msg))) => {
                    if let Some(Item::Rows(r)) = msg.item {
                        self.buffered.extend(r.json);
                    }
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => panic!("push query failed: {e:?}"),
                Err(_) => break,
            }
        }
        let k = n.min(self.buffered.len());
        self.buffered.drain(..k).collect()
    }

    /// Waits for the query to end with an error, and returns it.
    pub async fn error(&mut self, secs: u64) -> tonic::Status {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.stream.message()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => panic!("push query ended without an error"),
                Ok(Err(e)) => return e,
                Err(_) => panic!("push query did not fail within {secs}s"),
            }
        }
    }
}
