//! Writing records: an idempotent producer (`acks=all`), transactional when given an id, whose
//! delivery reports go, with the token each record carried, to whoever implements
//! [`Deliveries`].
//!
//! The producer never looks inside a token (Vector's Kafka sink carries its finalizers the same
//! way): what a delivered or failed write means, retries and dead letters, is the pipeline's
//! (its delivery module). What it knows is Kafka's: client settings, how final an
//! error is ([`Refusal`]), librdkafka's fatal error, and its `TXNERR` log line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};

use crate::stats::Stats;

/// A record ready to be (re)sent: owned, so it can wait for a retry.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    /// `None` sends the bytes the sender passes beside it (the event's own source bytes),
    /// without copying them.
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl OutRecord {
    fn owned_headers(&self) -> Option<OwnedHeaders> {
        if self.headers.is_empty() {
            return None;
        }
        let headers = self.headers.iter().fold(
            OwnedHeaders::new_with_capacity(self.headers.len()),
            |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: value.as_deref(),
                })
            },
        );
        Some(headers)
    }
}

/// What becomes of the records a [`KafkaProducer`] sends: told on librdkafka's polling thread.
pub trait Deliveries: Send + Sync + 'static {
    /// What travels with each record, never opened by the producer.
    type Token: Send + Sync + 'static;
    /// The broker has the record.
    fn delivered(&self, token: Box<Self::Token>, topic: &str);
    /// The record was not written: `message` is librdkafka's copy of it.
    fn failed(&self, token: Box<Self::Token>, message: &BorrowedMessage<'_>, error: &KafkaError);
    /// librdkafka says the open transaction can't commit (its `TXNERR` log line), whatever the
    /// delivery reports say.
    fn transaction_failed(&self, message: &str);
}

/// The librdkafka producer.
pub struct KafkaProducer<D: Deliveries> {
    inner: Arc<ThreadedProducer<DeliveryContext<D>>>,
    /// Set by the error callback on every error: whether librdkafka's fatal error is worth
    /// asking for. (A fatal error reaches the callback under its cause's code, such as
    /// OUT_OF_ORDER_SEQUENCE_NUMBER, not as `Fatal`.)
    errors_reported: Arc<AtomicBool>,
}

impl<D: Deliveries> Clone for KafkaProducer<D> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            errors_reported: self.errors_reported.clone(),
        }
    }
}

impl<D: Deliveries> KafkaProducer<D> {
    /// Creates the producer. `properties` are the user's librdkafka settings; the ones delivery
    /// depends on are set here and cannot be overridden (config validation refuses them).
    pub fn new(
        bootstrap_servers: &str,
        properties: &[(String, String)],
        transactional_id: Option<&str>,
        deliveries: D,
        stats: Arc<Stats>,
    ) -> anyhow::Result<Self> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap_servers);
        config.set("linger.ms", "5");
        // Broker connections, for /readyz; a user setting wins.
        config.set("statistics.interval.ms", "1000");
        for (key, value) in properties {
            config.set(key, value);
        }
        // Idempotence keeps per-partition order across internal retries and implies acks=all.
        config.set("enable.idempotence", "true").set("acks", "all");
        if let Some(id) = transactional_id {
            config.set("transactional.id", id);
        }
        let errors_reported = Arc::new(AtomicBool::new(false));
        let context = DeliveryContext {
            deliveries,
            errors_reported: errors_reported.clone(),
            stats,
        };
        let inner: ThreadedProducer<DeliveryContext<D>> = config
            .create_with_context(context)
            .map_err(|e| super::client_error(e, "creating the Kafka producer"))?;
        Ok(Self {
            inner: Arc::new(inner),
            errors_reported,
        })
    }

    /// Hands `record` to librdkafka, with `payload` unless the record has its own, stamped
    /// `timestamp_ms`. While librdkafka's queue is full it waits briefly and tries again (the
    /// polling thread is draining it); any other error hands the token back.
    pub fn send(
        &self,
        mut token: Box<D::Token>,
        record: &OutRecord,
        payload: &[u8],
        timestamp_ms: Option<i64>,
    ) -> Result<(), (KafkaError, Box<D::Token>)> {
        let payload: &[u8] = record.payload.as_deref().unwrap_or(payload);
        loop {
            let mut base = BaseRecord::with_opaque_to(&record.topic, token).payload(payload);
            if let Some(key) = &record.key {
                base = base.key(key);
            }
            if let Some(headers) = record.owned_headers() {
                base = base.headers(headers);
            }
            if let Some(timestamp_ms) = timestamp_ms {
                base = base.timestamp(timestamp_ms);
            }
            match self.inner.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    token = returned.delivery_opaque;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((error, returned)) => return Err((error, returned.delivery_opaque)),
            }
        }
    }

    /// The librdkafka client, for the transaction calls.
    pub fn client(&self) -> &ThreadedProducer<DeliveryContext<D>> {
        &self.inner
    }

    /// Waits up to `timeout` for every queued write to be delivered.
    pub fn flush(&self, timeout: Duration) -> anyhow::Result<()> {
        self.inner.flush(timeout).context("flushing the producer")
    }

    /// Records queued in librdkafka, not yet delivered.
    pub fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
    }

    /// The fatal error librdkafka reported, if it did. An idempotent producer's fatal error
    /// (its sequence numbers out of step with the broker's, say) fails every later write, so
    /// nothing would ever be committed again: the pipeline stops, and the restarted process
    /// gets a new producer id.
    pub fn fatal_error(&self) -> Option<anyhow::Error> {
        // librdkafka sets its fatal error before it reports it.
        if !self.errors_reported.swap(false, Ordering::AcqRel) {
            return None;
        }
        let (code, reason) = self.inner.client().fatal_error()?;
        self.errors_reported.store(true, Ordering::Release);
        Some(anyhow::anyhow!(
            "the Kafka producer failed for good: {reason} ({code:?}); no write can succeed \
             any more, so fanout stops (what was written is committed, the rest is consumed \
             again after the restart)"
        ))
    }
}

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// The `message.max.bytes` the user set, or librdkafka's default (config validation has checked
/// that it is a number; anything else falls back to the default, which is then what librdkafka
/// refuses at creation): librdkafka refuses a larger record before sending it.
pub fn message_max_bytes(properties: &[(String, String)]) -> usize {
    properties
        .iter()
        .rev()
        .find(|(key, _)| key == "message.max.bytes")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
}

