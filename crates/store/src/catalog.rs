//! The catalog: what streams, shards and shard readers exist, kept in an embedded
//! transactional store (redb). Values are JSON documents so the catalog stays readable and
//! can grow fields without a migration. The `Catalog` trait is what callers use; `RedbCatalog`
//! is the embedded implementation.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, StorageError, TableDefinition,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Result, StoreError};

const STREAMS: TableDefinition<&str, &str> = TableDefinition::new("streams");
const SHARDS: TableDefinition<u64, &str> = TableDefinition::new("shards");
const READERS: TableDefinition<&str, &str> = TableDefinition::new("shard_readers");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SUBSCRIPTIONS: TableDefinition<&str, &str> = TableDefinition::new("subscriptions");
const CHECKPOINTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("sub_checkpoints");
const ARCHIVED: TableDefinition<&str, &str> = TableDefinition::new("archived_streams");
/// Objects of the layers above (SQL queries, views, stream schemas): (kind, name) -> JSON.
const OBJECTS: TableDefinition<(&str, &str), &str> = TableDefinition::new("objects");
/// Opaque state of those objects (a query's checkpoint): (kind, name) -> bytes.
const OBJECT_STATES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("object_states");
/// Shards whose deletion the catalog committed (tombstones): written in the transaction that
/// removes the shards, so that start-up can tell a deletion interrupted by a crash (finish it)
/// from a catalog older than the logs (refuse). Forgotten once their directories are gone.
const DELETED_SHARDS: TableDefinition<u64, ()> = TableDefinition::new("deleted_shards");
const NEXT_SHARD_ID: &str = "next_shard_id";
const CATALOG_VERSION: &str = "catalog_version";
/// `next_shard_id` when `deleted_shards` was created: a shard below it may have been deleted by
/// a server version that recorded no tombstones.
const DELETIONS_RECORDED_FROM: &str = "deletions_recorded_from";

/// A stream as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    /// Stream name.
    pub name: String,
    /// Replication factor requested (the embedded store keeps one copy).
    pub replication_factor: u32,
    /// Retention in seconds (0 keeps records forever).
    pub backlog_secs: u32,
    /// Number of shards created with the stream.
    pub shard_count: u32,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// The stream's shard ids, in key-range order.
    pub shards: Vec<u64>,
}

/// A shard as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// Shard id (unique across all streams, never reused).
    pub id: u64,
    /// The stream the shard belongs to.
    pub stream: String,
    /// First key of the shard's key range (opaque to the store).
    pub start_key: String,
    /// Last key of the shard's key range (opaque to the store).
    pub end_key: String,
    /// Epoch of the shard's key ranges.
    pub epoch: u64,
}

/// A subscription as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionMeta {
    /// Subscription id.
    pub id: String,
    /// The stream it reads (an archived stream's name after a forced stream deletion).
    pub stream: String,
    /// Seconds a delivered record may stay unacknowledged before it is delivered again.
    pub ack_timeout_secs: u32,
    /// Most unacknowledged records outstanding at once.
    pub max_unacked: u32,
    /// The offset it was created with, as the client gave it (0 earliest, 1 latest).
    pub offset: i32,
    /// Creation time.
    pub created_ms: i64,
    /// Each shard it reads and the sequence number delivery starts at.
    pub shards: Vec<(u64, u64)>,
}

/// What a new stream should look like.
#[derive(Debug, Clone)]
pub struct NewStream {
    /// Stream name.
    pub name: String,
    /// Replication factor.
    pub replication_factor: u32,
    /// Retention in seconds (0 = forever).
    pub backlog_secs: u32,
    /// Creation time.
    pub created_ms: i64,
    /// Key range of each shard, in order.
    pub key_ranges: Vec<(String, String)>,
    /// Epoch recorded on the shards.
    pub epoch: u64,
    /// Shard ids reserved with [`Catalog::reserve_shard_ids`], one per key range; empty to
    /// have ids allocated by `create_stream` itself.
    pub shard_ids: Vec<u64>,
}

/// A shard reader as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderMeta {
    /// Reader id.
    pub id: String,
    /// Stream it reads.
    pub stream: String,
    /// Shard it reads.
    pub shard: u64,
    /// Sequence number the reader starts at.
    pub start_seq: u64,
    /// The offset as the client gave it (kept to echo it back), opaque to the store.
    pub offset: String,
    /// Read timeout in milliseconds.
    pub timeout_ms: u32,
    /// Creation time.
    pub created_ms: i64,
}

