//! Push queries (`SELECT … EMIT CHANGES`): a continuous query whose rows go to the client
//! that asked, until it goes away.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use streamcell_sql::Select;
use tokio::sync::mpsc;

use crate::continuous::plan;
use crate::engine::{now_ms, Engine};
use crate::error::Result;
use crate::output::Output;
use crate::query::{self, Control, QueryKind, QueryRun, QueryShared, Sink};
use crate::source::Start;

/// Stops a push query when dropped.
pub struct PushGuard(Arc<QueryShared>);

impl Drop for PushGuard {
    fn drop(&mut self) {
        self.0.control(Control::Stop);
    }
}

impl Engine {
    pub(crate) fn push(
        self: &Arc<Self>,
        select: Select,
        schema: Option<SchemaRef>,
    ) -> Result<Output> {
        let prepared = plan::prepare(&select.query, &select.within)?;
        let declared = self.sources_of(&prepared)?;
        let stream = prepared.source.stream.clone();
        let id = self
            .push_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let shared = QueryShared::new(
            format!("push-{id}"),
            select.query.to_string(),
            QueryKind::Push,
            stream,
            None,
            now_ms(),
        );
        let (tx, rx) = mpsc::channel(16);
        let run = QueryRun {
            shared: shared.clone(),
            prepared,
            sink: Sink::Push(tx),
            catalog: self.catalog.clone(),
            log: self.log.clone(),
            service: self.service.clone(),
            runtime: self.runtime.clone(),
            saved_as: None,
            declared,
            start: Start::Earliest,
        };
        // Plan errors (unknown column, type errors) surface before any row: a query on a stream
        // with records binds now; one on an empty stream binds when its first record arrives.
        query::spawn(run)?;
        Ok(Output::Push {
            schema,
            rx,
            guard: PushGuard(shared),
        })
    }
}
