//! A model-based test of the shard log on a file system that loses what was not synced and fails
//! chosen operations (`tests/fault_fs`: the page cache and the disk kept apart, crashes that
//! keep a random prefix of the unsynced changes, fsyncgate-style `fdatasync` failures, short
//! writes, ENOSPC, EMFILE).
//!
//! Random sequences of appends (one to four at once, sizes from empty to larger than a segment),
//! reads, trims, retention (a fake clock), clean restarts, process kills, power losses and armed
//! faults run against a `LocalLog` under each sync policy, and after every step everything the
//! shard serves is compared with a model: the acknowledged batches by sequence number, and the
//! appends that failed (in doubt: `docs/storage-format.md` §8 says why they may reappear). The
//! properties, as the store promises them:
//! - every batch acknowledged under `always`, and every batch acknowledged before a clean
//!   shutdown of a healthy shard under any policy, survives a power loss byte for byte at its
//!   sequence number;
//! - nothing is served that was not appended, or at another sequence number, or torn;
//! - without a power loss nothing acknowledged disappears; after one, only batches that were
//!   not promised durable may be gone, and their sequence numbers are reused only if no record
//!   of them survived;
//! - a sequence number that is served, or reported lost, is never handed out again;
//! - after a failed `fdatasync` nothing is pretended: an append whose round's `fdatasync` failed
//!   is not acknowledged (under `always` it would have to survive the next power loss), and a
//!   clean shutdown after the shard recovered (in place, or at the next start) must again make
//!   everything acknowledged durable, also what was acknowledged before the failure;
//! - opening the same files twice gives the same answers.
//!
//! The cases come from a fixed seed (deterministic); a failure prints the shrunk case. Set
//! `FAULT_MODEL_CASES` to run more cases, `FAULT_MODEL_SEED` for other ones, and `FAULT_FS_TRACE=1`
//! to see every file operation.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

mod fault_fs;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use fault_fs::{Death, Effect, Fault, FaultFs, FsOp, Keep, Target};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use streamcell_store::{
    Appended, CatalogShards, LocalLog, LogEnv, LogOptions, NewBatch, ReadLimits, ShardBounds,
    ShardLog, StoreError, StoredBatch, SyncPolicy,
};

const SHARD: u64 = 1;
/// The fake clock starts here (ms since the epoch).
const T0: i64 = 1_700_000_000_000;

fn root() -> PathBuf {
    PathBuf::from("/data/shards")
}

// ---- the cases ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Always,
    Never,
    /// `interval`, with a period longer than a case runs: background syncs at a time the test
    /// does not control would make the cases nondeterministic. Its `sync_all` still runs at every
    /// clean shutdown, and acknowledgement without sync is what `interval` shares with `never`.
    Interval,
}

#[derive(Debug, Clone)]
enum Op {
    /// Appends batches of these payload sizes at once (one group-commit round, or a few).
    Append(Vec<usize>),
    /// Reads from this far into the readable range (percent), with faults armed.
    Read(u8),
    /// Trims up to this far into the readable range (percent).
    Trim(u8),
    /// Moves the clock on by this many seconds and applies retention.
    Expire(u32),
    /// Clean shutdown, then a restart.
    Close,
    /// The process dies (the page cache survives), then a restart.
    Kill,
    /// The machine loses power, then a restart.
    Crash(Keep),
    /// Arms a fault.
    Fault(Fault),
    /// The process dies, or the power fails, at its n-th file operation from now.
    Die(u32, Death),
}