/// Streams and their shards: what a replicated backend must keep consistent first (names taken
/// once, shard ids never reused, deletions recorded so logs are removed after a crash).
pub trait StreamCatalog: Send + Sync {
    /// Creates a stream and its shards atomically, assigning fresh shard ids.
    fn create_stream(&self, new: NewStream) -> Result<(StreamMeta, Vec<ShardMeta>)>;
    /// Deletes a stream, its shards and its readers, and records the shards' deletion (so that
    /// start-up finishes removing their logs after a crash); returns what was deleted.
    fn delete_stream(&self, name: &str) -> Result<StreamMeta>;
    /// Reserves `n` fresh shard ids (so that logs can be created before the stream is
    /// committed). Ids are never handed out twice, used or not.
    fn reserve_shard_ids(&self, n: usize) -> Result<Vec<u64>>;
    /// The next shard id the catalog would allocate: every id below it was allocated once.
    fn next_shard_id(&self) -> Result<u64>;
    /// Looks a stream up.
    fn get_stream(&self, name: &str) -> Result<Option<StreamMeta>>;
    /// A stream and its shards, read in one transaction.
    fn stream_shards(&self, name: &str) -> Result<Option<(StreamMeta, Vec<ShardMeta>)>>;
    /// All streams, by name.
    fn list_streams(&self) -> Result<Vec<StreamMeta>>;
    /// Looks a shard up.
    fn get_shard(&self, id: u64) -> Result<Option<ShardMeta>>;
    /// All shards with their retention (for opening the logs at start).
    fn all_shards(&self) -> Result<Vec<(ShardMeta, u32)>>;
    /// Removes a stream's name from the catalog but keeps its shards for the subscriptions
    /// that read it (HStreamDB's forced deletion). Returns the archived name.
    fn archive_stream(&self, name: &str) -> Result<String>;
}

/// Shard readers, subscriptions and subscription checkpoints.
pub trait ConsumerCatalog: Send + Sync {
    /// Records a new shard reader; fails if the id exists.
    fn create_reader(&self, reader: ReaderMeta) -> Result<()>;
    /// Looks a shard reader up.
    fn get_reader(&self, id: &str) -> Result<Option<ReaderMeta>>;
    /// Deletes a shard reader.
    fn delete_reader(&self, id: &str) -> Result<()>;
    /// All shard reader ids.
    fn list_readers(&self) -> Result<Vec<ReaderMeta>>;
    /// Records a subscription; fails if the id exists or its stream does not.
    fn create_subscription(&self, sub: SubscriptionMeta) -> Result<()>;
    /// Looks a subscription up.
    fn get_subscription(&self, id: &str) -> Result<Option<SubscriptionMeta>>;
    /// All subscriptions, by id.
    fn list_subscriptions(&self) -> Result<Vec<SubscriptionMeta>>;
    /// Deletes a subscription and its checkpoints. If it was the last subscription of an
    /// archived stream, the archived stream is deleted too (its shards' deletion recorded as
    /// by `delete_stream`) and returned.
    fn delete_subscription(&self, id: &str) -> Result<Option<StreamMeta>>;
    /// Saves checkpoints `(subscription, shard, state)` in one transaction; entries of
    /// subscriptions that no longer exist are skipped.
    fn save_checkpoints(&self, entries: &[(String, u64, Vec<u8>)]) -> Result<()>;
    /// The checkpoints of a subscription, by shard.
    fn load_checkpoints(&self, id: &str) -> Result<Vec<(u64, Vec<u8>)>>;
}

/// Objects of higher layers (queries, views, declared schemas), opaque documents to the store,
/// and their saved state (a query's checkpoint).
pub trait ObjectCatalog: Send + Sync {
    /// Creates or replaces an object of a higher layer (a query, a view, a stream's declared
    /// schema); `doc` is opaque to the store. With `only_if_absent`, an existing object is
    /// left alone and `false` is returned.
    fn put_object(&self, kind: &str, name: &str, doc: &str, only_if_absent: bool) -> Result<bool>;
    /// An object's document.
    fn get_object(&self, kind: &str, name: &str) -> Result<Option<String>>;
    /// Every object of a kind, by name.
    fn list_objects(&self, kind: &str) -> Result<Vec<(String, String)>>;
    /// Deletes an object and its state; `false` if it did not exist.
    fn delete_object(&self, kind: &str, name: &str) -> Result<bool>;
    /// Saves an object's state (a query's checkpoint), durable when this returns. Fails with
    /// `Invalid` if the object does not exist (it was deleted meanwhile): nothing is saved.
    fn save_object_state(&self, kind: &str, name: &str, state: &[u8]) -> Result<()>;
    /// An object's saved state.
    fn load_object_state(&self, kind: &str, name: &str) -> Result<Option<Vec<u8>>>;
}

