//! DataCell (MonetDB's stream module) inside StreamCell: baskets, receptors, emitters,
//! continuous queries and the catalog functions, driven by `CALL datacell.…` statements.
//! See `docs/datacell.md` for the user's view; the parts:
//!
//! - [`basket`]: the in-memory tables of events and how a consumer takes rows from them;
//! - [`columns`]: a basket's column types and schema (the line format receptors parse and
//!   emitters write is the `streamcell-csv` crate);
//! - [`adapter`]: receptors and emitters, their state and counters, and the [`Sockets`] seam
//!   through which they are started (their TCP/UDP sockets are the door crate
//!   `streamcell-datacell`, which the binary injects);
//! - this module: the registry of all of them, the `datacell.*` calls, the catalog tables
//!   (`datacell.baskets()` …) and the continuous queries with their scheduler. Queries run on
//!   DataFusion through the engine (so they can read streams and tables too and write into
//!   streams); the scheduler fires a query when every input basket is ready.
//!
//! DataCell objects live in memory: a restart starts with no baskets, adapters or queries
//! (as in DataCell, where baskets are temporary tables). Events that must last go into a
//! stream or a table (`insert into <stream> select … from datacell.<basket>`).

pub mod adapter;
mod basket;
mod columns;
pub(crate) mod run;
mod step;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use sqlparser::ast::{self as sql, Expr, FunctionArg, FunctionArgExpr, FunctionArguments};

pub use self::adapter::Sockets;
use self::adapter::{Adapter, AdapterSpec, Direction, Mode, Protocol, Run};
pub use self::basket::Basket;
use self::basket::{now_us, Grab};
use crate::error::{EngineError, Result};
use crate::tables::Rows;

/// The schema that holds baskets and the catalog functions.
pub const SCHEMA: &str = "datacell";

/// The catalog table functions, as `datacell.<name>()`.
pub const CATALOG_FUNCTIONS: [&str; 5] = ["baskets", "receptors", "emitters", "queries", "errors"];

/// Running, paused or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryState {
    /// Fires when its baskets are ready.
    Running,
    /// Registered, waiting for `datacell.resume`.
    Paused,
    /// Failed; the rows it took were put back. `datacell.resume(name)` tries again.
    Error,
}

/// One continuous query.
pub struct ContinuousQuery {
    /// Its name (`datacell.pass`).
    pub name: String,
    /// The SQL it runs (or the procedure's body).
    pub def: String,
    /// Its statements: `INSERT INTO … SELECT/VALUES …`, scheduling predicates removed.
    pub statements: Vec<sql::Insert>,
    /// The baskets it consumes.
    pub inputs: Vec<String>,
    /// Its statements, planned.
    steps: Vec<step::Step>,
    /// The rows a firing took, by basket, which its plans read.
    taken: HashMap<String, Arc<step::Taken>>,
    state: Mutex<QueryState>,
    stats: Mutex<QueryStats>,
}

#[derive(Debug, Default, Clone)]
struct QueryStats {
    last_run_us: i64,
    cycles: u64,
    events: u64,
    time_us: u64,
    error: Option<String>,
}

impl ContinuousQuery {
    /// Its state.
    pub fn state(&self) -> QueryState {
        lock(&self.state).clone()
    }

