//! Errors of the PostgreSQL front door and the SQLSTATE each is answered with.
//!
//! User errors (bad SQL, unknown objects, unsupported features, bad parameters) end the
//! statement with an `ErrorResponse` and leave the connection usable; internal errors are
//! logged and answered with `XX000`.

use pgwire::error::{ErrorInfo, PgWireError};
use streamcell_engine::{EngineError, ErrorKind};

/// An error answered to a PostgreSQL client.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The engine refused or failed the statement.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A statement the front door cannot read (`42601`).
    #[error("{0}")]
    Syntax(String),
    /// A PostgreSQL feature StreamCell does not have (`0A000`).
    #[error("{0}")]
    Unsupported(String),
    /// A session setting (`SHOW name`) that does not exist (`42704`, undefined_object, as
    /// PostgreSQL answers).
    #[error("unrecognized configuration parameter \"{0}\"")]
    UnknownSetting(String),
    /// A statement not allowed in the session's transaction state: a savepoint outside a
    /// transaction block (`25P01`), a savepoint (`3B001`) or cursor (`34000`) that does not
    /// exist; the SQLSTATE is PostgreSQL's for the case.
    #[error("{message}")]
    State {
        /// The SQLSTATE.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A parameter value that cannot be used as its type (`22P02`).
    #[error("{0}")]
    BadParameter(String),
    /// The statement was cancelled by the client (`57014`).
    #[error("canceling statement due to user request")]
    Cancelled,
    /// The statement ran past the session's `statement_timeout` (`57014`).
    #[error("canceling statement due to statement timeout")]
    TimedOut,
    /// A bug or an unexpected state inside the front door (`XX000`).
    #[error("internal error: {0}")]
    Internal(String),
}

impl PgError {
    /// The SQLSTATE of this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            PgError::Engine(e) => match e {
                // program_limit_exceeded / statement_too_complex
                EngineError::Syntax(streamcell_sql::SqlError::TooLarge(_)) => "54000",
                EngineError::Syntax(streamcell_sql::SqlError::TooComplex { .. }) => "54001",
                e => sqlstate_of(e.kind()),
            },
            PgError::Syntax(_) => "42601",
            PgError::Unsupported(_) => "0A000",
            PgError::UnknownSetting(_) => "42704",
            PgError::State { code, .. } => code,
            PgError::BadParameter(_) => "22P02",
            PgError::Cancelled | PgError::TimedOut => "57014",
            PgError::Internal(_) => "XX000",
        }
    }

    /// Whether the client caused it (otherwise it is logged as a server problem).
    pub fn is_user_error(&self) -> bool {
        match self {
            PgError::Engine(e) => e.is_user_error(),
            PgError::Internal(_) => false,
            _ => true,
        }
    }
}

/// The SQLSTATE of an error kind.
pub fn sqlstate_of(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Syntax => "42601",
        ErrorKind::Invalid => "42000",
        ErrorKind::UndefinedColumn => "42703",
        ErrorKind::TypeMismatch => "42804",
        ErrorKind::DivisionByZero => "22012",
        ErrorKind::NotSupported => "0A000",
        // out_of_memory: a query over its memory limit
        ErrorKind::Limit => "53200",
        // insufficient_resources: out of file descriptors or disk space
        ErrorKind::Exhausted => "53000",
        // undefined_table: streams, views and baskets are the relations here
        ErrorKind::NotFound => "42P01",
        ErrorKind::Exists => "42P07",
        ErrorKind::Precondition => "55000",
        ErrorKind::Cancelled => "57014",
        ErrorKind::Unavailable => "57P01",
        ErrorKind::DataLoss => "XX001",
        ErrorKind::Internal => "XX000",
    }
}

impl From<PgError> for PgWireError {
    fn from(e: PgError) -> PgWireError {
        if !e.is_user_error() {
            tracing::warn!(error = %e, "PostgreSQL statement failed");
        }
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".to_string(),
            e.sqlstate().to_string(),
            e.to_string(),
        )))
    }
}

impl From<arrow::error::ArrowError> for PgError {
    fn from(e: arrow::error::ArrowError) -> PgError {
        PgError::Internal(format!("encoding a value: {e}"))
    }
}

impl From<PgWireError> for PgError {
    fn from(e: PgWireError) -> PgError {
        PgError::Internal(e.to_string())
    }
}

/// Result of the front door's operations.
pub type Result<T, E = PgError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_map_to_sqlstates_clients_know() {
        let cases = [
            (
                EngineError::Syntax(streamcell_sql::SqlError::Empty),
                "42601",
            ),
            (EngineError::NotFound("x".into()), "42P01"),
            (EngineError::AlreadyExists("x".into()), "42P07"),
            (EngineError::Internal("x".into()), "XX000"),
        ];
        for (e, code) in cases {
            assert_eq!(PgError::Engine(e).sqlstate(), code);
        }
        assert_eq!(PgError::Unsupported("COPY".into()).sqlstate(), "0A000");
        assert_eq!(PgError::UnknownSetting("nope".into()).sqlstate(), "42704");
        for (kind, code) in [
            (ErrorKind::UndefinedColumn, "42703"),
            (ErrorKind::TypeMismatch, "42804"),
            (ErrorKind::DivisionByZero, "22012"),
            (ErrorKind::NotSupported, "0A000"),
            (ErrorKind::Unavailable, "57P01"),
            (ErrorKind::DataLoss, "XX001"),
            (ErrorKind::Exhausted, "53000"),
        ] {
            assert_eq!(sqlstate_of(kind), code, "{kind:?}");
        }
        assert_eq!(PgError::Cancelled.sqlstate(), "57014");
    }
}