/// The whole catalog: every part, as the embedded store (one redb file) provides them
/// together. A replicated backend may implement the parts one by one.
pub trait Catalog: StreamCatalog + ConsumerCatalog + ObjectCatalog {}

impl<T: StreamCatalog + ConsumerCatalog + ObjectCatalog + ?Sized> Catalog for T {}

/// The catalog in a redb database file.
///
/// After an I/O error (a full disk) redb refuses every later transaction on the same
/// `Database` with `PreviousIo` until it is dropped and opened again. So the `Database` sits
/// behind a lock: every operation holds the read side for its whole duration, and an operation
/// refused with `PreviousIo` takes the write side (so no operation still uses the old instance
/// and its file lock is released), drops the instance, opens the file again with the same
/// options and retries itself once. If opening fails (the disk is still full), the operation
/// fails and the next one tries again: the catalog never needs a restart to recover.
pub struct RedbCatalog {
    /// The open database, `None` while a reopen after an I/O error has failed.
    slot: RwLock<Slot>,
    /// Opens the database again after an I/O error, as it was opened first.
    reopen: Box<dyn Fn() -> Result<Database> + Send + Sync>,
    /// What the catalog is (its path), for error messages.
    label: String,
}

/// The current database instance and how many times it was replaced.
struct Slot {
    db: Option<Database>,
    /// Bumped on every replacement, so that operations that failed on the same poisoned
    /// instance reopen it once, not once each.
    generation: u64,
}

/// An error inside a catalog operation, before it reaches the caller: whether redb refused
/// because an earlier I/O error poisoned the `Database` instance must survive until
/// [`RedbCatalog::run`] decides to reopen, so redb errors are classified here instead of
/// being turned into strings right away.
enum OpError {
    /// redb's `PreviousIo`: this instance saw an I/O error earlier and refuses all work.
    Poisoned {
        /// Raised by `commit`: redb may have written the commit's header before it refused,
        /// so whether the change is in the file is unknown and the operation is not retried.
        at_commit: bool,
    },
    /// Any other error, as the caller gets it.
    Store(StoreError),
}

type OpResult<T> = std::result::Result<T, OpError>;

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Store(e)
    }
}

impl From<redb::CommitError> for OpError {
    fn from(e: redb::CommitError) -> Self {
        match redb::Error::from(e) {
            redb::Error::PreviousIo => OpError::Poisoned { at_commit: true },
            e => OpError::Store(e.into()),
        }
    }
}

macro_rules! classify_redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for OpError {
            fn from(e: $t) -> Self {
                match redb::Error::from(e) {
                    redb::Error::PreviousIo => OpError::Poisoned { at_commit: false },
                    e => OpError::Store(e.into()),
                }
            }
        }
    )*};
}
classify_redb_errors!(redb::TransactionError, redb::TableError, redb::StorageError);

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Catalog(format!("encoding: {e}")))
}

fn from_json<T: DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Catalog(format!("decoding {s:?}: {e}")))
}

/// One JSON document of a name-keyed table.
fn get_doc<T: DeserializeOwned>(
    db: &Database,
    table: TableDefinition<&str, &str>,
    key: &str,
) -> OpResult<Option<T>> {
    let tx = db.begin_read()?;
    let t = tx.open_table(table)?;
    Ok(t.get(key)?.map(|v| from_json(v.value())).transpose()?)
}

/// Every JSON document of a name-keyed table, in key order.
fn list_docs<T: DeserializeOwned>(
    db: &Database,
    table: TableDefinition<&str, &str>,
) -> OpResult<Vec<T>> {
    let tx = db.begin_read()?;
    let t = tx.open_table(table)?;
    let mut out = Vec::new();
    for row in t.iter()? {
        let (_, v) = row?;
        out.push(from_json(v.value())?);
    }
    Ok(out)
}

/// Opens the catalog file with the catalog's options (see [`RedbCatalog::open`]).
fn open_file(path: &Path) -> Result<Database> {
    open_db(path, |builder| builder.create(path))
}

