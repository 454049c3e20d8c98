//! The engine's error type. User errors (a statement that is wrong, a name that does not
//! exist) are kept apart from trouble inside, and every error says its [`ErrorKind`], the
//! one vocabulary the front doors map to their codes (SQLSTATE, gRPC status, HTTP status).
//! DataFusion's errors keep their class (a column that does not exist, types that do not go
//! together, a division by zero, a feature not implemented, a limit, a bug) and stay
//! attached as the source.

use datafusion::error::DataFusionError;
use streamcell_service::{ErrorKind, ServiceError};
use streamcell_sql::SqlError;
use streamcell_store::StoreError;

/// What went wrong running a statement or a query.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    // ---- the user's mistakes ---------------------------------------------------------
    /// The statement does not parse.
    #[error("{0}")]
    Syntax(#[from] SqlError),
    /// The statement parses but cannot run as written (a feature used where it is not
    /// supported, a bad value, …).
    #[error("{0}")]
    Invalid(String),
    /// A feature StreamCell does not have (SQLSTATE 0A000 over PostgreSQL).
    #[error("{0}")]
    Unsupported(String),
    /// A named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A named object exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is not in a state that allows the operation (e.g. resuming a running query).
    #[error("{0}")]
    Precondition(String),

    // ---- either: the kind tells ----------------------------------------------------------
    /// DataFusion (or Arrow under it) refused or failed a query: an unknown column, types
    /// that do not go together, a division by zero, a limit, or a bug of its own.
    #[error("{message}")]
    Query {
        /// What kind of failure.
        kind: ErrorKind,
        /// The message, without DataFusion's prefixes.
        message: String,
        /// DataFusion's or Arrow's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A call into the stream service failed for a reason that is not the statement's (the
    /// server stops, acknowledged data are damaged, the call was cancelled).
    #[error(transparent)]
    Service(ServiceError),

    // ---- trouble inside ---------------------------------------------------------------
    /// The store failed.
    #[error("storage error: {0}")]
    Store(#[source] StoreError),
    /// A bug or an unexpected condition inside the engine.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Results of the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Syntax(SqlError::TooLarge(_) | SqlError::TooComplex { .. }) => {
                ErrorKind::Limit
            }
            EngineError::Syntax(_) => ErrorKind::Syntax,
            EngineError::Invalid(_) => ErrorKind::Invalid,
            EngineError::Unsupported(_) => ErrorKind::NotSupported,
            EngineError::NotFound(_) => ErrorKind::NotFound,
            EngineError::AlreadyExists(_) => ErrorKind::Exists,
            EngineError::Precondition(_) => ErrorKind::Precondition,
            EngineError::Query { kind, .. } => *kind,
            EngineError::Service(e) => e.kind(),
            EngineError::Store(e) => ErrorKind::of_store(e),
            EngineError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// True for errors that are the caller's (bad statement, unknown name), false for internal
    /// failures.
    pub fn is_user_error(&self) -> bool {
        self.kind().is_user_error()
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        EngineError::Invalid(msg.into())
    }

    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        EngineError::Internal(msg.into())
    }
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::StreamNotFound(name) => {
                EngineError::NotFound(format!("stream {name:?} does not exist"))
            }
            StoreError::StreamExists(name) => {
                EngineError::AlreadyExists(format!("stream {name:?} already exists"))
            }
            e if e.is_user_error() => EngineError::Invalid(e.to_string()),
            e => EngineError::Store(e),
        }
    }
}

impl From<DataFusionError> for EngineError {
    fn from(e: DataFusionError) -> Self {
        match e {
            // An error of ours that went through DataFusion (a table read at scan time)
            // comes back as it was.
            DataFusionError::External(inner) => match inner.downcast::<EngineError>() {
                Ok(ours) => *ours,
                Err(other) => EngineError::Query {
                    kind: ErrorKind::Invalid,
                    message: other.to_string(),
                    source: other,
                },
            },
            DataFusionError::Shared(inner) => match std::sync::Arc::try_unwrap(inner) {
                Ok(e) => EngineError::from(e),
                Err(shared) => EngineError::Query {
                    kind: kind_of(&shared),
                    message: clean_df_message(&shared.to_string()),
                    source: Box::new(DataFusionError::Shared(shared)),
                },
            },
            e => EngineError::Query {
                kind: kind_of(&e),
                message: clean_df_message(&e.to_string()),
                source: Box::new(e),
            },
        }
    }
}

/// The kind of a DataFusion error, looking through its wrappers.
fn kind_of(e: &DataFusionError) -> ErrorKind {
    use datafusion::common::SchemaError;
    match e {
        DataFusionError::Context(_, inner) => kind_of(inner),
        DataFusionError::Shared(inner) => kind_of(inner),
        DataFusionError::Diagnostic(_, inner) => kind_of(inner),
        DataFusionError::Collection(errors) => errors.first().map_or(ErrorKind::Invalid, kind_of),
        DataFusionError::External(inner) => match inner.downcast_ref::<EngineError>() {
            Some(ours) => ours.kind(),
            None => ErrorKind::Invalid,
        },
        DataFusionError::ArrowError(a, _) => kind_of_arrow(a),
        DataFusionError::SchemaError(s, _) => match s.as_ref() {
            SchemaError::FieldNotFound { .. } => ErrorKind::UndefinedColumn,
            _ => ErrorKind::Invalid,
        },
        DataFusionError::NotImplemented(_) => ErrorKind::NotSupported,
        DataFusionError::ResourcesExhausted(_) => ErrorKind::Limit,
        DataFusionError::Internal(_) | DataFusionError::IoError(_) => ErrorKind::Internal,
        DataFusionError::Plan(m) | DataFusionError::Execution(m) => kind_of_message(m),
        _ => ErrorKind::Invalid,
    }
}