/// What a record batch of one record adds to it: the broker compares a topic's
/// `max.message.bytes` with the whole batch (its header is 61 bytes), with room to spare.
pub const BATCH_OVERHEAD: usize = 128;

/// How final a failed write is: what the error says about sending it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Sending it again may succeed (a timeout, a leader change, a broker away).
    Transient,
    /// This record can never be written (too large, invalid), or nothing can (the cluster
    /// refuses this client).
    Record,
    /// Nothing can be written to its topic (not authorised, unknown, an invalid name).
    Topic,
}

impl Refusal {
    pub fn of(error: &KafkaError) -> Self {
        use RDKafkaErrorCode as E;
        match error.rdkafka_error_code() {
            Some(E::TopicAuthorizationFailed | E::InvalidTopic | E::UnknownTopic) => Self::Topic,
            Some(
                E::MessageSizeTooLarge
                | E::InvalidMessageSize
                | E::MessageBatchTooLarge
                | E::ClusterAuthorizationFailed
                | E::InvalidRecord
                | E::PolicyViolation,
            ) => Self::Record,
            _ => Self::Transient,
        }
    }

    /// Sending the same record again cannot succeed.
    pub fn is_permanent(self) -> bool {
        self != Self::Transient
    }
}

/// The producer's callbacks, on its polling thread.
pub struct DeliveryContext<D: Deliveries> {
    deliveries: D,
    errors_reported: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

impl<D: Deliveries> ClientContext for DeliveryContext<D> {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors_reported.store(true, Ordering::Release);
        self.stats.client_errors.report("producer", &error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        // librdkafka's one word that the open transaction can't commit ("current transaction
        // must be aborted"), which no delivery report may ever say: an epoch bump it needs
        // (OUT_OF_ORDER_SEQUENCE_NUMBER) holds the transaction's writes unsent until the abort.
        if fac == "TXNERR" {
            self.deliveries.transaction_failed(message);
        }
        super::log("producer", level, fac, message);
    }

    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        self.stats.record_producer_statistics(&statistics);
    }
}

impl<D: Deliveries> ProducerContext for DeliveryContext<D> {
    type DeliveryOpaque = Box<D::Token>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Self::DeliveryOpaque) {
        match result {
            Ok(message) => {
                use rdkafka::Message as _;
                self.deliveries.delivered(token, message.topic());
            }
            Err((error, message)) => {
                self.stats.record_produce_error();
                self.deliveries.failed(token, message, error);
            }
        }
    }
}
