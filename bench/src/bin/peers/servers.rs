//! The servers under test: a StreamCell, Redis or NATS server process started on a free
//! 127.0.0.1 port with a fresh data directory in one of three durability modes, probed until it
//! answers, measured through `/proc` (RSS, CPU), and killed (politely, or with SIGKILL and
//! restarted on the same directory for the recovery case).
//!
//! Every setting each server gets is here, in one place, so the documentation in
//! `bench/README.md` can be checked against it.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamcell_bench::{echo, free_ports, io_err, log_tail, BenchError, Result};

/// How long a server may take to answer its first request (also after `kill -9` with a large
/// log to recover).
pub const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Between readiness probes: the resolution of the cold-start and recovery figures.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);

/// The systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    StreamCell,
    Redis,
    Nats,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::StreamCell => "streamcell",
            System::Redis => "redis",
            System::Nats => "nats",
        }
    }
}

impl std::str::FromStr for System {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "streamcell" => Ok(System::StreamCell),
            "redis" => Ok(System::Redis),
            "nats" => Ok(System::Nats),
            other => Err(format!(
                "unknown system {other:?}: expected streamcell, redis or nats"
            )),
        }
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// When a system acknowledges a write, from most to least durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every acknowledgement follows an `fsync`/`fdatasync` of the data: StreamCell
    /// `--sync always` (its default), Redis `appendfsync always`, NATS `sync_interval: always`.
    Fsync,
    /// Acknowledged once written to the OS; flushed to disk in the background. StreamCell
    /// `--sync interval:1000`, Redis `appendfsync everysec` (Redis's recommended setting), NATS
    /// JetStream file storage with its default `sync_interval` (2 minutes; NATS's default).
    Os,
    /// Nothing persisted on the write path: Redis without AOF or RDB, NATS memory storage.
    /// StreamCell has no in-memory streams: `--sync never` still writes its log files but never
    /// syncs them before acknowledging.
    Memory,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Os => "os",
            Durability::Memory => "memory",
        }
    }

    /// The setting as each system spells it (for the report).
    pub fn setting(self, system: System) -> &'static str {
        match (system, self) {
            (System::StreamCell, Durability::Fsync) => "--sync always (default)",
            (System::StreamCell, Durability::Os) => "--sync interval:1000",
            (System::StreamCell, Durability::Memory) => "--sync never (still writes files)",
            (System::Redis, Durability::Fsync) => "appendonly yes, appendfsync always",
            (System::Redis, Durability::Os) => "appendonly yes, appendfsync everysec (recommended)",
            (System::Redis, Durability::Memory) => "appendonly no, save \"\"",
            (System::Nats, Durability::Fsync) => "file storage, sync_interval: always",
            (System::Nats, Durability::Os) => "file storage, default sync_interval (2 min)",
            (System::Nats, Durability::Memory) => "memory storage",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "os" => Ok(Durability::Os),
            "memory" => Ok(Durability::Memory),
            other => Err(format!(
                "unknown durability {other:?}: expected fsync, os or memory"
            )),
        }
    }
}

/// Where each server binary is.
#[derive(Debug, Clone)]
pub struct Bins {
    pub streamcell: PathBuf,
    pub redis: PathBuf,
    pub nats: PathBuf,
}

impl Bins {
    pub fn path(&self, system: System) -> &Path {
        match system {
            System::StreamCell => &self.streamcell,
            System::Redis => &self.redis,
            System::Nats => &self.nats,
        }
    }

    /// The binary as a file: `name` alone is looked up on `PATH`.
    pub fn resolve(&self, system: System) -> Result<PathBuf> {
        let p = self.path(system);
        if p.components().count() > 1 {
            return if p.is_file() {
                Ok(p.to_path_buf())
            } else {
                Err(BenchError::ServerStart(format!(
                    "{system} server binary {} not found",
                    p.display()
                )))
            };
        }
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .map(|dir| dir.join(p))
            .find(|c| c.is_file())
            .ok_or_else(|| {
                BenchError::ServerStart(format!(
                    "{system} server binary {} not found on PATH (bench/run.sh installs it)",
                    p.display()
                ))
            })
    }

    /// What the binary says its version is (first line of `--version`).
    pub fn version(&self, system: System) -> String {
        let Ok(bin) = self.resolve(system) else {
            return "not found".into();
        };
        match Command::new(&bin).arg("--version").output() {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
            Err(e) => format!("unknown ({e})"),
        }
    }
}

/// One running server. Dropping it kills the process and deletes its directory.
pub struct Server {
    pub system: System,
    pub durability: Durability,
    bin: PathBuf,
    child: Child,
    /// Holds `data/`, the NATS config file and `server.log`.
    dir: tempfile::TempDir,
    /// The client port (gRPC, RESP, NATS).
    pub port: u16,
    /// StreamCell's PostgreSQL and HTTP ports (unused, but they must be free).
    extra_ports: Vec<u16>,
}

