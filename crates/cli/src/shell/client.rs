//! The shell's side of the wire: the connection to the server's `streamcell.sql.StreamCellSql`
//! service (plain or TLS, made when first needed and kept), running one statement text as one
//! `Execute` call while printing its output as it arrives, and the shell's errors.

use std::io::Write;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use streamcell_proto::sqlapi::execute_response::Item;
use streamcell_proto::sqlapi::stream_cell_sql_client::StreamCellSqlClient;
use streamcell_proto::sqlapi::ExecuteRequest;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

/// How long connecting to the server may take before the shell gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response message accepted (one `rows` item can carry many rows).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// What can go wrong in the shell.
#[derive(Debug, thiserror::Error)]
pub(super) enum ShellError {
    /// Flags that do not fit together or files that cannot be used (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached.
    #[error("ERROR: cannot connect to the StreamCell server at {addr}: {detail}")]
    Connect { addr: String, detail: String },
    /// The server (or the transport) ended a call with an error.
    #[error("{}", describe_status(.status, .addr))]
    Status { status: Status, addr: String },
    /// Statements could not be read.
    #[error("cannot read {what}: {source}")]
    Input {
        what: String,
        source: std::io::Error,
    },
    /// The output could not be written (e.g. the reading end of a pipe was closed).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// Ctrl-C stopped the running statement.
    #[error("interrupted")]
    Interrupted,
}

/// The connection settings of `streamcell sql`.
#[derive(Clone)]
pub(super) struct Target {
    pub host: String,
    pub port: u16,
    /// CA certificate (PEM) to verify the server with; TLS is used when it is given.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for servers that require one.
    pub tls_identity: Option<(PathBuf, PathBuf)>,
    /// Name the server certificate must carry [default: the host].
    pub tls_domain: Option<String>,
    /// The `authorization` header sent with each call (`Basic …` or `Bearer …`).
    pub authorization: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls_ca", &self.tls_ca)
            .field("tls_identity", &self.tls_identity)
            .field("tls_domain", &self.tls_domain)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

/// A connection to the server, made when first needed.
pub(super) struct Connection {
    endpoint: Endpoint,
    addr: String,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    client: Option<StreamCellSqlClient<Channel>>,
}

impl Connection {
    /// Checks the settings and reads the TLS files; does not connect yet.
    pub(super) fn new(target: &Target) -> Result<Connection, ShellError> {
        // An IPv6 address needs brackets in a URI and reads better with them in messages.
        let host = if target.host.parse::<Ipv6Addr>().is_ok() {
            format!("[{}]", target.host)
        } else {
            target.host.clone()
        };
        let addr = format!("{host}:{}", target.port);
        let scheme = if target.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| ShellError::Usage(format!("invalid --host or --port ({addr}): {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        if let Some(ca) = &target.tls_ca {
            let mut tls =
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_pem(ca, "CA")?));
            if let Some((cert, key)) = &target.tls_identity {
                tls = tls.identity(Identity::from_pem(
                    read_pem(cert, "certificate")?,
                    read_pem(key, "key")?,
                ));
            }
            if let Some(domain) = &target.tls_domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| {
                let files = if target.tls_identity.is_some() {
                    "--tls-ca, --tls-cert and --tls-key"
                } else {
                    "--tls-ca"
                };
                ShellError::Usage(format!("TLS settings ({files}) rejected: {}", chain(&e)))
            })?;
        }
        let authorization = match &target.authorization {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| {
                ShellError::Usage(
                    "the user, password or token has characters a header cannot carry".into(),
                )
            })?),
        };
        Ok(Connection {
            endpoint,
            addr,
            authorization,
            client: None,
        })
    }

    /// `host:port` of the server, for messages.
    pub(super) fn addr(&self) -> &str {
        &self.addr
    }

    /// Connects unless already connected. A connection once made reconnects by itself.
    pub(super) async fn connect(
        &mut self,
    ) -> Result<&mut StreamCellSqlClient<Channel>, ShellError> {
        let client = match self.client.take() {
            Some(c) => c,
            None => {
                let channel = self
                    .endpoint
                    .connect()
                    .await
                    .map_err(|e| ShellError::Connect {
                        addr: self.addr.clone(),
                        detail: connect_detail(&e),
                    })?;
                StreamCellSqlClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES)
            }
        };
        Ok(self.client.insert(client))
    }

    /// Runs `sql` as one `Execute` call, writing each row (one JSON object per line, flushed
    /// per `rows` item) and each non-empty `done` message to `out` as they arrive.
    pub(super) async fn execute(
        &mut self,
        sql: &str,
        out: &mut dyn Write,
    ) -> Result<(), ShellError> {
        let addr = self.addr.clone();
        let status = |status: Status| ShellError::Status {
            status,
            addr: addr.clone(),
        };
        let mut request = tonic::Request::new(ExecuteRequest {
            sql: sql.to_string(),
        });
        if let Some(a) = &self.authorization {
            request.metadata_mut().insert("authorization", a.clone());
        }
        let client = self.connect().await?;
        let mut stream = client.execute(request).await.map_err(status)?.into_inner();
        while let Some(item) = stream.message().await.map_err(status)? {
            match item.item {
                Some(Item::Rows(rows)) => {
                    for json in &rows.json {
                        writeln!(out, "{json}")?;
                    }
                    out.flush()?;
                }
                Some(Item::Done(done)) => {
                    if !done.message.is_empty() {
                        writeln!(out, "{}", done.message)?;
                        out.flush()?;
                    }
                }
                // Column names only matter to clients that print tables.
                Some(Item::Columns(_)) | None => {}
            }
        }
        Ok(())
    }
}

