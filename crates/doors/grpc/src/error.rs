//! How errors reach gRPC clients. A user error (bad name, unknown
//! stream, oversized batch) becomes the gRPC status HStreamDB uses for it; an internal failure
//! becomes INTERNAL (or DATA_LOSS for a batch that failed its checksum) and is logged. The
//! status message is a JSON object `{"error": <HStreamDB ErrorCode>, "message": "..."}` as
//! HStreamDB servers send it.

use streamcell_proto::api::ErrorCode;
use streamcell_service::ServiceError;
use streamcell_store::StoreError;
use tonic::{Code, Status};

/// The status an RPC answers for a service error: HStreamDB's gRPC code, with its error
/// code and the message in the JSON body.
pub fn status(e: ServiceError) -> Status {
    match e {
        ServiceError::Invalid { code, message } => {
            Status::new(Code::InvalidArgument, body(code, &message))
        }
        ServiceError::NotFound { code, message } => {
            Status::new(Code::NotFound, body(code, &message))
        }
        ServiceError::Exists { code, message } => {
            Status::new(Code::AlreadyExists, body(code, &message))
        }
        ServiceError::Precondition { code, message } => {
            Status::new(Code::FailedPrecondition, body(code, &message))
        }
        ServiceError::Cancelled(m) => Status::new(Code::Cancelled, m),
        ServiceError::Unavailable(m) => Status::new(Code::Unavailable, m),
        ServiceError::DataLoss(m) => {
            Status::new(Code::DataLoss, body(ErrorCode::InternalError, &m))
        }
        ServiceError::Store(s) => store_status(s),
    }
}

/// The status of an RPC that belongs to a part of StreamCell this build does not serve.
pub fn unimplemented(rpc: &str) -> Status {
    Status::new(
        Code::Unimplemented,
        body(
            ErrorCode::InternalError,
            &format!("{rpc} is not available in this StreamCell version yet"),
        ),
    )
}

/// HStreamDB's JSON status body.
pub fn body(code: ErrorCode, message: &str) -> String {
    serde_json::json!({ "error": code as i32, "message": message }).to_string()
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
