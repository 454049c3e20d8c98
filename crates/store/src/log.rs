//! The shard log service: the `ShardLog` trait that callers use, and `LocalLog`, its
//! implementation on local segment files. `LocalLog` keeps the open shards, routes appends to
//! the committer thread that owns each shard, bounds the bytes in flight (back-pressure), and
//! runs retention in the background.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, watch, Semaphore};

use crate::committer::{Committer, CommitterConfig, Request};
pub use crate::env::{LogClock, LogEnv};
use crate::error::{Result, StoreError};
use crate::shard::Shard;
use crate::vfs::Vfs;
use crate::{Appended, LogOptions, NewBatch, ReadLimits, ShardBounds, ShardDamage, StoredBatch};

/// A boxed, sendable future (keeps `ShardLog` object-safe).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The interface to shard logs. The embedded implementation is [`LocalLog`]; a replicated
/// backend can implement the same trait without touching callers.
pub trait ShardLog: Send + Sync {
    /// Creates an empty log for a new shard.
    fn create_shard(&self, shard: u64, retention_secs: u32) -> Result<()>;
    /// Deletes a shard's log and its files. Appends in progress finish first.
    fn remove_shard(&self, shard: u64) -> BoxFuture<Result<()>>;
    /// Appends one batch. The future resolves once the batch is durable (per the sync policy)
    /// and visible to readers, with its sequence number and publish time.
    fn append(&self, shard: u64, batch: NewBatch) -> BoxFuture<Result<Appended>>;
    /// Reads batches from sequence number `from` on (blocking file I/O: call it off the async
    /// executor for large reads).
    fn read(&self, shard: u64, from: u64, limits: ReadLimits) -> Result<Vec<StoredBatch>>;
    /// The readable range of a shard.
    fn bounds(&self, shard: u64) -> Result<ShardBounds>;
    /// First sequence number published at or after `timestamp_ms` (or the next one to be
    /// written if none is).
    fn find_time(&self, shard: u64, timestamp_ms: i64) -> Result<u64>;
    /// Makes batches up to and including `seq` unreadable and frees their space.
    fn trim(&self, shard: u64, seq: u64) -> Result<()>;
    /// Watches the last visible sequence number of a shard.
    fn watch_tail(&self, shard: u64) -> Result<watch::Receiver<u64>>;
    /// Seals the active segment of a shard if it holds anything (used by retention and tests).
    fn roll(&self, shard: u64) -> Result<()>;
    /// Applies retention to every shard now (normally done in the background).
    fn enforce_retention(&self) -> Result<()>;
    /// What the shard cannot serve: acknowledged batches found missing when its log was
    /// recovered, and the ranges reads refuse. (A backend that cannot lose acknowledged data
    /// keeps the default: nothing.)
    fn damage(&self, shard: u64) -> Result<ShardDamage> {
        let _ = shard;
        Ok(ShardDamage::default())
    }
}

struct Lane {
    tx: Sender<Request>,
    inflight: Arc<Semaphore>,
}

/// Shard logs on the local file system.
pub struct LocalLog {
    root: PathBuf,
    opts: LogOptions,
    env: LogEnv,
    shards: RwLock<HashMap<u64, Arc<Shard>>>,
    /// Shards whose logs could not be opened, with the reason.
    failed: RwLock<HashMap<u64, String>>,
    lanes: Vec<Lane>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stop_retention: Mutex<Option<Sender<()>>>,
}

/// What the catalog says about the shard logs, for opening them at start.
#[derive(Debug, Clone, Default)]
pub struct CatalogShards {
    /// Every shard the catalog lists, with its retention in seconds.
    pub listed: Vec<(u64, u32)>,
    /// The next shard id the catalog would allocate: every id below it was allocated once.
    pub next_shard_id: u64,
    /// Shards whose deletion the catalog committed (their directories may still exist).
    pub deleted: Vec<u64>,
    /// Every deletion of a shard at or above this id is in `deleted`; one below it may have
    /// been made by a server version that recorded no deletions.
    pub deletions_recorded_from: u64,
}

/// Permits are counted in KiB of payload.
const PERMIT_BYTES: usize = 1024;

