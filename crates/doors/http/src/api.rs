//! The routes of the HTTP door: `GET /health`, `GET /metrics` (Prometheus text, see
//! [`crate::metrics`]) and a small JSON REST API under `/api/v1` for streams, subscriptions
//! (state, and the operator's `skip-damaged` action), persistent queries, views and SQL
//! statements.
//!
//! Handlers call the stream service ([`Service`]) and the SQL engine, as the gRPC door does,
//! so names are validated, DDL is serialized and errors are worded exactly as for gRPC
//! clients. Every error is a JSON object `{"error": "<kind>", "message": "…"}` with the
//! matching status: 400 bad input (including a body that is not the JSON asked for), 401 no
//! or wrong credentials (see [`crate::serve`]), 404 unknown object or route, 405 wrong
//! method, 409 exists or conflicts, 500 internal, 503 unavailable. Work that changes state
//! runs in its own task, so a client that disconnects mid-request does not cut it short.

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use streamcell_engine::{Engine, EngineError, ErrorKind, Output, QueryKind, QueryStatus};
use streamcell_service::{Service, ServiceError, StreamSpec};
use streamcell_store::StreamMeta;
use tokio::sync::watch;

use crate::metrics;

/// What the handlers work with.
pub struct HttpState {
    /// The stream service.
    pub service: Arc<Service>,
    /// The SQL engine.
    pub engine: Arc<Engine>,
    /// Turns true when the server starts stopping.
    pub stopping: watch::Receiver<bool>,
}

type Shared = State<Arc<HttpState>>;

/// An error answered as `{"error": kind, "message": …}`.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl HttpError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let kind = match status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthenticated",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::NOT_IMPLEMENTED => "not_implemented",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "internal",
        };
        HttpError {
            status,
            kind,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        json_response(
            self.status,
            &json!({ "error": self.kind, "message": self.message }),
        )
    }
}

/// The HTTP status of an error kind.
fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Syntax
        | ErrorKind::Invalid
        | ErrorKind::UndefinedColumn
        | ErrorKind::TypeMismatch
        | ErrorKind::DivisionByZero
        | ErrorKind::NotSupported
        | ErrorKind::Limit => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Exists | ErrorKind::Precondition | ErrorKind::Cancelled => StatusCode::CONFLICT,
        ErrorKind::Exhausted | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::DataLoss | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error answered over HTTP: the status of its kind, its message, and `already_exists`
/// as the JSON kind of a name taken.
fn http_error(kind: ErrorKind, message: String) -> HttpError {
    let mut out = HttpError::new(status_of(kind), message);
    if kind == ErrorKind::Exists {
        out.kind = "already_exists";
    }
    out
}

impl From<ServiceError> for HttpError {
    fn from(e: ServiceError) -> Self {
        if !e.is_user_error() {
            tracing::warn!(error = %e, "HTTP request failed");
        }
        http_error(e.kind(), e.to_string())
    }
}

impl From<EngineError> for HttpError {
    fn from(e: EngineError) -> Self {
        if !e.is_user_error() {
            tracing::warn!(error = %e, "HTTP request failed");
        }
        http_error(e.kind(), e.to_string())
    }
}

type HttpResult = Result<Response, HttpError>;

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: &Value) -> HttpResult {
    Ok(json_response(StatusCode::OK, body))
}

/// The body as JSON of type `T`; anything else is a 400 naming the problem.
fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, HttpError> {
    let body = body.map_err(|r| HttpError::new(r.status(), r.body_text()))?;
    serde_json::from_slice(&body)
        .map_err(|e| HttpError::bad_request(format!("the body is not the JSON expected: {e}")))
}

fn path_name(p: Result<Path<String>, PathRejection>) -> Result<String, HttpError> {
    p.map(|Path(n)| n)
        .map_err(|r| HttpError::bad_request(r.body_text()))
}

/// Runs `f` in its own task: a client that goes away does not cancel it half-way.
async fn detached<T: Send + 'static>(
    f: impl Future<Output = Result<T, HttpError>> + Send + 'static,
) -> Result<T, HttpError> {
    tokio::spawn(f)
        .await
        .map_err(|e| HttpError::internal(format!("the request's task failed: {e}")))?
}

// ---- /health, /metrics ------------------------------------------------------------------

