//! How consumed offsets get committed: the two committers the one consume loop drives.
//!
//! - [`AutoCommit`] (at-least-once) stores the positions the offset tracker hands out, every
//!   event before them fully written, and librdkafka commits them on its interval. It also
//!   decides when the consumer may take more events: not while `max_in_flight` events are in
//!   flight or too many bytes wait for a retry, pausing the partitions only if that lasts.
//! - [`TransactionalCommit`] (exactly-once) commits through the transactions
//!   ([`super::transaction`]): it ends one when it is due, admits each record into the open one,
//!   and rewinds what an abort gave back.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::acks::AckState;
use super::feed::Feed;
use super::transaction::{self, Transactions};
use crate::kafka::consumer::SourceConsumer;
use crate::stats::Stats;

/// What the consume loop asks of the way offsets are committed, around each poll.
pub trait Committer {
    /// Acknowledgements were just applied to `state`.
    fn acknowledged(&mut self, consumer: &SourceConsumer, state: &mut AckState);

    /// Whether the consumer may poll for more events now; `false` after waiting a little, so
    /// the loop looks again.
    fn may_take(
        &mut self,
        consumer: &SourceConsumer,
        state: &mut AckState,
        in_flight: usize,
        feed: &mut Feed,
    ) -> anyhow::Result<bool>;

    /// A topic is missing: no more events are taken until it is back.
    fn hold(&mut self, consumer: &SourceConsumer, state: &mut AckState) -> anyhow::Result<()>;

    /// How long the next poll may wait for a record.
    fn poll_timeout(&self) -> Duration;

    /// After each poll: the partitions rewound meanwhile, whose records of before the rewind
    /// are skipped (they come again).
    fn polled(&mut self, consumer: &SourceConsumer) -> anyhow::Result<BTreeMap<i32, i64>>;

    /// Takes the record at `offset` of `partition`; returns the epoch it is routed in.
    fn admit(&mut self, partition: i32, offset: i64) -> anyhow::Result<u64>;

    /// The loop is stopping: end what is open, by `deadline`.
    fn close(
        &mut self,
        consumer: &SourceConsumer,
        state: &mut AckState,
        deadline: Instant,
    ) -> anyhow::Result<()>;
}

/// How long the pipeline may stay full without polling the consumer before it pauses the
/// partitions and polls again. Far below `max.poll.interval.ms` (5 minutes by default), after
/// which a consumer that has not polled leaves its group.
const LONG_STALL: Duration = Duration::from_secs(10);

/// The bytes of failed writes waiting for a retry past which the consumer takes no more
/// events (`fanout_retry_bytes`). A routed write that forwards the event's value holds no copy
/// of it; a plugin's own payloads, keys and headers are copied.
const RETRY_BUDGET_BYTES: u64 = 128 << 20;

/// At-least-once: offsets stored for librdkafka's auto-commit, and backpressure.
pub struct AutoCommit<'a> {
    topic: &'a str,
    max_in_flight: usize,
    stats: &'a Stats,
    /// Whether every partition is paused after a long stall.
    paused: bool,
    full_since: Option<Instant>,
}

impl<'a> AutoCommit<'a> {
    pub fn new(topic: &'a str, max_in_flight: usize, stats: &'a Stats) -> Self {
        Self {
            topic,
            max_in_flight,
            stats,
            paused: false,
            full_since: None,
        }
    }
}

