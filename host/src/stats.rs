//! Counters of what the pipeline did, and what its Kafka clients last reported, shared by its
//! threads. The demo prints them; the HTTP endpoint (`ops`) exports them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use rdkafka::statistics::Statistics;

use crate::lock;

/// Destination topics counted one by one; the rest are summed under `other`, so a plugin that
/// invents topic names cannot grow this map without bound.
pub const MAX_TOPICS: usize = 1000;

#[derive(Debug)]
pub struct Stats {
    pub consumed: AtomicU64,
    /// Events whose every write is confirmed (or that were filtered). Exactly-once counts them
    /// when their transaction commits: an aborted batch's events are routed again, and counted
    /// then.
    pub acknowledged: AtomicU64,
    pub routed: AtomicU64,
    pub filtered: AtomicU64,
    pub produce_errors: AtomicU64,
    pub committed_offsets: AtomicU64,
    pub commit_failures: AtomicU64,
    /// Exactly-once: transactions committed, and aborted (their events are processed again).
    pub transactions_committed: AtomicU64,
    pub transactions_aborted: AtomicU64,
    /// Exactly-once: how long each abort took, from the decision to the broker's answer.
    pub abort_seconds: Histogram,
    /// Times the consumer paused because `max_in_flight` events were in flight.
    pub pauses: AtomicU64,
    /// Events consumed and not yet acknowledged (a gauge).
    pub in_flight: AtomicU64,
    /// Bytes of failed writes waiting for their next attempt (a gauge).
    pub retry_bytes: AtomicU64,
    dead_letters: Mutex<BTreeMap<&'static str, u64>>,
    produced: Mutex<BTreeMap<String, u64>>,
    dead_letters_written: AtomicU64,
    aborts_by_cause: Mutex<BTreeMap<&'static str, u64>>,
    /// Why the pipeline can't do its work, by what found it (for `/readyz`).
    unready: Mutex<BTreeMap<&'static str, String>>,
    clients: Mutex<ClientReport>,
    routing_threads: Mutex<Vec<Arc<Busy>>>,
    /// The Kafka clients' connection errors, logged once per cause.
    pub client_errors: crate::kafka::ClientErrors,
    epoch: Instant,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            consumed: AtomicU64::default(),
            acknowledged: AtomicU64::default(),
            routed: AtomicU64::default(),
            filtered: AtomicU64::default(),
            produce_errors: AtomicU64::default(),
            committed_offsets: AtomicU64::default(),
            commit_failures: AtomicU64::default(),
            transactions_committed: AtomicU64::default(),
            transactions_aborted: AtomicU64::default(),
            // 1 ms to about 65 s.
            abort_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 9)),
            pauses: AtomicU64::default(),
            in_flight: AtomicU64::default(),
            retry_bytes: AtomicU64::default(),
            dead_letters: Mutex::default(),
            produced: Mutex::default(),
            dead_letters_written: AtomicU64::default(),
            aborts_by_cause: Mutex::default(),
            unready: Mutex::default(),
            clients: Mutex::default(),
            routing_threads: Mutex::default(),
            client_errors: crate::kafka::ClientErrors::default(),
            epoch: Instant::now(),
        }
    }
}

/// What the Kafka clients last said about themselves (librdkafka's statistics).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClientReport {
    /// The consumer's group state (`up` once joined), if reported yet.
    pub group_state: Option<String>,
    /// Brokers the producer has an open connection to, if reported yet.
    pub producer_brokers_up: Option<usize>,
    /// Consumer lag of each assigned source partition.
    pub lag: BTreeMap<i32, i64>,
}

/// Whether one routing thread is working on an event, and since when.
#[derive(Debug, Default)]
pub struct Busy {
    /// Milliseconds since [`Stats`] was made, plus one; 0 when idle.
    since: AtomicU64,
}

impl Busy {
    pub fn start(&self, stats: &Stats) {
        self.since.store(
            stats.epoch.elapsed().as_millis() as u64 + 1,
            Ordering::Relaxed,
        );
    }

