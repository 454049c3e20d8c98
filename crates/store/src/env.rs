//! What the shard logs run on ([`LogEnv`]): their file system, their clock, and the timings
//! of their background work. Shards, the committer and [`crate::LocalLog`] all take it from
//! here, so none of them depends on another for it.

use std::sync::Arc;
use std::time::Duration;

use crate::now_ms;
use crate::vfs::{StdFs, Vfs};

/// How often, at most, a shard's acknowledged-end marker is `fdatasync`ed while the shard
/// receives appends (it is also synced with the data under `interval`, and at shutdown).
pub(crate) const MARKER_SYNC_EVERY: Duration = Duration::from_secs(1);

/// How long after a shard's log failed the committer first tries to recover it in place (and
/// then again after each failed try), on its next append: a transient cause (too many open
/// files, a full disk) may be gone by then, and a cause that holds is not retried in a loop.
pub(crate) const RECOVER_AFTER: Duration = Duration::from_secs(1);

/// The clock of the shard logs: milliseconds since the Unix epoch.
pub type LogClock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// What the shard logs run on: their file system, their clock, and how soon a failed shard is
/// recovered in place. [`LogEnv::default`] is the real file system ([`StdFs`]) and the system
/// clock ([`now_ms`]), which is what [`LocalLog::open`] and [`crate::Store::open`] use; tests
/// open a [`LocalLog`] on another one with [`LocalLog::open_in`] (see `crate::vfs`).
#[derive(Clone)]
#[non_exhaustive]
pub struct LogEnv {
    /// The file system that holds the shard directories.
    pub fs: Arc<dyn Vfs>,
    /// The clock: publish times, retention and the age of segments.
    pub clock: LogClock,
    /// How long after a shard's log failed the committer first tries to recover it in place
    /// (and then again after each failed try), on its next append (1 s).
    pub recover_after: Duration,
    /// How often, at most, a shard's `ACKED` is synced while it receives appends (1 s; see
    /// `docs/storage-format.md` §5.1). `Duration::ZERO` syncs it after every round, and
    /// `Duration::MAX` only at the other occasions (interval syncs, shutdown, recovery).
    pub marker_sync_every: Duration,
}

impl Default for LogEnv {
    fn default() -> Self {
        LogEnv {
            fs: StdFs::shared(),
            clock: Arc::new(now_ms),
            recover_after: RECOVER_AFTER,
            marker_sync_every: MARKER_SYNC_EVERY,
        }
    }
}

impl std::fmt::Debug for LogEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogEnv")
            .field("fs", &self.fs)
            .field("recover_after", &self.recover_after)
            .field("marker_sync_every", &self.marker_sync_every)
            .finish_non_exhaustive()
    }
}

impl LogEnv {
    /// Now, by this environment's clock (ms since the Unix epoch).
    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }
}
