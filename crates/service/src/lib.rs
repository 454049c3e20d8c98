//! The stream service: everything a client can do with streams, shards, appends, readers and
//! subscriptions, as plain Rust calls on one [`Service`] with one error type
//! ([`ServiceError`]). Every front door (gRPC, HTTP, the PostgreSQL port through the engine)
//! and the engine itself call it; none of them knows another door. The service knows the
//! store below it ([`streamcell_store`]) and HStreamDB's data model (batches and record ids,
//! [`streamcell_proto::api`]'s messages), not any transport.
//!
//! - [`streams`]: create, delete, list, shards, tails, trims;
//! - [`appends`]: a client's batch (checked by [`batch`]) or records the server built;
//! - [`reads`]: shard readers and live-following reads;
//! - [`consumers`]: subscriptions and their consumers, over the actors of [`subscriptions`];
//! - [`counters`]: what `/metrics` reads.

mod acks;
pub mod appends;
pub mod batch;
pub mod consumers;
pub mod counters;
pub mod error;
mod keys;
pub mod names;
pub mod offsets;
mod readers;
pub mod reads;
pub mod records;
mod service;
pub mod streams;
pub mod subscriptions;

pub use appends::Appended;
pub use consumers::{Acker, Consumer, SubscriptionSpec, SubscriptionState};
pub use error::{ErrorKind, Result, ServiceError};
pub use offsets::Position;
pub use reads::{LiveRead, ReaderSpec};
pub use service::{NodeInfo, Service};
pub use streams::{Deletion, StreamSpec};