/// Opens a database with the catalog's options: every page verified first, a panic inside
/// redb on a damaged file turned into the damaged-catalog error, and a warning when redb rolls
/// the latest commit back.
fn open_db(
    path: &Path,
    create: impl FnOnce(&redb::Builder) -> std::result::Result<Database, DatabaseError>,
) -> Result<Database> {
    let rolled_back = Arc::new(AtomicBool::new(false));
    let seen = rolled_back.clone();
    let db = without_panic(path, || {
        let mut builder = Database::builder();
        builder.set_check_integrity_on_open(true);
        // redb reports 0.3 only when the latest commit fails its checksums and is replaced
        // by the one before it (a commit torn by a crash, or damage).
        builder.set_repair_callback(move |s| {
            if s.progress() == 0.3 {
                seen.store(true, Ordering::Relaxed);
            }
        });
        create(&builder).map_err(|e| match e {
            DatabaseError::Storage(StorageError::Corrupted(what)) => damaged(path, &what),
            DatabaseError::Storage(StorageError::Io(e))
                if e.kind() == std::io::ErrorKind::InvalidData =>
            {
                damaged(path, &e.to_string())
            }
            e => StoreError::Catalog(format!("opening the catalog {}: {e}", path.display())),
        })
    })?;
    if rolled_back.load(Ordering::Relaxed) {
        tracing::warn!(
            path = %path.display(),
            "the catalog's latest commit was incomplete or damaged and was rolled back to the \
             one before it: a change made just before a crash (a stream, reader or \
             subscription created or deleted, a checkpoint) may be undone"
        );
    }
    Ok(db)
}

impl RedbCatalog {
    /// Opens or creates the catalog file. Every page of the file is verified first (redb's
    /// integrity check on open), so that a damaged catalog is refused with a clear error instead
    /// of being trusted; a panic inside redb on a damaged file is turned into the same error.
    pub fn open(path: &Path) -> Result<RedbCatalog> {
        let owned = path.to_path_buf();
        Self::with_opener(path, Box::new(move || open_file(&owned)))
    }

    /// Opens the catalog on a redb storage backend made by `make_backend`, which is called
    /// again for every reopen after an I/O error (so it must open the same storage each time).
    /// `path` only names the catalog in messages. For tests that inject I/O failures.
    #[doc(hidden)]
    pub fn open_with_backend_for_tests<B, F>(path: &Path, make_backend: F) -> Result<RedbCatalog>
    where
        B: redb::StorageBackend,
        F: Fn() -> std::io::Result<B> + Send + Sync + 'static,
    {
        let owned = path.to_path_buf();
        let opener = move || {
            let backend = make_backend()
                .map_err(|e| StoreError::io(format!("opening {}", owned.display()), e))?;
            open_db(&owned, |builder| builder.create_with_backend(backend))
        };
        Self::with_opener(path, Box::new(opener))
    }

    fn with_opener(
        path: &Path,
        opener: Box<dyn Fn() -> Result<Database> + Send + Sync>,
    ) -> Result<RedbCatalog> {
        let db = opener()?;
        without_panic(path, || match Self::prepare(&db) {
            Ok(()) => Ok(()),
            Err(OpError::Store(e)) => Err(e),
            Err(OpError::Poisoned { .. }) => Err(StoreError::Catalog(format!(
                "preparing the catalog {}: an I/O error occurred earlier",
                path.display()
            ))),
        })?;
        Ok(RedbCatalog {
            slot: RwLock::new(Slot {
                db: Some(db),
                generation: 0,
            }),
            reopen: opener,
            label: path.display().to_string(),
        })
    }

    /// Runs a catalog operation on the current database instance. If redb refuses it because
    /// the instance was poisoned by an earlier I/O error, the instance is replaced and the
    /// operation retried once: a `PreviousIo` raised before `commit` means the operation changed
    /// nothing in the file, so running it again is safe. One raised by `commit` is not retried
    /// (the change may be in the file); the caller gets an error and the next operation runs on
    /// the new instance.
    fn run<T>(&self, op: impl Fn(&Database) -> OpResult<T>) -> Result<T> {
        let (generation, first) = {
            let slot = self.slot.read().unwrap_or_else(|p| p.into_inner());
            let first = match &slot.db {
                Some(db) => op(db),
                // An earlier reopen failed: reopen before running anything.
                None => Err(OpError::Poisoned { at_commit: false }),
            };
            (slot.generation, first)
        };
        let at_commit = match first {
            Ok(v) => return Ok(v),
            Err(OpError::Store(e)) => return Err(e),
            Err(OpError::Poisoned { at_commit }) => at_commit,
        };
        self.replace_poisoned(generation)?;
        if at_commit {
            return Err(StoreError::Catalog(format!(
                "the catalog {} failed to commit after an earlier I/O error; the change may or \
                 may not have been saved (the catalog was reopened, later operations work)",
                self.label
            )));
        }
        let slot = self.slot.read().unwrap_or_else(|p| p.into_inner());
        let retried = match &slot.db {
            Some(db) => op(db),
            None => Err(OpError::Poisoned { at_commit: false }),
        };
        retried.map_err(|e| match e {
            OpError::Store(e) => e,
            OpError::Poisoned { .. } => StoreError::Catalog(format!(
                "the catalog {} failed again right after being reopened after an I/O error",
                self.label
            )),
        })
    }

