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

/// Results of the service.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;
