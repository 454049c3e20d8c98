//! Errors of the front doors, and how they reach clients. A user error (bad name, unknown
//! stream, oversized batch) becomes the gRPC status HStreamDB uses for it; an internal failure
//! becomes INTERNAL (or DATA_LOSS for a batch that failed its checksum) and is logged. The
//! status message is a JSON object `{"error": <HStreamDB ErrorCode>, "message": "..."}` as
//! HStreamDB servers send it.

use streamcell_proto::api::ErrorCode;
use streamcell_store::StoreError;
use tonic::{Code, Status};

/// Errors answered to a gRPC client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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
    /// The request conflicts with the current state (e.g. deleting a subscription that has
    /// consumers without `force`).
    #[error("{message}")]
    Precondition {
        /// Error code.
        code: ErrorCode,
        /// What stands in the way.
        message: String,
    },
    /// The RPC belongs to a part of StreamCell that this build does not serve.
    #[error("{0}")]
    Unimplemented(String),
    /// An error inside the store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    /// An invalid-argument error.
    pub fn invalid(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            code,
            message: message.into(),
        }
    }

    /// A not-found error.
    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::NotFound {
            code,
            message: message.into(),
        }
    }
}

/// HStreamDB's JSON status body.
pub fn body(code: ErrorCode, message: &str) -> String {
    serde_json::json!({ "error": code as i32, "message": message }).to_string()
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::Invalid { code, message } => {
                Status::new(Code::InvalidArgument, body(code, &message))
            }
            ApiError::NotFound { code, message } => {
                Status::new(Code::NotFound, body(code, &message))
            }
            ApiError::Exists { code, message } => {
                Status::new(Code::AlreadyExists, body(code, &message))
            }
            ApiError::Precondition { code, message } => {
                Status::new(Code::FailedPrecondition, body(code, &message))
            }
            ApiError::Unimplemented(m) => {
                Status::new(Code::Unimplemented, body(ErrorCode::InternalError, &m))
            }
            ApiError::Store(s) => store_status(s),
        }
    }
}

fn store_status(e: StoreError) -> Status {
    let msg = e.to_string();
    match e {
        StoreError::StreamNotFound(_) => {
            Status::new(Code::NotFound, body(ErrorCode::StreamNotFound, &msg))
        }
        StoreError::ShardNotFound(_) => {
            Status::new(Code::NotFound, body(ErrorCode::StreamNotFound, &msg))
        }
        StoreError::ReaderNotFound(_) => Status::new(
            Code::NotFound,
            body(ErrorCode::ShardReaderInvalidObjectIdentifier, &msg),
        ),
        StoreError::StreamExists(_) => {
            Status::new(Code::AlreadyExists, body(ErrorCode::StreamExists, &msg))
        }
        StoreError::SubscriptionNotFound(_) => {
            Status::new(Code::NotFound, body(ErrorCode::SubscriptionNotFound, &msg))
        }
        StoreError::SubscriptionExists(_) => Status::new(
            Code::AlreadyExists,
            body(ErrorCode::SubscriptionExists, &msg),
        ),
        StoreError::ReaderExists(_) => Status::new(
            Code::AlreadyExists,
            body(ErrorCode::ShardReaderInvalidObjectIdentifier, &msg),
        ),
        StoreError::Invalid(_) => {
            Status::new(Code::InvalidArgument, body(ErrorCode::InternalError, &msg))
        }
        e if e.out_of_resources() => {
            tracing::warn!("out of resources: {msg}");
            Status::new(
                Code::ResourceExhausted,
                body(ErrorCode::InternalError, &msg),
            )
        }
        StoreError::Corrupt { .. } => {
            tracing::error!("refusing to serve damaged data: {msg}");
            Status::new(Code::DataLoss, body(ErrorCode::InternalError, &msg))
        }
        StoreError::ShuttingDown | StoreError::LogFailed { .. } => {
            tracing::warn!("{msg}");
            Status::new(Code::Unavailable, body(ErrorCode::InternalError, &msg))
        }
        StoreError::Locked(_) | StoreError::Io { .. } | StoreError::Catalog(_) => {
            tracing::error!("internal error: {msg}");
            Status::new(Code::Internal, body(ErrorCode::InternalError, &msg))
        }
    }
}

/// Errors that stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened (locked, corrupt, I/O).
    #[error("cannot open the data directory: {0}")]
    Store(#[from] StoreError),
    /// A listening port could not be bound.
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
        /// A hint for the user.
        hint: &'static str,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A fault of the server itself while starting.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias for RPC handlers.
pub type ApiResult<T> = Result<T, ApiError>;
