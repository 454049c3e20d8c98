//! Subscriptions: shared, durable cursors over a stream, read by groups of consumers.
//!
//! Each subscription is run by one task (an actor) that owns all of its delivery state, so no
//! locks are shared between consumers:
//! - **assignment**: every shard is owned by at most one consumer; a joining consumer takes
//!   free shards, then shards from the busiest consumers until the load is even; a leaving
//!   consumer's shards go to those with the fewest;
//! - **delivery**: the owner of a shard gets its batches in order, skipping records that are
//!   already acknowledged; sending pauses while `maxUnackedRecords` records (or 64 MiB) are
//!   outstanding in the subscription;
//! - **redelivery**: a batch whose records are not all acknowledged within
//!   `ackTimeoutSeconds` is sent again to the shard's current owner, with only the
//!   unacknowledged records and their original record ids; a leaving consumer's outstanding
//!   records are handed over at once;
//! - **progress**: each shard's exact acknowledgement state ([`AckState`]) is checkpointed by
//!   the [`Checkpointer`], which group-commits all pending checkpoints to the catalog at most
//!   every 10 ms. After a crash, only acknowledgements that arrived in the last interval and
//!   commit (about 10-15 ms) can be lost, and nothing unacknowledged is skipped. The offsets
//!   `GetSubscription` reports are answered only once they (and every ack applied before the
//!   request) are committed;
//! - **damage**: a shard whose next batch the store refuses as damaged or lost is *held*: its
//!   delivery stops there (nothing after an undelivered record is sent, so nothing is skipped
//!   on the server's own), the consumer that owned it sees its fetch stream end once with
//!   DATA_LOSS, and the hold is logged, counted in `/metrics` and listed by `GetSubscription`.
//!   Other shards go on. An operator releases it with [`SubHandle::skip_damaged`] (HTTP
//!   `POST /api/v1/subscriptions/{id}/skip-damaged`), which acknowledges exactly the
//!   unreadable batches for this subscription and resumes at the first readable one.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamcell_proto::api::{self, CompressionType, ErrorCode};
use streamcell_store::{now_ms, ReadLimits, Store, StoreError, StoredBatch, SubscriptionMeta};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::acks::AckState;
use crate::batch;
use crate::counters::{Metrics, ReadVia, StreamCounters, SubscriptionCounters};
use crate::error::{Result, ServiceError};
use crate::records::{received_record, timestamp};

/// Most payload bytes outstanding (sent, not acknowledged) per subscription.
const MAX_OUTSTANDING_BYTES: usize = 64 << 20;
/// Most payload bytes of one re-encoded (partial) batch sent to a consumer: under the 4 MiB
/// message limit of default gRPC clients, with room for the record ids.
const MAX_PARTIAL_BYTES: usize = 3 << 20;
/// Batches read from a shard at a time.
const READ_BATCHES: usize = 32;
/// Batches sent per delivery round before pending events are looked at again.
const ROUND_BATCHES: usize = 512;
/// How often ack deadlines are checked.
const TICK: Duration = Duration::from_millis(100);
/// Least time between two checkpoint commits. Acks that arrive meanwhile share the next
/// commit; a crash can lose (and so redeliver) at most the acks of this interval plus one
/// commit. Without it, steady acking costs an fdatasync per ack message.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(10);
/// How long the checkpointer waits before retrying a commit that failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Where a consumer's deliveries go.
pub type Outbox = mpsc::UnboundedSender<Result<api::StreamingFetchResponse>>;

/// A consumer as `ListConsumers` shows it.
#[derive(Debug, Clone)]
pub struct ConsumerInfo {
    /// Consumer name.
    pub name: String,
    /// Peer address.
    pub uri: String,
    /// The client's user agent.
    pub user_agent: String,
}

