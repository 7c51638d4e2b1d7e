//! Counters of what the pipeline did, shared by its threads. The demo prints them; the metrics
//! endpoint will export them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::lock;

/// Destination topics counted one by one; the rest are summed under `other`, so a plugin that
/// invents topic names cannot grow this map without bound.
pub const MAX_TOPICS: usize = 1000;

#[derive(Debug, Default)]
pub struct Stats {
    pub consumed: AtomicU64,
    /// Events whose every write is confirmed (or that were filtered).
    pub acknowledged: AtomicU64,
    pub routed: AtomicU64,
    pub filtered: AtomicU64,
    pub produce_errors: AtomicU64,
    pub committed_offsets: AtomicU64,
    pub commit_failures: AtomicU64,
    /// Times the consumer paused because `max_in_flight` events were in flight.
    pub pauses: AtomicU64,
    dead_letters: Mutex<BTreeMap<&'static str, u64>>,
    produced: Mutex<BTreeMap<String, u64>>,
    dead_letters_written: AtomicU64,
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
}