impl LocalLog {
    /// Opens (recovering) every shard the catalog lists under `root` and starts the committer
    /// and retention threads. Shard directories the catalog does not list are sorted out first
    /// (`docs/storage-format.md` §5): the removal of a deleted shard (`<id>.removing`, or a
    /// directory whose deletion the catalog recorded) is finished and the remains of an
    /// interrupted creation are removed; any other directory that holds data means the catalog
    /// is older than the logs, and the open is refused before anything is deleted. A listed
    /// shard whose directory is missing is not served (never recreated empty).
    ///
    /// On the real file system with the system clock; [`LocalLog::open_in`] takes another
    /// environment.
    pub fn open(root: PathBuf, opts: LogOptions, catalog: &CatalogShards) -> Result<Arc<LocalLog>> {
        Self::open_in(root, opts, catalog, LogEnv::default())
    }

    /// [`LocalLog::open`] in the environment `env`: its file system, clock and back-off.
    pub fn open_in(
        root: PathBuf,
        opts: LogOptions,
        catalog: &CatalogShards,
        env: LogEnv,
    ) -> Result<Arc<LocalLog>> {
        let fs = &*env.fs;
        fs.create_dir_all(&root)
            .map_err(|e| StoreError::io(format!("creating {}", root.display()), e))?;
        // The shard directories are synced into `root` when they are created; `root`'s own name
        // must be durable in its parent too (the first start creates it), or a power loss could
        // take every shard with it. One directory fsync per start.
        if let Some(parent) = root.parent() {
            crate::segment::sync_dir(fs, parent)?;
        }
        let next_shard_id = catalog.next_shard_id;
        let known: HashSet<u64> = catalog.listed.iter().map(|&(id, _)| id).collect();
        let deleted: HashSet<u64> = catalog.deleted.iter().copied().collect();
        let names = fs
            .read_dir(&root)
            .map_err(|e| StoreError::io(format!("listing {}", root.display()), e))?;
        // Sorted out first, acted on only once none of them makes the start refused.
        let mut removing = Vec::new();
        let mut finish_deletion = Vec::new();
        let mut interrupted = Vec::new();
        let mut unexplained = Vec::new();
        for os_name in names {
            let name = os_name.to_string_lossy().to_string();
            let path = root.join(&os_name);
            if let Some(id) = name
                .strip_suffix(REMOVING_SUFFIX)
                .and_then(|id| id.parse::<u64>().ok())
            {
                removing.push((id, path));
                continue;
            }
            let Ok(id) = name.parse::<u64>() else {
                continue;
            };
            if known.contains(&id) {
                continue;
            }
            if id >= next_shard_id {
                // The catalog never allocated this id: it is not the one these logs belong to.
                return Err(StoreError::Corrupt {
                    path,
                    detail: format!(
                        "this shard log is unknown to the catalog, which never allocated id {id} \
                         (its next id is {next_shard_id}); is catalog.redb missing or from another \
                         data directory? Refusing to start so that no data is deleted"
                    ),
                });
            }
            if deleted.contains(&id) {
                finish_deletion.push((id, path));
                continue;
            }
            // Never delete data on the catalog's word: only a directory that provably holds
            // nothing (a stream creation interrupted before its catalog commit) is removed.
            match crate::shard::interrupted_creation(fs, &path, id) {
                Ok(()) => interrupted.push((id, path)),
                Err(holds) => unexplained.push((id, path, holds)),
            }
        }
        if !unexplained.is_empty() {
            unexplained.sort();
            return Err(catalog_older_than_logs(
                &root,
                &unexplained,
                catalog.deletions_recorded_from,
            ));
        }
        let mut was_removing = HashSet::new();
        for (id, path) in removing {
            // A deletion the catalog committed, interrupted by a crash part-way.
            tracing::info!(path = %path.display(), "finishing the removal of a deleted shard log");
            if let Err(e) = fs.remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), "removing a deleted shard log: {e}");
            }
            was_removing.insert(id);
        }
        for (id, path) in finish_deletion {
            // The catalog committed the deletion; a crash came before the directory was renamed.
            tracing::info!(shard = id, path = %path.display(), "finishing the removal of a deleted shard log");
            if let Err(e) = remove_shard_dir(fs, &path) {
                tracing::warn!(shard = id, path = %path.display(), "removing a deleted shard log: {e}");
            }
        }
        for (id, path) in interrupted {
            tracing::warn!(
                shard = id,
                path = %path.display(),
                "removing the empty log of a shard whose creation was interrupted"
            );
            if let Err(e) = fs.remove_dir_all(&path) {
                tracing::warn!(shard = id, path = %path.display(), "removing an empty shard log: {e}");
            }
        }
        let mut map = HashMap::new();
        let mut failed = HashMap::new();
        for &(id, retention) in &catalog.listed {
            let dir = root.join(id.to_string());
            if let Ok(false) = fs.try_exists(&dir) {
                // Recreating it empty would silently drop every record the shard acknowledged.
                let reason = missing_log(&dir, was_removing.contains(&id));
                tracing::error!(shard = id, "shard log is not served: {reason}");
                failed.insert(id, reason);
                continue;
            }
            match Shard::open_in(&env, dir, id, retention) {
                Ok(shard) => {
                    map.insert(id, shard);
                }
                Err(e) => {
                    // One damaged shard must not take the others down: it is reported on use.
                    tracing::error!(
                        shard = id,
                        "shard log cannot be opened and is not served: {e}"
                    );
                    failed.insert(id, e.to_string());
                }
            }
        }
        let n = opts.committer_threads.max(1);
        let mut lanes = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n + 1);
        for i in 0..n {
            let (tx, rx) = mpsc::channel();
            let cfg = CommitterConfig {
                sync: opts.sync,
                segment_bytes: opts.segment_bytes,
                recover_after: env.recover_after,
                marker_sync_every: env.marker_sync_every,
            };
            let handle = std::thread::Builder::new()
                .name(format!("committer-{i}"))
                .spawn(move || Committer::new(rx, cfg).run())
                .map_err(|e| StoreError::io("starting a committer thread", e))?;
            threads.push(handle);
            let permits = (opts.max_inflight_bytes / PERMIT_BYTES).max(1);
            lanes.push(Lane {
                tx,
                inflight: Arc::new(Semaphore::new(permits)),
            });
        }
        let log = Arc::new(LocalLog {
            root,
            opts,
            env,
            shards: RwLock::new(map),
            failed: RwLock::new(failed),
            lanes,
            threads: Mutex::new(threads),
            stop_retention: Mutex::new(None),
        });
        log.start_retention()?;
        Ok(log)
    }

    fn start_retention(self: &Arc<Self>) -> Result<()> {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let weak = Arc::downgrade(self);
        let every = self.opts.retention_check_interval;
        let handle = std::thread::Builder::new()
            .name("retention".into())
            .spawn(move || loop {
                match stop_rx.recv_timeout(every) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let Some(log) = weak.upgrade() else { return };
                if let Err(e) = log.enforce_retention() {
                    tracing::error!("retention failed: {e}");
                }
            })
            .map_err(|e| StoreError::io("starting the retention thread", e))?;
        self.threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle);
        *self
            .stop_retention
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(stop_tx);
        Ok(())
    }

    fn shard(&self, id: u64) -> Result<Arc<Shard>> {
        if let Some(s) = self
            .shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(s.clone());
        }
        match self
            .failed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            Some(reason) => Err(StoreError::LogFailed {
                shard: id,
                reason: reason.clone(),
            }),
            None => Err(StoreError::ShardNotFound(id)),
        }
    }

    fn lane(&self, id: u64) -> &Lane {
        &self.lanes[(id % self.lanes.len() as u64) as usize]
    }

    /// Makes everything durable and stops the background threads.
    pub async fn shutdown(&self) {
        if let Some(stop) = self
            .stop_retention
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = stop.send(());
        }
        for lane in &self.lanes {
            let (tx, rx) = oneshot::channel();
            if lane.tx.send(Request::Shutdown { reply: tx }).is_ok() {
                let _ = rx.await;
            }
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    /// Waits until every committer has handled what was sent to it before this call (appends,
    /// rolls asked for by [`ShardLog::roll`] or retention) and the periodic work that follows
    /// (age-based rolls, the `ACKED` sync). Afterwards no file is written in the background
    /// until more is sent or time passes. For tests that need to know when the log is still.
    pub async fn quiesce(&self) {
        for lane in &self.lanes {
            let (tx, rx) = oneshot::channel();
            if lane.tx.send(Request::Quiesce { reply: tx }).is_ok() {
                let _ = rx.await;
            }
        }
    }

    /// The directory that holds the shard logs.
    pub fn root(&self) -> &PathBuf {
        &self.root
    }
}

