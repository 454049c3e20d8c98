//! Streams and their shards: creation (names checked as HStreamDB does, the key space split
//! over the shards), deletion (refused while subscriptions read the stream, unless forced),
//! lookups, listings, tails and trimming.

use streamcell_proto::api::ErrorCode;
use streamcell_store::{now_ms, NewStream, ShardMeta, StoreError, StreamMeta};

use crate::error::{Result, ServiceError};
use crate::keys;
use crate::names::validate_name;
use crate::offsets::Position;
use crate::service::Service;

/// Most shards a stream may have.
pub const MAX_SHARDS: u32 = 4096;
/// The most copies a stream may ask for: NATS JetStream, the replicated backend of cluster
/// mode, keeps at most 5 replicas of a stream. (One node keeps one copy and records the
/// factor.)
pub const MAX_REPLICATION: u32 = 5;

/// A stream to create.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Name.
    pub name: String,
    /// Copies kept of each record.
    pub replication_factor: u32,
    /// Retention in seconds (0 = forever).
    pub backlog_secs: u32,
    /// Number of shards.
    pub shard_count: u32,
}

/// What a stream deletion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// The stream and its data are gone.
    Deleted,
    /// Forced with subscriptions: the name is gone, the data stays until they are deleted.
    Archived,
    /// There was no such stream (and the caller said to ignore that).
    Missing,
}

impl Service {
    /// Creates a stream and its shard logs.
    pub async fn create_stream(&self, spec: StreamSpec) -> Result<StreamMeta> {
        validate_name(
            "stream",
            &spec.name,
            ErrorCode::StreamInvalidObjectIdentifier,
        )?;
        if spec.replication_factor == 0 || spec.replication_factor > MAX_REPLICATION {
            return Err(ServiceError::invalid(
                ErrorCode::StreamInvalidReplicaFactor,
                format!(
                    "replication factor must be between 1 and {MAX_REPLICATION}, got {}",
                    spec.replication_factor
                ),
            ));
        }
        if spec.shard_count == 0 || spec.shard_count > MAX_SHARDS {
            return Err(ServiceError::invalid(
                ErrorCode::StreamInvalidShardCount,
                format!(
                    "shard count must be between 1 and {MAX_SHARDS}, got {}",
                    spec.shard_count
                ),
            ));
        }
        let new = NewStream {
            name: spec.name,
            replication_factor: spec.replication_factor,
            backlog_secs: spec.backlog_secs,
            created_ms: now_ms(),
            key_ranges: keys::divide_key_space(spec.shard_count)
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            epoch: u64::from(spec.shard_count),
            shard_ids: Vec::new(),
        };
        let _ddl = self.ddl.lock().await;
        let meta = self
            .blocking(move |s| {
                if s.catalog.get_stream(&new.name)?.is_some() {
                    return Err(StoreError::StreamExists(new.name).into());
                }
                // Logs first, then the catalog: a stream is never visible without its logs.
                // Ids are reserved for good, so a crash in between leaves only directories
                // that start-up recognises as leftovers and removes.
                let ids = s.catalog.reserve_shard_ids(new.key_ranges.len())?;
                let undo = |made: &[u64]| {
                    for id in made {
                        let _ =
                            std::fs::remove_dir_all(s.dir().join("shards").join(id.to_string()));
                    }
                };
                for (i, id) in ids.iter().enumerate() {
                    if let Err(e) = s.log.create_shard(*id, new.backlog_secs) {
                        undo(&ids[..i]);
                        return Err(e.into());
                    }
                }
                match s.catalog.create_stream(NewStream {
                    shard_ids: ids.clone(),
                    ..new
                }) {
                    Ok((meta, _)) => Ok(meta),
                    Err(e) => {
                        undo(&ids);
                        Err(e.into())
                    }
                }
            })
            .await?;
        self.metrics.reset_stream(&meta.name);
        tracing::info!(stream = %meta.name, shards = meta.shard_count, backlog = meta.backlog_secs, "created stream");
        Ok(meta)
    }

    /// Deletes a stream. With subscriptions on it, refused unless `force`; forced, its name
    /// goes and its data stays for the subscriptions to finish. A missing stream is an error
    /// unless `ignore_missing`.
    pub async fn delete_stream(
        &self,
        name: &str,
        force: bool,
        ignore_missing: bool,
    ) -> Result<Deletion> {
        let name = name.to_string();
        let metrics = self.metrics.clone();
        let _ddl = self.ddl.lock().await;
        let deleted = self
            .blocking(move |s| {
                let subs = s
                    .catalog
                    .list_subscriptions()?
                    .into_iter()
                    .filter(|m| m.stream == name)
                    .count();
                if subs > 0 {
                    if !force {
                        return Err(ServiceError::Precondition {
                            code: ErrorCode::StreamFoundSubscription,
                            message: format!(
                                "stream {name:?} has {subs} subscription(s); delete them first or delete the stream with force"
                            ),
                        });
                    }
                    let archived = s.catalog.archive_stream(&name)?;
                    metrics.remove_stream(&name);
                    tracing::info!(stream = %name, archived = %archived, "stream deleted with force; kept for its subscriptions");
                    return Ok(Err(Deletion::Archived));
                }
                match s.catalog.delete_stream(&name) {
                    Ok(m) => Ok(Ok(m)),
                    Err(StoreError::StreamNotFound(_)) if ignore_missing => {
                        Ok(Err(Deletion::Missing))
                    }
                    Err(e) => Err(e.into()),
                }
            })
            .await?;
        let meta = match deleted {
            Ok(meta) => meta,
            Err(outcome) => return Ok(outcome),
        };
        self.metrics.remove_stream(&meta.name);
        for shard in &meta.shards {
            if let Err(e) = self.store.log.remove_shard(*shard).await {
                tracing::warn!(shard, "removing the log of a deleted stream: {e}");
            }
        }
        tracing::info!(stream = %meta.name, "deleted stream");
        Ok(Deletion::Deleted)
    }

    /// Every stream, by name.
    pub async fn list_streams(&self) -> Result<Vec<StreamMeta>> {
        self.blocking(|s| Ok(s.catalog.list_streams()?)).await
    }

    /// A stream's shards, by id.
    pub async fn list_shards(&self, stream: &str) -> Result<Vec<ShardMeta>> {
        let name = stream.to_string();
        self.blocking(move |s| {
            s.catalog
                .stream_shards(&name)?
                .map(|(_, shards)| shards)
                .ok_or_else(|| ServiceError::Store(StoreError::StreamNotFound(name.clone())))
        })
        .await
    }

    /// The sequence number of the last batch of `shard` of `stream` (0 when it has none).
    pub fn tail(&self, stream: &str, shard: u64) -> Result<u64> {
        self.shard_meta(Some(stream), shard)?;
        Ok(self.store.log.bounds(shard)?.tail_seq)
    }

    /// Trims every shard of `stream` up to `to`.
    pub async fn trim_stream(&self, stream: &str, to: Position) -> Result<()> {
        let meta = self.stream_meta(stream).await?;
        self.blocking(move |s| {
            for shard in meta.shards {
                if let Some(seq) = to.trim_seq(s.log.as_ref(), shard)? {
                    s.log.trim(shard, seq)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Trims `shard` of `stream` up to `to`.
    pub async fn trim_shard(&self, stream: &str, shard: u64, to: Position) -> Result<()> {
        self.shard_meta(Some(stream), shard)?;
        self.blocking(move |s| {
            if let Some(seq) = to.trim_seq(s.log.as_ref(), shard)? {
                s.log.trim(shard, seq)?;
            }
            Ok(())
        })
        .await
    }
}