async fn health(State(state): Shared) -> Response {
    let stopping = *state.stopping.borrow();
    let (status, word) = if stopping {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping")
    } else {
        (StatusCode::OK, "ok")
    };
    json_response(
        status,
        &json!({
            "status": word,
            "version": env!("CARGO_PKG_VERSION"),
            "uptimeSeconds": state.service.uptime().as_secs_f64(),
        }),
    )
}

async fn metrics_text(State(state): Shared) -> HttpResult {
    let sources = metrics::Sources {
        service: state.service.clone(),
        engine: state.engine.clone(),
    };
    let text = metrics::render(&sources).await.map_err(|e| {
        tracing::warn!("rendering metrics failed: {e}");
        HttpError::internal(e)
    })?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

// ---- streams ------------------------------------------------------------------------------

fn stream_json(s: &StreamMeta) -> Value {
    json!({
        "name": s.name,
        "shardCount": s.shard_count,
        "replicationFactor": s.replication_factor,
        "backlogDurationSeconds": s.backlog_secs,
        "createdMs": s.created_ms,
    })
}

async fn list_streams(State(state): Shared) -> HttpResult {
    let all = state.service.list_streams().await?;
    ok(&json!({ "streams": all.iter().map(stream_json).collect::<Vec<_>>() }))
}

async fn get_stream(State(state): Shared, name: Result<Path<String>, PathRejection>) -> HttpResult {
    let name = path_name(name)?;
    let stream = state.service.stream_meta(&name).await?;
    let shards = state.service.list_shards(&name).await?;
    let mut body = stream_json(&stream);
    body["shards"] = shards
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "startHashRangeKey": s.start_key,
                "endHashRangeKey": s.end_key,
            })
        })
        .collect();
    ok(&body)
}

/// `POST /api/v1/streams`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewStream {
    name: String,
    #[serde(default = "one")]
    shard_count: u32,
    #[serde(default = "one")]
    replication_factor: u32,
    /// 0 keeps records forever (as the official clients' default).
    #[serde(default)]
    backlog_duration_seconds: u32,
}

fn one() -> u32 {
    1
}

async fn create_stream(State(state): Shared, body: Result<Bytes, BytesRejection>) -> HttpResult {
    let new: NewStream = parse_body(body)?;
    let service = state.service.clone();
    let created = detached(async move {
        Ok(service
            .create_stream(StreamSpec {
                name: new.name,
                replication_factor: new.replication_factor,
                backlog_secs: new.backlog_duration_seconds,
                shard_count: new.shard_count,
            })
            .await?)
    })
    .await?;
    let mut resp = json_response(StatusCode::CREATED, &stream_json(&created));
    if let Ok(loc) = format!("/api/v1/streams/{}", created.name).parse() {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// True for `force=true` (or `force=1`, or a bare `force`) in a query string.
/// The value of `name` in a query string, if given.
fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

fn flag(query: Option<&str>, name: &str) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, "true"));
            k == name && matches!(v, "true" | "1" | "")
        })
    })
}