    /// Drops the database instance of `generation` (poisoned by an I/O error) and opens the
    /// file again, unless another operation already did. With the write lock held no operation
    /// holds the old instance, so its file lock is released before the file is opened again.
    fn replace_poisoned(&self, generation: u64) -> Result<()> {
        let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
        if slot.generation != generation && slot.db.is_some() {
            return Ok(());
        }
        slot.db = None;
        slot.generation += 1;
        match (self.reopen)() {
            Ok(db) => {
                tracing::warn!(
                    catalog = %self.label,
                    "the catalog was reopened after an I/O error"
                );
                slot.db = Some(db);
                Ok(())
            }
            Err(e) => Err(StoreError::Catalog(format!(
                "the catalog {} is unavailable after an I/O error and could not be reopened \
                 (the next catalog operation tries again): {e}",
                self.label
            ))),
        }
    }

    /// Creates the tables and checks the catalog version.
    fn prepare(db: &Database) -> OpResult<()> {
        let tx = db.begin_write()?;
        {
            tx.open_table(STREAMS)?;
            tx.open_table(SHARDS)?;
            tx.open_table(READERS)?;
            tx.open_table(SUBSCRIPTIONS)?;
            tx.open_table(CHECKPOINTS)?;
            tx.open_table(ARCHIVED)?;
            tx.open_table(OBJECTS)?;
            tx.open_table(OBJECT_STATES)?;
            tx.open_table(DELETED_SHARDS)?;
            let mut meta = tx.open_table(META)?;
            if meta.get(DELETIONS_RECORDED_FROM)?.is_none() {
                let next = meta.get(NEXT_SHARD_ID)?.map_or(1, |v| v.value());
                meta.insert(DELETIONS_RECORDED_FROM, next)?;
            }
            let version = meta.get(CATALOG_VERSION)?.map(|v| v.value());
            match version {
                None => {
                    meta.insert(CATALOG_VERSION, 1)?;
                }
                Some(1) => {}
                Some(v) => {
                    return Err(StoreError::Catalog(format!(
                        "catalog version {v} is newer than this server understands (1)"
                    ))
                    .into())
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The shards whose deletion the catalog committed and has not yet forgotten.
    pub fn deleted_shards(&self) -> Result<Vec<u64>> {
        self.run(|db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(DELETED_SHARDS)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                out.push(row?.0.value());
            }
            Ok(out)
        })
    }

    /// The lowest shard id whose deletion is certain to be in [`Self::deleted_shards`]: below
    /// it, a shard may have been deleted by a server version that recorded no deletions.
    pub fn deletions_recorded_from(&self) -> Result<u64> {
        self.run(|db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(META)?;
            Ok(t.get(DELETIONS_RECORDED_FROM)?.map_or(1, |v| v.value()))
        })
    }

    /// Forgets deleted shards whose directories are gone (one transaction).
    pub fn forget_deleted_shards(&self, ids: &[u64]) -> Result<()> {
        self.run(|db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(DELETED_SHARDS)?;
                for id in ids {
                    t.remove(id)?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }
}

/// Removes the shard readers of stream `name` (it is being deleted or archived).
fn remove_readers_of(tx: &redb::WriteTransaction, name: &str) -> OpResult<()> {
    let mut readers = tx.open_table(READERS)?;
    let mut doomed = Vec::new();
    for row in readers.iter()? {
        let (k, v) = row?;
        let r: ReaderMeta = from_json(v.value())?;
        if r.stream == name {
            doomed.push(k.value().to_string());
        }
    }
    for k in doomed {
        readers.remove(k.as_str())?;
    }
    Ok(())
}

/// Removes `ids` from the `shards` table and records their deletion, in the caller's transaction.
fn remove_shards(tx: &redb::WriteTransaction, ids: &[u64]) -> OpResult<()> {
    let mut shards = tx.open_table(SHARDS)?;
    let mut deleted = tx.open_table(DELETED_SHARDS)?;
    for id in ids {
        shards.remove(id)?;
        deleted.insert(id, ())?;
    }
    Ok(())
}

/// The error for a catalog file that redb finds damaged.
fn damaged(path: &Path, what: &str) -> StoreError {
    StoreError::Catalog(format!(
        "the catalog {} is damaged ({what}): restore it from a backup. The store is not \
         opened on it, so that no stream is lost; the shard logs are untouched",
        path.display()
    ))
}

/// Runs `f`, turning a panic (redb panics on some damaged files) into the damaged-catalog error.
/// Used for opening the catalog and for the reads made at start.
pub(crate) fn without_panic<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic while reading it".to_string());
        Err(damaged(path, &format!("redb: {what}")))
    })
}