enum Event {
    Join {
        name: String,
        uri: String,
        agent: String,
        out: Outbox,
        reply: oneshot::Sender<Result<u64>>,
    },
    Leave {
        consumer: u64,
    },
    Acks {
        consumer: u64,
        ids: Vec<api::RecordId>,
    },
    Kick {
        consumer: u64,
        error: ServiceError,
    },
    Consumers {
        reply: oneshot::Sender<Vec<ConsumerInfo>>,
    },
    Offsets {
        reply: oneshot::Sender<Result<Vec<(u64, u64)>>>,
    },
    Delete {
        force: bool,
        reply: oneshot::Sender<Result<()>>,
    },
    SkipDamaged {
        shard: Option<u64>,
        reply: oneshot::Sender<Result<Vec<Skipped>>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A shard whose delivery stopped at data the store cannot serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldShard {
    /// The shard.
    pub shard: u64,
    /// The first batch it cannot deliver (nothing at or after it is sent).
    pub batch: u64,
    /// What the store reported.
    pub reason: String,
    /// When delivery stopped, in milliseconds since the Unix epoch.
    pub since_ms: i64,
}

/// Batches an operator skipped on one shard: `from..to` (`to` exclusive; equal when the
/// data was readable again and nothing had to be skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The shard.
    pub shard: u64,
    /// The first batch skipped.
    pub from: u64,
    /// Where delivery resumes.
    pub to: u64,
}

/// Held shards by shard id, written by the actor and read by `GetSubscription` and scrapes.
type HeldShards = Arc<Mutex<BTreeMap<u64, HeldShard>>>;

/// A handle on a running subscription.
#[derive(Clone)]
pub struct SubHandle {
    tx: mpsc::UnboundedSender<Event>,
    /// The subscription's definition.
    pub meta: Arc<SubscriptionMeta>,
    /// Its delivery counters (kept by its actor).
    pub counters: Arc<SubscriptionCounters>,
    held: HeldShards,
}

fn gone() -> ServiceError {
    ServiceError::Store(StoreError::ShuttingDown)
}

impl SubHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Event) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Registers a consumer; its deliveries go to `out`. Returns its id.
    pub async fn join(&self, name: String, uri: String, agent: String, out: Outbox) -> Result<u64> {
        self.ask(|reply| Event::Join {
            name,
            uri,
            agent,
            out,
            reply,
        })
        .await?
    }

    /// The consumer went away (end of its stream, cancel, or error).
    pub fn leave(&self, consumer: u64) {
        let _ = self.tx.send(Event::Leave { consumer });
    }

    /// Acknowledgements from a consumer.
    pub fn acks(&self, consumer: u64, ids: Vec<api::RecordId>) {
        let _ = self.tx.send(Event::Acks { consumer, ids });
    }

    /// Ends a consumer's stream with an error.
    pub fn kick(&self, consumer: u64, error: ServiceError) {
        let _ = self.tx.send(Event::Kick { consumer, error });
    }

    /// The consumers now attached.
    pub async fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        self.ask(|reply| Event::Consumers { reply }).await
    }

    /// Per shard, the first batch not completely acknowledged, answered once that progress
    /// (and every acknowledgement applied before the call) is durable.
    pub async fn offsets(&self) -> Result<Vec<(u64, u64)>> {
        self.ask(|reply| Event::Offsets { reply }).await?
    }

    /// The shards whose delivery is held at damaged data, by shard id.
    pub fn held(&self) -> Vec<HeldShard> {
        lock_held(&self.held).values().cloned().collect()
    }

    /// Releases held shards (all of them, or only `shard`): the batches the store cannot
    /// serve from the hold on are acknowledged for this subscription (their records are lost
    /// to it) and delivery resumes at the first readable batch after them. Returns what was
    /// skipped per shard, once that progress is durable.
    pub async fn skip_damaged(&self, shard: Option<u64>) -> Result<Vec<Skipped>> {
        self.ask(|reply| Event::SkipDamaged { shard, reply })
            .await?
    }
}

fn lock_held(held: &HeldShards) -> std::sync::MutexGuard<'_, BTreeMap<u64, HeldShard>> {
    held.lock().unwrap_or_else(|p| p.into_inner())
}

/// All subscriptions of the server.
pub struct Subscriptions {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    running: Mutex<HashMap<String, SubHandle>>,
    checkpointer: Checkpointer,
}

impl Subscriptions {
    /// Starts the checkpointer and an actor for every subscription in the catalog; records
    /// they deliver are counted in `metrics`.
    pub fn start(store: Arc<Store>, metrics: Arc<Metrics>) -> Result<Arc<Subscriptions>> {
        let subs = Arc::new(Subscriptions {
            checkpointer: Checkpointer::start(store.clone())?,
            store: store.clone(),
            metrics,
            running: Mutex::new(HashMap::new()),
        });
        for meta in store.catalog.list_subscriptions()? {
            let id = meta.id.clone();
            // One subscription that cannot start must not keep the server from starting.
            if let Err(e) = subs.spawn(meta) {
                tracing::error!(sub = %id, "cannot start subscription, it is not served: {e}");
            }
        }
        Ok(subs)
    }

    fn spawn(&self, meta: SubscriptionMeta) -> Result<SubHandle> {
        let checkpoints = self.store.catalog.load_checkpoints(&meta.id)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = SubHandle {
            tx,
            meta: Arc::new(meta.clone()),
            counters: Arc::default(),
            held: HeldShards::default(),
        };
        let counted = Counted {
            sub: handle.counters.clone(),
            stream: self.metrics.stream(&meta.stream),
            held: handle.held.clone(),
        };
        let actor = Actor::new(
            meta,
            self.store.clone(),
            rx,
            self.checkpointer.clone(),
            checkpoints,
            counted,
        )?;
        self.lock().insert(handle.meta.id.clone(), handle.clone());
        tokio::spawn(actor.run());
        Ok(handle)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SubHandle>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records and starts a new subscription (the caller has validated it).
    pub fn create(&self, meta: SubscriptionMeta) -> Result<SubHandle> {
        self.store.catalog.create_subscription(meta.clone())?;
        self.spawn(meta)
    }

    /// Every running subscription.
    pub fn list(&self) -> Vec<SubHandle> {
        self.lock().values().cloned().collect()
    }

    /// The running subscription `id`.
    pub fn get(&self, id: &str) -> Result<SubHandle> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| ServiceError::Store(StoreError::SubscriptionNotFound(id.to_string())))
    }

    /// Deletes a subscription: refused while consumers are attached unless `force`, in which
    /// case their streams end.
    pub async fn delete(&self, id: &str, force: bool) -> Result<()> {
        let handle = self.get(id)?;
        handle.ask(|reply| Event::Delete { force, reply }).await??;
        self.lock().remove(id);
        Ok(())
    }

    /// Makes every subscription's progress durable and stops the actors and the checkpointer.
    pub async fn shutdown(&self) {
        let handles: Vec<SubHandle> = self.lock().drain().map(|(_, h)| h).collect();
        for h in handles {
            let _ = h.ask(|reply| Event::Shutdown { reply }).await;
        }
        if !self.checkpointer.flush().await {
            tracing::error!("subscription progress could not be saved at shutdown; acknowledged records may be delivered again");
        }
    }
}

