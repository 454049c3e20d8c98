//! What every network door of StreamCell (gRPC, HTTP, PostgreSQL) shares to decide who and
//! how many may come in, without being a door itself:
//!
//! - [`security`]: the users, the access token and the TLS files of one configuration, the
//!   credential check of `authorization` headers, and rustls configurations for the doors
//!   that terminate TLS with rustls;
//! - [`conn`]: a connection that holds its place under its port's cap and may close itself
//!   when idle; [`connection_cap`] sizes the caps to the open-file limit and [`refused`]
//!   logs a connection turned away.

pub mod conn;
pub mod security;

use std::time::Duration;

pub use conn::Conn;
pub use security::{Secret, Security, Unauthenticated};

/// A security setting that cannot be used (a file that is missing or not PEM, a key that does
/// not match its certificate); the message names the file or the setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Each port's connection cap: `configured`, lowered so that three full ports leave a quarter
/// of the open-file limit (and at least 256 descriptors) to the store and the rest.
pub fn connection_cap(configured: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed by pointer.
    let files = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    } else {
        return configured;
    };
    let room = files.saturating_sub((files / 4).max(256)) / 3;
    configured.min(room.max(16))
}

/// Logs (at most once a second) that a port turned a connection away at its cap.
pub fn refused(door: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST.swap(now, Ordering::Relaxed) != now {
        tracing::warn!("{door} port: connection refused, the port is at its --max-connections");
    }
}