    fn set_state(&self, s: QueryState) {
        *lock(&self.state) = s;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Everything DataCell.
pub struct DataCell {
    baskets: Mutex<BTreeMap<String, Arc<Basket>>>,
    adapters: Mutex<Vec<Arc<Adapter>>>,
    queries: Mutex<BTreeMap<String, Arc<ContinuousQuery>>>,
    procedures: Mutex<BTreeMap<String, (Vec<sql::Insert>, String)>>,
    /// Woken when a basket gets rows.
    pub wake: Arc<tokio::sync::Notify>,
    /// Opens the sockets of receptors and emitters.
    sockets: Mutex<Arc<dyn Sockets>>,
}

impl Default for DataCell {
    fn default() -> Self {
        DataCell {
            baskets: Mutex::default(),
            adapters: Mutex::default(),
            queries: Mutex::default(),
            procedures: Mutex::default(),
            wake: Arc::default(),
            sockets: Mutex::new(Arc::new(adapter::NoSockets)),
        }
    }
}

/// `datacell.x`, `x`, `'datacell.x'`: the basket's full name, lower case.
pub fn basket_name(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    if n.contains('.') {
        n
    } else {
        format!("{SCHEMA}.{n}")
    }
}

/// True for a `datacell.<x>` object name.
pub fn in_schema(name: &sql::ObjectName) -> bool {
    name.0.len() == 2
        && name.0[0]
            .as_ident()
            .is_some_and(|i| i.value.eq_ignore_ascii_case(SCHEMA))
}

/// The text of an object name, parts joined by `.`.
pub fn name_text(name: &sql::ObjectName) -> String {
    name.0
        .iter()
        .map(|p| {
            p.as_ident()
                .map_or_else(|| p.to_string(), |i| i.value.clone())
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A call's arguments as literals.
#[derive(Debug, Clone)]
pub enum Arg {
    /// A string.
    Text(String),
    /// A number.
    Number(f64),
    /// An interval, in microseconds.
    Micros(i64),
}

impl Arg {
    fn text(&self, what: &str) -> Result<String> {
        match self {
            Arg::Text(s) => Ok(s.clone()),
            other => Err(EngineError::invalid(format!(
                "{what} must be a string, not {other:?}"
            ))),
        }
    }

    fn count(&self, what: &str) -> Result<usize> {
        match self {
            Arg::Number(n) if *n >= 0.0 && n.fract() == 0.0 && *n < 1e12 => Ok(*n as usize),
            other => Err(EngineError::invalid(format!(
                "{what} must be a whole number of at least 0, not {other:?}"
            ))),
        }
    }
}

/// Literal arguments of a `CALL` or predicate.
pub fn call_args(args: &FunctionArguments) -> Result<Vec<Arg>> {
    let list = match args {
        FunctionArguments::None => return Ok(Vec::new()),
        FunctionArguments::List(l) => &l.args,
        FunctionArguments::Subquery(_) => {
            return Err(EngineError::invalid(
                "DataCell calls take literal arguments",
            ))
        }
    };
    list.iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => literal_arg(e),
            other => Err(EngineError::invalid(format!(
                "unexpected argument {other}: DataCell calls take literals"
            ))),
        })
        .collect()
}

fn literal_arg(e: &Expr) -> Result<Arg> {
    match e {
        Expr::Value(v) => match &v.value {
            sql::Value::SingleQuotedString(s) | sql::Value::DoubleQuotedString(s) => {
                Ok(Arg::Text(s.clone()))
            }
            sql::Value::Number(n, _) => n
                .parse()
                .map(Arg::Number)
                .map_err(|_| EngineError::invalid(format!("bad number {n}"))),
            other => Err(EngineError::invalid(format!("unexpected argument {other}"))),
        },
        Expr::UnaryOp {
            op: sql::UnaryOperator::Minus,
            expr,
        } => match literal_arg(expr)? {
            Arg::Number(n) => Ok(Arg::Number(-n)),
            _ => Err(EngineError::invalid(format!("unexpected argument {e}"))),
        },
        Expr::Interval(_) => Ok(Arg::Micros(crate::continuous::plan::interval_ms(e)? * 1000)),
        other => Err(EngineError::invalid(format!(
            "unexpected argument {other}: DataCell calls take literals"
        ))),
    }
}

impl DataCell {
    /// No baskets yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets what opens the sockets of receptors and emitters (the binary gives the door
    /// crate `streamcell-datacell`, with the server's network policy); adapters created
    /// afterwards use it. Until then `datacell.receptor`/`emitter` are not supported.
    pub fn set_sockets(&self, sockets: Arc<dyn Sockets>) {
        *lock(&self.sockets) = sockets;
    }

    /// The basket named `name` (`datacell.x` or `x`).
    pub fn basket(&self, name: &str) -> Result<Arc<Basket>> {
        let full = basket_name(name);
        lock(&self.baskets).get(&full).cloned().ok_or_else(|| {
            EngineError::NotFound(format!(
                "no basket {full:?} (create table {full} (…) first)"
            ))
        })
    }

    /// Whether a basket exists.
    pub fn has_basket(&self, name: &str) -> bool {
        lock(&self.baskets).contains_key(&basket_name(name))
    }

    /// `create table datacell.x (…)`.
    pub fn create_basket(&self, name: &str, columns: Vec<(String, DataType)>) -> Result<()> {
        let full = basket_name(name);
        if columns.is_empty() {
            return Err(EngineError::invalid(format!("basket {full} needs columns")));
        }
        for (i, (c, _)) in columns.iter().enumerate() {
            if columns[..i].iter().any(|(o, _)| o == c) {
                return Err(EngineError::invalid(format!("column {c:?} is given twice")));
            }
        }
        if columns.len() > 128 {
            return Err(EngineError::invalid("a basket has at most 128 columns"));
        }
        let mut b = lock(&self.baskets);
        if b.contains_key(&full) {
            return Err(EngineError::AlreadyExists(format!(
                "basket {full:?} exists already"
            )));
        }
        let schema = columns::schema_of(&columns);
        b.insert(full.clone(), Arc::new(Basket::new(full, schema)));
        Ok(())
    }

    /// `drop table datacell.x`: refused while a receptor, emitter or query uses it.
    pub fn drop_basket(&self, name: &str, if_exists: bool) -> Result<()> {
        let full = basket_name(name);
        if !self.has_basket(&full) {
            return if if_exists {
                Ok(())
            } else {
                Err(EngineError::NotFound(format!("no basket {full:?}")))
            };
        }
        let users: Vec<String> = lock(&self.adapters)
            .iter()
            .filter(|a| a.spec.basket.name == full && a.state() != Run::Stopped)
            .map(|a| format!("{:?}", a.spec.direction).to_lowercase())
            .chain(
                lock(&self.queries)
                    .values()
                    .filter(|q| q.inputs.contains(&full) || targets(q).contains(&full))
                    .map(|q| q.name.clone()),
            )
            .collect();
        if !users.is_empty() {
            return Err(EngineError::Precondition(format!(
                "basket {full:?} is used by {} (datacell.stop them first)",
                users.join(", ")
            )));
        }
        lock(&self.baskets).remove(&full);
        Ok(())
    }

    /// `insert into datacell.x …`: appends rows (cast to the basket's columns by position).
    pub fn insert(&self, name: &str, batches: Vec<RecordBatch>) -> Result<usize> {
        let b = self.basket(name)?;
        let conformed = batches
            .iter()
            .map(|x| columns::conform(x, &b.schema))
            .collect::<Result<Vec<_>>>()?;
        // One batch, so that the rows go in together or not at all (a full basket).
        let batch = arrow::compute::concat_batches(&b.schema, &conformed)
            .map_err(|e| EngineError::internal(format!("joining the rows to insert: {e}")))?;
        let n = batch.num_rows();
        b.append(batch)?;
        self.wake.notify_one();
        Ok(n)
    }

    /// Registers a receptor or emitter.
    pub async fn add_adapter(&self, direction: Direction, args: &[Arg]) -> Result<()> {
        let what = match direction {
            Direction::Receptor => "receptor",
            Direction::Emitter => "emitter",
        };
        if !(3..=5).contains(&args.len()) {
            return Err(EngineError::invalid(format!(
                "datacell.{what}(basket, host, port [, 'tcp'|'udp' [, 'active'|'passive']])"
            )));
        }
        let basket = self.basket(&args[0].text("the basket")?)?;
        let host = args[1].text("the host")?;
        let port = match &args[2] {
            Arg::Number(p) if (0.0..=65535.0).contains(p) && p.fract() == 0.0 => *p as u16,
            other => {
                return Err(EngineError::invalid(format!(
                    "the port must be 0…65535, not {other:?}"
                )))
            }
        };
        let (default_proto, default_mode) = match direction {
            Direction::Receptor => (Protocol::Tcp, Mode::Passive),
            Direction::Emitter => (Protocol::Udp, Mode::Active),
        };
        let protocol = match args.get(3) {
            Some(a) => Protocol::parse(&a.text("the protocol")?)?,
            None => default_proto,
        };
        let mode = match args.get(4) {
            Some(a) => Mode::parse(&a.text("the mode")?)?,
            None => default_mode,
        };
        if lock(&self.adapters).iter().any(|a| {
            a.spec.direction == direction
                && a.spec.basket.name == basket.name
                && a.state() != Run::Stopped
        }) {
            return Err(EngineError::AlreadyExists(format!(
                "basket {:?} has a {what} already",
                basket.name
            )));
        }
        if direction == Direction::Emitter {
            if let Some(q) = lock(&self.queries)
                .values()
                .find(|q| q.inputs.contains(&basket.name))
            {
                return Err(EngineError::invalid(format!(
                    "basket {:?} is consumed by query {:?}; an emitter cannot drain it too",
                    basket.name, q.name
                )));
            }
        }
        let sockets = lock(&self.sockets).clone();
        let spec = AdapterSpec {
            direction,
            basket,
            host,
            port,
            protocol,
            mode,
        };
        let a = sockets.start(spec, self.wake.clone()).await?;
        lock(&self.adapters).push(a);
        Ok(())
    }

    /// Registers a continuous query.
    pub fn add_query(&self, q: ContinuousQuery) -> Result<()> {
        let mut queries = lock(&self.queries);
        if queries.contains_key(&q.name) {
            return Err(EngineError::AlreadyExists(format!(
                "query {:?} exists already",
                q.name
            )));
        }
        for input in &q.inputs {
            if let Some(other) = queries.values().find(|o| o.inputs.contains(input)) {
                return Err(EngineError::invalid(format!(
                    "basket {input:?} is consumed by query {:?} already (a basket has one \
                     consumer; let one query insert into several baskets to share events)",
                    other.name
                )));
            }
            if lock(&self.adapters).iter().any(|a| {
                a.spec.direction == Direction::Emitter
                    && &a.spec.basket.name == input
                    && a.state() != Run::Stopped
            }) {
                return Err(EngineError::invalid(format!(
                    "basket {input:?} is drained by an emitter; a query cannot consume it too"
                )));
            }
        }
        queries.insert(q.name.clone(), Arc::new(q));
        Ok(())
    }

    /// A stored procedure's statements.
    pub fn procedure(&self, name: &str) -> Result<(Vec<sql::Insert>, String)> {
        lock(&self.procedures)
            .get(&name.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("no procedure {name:?}")))
    }

    /// `create procedure …`.
    pub fn add_procedure(&self, name: &str, body: Vec<sql::Insert>, text: String) -> Result<()> {
        let mut p = lock(&self.procedures);
        let key = name.to_ascii_lowercase();
        if p.contains_key(&key) {
            return Err(EngineError::AlreadyExists(format!(
                "procedure {name:?} exists already"
            )));
        }
        p.insert(key, (body, text));
        Ok(())
    }

    /// `datacell.pause([obj])` / `resume([obj])`: everything, one query, or the adapters of
    /// one basket.
    pub fn pause_resume(&self, obj: Option<&str>, pause: bool) -> Result<()> {
        let run = if pause { Run::Paused } else { Run::Running };
        let qstate = if pause {
            QueryState::Paused
        } else {
            QueryState::Running
        };
        match obj {
            None => {
                for a in lock(&self.adapters).iter() {
                    a.set(run);
                }
                for q in lock(&self.queries).values() {
                    q.set_state(qstate.clone());
                }
            }
            Some(o) => {
                let mut found = false;
                if let Some(q) = self.query(o) {
                    q.set_state(qstate);
                    found = true;
                }
                let full = basket_name(o);
                for a in lock(&self.adapters).iter() {
                    if a.spec.basket.name == full && a.state() != Run::Stopped {
                        a.set(run);
                        found = true;
                    }
                }
                if !found {
                    return Err(EngineError::NotFound(format!(
                        "no query, receptor or emitter named {o:?}"
                    )));
                }
            }
        }
        self.wake.notify_one();
        Ok(())
    }

    /// `datacell.stop(obj)`: removes a query, or the receptor and emitter of a basket (the
    /// basket and its rows stay).
    pub fn stop(&self, obj: &str) -> Result<()> {
        let mut found = false;
        if let Some(q) = self.query(obj) {
            lock(&self.queries).remove(&q.name);
            found = true;
        }
        let full = basket_name(obj);
        let mut adapters = lock(&self.adapters);
        for a in adapters.iter() {
            if a.spec.basket.name == full {
                a.set(Run::Stopped);
                found = true;
            }
        }
        adapters.retain(|a| a.state() != Run::Stopped);
        if !found {
            return Err(EngineError::NotFound(format!(
                "no query, receptor or emitter named {obj:?}"
            )));
        }
        Ok(())
    }

    /// `datacell.postlude()`: stops every adapter and query and empties the baskets.
    pub fn postlude(&self) {
        for a in lock(&self.adapters).drain(..) {
            a.set(Run::Stopped);
        }
        lock(&self.queries).clear();
        for b in lock(&self.baskets).values() {
            b.clear();
        }
    }

    /// A query by name (`datacell.pass` or `pass`).
    pub fn query(&self, name: &str) -> Option<Arc<ContinuousQuery>> {
        let q = lock(&self.queries);
        q.get(name).or_else(|| q.get(&basket_name(name))).cloned()
    }

    /// Every query.
    pub fn queries(&self) -> Vec<Arc<ContinuousQuery>> {
        lock(&self.queries).values().cloned().collect()
    }

    /// Every basket, by name.
    pub fn baskets(&self) -> Vec<Arc<Basket>> {
        lock(&self.baskets).values().cloned().collect()
    }

    /// Every receptor and emitter (their counters are atomics: read them at any time).
    pub fn adapters(&self) -> Vec<Arc<Adapter>> {
        lock(&self.adapters).clone()
    }

    /// The running queries whose input baskets are all ready.
    pub fn ready_queries(&self) -> Vec<Arc<ContinuousQuery>> {
        let baskets = lock(&self.baskets);
        lock(&self.queries)
            .values()
            .filter(|q| q.state() == QueryState::Running)
            .filter(|q| {
                !q.inputs.is_empty()
                    && q.inputs
                        .iter()
                        .all(|i| baskets.get(i).is_some_and(|b| b.ready()))
            })
            .cloned()
            .collect()
    }

    /// Takes the rows of one firing from every input of `q` (all or nothing).
    pub fn grab(&self, q: &ContinuousQuery) -> Result<Vec<(Arc<Basket>, Grab)>> {
        let mut taken: Vec<(Arc<Basket>, Grab)> = Vec::new();
        for input in &q.inputs {
            let b = self.basket(input)?;
            match b.grab() {
                Ok(g) => taken.push((b, g)),
                Err(e) => {
                    for (b, g) in taken {
                        b.restore(g);
                    }
                    return Err(e);
                }
            }
        }
        Ok(taken)
    }

    /// Records the outcome of a firing.
    pub fn finished(
        &self,
        q: &ContinuousQuery,
        events: usize,
        started_us: i64,
        outcome: std::result::Result<(), String>,
    ) {
        let mut s = lock(&q.stats);
        s.cycles += 1;
        s.events += events as u64;
        s.last_run_us = started_us;
        s.time_us += (now_us() - started_us).max(0) as u64;
        if let Err(e) = outcome {
            tracing::warn!(query = %q.name, "continuous query failed: {e}");
            s.error = Some(format!("Query {} failed: {e}", q.name));
            drop(s);
            q.set_state(QueryState::Error);
        } else {
            s.error = None;
        }
    }

    /// The rows of a catalog function (`baskets`, `receptors`, …).
    pub fn catalog_table(&self, function: &str) -> Result<RecordBatch> {
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, None);
        let text = |v: Vec<String>| -> ArrayRef { Arc::new(StringArray::from(v)) };
        let int = |v: Vec<i64>| -> ArrayRef { Arc::new(Int64Array::from(v)) };
        let time =
            |v: Vec<Option<i64>>| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(v)) };
        let (fields, columns): (Vec<(&str, DataType)>, Vec<ArrayRef>) = match function {
            "baskets" => {
                let baskets: Vec<Arc<Basket>> = lock(&self.baskets).values().cloned().collect();
                let props: Vec<_> = baskets.iter().map(|b| b.props()).collect();
                let counters: Vec<_> = baskets.iter().map(|b| b.counters()).collect();
                (
                    vec![
                        ("nme", DataType::Utf8),
                        ("threshold", DataType::Int64),
                        ("winsize", DataType::Int64),
                        ("winstride", DataType::Int64),
                        ("timeslice", DataType::Int64),
                        ("timestride", DataType::Int64),
                        ("beat", DataType::Int64),
                        ("seen", ts()),
                        ("events", DataType::Int64),
                    ],
                    vec![
                        text(baskets.iter().map(|b| b.name.clone()).collect()),
                        int(props.iter().map(|p| p.threshold as i64).collect()),
                        int(props.iter().map(|p| p.winsize as i64).collect()),
                        int(props.iter().map(|p| p.winstride as i64).collect()),
                        int(props.iter().map(|p| p.timeslice / 1000).collect()),
                        int(props.iter().map(|p| p.timestride / 1000).collect()),
                        int(props.iter().map(|p| p.beat_ms as i64).collect()),
                        time(counters.iter().map(|c| Some(c.2)).collect()),
                        int(counters.iter().map(|c| c.0 as i64).collect()),
                    ],
                )
            }
            "receptors" | "emitters" => {
                let direction = if function == "receptors" {
                    Direction::Receptor
                } else {
                    Direction::Emitter
                };
                let list: Vec<Arc<Adapter>> = lock(&self.adapters)
                    .iter()
                    .filter(|a| a.spec.direction == direction)
                    .cloned()
                    .collect();
                let (last, count) = if direction == Direction::Receptor {
                    ("lastseen", "received")
                } else {
                    ("lastsent", "sent")
                };
                (
                    vec![
                        ("nme", DataType::Utf8),
                        ("host", DataType::Utf8),
                        ("port", DataType::Int64),
                        ("protocol", DataType::Utf8),
                        ("mode", DataType::Utf8),
                        ("status", DataType::Utf8),
                        (last, ts()),
                        ("cycles", DataType::Int64),
                        (count, DataType::Int64),
                        ("pending", DataType::Int64),
                    ],
                    vec![
                        text(list.iter().map(|a| a.spec.basket.name.clone()).collect()),
                        text(list.iter().map(|a| a.spec.host.clone()).collect()),
                        int(list.iter().map(|a| i64::from(a.spec.port)).collect()),
                        text(
                            list.iter()
                                .map(|a| a.spec.protocol.label().into())
                                .collect(),
                        ),
                        text(list.iter().map(|a| a.spec.mode.label().into()).collect()),
                        text(list.iter().map(|a| run_label(a.state()).into()).collect()),
                        time(
                            list.iter()
                                .map(|a| Some(a.last_us.load(Ordering::Relaxed)).filter(|t| *t > 0))
                                .collect(),
                        ),
                        int(list
                            .iter()
                            .map(|a| a.cycles.load(Ordering::Relaxed) as i64)
                            .collect()),
                        int(list
                            .iter()
                            .map(|a| a.events.load(Ordering::Relaxed) as i64)
                            .collect()),
                        int(list.iter().map(|a| a.spec.basket.len() as i64).collect()),
                    ],
                )
            }
            "queries" => {
                let qs = self.queries();
                let stats: Vec<QueryStats> = qs.iter().map(|q| lock(&q.stats).clone()).collect();
                (
                    vec![
                        ("nme", DataType::Utf8),
                        ("status", DataType::Utf8),
                        ("lastrun", ts()),
                        ("cycles", DataType::Int64),
                        ("events", DataType::Int64),
                        ("time", DataType::Int64),
                        ("error", DataType::Utf8),
                        ("def", DataType::Utf8),
                    ],
                    vec![
                        text(qs.iter().map(|q| q.name.clone()).collect()),
                        text(
                            qs.iter()
                                .map(|q| {
                                    match q.state() {
                                        QueryState::Running => "running",
                                        QueryState::Paused => "paused",
                                        QueryState::Error => "error",
                                    }
                                    .into()
                                })
                                .collect(),
                        ),
                        time(
                            stats
                                .iter()
                                .map(|s| Some(s.last_run_us).filter(|t| *t > 0))
                                .collect(),
                        ),
                        int(stats.iter().map(|s| s.cycles as i64).collect()),
                        int(stats.iter().map(|s| s.events as i64).collect()),
                        int(stats.iter().map(|s| s.time_us as i64).collect()),
                        Arc::new(StringArray::from(
                            stats.iter().map(|s| s.error.clone()).collect::<Vec<_>>(),
                        )),
                        text(qs.iter().map(|q| q.def.clone()).collect()),
                    ],
                )
            }
            "errors" => {
                let mut names = Vec::new();
                let mut errors = Vec::new();
                for b in lock(&self.baskets).values() {
                    for e in b.errors() {
                        names.push(b.name.clone());
                        errors.push(e);
                    }
                }
                (
                    vec![("nme", DataType::Utf8), ("error", DataType::Utf8)],
                    vec![text(names), text(errors)],
                )
            }
            other => {
                return Err(EngineError::NotFound(format!(
                    "no catalog function datacell.{other}() (there are {})",
                    CATALOG_FUNCTIONS.join(", ")
                )))
            }
        };
        let schema: SchemaRef = Arc::new(Schema::new(
            fields
                .into_iter()
                .map(|(n, t)| Field::new(n, t, true))
                .collect::<Vec<_>>(),
        ));
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// `datacell.dump()`: one line per object, as DataCell prints it.
    pub fn dump(&self) -> Vec<String> {
        let mut out = Vec::new();
        for b in lock(&self.baskets).values() {
            let p = b.props();
            let (rows, events, _, errors) = b.counters();
            out.push(format!(
                "#basket {} columns={} threshold={} window=[{},{}] timewindow=[{},{}] beat={} \
                 rows={rows} events={events} errors={errors}",
                b.name,
                b.schema.fields().len(),
                p.threshold,
                p.winsize,
                p.winstride,
                p.timeslice / 1000,
                p.timestride / 1000,
                p.beat_ms
            ));
            if let Some(last) = b.errors().last() {
                out.push(format!("#last error event {}: {last}", b.name));
            }
        }
        for a in lock(&self.adapters).iter() {
            let what = match a.spec.direction {
                Direction::Receptor => "receptor",
                Direction::Emitter => "emitter",
            };
            out.push(format!(
                "#{what} {} at {}:{} protocol={} mode={} status={} events={}",
                a.spec.basket.name,
                a.spec.host,
                a.spec.port,
                a.spec.protocol.label(),
                a.spec.mode.label(),
                run_label(a.state()),
                a.events.load(Ordering::Relaxed)
            ));
        }
        for q in self.queries() {
            let s = lock(&q.stats).clone();
            out.push(format!(
                "#query {} status={:?} cycles={} events={} def={}",
                q.name,
                q.state(),
                s.cycles,
                s.events,
                q.def
            ));
        }
        out
    }

