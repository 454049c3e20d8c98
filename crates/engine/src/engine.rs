//! The engine: runs StreamCell SQL statements. It owns the registry of persistent queries and
//! views (saved in the catalog, restarted from their checkpoints when the server starts),
//! starts push queries for clients, answers pull queries over views and stream history with
//! DataFusion, and implements `FLUSH`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sqlparser::ast::{self as sql};
use streamcell_service::Service;
use streamcell_sql::Statement;
use streamcell_store::{Catalog, ShardLog};

use crate::continuous::plan;
use crate::error::{EngineError, Result};
use crate::output::Output;
use crate::queries::{Entry, SavedQuery, QUERY_KIND};
use crate::query::{Control, QueryKind, QueryShared, QueryStatus};

impl Engine {}

/// The SQL engine.
pub struct Engine {
    pub(crate) catalog: Arc<dyn Catalog>,
    pub(crate) log: Arc<dyn ShardLog>,
    pub(crate) service: Arc<Service>,
    /// DataCell's baskets, adapters and continuous queries.
    pub(crate) datacell: Arc<crate::datacell::DataCell>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) queries: Mutex<BTreeMap<String, Entry>>,
    pub(crate) ddl: tokio::sync::Mutex<()>,
    pub(crate) push_seq: std::sync::atomic::AtomicU64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn done() -> Output {
    Output::Done("Done.".into())
}

pub(crate) fn single_name(name: &sql::ObjectName) -> Result<String> {
    plan::object_name(name)
}

impl Engine {
    /// An engine over the stream service (and its store), its queries running on `runtime`.
    pub fn new(service: Arc<Service>, runtime: tokio::runtime::Handle) -> Arc<Self> {
        Arc::new(Engine {
            catalog: service.store().catalog.clone(),
            log: service.store().log.clone(),
            service,
            runtime,
            queries: Mutex::new(BTreeMap::new()),
            ddl: tokio::sync::Mutex::new(()),
            push_seq: std::sync::atomic::AtomicU64::new(0),
            datacell: Arc::new(crate::datacell::DataCell::new()),
        })
    }

    /// Restarts the saved persistent queries and views from their checkpoints, and starts
    /// DataCell's scheduler.
    pub fn start(self: &Arc<Self>) -> Result<()> {
        self.runtime
            .spawn(crate::datacell::run::scheduler(Arc::downgrade(self)));
        for (name, doc) in self.catalog.list_objects(QUERY_KIND)? {
            let saved: SavedQuery = serde_json::from_str(&doc).map_err(|e| {
                EngineError::internal(format!("saved query {name:?} is unreadable: {e}"))
            })?;
            let shared = QueryShared::new(
                name.clone(),
                saved.sql.clone(),
                saved.kind,
                saved.source.clone(),
                saved.target.clone(),
                saved.created_ms,
            );
            let mut entry = Entry {
                shared: shared.clone(),
                thread: None,
            };
            if saved.terminated {
                shared.control(Control::Stop);
                lock(&self.queries).insert(name, entry);
                continue;
            }
            if saved.paused {
                shared.control(Control::Pause);
            }
            match self.launch(&shared, &saved.sql) {
                Ok(t) => entry.thread = Some(t),
                Err(e) => {
                    // Marked FAILED with the reason (GetQuery, SHOW QUERIES say why); the
                    // server serves everything else.
                    tracing::warn!(query = %name, error = %e, "saved query cannot restart");
                    shared.control(Control::Stop);
                    shared.set_status(QueryStatus::Failed(format!("cannot restart: {e}")));
                }
            }
            lock(&self.queries).insert(name, entry);
        }
        Ok(())
    }

    /// Stops every query thread (server shutdown). Checkpoints are taken as they stop.
    pub fn shutdown(&self) {
        let threads: Vec<_> = {
            let mut q = lock(&self.queries);
            q.values_mut()
                .filter_map(|e| {
                    e.shared.control(Control::Stop);
                    e.thread.take()
                })
                .collect()
        };
        for t in threads {
            let _ = t.join();
        }
    }

