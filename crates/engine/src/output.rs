//! What a statement produces ([`Output`]), and what describing one or listing the
//! relations gives ([`Described`], [`Relation`]): each front door encodes these for its
//! clients.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use tokio::sync::mpsc;

use crate::error::Result;
use crate::push::PushGuard;
use crate::value::render_rows;

/// What one statement produced. Rows come as Arrow batches; each front door encodes them
/// for its clients (JSON for gRPC, PostgreSQL types for pgwire).
pub enum Output {
    /// A command's message (`Done.`).
    Done(String),
    /// Rows of `SHOW`, `EXPLAIN` and other listings, made as JSON objects.
    Rows {
        /// Column names.
        columns: Vec<String>,
        /// The rows.
        rows: Vec<String>,
    },
    /// The result of a pull query.
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
    /// Rows as JSON objects, the way the HStreamDB CLI prints them (`None` for `Done` and
    /// push queries).
    pub fn json_rows(self) -> Result<Option<(Vec<String>, Vec<String>)>> {
        match self {
            Output::Rows { columns, rows } => Ok(Some((columns, rows))),
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
