//! Shard reader positions. A reader's definition (stream, shard, start) is in the catalog; its
//! current position is kept here in memory, so after a restart a reader starts again from its
//! starting offset (as HStreamDB's readers do: their LogDevice reader is rebuilt from metadata).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use streamcell_store::ReaderMeta;
use tokio::sync::Notify;

/// One reader's state: the next sequence number it reads, behind an async lock so that
/// concurrent `ReadShard` calls of one reader are served one after the other, and a signal
/// that wakes a read waiting for appends when the reader is deleted.
pub(crate) struct ReaderState {
    /// The next sequence number to read.
    pub next: tokio::sync::Mutex<u64>,
    /// Notified when the reader is deleted.
    pub deleted: Notify,
}

/// The positions of all readers that have been read since the server started.
#[derive(Default)]
pub(crate) struct ReaderPositions {
    inner: Mutex<HashMap<String, Arc<ReaderState>>>,
}

impl ReaderPositions {
    /// The state of `reader`, starting at its start offset the first time.
    pub(crate) fn get(&self, reader: &ReaderMeta) -> Arc<ReaderState> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reader.id.clone())
            .or_insert_with(|| {
                Arc::new(ReaderState {
                    next: tokio::sync::Mutex::new(reader.start_seq),
                    deleted: Notify::new(),
                })
            })
            .clone()
    }

    /// Forgets a reader, waking any read waiting on it.
    pub(crate) fn remove(&self, id: &str) {
        let gone = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(state) = gone {
            state.deleted.notify_waiters();
        }
    }
}
