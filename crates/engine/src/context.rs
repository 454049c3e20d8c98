//! What every engine subsystem works against: the node's catalog, shard log and stream
//! service, the runtime the engine's tasks run on, and the lock that lets one DDL statement
//! change the catalog at a time. The subsystems ([`crate::queries`], [`crate::pull`],
//! DataCell's runner) each hold the one `Context`; none of them holds the engine.

use std::sync::{Arc, Mutex};

use streamcell_service::Service;
use streamcell_store::{Catalog, ShardLog};

/// The node's store and service, shared by the engine's subsystems.
pub(crate) struct Context {
    /// Streams, shards, readers, subscriptions and the engine's objects.
    pub(crate) catalog: Arc<dyn Catalog>,
    /// The shards' records.
    pub(crate) log: Arc<dyn ShardLog>,
    /// Appends, stream creation and deletion, as every front door does them.
    pub(crate) service: Arc<Service>,
    /// Where the engine's tasks (DataCell's scheduler) run.
    pub(crate) runtime: tokio::runtime::Handle,
    /// Held by statements that check the catalog and then change it (CREATE, DROP), so two
    /// of them cannot both pass the check.
    pub(crate) ddl: tokio::sync::Mutex<()>,
}

impl Context {
    /// The context of an engine over `service`.
    pub(crate) fn new(service: Arc<Service>, runtime: tokio::runtime::Handle) -> Self {
        Context {
            catalog: service.store().catalog.clone(),
            log: service.store().log.clone(),
            service,
            runtime,
            ddl: tokio::sync::Mutex::new(()),
        }
    }
}

/// Locks `m`, going on past a panicked holder (the data are plain registries).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Now, in milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
