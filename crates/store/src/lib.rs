//! StreamCell's storage layer: durable, append-only shard logs and the catalog.
//!
//! It knows nothing of SQL, gRPC or record formats: a batch is opaque bytes with a record
//! count and a few flag bits. What it promises:
//! - an acknowledged append survives a crash (with the default `always` sync policy, an ack
//!   follows `fdatasync`; many appends share one sync: group commit);
//! - every batch is checksummed (CRC32C) and a batch that fails its check is never served;
//! - recovery cuts off a torn tail (an append that was never acknowledged) and keeps, but
//!   refuses to serve, damage in the middle of a log;
//! - each shard records how far it acknowledged (`marker.rs`): acknowledged batches that are
//!   missing at recovery (a truncated or deleted segment) are reported as lost, reads of them
//!   fail, and their sequence numbers are never handed out again;
//! - sequence numbers per shard strictly increase and publish times never decrease.
//!
//! Layout on disk and byte formats: `docs/storage-format.md`.

pub mod catalog;
mod committer;
mod env;
pub mod error;
pub mod frame;
pub mod log;
pub mod marker;
pub mod segment;
pub mod shard;
pub mod vfs;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use catalog::{
    Catalog, ConsumerCatalog, NewStream, ObjectCatalog, ReaderMeta, RedbCatalog, ShardMeta,
    StreamCatalog, StreamMeta, SubscriptionMeta,
};
pub use error::{Result, StoreError};
pub use log::{BoxFuture, CatalogShards, LocalLog, LogClock, LogEnv, ShardLog};

/// When an append is made durable before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fdatasync` before every acknowledgement (shared by concurrent appends). The default.
    Always,
    /// Acknowledge once written to the OS; `fdatasync` at least this often. A crash of the
    /// machine (not just the process) can lose up to this much acknowledged data.
    Interval(Duration),
    /// Acknowledge once written to the OS; sync only when a segment is sealed or on shutdown.
    Never,
}

impl std::str::FromStr for SyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "always" => Ok(SyncPolicy::Always),
            "never" => Ok(SyncPolicy::Never),
            "interval" => Ok(SyncPolicy::Interval(Duration::from_millis(100))),
            other => match other.strip_prefix("interval:") {
                Some(ms) => match ms.parse::<u64>() {
                    Ok(ms) if (1..=3_600_000).contains(&ms) => {
                        Ok(SyncPolicy::Interval(Duration::from_millis(ms)))
                    }
                    _ => Err(format!(
                        "sync interval {ms:?} must be a whole number of milliseconds from 1 to 3600000"
                    )),
                },
                None => Err(format!(
                    "unknown sync policy {other:?}: expected always, never, interval or interval:<ms>"
                )),
            },
        }
    }
}

impl std::fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncPolicy::Always => write!(f, "always"),
            SyncPolicy::Never => write!(f, "never"),
            SyncPolicy::Interval(d) => write!(f, "interval:{}", d.as_millis()),
        }
    }
}

/// Settings of the shard logs.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Sync policy.
    pub sync: SyncPolicy,
    /// A segment is sealed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// Number of committer threads (shards are spread over them by id).
    pub committer_threads: usize,
    /// Payload bytes that may wait for a committer before appends are made to wait.
    pub max_inflight_bytes: usize,
    /// How often retention runs.
    pub retention_check_interval: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            sync: SyncPolicy::Always,
            segment_bytes: 64 << 20,
            committer_threads: 2,
            max_inflight_bytes: 64 << 20,
            retention_check_interval: log::DEFAULT_RETENTION_CHECK,
        }
    }
}

/// A batch to append.
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// The batch's bytes, stored as they are.
    pub payload: Bytes,
    /// How many records the batch holds.
    pub record_count: u32,
    /// Caller-defined flags stored with the batch.
    pub flags: u16,
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its sequence number in the shard.
    pub seq: u64,
    /// Its publish time (ms since the Unix epoch), assigned by the store.
    pub timestamp_ms: i64,
}

/// A batch read back from a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    /// Sequence number.
    pub seq: u64,
    /// Publish time.
    pub timestamp_ms: i64,
    /// Records in the batch.
    pub record_count: u32,
    /// Flags given at append.
    pub flags: u16,
    /// The bytes given at append.
    pub payload: Bytes,
}

/// Bounds on one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// At most this many batches.
    pub max_batches: usize,
    /// At most this many payload bytes; the first batch is returned whatever its size.
    pub max_bytes: usize,
}

impl ReadLimits {
    /// Up to `n` batches and 16 MiB.
    pub fn batches(n: usize) -> Self {
        ReadLimits {
            max_batches: n,
            max_bytes: 16 << 20,
        }
    }
}

/// The readable range of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardBounds {
    /// First readable sequence number.
    pub start_seq: u64,
    /// Last visible sequence number (`start_seq - 1` when nothing is readable; 0 when empty).
    pub tail_seq: u64,
    /// Publish time of the tail batch (0 when empty).
    pub tail_timestamp_ms: i64,
    /// The sequence number the next append will get.
    pub next_seq: u64,
}