#[derive(Debug, Clone)]
struct Case {
    policy: Policy,
    /// `ACKED` is synced after every round (else only at shutdown and recovery).
    marker_sync: bool,
    segment_bytes: u64,
    backlog_secs: u32,
    seed: u64,
    ops: Vec<Op>,
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 0usize..40,
        3 => 40usize..400,
        1 => 400usize..3000,
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    let effect = prop_oneof![
        Just(Effect::Io),
        Just(Effect::NoSpace),
        Just(Effect::TooManyFiles),
        Just(Effect::Short),
    ];
    let op = prop_oneof![
        4 => Just(FsOp::Sync),
        4 => Just(FsOp::Write),
        2 => Just(FsOp::SyncDir),
        2 => Just(FsOp::Open),
        1 => Just(FsOp::Rename),
        1 => Just(FsOp::SetLen),
        1 => Just(FsOp::Read),
        1 => Just(FsOp::Remove),
        1 => Just(FsOp::ReadDir),
    ];
    let target = prop_oneof![
        3 => Just(Target::Segment),
        2 => Just(Target::Marker),
        2 => Just(Target::Any),
        1 => Just(Target::Index),
        1 => Just(Target::Tmp),
        1 => Just(Target::Trim),
        1 => Just(Target::Dir),
    ];
    let times = prop_oneof![4 => 1u32..3, 1 => 3u32..20];
    (op, target, 0u32..4, times, effect).prop_map(|(op, target, skip, times, effect)| {
        // A directory operation on a file target never matches: aim it at directories.
        let target = match op {
            FsOp::SyncDir | FsOp::ReadDir => Target::Dir,
            _ => target,
        };
        Fault {
            op,
            target,
            skip,
            times,
            effect,
        }
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => prop::collection::vec(size(), 1..=4).prop_map(Op::Append),
        2 => (0u8..=100).prop_map(Op::Read),
        1 => (0u8..=100).prop_map(Op::Trim),
        1 => (1u32..30).prop_map(Op::Expire),
        1 => Just(Op::Close),
        1 => Just(Op::Kill),
        1 => Just(Op::Crash(Keep::Nothing)),
        2 => Just(Op::Crash(Keep::RandomPrefix)),
        4 => fault().prop_map(Op::Fault),
        2 => (
            0u32..40,
            prop_oneof![
                Just(Death::Kill),
                Just(Death::PowerLoss(Keep::Nothing)),
                Just(Death::PowerLoss(Keep::RandomPrefix)),
            ]
        )
            .prop_map(|(n, how)| Op::Die(n, how)),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let policy = prop_oneof![
        3 => Just(Policy::Always),
        2 => Just(Policy::Never),
        1 => Just(Policy::Interval),
    ];
    (
        policy,
        any::<bool>(),
        prop_oneof![Just(256u64), Just(700), Just(2048), Just(64 << 10)],
        prop_oneof![3 => Just(0u32), 1 => Just(10u32)],
        any::<u64>(),
        prop::collection::vec(op(), 1..45),
    )
        .prop_map(
            |(policy, marker_sync, segment_bytes, backlog_secs, seed, ops)| Case {
                policy,
                marker_sync,
                segment_bytes,
                backlog_secs,
                seed,
                ops,
            },
        )
}

// ---- what the cases did -------------------------------------------------------------------

/// Counts over all cases run (printed at the end; `--nocapture` shows them).
#[derive(Default)]
struct Stats {
    cases: AtomicU64,
    steps: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    faults_fired: AtomicU64,
    power_losses: AtomicU64,
    kills: AtomicU64,
    clean_shutdowns: AtomicU64,
    starts_not_serving: AtomicU64,
    deaths: AtomicU64,
    durable_checked: AtomicU64,
    lost_reported: AtomicU64,
    vanished: AtomicU64,
    in_doubt_served: AtomicU64,
}

static STATS: Stats = Stats {
    cases: AtomicU64::new(0),
    steps: AtomicU64::new(0),
    acked: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    faults_fired: AtomicU64::new(0),
    power_losses: AtomicU64::new(0),
    kills: AtomicU64::new(0),
    clean_shutdowns: AtomicU64::new(0),
    starts_not_serving: AtomicU64::new(0),
    deaths: AtomicU64::new(0),
    durable_checked: AtomicU64::new(0),
    lost_reported: AtomicU64::new(0),
    vanished: AtomicU64::new(0),
    in_doubt_served: AtomicU64::new(0),
};

fn count(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

// ---- the model ---------------------------------------------------------------------------

/// What an append carried.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Batch {
    payload: Bytes,
    record_count: u32,
    flags: u16,
}

impl Batch {
    fn of(b: &StoredBatch) -> Batch {
        Batch {
            payload: b.payload.clone(),
            record_count: b.record_count,
            flags: b.flags,
        }
    }
}

/// A batch the model expects at a sequence number.
#[derive(Debug, Clone)]
struct Entry {
    batch: Batch,
    ts: i64,
    /// Acknowledged to its appender (false: an append that failed and was served later).
    acked: bool,
    /// The store promised it survives a power loss.
    durable: bool,
    /// Not durable and a power loss came since: it may be gone.
    at_risk: bool,
    /// Reported lost (reads of it fail).
    lost: bool,
    /// Not durable when a process stopped that did not leave its `RESYNC` note after a fault
    /// (creating it failed, or the process died first): if the shard had failed in an
    /// `fdatasync`, no later process knows which pages the kernel dropped
    /// (`docs/storage-format.md` §3.3). No clean shutdown promises it; a power loss settles it.
    suspect: bool,
}

#[derive(Debug, Default)]
struct Model {
    entries: BTreeMap<u64, Entry>,
    /// Appends that failed, by payload (payloads are unique): they may show up later.
    in_doubt: HashMap<Bytes, Batch>,
    /// The readable range starts at least here (trims that succeeded).
    trim_floor: u64,
    /// Batches below this may be trimmed (every trim tried, also those that failed).
    trim_upper: u64,
    /// Batches published before this may be removed by retention.
    expire_before: i64,
}

/// What the store answers, read with faults suspended.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    bounds: ShardBounds,
    unreadable: Vec<(u64, u64)>,
    served: Vec<StoredBatch>,
}

struct Harness {
    fs: FaultFs,
    clock: Arc<AtomicI64>,
    opts: LogOptions,
    backlog: u32,
    policy: Policy,
    marker_sync: bool,
    log: Option<Arc<LocalLog>>,
    model: Model,
    next_id: u64,
    /// The fired-fault count after the last append step in which every append was acknowledged
    /// and no fault fired: if it is still the count at a clean shutdown, the shard was healthy.
    healthy_at: Option<usize>,
    /// The fired-fault count when the running process started.
    fired_at_start: usize,
    /// The file system's process number when the running process started.
    epoch_seen: u64,
    /// What happened, for failure messages.
    steps: Vec<String>,
}

type Check = Result<(), TestCaseError>;

macro_rules! ensure {
    ($h:expr, $cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err($h.fail(format!($($fmt)*)));
        }
    };
}

