//! Streams and tables as SQL objects: `CREATE STREAM`/`TABLE` with declared columns (kept in
//! the catalog with the stream they belong to), the checks a row must pass against them,
//! `DROP`, and the `SHOW` listings.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use streamcell_service::{Deletion, StreamSpec};
use streamcell_sql::ObjectKind;

use crate::continuous::plan;
use crate::decode::rows_to_batch;
use crate::engine::{done, lock, single_name, Engine};
use crate::error::{EngineError, Result};
use crate::output::Output;
use crate::query::{QueryKind, QueryStatus};
use crate::value::{self, JsonRow};

/// Catalog kind of declared stream schemas.
pub(crate) const SCHEMA_KIND: &str = "sql.stream_schema";

/// Default retention of `CREATE STREAM` without `DURATION` (HStreamDB's: 7 days).
pub(crate) const DEFAULT_DURATION_SECS: u32 = 7 * 86_400;

/// A declared stream schema as the catalog keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SavedSchema {
    /// The stream's creation time, to tell it from a later stream of the same name.
    pub(crate) stream_created_ms: i64,
    /// Columns: name and SQL type text.
    pub(crate) columns: Vec<(String, String)>,
}

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
        let _ddl = self.ddl.lock().await;
        self.check_no_view(&name)?;
        self.service.create_stream(spec).await?;
        if !columns.is_empty() {
            let created = self.catalog.get_stream(&name)?.map_or(0, |m| m.created_ms);
            let doc = SavedSchema {
                stream_created_ms: created,
                columns,
            };
            self.catalog.put_object(
                SCHEMA_KIND,
                &name,
                &serde_json::to_string(&doc).map_err(|e| EngineError::internal(e.to_string()))?,
                false,
            )?;
        }
        Ok(done())
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
            name: single_name(&cs.name)?,
            replication_factor,
            backlog_secs,
            shard_count: 1,
        })
    }

    /// Streams and views share one namespace (both are read by name in FROM).
    pub(crate) fn check_no_view(&self, name: &str) -> Result<()> {
        if lock(&self.queries)
            .get(name)
            .is_some_and(|e| e.shared.kind == QueryKind::View)
        {
            return Err(EngineError::AlreadyExists(format!(
                "a view named {name:?} exists already"
            )));
        }
        Ok(())
    }

    /// The declared schema of a stream, if it has one.
    pub(crate) fn declared_schema(&self, stream: &str) -> Result<Option<SchemaRef>> {
        let Some(doc) = self.catalog.get_object(SCHEMA_KIND, stream)? else {
            return Ok(None);
        };
        let saved: SavedSchema =
            serde_json::from_str(&doc).map_err(|e| EngineError::internal(e.to_string()))?;
        match self.catalog.get_stream(stream)? {
            Some(m) if m.created_ms == saved.stream_created_ms => {}
            // A stream of the same name created since (through the gRPC API): no schema.
            _ => return Ok(None),
        }
        let mut fields = Vec::new();
        for (name, ty) in &saved.columns {
            let parsed = sqlparser::parser::Parser::new(&sqlparser::dialect::GenericDialect {})
                .try_with_sql(ty)
                .and_then(|mut p| p.parse_data_type())
                .map_err(|e| EngineError::internal(format!("saved column type {ty:?}: {e}")))?;
            fields.push(Field::new(name, value::declared_type(&parsed)?, true));
        }
        Ok(Some(Arc::new(Schema::new(fields))))
    }

    /// Checks a record against a stream's declared columns: unknown fields and values of the
    /// wrong type are errors.
    pub(crate) fn check_declared(&self, stream: &str, row: &JsonRow) -> Result<()> {
        let Some(schema) = self.declared_schema(stream)? else {
            return Ok(());
        };
        for (k, v) in row {
            let field = schema.field_with_name(k).map_err(|_| {
                EngineError::invalid(format!(
                    "stream {stream:?} has no column {k:?} (columns: {})",
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            if v.is_null() {
                continue;
            }
            let one = JsonRow::from_iter([(k.clone(), v.clone())]);
            let s = Arc::new(Schema::new(vec![field.clone()]));
            let b = rows_to_batch(&s, &[&one])?;
            if b.column(0).is_null(0) {
                return Err(EngineError::invalid(format!(
                    "column {k:?} is {}, and {v} is not",
                    field.data_type()
                )));
            }
        }
        Ok(())
    }

    pub(crate) async fn drop_object(
        &self,
        kind: ObjectKind,
        name: &str,
        if_exists: bool,
    ) -> Result<Output> {
        match kind {
            ObjectKind::Stream => self.drop_stream(name, if_exists).await?,
            ObjectKind::View => self.drop_query(name, QueryKind::View, if_exists).await?,
            ObjectKind::Query => self.drop_query(name, QueryKind::Stream, if_exists).await?,
        }
        Ok(done())
    }

    /// `DROP STREAM`: refused while a running query reads or writes the stream.
    pub(crate) async fn drop_stream(&self, name: &str, if_exists: bool) -> Result<()> {
        let _ddl = self.ddl.lock().await;
        let users: Vec<String> = lock(&self.queries)
            .values()
            .filter(|e| {
                (e.shared.sources().iter().any(|s| s == name)
                    || e.shared.target.as_deref() == Some(name))
                    && e.shared.status() != QueryStatus::Terminated
            })
            .map(|e| e.shared.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(EngineError::Precondition(format!(
                "stream {name:?} is used by {} (drop or terminate them first)",
                users.join(", ")
            )));
        }
        let existed = self.service.delete_stream(name, false, true).await? != Deletion::Missing;
        self.catalog.delete_object(SCHEMA_KIND, name)?;
        if !existed && !if_exists {
            return Err(EngineError::NotFound(format!(
                "stream {name:?} does not exist"
            )));
        }
        Ok(())
    }

    pub(crate) fn show(&self, kind: ObjectKind) -> Result<Output> {
        let mut rows = Vec::new();
        let columns: Vec<&str>;
        let mut push = |v: Value| {
            let mut s = String::new();
            value::render(&v, &mut s);
            rows.push(s);
        };
        match kind {
            ObjectKind::Stream => {
                columns = vec![
                    "stream_name",
                    "replication_factor",
                    "backlog_duration",
                    "shard_count",
                ];
                for m in self.catalog.list_streams()? {
                    push(serde_json::json!({
                        "stream_name": m.name,
                        "replication_factor": m.replication_factor,
                        "backlog_duration": m.backlog_secs,
                        "shard_count": m.shard_count,
                    }));
                }
            }
            ObjectKind::Query | ObjectKind::View => {
                let views = kind == ObjectKind::View;
                columns = if views {
                    vec!["view_name", "status", "created_time", "sql"]
                } else {
                    vec![
                        "query_id",
                        "status",
                        "created_time",
                        "sql",
                        "records_in",
                        "rows_out",
                        "error",
                    ]
                };
                for e in lock(&self.queries).values() {
                    let s = &e.shared;
                    if views && s.kind != QueryKind::View {
                        continue;
                    }
                    let status = s.status();
                    let (rin, rout) = s.counters();
                    let mut m = serde_json::Map::new();
                    m.insert(
                        (if views { "view_name" } else { "query_id" }).into(),
                        Value::from(s.name.clone()),
                    );
                    m.insert("status".into(), Value::from(status.label()));
                    m.insert("created_time".into(), Value::from(s.created_ms));
                    m.insert("sql".into(), Value::from(s.sql.clone()));
                    if !views {
                        m.insert("records_in".into(), Value::from(rin));
                        m.insert("rows_out".into(), Value::from(rout));
                        m.insert(
                            "error".into(),
                            match status {
                                QueryStatus::Failed(msg) => Value::from(msg),
                                _ => Value::Null,
                            },
                        );
                    }
                    push(Value::Object(m));
                }
            }
        }
        Ok(Output::Rows {
            columns: columns.into_iter().map(String::from).collect(),
            rows,
        })
    }
}
