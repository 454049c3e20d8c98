//! One client connection: the simple and extended query protocols over the engine.
//!
//! - **Simple query** (`psql`, `simple_query`): the text is split into statements; each runs
//!   in turn and the first error ends the rest, as in PostgreSQL.
//! - **Extended query** (drivers' prepared statements): `Parse` parses the statement and
//!   plans it without running it (the engine's `describe`), so `Describe` can answer its
//!   parameter types and columns; `Bind` keeps the values; `Execute` turns them into literals
//!   ([`crate::params`]) and runs the statement.
//! - **Push queries** (`SELECT … EMIT CHANGES`) stream their rows as they come: each batch is
//!   flushed to the client at once, until the client cancels (psql's Ctrl-C sends a
//!   CancelRequest: the statement ends with `57014`), the query fails, or the connection
//!   closes. Nothing else runs on that connection meanwhile.
//! - **Session statements** (`SET`, `SHOW`, `BEGIN`, …) are answered here ([`crate::compat`]).

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use futures::channel::oneshot;
use futures::sink::{Sink, SinkExt};
use futures::stream;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{
    send_execution_response, send_query_response, ExtendedQueryHandler, SimpleQueryHandler,
};
use pgwire::api::results::{DataRowEncoder, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, PgWireConnectionState, Type, DEFAULT_NAME,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::{DataRow, RowDescription};
use pgwire::messages::extendedquery::Execute;
use pgwire::messages::response::{EmptyQueryResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::simplequery::Query;
use pgwire::messages::PgWireBackendMessage;
use streamcell_engine::{Engine, EngineError, Output};
use streamcell_sql::Statement;

use crate::catalog;
use crate::compat::{self, Compat, Settings};
use crate::encode::{self, Kind};
use crate::error::{PgError, Result};
use crate::params;

/// A statement prepared by `Parse`.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Its text, with `$n` placeholders.
    pub sql: String,
    /// What it is.
    pub what: What,
    /// The type of each parameter as the server sees it (`text` where it cannot tell).
    pub params: Vec<Type>,
    /// The row description, in text format (`None`: it returns no rows).
    pub columns: Option<Vec<(String, Type)>>,
}

/// The kind of a prepared statement.
#[derive(Debug, Clone)]
pub enum What {
    /// A session statement.
    Compat(Compat),
    /// A statement for the engine; `push`: a push query.
    Engine {
        /// Whether it is a push query (`EMIT CHANGES`).
        push: bool,
        /// Whether its rows are a JSON-made listing (`SHOW STREAMS`, `EXPLAIN`): sent as text.
        listing: bool,
    },
    /// A query over PostgreSQL's catalogs ([`crate::catalog`]).
    Catalog,
    /// Nothing (only comments).
    Empty,
}

/// The state of one connection, shared by its handlers.
pub struct Session {
    engine: Arc<Engine>,
    settings: Mutex<Settings>,
    /// The savepoints of the open transaction block, oldest first.
    savepoints: Mutex<Vec<String>>,
    parser: Arc<Parser>,
}

impl Session {
    /// A new connection's session.
    pub fn new(engine: Arc<Engine>) -> Arc<Session> {
        Arc::new(Session {
            parser: Arc::new(Parser {
                engine: engine.clone(),
            }),
            engine,
            settings: Mutex::new(Settings::default()),
            savepoints: Mutex::default(),
        })
    }

    fn settings(&self) -> std::sync::MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn savepoints(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.savepoints.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where savepoint `name` is, or the error PostgreSQL gives when it is not there.
    fn savepoint_at(&self, name: &str) -> Result<usize> {
        self.savepoints()
            .iter()
            .rposition(|s| s == name)
            .ok_or_else(|| PgError::State {
                code: "3B001",
                message: format!("savepoint \"{name}\" does not exist"),
            })
    }
}

/// Listens for the client's cancel request for the statement about to run.
async fn cancel_signal<C: ClientInfo>(client: &C) -> Option<oneshot::Receiver<()>> {
    let handle = client.session_extensions().get::<Arc<ConnectionHandle>>()?;
    Some(handle.start_query().await)
}

/// Runs `fut` unless the client cancels first. A replaced (dropped) signal is not a cancel.
async fn cancellable<T>(
    cancel: &mut Option<oneshot::Receiver<()>>,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match cancel {
        None => fut.await,
        Some(rx) => {
            tokio::select! {
                r = fut => r,
                c = rx => match c {
                    Ok(()) => Err(PgError::Cancelled),
                    Err(_) => std::future::pending().await,
                },
            }
        }
    }
}

/// Rows an `INSERT … VALUES` statement adds.
fn values_rows(stmt: &Statement) -> Option<usize> {
    let Statement::Sql(s) = stmt else { return None };
    let sqlparser::ast::Statement::Insert(insert) = s.as_ref() else {
        return None;
    };
    match insert.source.as_ref()?.body.as_ref() {
        sqlparser::ast::SetExpr::Values(v) => Some(v.rows.len()),
        _ => None,
    }
}

fn tag_of(sql: &str, stmt: &Statement, output: &Output) -> Tag {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(3)
        .map(str::to_ascii_uppercase)
        .collect();
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let rows = match output {
        Output::Done(m) => m
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<usize>().ok()),
        _ => None,
    }
    .or_else(|| values_rows(stmt));
    match w.as_slice() {
        ["INSERT", ..] => Tag::new("INSERT").with_oid(0).with_rows(rows.unwrap_or(1)),
        ["CREATE" | "DROP", "OR", ..] => Tag::new(&format!("{} {}", w[0], w[2])),
        ["CREATE" | "DROP", kind, ..] => Tag::new(&format!("{} {kind}", w[0])),
        [first, ..] => Tag::new(first),
        [] => Tag::new("OK"),
    }
}

fn text_fields(columns: &[(String, Type)], format: &Format) -> Vec<FieldInfo> {
    columns
        .iter()
        .enumerate()
        .map(|(i, (n, t))| FieldInfo::new(n.clone(), None, None, t.clone(), format.format_for(i)))
        .collect()
}

fn schema_columns(schema: &SchemaRef) -> Vec<(String, Type)> {
    schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), Kind::of(f.data_type()).pg_type()))
        .collect()
}