impl Harness {
    fn new(case: &Case) -> Harness {
        let fs = FaultFs::new(case.seed);
        fs.mkdir_durable(Path::new("/data"));
        let sync = match case.policy {
            Policy::Always => SyncPolicy::Always,
            Policy::Never => SyncPolicy::Never,
            Policy::Interval => SyncPolicy::Interval(Duration::from_secs(600)),
        };
        Harness {
            fs,
            clock: Arc::new(AtomicI64::new(T0)),
            opts: LogOptions {
                sync,
                segment_bytes: case.segment_bytes,
                committer_threads: 1,
                max_inflight_bytes: 64 << 20,
                retention_check_interval: Duration::from_secs(3600),
            },
            backlog: case.backlog_secs,
            policy: case.policy,
            marker_sync: case.marker_sync,
            log: None,
            model: Model {
                trim_floor: 1,
                trim_upper: 1,
                ..Model::default()
            },
            next_id: 0,
            healthy_at: None,
            fired_at_start: 0,
            epoch_seen: 0,
            steps: Vec::new(),
        }
    }

    fn fail(&self, what: String) -> TestCaseError {
        let recent: Vec<&String> = self.steps.iter().rev().take(12).collect();
        TestCaseError::fail(format!(
            "{what}\nlast steps (newest first): {recent:#?}\nfaults fired: {:#?}",
            self.fs.fired()
        ))
    }

    fn env(&self) -> LogEnv {
        let mut env = LogEnv::default();
        env.fs = self.fs.view();
        let clock = self.clock.clone();
        env.clock = Arc::new(move || clock.load(Ordering::SeqCst));
        env.recover_after = Duration::ZERO;
        // Not by the wall clock: the cases must not depend on how fast they run.
        env.marker_sync_every = if self.marker_sync {
            Duration::ZERO
        } else {
            Duration::MAX
        };
        env
    }

    fn catalog(&self, listed: bool) -> CatalogShards {
        CatalogShards {
            listed: if listed {
                vec![(SHARD, self.backlog)]
            } else {
                Vec::new()
            },
            next_shard_id: SHARD + 1,
            deleted: Vec::new(),
            deletions_recorded_from: 1,
        }
    }

    fn start(&self) -> Result<Arc<LocalLog>, StoreError> {
        LocalLog::open_in(root(), self.opts.clone(), &self.catalog(true), self.env())
    }

    fn create(&mut self) {
        let log = LocalLog::open_in(root(), self.opts.clone(), &self.catalog(false), self.env())
            .expect("the first start");
        log.create_shard(SHARD, self.backlog)
            .expect("creating the shard");
        self.log = Some(log);
    }

