//! Exactly-once delivery: consume → route → produce inside Kafka transactions, with the source
//! offsets committed by the same transaction (KIP-98), fenced by the consumer group's
//! generation (KIP-447).
//!
//! A transaction spans a batch of events, closed by count or age ([`TransactionSettings`]).
//! The consumer thread drives it: it begins the transaction at the batch's first event,
//! dispatches events to the routing threads as at-least-once does, and to end the batch waits
//! until every dispatched event is acknowledged (all its writes, dead letters included,
//! confirmed by the broker), then sends the offsets after the batch with the group's metadata
//! and commits. A `read_committed` reader sees either every write of the batch or none.
//!
//! What can go wrong, and what happens:
//! - a plugin fails on an event: a dead letter, written in the same transaction (no abort);
//! - a write fails (broker down too long, a record refused): the transaction can't commit. The
//!   batch's other writes are given a moment to settle, so that every refusal among them is
//!   reported; then it is aborted, the batch's partitions are rewound to where it began, and
//!   the events are routed again in a new transaction. An event whose routed write was refused
//!   for good (too large) is remembered ([`TransactionFaults`]) and dead-lettered the second
//!   time, so one bad event can't abort transactions for ever; a topic that refuses every write
//!   (not authorised, unknown) is remembered for [`REFUSED_TOPIC_MEMORY`], and every event
//!   routed to it meanwhile is dead-lettered without trying, so one batch's refused events cost
//!   at most one abort; and a topic that refuses a record as too large has its
//!   `max.message.bytes` looked up, so that the batch's other records larger than that are
//!   dead-lettered when it is routed again (unless the producer compresses); a topic the
//!   broker calls unknown is looked up, and remembered as refusing if it is missing;
//! - the dead-letter (or source) topic is missing ([`crate::pipeline::topics`]): the open
//!   transaction ends without waiting for writes that can't land, and no other begins;
//! - the same events are aborted [`MAX_ABORTS_IN_A_ROW`] times without a commit in between:
//!   the pipeline stops with an error that says why, rather than loop;
//! - a partition is revoked (rebalance): the open transaction is committed first (or aborted if
//!   it can't be), so the partition's next owner starts exactly after what was committed;
//! - the group moved on without this replica (a long pause: its offsets are refused as from an
//!   unknown member or a stale generation, KIP-447): the transaction aborts, as any failed one,
//!   and the consumer rejoins the group as a new member; nothing it wrote meanwhile commits;
//! - this replica was fenced (another producer with the same transactional id): a fatal error.
//!   The pipeline stops and fanout exits non-zero, so Kubernetes restarts the pod;
//! - a transactional call hangs past its timeout (librdkafka 2.12 after the group coordinator
//!   node left the cluster): fanout exits non-zero past [`STUCK_CALL`], for the same restart
//!   ([`crate::pipeline::watchdog`]).
//!
//! After an abort, acknowledgements of the discarded writes may still arrive. Each abort starts
//! a new epoch; events carry theirs, and acknowledgements or faults of an older one are
//! ignored ([`crate::pipeline::inflight::Ack`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer as _;
use rdkafka::{Offset, TopicPartitionList};

use super::acks::AckState;
use super::delivery::Producer;
use crate::config::TransactionSettings;
use crate::deadletter::DeadLetterReason;
use crate::kafka::admin::{Admin, Presence};
use crate::kafka::consumer::SourceConsumer;
use crate::kafka::producer::Refusal;
use crate::lock;
use crate::pipeline::inflight::{InFlightEvent, WriteKind};
use crate::pipeline::topics::TopicGuard;
use crate::pipeline::watchdog::CallWatch;
use crate::stats::Stats;

/// Longest a transaction waits for its writes before it gives up and aborts. librdkafka fails a
/// write itself after `message.timeout.ms` (capped by `transaction.timeout.ms`, 60 s by
/// default); this bounds the wait when that is set higher, and keeps the consumer polling well
/// within `max.poll.interval.ms`.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Timeout of one transactional call to the broker (retried while it is retriable).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A transactional call that has not returned after this long has hung in librdkafka, which
/// no longer keeps its timeout; the process exits ([`CallWatch`]).
pub const STUCK_CALL: Duration = Duration::from_secs(30);

/// After a write fails, how long the batch's other writes may take to settle before the abort
/// (on a healthy cluster they take milliseconds).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a topic that refused a write as a whole is taken at its word: its events are
/// dead-lettered without trying until then.
pub const REFUSED_TOPIC_MEMORY: Duration = Duration::from_secs(60);

/// Longest one lookup after a refusal ([`TransactionFaults::look_up_refusals`]) may hold up
/// the next transaction.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Aborts without a commit in between after which the pipeline stops: remembered refusals mean
/// a batch needs at most two tries on a healthy cluster, so more is a cluster that can't take
/// this batch, and a restart (a new producer, a new group member) is the better bet.
pub const MAX_ABORTS_IN_A_ROW: u32 = 5;

/// The pause between two attempts of an abort that failed retriably: a broker that answers at
/// once must not make it a busy loop of log lines until [`WRITE_TIMEOUT`].
const ABORT_BACKOFF: Duration = Duration::from_millis(200);

