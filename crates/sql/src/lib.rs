//! StreamCell's SQL front end: the HStream SQL dialect (streams, push queries with
//! `EMIT CHANGES`, persistent queries, views, stream-stream joins `WITHIN (…)`) and the
//! DataCell calls (`CALL datacell.receptor(…)`, `SET optimizer = …`), parsed into
//! [`Statement`]s on top of sqlparser. Errors say where: line and column.
//!
//! Binding names and planning over Arrow/DataFusion build on these statements (the engine).

pub mod arrays;
pub mod ast;
pub mod error;
pub mod limits;
pub mod parser;

pub use ast::{CreateStream, ObjectKind, Select, Statement};
pub use error::SqlError;
pub use limits::check_query_text;
pub use parser::{parse, split};