    /// The rows of a `datacell.<basket>` table now, or of a catalog function
    /// (`datacell."baskets()"`).
    pub fn table_rows(&self, table: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        if let Some(f) = table.strip_suffix("()") {
            let batch = self.catalog_table(&f.to_ascii_lowercase())?;
            return Ok((batch.schema(), vec![batch]));
        }
        let b = self.basket(table)?;
        Ok((b.schema.clone(), b.snapshot()))
    }
}

/// A catalog function's rows at each run of a plan.
pub(crate) struct CatalogRows {
    datacell: Arc<DataCell>,
    function: String,
}

impl CatalogRows {
    /// The rows of `datacell.<function>()`.
    pub(crate) fn new(datacell: Arc<DataCell>, function: String) -> Self {
        CatalogRows { datacell, function }
    }
}

#[async_trait]
impl Rows for CatalogRows {
    async fn rows(&self) -> Result<Vec<RecordBatch>> {
        Ok(vec![self.datacell.catalog_table(&self.function)?])
    }

    fn describe(&self) -> String {
        format!("datacell.{}()", self.function)
    }
}

/// A basket read without consuming it: its rows of the moment.
#[async_trait]
impl Rows for Basket {
    async fn rows(&self) -> Result<Vec<RecordBatch>> {
        Ok(self.snapshot())
    }