/// Most events whose refused write (or dead letter) is remembered.
const MAX_REMEMBERED_EVENTS: usize = 10_000;

/// Most topics remembered as refusing every write, or by their size limit: a plugin that
/// routes to many refused topics in [`REFUSED_TOPIC_MEMORY`] can't grow these maps without
/// bound; past this, the oldest entry is forgotten (and costs one more abort to learn again).
const MAX_REMEMBERED_TOPICS: usize = 1024;

/// Why a transaction was aborted, as the `cause` label of `fanout_transactions_aborted_by_cause`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AbortCause {
    /// A write of the batch failed (the broker refused it, or it timed out in librdkafka).
    WriteFailed,
    /// Writes were still unconfirmed at the deadline.
    WriteTimeout,
    /// The dead-letter or source topic is missing.
    TopicMissing,
    /// Sending the offsets or committing failed (a stale group generation, a coordinator
    /// change).
    CommitFailed,
}

impl AbortCause {
    fn label(self) -> &'static str {
        match self {
            AbortCause::WriteFailed => "write-failed",
            AbortCause::WriteTimeout => "write-timeout",
            AbortCause::TopicMissing => "topic-missing",
            AbortCause::CommitFailed => "commit-failed",
        }
    }
}

/// Write failures of the open transaction, reported by the producer's delivery callback.
#[derive(Debug)]
pub struct TransactionFaults {
    epoch: Arc<AtomicU64>,
    failed: AtomicBool,
    first_failure: Mutex<Option<String>>,
    /// Events whose routed write was refused for good, with the reason they are dead-lettered
    /// for when they are routed again. At most [`MAX_REMEMBERED_EVENTS`], the lowest offsets
    /// forgotten first: a forgotten one costs one more abort, to be learnt again.
    failed_writes: Mutex<BTreeMap<(i32, i64), DeadLetterReason>>,
    /// Events whose dead-letter record was refused as a record (too large for the topic): the
    /// next one is written without the event's value. Bounded like `failed_writes`.
    refused_dead_letters: Mutex<BTreeSet<(i32, i64)>>,
    /// Topics that refused a write as a whole: the error, and when.
    refused_topics: Mutex<HashMap<String, (String, Instant)>>,
    /// Where what a refusal leaves open is looked up, between transactions
    /// ([`Self::look_up_refusals`]): whether a topic the broker called unknown exists, and a
    /// topic's record size limit.
    admin: Option<Arc<Admin>>,
    /// Whether a record's size predicts the size of the batch the broker checks: not when the
    /// producer compresses.
    sizes_predictable: bool,
    /// Topics that refused a routed record as too large, with the error, whose limit is not
    /// looked up yet.
    oversize: Mutex<HashMap<String, String>>,
    /// Topics the broker called unknown (UNKNOWN_TOPIC_OR_PARTITION, which may also mean
    /// metadata not yet propagated), with the error, not looked up yet.
    unknown: Mutex<HashMap<String, String>>,
    /// Topics' `max.message.bytes`, with the refusal that made it worth knowing, and when.
    size_limits: Mutex<HashMap<String, SizeLimit>>,
}

/// What a topic that refused a record as too large accepts.
#[derive(Debug, Clone)]
struct SizeLimit {
    max_bytes: usize,
    error: String,
    at: Instant,
}

impl TransactionFaults {
    pub fn new(epoch: Arc<AtomicU64>) -> Self {
        Self {
            epoch,
            failed: AtomicBool::new(false),
            first_failure: Mutex::default(),
            failed_writes: Mutex::default(),
            refused_dead_letters: Mutex::default(),
            refused_topics: Mutex::default(),
            admin: None,
            sizes_predictable: false,
            oversize: Mutex::default(),
            unknown: Mutex::default(),
            size_limits: Mutex::default(),
        }
    }

    /// Looks up, through `admin`, what a refusal leaves open, so that the batch's other writes
    /// that would be refused are dead-lettered when it is routed again instead of each costing
    /// an abort (after the first refusal, librdkafka fails the transaction's other writes with
    /// `Erroneous state`, which says nothing of them): whether a topic the broker called
    /// unknown exists, and the record size limit of a topic that refused a record as too
    /// large, unless `compressing` (the broker checks compressed batches).
    pub fn with_lookups(mut self, admin: Arc<Admin>, compressing: bool) -> Self {
        self.admin = Some(admin);
        self.sizes_predictable = !compressing;
        self
    }

