//! The SQL front door: StreamCell's own `streamcell.sql.StreamCellSql` service (what
//! `streamcell sql` speaks: every statement, push queries streamed until the client cancels),
//! HStreamDB's `ExecuteQuery`, and the query and view RPCs' operations on the engine.

use std::pin::Pin;
use std::sync::Arc;

use streamcell_engine::{Engine, EngineError, ErrorKind, Output, QueryKind};
use streamcell_proto::api;
use streamcell_proto::sqlapi::{
    self, execute_response::Item, stream_cell_sql_server::StreamCellSql, ExecuteRequest,
    ExecuteResponse,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};

/// Rows per `rows` message at most (each message also stays well under 4 MiB).
const ROWS_PER_MESSAGE: usize = 1000;
const BYTES_PER_MESSAGE: usize = 1 << 20;

/// An engine error as a gRPC status with a plain message.
pub fn status(e: &EngineError) -> Status {
    Status::new(code_of(e.kind()), e.to_string())
}

/// The gRPC code of an error kind. The statement's mistakes, a statement over a limit
/// included, are all INVALID_ARGUMENT, as HStreamDB answers them; its clients tell them
/// apart by the message.
pub fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::Syntax
        | ErrorKind::Invalid
        | ErrorKind::UndefinedColumn
        | ErrorKind::TypeMismatch
        | ErrorKind::DivisionByZero
        | ErrorKind::NotSupported
        | ErrorKind::Limit => Code::InvalidArgument,
        ErrorKind::Exhausted => Code::ResourceExhausted,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Exists => Code::AlreadyExists,
        ErrorKind::Precondition => Code::FailedPrecondition,
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::Internal => Code::Internal,
    }
}

/// The `streamcell.sql.StreamCellSql` service.
pub struct SqlService {
    engine: Arc<Engine>,
    stopping: watch::Receiver<bool>,
}

