//! StreamCell's PostgreSQL front door: the PostgreSQL wire protocol (v3) over the SQL
//! engine, so `psql`, psycopg, tokio-postgres, JDBC and Grafana's PostgreSQL data source
//! can run StreamCell SQL. The protocol itself is the `pgwire` crate's; this crate owns what
//! StreamCell says in it:
//!
//! - [`session`]: simple and extended queries, push queries streamed until cancelled;
//! - [`encode`]: Arrow columns as PostgreSQL types and values (text and binary);
//! - [`params`]: `$n` parameters as SQL literals;
//! - [`compat`]: `SET`/`SHOW`/`BEGIN`/… and the PostgreSQL features StreamCell lacks;
//! - [`catalog`]: `pg_catalog` and `information_schema` for psql's `\d` and Grafana;
//! - [`error`]: the SQLSTATE of each error.
//!
//! Authentication: none by default (the server binds to 127.0.0.1 unless told otherwise);
//! with users configured, SCRAM-SHA-256 for each of them (and the access token as the
//! password of the user `token`). With TLS configured, `SSLRequest` is answered `S` and clients
//! that do not start TLS are refused ([`PgAuth::require_tls`]). Cancel requests (`psql`'s
//! Ctrl-C) end the statement running on the connection they name.

pub mod catalog;
pub mod compat;
pub mod encode;
pub mod error;
pub mod params;
pub mod session;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::{ClientInfo, ConnectionManager, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use streamcell_engine::Engine;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::PgError;

/// SCRAM iterations for the configured password (PostgreSQL's default).
const SCRAM_ITERATIONS: usize = 4096;

/// TLS for the PostgreSQL port (a `tokio_rustls` acceptor, as `pgwire` takes it).
pub type TlsAcceptor = pgwire::tokio::tokio_rustls::TlsAcceptor;

/// How clients log in and whether they must encrypt.
#[derive(Clone, Default)]
pub struct PgAuth {
    /// Users and their passwords (SCRAM-SHA-256). With none and no token, anyone may log in.
    pub users: Vec<(String, String)>,
    /// An access token: the password of the user [`TOKEN_USER`].
    pub token: Option<String>,
    /// TLS: `SSLRequest` is answered `S` and the handshake done with this.
    pub tls: Option<TlsAcceptor>,
    /// Refuse clients that did not start TLS (cancel requests excepted: libpq sends those
    /// unencrypted).
    pub require_tls: bool,
    /// The server certificate (PEM) for SCRAM channel binding (SCRAM-SHA-256-PLUS).
    pub certificate_pem: Option<Vec<u8>>,
}

impl PgAuth {
    /// Whether logging in takes a password.
    pub fn locked(&self) -> bool {
        !self.users.is_empty() || self.token.is_some()
    }
}

impl Debug for PgAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAuth")
            .field(
                "users",
                &self.users.iter().map(|(u, _)| u).collect::<Vec<_>>(),
            )
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("tls", &self.tls.is_some())
            .field("require_tls", &self.require_tls)
            .field("channel_binding", &self.certificate_pem.is_some())
            .finish()
    }
}

/// The user name that logs in with the access token as its password.
pub const TOKEN_USER: &str = "token";

/// The SCRAM verifiers of the configured users (each with its own salt) and of the token
/// (user [`TOKEN_USER`]), and a key for decoys: an unknown user name gets a salt and a
/// verifier derived from it, the same at every attempt and different per name, so neither the
/// salt nor the work tells which names exist.
struct Credentials {
    users: HashMap<String, (Vec<u8>, Vec<u8>)>,
    decoy_key: ring::hmac::Key,
}

impl Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A random salt and the salted password.
fn verifier(password: &str) -> (Vec<u8>, Vec<u8>) {
    let salt: [u8; 16] = rand::random();
    (
        salt.to_vec(),
        gen_salted_password(password, &salt, SCRAM_ITERATIONS),
    )
}

impl Credentials {
    fn new(auth: &PgAuth) -> Credentials {
        let mut users: HashMap<String, (Vec<u8>, Vec<u8>)> = auth
            .users
            .iter()
            .map(|(u, p)| (u.clone(), verifier(p)))
            .collect();
        if let Some(t) = &auth.token {
            users.insert(TOKEN_USER.to_string(), verifier(t));
        }
        let key: [u8; 32] = rand::random();
        Credentials {
            users,
            decoy_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        }
    }

    /// The salt and verifier an unknown user name gets (no password matches it).
    fn decoy(&self, user: &str) -> (Vec<u8>, Vec<u8>) {
        let tag = |what: &str| {
            let mut ctx = ring::hmac::Context::with_key(&self.decoy_key);
            ctx.update(what.as_bytes());
            ctx.update(user.as_bytes());
            ctx.sign().as_ref().to_vec()
        };
        let mut salt = tag("salt:");
        salt.truncate(16);
        (salt, tag("verifier:"))
    }
}

