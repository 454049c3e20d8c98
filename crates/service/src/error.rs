//! The service's one error type. A user error (bad name, unknown stream, oversized batch)
//! carries the HStreamDB error code that names it (HStreamDB's own vocabulary, which its
//! clients read from every door); trouble inside keeps the store's error as its source. The
//! doors map a [`ServiceError`] once, at their edge: gRPC to a status with HStreamDB's JSON
//! body, HTTP to a status and a JSON error, the engine to its own error kinds.

use streamcell_proto::api::ErrorCode;
use streamcell_store::StoreError;

/// What went wrong in a service call.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A request field is invalid.
    #[error("{message}")]
    Invalid {
        /// The HStreamDB error code that names the problem.
        code: ErrorCode,
        /// What is wrong, naming the field and value.
        message: String,
    },
    /// The named object does not exist.
    #[error("{message}")]
    NotFound {
        /// Error code.
        code: ErrorCode,
        /// What is missing.
        message: String,
    },
    /// The named object exists already.
    #[error("{message}")]
    Exists {
        /// Error code.
        code: ErrorCode,
        /// What exists.
        message: String,
    },
    /// The request conflicts with the current state (e.g. deleting a stream that has
    /// subscriptions without `force`).
    #[error("{message}")]
    Precondition {
        /// Error code.
        code: ErrorCode,
        /// What stands in the way.
        message: String,
    },
    /// A long-running call was ended by a change elsewhere (its subscription was deleted).
    #[error("{0}")]
    Cancelled(String),
    /// The server is stopping.
    #[error("{0}")]
    Unavailable(String),
    /// Acknowledged data cannot be read (a subscription holds a shard at damaged data).
    #[error("{0}")]
    DataLoss(String),
    /// An error inside the store (or a store error the caller caused, such as an unknown
    /// shard: [`StoreError::is_user_error`] tells).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError {
    /// An invalid-argument error.
    pub fn invalid(code: ErrorCode, message: impl Into<String>) -> Self {
        ServiceError::Invalid {
            code,
            message: message.into(),
        }
    }

    /// A not-found error.
    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        ServiceError::NotFound {
            code,
            message: message.into(),
        }
    }

    /// The error a call gets while the server stops.
    pub fn shutting_down() -> Self {
        ServiceError::Unavailable("the server is shutting down".into())
    }

    /// True for the caller's mistakes, false for trouble inside.
    pub fn is_user_error(&self) -> bool {
        match self {
            ServiceError::Invalid { .. }
            | ServiceError::NotFound { .. }
            | ServiceError::Exists { .. }
            | ServiceError::Precondition { .. }
            | ServiceError::Cancelled(_) => true,
            ServiceError::Unavailable(_) | ServiceError::DataLoss(_) => false,
            ServiceError::Store(e) => e.is_user_error(),
        }
    }
}

/// What kind of failure an error is, named the same at every door. The service's and the
/// engine's errors each say their kind ([`ServiceError::kind`], `EngineError::kind`); each
/// door maps a kind once, at its edge: to a gRPC code (with HStreamDB's error code where the
/// error carries one), a SQLSTATE, an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The statement does not parse.
    Syntax,
    /// The request or statement is wrong as written (a bad value, a feature used where it
    /// cannot be).
    Invalid,
    /// A statement names a column its input does not have.
    UndefinedColumn,
    /// Values of types that do not go together (a comparison, an argument, a cast).
    TypeMismatch,
    /// A division by zero while computing rows.
    DivisionByZero,
    /// A feature StreamCell does not have.
    NotSupported,
    /// Over a limit the server keeps for one request (memory for one query, the size or
    /// depth of a statement).
    Limit,
    /// A resource of the machine ran out (disk space, file descriptors): not the caller's
    /// fault, and it may pass by itself.
    Exhausted,
    /// A named object does not exist.
    NotFound,
    /// A named object exists already.
    Exists,
    /// The object is not in a state that allows the operation.
    Precondition,
    /// A long-running call was ended by a change elsewhere, or by its caller.
    Cancelled,
    /// The server is stopping; another server, or this one later, may answer.
    Unavailable,
    /// Acknowledged data cannot be read: it is damaged.
    DataLoss,
    /// A bug or an unexpected failure inside the server.
    Internal,
}

impl ErrorKind {
    /// True for the caller's mistakes, false for trouble inside (logged by the doors).
    pub fn is_user_error(self) -> bool {
        !matches!(
            self,
            ErrorKind::Exhausted
                | ErrorKind::Unavailable
                | ErrorKind::DataLoss
                | ErrorKind::Internal
        )
    }

    /// The kind of a store error.
    pub fn of_store(e: &StoreError) -> ErrorKind {
        match e {
            StoreError::StreamNotFound(_)
            | StoreError::ShardNotFound(_)
            | StoreError::ReaderNotFound(_)
            | StoreError::SubscriptionNotFound(_) => ErrorKind::NotFound,
            StoreError::StreamExists(_)
            | StoreError::ReaderExists(_)
            | StoreError::SubscriptionExists(_) => ErrorKind::Exists,
            StoreError::Invalid(_) => ErrorKind::Invalid,
            StoreError::Corrupt { .. } => ErrorKind::DataLoss,
            StoreError::ShuttingDown | StoreError::LogFailed { .. } if !e.out_of_resources() => {
                ErrorKind::Unavailable
            }
            e if e.out_of_resources() => ErrorKind::Exhausted,
            _ => ErrorKind::Internal,
        }
    }
}

impl ServiceError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::Invalid { .. } => ErrorKind::Invalid,
            ServiceError::NotFound { .. } => ErrorKind::NotFound,
            ServiceError::Exists { .. } => ErrorKind::Exists,
            ServiceError::Precondition { .. } => ErrorKind::Precondition,
            ServiceError::Cancelled(_) => ErrorKind::Cancelled,
            ServiceError::Unavailable(_) => ErrorKind::Unavailable,
            ServiceError::DataLoss(_) => ErrorKind::DataLoss,
            ServiceError::Store(e) => ErrorKind::of_store(e),
        }
    }
}

/// Results of the service.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;
