//! Subscriptions as their clients see them: creating one (checked as HStreamDB checks it,
//! starting at the earliest or latest batch of every shard), looking it up with its durable
//! offsets and held shards, listing, deleting, and attaching a consumer whose deliveries
//! arrive on a channel and whose acknowledgements go back to the subscription's actor.

use streamcell_proto::api::{self, ErrorCode, SpecialOffset};
use streamcell_store::{now_ms, StoreError, SubscriptionMeta};
use tokio::sync::mpsc;

use crate::error::{Result, ServiceError};
use crate::names::validate_name;
use crate::service::Service;
use crate::subscriptions::{ConsumerInfo, HeldShard, SubHandle};

/// Longest acknowledgement timeout a subscription may have (10 hours, as HStreamDB).
pub const MAX_ACK_TIMEOUT_SECS: i32 = 36_000;

/// A subscription to create.
#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    /// Its id.
    pub id: String,
    /// The stream it reads.
    pub stream: String,
    /// Seconds a delivered record may stay unacknowledged before it is sent again.
    pub ack_timeout_secs: i32,
    /// Most records sent and not acknowledged at once.
    pub max_unacked: i32,
    /// Where it starts: HStreamDB's `SpecialOffset` number (0 earliest, 1 latest).
    pub offset: i32,
}

/// A subscription as `GetSubscription` shows it.
#[derive(Debug, Clone)]
pub struct SubscriptionState {
    /// Its definition (from the catalog: a forced stream deletion renames the stream).
    pub meta: SubscriptionMeta,
    /// Per shard, the first batch not completely acknowledged, durable.
    pub offsets: Vec<(u64, u64)>,
    /// Shards whose delivery is held at damaged data.
    pub held: Vec<HeldShard>,
}

/// A consumer attached to a subscription: its deliveries arrive on `deliveries`; it must
/// call [`Consumer::leave`] when its client goes away.
pub struct Consumer {
    handle: SubHandle,
    id: u64,
    /// The consumer's deliveries; an error ends them.
    pub deliveries: mpsc::UnboundedReceiver<Result<api::StreamingFetchResponse>>,
}

impl Consumer {
    /// A handle for the consumer's acknowledgements, which may live in another task than
    /// its deliveries.
    pub fn acker(&self) -> Acker {
        Acker {
            handle: self.handle.clone(),
            id: self.id,
        }
    }
}

/// Where a consumer's acknowledgements go.
#[derive(Clone)]
pub struct Acker {
    handle: SubHandle,
    id: u64,
}

impl Acker {
    /// Acknowledges records.
    pub fn ack(&self, ids: Vec<api::RecordId>) {
        if !ids.is_empty() {
            self.handle.acks(self.id, ids);
        }
    }

    /// Ends the consumer's deliveries with an error (its client broke the protocol).
    pub fn kick(&self, error: ServiceError) {
        self.handle.kick(self.id, error);
    }

    /// The consumer went away: its outstanding records go to the other consumers.
    pub fn leave(&self) {
        self.handle.leave(self.id);
    }
}

