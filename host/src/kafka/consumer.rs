//! The source consumer: a consumer-group member with cooperative-sticky assignment whose
//! offsets are stored only when the pipeline says so.
//!
//! `enable.auto.offset.store` is off. At-least-once turns auto-commit on: librdkafka commits, on
//! its interval, only what the pipeline explicitly stored. Exactly-once commits offsets only
//! through transactions (auto-commit off) and reads `read_committed`. What a revoke must do
//! first (drain and commit, or end the open transaction) is the pipeline's: the rebalance
//! callback calls its [`RebalanceHook`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientContext, TopicPartitionList};

use crate::stats::Stats;

pub type SourceConsumer = BaseConsumer<SourceContext>;

/// What the pipeline does when the group takes partitions away, before they go: called on the
/// consumer's thread, inside `poll`, with the revoked partitions of the source topic.
pub trait RebalanceHook: Send + Sync {
    fn revoking(&self, consumer: &SourceConsumer, partitions: &[i32]);
}

/// The consumer's callbacks: rebalances (through the pipeline's hook), commits and client
/// errors.
pub struct SourceContext {
    topic: String,
    stats: Arc<Stats>,
    hook: Arc<dyn RebalanceHook>,
}

impl ClientContext for SourceContext {
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

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &SourceConsumer, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let partitions: Vec<i32> = list
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                self.hook.revoking(consumer, &partitions);
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
    /// Commit through transactions (exactly-once) instead of auto-commit.
    pub transactional: bool,
}

/// Creates the consumer and subscribes it to the source topic.
pub fn create(
    settings: &ConsumerSettings<'_>,
    hook: Arc<dyn RebalanceHook>,
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
    if settings.transactional {
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
    let context = SourceContext {
        topic: settings.topic.to_owned(),
        stats,
        hook,
    };
    let consumer: SourceConsumer = config
        .create_with_context(context)
        .map_err(|e| super::client_error(e, "creating the Kafka consumer"))?;
    consumer
        .subscribe(&[settings.topic])
        .with_context(|| format!("subscribing to {}", settings.topic))?;
    Ok(consumer)
}
