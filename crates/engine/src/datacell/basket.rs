//! Baskets: DataCell's in-memory tables of events. A basket holds Arrow batches in arrival
//! order; receptors and queries append to it, and the query (or emitter) that consumes it
//! takes rows out ([`Basket::grab`]) as its scheduling properties say: everything, a count
//! window (`window(B, M, S)`: the first M rows, then the oldest S go), or a time window on
//! the first TIMESTAMP column (`window(B, T, Ts)`). Errors of lines that did not parse are
//! kept with the basket (`datacell.errors()`).

use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, SchemaRef, TimestampMicrosecondType};

use crate::error::{EngineError, Result};

/// At most this many parse errors are kept per basket (the oldest go first).
pub(super) const MAX_ERRORS: usize = 10_000;

/// At most this many rows are held per basket: past it, rows are refused (a receptor counts
/// them as rejected, an `INSERT` or a query's delivery fails) rather than taking the server's
/// memory while nothing consumes the basket.
pub(super) const MAX_ROWS: usize = 5_000_000;

/// How a basket's consumer takes rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Props {
    /// Fire only when the basket holds at least this many rows.
    pub threshold: usize,
    /// Count window: rows seen per firing (0: none).
    pub winsize: usize,
    /// Count window: rows dropped after a firing.
    pub winstride: usize,
    /// Time window: length, µs (0: none).
    pub timeslice: i64,
    /// Time window: stride, µs.
    pub timestride: i64,
    /// Milliseconds between firings (0: none).
    pub beat_ms: u64,
}

/// The state behind a basket's lock.
#[derive(Debug)]
struct Content {
    batches: Vec<RecordBatch>,
    rows: usize,
    props: Props,
    /// Time window: the start of the next window (µs), once known.
    window_start: Option<i64>,
    /// Earliest and latest time in the first TIMESTAMP column of the rows held (kept as rows
    /// come and go, so the scheduler's readiness check does not scan the basket).
    span: Option<(i64, i64)>,
    /// Last time rows arrived, epoch µs.
    seen_us: i64,
    /// Rows ever appended.
    events: u64,
    errors: std::collections::VecDeque<String>,
    errors_total: u64,
    last_fire: Option<Instant>,
}

/// One basket.
#[derive(Debug)]
pub struct Basket {
    /// Its name, `datacell.<table>`, lower case.
    pub name: String,
    /// Its columns.
    pub schema: SchemaRef,
    content: Mutex<Content>,
    /// Woken when rows arrive (emitters wait on it).
    arrived: tokio::sync::Notify,
}

/// Rows taken out of a basket for one firing.
#[derive(Debug)]
pub struct Grab {
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// How many.
    pub rows: usize,
    /// What to put back if the firing fails (the whole basket as it was, for a window).
    restore: Vec<RecordBatch>,
    /// How many batches at the front of the basket the grab left there.
    left: usize,
}

pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A window's firing: it sees `seen`, the basket keeps `kept`, and `all` is what to put
/// back if the firing fails.
fn window_grab(
    c: &mut Content,
    seen: RecordBatch,
    kept: RecordBatch,
    all: Vec<RecordBatch>,
) -> Grab {
    c.rows = kept.num_rows();
    c.batches = if kept.num_rows() > 0 {
        vec![kept]
    } else {
        Vec::new()
    };
    Grab {
        rows: seen.num_rows(),
        batches: vec![seen],
        restore: all,
        left: c.batches.len(),
    }
}

impl Basket {
    /// An empty basket.
    pub fn new(name: String, schema: SchemaRef) -> Self {
        Basket {
            name,
            schema,
            content: Mutex::new(Content {
                batches: Vec::new(),
                rows: 0,
                props: Props::default(),
                window_start: None,
                span: None,
                seen_us: now_us(),
                events: 0,
                errors: Default::default(),
                errors_total: 0,
                last_fire: None,
            }),
            arrived: tokio::sync::Notify::new(),
        }
    }

