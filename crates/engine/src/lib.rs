//! StreamCell's SQL engine: it runs the statements `streamcell-sql` parses. Continuous queries
//! (push queries, persistent queries writing streams, materialized views) are planned by
//! DataFusion and run by the engine's own continuous stages on Arrow record batches; pull
//! queries run on DataFusion over views and stream history. See `docs/sql.md` for the dialect
//! as implemented and `docs/architecture.md` for how queries run.

mod context;
mod continuous;
pub mod datacell;
mod ddl;
mod decode;
mod engine;
mod error;
mod insert;
mod json;
mod output;
mod pull;
mod queries;
mod query;
mod source;
mod streams;
mod tables;
mod value;
mod writer;

pub use engine::Engine;
pub use error::{EngineError, Result};
pub use output::{Described, Output, Relation};
pub use queries::{QueryInfo, QueryStats};
pub use query::{PushGuard, QueryKind, QueryStatus};
pub use streamcell_service::ErrorKind;
pub use value::{cell_value, render_rows, to_proto_struct};