impl ShardLog for LocalLog {
    fn create_shard(&self, shard: u64, retention_secs: u32) -> Result<()> {
        let fs = &*self.env.fs;
        let dir = self.root.join(shard.to_string());
        if fs.try_exists(&dir).unwrap_or(false) {
            // Only the remains of an interrupted creation are replaced; a log is never overwritten.
            if let Err(holds) = crate::shard::interrupted_creation(fs, &dir, shard) {
                return Err(StoreError::Catalog(format!(
                    "shard id {shard} was handed out for a new shard, but its log directory {} \
                     exists and holds data ({holds}); refusing to overwrite it (is the catalog \
                     older than the data?)",
                    dir.display()
                )));
            }
            fs.remove_dir_all(&dir)
                .map_err(|e| StoreError::io(format!("removing {}", dir.display()), e))?;
        }
        let s = Shard::create_in(&self.env, dir, shard, retention_secs)?;
        self.shards
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(shard, s);
        Ok(())
    }

    fn remove_shard(&self, shard: u64) -> BoxFuture<Result<()>> {
        let removed = self
            .shards
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&shard);
        let tx = self.lane(shard).tx.clone();
        let was_failed = self
            .failed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&shard)
            .is_some();
        let dir = self.root.join(shard.to_string());
        let fs = self.env.fs.clone();
        Box::pin(async move {
            let Some(s) = removed else {
                if was_failed {
                    return tokio::task::spawn_blocking(move || remove_shard_dir(&*fs, &dir))
                        .await
                        .map_err(|e| StoreError::io("removing a shard", std::io::Error::other(e)))?
                        .map_err(|e| StoreError::io(format!("removing shard {shard}"), e));
                }
                return Err(StoreError::ShardNotFound(shard));
            };
            s.closed.store(true, Ordering::Release);
            let (rtx, rrx) = oneshot::channel();
            if tx.send(Request::Close { shard, reply: rtx }).is_ok() {
                let _ = rrx.await;
            }
            let dir = s.dir.clone();
            tokio::task::spawn_blocking(move || {
                // Closing the segment files (usually the last reference) frees the inodes:
                // blocking work, kept off the async executor.
                drop(s);
                remove_shard_dir(&*fs, &dir)
            })
            .await
            .map_err(|e| StoreError::io("removing a shard", std::io::Error::other(e)))?
            .map_err(|e| StoreError::io(format!("removing shard {shard}"), e))
        })
    }

    fn append(&self, shard: u64, batch: NewBatch) -> BoxFuture<Result<Appended>> {
        let found = self.shard(shard);
        let lane = self.lane(shard);
        let tx = lane.tx.clone();
        let sem = lane.inflight.clone();
        let max_permits = (self.opts.max_inflight_bytes / PERMIT_BYTES).max(1);
        Box::pin(async move {
            let shard = found?;
            let want = batch
                .payload
                .len()
                .div_ceil(PERMIT_BYTES)
                .clamp(1, max_permits) as u32;
            let permit = sem
                .acquire_many_owned(want)
                .await
                .map_err(|_| StoreError::ShuttingDown)?;
            let (rtx, rrx) = oneshot::channel();
            tx.send(Request::Append {
                shard,
                batch,
                reply: rtx,
                _permit: permit,
            })
            .map_err(|_| StoreError::ShuttingDown)?;
            rrx.await.map_err(|_| StoreError::ShuttingDown)?
        })
    }

    fn read(&self, shard: u64, from: u64, limits: ReadLimits) -> Result<Vec<StoredBatch>> {
        self.shard(shard)?.read(from, limits)
    }

    fn bounds(&self, shard: u64) -> Result<ShardBounds> {
        Ok(self.shard(shard)?.bounds())
    }

    fn find_time(&self, shard: u64, timestamp_ms: i64) -> Result<u64> {
        self.shard(shard)?.find_time(timestamp_ms)
    }

    fn trim(&self, shard: u64, seq: u64) -> Result<()> {
        self.shard(shard)?.trim(seq)
    }

    fn watch_tail(&self, shard: u64) -> Result<watch::Receiver<u64>> {
        Ok(self.shard(shard)?.watch_tail())
    }

    fn roll(&self, shard: u64) -> Result<()> {
        let s = self.shard(shard)?;
        self.lane(shard)
            .tx
            .send(Request::Roll { shard: s })
            .map_err(|_| StoreError::ShuttingDown)
    }

    fn damage(&self, shard: u64) -> Result<ShardDamage> {
        Ok(self.shard(shard)?.damage())
    }

    fn enforce_retention(&self) -> Result<()> {
        let shards: Vec<Arc<Shard>> = self
            .shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let now = self.env.now_ms();
        for s in shards {
            if s.apply_retention(now)? {
                let _ = self.lane(s.id).tx.send(Request::Roll { shard: s.clone() });
            }
        }
        Ok(())
    }
}