    /// Parses `sql` into statements.
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        Ok(streamcell_sql::parse(sql)?)
    }

    /// Runs one statement.
    pub async fn execute(self: &Arc<Self>, stmt: Statement) -> Result<Output> {
        match stmt {
            Statement::CreateStream(cs) => {
                let name = single_name(&cs.name)?;
                let spec = self.stream_spec(&cs)?;
                match cs.as_select {
                    None => self.create_declared_stream(&cs, spec).await,
                    Some(select) => {
                        if !cs.columns.is_empty() {
                            return Err(EngineError::invalid(
                                "CREATE STREAM … AS SELECT takes its columns from the SELECT",
                            ));
                        }
                        self.create_persistent(name, select, QueryKind::Stream, Some(spec))
                            .await
                    }
                }
            }
            Statement::CreateView { name, query } => {
                let name = single_name(&name)?;
                self.create_persistent(name, query, QueryKind::View, None)
                    .await
            }
            Statement::Select(select) if select.emit_changes => {
                let prepared = plan::prepare(&select.query, &select.within)?;
                let declared = self.sources_of(&prepared)?;
                let bound = self.try_bind(&prepared, declared, QueryKind::Push).await?;
                self.push(select, bound.map(|p| p.output_schema))
            }
            Statement::Select(select) => self.pull_on_query_threads(select).await,
            Statement::InsertJson { stream, json } => {
                self.insert_json(&single_name(&stream)?, &json).await?;
                Ok(done())
            }
            Statement::Drop {
                kind,
                name,
                if_exists,
            } => {
                self.drop_object(kind, &single_name(&name)?, if_exists)
                    .await
            }
            Statement::Show(kind) => self.show(kind),
            Statement::Terminate(name) => {
                let name = name.map(|n| single_name(&n)).transpose()?;
                self.terminate(name.as_deref()).await?;
                Ok(done())
            }
            Statement::Pause(name) => {
                self.pause(&single_name(&name)?).await?;
                Ok(done())
            }
            Statement::Resume(name) => {
                self.resume(&single_name(&name)?).await?;
                Ok(done())
            }
            Statement::Explain(inner) => self.explain(*inner).await,
            Statement::Flush => self.flush().await,
            Statement::CreateTableLike { name, like } => self.create_table_like(&name, &like),
            Statement::CreateProcedure { name, body, text } => {
                self.create_procedure(&name, body, text)
            }
            Statement::Sql(stmt) => self.standard(*stmt).await,
        }
    }

    /// Standard statements: `INSERT … VALUES`, `INSERT … SELECT`, `SET`.
    async fn standard(self: &Arc<Self>, stmt: sql::Statement) -> Result<Output> {
        match stmt {
            sql::Statement::Insert(insert) if matches!(&insert.table, sql::TableObject::TableName(n) if crate::datacell::in_schema(n)) => {
                self.insert_into_basket(&insert).await
            }
            sql::Statement::CreateTable(ct) => self.create_table(&ct).await,
            sql::Statement::Drop {
                object_type: sql::ObjectType::Table,
                if_exists,
                names,
                ..
            } => {
                for n in &names {
                    self.drop_table(n, if_exists).await?;
                }
                Ok(done())
            }
            sql::Statement::Insert(insert) => {
                self.insert_into_stream(insert).await?;
                Ok(done())
            }
            sql::Statement::Set(set) => {
                let text = set.to_string();
                if text.to_ascii_lowercase().contains("optimizer") {
                    Ok(done())
                } else {
                    Err(EngineError::invalid(format!(
                        "{text}: only SET optimizer = '…' is accepted (and ignored)"
                    )))
                }
            }
            sql::Statement::Call(f) => self.datacell_call(&f).await,
            other => Err(EngineError::invalid(format!(
                "this statement is not supported: {}",
                first_words(&other.to_string())
            ))),
        }
    }
}

pub(crate) fn first_words(s: &str) -> String {
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