impl StreamCatalog for RedbCatalog {
    fn create_stream(&self, new: NewStream) -> Result<(StreamMeta, Vec<ShardMeta>)> {
        self.run(|db| {
            let tx = db.begin_write()?;
            let out = {
                let mut streams = tx.open_table(STREAMS)?;
                if streams.get(new.name.as_str())?.is_some() {
                    return Err(StoreError::StreamExists(new.name.clone()).into());
                }
                let mut meta = tx.open_table(META)?;
                let mut next = meta.get(NEXT_SHARD_ID)?.map_or(1, |v| v.value());
                if !new.shard_ids.is_empty()
                    && (new.shard_ids.len() != new.key_ranges.len()
                        || new.shard_ids.iter().any(|&id| id >= next))
                {
                    return Err(StoreError::Invalid(
                        "shard ids must be reserved, one per key range".into(),
                    )
                    .into());
                }
                let mut shards = tx.open_table(SHARDS)?;
                let mut metas = Vec::with_capacity(new.key_ranges.len());
                for (i, (start, end)) in new.key_ranges.iter().enumerate() {
                    let id = new.shard_ids.get(i).copied().unwrap_or(next);
                    if shards.get(id)?.is_some() {
                        return Err(StoreError::Invalid(format!("shard id {id} is in use")).into());
                    }
                    let m = ShardMeta {
                        id,
                        stream: new.name.clone(),
                        start_key: start.clone(),
                        end_key: end.clone(),
                        epoch: new.epoch,
                    };
                    shards.insert(id, to_json(&m)?.as_str())?;
                    metas.push(m);
                    if new.shard_ids.is_empty() {
                        next += 1;
                    }
                }
                meta.insert(NEXT_SHARD_ID, next)?;
                let s = StreamMeta {
                    name: new.name.clone(),
                    replication_factor: new.replication_factor,
                    backlog_secs: new.backlog_secs,
                    shard_count: metas.len() as u32,
                    created_ms: new.created_ms,
                    shards: metas.iter().map(|m| m.id).collect(),
                };
                streams.insert(new.name.as_str(), to_json(&s)?.as_str())?;
                (s, metas)
            };
            tx.commit()?;
            Ok(out)
        })
    }

    fn delete_stream(&self, name: &str) -> Result<StreamMeta> {
        self.run(|db| {
            let tx = db.begin_write()?;
            let meta: StreamMeta = {
                let mut streams = tx.open_table(STREAMS)?;
                let m: StreamMeta = match streams.remove(name)? {
                    Some(v) => from_json(v.value())?,
                    None => return Err(StoreError::StreamNotFound(name.to_string()).into()),
                };
                remove_shards(&tx, &m.shards)?;
                remove_readers_of(&tx, name)?;
                m
            };
            tx.commit()?;
            Ok(meta)
        })
    }

    fn reserve_shard_ids(&self, n: usize) -> Result<Vec<u64>> {
        self.run(|db| {
            let tx = db.begin_write()?;
            let ids = {
                let mut meta = tx.open_table(META)?;
                let next = meta.get(NEXT_SHARD_ID)?.map_or(1, |v| v.value());
                meta.insert(NEXT_SHARD_ID, next + n as u64)?;
                (next..next + n as u64).collect()
            };
            tx.commit()?;
            Ok(ids)
        })
    }