/// Suffix a shard directory gets while it is being removed: start-up finishes such removals.
pub(crate) const REMOVING_SUFFIX: &str = ".removing";

/// Removes a deleted shard's directory: first renamed aside (so that a crash part-way leaves a
/// name that start-up recognises as a deletion in progress), then removed.
fn remove_shard_dir(fs: &dyn Vfs, dir: &std::path::Path) -> std::io::Result<()> {
    let mut aside = dir.as_os_str().to_owned();
    aside.push(REMOVING_SUFFIX);
    let aside = PathBuf::from(aside);
    match fs.rename(dir, &aside) {
        // Already gone (a listed shard whose directory was missing at start).
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && !fs.try_exists(&aside).unwrap_or(false) =>
        {
            return Ok(())
        }
        r => r?,
    }
    fs.remove_dir_all(&aside)
}

/// Most directories a refusal names in its message (every one is logged).
const NAMED_IN_REFUSAL: usize = 20;

/// The refusal for shard directories that hold data while the catalog neither lists them nor
/// recorded their deletion: the catalog is older than the logs.
fn catalog_older_than_logs(
    root: &std::path::Path,
    dirs: &[(u64, PathBuf, String)],
    deletions_recorded_from: u64,
) -> StoreError {
    for (id, path, holds) in dirs {
        tracing::error!(shard = id, path = %path.display(),
            "shard log holds data ({holds}) but the catalog neither lists it nor recorded its deletion");
    }
    let mut named: Vec<String> = dirs
        .iter()
        .take(NAMED_IN_REFUSAL)
        .map(|(_, path, holds)| format!("{} ({holds})", path.display()))
        .collect();
    if dirs.len() > NAMED_IN_REFUSAL {
        named.push(format!(
            "and {} more (each is logged)",
            dirs.len() - NAMED_IN_REFUSAL
        ));
    }
    let older_server = if dirs.iter().all(|(id, _, _)| *id < deletions_recorded_from) {
        format!(
            " (These shards were allocated before this catalog recorded deletions, below id \
             {deletions_recorded_from}: a stream deleted by an older server version just before \
             a crash leaves the same.)"
        )
    } else {
        String::new()
    };
    StoreError::Catalog(format!(
        "the catalog is older than the shard logs: {} shard log(s) hold data that catalog.redb \
         does not list and whose deletion it never recorded: {}. The catalog was rolled back \
         (damage, or a restore from an older backup), so the streams of these shards would be \
         missing. Refusing to start rather than serve without them; nothing was deleted. \
         Restore catalog.redb from a backup that lists these shards; or, if their streams were \
         deleted on purpose, move these directories out of {} and start again.{older_server}",
        dirs.len(),
        named.join(", "),
        root.display(),
    ))
}

/// Why a listed shard whose log directory `dir` is missing is not served.
fn missing_log(dir: &std::path::Path, was_removing: bool) -> String {
    if was_removing {
        format!(
            "its log {} was being deleted (a deletion that this catalog, older than the logs, \
             does not record) and is gone: its records are lost. Delete the stream, or restore the \
             data directory from a backup",
            dir.display()
        )
    } else {
        format!(
            "its log directory {} is missing: the data directory is corrupt (the directory was \
             removed or lost outside the server, or the catalog is older than the stream's \
             deletion), and the shard is not recreated empty so that the loss of its records is \
             not silent. Put the directory back and restart, or delete the stream",
            dir.display()
        )
    }
}

/// Default interval between retention passes.
pub const DEFAULT_RETENTION_CHECK: Duration = Duration::from_secs(5);