impl Service {
    /// Creates a subscription.
    pub async fn create_subscription(&self, spec: SubscriptionSpec) -> Result<SubscriptionMeta> {
        validate_name(
            "subscription",
            &spec.id,
            ErrorCode::SubscriptionInvalidObjectIdentifier,
        )?;
        if !(1..=MAX_ACK_TIMEOUT_SECS).contains(&spec.ack_timeout_secs) {
            return Err(ServiceError::invalid(
                ErrorCode::SubscriptionInvalidObjectIdentifier,
                format!(
                    "ackTimeoutSeconds must be between 1 and {MAX_ACK_TIMEOUT_SECS}, got {}",
                    spec.ack_timeout_secs
                ),
            ));
        }
        if spec.max_unacked < 1 {
            return Err(ServiceError::invalid(
                ErrorCode::SubscriptionInvalidObjectIdentifier,
                format!(
                    "maxUnackedRecords must be at least 1, got {}",
                    spec.max_unacked
                ),
            ));
        }
        let Ok(offset) = SpecialOffset::try_from(spec.offset) else {
            return Err(ServiceError::invalid(
                ErrorCode::SubscriptionInvalidOffset,
                format!("unknown subscription offset {}", spec.offset),
            ));
        };
        let name = spec.stream.clone();
        let shards = self
            .blocking(move |s| {
                let Some(meta) = s.catalog.get_stream(&name)? else {
                    return Err(ServiceError::Precondition {
                        code: ErrorCode::SubscriptionCreationOnNonExistentStream,
                        message: format!("cannot subscribe to stream {name:?}: it does not exist"),
                    });
                };
                let mut shards = Vec::with_capacity(meta.shards.len());
                for shard in meta.shards {
                    let b = s.log.bounds(shard)?;
                    let start = match offset {
                        SpecialOffset::Earliest => b.start_seq,
                        SpecialOffset::Latest => b.next_seq,
                    };
                    shards.push((shard, start));
                }
                Ok(shards)
            })
            .await?;
        let meta = SubscriptionMeta {
            id: spec.id,
            stream: spec.stream,
            ack_timeout_secs: spec.ack_timeout_secs as u32,
            max_unacked: spec.max_unacked as u32,
            offset: spec.offset,
            created_ms: now_ms(),
            shards,
        };
        let subs = self.subs.clone();
        let _ddl = self.ddl.lock().await;
        let created = self
            .blocking(move |_| subs.create(meta).map(|h| h.meta.as_ref().clone()))
            .await?;
        tracing::info!(sub = %created.id, stream = %created.stream, "created subscription");
        Ok(created)
    }

    /// A subscription with its durable offsets and held shards.
    pub async fn subscription(&self, id: &str) -> Result<SubscriptionState> {
        let handle = self.subs.get(id)?;
        let offsets = handle.offsets().await?;
        let held = handle.held();
        let id = id.to_string();
        let meta = self
            .blocking(move |s| {
                s.catalog
                    .get_subscription(&id)?
                    .ok_or(ServiceError::Store(StoreError::SubscriptionNotFound(id)))
            })
            .await?;
        Ok(SubscriptionState {
            meta,
            offsets,
            held,
        })
    }

    /// True if the subscription exists.
    pub fn subscription_exists(&self, id: &str) -> bool {
        self.subs.get(id).is_ok()
    }

    /// Every subscription, by id.
    pub async fn list_subscriptions(&self) -> Result<Vec<SubscriptionMeta>> {
        self.blocking(|s| Ok(s.catalog.list_subscriptions()?)).await
    }

    /// The consumers attached to a subscription.
    pub async fn list_consumers(&self, id: &str) -> Result<Vec<ConsumerInfo>> {
        self.subs.get(id)?.consumers().await
    }

    /// Deletes a subscription: refused while consumers are attached unless `force`, in which
    /// case their deliveries end.
    pub async fn delete_subscription(&self, id: &str, force: bool) -> Result<()> {
        let _ddl = self.ddl.lock().await;
        self.subs.delete(id, force).await
    }

    /// Attaches consumer `name` (at `uri`, with `agent`) to subscription `id`.
    pub async fn join(&self, id: &str, name: &str, uri: String, agent: String) -> Result<Consumer> {
        let chars = name.chars().count();
        if chars == 0 || chars > 255 {
            return Err(ServiceError::invalid(
                ErrorCode::SubscriptionInvalidObjectIdentifier,
                format!("consumerName must be 1 to 255 characters, got {chars}"),
            ));
        }
        let handle = self.subs.get(id)?;
        let (out, deliveries) = mpsc::unbounded_channel();
        let consumer = handle.join(name.to_string(), uri, agent, out).await?;
        Ok(Consumer {
            handle,
            id: consumer,
            deliveries,
        })
    }

    /// Releases a subscription's held shards (every one, or only `shard`); see
    /// [`SubHandle::skip_damaged`].
    pub async fn skip_damaged(
        &self,
        id: &str,
        shard: Option<u64>,
    ) -> Result<Vec<crate::subscriptions::Skipped>> {
        self.subs.get(id)?.skip_damaged(shard).await
    }
}
