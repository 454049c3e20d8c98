//! Resource names (streams, subscriptions, shard readers) as HStreamDB accepts them.

use streamcell_proto::api::ErrorCode;

use crate::error::{Result, ServiceError};

/// Checks a resource name as HStreamDB does: 1 to 255 characters, a letter first, then
/// letters, digits, `-` or `_`. `what` names the kind in the message; `code` is the
/// HStreamDB error code of a bad name of that kind.
pub fn validate_name(what: &str, name: &str, code: ErrorCode) -> Result<()> {
    let problem = if name.is_empty() {
        Some("is empty".to_string())
    } else if name.chars().count() > 255 {
        Some(format!(
            "is {} characters long (at most 255)",
            name.chars().count()
        ))
    } else if !name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        Some("must start with a letter".to_string())
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            .map(|c| format!("contains {c:?}; only letters, digits, '-' and '_' are allowed"))
    };
    match problem {
        Some(p) => {
            let shown: String = name.chars().take(64).collect();
            let more = if shown.len() < name.len() { "…" } else { "" };
            Err(ServiceError::invalid(
                code,
                format!("invalid {what} name {shown:?}{more}: it {p}"),
            ))
        }
        None => Ok(()),
    }
}