async fn delete_stream(
    State(state): Shared,
    name: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> HttpResult {
    let name = path_name(name)?;
    let force = flag(query.as_deref(), "force");
    let service = state.service.clone();
    detached(async move {
        service.delete_stream(&name, force, false).await?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- subscriptions -----------------------------------------------------------------------

async fn get_subscription(
    State(state): Shared,
    id: Result<Path<String>, PathRejection>,
) -> HttpResult {
    let id = path_name(id)?;
    let sub = state.service.subscription(&id).await?;
    let offsets: Vec<Value> = sub
        .offsets
        .iter()
        .map(|(shard, batch)| json!({ "shard": shard, "batch": batch }))
        .collect();
    let held: Vec<Value> = sub
        .held
        .iter()
        .map(|h| {
            json!({
                "shard": h.shard,
                "batch": h.batch,
                "reason": h.reason,
                "since_ms": h.since_ms,
            })
        })
        .collect();
    ok(&json!({
        "id": sub.meta.id,
        "stream": sub.meta.stream,
        "ack_timeout_seconds": sub.meta.ack_timeout_secs,
        "max_unacked_records": sub.meta.max_unacked,
        "offsets": offsets,
        "held": held,
    }))
}

/// `POST /api/v1/subscriptions/{id}/skip-damaged[?shard=N]`: the operator accepts the loss of
/// the batches a held shard cannot deliver; delivery resumes after them.
async fn skip_damaged(
    State(state): Shared,
    id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> HttpResult {
    let id = path_name(id)?;
    let shard = match query_value(query.as_deref(), "shard") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            HttpError::bad_request(format!("shard must be a shard id (a number), not {v:?}"))
        })?),
    };
    let service = state.service.clone();
    let skipped = detached(async move { Ok(service.skip_damaged(&id, shard).await?) }).await?;
    let skipped: Vec<Value> = skipped
        .iter()
        .map(|s| json!({ "shard": s.shard, "from": s.from, "to": s.to, "batches": s.to - s.from }))
        .collect();
    ok(&json!({ "skipped": skipped }))
}

// ---- queries and views --------------------------------------------------------------------

/// A query as JSON; `stats` are the engine's counters of every query.
fn query_json(q: &streamcell_engine::QueryInfo, stats: &[streamcell_engine::QueryStats]) -> Value {
    let (records_in, rows_out) = stats
        .iter()
        .find(|s| s.name == q.name)
        .map_or((0, 0), |s| (s.records_in, s.rows_out));
    let error = match &q.status {
        QueryStatus::Failed(m) => Value::from(m.clone()),
        _ => Value::Null,
    };
    json!({
        "name": q.name,
        "kind": q.kind.label(),
        "status": q.status.label(),
        "sql": q.sql,
        "source": q.source,
        "result": q.result,
        "createdMs": q.created_ms,
        "recordsIn": records_in,
        "rowsOut": rows_out,
        "error": error,
    })
}

fn view_json(q: &streamcell_engine::QueryInfo) -> Value {
    json!({
        "name": q.name,
        "status": q.status.label(),
        "sql": q.sql,
        "source": q.source,
        "columns": q.columns,
        "createdMs": q.created_ms,
    })
}

async fn list_queries(State(state): Shared) -> HttpResult {
    let e = state.engine.clone();
    let stats = e.query_stats();
    let all: Vec<Value> = e.list().iter().map(|q| query_json(q, &stats)).collect();
    ok(&json!({ "queries": all }))
}

async fn get_query(State(state): Shared, name: Result<Path<String>, PathRejection>) -> HttpResult {
    let name = path_name(name)?;
    let e = state.engine.clone();
    let q = e.get(&name)?;
    ok(&query_json(&q, &e.query_stats()))
}

async fn list_views(State(state): Shared) -> HttpResult {
    let all: Vec<Value> = state
        .engine
        .clone()
        .list()
        .iter()
        .filter(|q| q.kind == QueryKind::View)
        .map(view_json)
        .collect();
    ok(&json!({ "views": all }))
}

/// JSON objects from the engine's rendered rows.
fn rows_json(rows: Vec<String>) -> Result<Vec<Value>, HttpError> {
    rows.iter()
        .map(|r| {
            serde_json::from_str(r)
                .map_err(|e| HttpError::internal(format!("a row is not JSON ({e}): {r}")))
        })
        .collect()
}

/// What one statement produced, as JSON: `{"columns", "rows"}` or `{"message"}`.
fn output_json(out: Output) -> Result<Value, HttpError> {
    if let Output::Done(message) = out {
        return Ok(json!({ "message": message }));
    }
    match out.json_rows()? {
        Some((columns, rows)) => Ok(json!({ "columns": columns, "rows": rows_json(rows)? })),
        None => Ok(json!({ "message": "" })),
    }
}

async fn get_view(State(state): Shared, name: Result<Path<String>, PathRejection>) -> HttpResult {
    let name = path_name(name)?;
    let e = state.engine.clone();
    let view = match e.get(&name) {
        Ok(q) if q.kind == QueryKind::View => q,
        _ => {
            return Err(HttpError::not_found(format!(
                "view {name:?} does not exist"
            )))
        }
    };
    let mut body = view_json(&view);
    let rows = output_json(e.view_table(&name)?)?;
    body["columns"] = rows["columns"].clone();
    body["rows"] = rows["rows"].clone();
    ok(&body)
}

// ---- SQL ----------------------------------------------------------------------------------

/// `POST /api/v1/sql`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
}

