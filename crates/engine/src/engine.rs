//! The engine's façade: it parses StreamCell SQL and dispatches each statement to the
//! subsystem that runs it: DDL and inserts here (`ddl.rs`, `insert.rs`), continuous queries
//! to [`Queries`], pull queries and descriptions to [`PullQueries`], DataCell to its
//! [`Runner`]. The typed methods the front doors call (terminate, pause, resume, drop, view
//! rows, listings) are here too, so no door writes SQL text to manage a query.

use std::sync::Arc;

use sqlparser::ast::{self as sql};
use streamcell_service::Service;
use streamcell_sql::Statement;

use crate::context::Context;
use crate::continuous::plan;
use crate::datacell::run::Runner;
use crate::datacell::{self, DataCell};
use crate::error::{EngineError, Result};
use crate::output::{Described, Output, Relation};
use crate::pull::PullQueries;
use crate::queries::{Queries, QueryInfo, QueryStats};
use crate::query::QueryKind;

/// The SQL engine.
pub struct Engine {
    pub(crate) ctx: Arc<Context>,
    pub(crate) queries: Arc<Queries>,
    pub(crate) pull: Arc<PullQueries>,
    pub(crate) cell: Arc<Runner>,
}

impl Engine {
    /// An engine over the stream service (and its store), its queries running on `runtime`.
    pub fn new(service: Arc<Service>, runtime: tokio::runtime::Handle) -> Arc<Self> {
        let ctx = Arc::new(Context::new(service, runtime));
        let queries = Arc::new(Queries::new(ctx.clone()));
        let datacell = Arc::new(DataCell::new());
        let pull = Arc::new(PullQueries::new(
            ctx.clone(),
            queries.clone(),
            datacell.clone(),
        ));
        let cell = Arc::new(Runner::new(ctx.clone(), pull.clone(), datacell));
        Arc::new(Engine {
            ctx,
            queries,
            pull,
            cell,
        })
    }

    /// Restarts the saved persistent queries and views from their checkpoints, and starts
    /// DataCell's scheduler.
    pub fn start(self: &Arc<Self>) -> Result<()> {
        self.cell.start();
        self.queries.restart()
    }

    /// Stops every query thread (server shutdown). Checkpoints are taken as they stop.
    pub fn shutdown(&self) {
        self.queries.shutdown();
    }

    /// DataCell's baskets, receptors, emitters and queries (for metrics and listings).
    pub fn datacell(&self) -> &DataCell {
        self.cell.datacell()
    }

    /// Every stream, view and basket with its columns, sorted by schema and name.
    pub async fn relations(&self) -> Result<Vec<Relation>> {
        self.pull.relations().await
    }

    /// What `stmt` will produce, without running it: a pull query is planned over the
    /// schemas of what it reads (no history is read), a push query is bound as it would be.
    pub async fn describe(&self, stmt: &Statement) -> Result<Described> {
        self.pull.describe(stmt).await
    }

    /// The counters of every persistent query and view.
    pub fn query_stats(&self) -> Vec<QueryStats> {
        self.queries.query_stats()
    }

    /// Every persistent query and view.
    pub fn list(&self) -> Vec<QueryInfo> {
        self.queries.list()
    }

    /// One persistent query or view.
    pub fn get(&self, name: &str) -> Result<QueryInfo> {
        self.queries.get(name)
    }

    /// A view's rows now (what `SELECT * FROM view` answers).
    pub fn view_table(&self, name: &str) -> Result<Output> {
        self.queries.view_table(name)
    }

    /// Terminates a persistent query or view (`None`: every one): it stops for good, keeps
    /// its definition (and a view its rows) until dropped. Returns once its thread ended.
    pub async fn terminate(&self, name: Option<&str>) -> Result<()> {
        self.queries.terminate(name).await
    }

    /// Pauses a persistent query or view; returns once its thread has paused.
    pub async fn pause(&self, name: &str) -> Result<()> {
        self.queries.pause(name).await
    }

    /// Resumes a paused persistent query or view.
    pub async fn resume(&self, name: &str) -> Result<()> {
        self.queries.resume(name).await
    }