fn kind_of_arrow(e: &arrow::error::ArrowError) -> ErrorKind {
    use arrow::error::ArrowError;
    match e {
        ArrowError::DivideByZero => ErrorKind::DivisionByZero,
        ArrowError::ExternalError(inner) => match inner.downcast_ref::<DataFusionError>() {
            Some(df) => kind_of(df),
            None => ErrorKind::Invalid,
        },
        ArrowError::MemoryError(_) => ErrorKind::Limit,
        ArrowError::IoError(..) => ErrorKind::Internal,
        _ => ErrorKind::Invalid,
    }
}

/// DataFusion names some classes only in its messages: the ones that say types do not go
/// together (coercion and signature failures) and a division by zero found while planning.
fn kind_of_message(m: &str) -> ErrorKind {
    const TYPES: [&str; 6] = [
        "Cannot infer common",
        "Cannot coerce",
        "Failed to coerce",
        "Unsupported CAST",
        "Cannot automatically convert",
        "does not support the types",
    ];
    if m.contains("Divide by zero") || m.contains("Division by zero") {
        ErrorKind::DivisionByZero
    } else if TYPES.iter().any(|t| m.contains(t)) {
        ErrorKind::TypeMismatch
    } else {
        ErrorKind::Invalid
    }
}

impl From<ServiceError> for EngineError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid { message, .. } => EngineError::Invalid(message),
            ServiceError::NotFound { message, .. } => EngineError::NotFound(message),
            ServiceError::Exists { message, .. } => EngineError::AlreadyExists(message),
            ServiceError::Precondition { message, .. } => EngineError::Precondition(message),
            ServiceError::Store(e) => EngineError::from(e),
            e @ (ServiceError::Cancelled(_)
            | ServiceError::Unavailable(_)
            | ServiceError::DataLoss(_)) => EngineError::Service(e),
        }
    }
}

impl From<arrow::error::ArrowError> for EngineError {
    fn from(e: arrow::error::ArrowError) -> Self {
        EngineError::Query {
            kind: kind_of_arrow(&e),
            message: clean_df_message(&e.to_string()),
            source: Box::new(e),
        }
    }
}

/// DataFusion prefixes messages with the error kind ("Error during planning: …", "Schema
/// error: …"); the kind means nothing to a StreamCell user.
fn clean_df_message(m: &str) -> String {
    let mut m = m;
    loop {
        let before = m;
        for prefix in [
            "Error during planning: ",
            "Schema error: ",
            "This feature is not implemented: ",
            "Execution error: ",
            "SQL error: ",
            "Arrow error: ",
            "Optimizer rule ",
            "External error: ",
            "Resources exhausted: ",
        ] {
            if let Some(rest) = m.strip_prefix(prefix) {
                m = rest;
            }
        }
        if m == before {
            return m.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error DataFusion gives for `sql` over one table `t(a BIGINT, s TEXT)`.
    fn planned(sql: &str) -> EngineError {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let ctx = crate::continuous::plan::session();
            ctx.sql("CREATE TABLE t (a BIGINT, s VARCHAR) AS VALUES (1, 'x')")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let r = match ctx.sql(sql).await {
                Ok(df) => df.collect().await.map(|_| ()),
                Err(e) => Err(e),
            };
            EngineError::from(r.expect_err(sql))
        })
    }

    #[test]
    fn datafusion_errors_keep_their_class() {
        for (sql, kind) in [
            ("SELECT nope FROM t", ErrorKind::UndefinedColumn),
            (
                "SELECT a FROM t WHERE a = make_array(1)",
                ErrorKind::TypeMismatch,
            ),
            ("SELECT a / 0 FROM t", ErrorKind::DivisionByZero),
            ("SELECT * FROM nowhere", ErrorKind::Invalid),
        ] {
            let e = planned(sql);
            assert_eq!(e.kind(), kind, "{sql}: {e:?}");
            assert!(e.is_user_error(), "{sql}");
            assert!(
                std::error::Error::source(&e).is_some(),
                "{sql}: the source is kept"
            );
            assert!(!e.to_string().starts_with("Error during planning"), "{e}");
        }
    }

    #[test]
    fn our_errors_come_back_through_datafusion() {
        let ours = EngineError::NotFound("stream \"s\" does not exist".into());
        let through = DataFusionError::External(Box::new(ours));
        let back = EngineError::from(DataFusionError::Context("scan".into(), Box::new(through)));
        assert_eq!(back.kind(), ErrorKind::NotFound, "{back:?}");
        let direct = EngineError::from(DataFusionError::External(Box::new(
            EngineError::Precondition("p".into()),
        )));
        assert!(matches!(direct, EngineError::Precondition(_)));
    }

    #[test]
    fn kinds_of_the_rest() {
        assert_eq!(
            EngineError::from(DataFusionError::Internal("bug".into())).kind(),
            ErrorKind::Internal
        );
        assert_eq!(
            EngineError::from(DataFusionError::ResourcesExhausted("memory".into())).kind(),
            ErrorKind::Limit
        );
        assert_eq!(
            EngineError::from(DataFusionError::NotImplemented("x".into())).kind(),
            ErrorKind::NotSupported
        );
        assert_eq!(
            EngineError::from(ServiceError::shutting_down()).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            EngineError::from(ServiceError::DataLoss("damaged".into())).kind(),
            ErrorKind::DataLoss
        );
        assert_eq!(clean_df_message("External error: Execution error: x"), "x");
    }
}
