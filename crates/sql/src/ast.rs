//! The statements of StreamCell SQL: HStream SQL's own statements as typed values, and
//! everything standard (CREATE TABLE, INSERT, CALL, SET, plain SELECT parts) as sqlparser's AST.

use sqlparser::ast::{ColumnDef, Expr, ObjectName, Query};

/// One parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `CREATE STREAM s [(col TYPE, …)] [WITH (REPLICATE = n, DURATION = INTERVAL …)]`, or
    /// `CREATE STREAM s AS SELECT … [WITH (…)]` (a persistent query writing into `s`).
    CreateStream(Box<CreateStream>),
    /// `CREATE VIEW v AS SELECT …`: a materialized view, maintained incrementally.
    CreateView {
        /// View name.
        name: ObjectName,
        /// Its query.
        query: Select,
    },
    /// `SELECT …` (a pull query), or `SELECT … EMIT CHANGES` (a push query).
    Select(Select),
    /// `INSERT INTO s VALUES '<json>'` (optionally `'…'::JSONB`): one JSON record.
    InsertJson {
        /// Target stream.
        stream: ObjectName,
        /// The JSON text.
        json: String,
    },
    /// `DROP STREAM|VIEW|QUERY name [IF EXISTS]` (`IF EXISTS` before or after the name).
    Drop {
        /// What kind of object.
        kind: ObjectKind,
        /// Its name.
        name: ObjectName,
        /// Whether a missing object is not an error.
        if_exists: bool,
    },
    /// `SHOW STREAMS|QUERIES|VIEWS`.
    Show(ObjectKind),
    /// `TERMINATE QUERY name` (`None`: `TERMINATE ALL`).
    Terminate(Option<ObjectName>),
    /// `PAUSE QUERY name`.
    Pause(ObjectName),
    /// `RESUME QUERY name`.
    Resume(ObjectName),
    /// `FLUSH`: returns once every running query and view has processed everything appended
    /// before it (a barrier for tests and scripts).
    Flush,
    /// `EXPLAIN <statement>`.
    Explain(Box<Statement>),
    /// `CREATE TABLE t (LIKE other)`: a table with another's columns (DataCell baskets).
    CreateTableLike {
        /// The new table.
        name: ObjectName,
        /// The table whose columns it takes.
        like: ObjectName,
    },
    /// `CREATE PROCEDURE p() BEGIN stmt; …; END`: statements a DataCell query runs together
    /// (`CALL datacell.query('p')`).
    CreateProcedure {
        /// Procedure name.
        name: ObjectName,
        /// Its statements, in order.
        body: Vec<Statement>,
        /// The body as written (for the catalog).
        text: String,
    },
    /// Any other statement sqlparser understands (`INSERT INTO s (cols) VALUES (…)` with the
    /// seed's double-quoted values turned into strings, `INSERT INTO s SELECT …`,
    /// `CREATE TABLE`, `CALL datacell.receptor(…)`, `SET optimizer = …`, …).
    Sql(Box<sqlparser::ast::Statement>),
}

/// The kinds of named objects HStream SQL manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A stream.
    Stream,
    /// A materialized view.
    View,
    /// A persistent query.
    Query,
}

/// A `SELECT` with HStream's extensions.
#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    /// The query as sqlparser reads it (windows such as `TUMBLE(s, INTERVAL 10 SECOND)` are
    /// table functions in its FROM clause).
    pub query: Box<Query>,
    /// `EMIT CHANGES`: a push query that follows its sources.
    pub emit_changes: bool,
    /// The `WITHIN (interval)` of each join, in the order the joins appear.
    pub within: Vec<Expr>,
}

/// `CREATE STREAM`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateStream {
    /// Stream name.
    pub name: ObjectName,
    /// Declared columns (may be empty: records are JSON objects).
    pub columns: Vec<ColumnDef>,
    /// `REPLICATE = n`.
    pub replicate: Option<u64>,
    /// `DURATION = INTERVAL …` (retention).
    pub duration: Option<Expr>,
    /// `AS SELECT …`: the persistent query that fills the stream.
    pub as_select: Option<Select>,
}
