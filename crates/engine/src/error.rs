//! The engine's error type. User errors (a statement that is wrong, a name that does not
//! exist) are kept apart from internal failures so front doors can answer with the right
//! status code.

use datafusion::error::DataFusionError;
use streamcell_service::ServiceError;
use streamcell_sql::SqlError;
use streamcell_store::StoreError;

/// What went wrong running a statement or a query.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    // ---- the user's mistakes ---------------------------------------------------------
    /// The statement does not parse.
    #[error("{0}")]
    Syntax(#[from] SqlError),
    /// The statement parses but cannot run as written (unknown column, type error, a feature
    /// used where it is not supported, division by zero, …).
    #[error("{0}")]
    Invalid(String),
    /// A named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A named object exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is not in a state that allows the operation (e.g. resuming a running query).
    #[error("{0}")]
    Precondition(String),

    // ---- trouble inside ---------------------------------------------------------------
    /// The store failed.
    #[error("storage error: {0}")]
    Store(StoreError),
    /// A bug or an unexpected condition inside the engine.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Results of the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    /// True for errors that are the caller's (bad statement, unknown name), false for internal
    /// failures.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, EngineError::Store(_) | EngineError::Internal(_))
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
            DataFusionError::Internal(m) => EngineError::Internal(m),
            DataFusionError::Context(ctx, inner) => match EngineError::from(*inner) {
                EngineError::Internal(m) => EngineError::Internal(format!("{ctx}: {m}")),
                EngineError::Invalid(m) => EngineError::Invalid(format!("{ctx}: {m}")),
                other => other,
            },
            DataFusionError::Shared(inner) => EngineError::from(
                std::sync::Arc::try_unwrap(inner)
                    .unwrap_or_else(|shared| DataFusionError::Execution(shared.to_string())),
            ),
            DataFusionError::IoError(e) => EngineError::Internal(e.to_string()),
            DataFusionError::ResourcesExhausted(m) => EngineError::Invalid(m),
            // Plan, schema, "not implemented", execution (division by zero, a cast that
            // fails) and SQL errors are about the statement.
            other => EngineError::Invalid(clean_df_message(&other.to_string())),
        }
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
            | ServiceError::DataLoss(_)) => EngineError::Internal(e.to_string()),
        }
    }
}

impl From<arrow::error::ArrowError> for EngineError {
    fn from(e: arrow::error::ArrowError) -> Self {
        EngineError::Invalid(e.to_string())
    }
}

/// DataFusion prefixes messages with the error kind ("Error during planning: …", "Schema
/// error: …"); the kind means nothing to a StreamCell user.
fn clean_df_message(m: &str) -> String {
    for prefix in [
        "Error during planning: ",
        "Schema error: ",
        "This feature is not implemented: ",
        "Execution error: ",
        "SQL error: ",
        "Arrow error: ",
        "Optimizer rule ",
    ] {
        if let Some(rest) = m.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    m.to_string()
}
