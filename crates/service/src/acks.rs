//! Acknowledgement state of one shard of one subscription: exactly which records are acked.
//!
//! A record's position is `(batch sequence number, index in the batch)`. The state is a
//! *frontier* (every record before it is acknowledged) plus the acknowledged ranges beyond it.
//! Ranges end exclusively and are normalised so that the end of a whole batch is written as the
//! start of the next one; touching ranges merge, and a range that starts at the frontier moves
//! it. The number of ranges is at most the number of unacknowledged gaps plus one, so it stays
//! bounded by the subscription's `maxUnackedRecords`.
//!
//! This is what makes progress survive a restart without re-delivering acknowledged records:
//! the checkpoint stores the whole state, not just the frontier.

use std::collections::BTreeMap;

/// A record position: (batch sequence number, index within the batch).
pub(crate) type Pos = (u64, u32);

/// Which records of a shard are acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AckState {
    frontier: Pos,
    ranges: BTreeMap<Pos, Pos>,
}

/// Format version of the encoded state.
const VERSION: u8 = 1;

impl AckState {
    /// Nothing acknowledged; delivery starts at batch `start_seq`.
    pub(crate) fn starting_at(start_seq: u64) -> Self {
        AckState {
            frontier: (start_seq, 0),
            ranges: BTreeMap::new(),
        }
    }

    /// The first record that is not known to be acknowledged.
    pub(crate) fn frontier(&self) -> Pos {
        self.frontier
    }

    /// Whether the record at `pos` is acknowledged.
    pub(crate) fn is_acked(&self, pos: Pos) -> bool {
        if pos < self.frontier {
            return true;
        }
        self.ranges
            .range(..=pos)
            .next_back()
            .is_some_and(|(_, &end)| pos < end)
    }

    /// Acknowledges record `index` of batch `seq`, which holds `batch_len` records. Returns
    /// false if it was already acknowledged.
    pub(crate) fn ack(&mut self, seq: u64, index: u32, batch_len: u32) -> bool {
        let pos = (seq, index);
        if self.is_acked(pos) {
            return false;
        }
        let end = if index + 1 >= batch_len {
            (seq + 1, 0)
        } else {
            (seq, index + 1)
        };
        self.insert(pos, end);
        true
    }

    /// Acknowledges every record of batches `from..to` (batches skipped by an operator, or
    /// trimmed before they were delivered), leaving the state of other batches as it is.
    pub(crate) fn ack_batches(&mut self, from: u64, to: u64) {
        if from < to {
            self.insert((from, 0), (to, 0));
        }
    }

    fn insert(&mut self, mut start: Pos, mut end: Pos) {
        // Merge with a range that ends at or after our start and begins before it.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.ranges.remove(&s);
            }
        }
        // Swallow ranges that begin inside (or right at the end of) the new one.
        while let Some((&s, &e)) = self.ranges.range(start..).next() {
            if s > end {
                break;
            }
            end = end.max(e);
            self.ranges.remove(&s);
        }
        if start <= self.frontier {
            self.frontier = self.frontier.max(end);
            // The frontier may now touch the next range.
            while let Some((&s, &e)) = self.ranges.iter().next() {
                if s > self.frontier {
                    break;
                }
                self.frontier = self.frontier.max(e);
                self.ranges.remove(&s);
            }
        } else {
            self.ranges.insert(start, end);
        }
    }

    /// Number of acknowledged ranges beyond the frontier.
    #[cfg(test)]
    pub(crate) fn gaps(&self) -> usize {
        self.ranges.len()
    }

    /// Encodes the state for a checkpoint.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 12 + 4 + self.ranges.len() * 24 + 4);
        out.push(VERSION);
        put_pos(&mut out, self.frontier);
        out.extend_from_slice(&(self.ranges.len() as u32).to_le_bytes());
        for (s, e) in &self.ranges {
            put_pos(&mut out, *s);
            put_pos(&mut out, *e);
        }
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a checkpoint written by [`AckState::encode`].
    pub(crate) fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < 1 + 12 + 4 + 4 {
            return Err("checkpoint too short".into());
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32(body).to_le_bytes() != crc {
            return Err("checkpoint checksum mismatch".into());
        }
        if body[0] != VERSION {
            return Err(format!("unknown checkpoint version {}", body[0]));
        }
        let frontier = get_pos(&body[1..13]);
        let n = u32::from_le_bytes(body[13..17].try_into().map_err(|_| "short")?) as usize;
        if body.len() != 17 + n * 24 {
            return Err("checkpoint length does not match its range count".into());
        }
        let mut ranges = BTreeMap::new();
        for i in 0..n {
            let o = 17 + i * 24;
            ranges.insert(get_pos(&body[o..o + 12]), get_pos(&body[o + 12..o + 24]));
        }
        Ok(AckState { frontier, ranges })
    }
}