async fn run_sql(State(state): Shared, body: Result<Bytes, BytesRejection>) -> HttpResult {
    let req: SqlRequest = parse_body(body)?;
    let e = state.engine.clone();
    let statements = e.parse(&req.sql)?;
    if statements.is_empty() {
        return Err(HttpError::bad_request("no SQL statement given"));
    }
    if statements
        .iter()
        .any(|s| matches!(s, streamcell_sql::Statement::Select(s) if s.emit_changes))
    {
        return Err(HttpError::bad_request(
            "push queries (SELECT … EMIT CHANGES) stream rows until they are cancelled, which \
             this HTTP API does not do: run them with `streamcell sql` or psql (the PostgreSQL \
             port)",
        ));
    }
    let many = statements.len() > 1;
    // Pull queries only read: they run in this request, so a client that leaves stops them.
    // Anything that changes state runs to its end in a task of its own.
    let reads_only = statements
        .iter()
        .all(|s| matches!(s, streamcell_sql::Statement::Select(_)));
    let work = async move {
        let mut results = Vec::new();
        for (i, stmt) in statements.into_iter().enumerate() {
            let out = e.execute(stmt).await.map_err(|err| {
                let mut h = HttpError::from(err);
                if many {
                    h.message = format!("statement {}: {}", i + 1, h.message);
                }
                h
            })?;
            results.push(output_json(out)?);
        }
        Ok(results)
    };
    let results = if reads_only {
        work.await?
    } else {
        detached(work).await?
    };
    ok(&json!({ "results": results }))
}

// ---- routing -------------------------------------------------------------------------------

async fn no_route(method: Method, uri: Uri) -> HttpError {
    HttpError::not_found(format!(
        "no route {method} {}: the endpoints are /health, /metrics and /api/v1/{{streams, \
         subscriptions, queries, views, sql}}",
        uri.path()
    ))
}

async fn wrong_method(method: Method, uri: Uri) -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method}", uri.path()),
    )
}

/// The routes.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/streams", get(list_streams).post(create_stream))
        .route(
            "/api/v1/streams/{name}",
            get(get_stream).delete(delete_stream),
        )
        .route("/api/v1/subscriptions/{id}", get(get_subscription))
        .route(
            "/api/v1/subscriptions/{id}/skip-damaged",
            post(skip_damaged),
        )
        .route("/api/v1/queries", get(list_queries))
        .route("/api/v1/queries/{name}", get(get_query))
        .route("/api/v1/views", get(list_views))
        .route("/api/v1/views/{name}", get(get_view))
        .route("/api/v1/sql", post(run_sql))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamcell_store::StoreError;

    #[test]
    fn query_flags() {
        assert!(flag(Some("force=true"), "force"));
        assert!(flag(Some("a=b&force"), "force"));
        assert!(flag(Some("force=1"), "force"));
        assert!(!flag(Some("force=false"), "force"));
        assert!(!flag(Some("forced=true"), "force"));
        assert!(!flag(None, "force"));
    }

    #[test]
    fn service_and_engine_errors_become_http_errors() {
        let e = HttpError::from(ServiceError::Store(StoreError::StreamNotFound("x".into())));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.kind, "not_found");
        assert_eq!(e.message, "stream \"x\" does not exist");
        let e = HttpError::from(ServiceError::Store(StoreError::StreamExists("x".into())));
        assert_eq!((e.status, e.kind), (StatusCode::CONFLICT, "already_exists"));
        let e = HttpError::from(ServiceError::invalid(
            streamcell_proto::api::ErrorCode::StreamInvalidShardCount,
            "plain text",
        ));
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::BAD_REQUEST, "plain text")
        );
        let e = HttpError::from(ServiceError::shutting_down());
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        let e = HttpError::from(EngineError::Internal("boom".into()));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        let e = HttpError::from(EngineError::AlreadyExists("v".into()));
        assert_eq!((e.status, e.kind), (StatusCode::CONFLICT, "already_exists"));
    }

    #[test]
    fn bad_bodies_are_bad_requests() {
        let r: Result<NewStream, _> = parse_body(Ok(Bytes::from_static(b"{\"name\": 3}")));
        let e = r.expect_err("refused");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("invalid type"), "{}", e.message);
        let r: Result<NewStream, _> =
            parse_body(Ok(Bytes::from_static(b"{\"name\": \"s\", \"shards\": 2}")));
        assert!(r.expect_err("refused").message.contains("unknown field"));
        let r: Result<NewStream, _> = parse_body(Ok(Bytes::from_static(b"{\"name\": \"s\"}")));
        let s = r.expect("defaults");
        assert_eq!(
            (
                s.shard_count,
                s.replication_factor,
                s.backlog_duration_seconds
            ),
            (1, 1, 0)
        );
    }
}
