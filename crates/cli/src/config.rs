//! Server configuration: command-line flags over an optional TOML file over defaults. Every
//! key of the file has the flag's name (with `_` or `-`), e.g. `data_dir = "/var/lib/sc"`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use streamcell_admission::Secret;
use streamcell_datacell::Cidr;

use crate::server::ServerConfig;
use streamcell_store::SyncPolicy;

/// Flags of `streamcell server`. Every one is optional so that the file and the defaults can
/// fill what is not given.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct ServerFlags {
    /// Directory holding the data (created if missing) [default: ./streamcell-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1]
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,
    /// gRPC port, HStreamDB API (0 picks a free port) [default: 6570]
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// PostgreSQL wire protocol port: psql, psycopg, JDBC, Grafana (0 picks a free port)
    /// [default: 6572]
    #[arg(long, value_name = "PORT")]
    pub pg_port: Option<u16>,
    /// A user allowed on every door (repeat for more): SCRAM-SHA-256 on the PostgreSQL port,
    /// Basic credentials on gRPC and HTTP. Once any user, token or --tls-ca is set, every
    /// door requires credentials [default: none: anyone who can reach a port may connect]
    #[arg(
        long = "user",
        value_name = "NAME:PASSWORD",
        env = "STREAMCELL_USER",
        hide_env_values = true
    )]
    pub users: Vec<String>,
    /// An access token: `authorization: Bearer TOKEN` on gRPC (the official clients' call
    /// credentials) and HTTP, and the password of the user `token` on the PostgreSQL port;
    /// at least 16 visible ASCII characters
    #[arg(
        long,
        value_name = "TOKEN",
        env = "STREAMCELL_AUTH_TOKEN",
        hide_env_values = true
    )]
    pub auth_token: Option<String>,
    /// Older spelling of --user: the user name that goes with --pg-password [default:
    /// streamcell]
    #[arg(long, value_name = "NAME")]
    pub pg_user: Option<String>,
    /// Older spelling of --user: adds the user --pg-user with this password (on every door)
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "STREAMCELL_PG_PASSWORD",
        hide_env_values = true
    )]
    pub pg_password: Option<String>,
    /// Serve /health and /metrics without credentials (for probes and Prometheus)
    #[arg(long)]
    pub open_health: bool,
    /// Most connections open at once on each port (gRPC, PostgreSQL, HTTP); more are closed
    /// at once [default: 1000, lowered to fit the open-file limit]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Let DataCell emitters (and active receptors) connect to this address block too, e.g.
    /// 10.0.0.0/8 or 192.0.2.7 (repeatable) [default: loopback only]
    #[arg(long, value_name = "ADDRESS[/PREFIX]")]
    pub emitter_allow: Vec<Cidr>,
    /// Start even with part of the security configured: credentials without TLS (they
    /// cross the network in clear), or TLS without credentials (anyone may connect)
    #[arg(long)]
    pub allow_partial_security: bool,
    /// HTTP port: /health, /metrics and the /api/v1 REST API (0 picks a free port)
    /// [default: 6580]
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
    /// Address clients are told to connect to [default: the bind address; 127.0.0.1 when
    /// binding to all interfaces]
    #[arg(long, value_name = "HOST")]
    pub advertised_address: Option<String>,
    /// This server's node id, as DescribeCluster reports it [default: 1]
    #[arg(long, value_name = "ID")]
    pub node_id: Option<u32>,
    /// When an append is made durable: always (fdatasync before every ack, shared by
    /// concurrent appends), interval[:MS] (sync at least every MS, default 100), or never
    /// (leave it to the OS) [default: always]
    #[arg(long, value_name = "POLICY")]
    pub sync: Option<SyncPolicy>,
    /// Largest batch accepted by Append, in bytes, up to 134217728 [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub max_record_size: Option<usize>,
    /// Size at which a shard's log starts a new segment file, in bytes [default: 67108864]
    #[arg(long, value_name = "BYTES")]
    pub segment_bytes: Option<u64>,
    /// Threads that write and sync shard logs [default: 2]
    #[arg(long, value_name = "N")]
    pub committer_threads: Option<usize>,
    /// Seconds between retention passes, 1 to 86400 [default: 5]
    #[arg(long, value_name = "SECS")]
    pub retention_check_secs: Option<u64>,
    /// TLS on every port (gRPC, PostgreSQL, HTTP): certificate chain (PEM); needs --tls-key.
    /// Once set, clients must use TLS on all three
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Client certificates signed by this CA (PEM) are a credential on every door; with no
    /// --user or --auth-token they are the only one, and required
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// TOML file with any of the settings above; flags override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The configuration file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct FileConfig {
    #[serde(alias = "data-dir")]
    data_dir: Option<PathBuf>,
    bind: Option<IpAddr>,
    port: Option<u16>,
    #[serde(alias = "pg-port")]
    pg_port: Option<u16>,
    #[serde(alias = "pg-user")]
    pg_user: Option<String>,
    #[serde(alias = "pg-password")]
    pg_password: Option<String>,
    /// `[users]` table: name = "password".
    users: Option<std::collections::BTreeMap<String, String>>,
    #[serde(alias = "auth-token")]
    auth_token: Option<String>,
    #[serde(alias = "open-health")]
    open_health: Option<bool>,
    #[serde(alias = "emitter-allow")]
    emitter_allow: Option<Vec<String>>,
    #[serde(alias = "max-connections")]
    max_connections: Option<usize>,
    #[serde(alias = "allow-partial-security")]
    allow_partial_security: Option<bool>,
    #[serde(alias = "http-port")]
    http_port: Option<u16>,
    #[serde(alias = "advertised-address")]
    advertised_address: Option<String>,
    #[serde(alias = "node-id")]
    node_id: Option<u32>,
    sync: Option<String>,
    #[serde(alias = "max-record-size")]
    max_record_size: Option<usize>,
    #[serde(alias = "segment-bytes")]
    segment_bytes: Option<u64>,
    #[serde(alias = "committer-threads")]
    committer_threads: Option<usize>,
    #[serde(alias = "retention-check-secs")]
    retention_check_secs: Option<u64>,
    #[serde(alias = "tls-cert")]
    tls_cert: Option<PathBuf>,
    #[serde(alias = "tls-key")]
    tls_key: Option<PathBuf>,
    #[serde(alias = "tls-ca")]
    tls_ca: Option<PathBuf>,
}

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A `--user` value without a `:`.
    #[error("--user wants NAME:PASSWORD, got a value without ':'")]
    User,
    /// A password or token given empty (an unset variable, say): refused rather than
    /// starting without it.
    #[error("{0} is empty; give a value or leave it out")]
    EmptySecret(&'static str),
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

impl ServerFlags {
    /// Merges flags over the file (if any) over the defaults.
    pub(crate) fn resolve(self) -> Result<ServerConfig, ConfigError> {
        let file = match &self.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let sync = match (self.sync, file.sync) {
            (Some(s), _) => Some(s),
            (None, Some(text)) => Some(text.parse().map_err(|message| ConfigError::Parse {
                path: self.config.clone().unwrap_or_default(),
                message,
            })?),
            (None, None) => None,
        };
        let d = ServerConfig::default();
        // Flags replace the file's users; --pg-password adds the user --pg-user.
        let mut users: Vec<(String, Secret)> = if self.users.is_empty() {
            file.users
                .unwrap_or_default()
                .into_iter()
                .map(|(u, p)| (u, Secret::new(p)))
                .collect()
        } else {
            self.users
                .iter()
                .map(|v| {
                    v.split_once(':')
                        .map(|(u, p)| (u.to_string(), Secret::new(p)))
                        .ok_or(ConfigError::User)
                })
                .collect::<Result<_, _>>()?
        };
        if let Some(p) = self.pg_password.or(file.pg_password) {
            if p.is_empty() {
                return Err(ConfigError::EmptySecret("--pg-password"));
            }
            let name = self
                .pg_user
                .or(file.pg_user)
                .unwrap_or_else(|| "streamcell".into());
            users.retain(|(u, _)| *u != name);
            users.push((name, Secret::new(p)));
        }
        Ok(ServerConfig {
            data_dir: self.data_dir.or(file.data_dir).unwrap_or(d.data_dir),
            bind: self.bind.or(file.bind).unwrap_or(d.bind),
            port: self.port.or(file.port).unwrap_or(d.port),
            pg_port: self.pg_port.or(file.pg_port).unwrap_or(d.pg_port),
            users,
            auth_token: match self.auth_token.or(file.auth_token) {
                Some(t) if t.is_empty() => return Err(ConfigError::EmptySecret("--auth-token")),
                t => t.map(Secret::new),
            },
            open_health: self.open_health || file.open_health.unwrap_or(d.open_health),
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(d.max_connections),
            emitter_allow: if self.emitter_allow.is_empty() {
                file.emitter_allow
                    .unwrap_or_default()
                    .iter()
                    .map(|c| {
                        c.parse().map_err(|message| ConfigError::Parse {
                            path: self.config.clone().unwrap_or_default(),
                            message: format!("emitter_allow: {message}"),
                        })
                    })
                    .collect::<Result<_, _>>()?
            } else {
                self.emitter_allow
            },
            allow_partial_security: self.allow_partial_security
                || file
                    .allow_partial_security
                    .unwrap_or(d.allow_partial_security),
            http_port: self.http_port.or(file.http_port).unwrap_or(d.http_port),
            advertised_address: self.advertised_address.or(file.advertised_address),
            node_id: self.node_id.or(file.node_id).unwrap_or(d.node_id),
            sync: sync.unwrap_or(d.sync),
            max_record_size: self
                .max_record_size
                .or(file.max_record_size)
                .unwrap_or(d.max_record_size),
            segment_bytes: self
                .segment_bytes
                .or(file.segment_bytes)
                .unwrap_or(d.segment_bytes),
            committer_threads: self
                .committer_threads
                .or(file.committer_threads)
                .unwrap_or(d.committer_threads),
            retention_check_interval: self
                .retention_check_secs
                .or(file.retention_check_secs)
                .map_or(d.retention_check_interval, Duration::from_secs),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            tls_ca: self.tls_ca.or(file.tls_ca),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sc.toml");
        std::fs::write(
            &path,
            "data-dir = \"/tmp/x\"\nport = 7000\nsync = \"interval:50\"\nmax_record_size = 2048\n",
        )
        .expect("write");
        let flags = ServerFlags {
            port: Some(7001),
            config: Some(path),
            ..Default::default()
        };
        let c = flags.resolve().expect("resolve");
        assert_eq!(c.port, 7001);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.sync, SyncPolicy::Interval(Duration::from_millis(50)));
        assert_eq!(c.max_record_size, 2048);
        assert_eq!(c.http_port, 6580);
    }

    #[test]
    fn users_come_from_flags_or_the_file_and_pg_password_adds_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sc.toml");
        std::fs::write(
            &path,
            "auth-token = \"0123456789abcdef\"\nopen_health = true\n[users]\nrobot = \"a:b\"\n",
        )
        .expect("write");
        let c = ServerFlags {
            config: Some(path.clone()),
            ..Default::default()
        }
        .resolve()
        .expect("resolve");
        assert_eq!(c.users, vec![("robot".into(), Secret::new("a:b"))]);
        assert_eq!(c.auth_token, Some(Secret::new("0123456789abcdef")));
        assert!(c.open_health && !c.allow_partial_security);
        let c = ServerFlags {
            config: Some(path),
            users: vec!["ops:pw:with:colons".into()],
            pg_password: Some("old".into()),
            ..Default::default()
        }
        .resolve()
        .expect("resolve");
        assert_eq!(
            c.users,
            vec![
                ("ops".into(), Secret::new("pw:with:colons")),
                ("streamcell".into(), Secret::new("old"))
            ]
        );
        assert!(format!("{c:?}").contains("<secret>") && !format!("{c:?}").contains("old\""));
        let err = ServerFlags {
            users: vec!["nocolon".into()],
            ..Default::default()
        }
        .resolve()
        .expect_err("no colon");
        assert!(err.to_string().contains("NAME:PASSWORD"), "{err}");
    }

    #[test]
    fn bad_files_are_reported_with_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sc.toml");
        std::fs::write(&path, "prot = 1\n").expect("write");
        let err = ServerFlags {
            config: Some(path.clone()),
            ..Default::default()
        }
        .resolve()
        .expect_err("unknown key");
        assert!(err.to_string().contains("prot"), "{err}");
        std::fs::write(&path, "sync = \"sometimes\"\n").expect("write");
        let err = ServerFlags {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .expect_err("bad sync");
        assert!(err.to_string().contains("sometimes"), "{err}");
    }
}