    fn describe(&self) -> String {
        format!("basket {:?}", self.name)
    }
}

fn run_label(r: Run) -> &'static str {
    match r {
        Run::Running => "running",
        Run::Paused => "paused",
        Run::Stopped => "stopped",
    }
}

/// The baskets a query's statements insert into.
fn targets(q: &ContinuousQuery) -> Vec<String> {
    q.statements
        .iter()
        .filter_map(|i| match &i.table {
            sql::TableObject::TableName(n) if in_schema(n) => Some(basket_name(&name_text(n))),
            _ => None,
        })
        .collect()
}

/// A scheduling predicate found in a query.
#[derive(Debug, Clone)]
pub struct Predicate {
    /// `threshold`, `window` or `beat`.
    pub function: String,
    /// Its arguments.
    pub args: Vec<Arg>,
}

/// Applies a scheduling predicate (or the same call made with `CALL`) to its basket.
pub fn apply_predicate(dc: &DataCell, p: &Predicate) -> Result<()> {
    let usage = |u: &str| EngineError::invalid(format!("datacell.{u}"));
    let basket = match p.args.first() {
        Some(a) => dc.basket(&a.text("the basket")?)?,
        None => {
            return Err(usage(&format!(
                "{}(basket, …) needs the basket",
                p.function
            )));
        }
    };
    match (p.function.as_str(), &p.args[1..]) {
        ("threshold", [n]) => {
            let n = n.count("the threshold")?;
            let props = basket.props();
            if props.winsize > 0 && n < props.winsize {
                return Err(EngineError::invalid(format!(
                    "threshold {n} is smaller than the window size {}",
                    props.winsize
                )));
            }
            basket.set_props(|p| p.threshold = n)
        }
        ("window", [Arg::Micros(size), Arg::Micros(stride)]) => basket.set_props(|p| {
            p.timeslice = *size;
            p.timestride = *stride;
            p.winsize = 0;
            p.winstride = 0;
        }),
        ("window", [size, stride]) => {
            let (m, s) = (size.count("the window size")?, stride.count("the stride")?);
            if m == 0 {
                return Err(EngineError::invalid("the window size must be at least 1"));
            }
            basket.set_props(|p| {
                p.winsize = m;
                p.winstride = s;
                p.timeslice = 0;
                p.timestride = 0;
            })
        }
        ("beat", [ms]) => {
            let ms = ms.count("the beat (milliseconds)")?;
            basket.set_props(|p| p.beat_ms = ms as u64)
        }
        ("threshold", _) => Err(usage("threshold(basket, n)")),
        ("window", _) => Err(usage(
            "window(basket, size, stride) or window(basket, INTERVAL …, INTERVAL …)",
        )),
        ("beat", _) => Err(usage("beat(basket, milliseconds)")),
        (other, _) => Err(EngineError::invalid(format!(
            "unknown scheduling predicate datacell.{other}"
        ))),
    }
}

