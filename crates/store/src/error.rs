//! The store's one error type. It separates what the caller asked for wrongly (unknown shard,
//! a name that exists, a read below the trim point) from what went wrong inside (I/O, a failed
//! checksum, a broken catalog), so front doors can map the first to a client error and the
//! second to an internal or data-loss error.

use std::path::PathBuf;

/// Errors returned by the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // ---- the caller's mistakes -------------------------------------------------------
    /// The named stream does not exist.
    #[error("stream {0:?} does not exist")]
    StreamNotFound(String),
    /// A stream with this name exists already.
    #[error("stream {0:?} already exists")]
    StreamExists(String),
    /// The shard id is unknown (never created, or its stream was deleted).
    #[error("shard {0} does not exist")]
    ShardNotFound(u64),
    /// The shard reader id is unknown.
    #[error("shard reader {0:?} does not exist")]
    ReaderNotFound(String),
    /// A shard reader with this id exists already.
    #[error("shard reader {0:?} already exists")]
    ReaderExists(String),
    /// The subscription id is unknown.
    #[error("subscription {0:?} does not exist")]
    SubscriptionNotFound(String),
    /// A subscription with this id exists already.
    #[error("subscription {0:?} already exists")]
    SubscriptionExists(String),
    /// A request that the store cannot honour as asked (documented per call).
    #[error("{0}")]
    Invalid(String),

    // ---- trouble inside ---------------------------------------------------------------
    /// A batch or file failed its checksum or structure check: it is never served.
    #[error("corrupt data in {path}: {detail}")]
    Corrupt {
        /// The file that holds the damage.
        path: PathBuf,
        /// What is wrong, with the sequence number or offset.
        detail: String,
    },
    /// The shard's log stopped accepting writes after an I/O failure. Once the cause is gone
    /// an append at least a second after the failure recovers it in place; a log that could
    /// not be opened at start is recovered by a restart.
    #[error(
        "shard {shard} is unavailable: {reason} (once the cause is fixed, a later append \
         recovers it; a log that could not be opened at start needs a restart)"
    )]
    LogFailed {
        /// The shard whose log failed.
        shard: u64,
        /// The original failure.
        reason: String,
    },
    /// The store is shutting down.
    #[error("the store is shutting down")]
    ShuttingDown,
    /// The data directory is in use by another process.
    #[error("data directory {0} is locked by another running server")]
    Locked(PathBuf),
    /// An operating-system I/O error, with what was being done.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The catalog database failed.
    #[error("catalog error: {0}")]
    Catalog(String),
}

impl StoreError {
    /// True when the error is the caller's (bad request), false when it is an internal failure.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            StoreError::StreamNotFound(_)
                | StoreError::StreamExists(_)
                | StoreError::ShardNotFound(_)
                | StoreError::ReaderNotFound(_)
                | StoreError::ReaderExists(_)
                | StoreError::SubscriptionNotFound(_)
                | StoreError::SubscriptionExists(_)
                | StoreError::Invalid(_)
        )
    }

    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether a resource ran out (file descriptors, disk space or quota) rather than something
    /// broke: the front doors answer RESOURCE_EXHAUSTED, and it may pass by itself.
    pub fn out_of_resources(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => out_of_resources(source),
            // The failure is kept as text (the log failed earlier); its OS error number names it.
            StoreError::LogFailed { reason, .. } => [
                "(os error 23)",
                "(os error 24)",
                "(os error 28)",
                "(os error 122)",
            ]
            .iter()
            .any(|code| reason.contains(code)),
            _ => false,
        }
    }
}

/// Too many open files (in the process or the system), no space left, or over the quota.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24 | 28 | 122))
        || matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Catalog(e.to_string())
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Catalog(e.to_string()) }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Result alias for the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