    /// Resolves after the next arrival (or [`poke`](Self::poke)).
    pub async fn changed(&self) {
        self.arrived.notified().await
    }

    /// Wakes whoever waits in [`changed`](Self::changed).
    pub fn poke(&self) {
        self.arrived.notify_waiters();
    }

    /// Appends rows (of this basket's schema).
    pub fn append(&self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let added = self.span_of(std::slice::from_ref(&batch));
        let mut c = lock(&self.content);
        if c.rows + batch.num_rows() > MAX_ROWS {
            return Err(EngineError::Precondition(format!(
                "basket {:?} is full ({} rows, at most {MAX_ROWS}): {} rows refused; is its \
                 consumer running?",
                self.name,
                c.rows,
                batch.num_rows()
            )));
        }
        c.rows += batch.num_rows();
        c.events += batch.num_rows() as u64;
        c.seen_us = now_us();
        c.span = match (c.span, added) {
            (Some((a, b)), Some((x, y))) => Some((a.min(x), b.max(y))),
            (old, new) => old.or(new),
        };
        c.batches.push(batch);
        drop(c);
        self.arrived.notify_waiters();
        Ok(())
    }

    /// Records a line that did not parse.
    pub fn add_error(&self, error: String) {
        let mut c = lock(&self.content);
        if c.errors.len() >= MAX_ERRORS {
            c.errors.pop_front();
        }
        c.errors.push_back(error);
        c.errors_total += 1;
    }

    /// Rows in the basket now.
    pub fn len(&self) -> usize {
        lock(&self.content).rows
    }

    /// True when the basket holds no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the rows now in the basket (a plain `SELECT` sees this; nothing is taken).
    pub fn snapshot(&self) -> Vec<RecordBatch> {
        lock(&self.content).batches.clone()
    }

    /// Kept parse errors, oldest first.
    pub fn errors(&self) -> Vec<String> {
        lock(&self.content).errors.iter().cloned().collect()
    }

    /// The scheduling properties.
    pub fn props(&self) -> Props {
        lock(&self.content).props
    }

    /// Changes the scheduling properties (checked as DataCell does).
    pub fn set_props(&self, f: impl FnOnce(&mut Props)) -> Result<()> {
        let mut c = lock(&self.content);
        let mut p = c.props;
        f(&mut p);
        if p.winsize > 0 && p.timeslice > 0 {
            return Err(EngineError::invalid(format!(
                "{}: a basket slides by a count window or by a time window, not both",
                self.name
            )));
        }
        if p.winstride > p.winsize {
            return Err(EngineError::invalid(format!(
                "{}: the window stride ({}) must not exceed its size ({})",
                self.name, p.winstride, p.winsize
            )));
        }
        if p.timeslice > 0 && (p.timestride <= 0 || p.timestride > p.timeslice) {
            return Err(EngineError::invalid(format!(
                "{}: the time window's stride must be positive and at most its size",
                self.name
            )));
        }
        if p.timeslice > 0 && self.time_column().is_none() {
            return Err(EngineError::invalid(format!(
                "{}: a time window needs a TIMESTAMP column",
                self.name
            )));
        }
        p.threshold = p.threshold.max(p.winsize);
        if p.timeslice != c.props.timeslice {
            c.window_start = None;
        }
        c.props = p;
        Ok(())
    }

    /// Status figures: (rows now, rows ever, last arrival µs, errors ever).
    pub fn counters(&self) -> (usize, u64, i64, u64) {
        let c = lock(&self.content);
        (c.rows, c.events, c.seen_us, c.errors_total)
    }

    /// The first TIMESTAMP column (time windows slide on it).
    fn time_column(&self) -> Option<usize> {
        self.schema
            .fields()
            .iter()
            .position(|f| matches!(f.data_type(), DataType::Timestamp(_, _)))
    }