impl Committer for AutoCommit<'_> {
    fn acknowledged(&mut self, consumer: &SourceConsumer, state: &mut AckState) {
        state.store(consumer, self.topic);
    }

    /// Backpressure, so memory stays bounded. At the limit, take no more messages and wait for
    /// acknowledgements; librdkafka's own prefetch queue (bounded by
    /// `queued.max.messages.kbytes`) holds what arrives meanwhile. Pausing the partitions
    /// instead makes librdkafka drop that queue and fetch it again on resume: on a busy
    /// pipeline that cost three quarters of the throughput (`cargo bench --bench pipeline`:
    /// 11,000 against 43,000 events/s). Only a long stall, such as the brokers being down,
    /// pauses, so the consumer can go on polling and keep its group membership. Failed writes
    /// waiting for a retry hold copies of their records: past a budget, no more events either.
    fn may_take(
        &mut self,
        consumer: &SourceConsumer,
        state: &mut AckState,
        in_flight: usize,
        feed: &mut Feed,
    ) -> anyhow::Result<bool> {
        let retrying = self.stats.retry_bytes.load(Ordering::Relaxed) > RETRY_BUDGET_BYTES;
        if in_flight >= self.max_in_flight || retrying {
            let since = *self.full_since.get_or_insert_with(Instant::now);
            if since.elapsed() < LONG_STALL {
                state.wait(Duration::from_millis(5));
                return Ok(false);
            }
            if !self.paused {
                self.stats.pauses.fetch_add(1, Ordering::Relaxed);
                feed.pause_all(consumer, true);
                self.paused = true;
            }
        } else {
            self.full_since = None;
            if self.paused && in_flight <= self.max_in_flight / 2 {
                feed.pause_all(consumer, false);
                self.paused = false;
            }
        }
        Ok(true)
    }

    /// What is written is still stored and committed.
    fn hold(&mut self, _: &SourceConsumer, _: &mut AckState) -> anyhow::Result<()> {
        Ok(())
    }

    fn poll_timeout(&self) -> Duration {
        Duration::from_millis(if self.paused { 5 } else { 50 })
    }

    fn polled(&mut self, _: &SourceConsumer) -> anyhow::Result<BTreeMap<i32, i64>> {
        Ok(BTreeMap::new())
    }

    fn admit(&mut self, _: i32, _: i64) -> anyhow::Result<u64> {
        Ok(0)
    }

    /// The final commit comes after the drain ([`super::run`]), once the routing threads are
    /// done and the producer flushed.
    fn close(&mut self, _: &SourceConsumer, _: &mut AckState, _: Instant) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Exactly-once: offsets committed by the transactions, which end by size or age.
pub struct TransactionalCommit<'a> {
    transactions: &'a Transactions,
    topic: &'a str,
    max_in_flight: usize,
}

impl<'a> TransactionalCommit<'a> {
    pub fn new(transactions: &'a Transactions, topic: &'a str, max_in_flight: usize) -> Self {
        Self {
            transactions,
            topic,
            max_in_flight,
        }
    }

    /// When a transaction ended now must have its writes confirmed.
    fn end_by() -> Instant {
        Instant::now() + transaction::WRITE_TIMEOUT
    }
}

impl Committer for TransactionalCommit<'_> {
    /// Offsets go with the transaction's commit, not before.
    fn acknowledged(&mut self, _: &SourceConsumer, _: &mut AckState) {}

    fn may_take(
        &mut self,
        consumer: &SourceConsumer,
        state: &mut AckState,
        in_flight: usize,
        _: &mut Feed,
    ) -> anyhow::Result<bool> {
        if self.transactions.due(in_flight, self.max_in_flight) {
            self.transactions.finish(consumer, state, Self::end_by())?;
        }
        Ok(true)
    }

    /// Ends the open transaction (it commits if all its writes landed; it does not wait for
    /// those that can't) and begins no other. The consumer is not polled meanwhile, well
    /// within `max.poll.interval.ms`; the rewinds an abort owes wait for the next poll.
    fn hold(&mut self, consumer: &SourceConsumer, state: &mut AckState) -> anyhow::Result<()> {
        if self.transactions.is_open() {
            self.transactions.finish(consumer, state, Self::end_by())?;
        }
        Ok(())
    }

    fn poll_timeout(&self) -> Duration {
        self.transactions.poll_timeout(Duration::from_millis(50))
    }

    /// An abort (possibly inside that poll's rebalance callback) rewinds its partitions; a
    /// record of one of them is from before the rewind and comes again.
    fn polled(&mut self, consumer: &SourceConsumer) -> anyhow::Result<BTreeMap<i32, i64>> {
        if let Some(e) = self.transactions.take_fatal() {
            return Err(e);
        }
        let rewinds = self.transactions.take_rewinds();
        if !rewinds.is_empty() {
            transaction::rewind(consumer, self.topic, &rewinds)?;
        }
        Ok(rewinds)
    }

    fn admit(&mut self, partition: i32, offset: i64) -> anyhow::Result<u64> {
        self.transactions.admit(partition, offset)
    }

    fn close(
        &mut self,
        consumer: &SourceConsumer,
        state: &mut AckState,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        self.transactions.finish(consumer, state, deadline)
    }
}
