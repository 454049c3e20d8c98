//! Shard reader positions. A reader's definition (stream, shard, start) is in the catalog; its
//! current position is kept here in memory, so after a restart a reader starts again from its
//! starting offset (as HStreamDB's readers do: their LogDevice reader is rebuilt from metadata).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use streamcell_store::ReaderMeta;

/// The next sequence number each reader will read, behind a per-reader async lock so that
/// concurrent `ReadShard` calls of one reader are served one after the other.
#[derive(Default)]
pub struct ReaderPositions {
    inner: Mutex<HashMap<String, Arc<tokio::sync::Mutex<u64>>>>,
}

impl ReaderPositions {
    /// The position of `reader`, starting at its start offset the first time.
    pub fn get(&self, reader: &ReaderMeta) -> Arc<tokio::sync::Mutex<u64>> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reader.id.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(reader.start_seq)))
            .clone()
    }

    /// Forgets a reader.
    pub fn remove(&self, id: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}