    /// A write failed; its transaction must abort. Purges (an abort discarding queued writes)
    /// are not news, nor is a failure in an already-aborted epoch, except that a write
    /// refused for good is remembered whenever it is reported: its event would fail the same way
    /// next time, and so would any event routed to a topic that refuses every write.
    pub fn record(
        &self,
        event: &InFlightEvent,
        kind: WriteKind,
        topic: &str,
        error: &KafkaError,
        refusal: Refusal,
    ) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
        ) {
            return;
        }
        let at = (event.partition, event.offset);
        if kind == WriteKind::Route && refusal.is_permanent() {
            let mut failed = lock(&self.failed_writes);
            failed.insert(
                at,
                DeadLetterReason::ProduceFailed {
                    topic: topic.to_owned(),
                    error: error.to_string(),
                },
            );
            if failed.len() > MAX_REMEMBERED_EVENTS {
                failed.pop_first();
            }
        }
        if kind == WriteKind::DeadLetter && refusal == Refusal::Record {
            let mut refused = lock(&self.refused_dead_letters);
            refused.insert(at);
            if refused.len() > MAX_REMEMBERED_EVENTS {
                refused.pop_first();
            }
        }
        if self.admin.is_some() {
            // A dead-letter topic's size limit is learnt too: its larger dead letters then go
            // without the event's value.
            let pending = match error.rdkafka_error_code() {
                Some(RDKafkaErrorCode::MessageSizeTooLarge) if self.sizes_predictable => {
                    Some(&self.oversize)
                }
                Some(RDKafkaErrorCode::UnknownTopicOrPartition) if kind == WriteKind::Route => {
                    Some(&self.unknown)
                }
                _ => None,
            };
            if let Some(pending) = pending {
                lock(pending)
                    .entry(topic.to_owned())
                    .or_insert_with(|| error.to_string());
            }
        }
        if kind == WriteKind::Route && refusal == Refusal::Topic {
            self.refuse_topic(topic, &error.to_string());
        }
        if event.epoch() != self.epoch.load(Ordering::Acquire) {
            return;
        }
        lock(&self.first_failure).get_or_insert_with(|| {
            format!(
                "writing partition {} offset {} to {topic}: {error}",
                event.partition, event.offset
            )
        });
        self.failed.store(true, Ordering::Release);
    }

    /// librdkafka says the open transaction can't commit, whatever its writes' delivery
    /// reports will say: it must abort.
    pub fn transaction_failed(&self, why: &str) {
        lock(&self.first_failure).get_or_insert_with(|| format!("librdkafka: {why}"));
        self.failed.store(true, Ordering::Release);
    }

    /// Remembers that `topic` refuses every write, with `error`.
    fn refuse_topic(&self, topic: &str, error: &str) {
        let mut refused = lock(&self.refused_topics);
        let known = refused
            .get(topic)
            .is_some_and(|(_, at)| at.elapsed() < REFUSED_TOPIC_MEMORY);
        make_room(&mut refused, |(_, at)| *at);
        refused.insert(topic.to_owned(), (error.to_owned(), Instant::now()));
        if !known {
            tracing::warn!(
                topic,
                "the topic refuses every write ({error}); events routed to it are \
                 dead-lettered as produce-failed for the next {} s",
                REFUSED_TOPIC_MEMORY.as_secs()
            );
        }
    }

    /// Why an earlier transaction could not write this event, if one couldn't.
    pub fn failed_write(&self, partition: i32, offset: i64) -> Option<DeadLetterReason> {
        lock(&self.failed_writes).get(&(partition, offset)).cloned()
    }

    /// Whether an earlier transaction's dead letter of this event was refused as a record: the
    /// next one goes without the event's value.
    pub fn dead_letter_refused(&self, partition: i32, offset: i64) -> bool {
        lock(&self.refused_dead_letters).contains(&(partition, offset))
    }

    /// Why a write to `topic` would fail, if the topic recently refused one as a whole.
    pub fn refused_topic(&self, topic: &str) -> Option<DeadLetterReason> {
        let mut refused = lock(&self.refused_topics);
        match refused.get(topic) {
            Some((error, at)) if at.elapsed() < REFUSED_TOPIC_MEMORY => {
                Some(DeadLetterReason::ProduceFailed {
                    topic: topic.to_owned(),
                    error: error.clone(),
                })
            }
            Some(_) => {
                refused.remove(topic);
                None
            }
            None => None,
        }
    }

    /// Why a record of `size` bytes (at least) routed to `topic` would be refused: it is larger
    /// than the topic's `max.message.bytes`, learnt after the topic refused one recently.
    pub fn too_large(&self, topic: &str, size: usize) -> Option<DeadLetterReason> {
        let mut limits = lock(&self.size_limits);
        let limit = limits.get(topic)?;
        if limit.at.elapsed() >= REFUSED_TOPIC_MEMORY {
            limits.remove(topic);
            return None;
        }
        (size > limit.max_bytes).then(|| DeadLetterReason::ProduceFailed {
            topic: topic.to_owned(),
            error: format!(
                "{} (a record of at least {size} bytes; the topic's max.message.bytes is {})",
                limit.error, limit.max_bytes
            ),
        })
    }

    /// Looks up what the refusals since the last call leave open: whether each topic the
    /// broker called unknown exists (one Metadata round trip; if not, it is remembered as a
    /// topic that refuses every write), and the size limit of each topic that refused a record
    /// as too large (one DescribeConfigs round trip). Called between transactions.
    fn look_up_refusals(&self) {
        let Some(admin) = &self.admin else { return };
        let unknown = std::mem::take(&mut *lock(&self.unknown));
        for (topic, error) in unknown {
            match admin.presence(&topic, LOOKUP_TIMEOUT) {
                Ok(Presence::Missing) => self.refuse_topic(&topic, &error),
                Ok(_) => {}
                Err(e) => tracing::debug!(topic, "looking up a topic called unknown: {e}"),
            }
        }
        let pending = std::mem::take(&mut *lock(&self.oversize));
        for (topic, error) in pending {
            match admin.max_message_bytes(&topic, LOOKUP_TIMEOUT) {
                Ok(max_bytes) => {
                    tracing::warn!(
                        topic,
                        max_bytes,
                        "the topic refused a record as too large; records larger than its \
                         max.message.bytes are dead-lettered as produce-failed for the next {} s",
                        REFUSED_TOPIC_MEMORY.as_secs()
                    );
                    let mut limits = lock(&self.size_limits);
                    make_room(&mut limits, |limit| limit.at);
                    limits.insert(
                        topic,
                        SizeLimit {
                            max_bytes,
                            error,
                            at: Instant::now(),
                        },
                    );
                }
                Err(e) => tracing::debug!(topic, "looking up max.message.bytes: {e}"),
            }
        }
    }

    fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn reset(&self) -> Option<String> {
        self.failed.store(false, Ordering::Release);
        lock(&self.first_failure).take()
    }
}