impl SqlService {
    /// The service over `engine`; calls end when `stopping` turns true.
    pub fn new(engine: Arc<Engine>, stopping: watch::Receiver<bool>) -> Self {
        SqlService { engine, stopping }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn item(i: Item) -> Result<ExecuteResponse, Status> {
    Ok(ExecuteResponse { item: Some(i) })
}

/// Splits rows into messages of bounded size.
fn row_messages(rows: Vec<String>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0;
    for r in rows {
        if !cur.is_empty() && (cur.len() >= ROWS_PER_MESSAGE || bytes + r.len() > BYTES_PER_MESSAGE)
        {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += r.len();
        cur.push(r);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[tonic::async_trait]
impl StreamCellSql for SqlService {
    type ExecuteStream = BoxStream<ExecuteResponse>;

    async fn execute(
        &self,
        request: Request<ExecuteRequest>,
    ) -> Result<Response<Self::ExecuteStream>, Status> {
        let sql = request.into_inner().sql;
        let statements = self.engine.parse(&sql).map_err(|e| status(&e))?;
        let (tx, rx) = mpsc::channel::<Result<ExecuteResponse, Status>>(8);
        let engine = self.engine.clone();
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            for stmt in statements {
                let out = match engine.execute(stmt).await {
                    Ok(o) => o,
                    Err(e) => {
                        if !e.is_user_error() {
                            tracing::warn!(error = %e, "SQL statement failed");
                        }
                        let _ = tx.send(Err(status(&e))).await;
                        return;
                    }
                };
                match out {
                    Output::Done(message) => {
                        if tx
                            .send(item(Item::Done(sqlapi::Done { message })))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    out @ Output::Table { .. } => {
                        let (columns, rows) = match out.json_rows() {
                            Ok(r) => r.unwrap_or_default(),
                            Err(e) => {
                                let _ = tx.send(Err(status(&e))).await;
                                return;
                            }
                        };
                        if tx
                            .send(item(Item::Columns(sqlapi::Columns { names: columns })))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        for json in row_messages(rows) {
                            if tx
                                .send(item(Item::Rows(sqlapi::Rows { json })))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        if tx
                            .send(item(Item::Done(sqlapi::Done {
                                message: String::new(),
                            })))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Output::Push {
                        schema,
                        mut rx,
                        guard,
                    } => {
                        let _guard = guard;
                        let columns = schema
                            .map(|s| s.fields().iter().map(|f| f.name().clone()).collect())
                            .unwrap_or_default();
                        if tx
                            .send(item(Item::Columns(sqlapi::Columns { names: columns })))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        loop {
                            tokio::select! {
                                next = rx.recv() => match next {
                                    Some(Ok(batch)) => {
                                        let rows = match streamcell_engine::render_rows(&batch) {
                                            Ok(r) => r,
                                            Err(e) => {
                                                let _ = tx.send(Err(status(&e))).await;
                                                return;
                                            }
                                        };
                                        for json in row_messages(rows) {
                                            if tx.send(item(Item::Rows(sqlapi::Rows { json }))).await.is_err() {
                                                return;
                                            }
                                        }
                                    }
                                    Some(Err(e)) => {
                                        let _ = tx.send(Err(status(&e))).await;
                                        return;
                                    }
                                    None => return,
                                },
                                () = tx.closed() => return,
                                _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
                                    let _ = tx.send(Err(Status::unavailable("the server is shutting down"))).await;
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// HStreamDB's `ExecuteQuery`: one statement, rows as `Struct`s. Push queries are refused
/// (they stream on `StreamCellSql.Execute`).
pub async fn execute_query(
    engine: &Arc<Engine>,
    sql: &str,
) -> Result<api::CommandQueryResponse, EngineError> {
    let statements = engine.parse(sql)?;
    let mut result_set = Vec::new();
    for stmt in statements {
        if matches!(&stmt, streamcell_sql::Statement::Select(s) if s.emit_changes) {
            return Err(EngineError::Invalid(
                "push queries (EMIT CHANGES) stream over streamcell.sql.StreamCellSql/Execute \
                 (`streamcell sql`), not ExecuteQuery"
                    .into(),
            ));
        }
        if let Some((_, rows)) = engine.execute(stmt).await?.json_rows()? {
            for r in rows {
                let v: serde_json::Value = serde_json::from_str(&r)
                    .map_err(|e| EngineError::Internal(format!("row is not JSON: {e}")))?;
                if let serde_json::Value::Object(m) = v {
                    result_set.push(streamcell_engine::to_proto_struct(&m));
                }
            }
        }
    }
    Ok(api::CommandQueryResponse { result_set })
}

/// An engine error as a status with HStreamDB's JSON body; `not_found` is the code for a
/// missing object of the RPC's kind.
pub fn api_status(e: &EngineError, not_found: api::ErrorCode) -> Status {
    let s = status(e);
    let code = match s.code() {
        Code::NotFound => not_found,
        Code::AlreadyExists => api::ErrorCode::QueryExists,
        Code::FailedPrecondition => api::ErrorCode::QueryNotRunning,
        Code::Internal => api::ErrorCode::InternalError,
        _ => api::ErrorCode::QueryInvalidSql,
    };
    Status::new(s.code(), crate::error::body(code, &e.to_string()))
}

fn task_status(s: &streamcell_engine::QueryStatus) -> api::TaskStatusPb {
    use streamcell_engine::QueryStatus as S;
    match s {
        S::Waiting => api::TaskStatusPb::TaskCreating,
        S::Running => api::TaskStatusPb::TaskRunning,
        S::Paused => api::TaskStatusPb::TaskPaused,
        S::Terminated => api::TaskStatusPb::TaskTerminated,
        S::Failed(_) => api::TaskStatusPb::TaskAborted,
    }
}

/// A query as HStreamDB's `Query` message.
pub fn query_pb(q: &streamcell_engine::QueryInfo, node_id: u32) -> api::Query {
    api::Query {
        id: q.name.clone(),
        status: task_status(&q.status) as i32,
        created_time: q.created_ms,
        query_text: q.sql.clone(),
        sources: vec![q.source.clone()],
        result_name: q.result.clone(),
        r#type: match q.kind {
            streamcell_engine::QueryKind::View => api::QueryType::CreateViewAs as i32,
            _ => api::QueryType::CreateStreamAs as i32,
        },
        node_id,
    }
}

/// A view as HStreamDB's `View` message.
pub fn view_pb(q: &streamcell_engine::QueryInfo) -> api::View {
    api::View {
        view_id: q.name.clone(),
        status: task_status(&q.status) as i32,
        created_time: q.created_ms,
        sql: q.sql.clone(),
        schema: q.columns.clone(),
        query_name: q.name.clone(),
    }
}

/// The management RPCs' operations.
pub mod manage {
    use super::*;

    /// `TerminateQuery`.
    pub async fn terminate(engine: &Arc<Engine>, id: &str) -> Result<(), EngineError> {
        engine.terminate(Some(id)).await
    }

    /// `PauseQuery` / `ResumeQuery`.
    pub async fn pause(engine: &Arc<Engine>, id: &str, pause: bool) -> Result<(), EngineError> {
        if pause {
            engine.pause(id).await
        } else {
            engine.resume(id).await
        }
    }

    /// `DeleteQuery` / `DeleteView`.
    pub async fn delete(
        engine: &Arc<Engine>,
        id: &str,
        view: bool,
        if_exists: bool,
    ) -> Result<(), EngineError> {
        if !view {
            if let Ok(q) = engine.get(id) {
                if q.kind == QueryKind::View {
                    return Err(EngineError::Precondition(format!(
                        "{id:?} is the query of a view: delete the view"
                    )));
                }
            }
        }
        let kind = if view {
            QueryKind::View
        } else {
            QueryKind::Stream
        };
        engine.drop_query(id, kind, if_exists).await
    }

    /// `ExecuteViewQuery`: a pull query, rows as `Struct`s.
    pub async fn view_query(
        engine: &Arc<Engine>,
        sql: &str,
    ) -> Result<Vec<prost_types::Struct>, EngineError> {
        Ok(execute_query(engine, sql).await?.result_set)
    }
}