    /// Drops a persistent query (`kind` [`QueryKind::Stream`]) or a view (`kind`
    /// [`QueryKind::View`]): it stops, and its definition, state and checkpoint are deleted.
    /// A missing one is an error unless `if_exists`.
    pub async fn drop_query(&self, name: &str, kind: QueryKind, if_exists: bool) -> Result<()> {
        self.queries.drop_query(name, kind, if_exists).await
    }

    /// Parses `sql` into statements.
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        Ok(streamcell_sql::parse(sql)?)
    }

    /// Runs one statement.
    pub async fn execute(self: &Arc<Self>, stmt: Statement) -> Result<Output> {
        match stmt {
            Statement::CreateStream(cs) => {
                let name = plan::object_name(&cs.name)?;
                let spec = self.stream_spec(&cs)?;
                match cs.as_select {
                    None => self.create_declared_stream(&cs, spec).await,
                    Some(select) => {
                        if !cs.columns.is_empty() {
                            return Err(EngineError::invalid(
                                "CREATE STREAM … AS SELECT takes its columns from the SELECT",
                            ));
                        }
                        self.queries
                            .create_persistent(name, select, QueryKind::Stream, Some(spec))
                            .await
                    }
                }
            }
            Statement::CreateView { name, query } => {
                let name = plan::object_name(&name)?;
                self.queries
                    .create_persistent(name, query, QueryKind::View, None)
                    .await
            }
            Statement::Select(select) if select.emit_changes => {
                let prepared = plan::prepare(&select.query, &select.within)?;
                let declared = self.ctx.sources_of(&prepared)?;
                let bound = self
                    .ctx
                    .try_bind(&prepared, declared, QueryKind::Push)
                    .await?;
                self.queries.push(select, bound.map(|p| p.output_schema))
            }
            Statement::Select(select) => self.pull.pull_on_query_threads(select).await,
            Statement::InsertJson { stream, json } => {
                self.insert_json(&plan::object_name(&stream)?, &json)
                    .await?;
                Ok(Output::done())
            }
            Statement::Drop {
                kind,
                name,
                if_exists,
            } => {
                self.drop_object(kind, &plan::object_name(&name)?, if_exists)
                    .await
            }
            Statement::Show(kind) => self.show(kind),
            Statement::Terminate(name) => {
                let name = name.map(|n| plan::object_name(&n)).transpose()?;
                self.queries.terminate(name.as_deref()).await?;
                Ok(Output::done())
            }
            Statement::Pause(name) => {
                self.queries.pause(&plan::object_name(&name)?).await?;
                Ok(Output::done())
            }
            Statement::Resume(name) => {
                self.queries.resume(&plan::object_name(&name)?).await?;
                Ok(Output::done())
            }
            Statement::Explain(inner) => self.pull.explain(*inner).await,
            Statement::Flush => self.queries.flush().await,
            Statement::CreateTableLike { name, like } => self.cell.create_table_like(&name, &like),
            Statement::CreateProcedure { name, body, text } => {
                self.cell.create_procedure(&name, body, text)
            }
            Statement::Sql(stmt) => self.standard(*stmt).await,
        }
    }

    /// Standard statements: `INSERT … VALUES`, `INSERT … SELECT`, `SET`.
    async fn standard(self: &Arc<Self>, stmt: sql::Statement) -> Result<Output> {
        match stmt {
            sql::Statement::Insert(insert) if matches!(&insert.table, sql::TableObject::TableName(n) if datacell::in_schema(n)) => {
                self.cell.insert_into_basket(&insert).await
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
                Ok(Output::done())
            }
            sql::Statement::Insert(insert) => {
                self.insert_into_stream(insert).await?;
                Ok(Output::done())
            }
            sql::Statement::Set(set) => {
                let text = set.to_string();
                if text.to_ascii_lowercase().contains("optimizer") {
                    Ok(Output::done())
                } else {
                    Err(EngineError::invalid(format!(
                        "{text}: only SET optimizer = '…' is accepted (and ignored)"
                    )))
                }
            }
            sql::Statement::Call(f) => self.cell.call(&f).await,
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
