//! Writing records: an idempotent producer (`acks=all`) whose delivery reports drive
//! acknowledgements, retries and dead letters.
//!
//! Writes are never awaited one at a time: each carries a [`WriteToken`] through librdkafka, and
//! the delivery callback (on the producer's own polling thread) settles it. A retriable failure
//! is re-sent after a backoff by the retry thread; a permanent one (message too large, topic not
//! authorised, invalid topic) turns a routed write into a dead letter, and a dead-letter write
//! is retried until it succeeds: an offset is never committed past a write that did not land.
//!
//! Exactly-once makes it a transactional producer instead: a failed write is not retried
//! here but reported to the transaction ([`TransactionFaults`]), which aborts and processes its
//! events again.

use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};

use crate::deadletter::DeadLetterReason;
use crate::pipeline::inflight::{InFlightEvent, WriteKind, WriteToken};
use crate::pipeline::transaction::TransactionFaults;

/// A transactional producer's id, and where its write failures are reported.
pub struct Transactional {
    pub id: String,
    pub faults: Arc<TransactionFaults>,
}

/// Longest wait between two attempts of a failing write.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A record ready to be (re)sent: owned, so it can wait for a retry.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    /// `None` sends the event's own source bytes, without copying them.
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

/// The shared producer.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<ThreadedProducer<DeliveryContext>>,
    retries: Sender<RetryMsg>,
    faults: Option<Arc<TransactionFaults>>,
    dead_letter_topic: Arc<str>,
}

/// The producer's retry thread; stops when every [`Producer`] handle is dropped.
pub struct RetryThread(JoinHandle<()>);

impl RetryThread {
    pub fn join(self) {
        let _ = self.0.join();
    }
}

impl Producer {
    /// Creates the producer. `properties` are the user's librdkafka settings; the ones at-least-
    /// once depends on are set here and cannot be overridden (config validation refuses them).
    pub fn new(
        bootstrap_servers: &str,
        properties: &[(String, String)],
        dead_letter_topic: &str,
        stats: Arc<crate::stats::Stats>,
        transactional: Option<Transactional>,
    ) -> anyhow::Result<(Self, RetryThread)> {
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
        if let Some(transactional) = &transactional {
            config.set("transactional.id", &transactional.id);
        }
        let faults = transactional.map(|t| t.faults);
        let (retry_tx, retry_rx) = channel();
        let context = DeliveryContext {
            retries: retry_tx.clone(),
            faults: faults.clone(),
            stats,
        };
        let inner: ThreadedProducer<DeliveryContext> = config
            .create_with_context(context)
            .map_err(|e| super::client_error(e, "creating the Kafka producer"))?;
        let producer = Self {
            inner: Arc::new(inner),
            retries: retry_tx,
            faults,
            dead_letter_topic: dead_letter_topic.into(),
        };
        let thread = std::thread::Builder::new()
            .name("fanout-retry".into())
            .spawn({
                let faults = producer.faults.clone();
                let (producer, retries) = (producer.inner.clone(), producer.retries.clone());
                move || retry_loop(&producer, &retries, faults.as_deref(), retry_rx)
            })
            .context("starting the retry thread")?;
        Ok((producer, RetryThread(thread)))
    }

    pub fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }

    /// Sends one routed write for `event`.
    pub fn send_route(&self, event: &Arc<InFlightEvent>, record: OutRecord) {
        self.send(
            WriteToken {
                event: event.clone(),
                kind: WriteKind::Route,
                attempt: 0,
            },
            record,
        );
    }

    /// Sends `event` to the dead-letter topic with `reason`.
    pub fn send_dead_letter(
        &self,
        event: &Arc<InFlightEvent>,
        reason: &DeadLetterReason,
        plugin: Option<&str>,
    ) {
        let record = event.dead_letter_record(&self.dead_letter_topic, reason, plugin);
        self.send(
            WriteToken {
                event: event.clone(),
                kind: WriteKind::DeadLetter,
                attempt: 0,
            },
            record,
        );
    }

    fn send(&self, token: WriteToken, record: OutRecord) {
        send_or_schedule(
            &self.inner,
            &self.retries,
            self.faults.as_deref(),
            Box::new(token),
            record,
        );
    }

    /// The librdkafka client, for the transaction calls.
    pub fn client(&self) -> &ThreadedProducer<DeliveryContext> {
        &self.inner
    }

    /// Waits up to `timeout` for every queued write to be delivered.
    pub fn flush(&self, timeout: Duration) -> anyhow::Result<()> {
        self.inner.flush(timeout).context("flushing the producer")
    }

    /// Stops the retry thread. Writes still waiting for a retry are abandoned unacknowledged:
    /// their offsets are not committed, so their events are consumed again after a restart.
    pub fn stop_retries(&self) {
        let _ = self.retries.send(RetryMsg::Stop);
    }

    /// Records queued in librdkafka, not yet delivered.
    pub fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
    }
}

enum RetryMsg {
    Retry(Retry),
    Stop,
}

/// A write waiting for its next attempt.
struct Retry {
    due: Instant,
    token: Box<WriteToken>,
    record: OutRecord,
}

impl PartialEq for Retry {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
    }
}
impl Eq for Retry {}
impl PartialOrd for Retry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Retry {
    // Earliest first in a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.due.cmp(&self.due)
    }
}

fn backoff(attempt: u32) -> Duration {
    (Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(10))).min(MAX_BACKOFF)
}

