//! Streams and tables as SQL objects: `CREATE STREAM`/`TABLE` with declared columns (kept in
//! the catalog with the stream they belong to), the checks a row must pass against them,
//! `DROP`, and the `SHOW` listings.

use std::sync::Arc;

use streamcell_service::{Deletion, StreamSpec};
use streamcell_sql::ObjectKind;

use sqlparser::ast as sql;
use streamcell_sql::Statement;

use crate::continuous::plan;
use crate::datacell::{in_schema, name_text};
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::output::{Cell, Listing, Output};
use crate::queries::QueryInfo;
use crate::query::{QueryKind, QueryStatus};
use crate::streams::{SavedSchema, SCHEMA_KIND};
use crate::value;

/// Default retention of `CREATE STREAM` without `DURATION` (HStreamDB's: 7 days).
pub(crate) const DEFAULT_DURATION_SECS: u32 = 7 * 86_400;

impl Engine {
    /// `CREATE STREAM s [(columns)]` (and durable tables): the stream, and its declared
    /// columns if any.
    pub(crate) async fn create_declared_stream(
        &self,
        cs: &streamcell_sql::CreateStream,
        spec: StreamSpec,
    ) -> Result<Output> {
        let name = spec.name.clone();
        let columns = cs
            .columns
            .iter()
            .map(|c| {
                value::declared_type(&c.data_type)?;
                Ok((c.name.value.clone(), c.data_type.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let _ddl = self.ctx.ddl.lock().await;
        self.queries.check_no_view(&name)?;
        self.ctx.service.create_stream(spec).await?;
        if !columns.is_empty() {
            let created = self
                .ctx
                .catalog
                .get_stream(&name)?
                .map_or(0, |m| m.created_ms);
            let doc = SavedSchema {
                stream_created_ms: created,
                columns,
            };
            self.ctx.catalog.put_object(
                SCHEMA_KIND,
                &name,
                &serde_json::to_string(&doc).map_err(|e| EngineError::internal(e.to_string()))?,
                false,
            )?;
        }
        Ok(Output::done())
    }

    /// The stream a `CREATE STREAM` asks for.
    pub(crate) fn stream_spec(&self, cs: &streamcell_sql::CreateStream) -> Result<StreamSpec> {
        let replication_factor = match cs.replicate {
            None => 1,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| (1..=15).contains(n))
                .ok_or_else(|| EngineError::invalid("REPLICATE must be between 1 and 15"))?,
        };
        let backlog_secs = match &cs.duration {
            None => DEFAULT_DURATION_SECS,
            Some(e) => {
                let ms = plan::interval_ms(e)?;
                u32::try_from(ms / 1000)
                    .ok()
                    .filter(|s| *s >= 1)
                    .ok_or_else(|| {
                        EngineError::invalid(
                            "DURATION must be between 1 second and about 136 years",
                        )
                    })?
            }
        };
        Ok(StreamSpec {
            name: plan::object_name(&cs.name)?,
            replication_factor,
            backlog_secs,
            shard_count: 1,
        })
    }

    pub(crate) async fn drop_object(
        &self,
        kind: ObjectKind,
        name: &str,
        if_exists: bool,
    ) -> Result<Output> {
        match kind {
            ObjectKind::Stream => self.drop_stream(name, if_exists).await?,
            ObjectKind::View => {
                self.queries
                    .drop_query(name, QueryKind::View, if_exists)
                    .await?
            }
            ObjectKind::Query => {
                self.queries
                    .drop_query(name, QueryKind::Stream, if_exists)
                    .await?
            }
        }
        Ok(Output::done())
    }

    /// `DROP STREAM`: refused while a running query reads or writes the stream.
    pub(crate) async fn drop_stream(&self, name: &str, if_exists: bool) -> Result<()> {
        let _ddl = self.ctx.ddl.lock().await;
        let users = self.queries.users_of(name);
        if !users.is_empty() {
            return Err(EngineError::Precondition(format!(
                "stream {name:?} is used by {} (drop or terminate them first)",
                users.join(", ")
            )));
        }
        let existed = self.ctx.service.delete_stream(name, false, true).await? != Deletion::Missing;
        self.ctx.catalog.delete_object(SCHEMA_KIND, name)?;
        if !existed && !if_exists {
            return Err(EngineError::NotFound(format!(
                "stream {name:?} does not exist"
            )));
        }
        Ok(())
    }

    /// `SHOW STREAMS`, `SHOW QUERIES`, `SHOW VIEWS`: one row per object.
    pub(crate) fn show(&self, kind: ObjectKind) -> Result<Output> {
        match kind {
            ObjectKind::Stream => {
                let mut out = Listing::new(&[
                    ("stream_name", false),
                    ("replication_factor", true),
                    ("backlog_duration", true),
                    ("shard_count", true),
                ]);
                for m in self.ctx.catalog.list_streams()? {
                    out.push(vec![
                        m.name.into(),
                        m.replication_factor.into(),
                        m.backlog_secs.into(),
                        m.shard_count.into(),
                    ]);
                }
                out.into_output()
            }
            ObjectKind::View => {
                let mut out = Listing::new(&[
                    ("view_name", false),
                    ("status", false),
                    ("created_time", true),
                    ("sql", false),
                ]);
                for s in self.queries.all() {
                    if s.kind == QueryKind::View {
                        out.push(vec![
                            s.name.clone().into(),
                            s.status().label().into(),
                            s.created_ms.into(),
                            s.sql.clone().into(),
                        ]);
                    }
                }
                out.into_output()
            }
            ObjectKind::Query => {
                let mut out = Listing::new(&[
                    ("query_id", false),
                    ("status", false),
                    ("created_time", true),
                    ("sql", false),
                    ("records_in", true),
                    ("rows_out", true),
                    ("error", false),
                ]);
                for s in self.queries.all() {
                    let status = s.status();
                    let (rin, rout) = s.counters();
                    let error = match &status {
                        QueryStatus::Failed(msg) => Some(msg.clone()),
                        _ => None,
                    };
                    out.push(vec![
                        s.name.clone().into(),
                        status.label().into(),
                        s.created_ms.into(),
                        s.sql.clone().into(),
                        rin.into(),
                        rout.into(),
                        Cell::Text(error),
                    ]);
                }
                out.into_output()
            }
        }
    }

    /// `CreateQuery`: a `CREATE STREAM … AS SELECT` or `CREATE VIEW` statement; `name` names
    /// a stream query (empty: the stream's name); a view's query is named after the view.
    pub async fn create_query(self: &Arc<Self>, sql_text: &str, name: &str) -> Result<QueryInfo> {
        let mut stmts = self.parse(sql_text)?;
        if stmts.len() != 1 {
            return Err(EngineError::invalid("CreateQuery takes one statement"));
        }
        let query_name = match stmts.remove(0) {
            Statement::CreateStream(cs) if cs.as_select.is_some() => {
                let stream = plan::object_name(&cs.name)?;
                let query_name = if name.is_empty() {
                    stream.clone()
                } else {
                    name.to_string()
                };
                let select = cs
                    .as_select
                    .clone()
                    .ok_or_else(|| EngineError::internal("checked"))?;
                let spec = self.stream_spec(&cs)?;
                self.queries
                    .create_persistent(query_name.clone(), select, QueryKind::Stream, Some(spec))
                    .await?;
                query_name
            }
            Statement::CreateView { name: v, query } => {
                let v = plan::object_name(&v)?;
                self.queries
                    .create_persistent(v.clone(), query, QueryKind::View, None)
                    .await?;
                v
            }
            _ => {
                return Err(EngineError::invalid(
                    "CreateQuery takes CREATE STREAM … AS SELECT or CREATE VIEW … AS SELECT",
                ))
            }
        };
        self.get(&query_name)
    }

    /// `ParseSql`: the view a pull query reads, when `sql` is one `SELECT … FROM <view>`
    /// (HStreamDB's `ExecuteViewQuerySql`). Syntax errors say where; any other statement is
    /// refused: this RPC exists for clients that route view queries.
    pub fn view_of_query(&self, sql_text: &str) -> Result<String> {
        let mut stmts = self.parse(sql_text)?;
        if stmts.len() != 1 {
            return Err(EngineError::invalid(format!(
                "ParseSql takes one statement, got {}",
                stmts.len()
            )));
        }
        let not_view = || {
            EngineError::invalid(
                "ParseSql answers only queries of a view (SELECT … FROM <view>, without EMIT \
                 CHANGES)",
            )
        };
        let Statement::Select(select) = stmts.remove(0) else {
            return Err(not_view());
        };
        if select.emit_changes {
            return Err(not_view());
        }
        let sqlparser::ast::SetExpr::Select(body) = select.query.body.as_ref() else {
            return Err(not_view());
        };
        let [from] = body.from.as_slice() else {
            return Err(not_view());
        };
        if !from.joins.is_empty() {
            return Err(not_view());
        }
        let sqlparser::ast::TableFactor::Table {
            name, args: None, ..
        } = &from.relation
        else {
            return Err(not_view());
        };
        let view = plan::object_name(name)?;
        if self.queries.view(&view).is_none() {
            return Err(EngineError::NotFound(format!(
                "view {view:?} does not exist"
            )));
        }
        Ok(view)
    }

    /// `CREATE TABLE datacell.x (…)` makes a basket; any other table is durable: a stream
    /// with declared columns that never expires.
    pub(crate) async fn create_table(&self, ct: &sql::CreateTable) -> Result<Output> {
        plain_table(ct)?;
        if ct.query.is_some() {
            return Err(EngineError::invalid(
                "CREATE TABLE … AS SELECT is not supported (create the table, then INSERT … \
                 SELECT)",
            ));
        }
        if in_schema(&ct.name) {
            self.cell.create_basket(ct)?;
            return Ok(Output::done());
        }
        if ct.columns.is_empty() {
            return Err(EngineError::invalid("a table needs columns"));
        }
        let name = plan::object_name(&ct.name)?;
        if ct.if_not_exists && self.ctx.catalog.get_stream(&name)?.is_some() {
            return Ok(Output::done());
        }
        let cs = streamcell_sql::CreateStream {
            name: ct.name.clone(),
            columns: ct.columns.clone(),
            replicate: None,
            duration: None,
            as_select: None,
        };
        // A table keeps its rows: no retention.
        self.create_declared_stream(
            &cs,
            StreamSpec {
                name,
                replication_factor: 1,
                backlog_secs: 0,
                shard_count: 1,
            },
        )
        .await
    }

    /// `DROP TABLE`: a basket, or a durable table (a stream).
    pub(crate) async fn drop_table(&self, name: &sql::ObjectName, if_exists: bool) -> Result<()> {
        if in_schema(name) {
            return self.datacell().drop_basket(&name_text(name), if_exists);
        }
        self.drop_stream(&plan::object_name(name)?, if_exists).await
    }
}

/// Refuses a `CREATE TABLE` with anything but a name, columns (with their constraints),
/// `IF NOT EXISTS` and `AS SELECT` (refused on its own): `EXTERNAL`, `LOCATION`,
/// `STORED AS`, `TEMPORARY`, `OR REPLACE`, partitioning, table options and the rest of
/// every dialect's clauses would otherwise be dropped without a word, and a table the user
/// believes to read a file would be an empty one. The table is compared with the one its
/// name, columns and constraints alone make, so a clause sqlparser learns later is refused
/// too.
fn plain_table(ct: &sql::CreateTable) -> Result<()> {
    let plain =
        sqlparser::ast::helpers::stmt_create_table::CreateTableBuilder::new(ct.name.clone())
            .columns(ct.columns.clone())
            .constraints(ct.constraints.clone())
            .if_not_exists(ct.if_not_exists)
            .query(ct.query.clone())
            .build();
    if *ct == plain {
        return Ok(());
    }
    let what = if ct.external {
        "CREATE EXTERNAL TABLE (tables here are streams StreamCell stores; nothing is read \
         from files)"
    } else if ct.location.is_some() || ct.file_format.is_some() || ct.hive_formats.is_some() {
        "LOCATION, STORED AS and ROW FORMAT (nothing is read from files)"
    } else if ct.or_replace {
        "CREATE OR REPLACE TABLE (drop the table first)"
    } else if ct.temporary {
        "CREATE TEMPORARY TABLE (baskets, CREATE TABLE datacell.<name>, are DataCell's \
         temporary tables)"
    } else {
        "this clause of CREATE TABLE (a table takes a name and columns)"
    };
    Err(EngineError::Unsupported(format!("{what} is not supported")))
}
