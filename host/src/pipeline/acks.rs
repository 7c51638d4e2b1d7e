//! What is safe to commit: the offset tracker fed by acknowledgements, and what a revoke does
//! with it before its partitions go.
//!
//! At-least-once stores the positions the tracker hands out (every event before them fully
//! written) for librdkafka's auto-commit. On a revoke, the partitions' in-flight events are
//! given a bounded time to finish, their offsets are stored and committed synchronously, and
//! they are forgotten, so the next owner resumes right after the last event that was fully
//! written. Exactly-once commits through its transactions instead, and on a revoke ends the
//! open one ([`super::transaction`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;
use rdkafka::{Offset, TopicPartitionList};

use super::inflight::Ack;
use super::offsets::OffsetTracker;
use super::transaction::Transactions;
use crate::kafka::consumer::{RebalanceHook, SourceConsumer, commit_sync};
use crate::lock;
use crate::stats::Stats;

/// The offset tracker and the acknowledgements feeding it. Shared between the consumer loop
/// and the rebalance callback, which both run on the consumer thread.
pub struct AckState {
    pub tracker: OffsetTracker,
    acks: Receiver<Ack>,
    /// Acknowledgements of any other epoch are of writes an abort discarded.
    epoch: Arc<AtomicU64>,
    stats: Arc<Stats>,
    /// Exactly-once: acknowledgements are counted only once their transaction commits; these
    /// are the open transaction's so far.
    uncommitted: Option<u64>,
}

impl AckState {
    pub fn new(acks: Receiver<Ack>, epoch: Arc<AtomicU64>, stats: Arc<Stats>) -> Self {
        Self {
            tracker: OffsetTracker::new(),
            acks,
            epoch,
            stats,
            uncommitted: None,
        }
    }

    /// Counts acknowledgements only when [`Self::take_uncommitted`] hands them to a commit.
    pub fn count_at_commit(&mut self) {
        self.uncommitted.get_or_insert(0);
    }

    /// The acknowledgements counted since the last call (those of the transaction ending).
    pub fn take_uncommitted(&mut self) -> u64 {
        self.uncommitted.as_mut().map_or(0, std::mem::take)
    }

    fn apply(&mut self, ack: Ack) {
        if ack.epoch != self.epoch.load(Ordering::Acquire) {
            return;
        }
        self.tracker.ack(ack.partition, ack.offset);
        match &mut self.uncommitted {
            Some(uncommitted) => *uncommitted += 1,
            None => {
                self.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Applies every acknowledgement received so far.
    pub fn drain(&mut self) {
        while let Ok(ack) = self.acks.try_recv() {
            self.apply(ack);
        }
    }

    /// Waits up to `timeout` for one acknowledgement; false if none came.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        match self.acks.recv_timeout(timeout) {
            Ok(ack) => {
                self.apply(ack);
                self.drain();
                true
            }
            Err(_) => false,
        }
    }

    /// Stores the positions that advanced, for the next commit.
    pub fn store(&mut self, consumer: &SourceConsumer, topic: &str) {
        let committable = self.tracker.take_committable();
        if committable.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::with_capacity(committable.len());
        for (partition, offset) in committable {
            // `store_offsets` takes the resume position as is (unlike `store_offset`, which
            // adds one), and the tracker hands out exactly that: last acknowledged + 1.
            if let Err(e) = list.add_partition_offset(topic, partition, Offset::Offset(offset)) {
                tracing::warn!(partition, offset, "cannot store offset: {e}");
            }
        }
        if let Err(e) = consumer.store_offsets(&list) {
            // A partition revoked meanwhile refuses the store; its next owner re-reads.
            tracing::debug!("storing offsets: {e}");
        }
    }
}

/// What a revoke does first: at-least-once drains and commits the revoked partitions,
/// exactly-once ends the open transaction.
pub struct Revoke {
    pub state: Arc<Mutex<AckState>>,
    pub topic: String,
    /// How long a revoke waits for the in-flight events of the revoked partitions.
    pub drain: Duration,
    /// Exactly-once: the transactions, which a revoke must end first.
    pub transactions: Option<Arc<Transactions>>,
}

impl RebalanceHook for Revoke {
    fn revoking(&self, consumer: &SourceConsumer, partitions: &[i32]) {
        let mut state = lock(&self.state);
        let deadline = Instant::now() + self.drain;
        if let Some(transactions) = &self.transactions {
            // Commit what the open transaction holds, so the next owner of these
            // partitions starts right after it (or abort it, if it can't commit).
            if let Err(e) = transactions.finish(consumer, &mut state, deadline) {
                transactions.set_fatal(e);
            }
            for p in partitions {
                state.tracker.forget(*p);
            }
            transactions.forget(partitions);
            tracing::info!(?partitions, "partitions revoked; transaction ended");
            return;
        }
        state.drain();
        while partitions
            .iter()
            .any(|&p| state.tracker.in_flight_for(p) > 0)
            && Instant::now() < deadline
        {
            state.wait(Duration::from_millis(10));
        }
        let unfinished: usize = partitions
            .iter()
            .map(|&p| state.tracker.in_flight_for(p))
            .sum();
        state.store(consumer, &self.topic);
        if let Err(e) = commit_sync(consumer) {
            tracing::warn!("commit on revoke failed: {e}");
        }
        for p in partitions {
            state.tracker.forget(*p);
        }
        tracing::info!(
            ?partitions,
            unfinished,
            "partitions revoked; committed what was fully written"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    fn ack(offset: i64, epoch: u64) -> Ack {
        Ack {
            partition: 0,
            offset,
            epoch,
        }
    }

    #[test]
    fn at_least_once_counts_each_acknowledgement_as_it_comes() {
        let (tx, rx) = channel();
        let stats = Arc::new(Stats::default());
        let mut state = AckState::new(rx, Arc::new(AtomicU64::new(0)), stats.clone());
        state.tracker.track(0, 0);
        tx.send(ack(0, 0)).unwrap();
        state.drain();
        assert_eq!(stats.acknowledged.load(Ordering::Relaxed), 1);
        assert_eq!(state.take_uncommitted(), 0);
    }

    #[test]
    fn exactly_once_counts_acknowledgements_only_when_handed_to_a_commit() {
        let (tx, rx) = channel();
        let stats = Arc::new(Stats::default());
        let epoch = Arc::new(AtomicU64::new(0));
        let mut state = AckState::new(rx, epoch.clone(), stats.clone());
        state.count_at_commit();
        for offset in 0..3 {
            state.tracker.track(0, offset);
            tx.send(ack(offset, 0)).unwrap();
        }
        state.drain();
        assert_eq!(stats.acknowledged.load(Ordering::Relaxed), 0);
        assert_eq!(state.take_uncommitted(), 3);
        assert_eq!(state.take_uncommitted(), 0, "taken once");
        // An aborted epoch's late acknowledgement counts for nothing.
        epoch.store(1, Ordering::Release);
        tx.send(ack(3, 0)).unwrap();
        state.drain();
        assert_eq!(state.take_uncommitted(), 0);
    }
}