fn rows_response(fields: Arc<Vec<FieldInfo>>, rows: Vec<DataRow>) -> QueryResponse {
    QueryResponse::new(fields, stream::iter(rows.into_iter().map(Ok)))
}

/// Arrow rows as a response: described as `announced` (what Describe said, when it matches
/// the result's width), otherwise by their own schema.
fn batches_response(
    schema: &SchemaRef,
    batches: &[arrow::array::RecordBatch],
    announced: Option<&Vec<(String, Type)>>,
    format: &Format,
    tz: chrono_tz::Tz,
) -> Result<QueryResponse> {
    let fields = Arc::new(match announced {
        Some(c) if c.len() == schema.fields().len() => text_fields(c, format),
        _ => encode::fields(schema, format),
    });
    let mut rows = Vec::new();
    for b in batches {
        rows.extend(encode::encode_batch(b, &fields, tz)?);
    }
    Ok(rows_response(fields, rows))
}

impl Session {
    /// Runs a session statement; the response (and the new transaction status).
    fn run_compat(
        &self,
        c: &Compat,
        format: &Format,
        status: TransactionStatus,
    ) -> Result<Response> {
        let in_block = |what: &str| {
            if status == TransactionStatus::Idle {
                Err(PgError::State {
                    code: "25P01",
                    message: format!("{what} can only be used in transaction blocks"),
                })
            } else {
                Ok(())
            }
        };
        Ok(match c {
            Compat::Set { name, value } => {
                self.settings().set(name, value)?;
                Response::Execution(Tag::new("SET"))
            }
            Compat::Reset(name) => {
                self.settings().reset(name.as_deref());
                Response::Execution(Tag::new("RESET"))
            }
            Compat::Show(Some(name)) => {
                let v = self.settings().get(name)?;
                let fields = Arc::new(text_fields(&[(name.clone(), Type::TEXT)], format));
                let mut enc = DataRowEncoder::new(fields.clone());
                enc.encode_field(&v)?;
                let rows = vec![enc.take_row()];
                Response::Query(rows_response(fields, rows))
            }
            Compat::Show(None) => {
                let cols = [
                    ("name".to_string(), Type::TEXT),
                    ("setting".to_string(), Type::TEXT),
                ];
                let fields = Arc::new(text_fields(&cols, format));
                let mut enc = DataRowEncoder::new(fields.clone());
                let mut rows = Vec::new();
                for (k, v) in self.settings().all() {
                    enc.encode_field(k)?;
                    enc.encode_field(v)?;
                    rows.push(enc.take_row());
                }
                Response::Query(rows_response(fields, rows))
            }
            Compat::Begin => {
                if status == TransactionStatus::Idle {
                    self.savepoints().clear();
                }
                Response::TransactionStart(Tag::new("BEGIN"))
            }
            Compat::End { rollback } => {
                self.savepoints().clear();
                Response::TransactionEnd(Tag::new(if *rollback { "ROLLBACK" } else { "COMMIT" }))
            }
            Compat::Savepoint(name) => {
                in_block("SAVEPOINT")?;
                self.savepoints().push(name.clone());
                Response::Execution(Tag::new("SAVEPOINT"))
            }
            Compat::Release(name) => {
                in_block("RELEASE SAVEPOINT")?;
                let at = self.savepoint_at(name)?;
                self.savepoints().truncate(at);
                Response::Execution(Tag::new("RELEASE"))
            }
            Compat::RollbackTo(name) => {
                in_block("ROLLBACK TO SAVEPOINT")?;
                let at = self.savepoint_at(name)?;
                self.savepoints().truncate(at + 1);
                // Back in a usable block (from a failed one too); nothing is undone.
                Response::TransactionStart(Tag::new("ROLLBACK"))
            }
            Compat::Close(name) => {
                return Err(PgError::State {
                    code: "34000",
                    message: format!("cursor \"{name}\" does not exist"),
                })
            }
            Compat::Ignored(tag) => Response::Execution(Tag::new(tag)),
            Compat::Version => {
                let fields = Arc::new(text_fields(&[("version".to_string(), Type::TEXT)], format));
                let mut enc = DataRowEncoder::new(fields.clone());
                enc.encode_field(&compat::version())?;
                let rows = vec![enc.take_row()];
                Response::Query(rows_response(fields, rows))
            }
        })
    }