/// The open transaction's batch.
#[derive(Debug, Default)]
struct Batch {
    open_since: Option<Instant>,
    events: usize,
    /// Where each partition of the batch began: where to rewind it if the batch is aborted.
    start_offsets: BTreeMap<i32, i64>,
    /// Rewinds owed after an abort inside the rebalance callback, applied by the poll loop.
    rewinds: BTreeMap<i32, i64>,
    /// Items handed to routing threads since start; [`Transactions::handled`] counts those done.
    dispatched: u64,
    /// Aborts since the last commit: of the same events, routed again.
    aborts_in_a_row: u32,
}

/// How a transactional call failed.
enum CallError {
    /// The transaction can't go on; abort it and process its events again.
    Abort(AbortCause, String),
    /// The producer is unusable (fenced): stop.
    Fatal(anyhow::Error),
}

/// The transaction coordinator, shared by the poll loop and the rebalance callback (both on the
/// consumer thread).
pub struct Transactions {
    producer: Producer,
    source_topic: String,
    settings: TransactionSettings,
    stats: Arc<Stats>,
    faults: Arc<TransactionFaults>,
    epoch: Arc<AtomicU64>,
    handled: Arc<AtomicU64>,
    /// Whether the source and dead-letter topics exist.
    topics: Arc<TopicGuard>,
    batch: Mutex<Batch>,
    /// A fatal error met inside the rebalance callback, which can't return it.
    fatal: Mutex<Option<anyhow::Error>>,
    /// Bounds every transactional call ([`STUCK_CALL`]).
    watch: CallWatch,
}