/// Reads a PEM file given to a `--tls-*` flag.
fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, ShellError> {
    let bytes = std::fs::read(path).map_err(|e| {
        ShellError::Usage(format!(
            "cannot read the TLS {what} {}: {e}",
            path.display()
        ))
    })?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN") {
        return Err(ShellError::Usage(format!(
            "the TLS {what} {} is not a PEM file",
            path.display()
        )));
    }
    Ok(bytes)
}

/// An error and its sources, joined with ": ", without tonic's uninformative top line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if text != "transport error" && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// Why connecting failed, in words a user acts on.
fn connect_detail(e: &tonic::transport::Error) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    "connection refused (is the server running? see --host and --port)".into()
                }
                std::io::ErrorKind::TimedOut => {
                    format!("timed out after {}s", CONNECT_TIMEOUT.as_secs())
                }
                _ => chain(e),
            };
        }
        cur = err.source();
    }
    chain(e)
}

/// The protocol's name of a gRPC status code, e.g. `NOT_FOUND`.
pub(super) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `ERROR: <message>` for a statement that is wrong (INVALID_ARGUMENT), otherwise
/// `ERROR (<CODE>): <message>`.
fn describe_status(status: &Status, addr: &str) -> String {
    // A status with a source was made on this side from a failure of the connection.
    let transport = std::error::Error::source(status).map(chain);
    let message = match (status.code(), status.message().trim()) {
        (_, m) if transport.is_some() => format!(
            "the connection to the server at {addr} failed: {}",
            transport.unwrap_or_else(|| m.to_string())
        ),
        (Code::Unimplemented, "") => {
            format!("the server at {addr} does not offer the StreamCell SQL service")
        }
        (Code::Unavailable, m) => format!("cannot reach the server at {addr}: {m}"),
        (code, "") => code.description().to_string(),
        (_, m) => m.to_string(),
    };
    match status.code() {
        Code::InvalidArgument => format!("ERROR: {message}"),
        code => format!("ERROR ({}): {message}", code_name(code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let addr = "127.0.0.1:6570";
        assert_eq!(
            describe_status(&Status::invalid_argument("syntax error at line 1"), addr),
            "ERROR: syntax error at line 1"
        );
        assert_eq!(
            describe_status(&Status::not_found("stream \"s\" does not exist"), addr),
            "ERROR (NOT_FOUND): stream \"s\" does not exist"
        );
        assert_eq!(
            describe_status(&Status::unimplemented(""), addr),
            "ERROR (UNIMPLEMENTED): the server at 127.0.0.1:6570 does not offer the StreamCell \
             SQL service"
        );
        assert_eq!(
            describe_status(&Status::unavailable("tcp connect error"), addr),
            "ERROR (UNAVAILABLE): cannot reach the server at 127.0.0.1:6570: tcp connect error"
        );
    }

    #[test]
    fn ipv6_hosts_get_brackets() {
        let target = Target {
            host: "::1".into(),
            port: 6570,
            tls_ca: None,
            tls_identity: None,
            tls_domain: None,
            authorization: None,
        };
        let conn = Connection::new(&target).map_err(|e| e.to_string());
        assert_eq!(conn.as_ref().map(|c| c.addr()), Ok("[::1]:6570"));
    }
}