    fn next_shard_id(&self) -> Result<u64> {
        self.run(|db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(META)?;
            Ok(t.get(NEXT_SHARD_ID)?.map_or(1, |v| v.value()))
        })
    }

    fn get_stream(&self, name: &str) -> Result<Option<StreamMeta>> {
        self.run(|db| get_doc(db, STREAMS, name))
    }

    fn stream_shards(&self, name: &str) -> Result<Option<(StreamMeta, Vec<ShardMeta>)>> {
        self.run(|db| {
            let tx = db.begin_read()?;
            let streams = tx.open_table(STREAMS)?;
            let Some(meta) = streams
                .get(name)?
                .map(|v| from_json::<StreamMeta>(v.value()))
                .transpose()?
            else {
                return Ok(None);
            };
            let shards = tx.open_table(SHARDS)?;
            let mut out = Vec::with_capacity(meta.shards.len());
            for id in &meta.shards {
                if let Some(v) = shards.get(id)? {
                    out.push(from_json(v.value())?);
                }
            }
            Ok(Some((meta, out)))
        })
    }

    fn list_streams(&self) -> Result<Vec<StreamMeta>> {
        self.run(|db| list_docs(db, STREAMS))
    }

    fn get_shard(&self, id: u64) -> Result<Option<ShardMeta>> {
        self.run(|db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(SHARDS)?;
            Ok(t.get(id)?.map(|v| from_json(v.value())).transpose()?)
        })
    }

    fn all_shards(&self) -> Result<Vec<(ShardMeta, u32)>> {
        self.run(|db| {
            let mut streams: Vec<StreamMeta> = list_docs(db, STREAMS)?;
            let tx = db.begin_read()?;
            for row in tx.open_table(ARCHIVED)?.iter()? {
                let (_, v) = row?;
                streams.push(from_json(v.value())?);
            }
            let t = tx.open_table(SHARDS)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (_, v) = row?;
                let m: ShardMeta = from_json(v.value())?;
                let backlog = streams
                    .iter()
                    .find(|s| s.name == m.stream)
                    .map_or(0, |s| s.backlog_secs);
                out.push((m, backlog));
            }
            Ok(out)
        })
    }

    fn archive_stream(&self, name: &str) -> Result<String> {
        self.run(|db| {
            let tx = db.begin_write()?;
            let archived_name = {
                let mut streams = tx.open_table(STREAMS)?;
                let mut meta: StreamMeta = match streams.remove(name)? {
                    Some(v) => from_json(v.value())?,
                    None => return Err(StoreError::StreamNotFound(name.to_string()).into()),
                };
                let first = meta.shards.first().copied().unwrap_or(0);
                let archived_name = format!("__deleted_stream__{name}__{first}");
                meta.name = archived_name.clone();
                let mut archived = tx.open_table(ARCHIVED)?;
                archived.insert(archived_name.as_str(), to_json(&meta)?.as_str())?;
                let mut shards = tx.open_table(SHARDS)?;
                for id in &meta.shards {
                    let updated = match shards.get(id)? {
                        Some(v) => {
                            let mut m: ShardMeta = from_json(v.value())?;
                            m.stream = archived_name.clone();
                            Some(to_json(&m)?)
                        }
                        None => None,
                    };
                    if let Some(u) = updated {
                        shards.insert(id, u.as_str())?;
                    }
                }
                let mut subs = tx.open_table(SUBSCRIPTIONS)?;
                let mut moved = Vec::new();
                for row in subs.iter()? {
                    let (k, v) = row?;
                    let mut s: SubscriptionMeta = from_json(v.value())?;
                    if s.stream == name {
                        s.stream = archived_name.clone();
                        moved.push((k.value().to_string(), to_json(&s)?));
                    }
                }
                for (k, v) in moved {
                    subs.insert(k.as_str(), v.as_str())?;
                }
                remove_readers_of(&tx, name)?;
                archived_name
            };
            tx.commit()?;
            Ok(archived_name)
        })
    }
}

