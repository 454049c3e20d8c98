//! Continuous operators: how a continuous query (push, persistent, view) is planned
//! ([`plan`]: DataFusion plans the expressions, the engine runs them) and what its stages do
//! to each micro-batch ([`stage`]: filters and projections; [`aggregate`]: grouped, windowed
//! and session aggregates with their state; [`join`]: stream-stream joins within a time
//! bound). Rows move as [`chunk::Chunk`]s; [`window`] defines the time windows; [`topk`] is
//! the `TOPK` aggregate function.

pub(crate) mod aggregate;
pub(crate) mod chunk;
pub(crate) mod join;
pub(crate) mod plan;
pub(crate) mod session;
pub(crate) mod stage;
pub(crate) mod topk;
pub(crate) mod window;
