//! The source consumer: a consumer-group member with cooperative-sticky assignment that stores
//! offsets only when the offset tracker says their events are fully acknowledged.
//!
//! `enable.auto.offset.store` is off and auto-commit is on: librdkafka commits, on its interval,
//! only what fanout explicitly stored. On a revoke, the partitions' in-flight events are given a
//! bounded time to finish, their offsets are stored and committed synchronously, and they are
//! forgotten, so the next owner resumes right after the last event that was fully written.
//!
//! Exactly-once commits offsets only through transactions (auto-commit off) and reads
//! `read_committed`; on a revoke it ends the open transaction instead
//! ([`crate::pipeline::transaction`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::pipeline::inflight::Ack;
use crate::pipeline::offsets::OffsetTracker;
use crate::pipeline::transaction::Transactions;
use crate::stats::Stats;

pub type SourceConsumer = BaseConsumer<RebalanceContext>;

/// The offset tracker and the acknowledgements feeding it. Shared between the consumer loop
/// and the rebalance callback, which both run on the consumer thread.
pub struct AckState {
    pub tracker: OffsetTracker,
    acks: Receiver<Ack>,
    /// Acknowledgements of any other generation are of writes an abort discarded.
    generation: Arc<AtomicU64>,
    stats: Arc<Stats>,
    /// Exactly-once: acknowledgements are counted only once their transaction commits; these
    /// are the open transaction's so far.
    uncommitted: Option<u64>,
}

impl AckState {
    pub fn new(acks: Receiver<Ack>, generation: Arc<AtomicU64>, stats: Arc<Stats>) -> Self {
        Self {
            tracker: OffsetTracker::new(),
            acks,
            generation,
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
        if ack.generation != self.generation.load(Ordering::Acquire) {
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

/// Rebalance and commit callbacks.
pub struct RebalanceContext {
    pub state: Arc<Mutex<AckState>>,
    pub topic: String,
    /// How long a revoke waits for the in-flight events of the revoked partitions.
    pub revoke_drain: Duration,
    pub stats: Arc<Stats>,
    /// Exactly-once: the transactions, which a revoke must end first.
    pub transactions: Option<Arc<Transactions>>,
}

impl RebalanceContext {
    pub fn lock(&self) -> MutexGuard<'_, AckState> {
        crate::lock(&self.state)
    }
}

impl ClientContext for RebalanceContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.stats.client_errors.report("consumer", &error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::kafka::log("consumer", level, fac, message);
    }

    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        self.stats
            .record_consumer_statistics(&statistics, &self.topic);
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &SourceConsumer, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let partitions: Vec<i32> = list
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                let mut state = self.lock();
                let deadline = Instant::now() + self.revoke_drain;
                if let Some(transactions) = &self.transactions {
                    // Commit what the open transaction holds, so the next owner of these
                    // partitions starts right after it (or abort it, if it can't commit).
                    if let Err(e) = transactions.finish(consumer, &mut state, deadline) {
                        transactions.set_fatal(e);
                    }
                    for p in &partitions {
                        state.tracker.forget(*p);
                    }
                    transactions.forget(&partitions);
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
                for p in &partitions {
                    state.tracker.forget(*p);
                }
                tracing::info!(
                    ?partitions,
                    unfinished,
                    "partitions revoked; committed what was fully written"
                );
            }
            Rebalance::Assign(list) => {
                let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(?partitions, "partitions assigned");
            }
            Rebalance::Error(e) => tracing::warn!("rebalance error: {e}"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                self.stats
                    .committed_offsets
                    .fetch_add(offsets.count() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            // Nothing stored since the last commit: not a failure.
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => {}
            Err(e) => {
                self.stats
                    .commit_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!("offset commit failed: {e}");
            }
        }
    }
}

/// Commits stored offsets and waits for the broker's answer. "Nothing to commit" is success.
pub fn commit_sync(consumer: &SourceConsumer) -> KafkaResult<()> {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => Ok(()),
        other => other,
    }
}

/// Settings of the source consumer.
pub struct ConsumerSettings<'a> {
    pub bootstrap_servers: &'a str,
    pub group_id: &'a str,
    pub topic: &'a str,
    pub commit_interval: Duration,
    pub properties: &'a [(String, String)],
    pub revoke_drain: Duration,
    /// Exactly-once: commit through these transactions instead of auto-commit.
    pub transactions: Option<Arc<Transactions>>,
}

/// Creates the consumer and subscribes it to the source topic.
pub fn create(
    settings: &ConsumerSettings<'_>,
    state: Arc<Mutex<AckState>>,
    stats: Arc<Stats>,
) -> anyhow::Result<SourceConsumer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", settings.bootstrap_servers)
        // A new group reads the topic from the start: events already in Kafka are routed too.
        .set("auto.offset.reset", "earliest")
        // Group state and partition lag, for /readyz and /metrics; a user setting wins.
        .set("statistics.interval.ms", "1000");
    for (key, value) in settings.properties {
        config.set(key, value);
    }
    config
        .set("group.id", settings.group_id)
        .set("enable.auto.offset.store", "false");
    // KIP-848's protocol assigns on the broker, always incrementally; librdkafka refuses a
    // client-side strategy with it.
    let consumer_protocol = settings.properties.iter().any(|(key, value)| {
        key.eq_ignore_ascii_case("group.protocol") && value.trim().eq_ignore_ascii_case("consumer")
    });
    if !consumer_protocol {
        config.set("partition.assignment.strategy", "cooperative-sticky");
    }
    if settings.transactions.is_some() {
        // Offsets are committed by the transactions. Reading committed data only also makes
        // the group's offset fetch wait for a pending transactional commit (KIP-447).
        config
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
    } else {
        config.set("enable.auto.commit", "true").set(
            "auto.commit.interval.ms",
            settings.commit_interval.as_millis().to_string(),
        );
    }
    let context = RebalanceContext {
        state,
        topic: settings.topic.to_owned(),
        revoke_drain: settings.revoke_drain,
        stats,
        transactions: settings.transactions.clone(),
    };
    let consumer: SourceConsumer = config
        .create_with_context(context)
        .map_err(|e| super::client_error(e, "creating the Kafka consumer"))?;
    consumer
        .subscribe(&[settings.topic])
        .with_context(|| format!("subscribing to {}", settings.topic))?;
    Ok(consumer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    fn ack(offset: i64, generation: u64) -> Ack {
        Ack {
            partition: 0,
            offset,
            generation,
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
        let generation = Arc::new(AtomicU64::new(0));
        let mut state = AckState::new(rx, generation.clone(), stats.clone());
        state.count_at_commit();
        for offset in 0..3 {
            state.tracker.track(0, offset);
            tx.send(ack(offset, 0)).unwrap();
        }
        state.drain();
        assert_eq!(stats.acknowledged.load(Ordering::Relaxed), 0);
        assert_eq!(state.take_uncommitted(), 3);
        assert_eq!(state.take_uncommitted(), 0, "taken once");
        // An aborted generation's late acknowledgement counts for nothing.
        generation.store(1, Ordering::Release);
        tx.send(ack(3, 0)).unwrap();
        state.drain();
        assert_eq!(state.take_uncommitted(), 0);
    }
}
