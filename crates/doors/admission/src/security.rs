//! The security of every front door from one configuration: who may connect (users with
//! passwords, one access token, client certificates signed by a CA) and TLS (one certificate
//! for gRPC, PostgreSQL and HTTP), with the policy that refuses a half-locked server.
//!
//! - **gRPC and HTTP** take `authorization: Bearer <token>` or `Basic base64(user:password)`,
//!   or a client certificate the TLS layer verified against `--tls-ca`;
//! - **PostgreSQL** takes SCRAM-SHA-256 for each user (the token is the password of the user
//!   `token`), or a verified client certificate when certificates are the only credential;
//! - **TLS**, once configured, is required on all three ports.
//!
//! See `docs/security.md` for what each door requires and what is open when nothing is set.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use subtle::ConstantTimeEq;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::ConfigError;

/// A password or token: compared in constant time and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value (to hand to a verifier; never to a log).
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn matches(&self, given: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(given).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// The shortest access token accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The PEM files of the server's TLS identity and of the CA client certificates chain to.
#[derive(Clone)]
struct TlsFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
}

/// The TLS files of a configuration, as PEM.
#[derive(Debug, Clone, Copy)]
pub struct TlsPem<'a> {
    /// The server's certificate chain.
    pub cert: &'a [u8],
    /// The server's private key.
    pub key: &'a [u8],
    /// The CA client certificates must chain to, if client certificates are checked.
    pub ca: Option<&'a [u8]>,
}

/// The checked security settings of a running server.
pub struct Security {
    users: HashMap<String, Secret>,
    token: Option<Secret>,
    tls: Option<TlsFiles>,
    open_health: bool,
}

/// Why a request was refused (the message is for the client).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unauthenticated(String);

fn read_pem(path: &Path, what: &str, marker: &str) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| {
        ConfigError(format!(
            "cannot read the TLS {what} {}: {e}",
            path.display()
        ))
    })?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN") || !text.contains(marker) {
        return Err(ConfigError(format!(
            "the TLS {what} {} is not a PEM file with a {marker:?} block",
            path.display()
        )));
    }
    Ok(bytes)
}

impl Security {
    /// Reads the TLS files (a bad path or PEM stops the server at start with the file named)
    /// and keeps the credentials.
    pub fn load(
        users: &[(String, Secret)],
        token: Option<&Secret>,
        tls: Option<(&PathBuf, &PathBuf)>,
        ca: Option<&PathBuf>,
        open_health: bool,
    ) -> Result<Security, ConfigError> {
        let tls = match tls {
            None => None,
            Some((cert, key)) => Some(TlsFiles {
                cert: read_pem(cert, "certificate", "CERTIFICATE-----")?,
                key: read_pem(key, "key", "PRIVATE KEY-----")?,
                ca: ca
                    .map(|p| read_pem(p, "CA certificate", "CERTIFICATE-----"))
                    .transpose()?,
            }),
        };
        Ok(Security {
            users: users.iter().cloned().collect(),
            token: token.cloned(),
            tls,
            open_health,
        })
    }

    /// Whether users or a token are configured.
    pub fn has_credentials(&self) -> bool {
        !self.users.is_empty() || self.token.is_some()
    }