/// Removes `datacell.threshold/window/beat(…)` calls from a query's expressions (each
/// becomes `TRUE`), returning them.
pub fn take_predicates(query: &mut sql::Query) -> Result<Vec<Predicate>> {
    use sqlparser::ast::VisitMut;
    use std::ops::ControlFlow;
    struct Taker {
        found: Vec<Predicate>,
        error: Option<EngineError>,
    }
    impl sqlparser::ast::VisitorMut for Taker {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = e {
                let parts: Vec<String> = f
                    .name
                    .0
                    .iter()
                    .filter_map(|p| p.as_ident().map(|i| i.value.to_ascii_lowercase()))
                    .collect();
                if parts.len() == 2
                    && parts[0] == SCHEMA
                    && ["threshold", "window", "beat"].contains(&parts[1].as_str())
                {
                    match call_args(&f.args) {
                        Ok(args) => self.found.push(Predicate {
                            function: parts[1].clone(),
                            args,
                        }),
                        Err(err) => {
                            self.error = Some(err);
                            return ControlFlow::Break(());
                        }
                    }
                    *e = Expr::Value(sql::Value::Boolean(true).with_empty_span());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut t = Taker {
        found: Vec::new(),
        error: None,
    };
    let _ = query.visit(&mut t);
    match t.error {
        Some(e) => Err(e),
        None => Ok(t.found),
    }
}

/// Rewrites `FROM datacell.baskets()` (a catalog function) into a table named
/// `datacell."baskets()"`, which the engine registers with the function's rows.
pub fn rewrite_catalog_functions(query: &mut sql::Query) {
    use sqlparser::ast::{SetExpr, TableFactor};
    fn factor(f: &mut TableFactor) {
        match f {
            TableFactor::Table { name, args, .. } if in_schema(name) => {
                if let Some(a) = args {
                    if a.args.is_empty() {
                        let func = name_text(name);
                        let short = func.split('.').nth(1).unwrap_or_default().to_string();
                        *name = sql::ObjectName::from(vec![
                            sql::Ident::new(SCHEMA),
                            sql::Ident::with_quote('"', format!("{short}()")),
                        ]);
                        *args = None;
                    }
                }
            }
            TableFactor::Derived { subquery, .. } => rewrite_catalog_functions(subquery),
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => {
                factor(&mut table_with_joins.relation);
                for j in &mut table_with_joins.joins {
                    factor(&mut j.relation);
                }
            }
            _ => {}
        }
    }
    fn body(b: &mut SetExpr) {
        match b {
            SetExpr::Select(s) => {
                for t in &mut s.from {
                    factor(&mut t.relation);
                    for j in &mut t.joins {
                        factor(&mut j.relation);
                    }
                }
            }
            SetExpr::Query(q) => rewrite_catalog_functions(q),
            SetExpr::SetOperation { left, right, .. } => {
                body(left);
                body(right);
            }
            _ => {}
        }
    }
    body(&mut query.body);
}

/// The `datacell.<x>` tables a query reads (its FROM clauses, subqueries included).
pub fn baskets_read(query: &sql::Query) -> Vec<String> {
    use std::ops::ControlFlow;
    let mut out = Vec::new();
    let _ = sqlparser::ast::visit_relations(query, |name| {
        if in_schema(name) {
            let n = basket_name(&name_text(name));
            if !n.ends_with("()") && !out.contains(&n) {
                out.push(n);
            }
        }
        ControlFlow::<()>::Continue(())
    });
    out
}