    /// Whether a consumer may fire now: enough rows, the beat passed, and for a time window
    /// a complete window present.
    pub fn ready(&self) -> bool {
        let c = lock(&self.content);
        if c.rows == 0 || c.rows < c.props.threshold {
            return false;
        }
        if c.props.beat_ms > 0 {
            if let Some(last) = c.last_fire {
                if last.elapsed().as_millis() < u128::from(c.props.beat_ms) {
                    return false;
                }
            }
        }
        if c.props.timeslice > 0 {
            return self.time_window_ready(&c);
        }
        true
    }

    fn time_window_ready(&self, c: &Content) -> bool {
        let Some((min, max)) = c.span else {
            return false;
        };
        let start = c.window_start.unwrap_or(min);
        max >= start + c.props.timeslice
    }

    /// Earliest and latest time in the first TIMESTAMP column of `batches`.
    fn span_of(&self, batches: &[RecordBatch]) -> Option<(i64, i64)> {
        let col = self.time_column()?;
        let mut span: Option<(i64, i64)> = None;
        for b in batches {
            let ts = b.column(col).as_primitive::<TimestampMicrosecondType>();
            for t in ts.iter().flatten() {
                span = Some(span.map_or((t, t), |(a, z)| (a.min(t), z.max(t))));
            }
        }
        span
    }

    /// Takes the rows of one firing, as the properties say.
    pub fn grab(&self) -> Result<Grab> {
        let mut c = lock(&self.content);
        let all = std::mem::take(&mut c.batches);
        let total = c.rows;
        c.last_fire = Some(Instant::now());
        let props = c.props;
        if props.winsize > 0 {
            // Count window: the first winsize rows; then the oldest winstride go.
            let merged = concat_batches(&self.schema, &all)?;
            let seen = merged.slice(0, props.winsize.min(total));
            let keep_from = props.winstride.min(total);
            let kept = merged.slice(keep_from, total - keep_from);
            c.span = self.span_of(std::slice::from_ref(&kept));
            return Ok(window_grab(&mut c, seen, kept, all));
        }
        if props.timeslice > 0 {
            let Some(col) = self.time_column() else {
                c.batches = all;
                return Err(EngineError::invalid(format!(
                    "{}: a time window needs a TIMESTAMP column",
                    self.name
                )));
            };
            let merged = concat_batches(&self.schema, &all)?;
            let ts = merged
                .column(col)
                .as_primitive::<TimestampMicrosecondType>();
            let min = ts.iter().flatten().min().unwrap_or(0);
            let start = c.window_start.unwrap_or(min);
            let end = start + props.timeslice;
            let next = start + props.timestride;
            let in_window: arrow::array::BooleanArray = ts
                .iter()
                .map(|t| Some(t.is_some_and(|t| t >= start && t < end)))
                .collect();
            // Rows before the next window's start are done with (rows without a time too).
            let keep: arrow::array::BooleanArray = ts
                .iter()
                .map(|t| Some(t.is_some_and(|t| t >= next)))
                .collect();
            let seen = arrow::compute::filter_record_batch(&merged, &in_window)?;
            let kept = arrow::compute::filter_record_batch(&merged, &keep)?;
            c.window_start = Some(next);
            c.span = self.span_of(std::slice::from_ref(&kept));
            return Ok(window_grab(&mut c, seen, kept, all));
        }
        c.rows = 0;
        c.span = None;
        Ok(Grab {
            rows: total,
            batches: all,
            restore: Vec::new(),
            left: 0,
        })
    }

    /// Puts back what a failed firing took (before anything that arrived since).
    pub fn restore(&self, grab: Grab) {
        let mut c = lock(&self.content);
        let back = if grab.restore.is_empty() {
            grab.batches
        } else {
            // A window grab: the basket as it was replaces what the grab left at the front.
            let left = grab.left.min(c.batches.len());
            c.batches.drain(..left);
            c.window_start = None;
            grab.restore
        };
        let later = std::mem::replace(&mut c.batches, back);
        c.batches.extend(later);
        c.rows = c.batches.iter().map(|b| b.num_rows()).sum();
        c.span = self.span_of(&c.batches);
    }