/// Writes subscription checkpoints to the catalog from its own thread, group-committing
/// whatever has accumulated while the previous commit ran.
#[derive(Clone)]
pub struct Checkpointer {
    tx: std_mpsc::Sender<CheckpointMsg>,
}

enum CheckpointMsg {
    Save(String, u64, Vec<u8>),
    Flush(oneshot::Sender<bool>),
}

impl Checkpointer {
    fn start(store: Arc<Store>) -> Result<Checkpointer> {
        let (tx, rx) = std_mpsc::channel::<CheckpointMsg>();
        std::thread::Builder::new()
            .name("checkpointer".into())
            .spawn(move || {
                let mut last_commit: Option<Instant> = None;
                // Checkpoints not yet committed (kept across a failed commit, and retried).
                let mut pending: HashMap<(String, u64), Vec<u8>> = HashMap::new();
                let mut flushes: Vec<oneshot::Sender<bool>> = Vec::new();
                loop {
                    let first = if pending.is_empty() {
                        match rx.recv() {
                            Ok(m) => Some(m),
                            Err(_) => return,
                        }
                    } else {
                        // A failed commit is retried after RETRY_AFTER_FAILURE.
                        match rx.recv_timeout(RETRY_AFTER_FAILURE) {
                            Ok(m) => Some(m),
                            Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    };
                    // Commits at most every CHECKPOINT_INTERVAL: what arrives meanwhile goes
                    // into the same transaction.
                    if let Some(wait) = last_commit
                        .map(|t| CHECKPOINT_INTERVAL.saturating_sub(t.elapsed()))
                        .filter(|w| !w.is_zero())
                    {
                        std::thread::sleep(wait);
                    }
                    let mut next = first.or_else(|| rx.try_recv().ok());
                    while let Some(msg) = next {
                        match msg {
                            CheckpointMsg::Save(sub, shard, state) => {
                                pending.insert((sub, shard), state);
                            }
                            CheckpointMsg::Flush(reply) => flushes.push(reply),
                        }
                        next = rx.try_recv().ok();
                    }
                    let ok = if pending.is_empty() {
                        true
                    } else {
                        let entries: Vec<(String, u64, Vec<u8>)> = std::mem::take(&mut pending)
                            .into_iter()
                            .map(|((s, sh), v)| (s, sh, v))
                            .collect();
                        last_commit = Some(Instant::now());
                        match store.catalog.save_checkpoints(&entries) {
                            Ok(()) => true,
                            Err(e) => {
                                // Kept for the retry (newer saves that arrive meanwhile win).
                                pending.extend(
                                    entries.into_iter().map(|(s, sh, v)| ((s, sh), v)),
                                );
                                tracing::error!(
                                    "saving subscription checkpoints failed: {e}; retrying in {RETRY_AFTER_FAILURE:?}"
                                );
                                false
                            }
                        }
                    };
                    for f in flushes.drain(..) {
                        let _ = f.send(ok);
                    }
                }
            })
            .map_err(|e| ServiceError::Store(StoreError::io("starting the checkpointer", e)))?;
        Ok(Checkpointer { tx })
    }

    fn save(&self, sub: &str, shard: u64, state: &AckState) {
        let _ = self
            .tx
            .send(CheckpointMsg::Save(sub.to_string(), shard, state.encode()));
    }

    /// Returns once everything saved before the call is committed: true if it is, false if
    /// the commit failed (it is retried) or the checkpointer is gone.
    pub async fn flush(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(CheckpointMsg::Flush(tx)).is_ok() {
            rx.await.unwrap_or(false)
        } else {
            false
        }
    }
}

struct Consumer {
    name: String,
    uri: String,
    agent: String,
    out: Outbox,
    shards: BTreeSet<u64>,
}

/// A delivered batch with records not yet acknowledged.
struct Sent {
    len: u32,
    unacked: BTreeSet<u32>,
    bytes: usize,
    deadline: Instant,
    owner: u64,
}

struct ShardCursor {
    owner: Option<u64>,
    /// The next batch to send (everything before it was sent or needs no delivery).
    next_read: u64,
    /// Batches read from the log but not yet sent (read-ahead, so that a window that opens
    /// one batch at a time does not re-read the log for each).
    ahead: VecDeque<StoredBatch>,
    tail: watch::Receiver<u64>,
    acks: AckState,
    outstanding: BTreeMap<u64, Sent>,
    /// After a read failed for a reason that may pass (I/O, a failed log): when to try again.
    retry_at: Option<Instant>,
    /// Set while reads keep failing (so the failure is logged once, not every second).
    failing: bool,
    /// The batch delivery is held at: the store refused it as damaged or lost.
    held: Option<u64>,
}

/// Where an actor counts what it does.
struct Counted {
    sub: Arc<SubscriptionCounters>,
    /// The stream's records-read counter (deliveries are reads).
    stream: Arc<StreamCounters>,
    /// Shards held at damaged data (published for `GetSubscription`).
    held: HeldShards,
}

struct Actor {
    meta: SubscriptionMeta,
    counted: Counted,
    store: Arc<Store>,
    rx: mpsc::UnboundedReceiver<Event>,
    wake: Arc<Notify>,
    stop_watchers: watch::Sender<()>,
    checkpointer: Checkpointer,
    consumers: BTreeMap<u64, Consumer>,
    next_consumer: u64,
    shards: BTreeMap<u64, ShardCursor>,
    outstanding_records: usize,
    outstanding_bytes: usize,
    ack_timeout: Duration,
    max_unacked: usize,
    rotate: usize,
}

enum Flow {
    Continue,
    Stop,
}

impl Actor {
    fn new(
        meta: SubscriptionMeta,
        store: Arc<Store>,
        rx: mpsc::UnboundedReceiver<Event>,
        checkpointer: Checkpointer,
        checkpoints: Vec<(u64, Vec<u8>)>,
        counted: Counted,
    ) -> Result<Actor> {
        let saved: HashMap<u64, Vec<u8>> = checkpoints.into_iter().collect();
        let wake = Arc::new(Notify::new());
        let (stop_watchers, _) = watch::channel(());
        let mut shards = BTreeMap::new();
        for &(shard, start) in &meta.shards {
            let acks = match saved.get(&shard).map(|b| AckState::decode(b)) {
                Some(Ok(a)) => a,
                Some(Err(e)) => {
                    // Never skip records: a damaged checkpoint restarts from the beginning of
                    // the subscription (records may be delivered again).
                    tracing::error!(sub = %meta.id, shard, "damaged checkpoint ({e}); delivering from the subscription's start");
                    AckState::starting_at(start)
                }
                None => AckState::starting_at(start),
            };
            let tail = store.log.watch_tail(shard)?;
            let mut forward = tail.clone();
            let mut stop = stop_watchers.subscribe();
            let w = wake.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        changed = forward.changed() => {
                            if changed.is_err() { return; }
                            w.notify_one();
                        }
                        _ = stop.changed() => return,
                    }
                }
            });
            shards.insert(
                shard,
                ShardCursor {
                    owner: None,
                    next_read: acks.frontier().0,
                    ahead: VecDeque::new(),
                    tail,
                    acks,
                    outstanding: BTreeMap::new(),
                    retry_at: None,
                    failing: false,
                    held: None,
                },
            );
        }
        Ok(Actor {
            ack_timeout: Duration::from_secs(u64::from(meta.ack_timeout_secs.max(1))),
            max_unacked: meta.max_unacked.max(1) as usize,
            meta,
            counted,
            store,
            rx,
            wake,
            stop_watchers,
            checkpointer,
            consumers: BTreeMap::new(),
            next_consumer: 1,
            shards,
            outstanding_records: 0,
            outstanding_bytes: 0,
            rotate: 0,
        })
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let more = self.deliver().await;
            self.publish_gauges();
            if more {
                // More to send: take pending events without waiting, then deliver again.
                while let Ok(ev) = self.rx.try_recv() {
                    if let Flow::Stop = self.handle(ev).await {
                        return self.stop();
                    }
                }
                tokio::task::yield_now().await;
                continue;
            }
            let wake = self.wake.clone();
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Some(ev) => if let Flow::Stop = self.handle(ev).await { return self.stop(); },
                    None => return self.stop(),
                },
                () = wake.notified() => {}
                _ = tick.tick() => self.expire().await,
            }
            self.publish_gauges();
        }
    }

    /// Publishes the gauges a scrape reads (outstanding records, consumers).
    fn publish_gauges(&self) {
        let c = &self.counted.sub;
        c.unacked
            .store(self.outstanding_records as u64, Ordering::Relaxed);
        c.consumers
            .store(self.consumers.len() as u64, Ordering::Relaxed);
    }

    fn stop(self) {
        let _ = self.stop_watchers.send(());
    }

    async fn handle(&mut self, ev: Event) -> Flow {
        match ev {
            Event::Join {
                name,
                uri,
                agent,
                out,
                reply,
            } => {
                let r = self.join(name, uri, agent, out);
                let _ = reply.send(r);
            }
            Event::Leave { consumer } => {
                self.leave(consumer);
                self.expire().await;
            }
            Event::Acks { consumer, ids } => self.on_acks(consumer, ids),
            Event::Kick { consumer, error } => {
                self.kick(consumer, error);
                self.expire().await;
            }
            Event::Consumers { reply } => {
                self.forget_closed_consumers();
                let _ = reply.send(
                    self.consumers
                        .values()
                        .map(|c| ConsumerInfo {
                            name: c.name.clone(),
                            uri: c.uri.clone(),
                            user_agent: c.agent.clone(),
                        })
                        .collect(),
                );
            }
            Event::Offsets { reply } => {
                // Answered once the state they describe is committed: every acknowledgement
                // applied before this request survives a crash once the caller sees it.
                let offsets: Vec<(u64, u64)> = self
                    .shards
                    .iter()
                    .map(|(&s, c)| (s, c.acks.frontier().0))
                    .collect();
                let checkpointer = self.checkpointer.clone();
                let sub = self.meta.id.clone();
                tokio::spawn(async move {
                    let r = if checkpointer.flush().await {
                        Ok(offsets)
                    } else {
                        Err(ServiceError::Store(StoreError::Catalog(format!(
                            "the progress of subscription {sub:?} cannot be saved now (see the server log)"
                        ))))
                    };
                    let _ = reply.send(r);
                });
            }
            Event::Delete { force, reply } => {
                self.forget_closed_consumers();
                if !self.consumers.is_empty() && !force {
                    let _ = reply.send(Err(ServiceError::Precondition {
                        code: ErrorCode::SubscriptionFoundActiveConsumers,
                        message: format!(
                            "subscription {:?} has {} active consumer(s); delete with force to end them",
                            self.meta.id,
                            self.consumers.len()
                        ),
                    }));
                    return Flow::Continue;
                }
                let r = self.delete().await;
                let ok = r.is_ok();
                let _ = reply.send(r);
                if ok {
                    return Flow::Stop;
                }
            }
            Event::SkipDamaged { shard, reply } => {
                let r = self.skip_damaged(shard).await;
                let checkpointer = self.checkpointer.clone();
                let sub = self.meta.id.clone();
                tokio::spawn(async move {
                    // Answered once the skip is durable, so that a crash cannot undo it.
                    let r = match r {
                        Ok(skipped) if !skipped.is_empty() && !checkpointer.flush().await => {
                            Err(ServiceError::Store(StoreError::Catalog(format!(
                                "the progress of subscription {sub:?} cannot be saved now (see the server log)"
                            ))))
                        }
                        r => r,
                    };
                    let _ = reply.send(r);
                });
            }
            Event::Shutdown { reply } => {
                for (&shard, c) in &self.shards {
                    self.checkpointer.save(&self.meta.id, shard, &c.acks);
                }
                for c in self.consumers.values() {
                    let _ = c.out.send(Err(ServiceError::shutting_down()));
                }
                let _ = reply.send(());
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    async fn delete(&mut self) -> Result<()> {
        let id = self.meta.id.clone();
        let store = self.store.clone();
        let archived = tokio::task::spawn_blocking(move || store.catalog.delete_subscription(&id))
            .await
            .map_err(|_| gone())??;
        for c in std::mem::take(&mut self.consumers).into_values() {
            let _ = c.out.send(Err(ServiceError::Cancelled(format!(
                "subscription {:?} was deleted",
                self.meta.id
            ))));
        }
        if let Some(stream) = archived {
            // The last subscription of a force-deleted stream is gone: free its logs.
            for shard in stream.shards {
                if let Err(e) = self.store.log.remove_shard(shard).await {
                    tracing::warn!(shard, "removing an archived shard: {e}");
                }
            }
        }
        tracing::info!(sub = %self.meta.id, "deleted subscription");
        Ok(())
    }

    fn join(&mut self, name: String, uri: String, agent: String, out: Outbox) -> Result<u64> {
        if self.consumers.values().any(|c| c.name == name) {
            return Err(ServiceError::Exists {
                code: ErrorCode::InternalError,
                message: format!(
                    "consumer {name:?} is already attached to subscription {:?}",
                    self.meta.id
                ),
            });
        }
        let id = self.next_consumer;
        self.next_consumer += 1;
        self.consumers.insert(
            id,
            Consumer {
                name: name.clone(),
                uri,
                agent,
                out,
                shards: BTreeSet::new(),
            },
        );
        // Free shards first, then take from the busiest until the load is even.
        let free: Vec<u64> = self
            .shards
            .iter()
            .filter(|(_, c)| c.owner.is_none())
            .map(|(&s, _)| s)
            .collect();
        for s in free {
            self.assign_to_least_loaded(s);
        }
        loop {
            let mine = self.consumers.get(&id).map_or(0, |c| c.shards.len());
            let busiest = self
                .consumers
                .iter()
                .max_by_key(|(cid, c)| (c.shards.len(), std::cmp::Reverse(**cid)))
                .map(|(&cid, c)| (cid, c.shards.len()));
            match busiest {
                Some((cid, n)) if cid != id && n >= mine + 2 => {
                    let moved = self
                        .consumers
                        .get_mut(&cid)
                        .and_then(|c| c.shards.pop_last());
                    if let Some(shard) = moved {
                        self.give(shard, id);
                    }
                }
                _ => break,
            }
        }
        tracing::info!(sub = %self.meta.id, consumer = %name, shards = ?self.consumers.get(&id).map(|c| &c.shards), "consumer joined");
        Ok(id)
    }

    fn give(&mut self, shard: u64, consumer: u64) {
        if let Some(c) = self.consumers.get_mut(&consumer) {
            c.shards.insert(shard);
        }
        if let Some(s) = self.shards.get_mut(&shard) {
            s.owner = Some(consumer);
        }
    }

    fn assign_to_least_loaded(&mut self, shard: u64) {
        let target = self
            .consumers
            .iter()
            .min_by_key(|(cid, c)| (c.shards.len(), **cid))
            .map(|(&cid, _)| cid);
        match target {
            Some(cid) => self.give(shard, cid),
            None => {
                if let Some(s) = self.shards.get_mut(&shard) {
                    s.owner = None;
                }
            }
        }
    }

    fn leave(&mut self, consumer: u64) {
        let Some(c) = self.consumers.remove(&consumer) else {
            return;
        };
        let now = Instant::now();
        for shard in self.shards.values_mut() {
            // Its unacknowledged records go to the shard's next owner right away.
            for sent in shard.outstanding.values_mut() {
                if sent.owner == consumer {
                    sent.deadline = now;
                }
            }
        }
        for shard in c.shards {
            self.assign_to_least_loaded(shard);
        }
        tracing::info!(sub = %self.meta.id, consumer = %c.name, "consumer left");
    }

    /// Removes consumers whose fetch stream the client has already closed (their leave
    /// event may still be on its way).
    fn forget_closed_consumers(&mut self) {
        let closed: Vec<u64> = self
            .consumers
            .iter()
            .filter(|(_, c)| c.out.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in closed {
            self.leave(id);
        }
    }

    fn kick(&mut self, consumer: u64, error: ServiceError) {
        if let Some(c) = self.consumers.get(&consumer) {
            tracing::warn!(sub = %self.meta.id, consumer = %c.name, "ending consumer: {error}");
            let _ = c.out.send(Err(error));
        }
        self.leave(consumer);
    }

    fn on_acks(&mut self, consumer: u64, ids: Vec<api::RecordId>) {
        if !self.consumers.contains_key(&consumer) {
            return;
        }
        let mut dirty = BTreeSet::new();
        for id in ids {
            if let Err(problem) = self.ack_one(&id) {
                let error = ServiceError::invalid(
                    ErrorCode::SubscriptionInvalidObjectIdentifier,
                    format!(
                        "bad acknowledgement {}-{}-{} for subscription {:?}: {problem}",
                        id.shard_id, id.batch_id, id.batch_index, self.meta.id
                    ),
                );
                self.kick(consumer, error);
                break;
            }
            dirty.insert(id.shard_id);
        }
        for shard in dirty {
            if let Some(c) = self.shards.get(&shard) {
                self.checkpointer.save(&self.meta.id, shard, &c.acks);
            }
        }
    }

    fn ack_one(&mut self, id: &api::RecordId) -> Result<(), String> {
        let Some(cur) = self.shards.get_mut(&id.shard_id) else {
            return Err(format!(
                "the subscription does not read shard {}",
                id.shard_id
            ));
        };
        if id.batch_id >= cur.next_read && !cur.acks.is_acked((id.batch_id, id.batch_index)) {
            return Err("that record was never delivered".into());
        }
        if let Some(sent) = cur.outstanding.get_mut(&id.batch_id) {
            if id.batch_index >= sent.len {
                return Err(format!(
                    "batch {} holds only {} records",
                    id.batch_id, sent.len
                ));
            }
            if sent.unacked.remove(&id.batch_index) {
                self.outstanding_records -= 1;
                self.counted.sub.acked.fetch_add(1, Ordering::Relaxed);
                cur.acks.ack(id.batch_id, id.batch_index, sent.len);
            }
            if sent.unacked.is_empty() {
                self.outstanding_bytes -= sent.bytes;
                cur.outstanding.remove(&id.batch_id);
            }
            return Ok(());
        }
        if cur.acks.is_acked((id.batch_id, id.batch_index)) {
            return Ok(()); // a duplicate (e.g. of a redelivered record): harmless
        }
        Err("that record was never delivered".into())
    }

    fn room(&self) -> bool {
        self.outstanding_records < self.max_unacked
            && self.outstanding_bytes < MAX_OUTSTANDING_BYTES
    }

    /// Sends what owned shards have and the limits allow. Returns true if it stopped with
    /// more to send.
    async fn deliver(&mut self) -> bool {
        let mut sent_batches = 0usize;
        let ids: Vec<u64> = self.shards.keys().copied().collect();
        if ids.is_empty() {
            return false;
        }
        let mut idle_rounds = 0;
        while idle_rounds < ids.len() {
            if !self.room() || sent_batches >= ROUND_BATCHES {
                return self.room();
            }
            self.rotate = (self.rotate + 1) % ids.len();
            let shard = ids[self.rotate];
            let n = self.deliver_shard(shard).await;
            if n == 0 {
                idle_rounds += 1;
            } else {
                idle_rounds = 0;
                sent_batches += n;
            }
        }
        false
    }

    /// Sends the next batches of one shard, reading ahead from the log when its buffer is
    /// empty; returns how many batches were read or sent (0: no progress possible now).
    async fn deliver_shard(&mut self, shard: u64) -> usize {
        let Some(cur) = self.shards.get(&shard) else {
            return 0;
        };
        let Some(owner) = cur.owner else { return 0 };
        if cur.held.is_some() || cur.retry_at.is_some_and(|t| Instant::now() < t) {
            return 0;
        }
        let mut read_n = 0;
        if cur.ahead.is_empty() {
            let from = cur.next_read;
            if from > *cur.tail.borrow() || !self.room() {
                return 0;
            }
            let store = self.store.clone();
            let read = tokio::task::spawn_blocking(move || {
                store.log.read(
                    shard,
                    from,
                    ReadLimits {
                        max_batches: READ_BATCHES,
                        max_bytes: 1 << 20,
                    },
                )
            })
            .await;
            let batches = match read {
                Ok(Ok(b)) => b,
                Ok(Err(e @ StoreError::Corrupt { .. })) => {
                    self.hold(shard, from, e.to_string());
                    return 0;
                }
                Ok(Err(e)) => {
                    if let Some(c) = self.shards.get_mut(&shard) {
                        if !c.failing {
                            tracing::error!(sub = %self.meta.id, shard, "cannot read batch {from}: {e}; retrying every second");
                        }
                        c.failing = true;
                        c.retry_at = Some(Instant::now() + Duration::from_secs(1));
                    }
                    return 0;
                }
                Err(_) => return 0,
            };
            if let Some(c) = self.shards.get_mut(&shard) {
                if c.failing {
                    tracing::info!(sub = %self.meta.id, shard, "reads of the shard work again");
                    c.failing = false;
                }
            }
            read_n = batches.len();
            if let Some(c) = self.shards.get_mut(&shard) {
                c.ahead.extend(batches);
            }
        }
        let mut sent = 0;
        while self.room() {
            let (b, unacked) = {
                let Some(cur) = self.shards.get_mut(&shard) else {
                    break;
                };
                let Some(b) = cur.ahead.pop_front() else {
                    break;
                };
                if b.seq < cur.next_read {
                    continue; // already handled
                }
                if b.seq > cur.next_read {
                    // Batches in between were trimmed or expired: nothing to deliver there.
                    cur.acks.ack_batches(cur.next_read, b.seq);
                }
                cur.next_read = b.seq + 1;
                let unacked: Vec<u32> = (0..b.record_count)
                    .filter(|&i| !cur.acks.is_acked((b.seq, i)))
                    .collect();
                (b, unacked)
            };
            if unacked.is_empty() {
                continue;
            }
            match self.send(owner, shard, &b, &unacked) {
                Ok(bytes) => {
                    sent += 1;
                    let cur = self.shards.get_mut(&shard).expect_shard();
                    self.outstanding_records += unacked.len();
                    self.outstanding_bytes += bytes;
                    cur.outstanding.insert(
                        b.seq,
                        Sent {
                            len: b.record_count,
                            unacked: unacked.into_iter().collect(),
                            bytes,
                            deadline: Instant::now() + self.ack_timeout,
                            owner,
                        },
                    );
                }
                Err(()) => {
                    // The owner is gone: this batch goes to the shard's next owner.
                    if let Some(cur) = self.shards.get_mut(&shard) {
                        cur.next_read = b.seq;
                        cur.ahead.push_front(b);
                    }
                    self.leave(owner);
                    break;
                }
            }
        }
        read_n.max(sent)
    }

    /// Stops delivery of `shard` at batch `from`, which the store refused as damaged or lost,
    /// and tells the consumer that owns it (its fetch stream ends with DATA_LOSS; it may join
    /// again and goes on receiving the other shards).
    fn hold(&mut self, shard: u64, from: u64, reason: String) {
        let id = self.meta.id.clone();
        let Some(cur) = self.shards.get_mut(&shard) else {
            return;
        };
        cur.held = Some(from);
        cur.ahead.clear();
        let owner = cur.owner;
        let message = format!(
            "subscription {id:?} cannot deliver batch {from} of shard {shard} ({reason}); \
             delivery of that shard is held there, other shards go on. Restore the data, or \
             accept the loss with POST /api/v1/subscriptions/{id}/skip-damaged"
        );
        tracing::error!(sub = %id, shard, batch = from, "DATA LOSS: {message}");
        self.counted.sub.holds.fetch_add(1, Ordering::Relaxed);
        let mut held = lock_held(&self.counted.held);
        held.insert(
            shard,
            HeldShard {
                shard,
                batch: from,
                reason,
                since_ms: now_ms(),
            },
        );
        self.counted
            .sub
            .held_shards
            .store(held.len() as u64, Ordering::Relaxed);
        drop(held);
        if let Some(owner) = owner {
            self.kick(owner, ServiceError::DataLoss(message));
        }
    }

    /// Releases held shards (every one, or only `only`): acknowledges, for this subscription,
    /// the batches from the hold up to the first one the store can read, and resumes there.
    async fn skip_damaged(&mut self, only: Option<u64>) -> Result<Vec<Skipped>> {
        if let Some(s) = only {
            if !self.shards.contains_key(&s) {
                return Err(ServiceError::invalid(
                    ErrorCode::SubscriptionInvalidObjectIdentifier,
                    format!("subscription {:?} does not read shard {s}", self.meta.id),
                ));
            }
        }
        let held: Vec<(u64, u64)> = self
            .shards
            .iter()
            .filter(|(s, _)| only.is_none_or(|o| o == **s))
            .filter_map(|(&s, c)| c.held.map(|from| (s, from)))
            .collect();
        let mut skipped = Vec::new();
        for (shard, from) in held {
            let store = self.store.clone();
            let to = tokio::task::spawn_blocking(move || first_readable(&store, shard, from))
                .await
                .map_err(|_| gone())??;
            let Some(cur) = self.shards.get_mut(&shard) else {
                continue;
            };
            cur.acks.ack_batches(from, to);
            cur.next_read = to;
            cur.ahead.clear();
            cur.held = None;
            self.checkpointer.save(&self.meta.id, shard, &cur.acks);
            let mut held = lock_held(&self.counted.held);
            held.remove(&shard);
            self.counted
                .sub
                .held_shards
                .store(held.len() as u64, Ordering::Relaxed);
            drop(held);
            self.counted
                .sub
                .skipped_batches
                .fetch_add(to - from, Ordering::Relaxed);
            tracing::warn!(sub = %self.meta.id, shard, "operator skipped damaged batches {from}..{to} (exclusive); delivery resumes at {to}");
            skipped.push(Skipped { shard, from, to });
        }
        Ok(skipped)
    }

    /// Sends the records `unacked` of batch `b` to consumer `to`; returns the bytes sent.
    /// The whole stored batch goes as it is; part of one is re-encoded with the batch's own
    /// compression, in as many messages as the clients' 4 MiB limit needs.
    fn send(&self, to: u64, shard: u64, b: &StoredBatch, unacked: &[u32]) -> Result<usize, ()> {
        let Some(c) = self.consumers.get(&to) else {
            return Err(());
        };
        let records = if unacked.len() == b.record_count as usize {
            vec![received_record(shard, b)]
        } else {
            let compression =
                CompressionType::try_from(i32::from(b.flags)).unwrap_or(CompressionType::None);
            match batch::subset_batches(&b.payload, compression, unacked, MAX_PARTIAL_BYTES) {
                Ok(parts) => parts
                    .into_iter()
                    .map(|(idx, payload)| api::ReceivedRecord {
                        record_ids: idx
                            .iter()
                            .map(|&i| api::RecordId {
                                shard_id: shard,
                                batch_id: b.seq,
                                batch_index: i,
                            })
                            .collect(),
                        record: Some(api::BatchedRecord {
                            compression_type: compression as i32,
                            publish_time: Some(timestamp(b.timestamp_ms)),
                            batch_size: idx.len() as u32,
                            payload,
                        }),
                    })
                    .collect(),
                Err(e) => {
                    tracing::error!(sub = %self.meta.id, shard, seq = b.seq, "cannot re-encode batch for redelivery: {e}");
                    return Ok(0);
                }
            }
        };
        let mut bytes = 0;
        for record in records {
            bytes += record.record.as_ref().map_or(0, |r| r.payload.len());
            let n = record.record_ids.len() as u64;
            c.out
                .send(Ok(api::StreamingFetchResponse {
                    received_records: Some(record),
                }))
                .map_err(|_| ())?;
            self.counted.sub.delivered.fetch_add(n, Ordering::Relaxed);
            self.counted.stream.read(ReadVia::Subscription, n);
        }
        Ok(bytes)
    }

    /// Sends again the records whose acknowledgement deadline passed.
    async fn expire(&mut self) {
        let now = Instant::now();
        let due: Vec<(u64, u64)> = self
            .shards
            .iter()
            .filter(|(_, c)| c.owner.is_some())
            .flat_map(|(&s, c)| {
                c.outstanding
                    .iter()
                    .filter(|(_, sent)| sent.deadline <= now)
                    .map(move |(&seq, _)| (s, seq))
            })
            .collect();
        for (shard, seq) in due {
            let store = self.store.clone();
            let read = tokio::task::spawn_blocking(move || {
                store.log.read(shard, seq, ReadLimits::batches(1))
            })
            .await;
            let Some(cur) = self.shards.get_mut(&shard) else {
                continue;
            };
            let Some(owner) = cur.owner else { continue };
            let batch = match read {
                Ok(Ok(mut v)) if v.first().is_some_and(|b| b.seq == seq) => v.remove(0),
                Ok(Ok(_)) => {
                    // Trimmed or expired since it was sent: nothing left to deliver.
                    if let Some(sent) = cur.outstanding.remove(&seq) {
                        for i in &sent.unacked {
                            cur.acks.ack(seq, *i, sent.len);
                        }
                        self.outstanding_records -= sent.unacked.len();
                        self.outstanding_bytes -= sent.bytes;
                    }
                    continue;
                }
                _ => continue,
            };
            let unacked: Vec<u32> = cur
                .outstanding
                .get(&seq)
                .map(|s| s.unacked.iter().copied().collect())
                .unwrap_or_default();
            if unacked.is_empty() {
                continue;
            }
            if self.send(owner, shard, &batch, &unacked).is_err() {
                self.leave(owner);
                continue;
            }
            self.counted
                .sub
                .redelivered
                .fetch_add(unacked.len() as u64, Ordering::Relaxed);
            if let Some(sent) = self
                .shards
                .get_mut(&shard)
                .and_then(|c| c.outstanding.get_mut(&seq))
            {
                sent.deadline = now + self.ack_timeout;
                sent.owner = owner;
            }
        }
    }
}

/// The first batch at or after `from` that the store serves (or the next one to be written):
/// steps over the ranges the store knows to be unreadable and probes one batch at a time
/// where damage was found only by reading.
fn first_readable(store: &Store, shard: u64, from: u64) -> Result<u64, StoreError> {
    let damage = store.log.damage(shard)?;
    let end = store.log.bounds(shard)?.next_seq;
    let mut seq = from;
    while seq < end {
        if let Some(&(_, last)) = damage
            .unreadable
            .iter()
            .find(|&&(a, b)| a <= seq && seq <= b)
        {
            seq = last + 1;
            continue;
        }
        match store.log.read(shard, seq, ReadLimits::batches(1)) {
            Ok(_) => return Ok(seq),
            Err(StoreError::Corrupt { .. }) => seq += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(seq)
}

trait ExpectShard<T> {
    fn expect_shard(self) -> T;
}

impl<T> ExpectShard<T> for Option<T> {
    #[allow(clippy::panic)]
    fn expect_shard(self) -> T {
        match self {
            Some(t) => t,
            None => panic!("subscription shard vanished while the actor held it"),
        }
    }
}