impl Transactions {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        producer: Producer,
        source_topic: &str,
        settings: TransactionSettings,
        stats: Arc<Stats>,
        faults: Arc<TransactionFaults>,
        epoch: Arc<AtomicU64>,
        handled: Arc<AtomicU64>,
        topics: Arc<TopicGuard>,
    ) -> Self {
        Self {
            producer,
            source_topic: source_topic.to_owned(),
            settings,
            stats,
            faults,
            epoch,
            handled,
            topics,
            batch: Mutex::default(),
            fatal: Mutex::default(),
            watch: CallWatch::exit_when_stuck(STUCK_CALL),
        }
    }

    /// Registers the transactional id with the broker, which aborts whatever a previous
    /// instance with the same id left open (a replica killed mid-transaction), and fences it.
    /// Retried while the brokers are unreachable, until `stop`.
    pub fn init(&self, stop: &AtomicBool) -> anyhow::Result<()> {
        loop {
            let init = self.watch.during("init_transactions", || {
                self.producer.client().init_transactions(CALL_TIMEOUT)
            });
            match init {
                Ok(()) => {
                    tracing::info!(
                        transactional_id = %self.settings.transactional_id,
                        max_events = self.settings.max_events,
                        max_ms = self.settings.max_duration.as_millis() as u64,
                        "exactly-once: transactions ready"
                    );
                    return Ok(());
                }
                Err(KafkaError::Transaction(e)) if e.is_retriable() && !e.is_fatal() => {
                    tracing::warn!("initialising transactions: {e}; retrying");
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "initialising transactions for transactional id {:?}",
                            self.settings.transactional_id
                        )
                    });
                }
            }
            if stop.load(Ordering::Relaxed) {
                anyhow::bail!("stopped before transactions could be initialised");
            }
        }
    }

    /// Makes room for one more event in the open transaction, beginning one if needed, and
    /// returns the epoch to route it in.
    pub fn admit(&self, partition: i32, offset: i64) -> anyhow::Result<u64> {
        let mut batch = lock(&self.batch);
        if batch.open_since.is_none() {
            self.producer
                .client()
                .begin_transaction()
                .context("beginning a transaction")?;
            batch.open_since = Some(Instant::now());
        }
        batch.start_offsets.entry(partition).or_insert(offset);
        batch.events += 1;
        batch.dispatched += 1;
        Ok(self.epoch.load(Ordering::Acquire))
    }

    /// Whether the open transaction has reached its size or age, or the pipeline its in-flight
    /// limit.
    pub fn due(&self, in_flight: usize, max_in_flight: usize) -> bool {
        let batch = lock(&self.batch);
        batch.open_since.is_some_and(|since| {
            batch.events >= self.settings.max_events
                || since.elapsed() >= self.settings.max_duration
                || in_flight >= max_in_flight
        })
    }

    /// How long the poll loop may wait for a message before the open transaction is due.
    pub fn poll_timeout(&self, idle: Duration) -> Duration {
        let batch = lock(&self.batch);
        batch.open_since.map_or(idle, |since| {
            self.settings
                .max_duration
                .saturating_sub(since.elapsed())
                .min(idle)
        })
    }

    /// Whether a transaction is open.
    pub fn is_open(&self) -> bool {
        lock(&self.batch).open_since.is_some()
    }

    /// Ends the open transaction: commits it once every event is written, or aborts it (and
    /// owes rewinds of its partitions) if a write failed, a topic it needs is missing or
    /// `deadline` passes first. `Err` when the producer can't go on (fenced), or after
    /// [`MAX_ABORTS_IN_A_ROW`].
    pub fn finish(
        &self,
        consumer: &SourceConsumer,
        state: &mut AckState,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let mut batch = lock(&self.batch);
        if batch.open_since.is_none() {
            return Ok(());
        }
        let ending = Instant::now();
        let outcome = match self.wait_for_writes(state, &batch, deadline) {
            Ok(()) => {
                let written = ending.elapsed();
                let outcome = self.commit(consumer, state);
                tracing::debug!(
                    events = batch.events,
                    waited_for_writes_ms = written.as_secs_f64() * 1e3,
                    committing_ms = (ending.elapsed() - written).as_secs_f64() * 1e3,
                    "transaction ended"
                );
                outcome
            }
            Err((cause, why)) => Err(CallError::Abort(cause, why)),
        };
        match outcome {
            Ok(()) => {
                self.stats
                    .transactions_committed
                    .fetch_add(1, Ordering::Relaxed);
                self.stats
                    .acknowledged
                    .fetch_add(state.take_uncommitted(), Ordering::Relaxed);
                batch.aborts_in_a_row = 0;
                self.stats
                    .committed_offsets
                    .fetch_add(batch.start_offsets.len() as u64, Ordering::Relaxed);
                batch.open_since = None;
                batch.events = 0;
                batch.start_offsets.clear();
                Ok(())
            }
            Err(CallError::Abort(cause, why)) => self.abort(state, &mut batch, cause, &why),
            Err(CallError::Fatal(e)) => Err(e),
        }
    }

    /// Waits until every dispatched event is routed and acknowledged; `Err` says why not.
    fn wait_for_writes(
        &self,
        state: &mut AckState,
        batch: &Batch,
        deadline: Instant,
    ) -> Result<(), (AbortCause, String)> {
        let started = Instant::now();
        loop {
            state.drain();
            if self.faults.has_failed() {
                self.settle(state, batch, deadline.min(Instant::now() + SETTLE_TIMEOUT));
                return Err((AbortCause::WriteFailed, "a write failed".to_owned()));
            }
            if self.handled.load(Ordering::Acquire) >= batch.dispatched
                && state.tracker.in_flight() == 0
            {
                return Ok(());
            }
            if let Some(role) = self.topics.missing() {
                return Err((AbortCause::TopicMissing, format!("the {role} is missing")));
            }
            if Instant::now() >= deadline {
                return Err((
                    AbortCause::WriteTimeout,
                    format!(
                        "{} events still unwritten after waiting {:?}",
                        state.tracker.in_flight(),
                        started.elapsed()
                    ),
                ));
            }
            state.wait(Duration::from_millis(5));
        }
    }

    /// Lets the batch's writes settle (succeed or fail) until `until`, so that every refusal
    /// among them is reported, and remembered, before the abort discards the rest.
    fn settle(&self, state: &mut AckState, batch: &Batch, until: Instant) {
        while (self.handled.load(Ordering::Acquire) < batch.dispatched
            || self.producer.in_flight() > 0)
            && Instant::now() < until
        {
            state.wait(Duration::from_millis(5));
        }
    }

    fn commit(&self, consumer: &SourceConsumer, state: &mut AckState) -> Result<(), CallError> {
        let positions = state.tracker.take_committable();
        if !positions.is_empty() {
            let mut offsets = TopicPartitionList::with_capacity(positions.len());
            for (partition, offset) in positions {
                offsets
                    .add_partition_offset(&self.source_topic, partition, Offset::Offset(offset))
                    .map_err(|e| {
                        CallError::Abort(AbortCause::CommitFailed, format!("listing offsets: {e}"))
                    })?;
            }
            let group = consumer.group_metadata().ok_or_else(|| {
                CallError::Abort(
                    AbortCause::CommitFailed,
                    "the consumer has no group metadata yet".to_owned(),
                )
            })?;
            retry("sending offsets to the transaction", || {
                self.watch.during("send_offsets_to_transaction", || {
                    self.producer.client().send_offsets_to_transaction(
                        &offsets,
                        &group,
                        CALL_TIMEOUT,
                    )
                })
            })?;
        }
        retry("committing the transaction", || {
            self.watch.during("commit_transaction", || {
                self.producer.client().commit_transaction(CALL_TIMEOUT)
            })
        })
    }

    fn abort(
        &self,
        state: &mut AckState,
        batch: &mut Batch,
        cause: AbortCause,
        why: &str,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        // Routing threads skip what is still queued for the old epoch; wait for the item
        // each may be routing (a plugin call is bounded by its deadline), so that nothing of
        // the old epoch is sent after the abort, into the next transaction.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let give_up = Instant::now() + WRITE_TIMEOUT;
        while self.handled.load(Ordering::Acquire) < batch.dispatched {
            if Instant::now() >= give_up {
                anyhow::bail!(
                    "a routing thread has not finished its event for {WRITE_TIMEOUT:?}; \
                     stopping rather than letting it write into the next transaction"
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // An abort that can't complete is not retried for ever: past WRITE_TIMEOUT the replica
        // stops, and its restart's `init_transactions` aborts what is left open.
        let give_up = Instant::now() + WRITE_TIMEOUT;
        loop {
            let aborted = self.watch.during("abort_transaction", || {
                self.producer.client().abort_transaction(CALL_TIMEOUT)
            });
            match aborted {
                Ok(()) => break,
                Err(KafkaError::Transaction(e))
                    if e.is_retriable() && !e.is_fatal() && Instant::now() < give_up =>
                {
                    tracing::warn!("aborting the transaction: {e}; retrying");
                    std::thread::sleep(ABORT_BACKOFF);
                }
                Err(e) => {
                    // A transaction that wrote to a topic deleted meanwhile can end this way
                    // (Kafka 4.1 answers its EndTxn with INVALID_TXN_STATE, which librdkafka
                    // takes as fatal): if that is the cause, say so, once, now.
                    self.topics.recheck();
                    let missing = self
                        .topics
                        .missing()
                        .map(|role| format!("; the {role} is missing"))
                        .unwrap_or_default();
                    return Err(e).with_context(|| {
                        format!(
                            "aborting a transaction failed after {:.1} s ({why}{missing}); this \
                             replica can't write any more",
                            started.elapsed().as_secs_f64()
                        )
                    });
                }
            }
        }
        let failure = self.faults.reset();
        for partition in batch.start_offsets.keys() {
            state.tracker.forget(*partition);
        }
        state.drain(); // acknowledgements of the old epoch: ignored
        state.take_uncommitted(); // its events are counted when they commit, routed again
        let took = started.elapsed();
        self.stats.record_abort(cause.label(), took);
        let why = format!(
            "{why}{}",
            failure.map(|f| format!(": {f}")).unwrap_or_default()
        );
        tracing::warn!(
            events = batch.events,
            partitions = ?batch.start_offsets.keys().collect::<Vec<_>>(),
            cause = cause.label(),
            abort_ms = took.as_secs_f64() * 1e3,
            "transaction aborted ({why}); its events will be routed again"
        );
        self.faults.look_up_refusals();
        let start_offsets = std::mem::take(&mut batch.start_offsets);
        batch.rewinds.extend(start_offsets);
        batch.open_since = None;
        batch.events = 0;
        batch.aborts_in_a_row += 1;
        if batch.aborts_in_a_row >= MAX_ABORTS_IN_A_ROW {
            anyhow::bail!(
                "the same events were aborted {} times in a row without a commit (last: {why}); \
                 stopping rather than aborting them again (see docs/exactly-once.md)",
                batch.aborts_in_a_row
            );
        }
        // A missing dead-letter topic makes every transaction with a dead letter fail: find
        // out now, before the next one begins.
        self.topics.recheck();
        Ok(())
    }

    /// Rewinds owed by an abort: each partition goes back to where its aborted batch began.
    pub fn take_rewinds(&self) -> BTreeMap<i32, i64> {
        std::mem::take(&mut lock(&self.batch).rewinds)
    }

    /// Revoked partitions are no longer ours to rewind.
    pub fn forget(&self, partitions: &[i32]) {
        let mut batch = lock(&self.batch);
        for partition in partitions {
            batch.rewinds.remove(partition);
        }
    }

    /// Keeps a fatal error met where it can't be returned (the rebalance callback).
    pub fn set_fatal(&self, error: anyhow::Error) {
        lock(&self.fatal).get_or_insert(error);
    }

    pub fn take_fatal(&self) -> Option<anyhow::Error> {
        lock(&self.fatal).take()
    }
}

/// Makes room in a map of topics remembered since an instant for one more: drops what is
/// older than [`REFUSED_TOPIC_MEMORY`], then, if it is still full, the oldest entry.
fn make_room<V>(topics: &mut HashMap<String, V>, since: impl Fn(&V) -> Instant) {
    if topics.len() < MAX_REMEMBERED_TOPICS {
        return;
    }
    topics.retain(|_, v| since(v).elapsed() < REFUSED_TOPIC_MEMORY);
    if topics.len() >= MAX_REMEMBERED_TOPICS
        && let Some(oldest) = topics
            .iter()
            .min_by_key(|(_, v)| since(v))
            .map(|(topic, _)| topic.clone())
    {
        topics.remove(&oldest);
    }
}

/// Calls a transactional operation, again while it fails retriably.
fn retry(what: &str, mut call: impl FnMut() -> Result<(), KafkaError>) -> Result<(), CallError> {
    let deadline = Instant::now() + WRITE_TIMEOUT;
    loop {
        match call() {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(e)) if e.is_fatal() => {
                return Err(CallError::Fatal(anyhow::anyhow!(
                    "{what}: {e} (fatal: this replica was fenced or can't use transactions)"
                )));
            }
            Err(KafkaError::Transaction(e))
                if e.is_retriable() && !e.txn_requires_abort() && Instant::now() < deadline =>
            {
                tracing::debug!("{what}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(CallError::Abort(
                    AbortCause::CommitFailed,
                    format!("{what}: {e}"),
                ));
            }
        }
    }
}

