//! Session windows (`SESSION(s, INTERVAL gap)`): per group key, the open sessions and their
//! bounds. A record at event time `t` covers `[t, t + gap)`; a session is the union of the
//! intervals that overlap, so `window_start` is its first record's time and `window_end` its
//! last record's time plus the gap. A record that overlaps two sessions (it arrived out of
//! order, between them) merges them into one.
//!
//! The aggregate keeps one group per session. Its window columns hold the session's id while
//! the session lives (bounds change as records arrive; an id does not), and the real bounds
//! are put back whenever rows leave the aggregate (output, checkpoints).

use std::collections::HashMap;

/// A session: `[start, end)` in epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// The first record's time.
    pub start: i64,
    /// The last record's time plus the gap.
    pub end: i64,
}

/// Where a record went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Assigned {
    /// Into session `id` (new or extended), which absorbed the sessions `merged`.
    Session {
        /// The session.
        id: i64,
        /// Its bounds after the record.
        bounds: Bounds,
        /// Sessions this record bridged into `id`; they no longer exist.
        merged: Vec<i64>,
    },
    /// Nowhere: the record's session would already be closed (late beyond the lateness).
    Late,
}

/// The sessions of every key.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    gap_ms: i64,
    lateness_ms: i64,
    by_key: HashMap<Box<[u8]>, Vec<i64>>,
    bounds: HashMap<i64, Bounds>,
    next_id: i64,
}

impl Sessions {
    /// No sessions yet.
    pub(crate) fn new(gap_ms: i64, lateness_ms: i64) -> Self {
        Sessions {
            gap_ms,
            lateness_ms,
            ..Default::default()
        }
    }

    /// A session is closed once the watermark is at or past its end plus the lateness.
    fn open(&self, b: Bounds, watermark: i64) -> bool {
        b.end.saturating_add(self.lateness_ms) > watermark
    }

    /// Puts a record of `key` at time `t` into its session.
    pub(crate) fn assign(&mut self, key: &[u8], t: i64, watermark: i64) -> Assigned {
        let mine = Bounds {
            start: t,
            end: t.saturating_add(self.gap_ms),
        };
        let mut hits: Vec<(i64, Bounds)> = Vec::new();
        if let Some(list) = self.by_key.get(key) {
            for &id in list {
                let b = self.bounds[&id];
                if self.open(b, watermark) && mine.start < b.end && mine.end > b.start {
                    hits.push((id, b));
                }
            }
        }
        if hits.is_empty() {
            if !self.open(mine, watermark) {
                return Assigned::Late;
            }
            let id = self.next_id;
            self.next_id += 1;
            self.insert(key, id, mine);
            return Assigned::Session {
                id,
                bounds: mine,
                merged: Vec::new(),
            };
        }
        // The earliest session survives; the others fold into it.
        hits.sort_by_key(|(id, b)| (b.start, *id));
        let id = hits[0].0;
        let bounds = hits.iter().fold(mine, |acc, (_, b)| Bounds {
            start: acc.start.min(b.start),
            end: acc.end.max(b.end),
        });
        self.bounds.insert(id, bounds);
        let merged: Vec<i64> = hits[1..].iter().map(|(m, _)| *m).collect();
        if !merged.is_empty() {
            for m in &merged {
                self.bounds.remove(m);
            }
            if let Some(list) = self.by_key.get_mut(key) {
                list.retain(|x| !merged.contains(x));
            }
        }
        Assigned::Session { id, bounds, merged }
    }

