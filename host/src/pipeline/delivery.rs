//! What becomes of a write once it is handed to Kafka: delivered (its event acknowledged once
//! all its writes are), retried after a backoff, turned into a dead letter, or reported to the
//! open transaction.
//!
//! Writes are never awaited one at a time: each carries a [`WriteToken`] through librdkafka, and
//! the delivery callback (on the producer's own polling thread) settles it. A retriable failure
//! is re-sent after a backoff by the retry thread; a permanent one (message too large, topic not
//! authorised, invalid topic) turns a routed write into a dead letter, and a dead-letter write
//! is retried until it succeeds: an offset is never committed past a write that did not land.
//! A dead letter always fits: one too large to send whole goes without the event's value
//! ([`InFlightEvent::without_value`]).
//!
//! Exactly-once makes it a transactional producer instead: a failed write is not retried
//! here but reported to the transaction ([`TransactionFaults`]), which aborts and processes its
//! events again.

use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::producer::ThreadedProducer;

use super::inflight::{InFlightEvent, WriteKind, WriteToken};
use super::transaction::TransactionFaults;
use crate::deadletter::DeadLetterReason;
use crate::kafka::producer::{
    BATCH_OVERHEAD, Deliveries, DeliveryContext, KafkaProducer, OutRecord, Refusal,
    message_max_bytes,
};
use crate::stats::Stats;

/// A transactional producer's id, and where its write failures are reported.
pub struct Transactional {
    pub id: String,
    pub faults: Arc<TransactionFaults>,
}

/// Longest wait between two attempts of a failing write.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The shared producer, with the pipeline's delivery policy.
#[derive(Clone)]
pub struct Producer {
    kafka: KafkaProducer<FailedWrites>,
    failures: FailedWrites,
    dead_letter_topic: Arc<str>,
}

/// Settles delivery reports: where a failed write goes (back to the retry thread, or to the
/// transaction), and the size limit a dead-letter record is cut to.
#[derive(Clone)]
pub struct FailedWrites {
    retries: Sender<RetryMsg>,
    faults: Option<Arc<TransactionFaults>>,
    /// The largest dead-letter record to send whole: the producer's `message.max.bytes`, or
    /// the dead-letter topic's `max.message.bytes` once known, if smaller.
    dead_letter_max_bytes: Arc<AtomicUsize>,
    stats: Arc<Stats>,
}

impl FailedWrites {
    fn dead_letter_max_bytes(&self) -> usize {
        self.dead_letter_max_bytes.load(Ordering::Acquire)
    }
}

/// The producer's retry thread; stops when every [`Producer`] handle is dropped.
pub struct RetryThread(JoinHandle<()>);

impl RetryThread {
    pub fn join(self) {
        let _ = self.0.join();
    }
}

impl Producer {
    /// Creates the producer (see [`KafkaProducer::new`]) and its retry thread.
    pub fn new(
        bootstrap_servers: &str,
        properties: &[(String, String)],
        dead_letter_topic: &str,
        stats: Arc<Stats>,
        transactional: Option<Transactional>,
    ) -> anyhow::Result<(Self, RetryThread)> {
        let (retry_tx, retry_rx) = channel();
        let id = transactional.as_ref().map(|t| t.id.clone());
        let failures = FailedWrites {
            retries: retry_tx,
            faults: transactional.map(|t| t.faults),
            dead_letter_max_bytes: Arc::new(AtomicUsize::new(message_max_bytes(properties))),
            stats: stats.clone(),
        };
        let kafka = KafkaProducer::new(
            bootstrap_servers,
            properties,
            id.as_deref(),
            failures.clone(),
            stats,
        )?;
        let producer = Self {
            kafka,
            failures,
            dead_letter_topic: dead_letter_topic.into(),
        };
        let thread = std::thread::Builder::new()
            .name("fanout-retry".into())
            .spawn({
                let (kafka, failures) = (producer.kafka.clone(), producer.failures.clone());
                move || retry_loop(&kafka, &failures, retry_rx)
            })
            .context("starting the retry thread")?;
        Ok((producer, RetryThread(thread)))
    }