/// What a shard cannot serve (see `docs/storage-format.md` §5.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardDamage {
    /// Acknowledged batches that the recovery at this start found missing from the log
    /// (inclusive sequence ranges): the active segment cut, zeroed or deleted below the
    /// acknowledged end, a gap between sealed segments (one cut short or deleted), or the
    /// first segments deleted (below the recorded start). Reads of them fail with a corruption
    /// error (DATA_LOSS); their sequence numbers are never reused. A loss at the end or the
    /// front of the log is recorded in an index file and reported only by the start that found
    /// it; a gap between sealed segments is found again at every start.
    pub lost: Vec<(u64, u64)>,
    /// Every range at or after the first readable sequence number that reads refuse with a
    /// corruption error (damaged bytes, and lost batches found by this or an earlier start),
    /// sorted and merged.
    pub unreadable: Vec<(u64, u64)>,
    /// The last sequence number recorded as acknowledged.
    pub acked_seq: u64,
}

impl ShardDamage {
    /// Number of batches in `lost`.
    pub fn lost_batches(&self) -> u64 {
        self.lost.iter().map(|&(a, b)| b - a + 1).sum()
    }

    /// Number of batches in `unreadable`.
    pub fn unreadable_batches(&self) -> u64 {
        self.unreadable.iter().map(|&(a, b)| b - a + 1).sum()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The whole store in one data directory: catalog plus shard logs, held by one process.
pub struct Store {
    /// The catalog.
    pub catalog: Arc<dyn Catalog>,
    /// The shard logs.
    pub log: Arc<dyn ShardLog>,
    local: Arc<LocalLog>,
    dir: PathBuf,
    _lock: File,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, taking an exclusive lock on it and
    /// recovering every shard log.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::io(format!("creating data directory {}", dir.display()), e))?;
        let lock_path = dir.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(format!("opening {}", lock_path.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(dir.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::io(
                    format!("locking {}", lock_path.display()),
                    e,
                ))
            }
        }
        let catalog_path = dir.join("catalog.redb");
        let catalog = Arc::new(RedbCatalog::open(&catalog_path)?);
        // A damaged catalog must refuse the start with an error, not a panic inside redb.
        let known = catalog::without_panic(&catalog_path, || {
            Ok(CatalogShards {
                listed: catalog
                    .all_shards()?
                    .into_iter()
                    .map(|(m, backlog)| (m.id, backlog))
                    .collect(),
                next_shard_id: catalog.next_shard_id()?,
                deleted: catalog.deleted_shards()?,
                deletions_recorded_from: catalog.deletions_recorded_from()?,
            })
        })?;
        let root = dir.join("shards");
        let local = LocalLog::open(root.clone(), opts, &known)?;
        forget_removed_shards(&catalog, &catalog_path, &root, &known);
        Ok(Store {
            catalog,
            log: local.clone(),
            local,
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of a shard's files on disk (segments and indexes; 0 for a shard without a
    /// directory). Blocking: it lists the shard's directory.
    pub fn shard_disk_bytes(&self, shard: u64) -> u64 {
        dir_bytes(&self.local.root().join(shard.to_string()))
    }

    /// Bytes of every file in the data directory (catalog, shard logs, leftovers).
    /// Blocking: it walks the directory.
    pub fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.dir)
    }

    /// Makes all writes durable and stops background threads.
    pub async fn shutdown(&self) {
        self.local.shutdown().await;
    }
}

/// Drops the catalog's record of deleted shards whose directories are gone (best effort). Skipped
/// while a listed shard's directory is missing: `root` may then not hold the logs it should
/// (say, a volume not mounted), and the records are what tells a later start that leftover
/// directories there were deleted on purpose.
fn forget_removed_shards(
    catalog: &RedbCatalog,
    catalog_path: &Path,
    root: &Path,
    known: &CatalogShards,
) {
    let present = |name: String| !matches!(root.join(name).try_exists(), Ok(false));
    if known.listed.iter().any(|&(id, _)| !present(id.to_string())) {
        return;
    }
    let gone: Vec<u64> = known
        .deleted
        .iter()
        .copied()
        .filter(|&id| !present(id.to_string()) && !present(format!("{id}{}", log::REMOVING_SUFFIX)))
        .collect();
    if gone.is_empty() {
        return;
    }
    if let Err(e) = catalog::without_panic(catalog_path, || catalog.forget_deleted_shards(&gone)) {
        tracing::warn!(
            "forgetting {} removed shards in the catalog: {e}",
            gone.len()
        );
    }
}

/// Bytes of the files under `dir`, recursively, not following symbolic links. Files that
/// vanish while it walks (a segment removed by retention) count as nothing.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            total += dir_bytes(&entry.path());
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}
