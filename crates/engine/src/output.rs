//! What a statement produces ([`Output`]), and what describing one or listing the
//! relations gives ([`Described`], [`Relation`]): each front door encodes these for its
//! clients.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use tokio::sync::mpsc;

use crate::error::Result;
use crate::query::PushGuard;
use crate::value::render_rows;

/// What one statement produced. Rows come as Arrow batches; each front door encodes them
/// for its clients (JSON for gRPC, PostgreSQL types for pgwire).
pub enum Output {
    /// A command's message (`Done.`).
    Done(String),
    /// Rows: the result of a pull query, or of a listing (`SHOW`, `EXPLAIN`,
    /// `CALL datacell.dump()`).
    Table {
        /// Its columns.
        schema: SchemaRef,
        /// Its rows.
        batches: Vec<RecordBatch>,
    },
    /// A push query: rows arrive on `rx` until the receiver is dropped (which stops the
    /// query) or the query fails (an `Err` item).
    Push {
        /// The rows' columns, when the query could bind at once (its source has declared
        /// columns or records); otherwise each batch carries them.
        schema: Option<SchemaRef>,
        /// Row batches.
        rx: mpsc::Receiver<Result<RecordBatch>>,
        /// Stops the query when dropped.
        guard: PushGuard,
    },
}

impl Output {
    /// A command done (`Done.`).
    pub(crate) fn done() -> Output {
        Output::Done("Done.".into())
    }

    /// Rows as JSON objects, the way the HStreamDB CLI prints them (`None` for `Done` and
    /// push queries).
    pub fn json_rows(self) -> Result<Option<(Vec<String>, Vec<String>)>> {
        match self {
            Output::Table { schema, batches } => {
                let mut rows = Vec::new();
                for b in &batches {
                    rows.extend(render_rows(b)?);
                }
                let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
                Ok(Some((columns, rows)))
            }
            Output::Done(_) | Output::Push { .. } => Ok(None),
        }
    }
}

/// A listing as one batch: text and integer columns (nullable), row by row.
pub(crate) struct Listing {
    fields: Vec<Field>,
    columns: Vec<Column>,
}

enum Column {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
}

/// A value of a [`Listing`] row.
pub(crate) enum Cell {
    /// Text (`None`: NULL).
    Text(Option<String>),
    /// An integer.
    Int(i64),
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::Text(Some(s.to_string()))
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::Text(Some(s))
    }
}

impl From<i64> for Cell {
    fn from(n: i64) -> Self {
        Cell::Int(n)
    }
}

impl From<u64> for Cell {
    fn from(n: u64) -> Self {
        Cell::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<u32> for Cell {
    fn from(n: u32) -> Self {
        Cell::Int(i64::from(n))
    }
}

impl Listing {
    /// An empty listing of these columns: `(name, true)` for an integer column, `(name,
    /// false)` for a text one.
    pub(crate) fn new(columns: &[(&str, bool)]) -> Self {
        Listing {
            fields: columns
                .iter()
                .map(|(name, int)| {
                    let t = if *int {
                        DataType::Int64
                    } else {
                        DataType::Utf8
                    };
                    Field::new(*name, t, true)
                })
                .collect(),
            columns: columns
                .iter()
                .map(|(_, int)| {
                    if *int {
                        Column::Int(Vec::new())
                    } else {
                        Column::Text(Vec::new())
                    }
                })
                .collect(),
        }
    }

    /// Adds a row, one cell per column in order (a text cell in an integer column, or the
    /// reverse, is a bug: it becomes NULL).
    pub(crate) fn push(&mut self, row: Vec<Cell>) {
        for (column, cell) in self.columns.iter_mut().zip(row) {
            match (column, cell) {
                (Column::Text(v), Cell::Text(s)) => v.push(s),
                (Column::Int(v), Cell::Int(n)) => v.push(Some(n)),
                (Column::Text(v), Cell::Int(_)) => v.push(None),
                (Column::Int(v), Cell::Text(_)) => v.push(None),
            }
        }
    }

    /// The listing as an [`Output::Table`].
    pub(crate) fn into_output(self) -> Result<Output> {
        let schema = Arc::new(Schema::new(self.fields));
        let arrays: Vec<ArrayRef> = self
            .columns
            .into_iter()
            .map(|c| -> ArrayRef {
                match c {
                    Column::Text(v) => Arc::new(StringArray::from(v)),
                    Column::Int(v) => Arc::new(Int64Array::from(v)),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), arrays)?;
        Ok(Output::Table {
            schema,
            batches: vec![batch],
        })
    }
}

/// A stream, view or DataCell basket as a SQL catalog (PostgreSQL's `pg_class`,
/// `information_schema.tables`) lists it.
#[derive(Debug, Clone)]
pub struct Relation {
    /// `public` (streams, tables, views) or `datacell` (baskets).
    pub schema: String,
    /// Its name.
    pub name: String,
    /// A view (otherwise rows are appended to it: a stream, a table, a basket).
    pub is_view: bool,
    /// Its columns (a stream's declared or sampled ones; none while they are unknown).
    pub columns: Vec<(String, arrow::datatypes::DataType)>,
}

/// What a statement will produce, found without running it (for the extended query
/// protocol's Describe).
#[derive(Debug, Clone, Default)]
pub struct Described {
    /// The columns of its rows; `None` when it returns none or they are known only when it
    /// runs.
    pub schema: Option<SchemaRef>,
    /// Types the plan infers for its `$1`, `$2`, … parameters (by position; `None` where it
    /// cannot tell).
    pub params: Vec<Option<arrow::datatypes::DataType>>,
}