    fn batch(&mut self, size: usize) -> Batch {
        self.next_id += 1;
        let id = self.next_id;
        let mut payload = format!("batch {id:08} ").into_bytes();
        payload.extend((0..size).map(|i| (id as usize * 31 + i * 7) as u8));
        Batch {
            payload: Bytes::from(payload),
            record_count: (id % 7 + 1) as u32,
            flags: (id % 3) as u16,
        }
    }

    // ---- steps ---------------------------------------------------------------------------

    async fn append(&mut self, sizes: &[usize]) -> Check {
        let Some(log) = self.log.clone() else {
            return Ok(());
        };
        let fired = self.fs.fired_count();
        // Rounds of group commit as the test says, not as threads happen to run: the first
        // append alone, the others together (queued while the first round is held at its first
        // file operation).
        let mut pending = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let b = self.batch(size);
            let mut fut = log.append(
                SHARD,
                NewBatch {
                    payload: b.payload.clone(),
                    record_count: b.record_count,
                    flags: b.flags,
                },
            );
            let held = i == 0 && sizes.len() > 1;
            if held {
                self.fs.close_gate();
            }
            // The first poll queues the append with the committer.
            let first = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
            if held {
                if first.is_pending() && !self.fs.gate_reached(Duration::from_secs(30)) {
                    self.fs.open_gate();
                    return Err(
                        self.fail("the first append of a step did no file operation".into())
                    );
                }
                if first.is_ready() {
                    self.fs.open_gate();
                }
            }
            pending.push((first, fut, b));
        }
        self.fs.open_gate();
        let mut all_acked = true;
        let mut outcome = Vec::new();
        for (first, fut, b) in pending {
            let result = match first {
                Poll::Ready(r) => r,
                Poll::Pending => fut.await,
            };
            match result {
                Ok(a) => {
                    count(&STATS.acked, 1);
                    outcome.push(format!("{}", a.seq));
                    self.acked(a, b)?;
                }
                Err(e) => {
                    count(&STATS.failed, 1);
                    all_acked = false;
                    outcome.push("failed".to_string());
                    ensure!(
                        self,
                        matches!(e, StoreError::LogFailed { .. }),
                        "an append failed with something else than LogFailed: {e}"
                    );
                    self.model.in_doubt.insert(b.payload.clone(), b);
                }
            }
        }
        self.steps.push(format!("append {sizes:?}: {outcome:?}"));
        if all_acked && self.fs.fired_count() == fired {
            self.healthy_at = Some(fired);
        }
        Ok(())
    }

    fn acked(&mut self, a: Appended, b: Batch) -> Check {
        if let Some((&last, e)) = self.model.entries.iter().next_back() {
            ensure!(
                self,
                a.seq > last,
                "append acknowledged at {} but the model holds {last} already (reused: {})",
                a.seq,
                self.model.entries.contains_key(&a.seq)
            );
            ensure!(
                self,
                a.timestamp_ms >= e.ts,
                "publish time went back from {} to {} at {}",
                e.ts,
                a.timestamp_ms,
                a.seq
            );
        }
        let durable = self.policy == Policy::Always;
        self.model.entries.insert(
            a.seq,
            Entry {
                batch: b,
                ts: a.timestamp_ms,
                acked: true,
                durable,
                at_risk: false,
                lost: false,
                suspect: false,
            },
        );
        Ok(())
    }

    fn read(&mut self, at: u8) -> Check {
        let Some(log) = self.log.clone() else {
            return Ok(());
        };
        let Ok(b) = log.bounds(SHARD) else {
            return Ok(());
        };
        let from = b.start_seq + (b.tail_seq + 1 - b.start_seq) * u64::from(at) / 100;
        let got = log.read(SHARD, from, ReadLimits::batches(20));
        self.steps.push(format!(
            "read from {from}: {}",
            match &got {
                Ok(v) => format!("{} batches", v.len()),
                Err(e) => format!("error {e}"),
            }
        ));
        // With faults armed a read may fail; what it returns must be right.
        if let Ok(v) = got {
            for (i, x) in v.iter().enumerate() {
                ensure!(
                    self,
                    x.seq == from + i as u64,
                    "read from {from} returned {} at position {i}",
                    x.seq
                );
                if let Some(e) = self.model.entries.get(&x.seq) {
                    ensure!(
                        self,
                        e.batch == Batch::of(x),
                        "read served other bytes at {}",
                        x.seq
                    );
                } else {
                    ensure!(
                        self,
                        self.model.in_doubt.contains_key(&x.payload),
                        "read served a batch at {} that was never appended",
                        x.seq
                    );
                }
            }
        }
        Ok(())
    }

    fn trim(&mut self, at: u8) {
        let Some(log) = self.log.clone() else {
            return;
        };
        let Ok(b) = log.bounds(SHARD) else {
            return;
        };
        if b.tail_seq < b.start_seq {
            return;
        }
        let upto = b.start_seq + (b.tail_seq - b.start_seq) * u64::from(at) / 100;
        let r = log.trim(SHARD, upto);
        self.steps.push(format!("trim to {upto}: {r:?}"));
        self.model.trim_upper = self.model.trim_upper.max(upto + 1);
        if r.is_ok() {
            self.model.trim_floor = self.model.trim_floor.max(upto + 1);
        }
    }

    async fn expire(&mut self, secs: u32) {
        let now = self
            .clock
            .fetch_add(i64::from(secs) * 1000, Ordering::SeqCst)
            + i64::from(secs) * 1000;
        let Some(log) = self.log.clone() else {
            return;
        };
        // The committer rolls what became old enough (on its idle tick, or now) before
        // retention runs here, not while it runs.
        log.quiesce().await;
        let r = log.enforce_retention();
        self.steps.push(format!("clock +{secs}s, retention: {r:?}"));
        if self.backlog > 0 {
            let cutoff = now - i64::from(self.backlog) * 1000;
            self.model.expire_before = self.model.expire_before.max(cutoff);
        }
    }

    /// Stops the running process (`how`), starts again and checks that a second start gives the
    /// same answers.
    async fn restart(&mut self, how: &Op) -> Check {
        let log = self.log.take();
        let healthy = self.healthy_at == Some(self.fs.fired_count());
        let epoch = self.fs.epoch();
        if let Some(log) = &log {
            // A clean shutdown syncs, and may fail, before the process is gone.
            if matches!(how, Op::Close) {
                log.shutdown().await;
            }
        }
        // A doom may strike in the shutdown's syncs.
        let died = self.fs.epoch() != epoch;
        self.note_check();
        match how {
            Op::Close if died => {
                self.steps.push("the shutdown died".into());
                drop(log);
                self.died();
            }
            Op::Close => {
                let clean = healthy && self.healthy_at == Some(self.fs.fired_count());
                count(&STATS.clean_shutdowns, u64::from(clean));
                self.steps
                    .push(format!("clean shutdown (healthy: {clean})"));
                if clean {
                    // A clean shutdown of a healthy shard makes everything acknowledged durable
                    // (also what an earlier process acknowledged, if it left the shard failed:
                    // the start wrote its active segment again).
                    for e in self.model.entries.values_mut() {
                        if e.acked && !e.lost && !e.suspect {
                            e.durable = true;
                        }
                    }
                }
                // The process is gone before its threads notice (a dropped log's committer
                // would sync on its way out).
                self.fs.kill();
                drop(log);
            }
            Op::Kill => {
                self.steps
                    .push(format!("process killed (healthy: {healthy})"));
                count(&STATS.kills, 1);
                // The process is gone before its threads notice (a dropped log's committer
                // would sync on its way out).
                self.fs.kill();
                drop(log);
            }
            Op::Crash(keep) => {
                self.steps.push(format!("power loss, keeping {keep:?}"));
                self.fs.crash(*keep);
                drop(log);
                self.power_lost();
            }
            _ => unreachable!(),
        }
        self.start_again().await
    }

    /// A batch not durable when a process stopped that did not leave its `RESYNC` note after a
    /// fault is no longer promised by a clean shutdown (see `Entry::suspect`).
    fn note_check(&mut self) {
        let fired = self.fs.fired();
        let this_process = &fired[self.fired_at_start..];
        let healthy = self.healthy_at == Some(fired.len());
        let note = self
            .fs
            .list(&root().join(SHARD.to_string()))
            .contains(&"RESYNC".to_string());
        let no_note = this_process.iter().any(|f| f.contains("RESYNC"))
            || (!this_process.is_empty() && !healthy && !note);
        if no_note {
            for e in self.model.entries.values_mut() {
                e.suspect |= !e.durable;
            }
        }
    }

    /// The model after a power loss: what was not durable may be gone.
    fn power_lost(&mut self) {
        count(&STATS.power_losses, 1);
        for e in self.model.entries.values_mut() {
            if !e.durable {
                e.at_risk = true;
            }
            e.suspect = false;
        }
    }

    /// The model after the process died in the middle of something (a doom struck).
    fn died(&mut self) {
        let how = self.fs.last_death();
        self.steps.push(format!("the process died: {how:?}"));
        count(&STATS.deaths, 1);
        match how {
            Some(Death::PowerLoss(_)) => self.power_lost(),
            Some(Death::Kill) | None => count(&STATS.kills, 1),
        }
    }

    /// After a step: if the process died in it, it is started again.
    async fn after_death(&mut self) -> Check {
        if self.fs.epoch() == self.epoch_seen {
            return Ok(());
        }
        self.note_check();
        drop(self.log.take());
        self.died();
        self.start_again().await
    }

    /// Starts the log again after the last process stopped, and checks that a second start gives
    /// the same answers.
    async fn start_again(&mut self) -> Check {
        self.healthy_at = None;
        self.fired_at_start = self.fs.fired_count();
        // The first start meets whatever faults are still armed, and may die.
        let first = loop {
            let epoch = self.fs.epoch();
            let first = self.start();
            if self.fs.epoch() == epoch {
                break first;
            }
            drop(first);
            self.died();
        };
        let served = match &first {
            Ok(log) => log.bounds(SHARD).is_ok(),
            Err(_) => false,
        };
        self.steps.push(format!(
            "restart: {}",
            match &first {
                Ok(_) if served => "served".to_string(),
                Ok(log) => format!("shard not served: {:?}", log.bounds(SHARD).err()),
                Err(e) => format!("start failed: {e}"),
            }
        ));
        self.fs.clear_faults();
        self.fs.spare();
        let first = match first {
            Ok(log) if served => log,
            _ => {
                count(&STATS.starts_not_serving, 1);
                // The operator fixes the disk and restarts: now it must be served.
                self.fs.kill();
                drop(first);
                let log = self
                    .start()
                    .map_err(|e| self.fail(format!("a start without faults failed: {e}")))?;
                if let Err(e) = log.bounds(SHARD) {
                    return Err(self.fail(format!("a start without faults serves no shard: {e}")));
                }
                log
            }
        };
        let once = self.observe(&first)?;
        self.fs.kill();
        drop(first);
        let log = self
            .start()
            .map_err(|e| self.fail(format!("the second start failed: {e}")))?;
        let twice = self.observe(&log)?;
        ensure!(
            self,
            once == twice,
            "a second start answers differently:\nfirst  {:?} unreadable {:?} served {:?}\nsecond {:?} unreadable {:?} served {:?}",
            once.bounds,
            once.unreadable,
            once.served.iter().map(|b| b.seq).collect::<Vec<_>>(),
            twice.bounds,
            twice.unreadable,
            twice.served.iter().map(|b| b.seq).collect::<Vec<_>>()
        );
        self.log = Some(log);
        self.epoch_seen = self.fs.epoch();
        self.compare(&twice)
    }

    // ---- checks --------------------------------------------------------------------------

    /// Everything the shard serves, with faults suspended. `None` when it is not served.
    fn observe(&self, log: &LocalLog) -> Result<Snapshot, TestCaseError> {
        self.fs.suspend_faults(true);
        let r = self.observe_inner(log);
        self.fs.suspend_faults(false);
        r
    }

    fn observe_inner(&self, log: &LocalLog) -> Result<Snapshot, TestCaseError> {
        let bounds = log
            .bounds(SHARD)
            .map_err(|e| self.fail(format!("bounds: {e}")))?;
        let damage = log
            .damage(SHARD)
            .map_err(|e| self.fail(format!("damage: {e}")))?;
        let mut served: Vec<StoredBatch> = Vec::new();
        let mut unreadable = damage.unreadable.clone();
        let mut s = bounds.start_seq;
        while s <= bounds.tail_seq {
            match log.read(
                SHARD,
                s,
                ReadLimits {
                    max_batches: 50,
                    max_bytes: 1 << 20,
                },
            ) {
                Ok(v) => {
                    ensure!(
                        self,
                        !v.is_empty(),
                        "a read from {s} returned nothing, the tail is {}",
                        bounds.tail_seq
                    );
                    for (i, b) in v.iter().enumerate() {
                        ensure!(
                            self,
                            b.seq == s + i as u64,
                            "a read from {s} returned {} at position {i}",
                            b.seq
                        );
                    }
                    s += v.len() as u64;
                    served.extend(v);
                }
                Err(StoreError::Corrupt { .. }) => {
                    match damage.unreadable.iter().find(|&&(a, b)| a <= s && s <= b) {
                        Some(&(_, b)) => s = b + 1,
                        None => {
                            // Damage in a sealed segment whose index is intact is found only by
                            // reading (storage-format.md §5.1): a batch at a time.
                            unreadable.push((s, s));
                            s += 1;
                        }
                    }
                }
                Err(e) => return Err(self.fail(format!("a read from {s} failed: {e}"))),
            }
        }
        let past = log
            .read(SHARD, bounds.tail_seq + 1, ReadLimits::batches(10))
            .map_err(|e| self.fail(format!("a read past the tail failed: {e}")))?;
        ensure!(
            self,
            past.is_empty(),
            "a read past the tail {} returned {:?}",
            bounds.tail_seq,
            past.iter().map(|b| b.seq).collect::<Vec<_>>()
        );
        unreadable.sort_unstable();
        Ok(Snapshot {
            bounds,
            unreadable,
            served,
        })
    }

    /// Checks the running store against the model (if its shard is served).
    fn check(&mut self) -> Check {
        let Some(log) = self.log.clone() else {
            return Ok(());
        };
        if log.bounds(SHARD).is_err() {
            return Ok(());
        }
        let snap = self.observe(&log)?;
        self.compare(&snap)
    }

    fn compare(&mut self, snap: &Snapshot) -> Check {
        let b = snap.bounds;
        ensure!(
            self,
            b.start_seq >= self.model.trim_floor,
            "the readable range starts at {} below the trim point {}",
            b.start_seq,
            self.model.trim_floor
        );
        ensure!(
            self,
            b.next_seq == b.tail_seq + 1 || b.tail_seq + 1 == b.start_seq,
            "bounds {b:?}"
        );
        // What is served was appended, at this sequence number, byte for byte.
        let mut last_ts = i64::MIN;
        for x in &snap.served {
            ensure!(
                self,
                x.timestamp_ms >= last_ts,
                "publish times go back at {}",
                x.seq
            );
            last_ts = x.timestamp_ms;
            if let Some(e) = self.model.entries.get_mut(&x.seq) {
                if e.batch == Batch::of(x) {
                    if e.at_risk {
                        // It survived the power loss: it is on the disk now.
                        e.at_risk = false;
                        e.durable = true;
                    }
                    continue;
                }
            }
            // Only an append that failed (in doubt) may show up unannounced, where nothing
            // acknowledged is known to be: at the end, or in place of batches that a power loss
            // may have taken (the failed append's frame made it to the disk, theirs did not).
            let Some(batch) = self.model.in_doubt.get(&x.payload).cloned() else {
                return Err(self.fail(format!(
                    "{} serves a batch that was never appended there ({} bytes; the model has {:?})",
                    x.seq,
                    x.payload.len(),
                    self.model.entries.get(&x.seq).map(|e| (&e.batch.payload[..14.min(e.batch.payload.len())], e.at_risk))
                )));
            };
            ensure!(
                self,
                batch == Batch::of(x),
                "{} serves a failed append with other metadata",
                x.seq
            );
            let displaced: Vec<u64> = self
                .model
                .entries
                .range(x.seq..)
                .filter(|(_, e)| !e.at_risk)
                .map(|(&s, _)| s)
                .collect();
            ensure!(
                self,
                displaced.is_empty(),
                "a failed append shows up at {}, where batches {displaced:?} were acknowledged",
                x.seq
            );
            self.model.in_doubt.remove(&x.payload);
            count(&STATS.in_doubt_served, 1);
            self.model.entries.insert(
                x.seq,
                Entry {
                    batch,
                    ts: x.timestamp_ms,
                    acked: false,
                    durable: false,
                    at_risk: false,
                    lost: false,
                    suspect: false,
                },
            );
        }
        let served: std::collections::HashSet<u64> = snap.served.iter().map(|x| x.seq).collect();
        let unreadable = |s: u64| snap.unreadable.iter().any(|&(a, b)| a <= s && s <= b);
        let mut gone = Vec::new();
        let mut problem = None;
        for (&seq, e) in self.model.entries.iter_mut() {
            if seq < b.start_seq {
                let expirable = self.backlog > 0 && e.ts < self.model.expire_before;
                if !(seq < self.model.trim_upper || expirable || e.lost || e.at_risk) {
                    problem = Some(format!(
                        "{seq} (published {}) is below the readable range {b:?} but was neither \
                         trimmed (upto {}) nor expired (before {})",
                        e.ts, self.model.trim_upper, self.model.expire_before
                    ));
                    break;
                }
            } else if seq <= b.tail_seq {
                if served.contains(&seq) {
                    count(&STATS.durable_checked, u64::from(e.durable));
                    continue;
                }
                if !unreadable(seq) {
                    problem = Some(format!("{seq} is neither served nor reported unreadable"));
                    break;
                }
                if e.durable {
                    problem = Some(format!(
                        "{seq} was promised durable but is reported lost ({:?})",
                        snap.unreadable
                    ));
                    break;
                }
                if !e.at_risk && !e.lost {
                    problem = Some(format!("{seq} is reported lost without a power loss"));
                    break;
                }
                if !e.lost {
                    count(&STATS.lost_reported, 1);
                }
                e.lost = true;
                e.at_risk = false;
            } else if e.durable {
                problem = Some(format!(
                    "{seq} was promised durable but the log ends at {} ({b:?})",
                    b.tail_seq
                ));
                break;
            } else if e.at_risk {
                // Lost with the power, and no record of it survived: the number may be reused.
                gone.push(seq);
            } else {
                problem = Some(format!(
                    "{seq} vanished without a power loss; the log ends at {}",
                    b.tail_seq
                ));
                break;
            }
        }
        if let Some(p) = problem {
            return Err(self.fail(p));
        }
        count(&STATS.vanished, gone.len() as u64);
        for seq in gone {
            self.model.entries.remove(&seq);
        }
        if let Some((&last, _)) = self.model.entries.iter().next_back() {
            ensure!(
                self,
                b.next_seq > last,
                "the next append would get {}, but {last} was served or reported lost",
                b.next_seq
            );
        }
        Ok(())
    }
}