impl Server {
    /// Starts a fresh server and waits until it answers; returns it with the time from spawning
    /// the process to its first successful answer (the cold start).
    pub async fn start(
        system: System,
        durability: Durability,
        bins: &Bins,
    ) -> Result<(Server, Duration)> {
        let bin = bins.resolve(system)?;
        let ports = free_ports(3)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("peers-{system}-"))
            .tempdir()
            .map_err(io_err("creating a temporary data directory"))?;
        std::fs::create_dir(dir.path().join("data"))
            .map_err(io_err("creating the data directory"))?;
        let (child, started) = spawn(system, durability, &bin, dir.path(), &ports)?;
        let mut server = Server {
            system,
            durability,
            bin,
            child,
            dir,
            port: ports[0],
            extra_ports: ports[1..].to_vec(),
        };
        let ready = server.wait_ready(started).await?;
        Ok((server, ready))
    }

    /// `kill -9`, then starts the same server on the same directory and port; returns the time
    /// from spawning it to its first successful answer.
    pub async fn kill9_and_restart(&mut self) -> Result<Duration> {
        self.child
            .kill()
            .map_err(io_err(format!("killing {}", self.system)))?;
        self.child
            .wait()
            .map_err(io_err(format!("waiting for {}", self.system)))?;
        let mut ports = vec![self.port];
        ports.extend(&self.extra_ports);
        let (child, started) = spawn(
            self.system,
            self.durability,
            &self.bin,
            self.dir.path(),
            &ports,
        )?;
        self.child = child;
        self.wait_ready(started).await
    }

    async fn wait_ready(&mut self, started: Instant) -> Result<Duration> {
        let deadline = started + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(io_err("checking the server process"))?
            {
                return Err(BenchError::ServerStart(format!(
                    "{} exited with {status} before answering; last log lines:\n{}",
                    self.system,
                    log_tail(&self.log_path(), 30)
                )));
            }
            let last_error = match tokio::time::timeout(
                Duration::from_secs(5),
                probe(self.system, &self.addr()),
            )
            .await
            {
                Ok(Ok(())) => return Ok(started.elapsed()),
                Ok(Err(e)) => e,
                Err(_) => "the probe timed out".to_string(),
            };
            if Instant::now() > deadline {
                return Err(BenchError::ServerStart(format!(
                    "{} did not answer within {READY_TIMEOUT:?} (last error: {last_error}); last \
                     log lines:\n{}",
                    self.system,
                    log_tail(&self.log_path(), 30)
                )));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Current and peak resident set size in KiB (`VmRSS`, `VmHWM`).
    pub fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// CPU seconds (user + system) the server has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        streamcell_bench::cpu_seconds(Some(self.pid())).unwrap_or(0.0)
    }

    /// Bytes under the data directory.
    pub fn data_bytes(&self) -> u64 {
        dir_bytes(&self.data_dir())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Spawns the server process with every setting of its durability mode; stdout and stderr go
/// to `dir/server.log` (appended to, so a restart keeps the first run's lines).
fn spawn(
    system: System,
    durability: Durability,
    bin: &Path,
    dir: &Path,
    ports: &[u16],
) -> Result<(Child, Instant)> {
    let data = dir.join("data");
    let log_path = dir.join("server.log");
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err(format!("opening {}", log_path.display())))?;
    let log_err = log
        .try_clone()
        .map_err(io_err("duplicating the log handle"))?;
    let mut cmd = Command::new(bin);
    match system {
        System::StreamCell => {
            let sync = match durability {
                Durability::Fsync => "always",
                Durability::Os => "interval:1000",
                Durability::Memory => "never",
            };
            cmd.arg("server")
                .arg("--data-dir")
                .arg(&data)
                .args(["--bind", "127.0.0.1"])
                .args(["--port", &ports[0].to_string()])
                .args(["--pg-port", &ports[1].to_string()])
                .args(["--http-port", &ports[2].to_string()])
                .args(["--sync", sync]);
        }
        System::Redis => {
            cmd.args(["--bind", "127.0.0.1"])
                .args(["--port", &ports[0].to_string()])
                .arg("--dir")
                .arg(&data)
                .args(["--save", ""])
                .args(["--protected-mode", "no"])
                .args(["--daemonize", "no"])
                .args(["--logfile", ""]);
            match durability {
                Durability::Fsync => cmd.args(["--appendonly", "yes", "--appendfsync", "always"]),
                Durability::Os => cmd.args(["--appendonly", "yes", "--appendfsync", "everysec"]),
                Durability::Memory => cmd.args(["--appendonly", "no"]),
            };
        }
        System::Nats => {
            // Memory mode still enables JetStream with a store directory: the stream itself
            // is created with memory storage (clients.rs).
            let sync = match durability {
                Durability::Fsync => "\n  sync_interval: always",
                Durability::Os | Durability::Memory => "",
            };
            let conf = format!(
                "listen: \"127.0.0.1:{}\"\njetstream {{\n  store_dir: {:?}{sync}\n}}\n",
                ports[0],
                data.display().to_string()
            );
            let conf_path = dir.join("nats.conf");
            std::fs::write(&conf_path, conf)
                .map_err(io_err(format!("writing {}", conf_path.display())))?;
            cmd.arg("-c").arg(&conf_path);
        }
    }
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(io_err(format!("starting {}", bin.display())))?;
    Ok((child, started))
}

/// One readiness probe: a request that only a serving server answers. StreamCell: gRPC `Echo`.
/// Redis: `PING` answered `PONG` (while it loads its AOF it answers `LOADING`). NATS: a client
/// connection whose JetStream account info comes back (JetStream has recovered its streams).
async fn probe(system: System, addr: &str) -> std::result::Result<(), String> {
    match system {
        System::StreamCell => echo(addr).await.map_err(|e| e.to_string()),
        System::Redis => {
            let client =
                redis::Client::open(format!("redis://{addr}/")).map_err(|e| e.to_string())?;
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let pong: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if pong == "PONG" {
                Ok(())
            } else {
                Err(format!("PING answered {pong:?}"))
            }
        }
        System::Nats => {
            let client = async_nats::connect(addr).await.map_err(|e| e.to_string())?;
            let js = async_nats::jetstream::new(client);
            js.query_account().await.map_err(|e| e.to_string())?;
            Ok(())
        }
    }
}
