//! Receptors and emitters as the engine knows them: what each one is (basket, address,
//! protocol, mode), its run state (paused, running, stopped) and its counters, which the
//! catalog functions and `/metrics` read. A receptor fills a basket from sensors; an emitter
//! drains a basket to actuators; both start paused (as in DataCell) and run once resumed.
//!
//! The sockets themselves are not here: the engine asks a [`Sockets`] to open them, and the
//! binary gives it the door crate `streamcell-datacell` (CSV over TCP and UDP, with the
//! server's network policy). The engine therefore neither listens nor connects on its own,
//! and a DataCell without sockets refuses `datacell.receptor`/`emitter` as not supported.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{watch, Notify};

use super::basket::{now_us, Basket};
use crate::error::{EngineError, Result};

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Who opens the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// We connect (or send) to the peer.
    Active,
    /// The peer connects to us.
    Passive,
}

impl Protocol {
    /// `'tcp'`/`'udp'`, any case.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(EngineError::invalid(format!(
                "protocol {other:?}: expected 'tcp' or 'udp'"
            ))),
        }
    }

    /// As the catalog shows it.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl Mode {
    /// `'active'`/`'passive'`, any case.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "active" => Ok(Mode::Active),
            "passive" => Ok(Mode::Passive),
            other => Err(EngineError::invalid(format!(
                "mode {other:?}: expected 'active' or 'passive'"
            ))),
        }
    }

    /// As the catalog shows it.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Active => "active",
            Mode::Passive => "passive",
        }
    }
}

/// Receptor or emitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Fills a basket.
    Receptor,
    /// Drains a basket.
    Emitter,
}

/// Running, paused or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// Working.
    Running,
    /// Waiting for `datacell.resume`.
    Paused,
    /// Gone (`datacell.stop`): the task ends.
    Stopped,
}

/// One receptor or emitter, as the catalog shows it.
pub struct Adapter {
    /// What it is; `port` is the port it really uses (the bound port of a passive adapter
    /// given port 0).
    pub spec: AdapterSpec,
    run: watch::Sender<Run>,
    /// Events received or sent.
    pub events: AtomicU64,
    /// A receptor's lines that did not parse (sent to the basket's errors).
    pub rejected: AtomicU64,
    /// Reads or writes done.
    pub cycles: AtomicU64,
    /// Last event received or sent, epoch µs (0: never).
    pub last_us: AtomicI64,
    /// The last connection or send problem, if any.
    pub problem: Mutex<Option<String>>,
}

/// What a receptor or emitter is asked to be: `datacell.receptor(basket, host, port,
/// protocol, mode)` with its defaults filled in.
pub struct AdapterSpec {
    /// Receptor or emitter.
    pub direction: Direction,
    /// The basket it fills or drains.
    pub basket: Arc<Basket>,
    /// Host as given (empty: the server's own loopback).
    pub host: String,
    /// Port as given (0: any free port, for passive adapters).
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Active or passive.
    pub mode: Mode,
}

/// Opens the sockets of receptors and emitters and runs them. The binary injects the
/// implementation (`streamcell-datacell`); see [`super::DataCell::set_sockets`].
#[async_trait]
pub trait Sockets: Send + Sync {
    /// Starts `spec` paused: checks where it may listen or connect, binds a passive one at
    /// once (so a port in use is an error here), spawns its task and returns it. `wake` is
    /// notified whenever the adapter put rows into its basket.
    async fn start(&self, spec: AdapterSpec, wake: Arc<Notify>) -> Result<Arc<Adapter>>;
}

impl Adapter {
    /// A new adapter, paused, with no counts; `port` is the port it really uses (the bound
    /// port of a passive adapter given port 0).
    pub fn new(spec: AdapterSpec, port: u16) -> Adapter {
        let (run, _) = watch::channel(Run::Paused);
        Adapter {
            spec: AdapterSpec { port, ..spec },
            run,
            events: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            cycles: AtomicU64::new(0),
            last_us: AtomicI64::new(0),
            problem: Mutex::new(None),
        }
    }

    /// Current state.
    pub fn state(&self) -> Run {
        *self.run.borrow()
    }

    /// Pauses, resumes or stops.
    pub fn set(&self, r: Run) {
        if *self.run.borrow() != Run::Stopped {
            self.run.send_replace(r);
        }
    }

    /// Waits while paused; true once running, false once stopped.
    pub async fn running(&self) -> bool {
        let mut rx = self.run.subscribe();
        loop {
            match *rx.borrow_and_update() {
                Run::Running => return true,
                Run::Stopped => return false,
                Run::Paused => {}
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    }

    /// Resolves when the adapter is stopped.
    pub async fn stopped(&self) {
        let mut rx = self.run.subscribe();
        loop {
            if *rx.borrow_and_update() == Run::Stopped || rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Records a connection or send problem (the catalog shows the last one) and logs it.
    pub fn note(&self, problem: impl Into<String>) {
        let p = problem.into();
        tracing::warn!(basket = %self.spec.basket.name, "{p}");
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
    }

    /// A line that did not parse: to the basket's errors, counted.
    pub fn reject(&self, error: String) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.spec.basket.add_error(error);
    }

    /// `n` events received or sent in one read or write.
    pub fn counted(&self, n: usize) {
        self.events.fetch_add(n as u64, Ordering::Relaxed);
        self.cycles.fetch_add(1, Ordering::Relaxed);
        self.last_us.store(now_us(), Ordering::Relaxed);
    }
}

/// A DataCell with no sockets (an engine built without the door, as in unit tests).
pub(super) struct NoSockets;

#[async_trait]
impl Sockets for NoSockets {
    async fn start(&self, _: AdapterSpec, _: Arc<Notify>) -> Result<Arc<Adapter>> {
        Err(EngineError::Unsupported(
            "receptors and emitters need the server's network door; this engine has none"
                .to_string(),
        ))
    }
}