    /// Registers a session with known bounds (restoring a checkpoint); returns its new id.
    pub(crate) fn restore(&mut self, key: &[u8], bounds: Bounds) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        self.insert(key, id, bounds);
        id
    }

    fn insert(&mut self, key: &[u8], id: i64, bounds: Bounds) {
        match self.by_key.get_mut(key) {
            Some(list) => list.push(id),
            None => {
                self.by_key.insert(key.into(), vec![id]);
            }
        }
        self.bounds.insert(id, bounds);
    }

    /// The bounds of a live session.
    pub(crate) fn bounds(&self, id: i64) -> Option<Bounds> {
        self.bounds.get(&id).copied()
    }

    /// Whether session `id` is closed at `watermark` (or gone).
    #[cfg(test)]
    pub(crate) fn closed(&self, id: i64, watermark: i64) -> bool {
        self.bounds(id).is_none_or(|b| !self.open(b, watermark))
    }

    /// Forgets the sessions closed at `watermark`; returns their ids.
    pub(crate) fn forget_closed(&mut self, watermark: i64) -> std::collections::HashSet<i64> {
        let lateness = self.lateness_ms;
        let mut gone = std::collections::HashSet::new();
        self.bounds.retain(|id, b| {
            let open = b.end.saturating_add(lateness) > watermark;
            if !open {
                gone.insert(*id);
            }
            open
        });
        let bounds = &self.bounds;
        self.by_key.retain(|_, list| {
            list.retain(|id| bounds.contains_key(id));
            !list.is_empty()
        });
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(a: Assigned) -> (i64, i64, i64, Vec<i64>) {
        match a {
            Assigned::Session { id, bounds, merged } => (id, bounds.start, bounds.end, merged),
            Assigned::Late => panic!("late"),
        }
    }

    #[test]
    fn records_within_the_gap_share_a_session_per_key() {
        let mut s = Sessions::new(10, 0);
        assert_eq!(
            session(s.assign(b"a", 100, i64::MIN)),
            (0, 100, 110, vec![])
        );
        assert_eq!(
            session(s.assign(b"a", 105, i64::MIN)),
            (0, 100, 115, vec![])
        );
        // Another key: its own session.
        assert_eq!(
            session(s.assign(b"b", 106, i64::MIN)),
            (1, 106, 116, vec![])
        );
        // Exactly the gap after the last record: a new session.
        assert_eq!(
            session(s.assign(b"a", 115, i64::MIN)),
            (2, 115, 125, vec![])
        );
        // Just before a session's start, within the gap: extends it backwards.
        assert_eq!(session(s.assign(b"b", 97, i64::MIN)), (1, 97, 116, vec![]));
    }

    #[test]
    fn an_out_of_order_record_bridges_two_sessions() {
        let mut s = Sessions::new(10, 0);
        session(s.assign(b"k", 100, i64::MIN)); // [100, 110)
        session(s.assign(b"k", 115, i64::MIN)); // [115, 125): 15 after 100, a session of its own
                                                // 108 covers [108, 118): it overlaps both.
        assert_eq!(
            session(s.assign(b"k", 108, i64::MIN)),
            (0, 100, 125, vec![1])
        );
        assert_eq!(s.bounds(1), None);
        assert_eq!(
            session(s.assign(b"k", 124, i64::MIN)),
            (0, 100, 134, vec![])
        );
    }

    #[test]
    fn closed_sessions_take_no_records_and_are_forgotten() {
        let mut s = Sessions::new(10, 5);
        session(s.assign(b"k", 100, i64::MIN)); // [100, 110), closes at 115
        assert!(!s.closed(0, 114));
        assert!(s.closed(0, 115));
        // At watermark 115 a record at 99 would join a closed session, and its own interval
        // [99, 109) is closed too (109 + 5 <= 115): late.
        assert_eq!(s.assign(b"k", 99, 115), Assigned::Late);
        // A record at 108 covers [108, 118): open; the session it overlaps is closed, so it
        // starts a new one.
        assert_eq!(session(s.assign(b"k", 108, 115)), (1, 108, 118, vec![]));
        s.forget_closed(115);
        assert_eq!(s.bounds(0), None);
        assert!(s.bounds(1).is_some());
        s.forget_closed(1000);
        assert!(s.by_key.is_empty());
    }
}