    /// Takes everything (an emitter's drain).
    pub fn drain(&self) -> Vec<RecordBatch> {
        let mut c = lock(&self.content);
        c.rows = 0;
        c.span = None;
        std::mem::take(&mut c.batches)
    }

    /// Puts rows back at the front (an emitter that could not send them).
    pub fn unshift(&self, batches: Vec<RecordBatch>) {
        let mut c = lock(&self.content);
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        let later = std::mem::replace(&mut c.batches, batches);
        c.batches.extend(later);
        c.rows += n;
        c.span = self.span_of(&c.batches);
    }

    /// Empties the basket.
    pub fn clear(&self) {
        let mut c = lock(&self.content);
        c.batches.clear();
        c.rows = 0;
        c.span = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datacell::columns::schema_of;
    use arrow::datatypes::TimeUnit;
    use streamcell_csv::LineParser;

    fn basket() -> Basket {
        Basket::new(
            "datacell.b".into(),
            schema_of(&[
                ("id".into(), DataType::Int64),
                ("t".into(), DataType::Timestamp(TimeUnit::Microsecond, None)),
            ]),
        )
    }

    fn fill(b: &Basket, rows: &[(i64, i64)]) {
        let mut p = LineParser::new(&b.schema);
        for (id, t) in rows {
            p.push_line(&format!("{id},{t}")).unwrap();
        }
        b.append(p.finish().unwrap()).unwrap();
    }

    fn ids(g: &Grab) -> Vec<i64> {
        g.batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn a_plain_grab_takes_everything() {
        let b = basket();
        fill(&b, &[(1, 0), (2, 0)]);
        assert!(b.ready());
        let g = b.grab().unwrap();
        assert_eq!(ids(&g), vec![1, 2]);
        assert!(b.is_empty());
        b.restore(g);
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn count_windows_see_m_and_drop_s() {
        let b = basket();
        b.set_props(|p| {
            p.winsize = 3;
            p.winstride = 1;
        })
        .unwrap();
        fill(&b, &[(1, 0), (2, 0)]);
        assert!(!b.ready(), "threshold is raised to the window size");
        fill(&b, &[(3, 0), (4, 0)]);
        assert!(b.ready());
        assert_eq!(ids(&b.grab().unwrap()), vec![1, 2, 3]);
        assert_eq!(ids(&b.grab().unwrap()), vec![2, 3, 4]);
        assert_eq!(b.len(), 2);
        assert!(!b.ready());
    }

    #[test]
    fn time_windows_slide_on_the_first_timestamp_column() {
        let b = basket();
        b.set_props(|p| {
            p.timeslice = 10;
            p.timestride = 5;
        })
        .unwrap();
        fill(&b, &[(1, 100), (2, 104), (3, 108)]);
        assert!(
            !b.ready(),
            "no row at or past 110 yet: the window is not complete"
        );
        fill(&b, &[(4, 112)]);
        assert!(b.ready());
        assert_eq!(ids(&b.grab().unwrap()), vec![1, 2, 3]); // [100, 110)
        assert_eq!(b.len(), 2); // 108 and 112 are at or past 105
        fill(&b, &[(5, 121)]);
        assert_eq!(ids(&b.grab().unwrap()), vec![3, 4]); // [105, 115)
    }

    #[test]
    fn inconsistent_properties_are_refused() {
        let b = basket();
        assert!(b
            .set_props(|p| {
                p.winsize = 2;
                p.winstride = 3;
            })
            .is_err());
        assert!(b
            .set_props(|p| {
                p.winsize = 2;
                p.timeslice = 10;
                p.timestride = 10;
            })
            .is_err());
    }
}