/// Seeks each partition back to `offset`. A failed seek would silently skip the aborted
/// events, so it is fatal: the restarted process resumes from the committed offsets.
pub fn rewind(
    consumer: &SourceConsumer,
    topic: &str,
    rewinds: &BTreeMap<i32, i64>,
) -> anyhow::Result<()> {
    for (&partition, &offset) in rewinds {
        consumer
            .seek(topic, partition, Offset::Offset(offset), CALL_TIMEOUT)
            .with_context(|| {
                format!("rewinding partition {partition} to {offset} after an abort")
            })?;
        tracing::debug!(partition, offset, "rewound after an abort");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    fn event(offset: i64, epoch: u64) -> Arc<InFlightEvent> {
        let (acks, _) = channel();
        InFlightEvent::new(
            "events".into(),
            0,
            offset,
            None,
            None,
            b"{}".to_vec(),
            "v1".into(),
            "dead".into(),
            epoch,
            1,
            acks,
        )
    }

    fn refused(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::MessageProduction(code)
    }

    /// Faults that look refusals up, through an admin client that reaches no cluster.
    fn looking_up(compressing: bool) -> TransactionFaults {
        let admin = Admin::new("127.0.0.1:1", &[], false).unwrap();
        TransactionFaults::new(Arc::new(AtomicU64::new(0)))
            .with_lookups(Arc::new(admin), compressing)
    }

    /// Records a routed write of offset 3 to `topic` refused with `code`.
    fn refuse(faults: &TransactionFaults, topic: &str, code: RDKafkaErrorCode) {
        let error = refused(code);
        faults.record(
            &event(3, 0),
            WriteKind::Route,
            topic,
            &error,
            Refusal::of(&error),
        );
    }

    #[test]
    fn a_topic_that_refuses_every_write_is_remembered_for_the_topic() {
        let faults = TransactionFaults::new(Arc::new(AtomicU64::new(0)));
        let error = refused(RDKafkaErrorCode::TopicAuthorizationFailed);
        faults.record(
            &event(7, 0),
            WriteKind::Route,
            "secret",
            &error,
            Refusal::of(&error),
        );
        assert!(faults.has_failed());
        // Any event routed there, not only the one that failed.
        let reason = faults.refused_topic("secret").expect("remembered");
        assert_eq!(reason.kind(), "produce-failed");
        assert!(reason.to_string().contains("secret"), "{reason}");
        assert!(faults.failed_write(0, 7).is_some());
        assert_eq!(faults.refused_topic("other"), None);
    }

    #[test]
    fn a_record_refused_for_good_is_remembered_for_its_event_only() {
        let faults = TransactionFaults::new(Arc::new(AtomicU64::new(0)));
        let error = refused(RDKafkaErrorCode::MessageSizeTooLarge);
        faults.record(
            &event(3, 0),
            WriteKind::Route,
            "big",
            &error,
            Refusal::of(&error),
        );
        assert!(faults.failed_write(0, 3).is_some());
        assert_eq!(faults.failed_write(0, 4), None);
        assert_eq!(faults.refused_topic("big"), None, "other records may fit");
    }

    #[test]
    fn a_topic_that_refused_a_record_as_too_large_refuses_larger_ones_once_its_limit_is_known() {
        let faults = looking_up(false);
        refuse(&faults, "small", RDKafkaErrorCode::MessageSizeTooLarge);
        // Until the limit is looked up (between transactions), nothing but the event itself.
        assert_eq!(faults.too_large("small", 1_000_000), None);
        let pending = std::mem::take(&mut *lock(&faults.oversize));
        assert_eq!(pending.keys().collect::<Vec<_>>(), ["small"]);
        lock(&faults.size_limits).insert(
            "small".into(),
            SizeLimit {
                max_bytes: 1_500,
                error: pending["small"].clone(),
                at: Instant::now(),
            },
        );
        let reason = faults.too_large("small", 3_000).expect("too large");
        assert_eq!(reason.kind(), "produce-failed");
        let text = reason.to_string();
        assert!(text.contains("MessageSizeTooLarge"), "{text}");
        assert!(text.contains("max.message.bytes is 1500"), "{text}");
        assert_eq!(faults.too_large("small", 1_500), None, "one that fits");
        assert_eq!(faults.too_large("other", 3_000), None);
        // Learnt long ago, the limit is forgotten (the topic may have been changed since).
        lock(&faults.size_limits).get_mut("small").unwrap().at -= REFUSED_TOPIC_MEMORY;
        assert_eq!(faults.too_large("small", 3_000), None);
    }

    #[test]
    fn a_compressing_producer_learns_no_size_limits() {
        let faults = looking_up(true);
        refuse(&faults, "small", RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(lock(&faults.oversize).is_empty());
    }

    #[test]
    fn a_topic_the_broker_calls_unknown_is_looked_up_not_taken_at_its_word() {
        // UNKNOWN_TOPIC_OR_PARTITION also answers a write to a topic whose metadata has not
        // reached that broker yet: only a lookup that finds it missing makes it refused.
        let faults = looking_up(false);
        refuse(&faults, "new", RDKafkaErrorCode::UnknownTopicOrPartition);
        assert!(faults.has_failed());
        assert_eq!(faults.refused_topic("new"), None);
        assert_eq!(
            lock(&faults.unknown).keys().collect::<Vec<_>>(),
            ["new"],
            "looked up between transactions"
        );
    }

    #[test]
    fn refusals_of_an_aborted_generation_are_remembered_but_fail_nothing() {
        let faults = TransactionFaults::new(Arc::new(AtomicU64::new(1)));
        let error = refused(RDKafkaErrorCode::UnknownTopic);
        faults.record(
            &event(1, 0),
            WriteKind::Route,
            "gone",
            &error,
            Refusal::of(&error),
        );
        assert!(!faults.has_failed(), "the old epoch's transaction is over");
        assert!(faults.refused_topic("gone").is_some());
    }

    #[test]
    fn purges_and_transient_failures_are_not_refusals() {
        let faults = TransactionFaults::new(Arc::new(AtomicU64::new(0)));
        let purge = refused(RDKafkaErrorCode::PurgeQueue);
        faults.record(
            &event(1, 0),
            WriteKind::Route,
            "t",
            &purge,
            Refusal::of(&purge),
        );
        assert!(!faults.has_failed());
        let timeout = refused(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(Refusal::of(&timeout), Refusal::Transient);
        faults.record(
            &event(2, 0),
            WriteKind::Route,
            "t",
            &timeout,
            Refusal::of(&timeout),
        );
        assert!(faults.has_failed());
        assert_eq!(faults.refused_topic("t"), None);
        assert_eq!(faults.failed_write(0, 2), None);
    }

    #[test]
    fn a_dead_letter_refused_as_too_large_goes_without_its_value_next_time() {
        let faults = TransactionFaults::new(Arc::new(AtomicU64::new(0)));
        let error = refused(RDKafkaErrorCode::MessageSizeTooLarge);
        faults.record(
            &event(5, 0),
            WriteKind::DeadLetter,
            "dead",
            &error,
            Refusal::of(&error),
        );
        assert!(faults.has_failed(), "the transaction aborts");
        assert!(faults.dead_letter_refused(0, 5));
        assert!(!faults.dead_letter_refused(0, 6));
        assert_eq!(faults.failed_write(0, 5), None, "it is not a routed write");
    }

    #[test]
    fn remembered_events_and_topics_are_bounded() {
        let faults = TransactionFaults::new(Arc::new(AtomicU64::new(0)));
        let error = refused(RDKafkaErrorCode::MessageSizeTooLarge);
        let denied = refused(RDKafkaErrorCode::TopicAuthorizationFailed);
        for offset in 0..(MAX_REMEMBERED_EVENTS as i64 + 500) {
            for kind in [WriteKind::Route, WriteKind::DeadLetter] {
                faults.record(&event(offset, 0), kind, "t", &error, Refusal::Record);
            }
        }
        for i in 0..(MAX_REMEMBERED_TOPICS + 300) {
            let topic = format!("denied-{i}");
            faults.record(
                &event(1, 0),
                WriteKind::Route,
                &topic,
                &denied,
                Refusal::Topic,
            );
        }
        assert_eq!(lock(&faults.failed_writes).len(), MAX_REMEMBERED_EVENTS);
        assert_eq!(
            lock(&faults.refused_dead_letters).len(),
            MAX_REMEMBERED_EVENTS
        );
        assert!(lock(&faults.refused_topics).len() <= MAX_REMEMBERED_TOPICS);
        // The newest are kept: the lowest offsets and the oldest topics went first.
        let newest = MAX_REMEMBERED_EVENTS as i64 + 499;
        assert!(faults.failed_write(0, newest).is_some());
        assert!(faults.failed_write(0, 0).is_none());
        assert!(faults.dead_letter_refused(0, newest));
        let last = format!("denied-{}", MAX_REMEMBERED_TOPICS + 299);
        assert!(faults.refused_topic(&last).is_some());
    }

    #[test]
    fn a_dead_letter_write_refused_is_not_a_topic_to_route_around() {
        let faults = TransactionFaults::new(Arc::new(AtomicU64::new(0)));
        let error = refused(RDKafkaErrorCode::UnknownTopic);
        faults.record(
            &event(1, 0),
            WriteKind::DeadLetter,
            "dead",
            &error,
            Refusal::of(&error),
        );
        assert!(faults.has_failed());
        assert_eq!(faults.refused_topic("dead"), None);
    }

    #[test]
    fn abort_causes_have_stable_labels() {
        let labels = [
            AbortCause::WriteFailed,
            AbortCause::WriteTimeout,
            AbortCause::TopicMissing,
            AbortCause::CommitFailed,
        ]
        .map(AbortCause::label);
        assert_eq!(
            labels,
            [
                "write-failed",
                "write-timeout",
                "topic-missing",
                "commit-failed"
            ]
        );
    }
}
