//! StreamCell's SQL engine: it runs the statements `streamcell-sql` parses. Continuous queries
//! (push queries, persistent queries writing streams, materialized views) are planned by
//! DataFusion and run by the engine's own continuous stages on Arrow record batches; pull
//! queries run on DataFusion over views and stream history. See `docs/sql.md` for the dialect
//! as implemented and `docs/architecture.md` for how queries run.

pub mod continuous;
pub mod datacell;
pub mod decode;
pub mod engine;
pub mod error;
pub mod json;
pub mod query;
pub mod source;
pub mod value;
pub mod writer;

pub use engine::{Described, Engine, Output, PushGuard, QueryInfo, Relation};
pub use error::{EngineError, Result};
pub use query::{QueryKind, QueryStatus};