    /// The columns a compat statement answers with (for Describe).
    fn compat_columns(c: &Compat) -> Option<Vec<(String, Type)>> {
        match c {
            Compat::Show(Some(name)) => Some(vec![(name.clone(), Type::TEXT)]),
            Compat::Show(None) => Some(vec![
                ("name".to_string(), Type::TEXT),
                ("setting".to_string(), Type::TEXT),
            ]),
            Compat::Version => Some(vec![("version".to_string(), Type::TEXT)]),
            _ => None,
        }
    }

    /// Runs one engine statement to its output, unless the client cancels.
    async fn execute(
        &self,
        sql: &str,
        cancel: &mut Option<oneshot::Receiver<()>>,
    ) -> Result<Vec<(Statement, Output)>> {
        let statements = self.engine.parse(sql)?;
        // One statement: the text was split (simple query) or prepared (extended) as one,
        // so more means a bound value changed its structure; run none of them.
        if statements.len() > 1 {
            return Err(PgError::Syntax(
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        let limit = self.settings().statement_timeout();
        let mut out = Vec::with_capacity(statements.len());
        for stmt in statements {
            let engine = self.engine.clone();
            let s = stmt.clone();
            // Dropping the statement's future stops it: a pull query runs on the engine's
            // query threads and is aborted with it (`Engine::execute`).
            let run = async move { Ok(engine.execute(s).await?) };
            let o = match limit {
                None => cancellable(cancel, run).await?,
                Some(d) => {
                    cancellable(cancel, async move {
                        tokio::time::timeout(d, run)
                            .await
                            .unwrap_or(Err(PgError::TimedOut))
                    })
                    .await?
                }
            };
            out.push((stmt, o));
        }
        Ok(out)
    }

    /// One statement of a simple query.
    async fn simple_statement<C>(&self, client: &mut C, sql: &str) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let status = client.transaction_status();
        if let Some(c) = compat::classify(sql)? {
            if status == TransactionStatus::Error && !c.allowed_when_aborted() {
                return Err(aborted());
            }
            match self.run_compat(&c, &Format::UnifiedText, status)? {
                Response::Query(q) => send_query_response(client, q, true).await?,
                Response::Execution(tag) => send_execution_response(client, tag).await?,
                Response::TransactionStart(tag) => {
                    send_execution_response(client, tag).await?;
                    client.set_transaction_status(TransactionStatus::Transaction);
                }
                Response::TransactionEnd(tag) => {
                    let tag = if status == TransactionStatus::Error {
                        Tag::new("ROLLBACK")
                    } else {
                        tag
                    };
                    send_execution_response(client, tag).await?;
                    client.set_transaction_status(TransactionStatus::Idle);
                }
                _ => {}
            }
            return Ok(());
        }
        if status == TransactionStatus::Error {
            return Err(aborted());
        }
        if catalog::is_catalog_query(sql) {
            let settings = self.settings().clone();
            let (schema, batches) = catalog::run(&self.engine, &settings, sql).await?;
            let response = batches_response(
                &schema,
                &batches,
                None,
                &Format::UnifiedText,
                self.settings().time_zone(),
            )?;
            send_query_response(client, response, true).await?;
            return Ok(());
        }
        let mut cancel = cancel_signal(client).await;
        for (stmt, output) in self.execute(sql, &mut cancel).await? {
            match output {
                Output::Done(_) => {
                    let tag = tag_of(sql, &stmt, &output);
                    send_execution_response(client, tag).await?;
                }
                Output::Table { schema, batches } => {
                    let tz = self.settings().time_zone();
                    let response =
                        batches_response(&schema, &batches, None, &Format::UnifiedText, tz)?;
                    send_query_response(client, response, true).await?;
                }
                Output::Push { schema, rx, guard } => {
                    let fields = schema.map(|s| Arc::new(encode::fields(&s, &Format::UnifiedText)));
                    let tz = self.settings().time_zone();
                    stream_push(
                        client,
                        fields,
                        true,
                        (rx, guard),
                        cancel.take(),
                        &Format::UnifiedText,
                        tz,
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }
}

fn aborted() -> PgWireError {
    PgWireError::UserError(Box::new(pgwire::error::ErrorInfo::new(
        "ERROR".into(),
        "25P02".into(),
        "current transaction is aborted, commands ignored until end of transaction block".into(),
    )))
}

/// Streams a push query's rows until it ends, fails, or the client cancels. `fields`: the
/// row description when known before the first row; `describe`: whether to send it (the
/// extended protocol sent it on Describe).
async fn stream_push<C>(
    client: &mut C,
    mut fields: Option<Arc<Vec<FieldInfo>>>,
    describe: bool,
    (mut rx, _guard): (
        tokio::sync::mpsc::Receiver<streamcell_engine::Result<arrow::array::RecordBatch>>,
        streamcell_engine::PushGuard,
    ),
    mut cancel: Option<oneshot::Receiver<()>>,
    format: &Format,
    tz: chrono_tz::Tz,
) -> PgWireResult<()>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    tracing::info!(peer = %client.socket_addr(), "push query streaming to a PostgreSQL client");
    let mut described = !describe;
    if let (false, Some(f)) = (described, &fields) {
        client
            .send(PgWireBackendMessage::RowDescription(RowDescription::new(
                f.iter().map(Into::into).collect(),
            )))
            .await?;
        described = true;
    }
    let mut sent = 0usize;
    loop {
        let next = {
            let recv = async { Ok(rx.recv().await) };
            cancellable(&mut cancel, recv).await?
        };
        match next {
            Some(Ok(batch)) => {
                let f = match &fields {
                    Some(f) => f.clone(),
                    None => {
                        let f = Arc::new(encode::fields(&batch.schema(), format));
                        fields = Some(f.clone());
                        f
                    }
                };
                if !described {
                    client
                        .send(PgWireBackendMessage::RowDescription(RowDescription::new(
                            f.iter().map(Into::into).collect(),
                        )))
                        .await?;
                    described = true;
                }
                for row in encode::encode_batch(&batch, &f, tz)? {
                    client.feed(PgWireBackendMessage::DataRow(row)).await?;
                    sent += 1;
                }
                client.flush().await?;
            }
            Some(Err(e)) => return Err(PgError::Engine(e).into()),
            None => {
                let tag = Tag::new("SELECT").with_rows(sent);
                send_execution_response(client, tag).await?;
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Session {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let statements = streamcell_sql::split(&query.query)
            .map_err(|e| PgError::Engine(EngineError::Syntax(e)));
        let result = match statements {
            Ok(s) if s.is_empty() => client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await
                .map_err(Into::into),
            Ok(statements) => {
                let mut r = Ok(());
                for sql in &statements {
                    r = self.simple_statement(client, sql).await;
                    if r.is_err() {
                        break;
                    }
                }
                r
            }
            Err(e) => Err(e.into()),
        };
        client.set_state(PgWireConnectionState::ReadyForQuery);
        if let Err(e) = result {
            if client.transaction_status() == TransactionStatus::Transaction {
                client.set_transaction_status(TransactionStatus::Error);
            }
            return Err(e);
        }
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                client.transaction_status(),
            )))
            .await?;
        Ok(())
    }

    async fn do_query<C>(&self, _client: &mut C, _query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // on_query above handles every simple query itself.
        Err(PgError::Internal("simple queries run through on_query".into()).into())
    }
}

/// Parses and describes statements of the extended protocol.
pub struct Parser {
    engine: Arc<Engine>,
}

impl Parser {
    async fn prepare(&self, sql: &str, client_types: &[Option<Type>]) -> Result<Option<Prepared>> {
        let statements =
            streamcell_sql::split(sql).map_err(|e| PgError::Engine(EngineError::Syntax(e)))?;
        let text = match statements.as_slice() {
            [] => return Ok(None),
            [one] => one.clone(),
            _ => {
                return Err(PgError::Syntax(
                    "cannot insert multiple commands into a prepared statement".into(),
                ))
            }
        };
        let n = params::count(&text)?;
        let cast = params::cast_types(&text, n);
        // The client's type where it gave one, else the one a cast after the placeholder
        // names, else `fallback(i)`.
        let typed = |fallback: &dyn Fn(usize) -> Option<Type>| -> Vec<Type> {
            (0..n)
                .map(|i| {
                    client_types
                        .get(i)
                        .cloned()
                        .flatten()
                        .filter(|t| *t != Type::UNKNOWN)
                        .or_else(|| cast.get(i).cloned().flatten())
                        .or_else(|| fallback(i))
                        .unwrap_or(Type::TEXT)
                })
                .collect()
        };
        if let Some(c) = compat::classify(&text)? {
            return Ok(Some(Prepared {
                columns: Session::compat_columns(&c),
                sql: text,
                what: What::Compat(c),
                params: vec![Type::TEXT; n],
            }));
        }
        if catalog::is_catalog_query(&text) {
            // Its columns: plan it now (catalog queries have no side effects).
            let bound = params::substitute(&text, &vec!["NULL".to_string(); n])?;
            let (schema, _) = catalog::run(&self.engine, &Settings::default(), &bound).await?;
            return Ok(Some(Prepared {
                columns: Some(schema_columns(&schema)),
                sql: text,
                what: What::Catalog,
                params: typed(&|_| None),
            }));
        }
        let stmt = {
            let mut parsed = self.engine.parse(&text)?;
            match (parsed.pop(), parsed.is_empty()) {
                (Some(s), true) => s,
                _ => {
                    return Err(PgError::Syntax(
                        "cannot insert multiple commands into a prepared statement".into(),
                    ))
                }
            }
        };
        let push = matches!(&stmt, Statement::Select(s) if s.emit_changes);
        // Listings made as JSON; their columns are known when they run (no side effects).
        let listing = match &stmt {
            Statement::Show(_) | Statement::Explain(_) => true,
            Statement::Sql(s) => s
                .to_string()
                .to_ascii_lowercase()
                .starts_with("call datacell.dump("),
            _ => false,
        };
        let mut server_types: Vec<Option<arrow::datatypes::DataType>> = Vec::new();
        let columns = if listing {
            // A listing's columns are known when it runs (it has no side effects).
            match self.engine.execute(stmt.clone()).await? {
                Output::Table { schema, .. } => Some(
                    schema
                        .fields()
                        .iter()
                        .map(|f| (f.name().clone(), Type::TEXT))
                        .collect(),
                ),
                _ => None,
            }
        } else {
            match self.engine.describe(&stmt).await {
                Ok(d) => {
                    server_types = d.params;
                    match d.schema {
                        Some(s) => Some(schema_columns(&s)),
                        None if push => {
                            return Err(PgError::Engine(EngineError::Precondition(
                                "the push query's columns are not known yet (its stream has no \
                                 records and no declared columns); run it as a simple query, or \
                                 declare the stream's columns"
                                    .into(),
                            )))
                        }
                        None => None,
                    }
                }
                // Placeholders the planner cannot type: the statement is checked when it runs.
                Err(_) if n > 0 => None,
                Err(e) => return Err(e.into()),
            }
        };
        let params = typed(&|i| {
            server_types
                .get(i)
                .cloned()
                .flatten()
                .map(|t| Kind::of(&t).pg_type())
        });
        Ok(Some(Prepared {
            sql: text,
            what: What::Engine { push, listing },
            params,
            columns,
        }))
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        match self.prepare(sql, types).await? {
            Some(p) => Ok(Some(p)),
            None => Ok(Some(Prepared {
                sql: String::new(),
                what: What::Empty,
                params: Vec::new(),
                columns: None,
            })),
        }
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(stmt.params.clone())
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = column_format.cloned().unwrap_or(Format::UnifiedText);
        Ok(stmt
            .columns
            .as_ref()
            .map(|c| text_fields(c, &format))
            .unwrap_or_default())
    }
}

/// The parameter types a portal's values are read as: the client's where it gave them.
fn portal_types(portal: &Portal<Prepared>) -> Vec<Type> {
    let stmt = &portal.statement;
    (0..portal.parameter_len())
        .map(|i| {
            stmt.parameter_types
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| *t != Type::UNKNOWN)
                .or_else(|| stmt.statement.params.get(i).cloned())
                .unwrap_or(Type::TEXT)
        })
        .collect()
}

fn bound_sql(portal: &Portal<Prepared>) -> Result<String> {
    let literals = params::literals(portal, &portal_types(portal))?;
    params::substitute(&portal.statement.statement.sql, &literals)
}

#[async_trait]
impl ExtendedQueryHandler for Session {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(pgwire::api::store::Entry::Value(p)) => Some(p),
            _ => None,
        };
        // ROLLBACK TO a savepoint that exists ends a failed block's error state; pgwire's
        // Execute keeps the status it saw before the statement, so set it first.
        if let Some(Compat::RollbackTo(sp)) =
            portal
                .as_ref()
                .and_then(|p| match &p.statement.statement.what {
                    What::Compat(c) => Some(c),
                    _ => None,
                })
        {
            if client.transaction_status() == TransactionStatus::Error
                && self.savepoint_at(sp).is_ok()
            {
                client.set_transaction_status(TransactionStatus::Transaction);
            }
        }
        let push = portal
            .filter(|p| matches!(p.statement.statement.what, What::Engine { push: true, .. }));
        let Some(portal) = push else {
            return self._on_execute(client, message).await;
        };
        if client.transaction_status() == TransactionStatus::Error {
            return Err(aborted());
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let sql = bound_sql(&portal)?;
        let mut cancel = cancel_signal(client).await;
        let outputs = self.execute(&sql, &mut cancel).await?;
        let fields = portal
            .statement
            .statement
            .columns
            .as_ref()
            .map(|c| Arc::new(text_fields(c, &portal.result_column_format)));
        for (_, output) in outputs {
            if let Output::Push { rx, guard, .. } = output {
                let tz = self.settings().time_zone();
                stream_push(
                    client,
                    fields.clone(),
                    false,
                    (rx, guard),
                    cancel.take(),
                    &portal.result_column_format,
                    tz,
                )
                .await?;
            }
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let format = &portal.result_column_format;
        let status = client.transaction_status();
        match &prepared.what {
            What::Empty => Ok(Response::EmptyQuery),
            What::Catalog => {
                if status == TransactionStatus::Error {
                    return Err(aborted());
                }
                let sql = bound_sql(portal)?;
                let settings = self.settings().clone();
                let (schema, batches) = catalog::run(&self.engine, &settings, &sql).await?;
                Ok(Response::Query(batches_response(
                    &schema,
                    &batches,
                    prepared.columns.as_ref(),
                    format,
                    settings.time_zone(),
                )?))
            }
            What::Compat(c) => {
                if status == TransactionStatus::Error && !c.allowed_when_aborted() {
                    return Err(aborted());
                }
                Ok(self.run_compat(c, format, status)?)
            }
            What::Engine { .. } => {
                if status == TransactionStatus::Error {
                    return Err(aborted());
                }
                let sql = bound_sql(portal)?;
                // Cancellation is watched by pgwire's Execute around this call.
                let mut none = None;
                let mut outputs = self.execute(&sql, &mut none).await?;
                let Some((stmt, output)) = outputs.pop() else {
                    return Ok(Response::EmptyQuery);
                };
                Ok(match output {
                    Output::Done(_) => Response::Execution(tag_of(&sql, &stmt, &output)),
                    // Rows as Describe announced them (cast where the values differ).
                    Output::Table { schema, batches } => Response::Query(batches_response(
                        &schema,
                        &batches,
                        prepared.columns.as_ref(),
                        format,
                        self.settings().time_zone(),
                    )?),
                    Output::Push { .. } => {
                        return Err(
                            PgError::Internal("a push query outside on_execute".into()).into()
                        )
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tags_name_the_command() {
        let done = Output::Done("Done.".into());
        let tag = |sql: &str, out: &Output| {
            let stmt = streamcell_sql::parse(sql).unwrap().remove(0);
            format!("{:?}", tag_of(sql, &stmt, out))
        };
        assert_eq!(
            tag("create stream s", &done),
            format!("{:?}", Tag::new("CREATE STREAM"))
        );
        assert_eq!(
            tag("INSERT INTO s (a) VALUES (1), (2)", &done),
            format!("{:?}", Tag::new("INSERT").with_oid(0).with_rows(2))
        );
        let n = Output::Done("3 rows inserted.".into());
        assert_eq!(
            tag("insert into datacell.b values (1),(2),(3)", &n),
            format!("{:?}", Tag::new("INSERT").with_oid(0).with_rows(3))
        );
    }
}