/// Hands a record to librdkafka; if its queue is full, waits briefly and tries again (the
/// producer's polling thread is draining it), and on any other immediate error treats the write
/// as failed like a delivery report would.
fn send_or_schedule(
    producer: &ThreadedProducer<DeliveryContext>,
    retries: &Sender<RetryMsg>,
    faults: Option<&TransactionFaults>,
    mut token: Box<WriteToken>,
    record: OutRecord,
) {
    let event = token.event.clone();
    let payload: &[u8] = record.payload.as_deref().unwrap_or(&event.raw);
    loop {
        let mut base = BaseRecord::with_opaque_to(&record.topic, token).payload(payload);
        if let Some(key) = &record.key {
            base = base.key(key);
        }
        if let Some(headers) = record.owned_headers() {
            base = base.headers(headers);
        }
        if let Some(timestamp_ms) = event.timestamp_ms {
            base = base.timestamp(timestamp_ms);
        }
        match producer.send(base) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                token = returned.delivery_opaque;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((error, returned)) => {
                let token = returned.delivery_opaque;
                settle_failure(retries, faults, token, record.clone(), &error);
                return;
            }
        }
    }
}

fn retry_loop(
    producer: &ThreadedProducer<DeliveryContext>,
    retries: &Sender<RetryMsg>,
    faults: Option<&TransactionFaults>,
    incoming: Receiver<RetryMsg>,
) {
    let mut waiting: BinaryHeap<Retry> = BinaryHeap::new();
    loop {
        let timeout = waiting.peek().map_or(Duration::from_millis(200), |r| {
            r.due.saturating_duration_since(Instant::now())
        });
        match incoming.recv_timeout(timeout) {
            Ok(RetryMsg::Retry(retry)) => waiting.push(retry),
            Ok(RetryMsg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                if !waiting.is_empty() {
                    tracing::warn!(
                        writes = waiting.len(),
                        "stopping with writes still failing; their offsets stay uncommitted"
                    );
                }
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        while waiting.peek().is_some_and(|r| r.due <= Instant::now()) {
            let Retry { token, record, .. } = waiting.pop().expect("peeked");
            send_or_schedule(producer, retries, faults, token, record);
        }
    }
}

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

fn is_permanent(error: &KafkaError) -> bool {
    Refusal::of(error).is_permanent()
}

/// What to do with a failed write: a permanent failure of a routed write becomes a dead letter
/// for its event (which keeps the event unacknowledged until that lands); anything else is
/// retried after a backoff. In a transaction, any failure is the transaction's: it aborts.
fn settle_failure(
    retries: &Sender<RetryMsg>,
    faults: Option<&TransactionFaults>,
    mut token: Box<WriteToken>,
    record: OutRecord,
    error: &KafkaError,
) {
    if let Some(faults) = faults {
        faults.record(
            &token.event,
            token.kind,
            &record.topic,
            error,
            Refusal::of(error),
        );
        return;
    }
    if token.kind == WriteKind::Route && is_permanent(error) {
        let reason = DeadLetterReason::ProduceFailed {
            topic: record.topic.clone(),
            error: error.to_string(),
        };
        tracing::warn!(
            partition = token.event.partition,
            offset = token.event.offset,
            "{reason}; sending the event to the dead-letter topic"
        );
        let dead_letter =
            token
                .event
                .dead_letter_record(token.event.dead_letter_topic(), &reason, None);
        // The dead-letter write is registered before this write is settled, so the event cannot
        // be acknowledged in between.
        token.event.add_write();
        let dl_token = Box::new(WriteToken {
            event: token.event.clone(),
            kind: WriteKind::DeadLetter,
            attempt: 0,
        });
        let _ = retries.send(RetryMsg::Retry(Retry {
            due: Instant::now(),
            token: dl_token,
            record: dead_letter,
        }));
        token.event.write_done();
        return;
    }
    if token.kind == WriteKind::DeadLetter && is_permanent(error) {
        tracing::error!(
            topic = %record.topic,
            "dead-letter write failed permanently ({error}); retrying, the source offset is held"
        );
    } else {
        tracing::debug!(topic = %record.topic, attempt = token.attempt, "write failed ({error}); retrying");
    }
    token.attempt += 1;
    let due = Instant::now() + backoff(token.attempt);
    // If the retry thread is gone (shutdown), the write is abandoned unacknowledged: its offset
    // is not committed and the event is consumed again after a restart.
    let _ = retries.send(RetryMsg::Retry(Retry { due, token, record }));
}

/// Receives delivery reports on the producer's polling thread.
pub struct DeliveryContext {
    retries: Sender<RetryMsg>,
    faults: Option<Arc<TransactionFaults>>,
    stats: Arc<crate::stats::Stats>,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.stats.client_errors.report("producer", &error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        // librdkafka's one word that the open transaction can't commit ("current transaction
        // must be aborted"), which no delivery report may ever say: an epoch bump it needs
        // (OUT_OF_ORDER_SEQUENCE_NUMBER) holds the transaction's writes unsent until the abort.
        if fac == "TXNERR"
            && let Some(faults) = &self.faults
        {
            faults.transaction_failed(message);
        }
        crate::kafka::log("producer", level, fac, message);
    }

    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        self.stats.record_producer_statistics(&statistics);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<WriteToken>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Self::DeliveryOpaque) {
        match result {
            Ok(message) => {
                self.stats
                    .record_produced(message.topic(), token.kind == WriteKind::DeadLetter);
                token.event.write_done();
            }
            Err((error, message)) => {
                let record = OutRecord {
                    topic: message.topic().to_owned(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: Some(message.payload().map(<[u8]>::to_vec).unwrap_or_default()),
                    headers: message
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                self.stats.record_produce_error();
                settle_failure(&self.retries, self.faults.as_deref(), token, record, error);
            }
        }
    }
}