    pub fn stop(&self) {
        self.since.store(0, Ordering::Relaxed);
    }
}

impl Stats {
    pub fn record_dead_letter(&self, kind: &'static str) {
        *lock(&self.dead_letters).entry(kind).or_default() += 1;
    }

    pub fn record_produced(&self, topic: &str, dead_letter: bool) {
        if dead_letter {
            self.dead_letters_written.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut produced = lock(&self.produced);
        if let Some(n) = produced.get_mut(topic) {
            *n += 1;
        } else if produced.len() < MAX_TOPICS {
            produced.insert(topic.to_owned(), 1);
        } else {
            *produced.entry("other".to_owned()).or_default() += 1;
        }
    }

    /// Exactly-once: a transaction was aborted because of `cause`, which took `took`.
    pub fn record_abort(&self, cause: &'static str, took: Duration) {
        self.transactions_aborted.fetch_add(1, Ordering::Relaxed);
        *lock(&self.aborts_by_cause).entry(cause).or_default() += 1;
        self.abort_seconds.observe(took.as_secs_f64());
    }

    /// Aborted transactions, by cause.
    pub fn aborts_by_cause(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.aborts_by_cause).clone()
    }

    /// Says why the pipeline can't do its work, as `what` found it (`None`: it can again).
    pub fn set_unready(&self, what: &'static str, why: Option<String>) {
        let mut unready = lock(&self.unready);
        match why {
            Some(why) => unready.insert(what, why),
            None => unready.remove(what),
        };
    }

    /// Every reason the pipeline has given for not being able to work.
    pub fn unready(&self) -> Vec<String> {
        lock(&self.unready).values().cloned().collect()
    }

    pub fn record_produce_error(&self) {
        self.produce_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Dead letters decided, by reason kind.
    pub fn dead_letters(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.dead_letters).clone()
    }

    /// Records confirmed per destination topic.
    pub fn produced(&self) -> BTreeMap<String, u64> {
        lock(&self.produced).clone()
    }

    /// Dead-letter records confirmed by the broker.
    pub fn dead_letters_written(&self) -> u64 {
        self.dead_letters_written.load(Ordering::Relaxed)
    }

    /// A routing thread announces itself, and then marks each event it works on.
    pub fn routing_thread(&self) -> Arc<Busy> {
        let busy = Arc::new(Busy::default());
        lock(&self.routing_threads).push(busy.clone());
        busy
    }

    /// The longest any routing thread has been on its current event.
    pub fn longest_busy(&self) -> Option<Duration> {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        lock(&self.routing_threads)
            .iter()
            .map(|b| b.since.load(Ordering::Relaxed))
            .filter(|since| *since != 0)
            .map(|since| Duration::from_millis(now.saturating_sub(since)))
            .max()
    }

    pub fn clients(&self) -> ClientReport {
        lock(&self.clients).clone()
    }

    /// The consumer's statistics: its group state and the lag of each partition of `topic`.
    pub fn record_consumer_statistics(&self, statistics: &Statistics, topic: &str) {
        let lag = statistics
            .topics
            .get(topic)
            .map(|t| {
                t.partitions
                    .values()
                    // -1 is librdkafka's internal "unassigned" partition.
                    .filter(|p| p.partition >= 0 && p.desired)
                    .map(|p| (p.partition, p.consumer_lag.max(0)))
                    .collect()
            })
            .unwrap_or_default();
        let mut clients = lock(&self.clients);
        clients.group_state = statistics.cgrp.as_ref().map(|g| g.state.clone());
        clients.lag = lag;
    }

    /// The producer's statistics: how many brokers it is connected to.
    pub fn record_producer_statistics(&self, statistics: &Statistics) {
        let up = statistics
            .brokers
            .values()
            .filter(|b| b.nodeid >= 0 && b.state == "UP")
            .count();
        lock(&self.clients).producer_brokers_up = Some(up);
    }
}
