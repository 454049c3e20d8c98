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
//! with a password configured, SCRAM-SHA-256 for one user. Cancel requests (`psql`'s
//! Ctrl-C) end the statement running on the connection they name.

pub mod catalog;
pub mod compat;
pub mod encode;
pub mod error;
pub mod params;
pub mod session;

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
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use streamcell_engine::Engine;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::PgError;

/// SCRAM iterations for the configured password (PostgreSQL's default).
const SCRAM_ITERATIONS: usize = 4096;

/// How clients log in.
#[derive(Clone, Default)]
pub struct PgAuth {
    /// With a password: SCRAM-SHA-256, and only `user` may log in. Without: anyone.
    pub password: Option<String>,
    /// The user name that goes with the password.
    pub user: String,
}

impl Debug for PgAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAuth")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// The stored SCRAM verifier of the one configured user.
#[derive(Debug)]
struct Credentials {
    user: String,
    salt: Vec<u8>,
    salted: Vec<u8>,
    /// A verifier no password matches, for other user names (same work, same answer).
    decoy: Vec<u8>,
}

impl Credentials {
    fn new(user: &str, password: &str) -> Credentials {
        let salt: [u8; 16] = rand::random();
        let decoy_password = format!("{:x}", rand::random::<u128>());
        Credentials {
            user: user.to_string(),
            salted: gen_salted_password(password, &salt, SCRAM_ITERATIONS),
            decoy: gen_salted_password(&decoy_password, &salt, SCRAM_ITERATIONS),
            salt: salt.to_vec(),
        }
    }
}

#[async_trait]
impl AuthSource for Credentials {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let known = login.user() == Some(self.user.as_str());
        if !known {
            tracing::info!(user = ?login.user(), "PostgreSQL login for an unknown user");
        }
        let salted = if known { &self.salted } else { &self.decoy };
        Ok(Password::new(Some(self.salt.clone()), salted.clone()))
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

/// The startup handler in use: trust or SCRAM.
enum Startup {
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
        match self {
            Startup::Trust(t) => t.on_startup(client, message).await,
            Startup::Scram(s) => s.on_startup(client, message).await,
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
/// connection is closed (a push query in progress stops with it).
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    auth: PgAuth,
    mut stopping: watch::Receiver<bool>,
) {
    let connections = Arc::new(ConnectionManager::new());
    let startup = Arc::new(match &auth.password {
        None => Startup::Trust(Trust {
            connections: connections.clone(),
        }),
        Some(password) => {
            let creds = Arc::new(Credentials::new(&auth.user, password));
            let mut scram = ScramAuth::new(creds);
            scram.set_iterations(SCRAM_ITERATIONS);
            Startup::Scram(Box::new(
                SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                    .with_scram(scram)
                    .with_connection_manager(connections.clone()),
            ))
        }
    });
    let cancel = Arc::new(DefaultCancelHandler::new(connections));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    if let Err(e) = socket.set_nodelay(true) {
                        tracing::debug!("cannot set TCP_NODELAY: {e}");
                    }
                    let handlers = Handlers {
                        session: session::Session::new(engine.clone()),
                        startup: startup.clone(),
                        cancel: cancel.clone(),
                    };
                    tasks.spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
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
