//! The SQL front end's error type: every error says what is wrong and, when it can, where
//! (line and column, 1-based, of the token at fault).

/// A statement that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// The text is not valid in the dialect.
    #[error("syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// What is wrong.
        message: String,
        /// Line of the offending token (1-based; 0 if unknown).
        line: u64,
        /// Column of the offending token (1-based; 0 if unknown).
        column: u64,
    },
    /// The input holds no statement.
    #[error("no SQL statement given")]
    Empty,
    /// The text is longer than one request may be ([`crate::limits::MAX_STATEMENT_BYTES`]).
    #[error("{0}")]
    TooLarge(String),
    /// An expression nests deeper than [`crate::limits::MAX_EXPRESSION_DEPTH`] levels.
    #[error("statement too complex at line {line}, column {column}: {message}")]
    TooComplex {
        /// What is too deep, and what to do instead.
        message: String,
        /// Line of the token where the limit was passed (1-based; 0 if unknown).
        line: u64,
        /// Its column (1-based; 0 if unknown).
        column: u64,
    },
}

impl SqlError {
    pub(crate) fn at(message: impl Into<String>, loc: sqlparser::tokenizer::Location) -> Self {
        SqlError::Syntax {
            message: message.into(),
            line: loc.line,
            column: loc.column,
        }
    }
}

/// Turns sqlparser's error (whose message ends with "at Line: L, Column: C") into ours.
impl From<sqlparser::parser::ParserError> for SqlError {
    fn from(e: sqlparser::parser::ParserError) -> Self {
        let text = match &e {
            sqlparser::parser::ParserError::TokenizerError(m)
            | sqlparser::parser::ParserError::ParserError(m) => m.clone(),
            sqlparser::parser::ParserError::RecursionLimitExceeded => {
                "the statement is nested too deeply".to_string()
            }
        };
        let (message, line, column) = match text.rfind(" at Line: ") {
            Some(i) => {
                let pos = &text[i + " at Line: ".len()..];
                let mut parts = pos.split(", Column: ");
                let line = parts
                    .next()
                    .and_then(|l| l.trim().parse().ok())
                    .unwrap_or(0);
                let column = parts
                    .next()
                    .and_then(|c| c.trim().parse().ok())
                    .unwrap_or(0);
                (text[..i].to_string(), line, column)
            }
            None => (text, 0, 0),
        };
        SqlError::Syntax {
            message,
            line,
            column,
        }
    }
}