    pub fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }
    /// The dead-letter topic takes record batches of at most `max_bytes` (its
    /// `max.message.bytes`): larger dead letters are sent without the event's value.
    pub fn fit_dead_letters_to(&self, max_bytes: usize) {
        let fits = max_bytes.saturating_sub(BATCH_OVERHEAD);
        let was = self
            .failures
            .dead_letter_max_bytes
            .fetch_min(fits, Ordering::AcqRel);
        if fits < was {
            tracing::info!(
                topic = %self.dead_letter_topic,
                max_bytes,
                "dead letters larger than the topic's max.message.bytes go without the event's value"
            );
        }
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

    /// Sends `event` to the dead-letter topic with `reason`: without its value if the whole
    /// record would be too large, or if an earlier transaction's dead letter of it was refused
    /// as too large, or one as large was (the topic's limit, learnt after that refusal).
    pub fn send_dead_letter(
        &self,
        event: &Arc<InFlightEvent>,
        reason: &DeadLetterReason,
        plugin: Option<&str>,
    ) {
        let mut record = event.dead_letter_record(
            &self.dead_letter_topic,
            reason,
            plugin,
            self.failures.dead_letter_max_bytes(),
        );
        if let Some(faults) = &self.failures.faults
            && (faults.dead_letter_refused(event.partition, event.offset)
                || faults
                    .too_large(&self.dead_letter_topic, event.wire_size(&record))
                    .is_some())
        {
            record = event.without_value(record.clone()).unwrap_or(record);
        }
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
        send_or_schedule(&self.kafka, &self.failures, Box::new(token), record);
    }

    /// The librdkafka client, for the transaction calls.
    pub fn client(&self) -> &ThreadedProducer<DeliveryContext<FailedWrites>> {
        self.kafka.client()
    }

    /// Waits up to `timeout` for every queued write to be delivered.
    pub fn flush(&self, timeout: Duration) -> anyhow::Result<()> {
        self.kafka.flush(timeout)
    }

    /// Stops the retry thread. Writes still waiting for a retry are abandoned unacknowledged:
    /// their offsets are not committed, so their events are consumed again after a restart.
    pub fn stop_retries(&self) {
        let _ = self.failures.retries.send(RetryMsg::Stop);
    }

    /// Records queued in librdkafka, not yet delivered.
    pub fn in_flight(&self) -> i32 {
        self.kafka.in_flight()
    }

    /// See [`KafkaProducer::fatal_error`].
    pub fn fatal_error(&self) -> Option<anyhow::Error> {
        self.kafka.fatal_error()
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

impl Retry {
    /// The bytes this retry holds of its own: a record that forwards the event's value shares
    /// it with the event.
    fn bytes(&self) -> u64 {
        let record = &self.record;
        let payload = record.payload.as_ref().map_or(0, Vec::len);
        let key = record.key.as_ref().map_or(0, Vec::len);
        let headers: usize = record
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.as_ref().map_or(0, Vec::len))
            .sum();
        (payload + key + headers) as u64
    }
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

/// Hands a record to librdkafka; an immediate error is settled like a delivery report's.
fn send_or_schedule(
    kafka: &KafkaProducer<FailedWrites>,
    failures: &FailedWrites,
    token: Box<WriteToken>,
    record: OutRecord,
) {
    let event = token.event.clone();
    if let Err((error, token)) = kafka.send(token, &record, &event.raw, event.timestamp_ms) {
        settle_failure(failures, token, record, &error);
    }
}

fn retry_loop(
    kafka: &KafkaProducer<FailedWrites>,
    failures: &FailedWrites,
    incoming: Receiver<RetryMsg>,
) {
    let mut waiting: BinaryHeap<Retry> = BinaryHeap::new();
    loop {
        let timeout = waiting.peek().map_or(Duration::from_millis(200), |r| {
            r.due.saturating_duration_since(Instant::now())
        });
        match incoming.recv_timeout(timeout) {
            Ok(RetryMsg::Retry(retry)) => {
                failures
                    .stats
                    .retry_bytes
                    .fetch_add(retry.bytes(), Ordering::Relaxed);
                waiting.push(retry);
            }
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
            let retry = waiting.pop().expect("peeked");
            failures
                .stats
                .retry_bytes
                .fetch_sub(retry.bytes(), Ordering::Relaxed);
            send_or_schedule(kafka, failures, retry.token, retry.record);
        }
    }
}

fn is_permanent(error: &KafkaError) -> bool {
    Refusal::of(error).is_permanent()
}

/// What to do with a failed write: a permanent failure of a routed write becomes a dead letter
/// for its event (which keeps the event unacknowledged until that lands); anything else is
/// retried after a backoff. In a transaction, any failure is the transaction's: it aborts.
fn settle_failure(
    failures: &FailedWrites,
    mut token: Box<WriteToken>,
    record: OutRecord,
    error: &KafkaError,
) {
    let retries = &failures.retries;
    if let Some(faults) = &failures.faults {
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
        let dead_letter = token.event.dead_letter_record(
            token.event.dead_letter_topic(),
            &reason,
            None,
            failures.dead_letter_max_bytes(),
        );
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
    // A dead letter the broker refuses as a record (too large for the topic's
    // max.message.bytes, say) is written again at once without the event's value, which
    // always fits; one refused as a topic (not authorised, unknown) is retried: its offset is
    // held, and the topic check stops the pipeline if the topic is gone.
    let refusal = Refusal::of(error);
    if token.kind == WriteKind::DeadLetter
        && refusal == Refusal::Record
        && let Some(headers_only) = token.event.without_value(record.clone())
    {
        tracing::warn!(
            partition = token.event.partition,
            offset = token.event.offset,
            topic = %record.topic,
            "the dead-letter record was refused ({error}); writing it without the event's \
             value"
        );
        token.attempt = 0;
        let _ = retries.send(RetryMsg::Retry(Retry {
            due: Instant::now(),
            token,
            record: headers_only,
        }));
        return;
    }
    if token.kind == WriteKind::DeadLetter && refusal.is_permanent() {
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

impl Deliveries for FailedWrites {
    type Token = WriteToken;

    fn delivered(&self, token: Box<WriteToken>, topic: &str) {
        self.stats
            .record_produced(topic, token.kind == WriteKind::DeadLetter);
        token.event.write_done();
    }

    fn failed(&self, token: Box<WriteToken>, message: &BorrowedMessage<'_>, error: &KafkaError) {
        let payload = message.payload().unwrap_or_default();
        let record = OutRecord {
            topic: message.topic().to_owned(),
            key: message.key().map(<[u8]>::to_vec),
            // A write of the event's own value sends it again from the event, not from a copy.
            payload: (payload != token.event.raw.as_slice()).then(|| payload.to_vec()),
            headers: message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        };
        settle_failure(self, token, record, error);
    }

    fn transaction_failed(&self, message: &str) {
        if let Some(faults) = &self.faults {
            faults.transaction_failed(message);
        }
    }
}