impl ConsumerCatalog for RedbCatalog {
    fn create_reader(&self, reader: ReaderMeta) -> Result<()> {
        self.run(|db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(READERS)?;
                if t.get(reader.id.as_str())?.is_some() {
                    return Err(StoreError::ReaderExists(reader.id.clone()).into());
                }
                t.insert(reader.id.as_str(), to_json(&reader)?.as_str())?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn get_reader(&self, id: &str) -> Result<Option<ReaderMeta>> {
        self.run(|db| get_doc(db, READERS, id))
    }

    fn delete_reader(&self, id: &str) -> Result<()> {
        self.run(|db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(READERS)?;
                if t.remove(id)?.is_none() {
                    return Err(StoreError::ReaderNotFound(id.to_string()).into());
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn list_readers(&self) -> Result<Vec<ReaderMeta>> {
        self.run(|db| list_docs(db, READERS))
    }

    fn create_subscription(&self, sub: SubscriptionMeta) -> Result<()> {
        self.run(|db| {
            let tx = db.begin_write()?;
            {
                let streams = tx.open_table(STREAMS)?;
                if streams.get(sub.stream.as_str())?.is_none() {
                    return Err(StoreError::StreamNotFound(sub.stream.clone()).into());
                }
                let mut t = tx.open_table(SUBSCRIPTIONS)?;
                if t.get(sub.id.as_str())?.is_some() {
                    return Err(StoreError::SubscriptionExists(sub.id.clone()).into());
                }
                t.insert(sub.id.as_str(), to_json(&sub)?.as_str())?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn get_subscription(&self, id: &str) -> Result<Option<SubscriptionMeta>> {
        self.run(|db| get_doc(db, SUBSCRIPTIONS, id))
    }

    fn list_subscriptions(&self) -> Result<Vec<SubscriptionMeta>> {
        self.run(|db| list_docs(db, SUBSCRIPTIONS))
    }

    fn delete_subscription(&self, id: &str) -> Result<Option<StreamMeta>> {
        self.run(|db| {
            let tx = db.begin_write()?;
            let archived = {
                let mut subs = tx.open_table(SUBSCRIPTIONS)?;
                let sub: SubscriptionMeta = match subs.remove(id)? {
                    Some(v) => from_json(v.value())?,
                    None => return Err(StoreError::SubscriptionNotFound(id.to_string()).into()),
                };
                let mut cps = tx.open_table(CHECKPOINTS)?;
                for (shard, _) in &sub.shards {
                    cps.remove((id, *shard))?;
                }
                let mut still_used = false;
                for row in subs.iter()? {
                    let (_, v) = row?;
                    let other: SubscriptionMeta = from_json(v.value())?;
                    still_used |= other.stream == sub.stream;
                }
                let mut archived = tx.open_table(ARCHIVED)?;
                let gone = if still_used {
                    None
                } else {
                    archived
                        .remove(sub.stream.as_str())?
                        .map(|v| from_json::<StreamMeta>(v.value()))
                        .transpose()?
                };
                if let Some(stream) = &gone {
                    remove_shards(&tx, &stream.shards)?;
                }
                gone
            };
            tx.commit()?;
            Ok(archived)
        })
    }

    fn save_checkpoints(&self, entries: &[(String, u64, Vec<u8>)]) -> Result<()> {
        self.run(|db| {
            let tx = db.begin_write()?;
            {
                let subs = tx.open_table(SUBSCRIPTIONS)?;
                let mut t = tx.open_table(CHECKPOINTS)?;
                for (sub, shard, state) in entries {
                    if subs.get(sub.as_str())?.is_some() {
                        t.insert((sub.as_str(), *shard), state.as_slice())?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn load_checkpoints(&self, id: &str) -> Result<Vec<(u64, Vec<u8>)>> {
        self.run(|db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(CHECKPOINTS)?;
            let mut out = Vec::new();
            for row in t.range((id, 0u64)..=(id, u64::MAX))? {
                let (k, v) = row?;
                out.push((k.value().1, v.value().to_vec()));
            }
            Ok(out)
        })
    }
}

impl ObjectCatalog for RedbCatalog {
    fn put_object(&self, kind: &str, name: &str, doc: &str, only_if_absent: bool) -> Result<bool> {
        self.run(|db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(OBJECTS)?;
                if only_if_absent && t.get((kind, name))?.is_some() {
                    return Ok(false);
                }
                t.insert((kind, name), doc)?;
            }
            tx.commit()?;
            Ok(true)
        })
    }

    fn get_object(&self, kind: &str, name: &str) -> Result<Option<String>> {
        self.run(|db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(OBJECTS)?;
            Ok(t.get((kind, name))?.map(|v| v.value().to_string()))
        })
    }

    fn list_objects(&self, kind: &str) -> Result<Vec<(String, String)>> {
        self.run(|db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(OBJECTS)?;
            let mut out = Vec::new();
            for row in t.range((kind, "")..)? {
                let (k, v) = row?;
                let (k_kind, k_name) = k.value();
                if k_kind != kind {
                    break;
                }
                out.push((k_name.to_string(), v.value().to_string()));
            }
            Ok(out)
        })
    }

    fn delete_object(&self, kind: &str, name: &str) -> Result<bool> {
        self.run(|db| {
            let tx = db.begin_write()?;
            let existed = {
                let mut t = tx.open_table(OBJECTS)?;
                let existed = t.remove((kind, name))?.is_some();
                let mut st = tx.open_table(OBJECT_STATES)?;
                st.remove((kind, name))?;
                existed
            };
            tx.commit()?;
            Ok(existed)
        })
    }

    fn save_object_state(&self, kind: &str, name: &str, state: &[u8]) -> Result<()> {
        self.run(|db| {
            let tx = db.begin_write()?;
            {
                let t = tx.open_table(OBJECTS)?;
                if t.get((kind, name))?.is_none() {
                    return Err(
                        StoreError::Invalid(format!("{kind} {name:?} does not exist")).into(),
                    );
                }
                let mut st = tx.open_table(OBJECT_STATES)?;
                st.insert((kind, name), state)?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn load_object_state(&self, kind: &str, name: &str) -> Result<Option<Vec<u8>>> {
        self.run(|db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(OBJECT_STATES)?;
            Ok(t.get((kind, name))?.map(|v| v.value().to_vec()))
        })
    }
}
