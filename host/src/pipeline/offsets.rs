//! Which source offsets are safe to commit.
//!
//! An offset may be committed only when its event, and every earlier event of its partition, is
//! fully acknowledged: all destination writes (or its dead-letter write) confirmed by the broker.
//! Acknowledgements arrive in any order; the tracker keeps, per partition, the events in the
//! order they were consumed and advances the committable position only across a contiguous run of
//! acknowledged events, so an out-of-order acknowledgement never moves it past a gap.

use std::collections::{HashMap, VecDeque};

/// Per-partition tracking of consumed-but-unacknowledged events.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, PartitionWindow>,
    in_flight: usize,
}

#[derive(Debug, Default)]
struct PartitionWindow {
    /// Offsets in consumption order, each with whether it is acknowledged.
    pending: VecDeque<(i64, bool)>,
    /// The resume position (last contiguous acknowledged offset + 1) not yet handed out.
    committable: Option<i64>,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `offset` of `partition` was consumed and is now in flight. Offsets of one
    /// partition arrive in increasing order; a lower one means the partition was rewound (a
    /// re-assignment or seek), and the window restarts there.
    pub fn track(&mut self, partition: i32, offset: i64) {
        let window = self.partitions.entry(partition).or_default();
        if window
            .pending
            .back()
            .is_some_and(|&(last, _)| offset <= last)
        {
            self.in_flight -= window.pending.len();
            window.pending.clear();
        }
        window.pending.push_back((offset, false));
        self.in_flight += 1;
    }

    /// Marks one event acknowledged. An acknowledgement for an offset not being tracked (its
    /// partition was revoked and forgotten) is ignored.
    pub fn ack(&mut self, partition: i32, offset: i64) {
        let Some(window) = self.partitions.get_mut(&partition) else {
            return;
        };
        // Offsets are increasing, so the position is found by binary search.
        let Ok(index) = window.pending.binary_search_by_key(&offset, |&(o, _)| o) else {
            return;
        };
        if window.pending[index].1 {
            return;
        }
        window.pending[index].1 = true;
        while let Some(&(front, true)) = window.pending.front() {
            window.pending.pop_front();
            window.committable = Some(front + 1);
            self.in_flight -= 1;
        }
    }

    /// Takes the resume offsets (last contiguous acknowledged + 1) that advanced since the last
    /// call, to be stored for the next commit.
    pub fn take_committable(&mut self) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> = self
            .partitions
            .iter_mut()
            .filter_map(|(&p, w)| w.committable.take().map(|o| (p, o)))
            .collect();
        out.sort_unstable();
        out
    }

    /// Events consumed but not yet acknowledged, across partitions.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Events of `partition` not yet acknowledged.
    pub fn in_flight_for(&self, partition: i32) -> usize {
        self.partitions
            .get(&partition)
            .map_or(0, |w| w.pending.len())
    }

    /// Stops tracking every partition (at shutdown, once the final commit is done).
    pub fn forget_all(&mut self) {
        self.partitions.clear();
        self.in_flight = 0;
    }

    /// Stops tracking a revoked partition. Its committable offset, if any, is returned so it can
    /// still be committed before the partition is handed over.
    pub fn forget(&mut self, partition: i32) -> Option<i64> {
        let window = self.partitions.remove(&partition)?;
        self.in_flight -= window.pending.len();
        window.committable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_only_across_contiguous_acknowledgements() {
        let mut t = OffsetTracker::new();
        for o in 10..15 {
            t.track(0, o);
        }
        t.ack(0, 12);
        t.ack(0, 11);
        assert_eq!(
            t.take_committable(),
            [],
            "10 is still in flight: nothing moves past the gap"
        );
        t.ack(0, 10);
        assert_eq!(
            t.take_committable(),
            [(0, 13)],
            "10, 11, 12 done: resume at 13"
        );
        assert_eq!(t.take_committable(), [], "handed out once");
        t.ack(0, 14);
        assert_eq!(t.take_committable(), []);
        t.ack(0, 13);
        assert_eq!(t.take_committable(), [(0, 15)]);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = OffsetTracker::new();
        t.track(0, 5);
        t.track(1, 100);
        t.track(1, 101);
        t.ack(1, 101);
        t.ack(0, 5);
        assert_eq!(t.take_committable(), [(0, 6)]);
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.in_flight_for(1), 2);
    }

    #[test]
    fn duplicate_and_unknown_acknowledgements_are_ignored() {
        let mut t = OffsetTracker::new();
        t.track(0, 1);
        t.track(0, 2);
        t.ack(0, 1);
        t.ack(0, 1);
        t.ack(0, 7);
        t.ack(3, 1);
        assert_eq!(t.take_committable(), [(0, 2)]);
        assert_eq!(t.in_flight(), 1);
    }

    #[test]
    fn offset_gaps_from_compaction_or_transactions_are_fine() {
        // Kafka offsets need not be consecutive (compaction, transaction markers).
        let mut t = OffsetTracker::new();
        for o in [3, 7, 8, 20] {
            t.track(0, o);
        }
        for o in [20, 8, 7, 3] {
            t.ack(0, o);
        }
        assert_eq!(t.take_committable(), [(0, 21)]);
    }

    #[test]
    fn rewinding_a_partition_restarts_its_window() {
        let mut t = OffsetTracker::new();
        t.track(0, 50);
        t.track(0, 51);
        t.track(0, 40); // re-assigned and resumed from the last commit
        assert_eq!(t.in_flight(), 1);
        t.ack(0, 40);
        assert_eq!(t.take_committable(), [(0, 41)]);
    }

    #[test]
    fn forgetting_everything_leaves_nothing_in_flight() {
        let mut t = OffsetTracker::new();
        t.track(0, 1);
        t.track(3, 7);
        t.forget_all();
        assert_eq!((t.in_flight(), t.in_flight_for(3)), (0, 0));
        t.ack(3, 7);
        assert_eq!(t.take_committable(), []);
    }

    #[test]
    fn forgetting_a_revoked_partition_hands_back_its_position() {
        let mut t = OffsetTracker::new();
        t.track(2, 9);
        t.track(2, 10);
        t.ack(2, 9);
        assert_eq!(t.forget(2), Some(10));
        assert_eq!(t.in_flight(), 0);
        t.ack(2, 10); // a late acknowledgement after the revoke
        assert_eq!(t.take_committable(), []);
    }

    #[test]
    fn random_acknowledgement_orders_never_skip_an_unacknowledged_offset() {
        // A small deterministic shuffle (no rand crate): every prefix of acknowledgements must
        // yield a position at most the lowest unacknowledged offset.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..200 {
            let n = 1 + round % 40;
            let mut order: Vec<i64> = (0..n as i64).collect();
            for i in (1..order.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                order.swap(i, (seed % (i as u64 + 1)) as usize);
            }
            let mut t = OffsetTracker::new();
            (0..n as i64).for_each(|o| t.track(0, o));
            let mut acked = vec![false; n];
            let mut position = 0;
            for o in order {
                t.ack(0, o);
                acked[o as usize] = true;
                if let Some(&(_, p)) = t.take_committable().last() {
                    position = p;
                }
                let lowest_unacked = acked.iter().position(|a| !a).unwrap_or(n) as i64;
                assert_eq!(position, lowest_unacked);
            }
        }
    }
}