#[async_trait]
impl AuthSource for Credentials {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        let (salt, salted) = match self.users.get(user) {
            Some(v) => v.clone(),
            None => {
                // The same answer as a wrong password.
                tracing::debug!(user, "PostgreSQL login for an unknown user");
                self.decoy(user)
            }
        };
        Ok(Password::new(Some(salt), salted))
    }
}

/// Startup without authentication (registering the connection for cancel requests).
struct Trust {
    connections: Arc<ConnectionManager>,
}

#[async_trait]
impl NoopStartupHandler for Trust {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}

/// The startup handler in use: trust or SCRAM, behind the TLS requirement.
struct Startup {
    handler: Handler,
    require_tls: bool,
}

enum Handler {
    Trust(Trust),
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let (PgWireFrontendMessage::Startup(_), true) = (&message, self.require_tls) {
            if !client.is_secure() {
                return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "FATAL".into(),
                    "28000".into(),
                    "this server requires TLS: connect with sslmode=require (or verify-full)"
                        .into(),
                ))));
            }
        }
        let r = match &self.handler {
            Handler::Trust(t) => t.on_startup(client, message).await,
            Handler::Scram(s) => s.on_startup(client, message).await,
        };
        match r {
            // libpq leaves the SCRAM user name empty (the user is in the startup message).
            Err(PgWireError::InvalidPassword(named)) if named.is_empty() => {
                let user = client.metadata().get("user").cloned().unwrap_or_default();
                Err(PgWireError::InvalidPassword(user))
            }
            r => r,
        }
    }
}

/// The handlers of one connection.
struct Handlers {
    session: Arc<session::Session>,
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        self.session.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        self.session.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

/// Serves PostgreSQL clients on `listener` until `stopping` turns true; then every
/// connection is closed (a push query in progress stops with it). At most `max_connections`
/// are open at once: one more is closed at once (a client that never finishes its start-up is
/// closed by pgwire after 60 s).
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    auth: PgAuth,
    max_connections: usize,
    mut stopping: watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut last_refusal = None::<std::time::Instant>;
    let connections = Arc::new(ConnectionManager::new());
    let handler = if auth.locked() {
        let mut scram = ScramAuth::new(Arc::new(Credentials::new(&auth)));
        scram.set_iterations(SCRAM_ITERATIONS);
        if let Some(pem) = &auth.certificate_pem {
            if let Err(e) = scram.configure_certificate(pem) {
                tracing::warn!("SCRAM channel binding is off (the certificate's signature algorithm is not supported: {e})");
            }
        }
        Handler::Scram(Box::new(
            SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                .with_scram(scram)
                .with_connection_manager(connections.clone()),
        ))
    } else {
        Handler::Trust(Trust {
            connections: connections.clone(),
        })
    };
    let startup = Arc::new(Startup {
        handler,
        require_tls: auth.require_tls,
    });
    let tls = auth.tls.clone();
    let cancel = Arc::new(DefaultCancelHandler::new(connections));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        if last_refusal.is_none_or(|t| t.elapsed().as_secs() >= 1) {
                            tracing::warn!("PostgreSQL port: connection refused, the port is at its --max-connections");
                            last_refusal = Some(std::time::Instant::now());
                        }
                        continue;
                    };
                    if let Err(e) = socket.set_nodelay(true) {
                        tracing::debug!("cannot set TCP_NODELAY: {e}");
                    }
                    let handlers = Handlers {
                        session: session::Session::new(engine.clone()),
                        startup: startup.clone(),
                        cancel: cancel.clone(),
                    };
                    let tls = tls.clone();
                    tasks.spawn(async move {
                        let _permit = permit;
                        if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                            tracing::debug!(%peer, "PostgreSQL connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!("accepting a PostgreSQL connection failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = async { stopping.wait_for(|s| *s).await.is_ok() } => break,
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_get_a_salt_of_their_own_that_does_not_change() {
        let creds = Credentials::new(&PgAuth {
            users: vec![("robot".into(), "pw".into())],
            token: Some("0123456789abcdef".into()),
            ..PgAuth::default()
        });
        assert!(creds.users.contains_key("robot") && creds.users.contains_key(TOKEN_USER));
        let (a1, v1) = creds.decoy("ghost");
        let (a2, v2) = creds.decoy("ghost");
        let (b, _) = creds.decoy("admin");
        assert_eq!((a1.len(), v1.len()), (16, 32));
        assert_eq!((&a1, &v1), (&a2, &v2), "the same name gets the same answer");
        assert_ne!(
            a1, b,
            "different names get different salts, as real users do"
        );
        assert!(creds
            .users
            .values()
            .all(|(salt, _)| *salt != a1 && *salt != b));
    }
}