    /// Whether client certificates are checked (against `--tls-ca`).
    pub fn client_certificates(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.ca.is_some())
    }

    /// Whether a client must prove who it is on every door.
    pub fn locked(&self) -> bool {
        self.has_credentials() || self.client_certificates()
    }

    /// Whether the doors speak TLS.
    pub fn encrypted(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether `/health` and `/metrics` are served without credentials.
    pub fn open_health(&self) -> bool {
        self.open_health || !self.locked()
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        if !self.locked() && !self.encrypted() {
            return "no credentials, no TLS".into();
        }
        let mut what = Vec::new();
        if !self.users.is_empty() {
            let mut names: Vec<&str> = self.users.keys().map(String::as_str).collect();
            names.sort_unstable();
            what.push(format!("users {}", names.join(", ")));
        }
        if self.token.is_some() {
            what.push("an access token".into());
        }
        if self.client_certificates() {
            what.push("client certificates".into());
        }
        format!(
            "{}{}",
            if what.is_empty() {
                "no credentials".to_string()
            } else {
                format!("credentials: {}", what.join(" or "))
            },
            if self.encrypted() {
                "; TLS on every port"
            } else {
                "; no TLS"
            }
        )
    }

    /// Checks the `authorization` header of a gRPC or HTTP request; `verified_cert` says
    /// whether the TLS layer verified a client certificate on this connection.
    pub fn check(
        &self,
        authorization: Option<&str>,
        verified_cert: bool,
    ) -> Result<(), Unauthenticated> {
        if !self.locked() || (verified_cert && self.client_certificates()) {
            return Ok(());
        }
        let Some(header) = authorization else {
            return Err(Unauthenticated(self.what_is_needed()));
        };
        let header = header.trim();
        let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return match &self.token {
                Some(t) if t.matches(value.as_bytes()) => Ok(()),
                _ => Err(Unauthenticated("invalid access token".into())),
            };
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value)
                .map_err(|_| Unauthenticated("malformed Basic credentials (not base64)".into()))?;
            let text = String::from_utf8_lossy(&decoded);
            let Some((user, password)) = text.split_once(':') else {
                return Err(Unauthenticated(
                    "malformed Basic credentials (want user:password)".into(),
                ));
            };
            return match self.users.get(user) {
                Some(p) if p.matches(password.as_bytes()) => Ok(()),
                _ => Err(Unauthenticated(format!(
                    "password authentication failed for user {user:?}"
                ))),
            };
        }
        // The value is not echoed: it may be a secret sent without its scheme.
        Err(Unauthenticated(
            "unsupported authorization: use Bearer <token> or Basic <user:password>".into(),
        ))
    }

    fn what_is_needed(&self) -> String {
        let mut ways = Vec::new();
        if !self.users.is_empty() {
            ways.push("Basic user:password");
        }
        if self.token.is_some() {
            ways.push("Bearer <token>");
        }
        if self.client_certificates() {
            ways.push("a client certificate");
        }
        format!(
            "credentials required: send an authorization header ({})",
            ways.join(" or ")
        )
    }

    /// The users and their passwords (for the PostgreSQL door's SCRAM verifiers).
    pub fn users(&self) -> Vec<(String, String)> {
        self.users
            .iter()
            .map(|(u, p)| (u.clone(), p.expose().to_string()))
            .collect()
    }

    /// The access token, if any.
    pub fn token(&self) -> Option<String> {
        self.token.as_ref().map(|t| t.expose().to_string())
    }

    /// The TLS files as read at start, for doors whose stack builds its own TLS
    /// configuration.
    pub fn tls_pem(&self) -> Option<TlsPem<'_>> {
        self.tls.as_ref().map(|t| TlsPem {
            cert: &t.cert,
            key: &t.key,
            ca: t.ca.as_deref(),
        })
    }

    /// TLS for the PostgreSQL or HTTP port, announcing `alpn`. With `--tls-ca`, a client
    /// certificate is checked when sent, and required when certificates are the only
    /// credential.
    pub fn rustls(&self, alpn: &[&[u8]]) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
        let Some(t) = &self.tls else {
            return Ok(None);
        };
        let bad =
            |what: &str, e: &dyn fmt::Display| ConfigError(format!("TLS {what} rejected: {e}"));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = CertificateDer::pem_slice_iter(&t.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("certificate", &e))?;
        let key = PrivateKeyDer::from_pem_slice(&t.key).map_err(|e| bad("key", &e))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("settings", &e))?;
        let builder = match &t.ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(ca) {
                    roots
                        .add(c.map_err(|e| bad("CA certificate", &e))?)
                        .map_err(|e| bad("CA certificate", &e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                let verifier = if self.has_credentials() {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(
                    verifier.build().map_err(|e| bad("CA certificate", &e))?,
                )
            }
        };
        let mut cfg = builder
            .with_single_cert(certs, key)
            .map_err(|e| bad("certificate or key", &e))?;
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Some(Arc::new(cfg)))
    }

    /// The server certificate (PEM), for SCRAM channel binding on the PostgreSQL port.
    pub fn certificate_pem(&self) -> Option<&[u8]> {
        self.tls.as_ref().map(|t| t.cert.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sec(users: &[(&str, &str)], token: Option<&str>) -> Security {
        let users: Vec<(String, Secret)> = users
            .iter()
            .map(|(u, p)| (u.to_string(), Secret::new(*p)))
            .collect();
        Security::load(&users, token.map(Secret::new).as_ref(), None, None, false)
            .expect("no files to read")
    }

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[test]
    fn nothing_configured_lets_everyone_in() {
        let s = sec(&[], None);
        assert!(!s.locked() && s.open_health());
        assert!(s.check(None, false).is_ok());
    }

    #[test]
    fn users_and_tokens_are_checked() {
        let s = sec(&[("robot", "pa:ss")], Some("0123456789abcdef"));
        assert!(s.locked() && !s.open_health());
        let e = s.check(None, false).expect_err("no header");
        assert!(
            e.to_string().contains("Basic") && e.to_string().contains("Bearer"),
            "{e}"
        );
        assert!(s.check(Some(&basic("robot:pa:ss")), false).is_ok());
        let e = s
            .check(Some(&basic("robot:nope")), false)
            .expect_err("wrong");
        assert!(e.to_string().contains("\"robot\""), "{e}");
        assert!(s.check(Some(&basic("ghost:pa:ss")), false).is_err());
        assert!(s.check(Some("Bearer 0123456789abcdef"), false).is_ok());
        assert!(s.check(Some("bearer  0123456789abcdef "), false).is_ok());
        assert!(s.check(Some("Bearer 0123456789abcdeX"), false).is_err());
        assert!(s.check(Some("Basic !!!"), false).is_err());
        assert!(s.check(Some("Digest x"), false).is_err());
        // A certificate counts only where client certificates are configured.
        assert!(s.check(None, true).is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<secret>");
        assert!(!sec(&[("a", "hunter2")], None)
            .describe()
            .contains("hunter2"));
    }
}