async fn run(case: Case) -> Check {
    let mut h = Harness::new(&case);
    h.create();
    count(&STATS.cases, 1);
    count(&STATS.steps, case.ops.len() as u64);
    let r = run_steps(&mut h, &case).await;
    count(&STATS.faults_fired, h.fs.fired_count() as u64);
    r
}

async fn run_steps(h: &mut Harness, case: &Case) -> Check {
    for op in &case.ops {
        match op {
            Op::Append(sizes) => h.append(sizes).await?,
            Op::Read(at) => h.read(*at)?,
            Op::Trim(at) => h.trim(*at),
            Op::Expire(secs) => h.expire(*secs).await,
            Op::Close | Op::Kill | Op::Crash(_) => h.restart(op).await?,
            Op::Fault(f) => {
                h.steps.push(format!("arm {f:?}"));
                h.fs.inject(*f);
            }
            Op::Die(n, how) => {
                h.steps
                    .push(format!("doomed: {how:?} at the {n}th file operation"));
                h.fs.doom(*n, *how);
            }
        }
        // Whatever the step set off in the background (a roll retention asked for, the
        // housekeeping after a round) is done before the check reads with faults suspended.
        if let Some(log) = h.log.clone() {
            log.quiesce().await;
        }
        h.after_death().await?;
        h.check()?;
    }
    // Finally: a clean shutdown of whatever runs, and a power loss.
    h.fs.clear_faults();
    h.fs.spare();
    h.restart(&Op::Close).await?;
    h.restart(&Op::Crash(Keep::Nothing)).await?;
    if let Some(log) = h.log.take() {
        log.shutdown().await;
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("FAULT_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

fn seed() -> [u8; 32] {
    let n: u64 = std::env::var("FAULT_MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f00d);
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&n.to_le_bytes());
    s
}

#[test]
fn the_log_keeps_its_promises_on_a_faulty_disk() {
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: cases(),
            failure_persistence: None,
            max_shrink_iters: 2000,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed()),
    );
    let result = runner.run(&case(), |case| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(case))
    });
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "{} cases (with shrinking, if any), {} steps: {} appends acknowledged, {} failed, {} \
         faults fired, {} power losses, {} process kills ({} of them, or of the power losses, in \
         the middle of a step or a start), {} clean shutdowns of a healthy shard, {} starts that \
         did not serve the shard; {} checks of a batch promised durable, \
         {} batches reported lost, {} gone with the power and renumbered, {} failed appends \
         served later",
        n(&STATS.cases),
        n(&STATS.steps),
        n(&STATS.acked),
        n(&STATS.failed),
        n(&STATS.faults_fired),
        n(&STATS.power_losses),
        n(&STATS.kills),
        n(&STATS.deaths),
        n(&STATS.clean_shutdowns),
        n(&STATS.starts_not_serving),
        n(&STATS.durable_checked),
        n(&STATS.lost_reported),
        n(&STATS.vanished),
        n(&STATS.in_doubt_served),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
