//! Streams as SQL sees them: a stream's declared columns (kept in the catalog beside the
//! stream), the checks a row must pass against them, the columns a stream has when none are
//! declared (sampled from its records), and its history read back as rows.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::Context;
use crate::continuous::plan;
use crate::decode::rows_to_batch;
use crate::error::{EngineError, Result};
use crate::query::{self, streams_of};
use crate::source::{Start, StreamCursor};
use crate::value::{self, JsonRow};

/// Catalog kind of declared stream schemas.
pub(crate) const SCHEMA_KIND: &str = "sql.stream_schema";

/// A pull query over a stream reads at most this many records of its history.
pub(crate) const MAX_PULL_RECORDS: usize = 2_000_000;

/// A declared stream schema as the catalog keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SavedSchema {
    /// The stream's creation time, to tell it from a later stream of the same name.
    pub(crate) stream_created_ms: i64,
    /// Columns: name and SQL type text.
    pub(crate) columns: Vec<(String, String)>,
}

impl Context {
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
    /// wrong type are errors. A number given for a text column becomes the text it was
    /// written as (`2` is `"2"`): the record's numbers are doubles on the wire, which would
    /// read back as `"2.0"`.
    pub(crate) fn conform_declared(&self, stream: &str, row: &mut JsonRow) -> Result<()> {
        let Some(schema) = self.declared_schema(stream)? else {
            return Ok(());
        };
        for (k, v) in row.iter_mut() {
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
            if let (Value::Number(n), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) =
                (&*v, field.data_type())
            {
                *v = Value::String(n.to_string());
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

    /// Reads a stream's whole history as rows of its declared schema, or of the schema
    /// inferred from all its records.
    pub(crate) async fn history(&self, stream: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let declared = self.declared_schema(stream)?;
        self.history_as(stream, declared).await
    }

    /// Reads a stream's whole history as rows of `schema` (fields it lacks are NULL, others
    /// dropped); with `None`, of the schema inferred from all its records.
    pub(crate) async fn history_as(
        &self,
        stream: &str,
        schema: Option<SchemaRef>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let catalog = self.catalog.clone();
        let log = self.log.clone();
        let stream = stream.to_string();
        tokio::task::spawn_blocking(move || {
            let mut cursor = StreamCursor::open(catalog.as_ref(), log, &stream, &Start::Earliest)?;
            let mut records = Vec::new();
            loop {
                let n = cursor.poll(65_536, &mut records)?;
                if n == 0 {
                    break;
                }
                if records.len() > MAX_PULL_RECORDS {
                    return Err(EngineError::invalid(format!(
                        "stream {stream:?} holds more than {MAX_PULL_RECORDS} records: too many \
                         for a pull query over its history; create a view or use EMIT CHANGES"
                    )));
                }
            }
            let schema = match schema {
                Some(s) => s,
                None => Arc::new(value::infer_schema(records.iter().map(|r| &r.row))),
            };
            let schema = value::nullable(&schema);
            let mut batches = Vec::new();
            for chunk in records.chunks(8192) {
                let rows: Vec<&JsonRow> = chunk.iter().map(|r| &r.row).collect();
                batches.push(rows_to_batch(&schema, &rows)?);
            }
            Ok((schema, batches))
        })
        .await
        .map_err(|e| EngineError::internal(e.to_string()))?
    }

    /// A stream's columns as a pull query over its history would see them: declared, or
    /// inferred from a sample of its records (none while it has none).
    pub(crate) async fn stream_columns(&self, stream: &str) -> Result<SchemaRef> {
        let declared = self.declared_schema(stream)?;
        let schema = self.sampled_schema(stream.to_string(), declared).await?;
        Ok(value::nullable(&schema.unwrap_or_else(Schema::empty)))
    }

    /// A stream's schema for planning: `declared`, or inferred from a sample of its records
    /// (`None` while it has none). Reads the log off the async threads.
    pub(crate) async fn sampled_schema(
        &self,
        stream: String,
        declared: Option<SchemaRef>,
    ) -> Result<Option<Schema>> {
        let catalog = self.catalog.clone();
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            query::stream_schema(catalog.as_ref(), log, &stream, declared.as_ref())
        })
        .await
        .map_err(|e| EngineError::internal(e.to_string()))?
    }

    /// The schema of each stream a query reads, as its thread would bind to them (declared,
    /// or inferred from a sample); `None` while one has neither.
    pub(crate) async fn source_schemas(
        &self,
        prepared: &plan::Prepared,
        declared: Vec<Option<SchemaRef>>,
    ) -> Result<Option<Vec<Schema>>> {
        let mut schemas = Vec::new();
        for (i, stream) in streams_of(prepared).into_iter().enumerate() {
            let d = declared.get(i).cloned().flatten();
            match self.sampled_schema(stream, d).await? {
                Some(s) => schemas.push(s),
                None => return Ok(None),
            }
        }
        Ok(Some(schemas))
    }

    /// The declared schemas of the streams a query reads, checking they exist.
    pub(crate) fn sources_of(&self, prepared: &plan::Prepared) -> Result<Vec<Option<SchemaRef>>> {
        streams_of(prepared)
            .iter()
            .map(|s| {
                if self.catalog.get_stream(s)?.is_none() {
                    return Err(EngineError::NotFound(format!(
                        "stream {s:?} does not exist"
                    )));
                }
                self.declared_schema(s)
            })
            .collect()
    }

    /// Plans a continuous query now if its source's schema is known (declared, or records to
    /// infer it from), so mistakes are reported to the statement rather than later.
    pub(crate) async fn try_bind(
        &self,
        prepared: &plan::Prepared,
        declared: Vec<Option<SchemaRef>>,
        kind: query::QueryKind,
    ) -> Result<Option<plan::Pipeline>> {
        match self.source_schemas(prepared, declared).await? {
            Some(schemas) => Ok(Some(query::build(prepared, &schemas, kind).await?)),
            None => Ok(None),
        }
    }
}