fn put_pos(out: &mut Vec<u8>, p: Pos) {
    out.extend_from_slice(&p.0.to_le_bytes());
    out.extend_from_slice(&p.1.to_le_bytes());
}

fn get_pos(b: &[u8]) -> Pos {
    let seq = u64::from_le_bytes(b[0..8].try_into().unwrap_or([0; 8]));
    let idx = u32::from_le_bytes(b[8..12].try_into().unwrap_or([0; 4]));
    (seq, idx)
}

fn crc32(b: &[u8]) -> u32 {
    crc32c::crc32c(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_acks_move_the_frontier_across_batches() {
        let mut a = AckState::starting_at(1);
        for i in 0..3 {
            assert!(a.ack(1, i, 3));
        }
        assert_eq!(a.frontier(), (2, 0));
        assert!(a.ack(2, 0, 1));
        assert_eq!(a.frontier(), (3, 0));
        assert_eq!(a.gaps(), 0);
        assert!(!a.ack(1, 1, 3), "duplicate ack");
    }

    #[test]
    fn skipped_batches_leave_earlier_unacked_records_alone() {
        let mut a = AckState::starting_at(5);
        a.ack_batches(7, 9); // batch 5 and 6 were delivered and are not acknowledged
        assert_eq!(a.frontier(), (5, 0));
        assert!(!a.is_acked((5, 0)) && !a.is_acked((6, 3)));
        assert!(a.is_acked((7, 0)) && a.is_acked((8, 99)) && !a.is_acked((9, 0)));
        a.ack(5, 0, 1);
        a.ack(6, 0, 1);
        assert_eq!(a.frontier(), (9, 0));
        a.ack_batches(9, 9); // an empty range changes nothing
        assert_eq!(a.frontier(), (9, 0));
    }

    #[test]
    fn out_of_order_acks_are_remembered_exactly() {
        let mut a = AckState::starting_at(10);
        a.ack(10, 1, 4);
        a.ack(10, 3, 4);
        a.ack(11, 0, 2);
        a.ack(12, 5, 9);
        assert_eq!(a.frontier(), (10, 0));
        assert!(a.is_acked((10, 1)) && a.is_acked((10, 3)) && a.is_acked((11, 0)));
        assert!(!a.is_acked((10, 0)) && !a.is_acked((10, 2)) && !a.is_acked((11, 1)));
        assert_eq!(a.gaps(), 3); // [10.1,10.2) [10.3,11.1) [12.5,12.6)
        a.ack(10, 0, 4);
        assert_eq!(a.frontier(), (10, 2));
        a.ack(10, 2, 4);
        assert_eq!(a.frontier(), (11, 1));
        a.ack(11, 1, 2);
        assert_eq!(a.frontier(), (12, 0));
        assert_eq!(a.gaps(), 1);
        let round = AckState::decode(&a.encode()).expect("decode");
        assert_eq!(round, a);
    }

    #[test]
    fn random_ack_orders_agree_with_a_model() {
        // Batches 1..=30 of random sizes, acked in a scrambled order; after each ack the
        // state must agree with a plain set of acked positions.
        let sizes: Vec<u32> = (0..30).map(|i| 1 + (i * 7 % 5) as u32).collect();
        let mut all: Vec<Pos> = sizes
            .iter()
            .enumerate()
            .flat_map(|(b, &n)| (0..n).map(move |i| (b as u64 + 1, i)))
            .collect();
        let mut seed = 12345u64;
        for i in (1..all.len()).rev() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            all.swap(i, (seed >> 33) as usize % (i + 1));
        }
        let mut a = AckState::starting_at(1);
        let mut model = std::collections::BTreeSet::new();
        for &(s, i) in &all {
            a.ack(s, i, sizes[(s - 1) as usize]);
            model.insert((s, i));
            for b in 1..=30u64 {
                for j in 0..sizes[(b - 1) as usize] {
                    assert_eq!(a.is_acked((b, j)), model.contains(&(b, j)), "({b},{j})");
                }
            }
            assert_eq!(AckState::decode(&a.encode()).expect("decode"), a);
        }
        assert_eq!(a.frontier(), (31, 0));
        assert_eq!(a.gaps(), 0);
    }

    #[test]
    fn skipping_trimmed_batches_and_bad_checkpoints() {
        let mut a = AckState::starting_at(1);
        a.ack(7, 0, 2);
        a.ack_batches(1, 7);
        assert_eq!(a.frontier(), (7, 1));
        let mut bytes = a.encode();
        bytes[3] ^= 1;
        assert!(AckState::decode(&bytes).is_err());
        assert!(AckState::decode(b"short").is_err());
    }

    /// A model of a shard: batches `START..START + lens.len()` with `lens[i]` records, and
    /// the set of acknowledged records. Every operation on an `AckState` must agree with it.
    mod model {
        use std::collections::BTreeSet;

        use proptest::prelude::*;

        use super::super::*;

        const START: u64 = 10;

        #[derive(Debug, Clone)]
        enum Op {
            Ack { batch: usize, index: u32 },
            AckBatches { from: usize, to: usize },
            Checkpoint,
        }

        fn op(batches: usize) -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (0..batches, 0u32..6).prop_map(|(batch, index)| Op::Ack { batch, index }),
                1 => (0..=batches, 0..=batches).prop_map(|(a, b)| Op::AckBatches {
                    from: a.min(b),
                    to: a.max(b),
                }),
                1 => Just(Op::Checkpoint),
            ]
        }

        fn case() -> impl Strategy<Value = (Vec<u32>, Vec<Op>)> {
            prop::collection::vec(1u32..6, 1..8).prop_flat_map(|lens| {
                let n = lens.len();
                (Just(lens), prop::collection::vec(op(n), 0..60))
            })
        }

        /// The first record not acknowledged, or the batch after the last when all are.
        fn frontier(lens: &[u32], acked: &BTreeSet<Pos>) -> Pos {
            for (i, &len) in lens.iter().enumerate() {
                for index in 0..len {
                    let pos = (START + i as u64, index);
                    if !acked.contains(&pos) {
                        return pos;
                    }
                }
            }
            (START + lens.len() as u64, 0)
        }

        proptest! {
            #[test]
            fn ack_state_agrees_with_a_set_of_acknowledged_records((lens, ops) in case()) {
                let mut state = AckState::starting_at(START);
                let mut acked: BTreeSet<Pos> = BTreeSet::new();
                for op in ops {
                    match op {
                        Op::Ack { batch, index } => {
                            let len = lens[batch];
                            let index = index % len;
                            let pos = (START + batch as u64, index);
                            let fresh = acked.insert(pos);
                            prop_assert_eq!(state.ack(pos.0, index, len), fresh, "ack {:?}", pos);
                        }
                        Op::AckBatches { from, to } => {
                            state.ack_batches(START + from as u64, START + to as u64);
                            for (i, &len) in lens.iter().enumerate().take(to).skip(from) {
                                for index in 0..len {
                                    acked.insert((START + i as u64, index));
                                }
                            }
                        }
                        Op::Checkpoint => {
                            state = AckState::decode(&state.encode())
                                .map_err(TestCaseError::fail)?;
                        }
                    }
                    for (i, &len) in lens.iter().enumerate() {
                        for index in 0..len {
                            let pos = (START + i as u64, index);
                            prop_assert_eq!(state.is_acked(pos), acked.contains(&pos), "{:?}", pos);
                        }
                    }
                    prop_assert_eq!(state.frontier(), frontier(&lens, &acked));
                    // Ranges beyond the frontier are disjoint, so there are never more of
                    // them than records not acknowledged.
                    let records: u32 = lens.iter().sum();
                    prop_assert!(state.gaps() <= (records as usize).saturating_sub(acked.len()) + 1);
                }
            }
        }
    }
}
