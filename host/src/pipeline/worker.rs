//! Routing threads: decode → route → hand writes to the producer.
//!
//! Wasm runs here, on dedicated OS threads, never on the async runtime: synchronous WASI calls
//! `block_on`, and a slow plugin must not starve consumer polling. Each thread owns a [`Router`]
//! (one store per plugin, reused). Events of one source partition always go to the same thread,
//! so their writes are handed to the producer in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};

use crate::bindings::{Destination, Header, SourceRecord};
use crate::deadletter::DeadLetterReason;
use crate::event;
use crate::event::Event;
use crate::kafka::producer::OutRecord;
use crate::pipeline::delivery::Producer;
use crate::pipeline::inflight::{Ack, InFlightEvent};
use crate::pipeline::transaction::TransactionFaults;
use crate::plugin::{Outcome, RouteEvent};
use crate::policy;
use crate::stats::Stats;

/// One consumed record, detached from librdkafka's buffers.
#[derive(Debug)]
pub struct WorkItem {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<Header>,
    /// The epoch it was consumed in (see [`Ack`]).
    pub epoch: u64,
}

/// What every routing thread shares.
#[derive(Clone)]
pub struct WorkerShared {
    pub source_topic: Arc<str>,
    pub dead_letter_topic: Arc<str>,
    pub producer: Producer,
    pub acks: Sender<Ack>,
    pub stats: Arc<Stats>,
    /// Set at shutdown: events not yet routed are left unacknowledged (and so uncommitted), so
    /// the drain is bounded by one event per thread rather than by the queue's depth. The
    /// thread still takes what it is sent until the channel closes, counting it in
    /// `abandoned`, so the consumer's last sends never fail and the drain knows not to wait
    /// for those events.
    /// Exactly-once never sets it: its last transaction is small, and is better committed
    /// than aborted and routed again by the partition's next owner.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// The current epoch: an item of an older one belongs to an aborted transaction and
    /// is skipped.
    pub epoch: Arc<AtomicU64>,
    /// Items taken off the queue and dealt with (routed, dead-lettered, filtered or skipped):
    /// exactly-once waits for every item it dispatched before it ends a transaction.
    pub handled: Arc<AtomicU64>,
    /// Items left unrouted because of the shutdown.
    pub abandoned: Arc<AtomicU64>,
    /// Exactly-once: events whose write failed for good in an aborted transaction, and topics
    /// that refuse every write, to be dead-lettered when they come round again or are routed to.
    pub faults: Option<Arc<TransactionFaults>>,
    /// Creates missing destination topics, when configured to.
    pub topics: Option<Arc<crate::kafka::admin::TopicCreator>>,
}

/// Routes every item received until the channel closes.
pub fn run(mut router: Box<dyn RouteEvent>, shared: WorkerShared, items: Receiver<WorkItem>) {
    // /healthz reports a thread stuck on one event, which the call deadline should make
    // impossible.
    let busy = shared.stats.routing_thread();
    for item in items {
        if shared.stop.load(Ordering::Relaxed) {
            shared.abandoned.fetch_add(1, Ordering::Release);
        } else if item.epoch == shared.epoch.load(Ordering::Acquire) {
            busy.start(&shared.stats);
            route_one(router.as_mut(), &shared, item);
            busy.stop();
        }
        shared.handled.fetch_add(1, Ordering::Release);
    }
}

fn route_one(router: &mut dyn RouteEvent, shared: &WorkerShared, item: WorkItem) {
    let WorkItem {
        partition,
        offset,
        timestamp_ms,
        key,
        value,
        headers,
        epoch,
    } = item;
    let failed_before = shared
        .faults
        .as_ref()
        .and_then(|faults| faults.failed_write(partition, offset));
    let parsed = match failed_before {
        // Routing it again would fail the same way and abort every transaction it joins.
        Some(reason) => Err(reason),
        None => event::parse(&value).map_err(|e| DeadLetterReason::MalformedEvent(e.to_string())),
    };
    let (outcome, key, raw) = match parsed {
        Err(reason) => (
            Outcome::DeadLetter {
                reason,
                plugin: None,
            },
            key,
            value,
        ),
        Ok(parsed) => {
            let source = SourceRecord {
                topic: shared.source_topic.to_string(),
                partition,
                offset,
                timestamp_ms,
                key,
                headers,
            };
            let event = std::sync::Arc::new(parsed.into_event(value, source));
            let outcome = router.route(&event);
            // Every plugin's handle is gone after the call, so this is the only reference.
            let Event { raw, source, .. } =
                std::sync::Arc::try_unwrap(event).unwrap_or_else(|shared| (*shared).clone());
            (outcome, source.key, raw)
        }
    };
    // Exactly-once: a write to a topic that refuses every write, or this record, would abort
    // the transaction; the event is dead-lettered instead, as a refused write is in
    // at-least-once.
    let outcome = match (outcome, &shared.faults) {
        (Outcome::Routed(destinations), Some(faults)) => {
            match destinations.iter().find_map(|d| {
                faults
                    .refused_topic(&d.topic)
                    .or_else(|| faults.too_large(&d.topic, record_size(d, key.as_deref(), &raw)))
            }) {
                Some(reason) => Outcome::DeadLetter {
                    reason,
                    plugin: None,
                },
                None => Outcome::Routed(destinations),
            }
        }
        (outcome, _) => outcome,
    };
    let in_flight = |writes| {
        InFlightEvent::new(
            shared.source_topic.clone(),
            partition,
            offset,
            timestamp_ms,
            key,
            raw,
            // After `route`, the version that routed this event (a swap may just have happened).
            router.version(),
            shared.dead_letter_topic.clone(),
            epoch,
            writes,
            shared.acks.clone(),
        )
    };
    match outcome {
        Outcome::Routed(destinations) => {
            // All or nothing: a destination the broker refused to create dead-letters the
            // event before any of its writes.
            let refused = shared.topics.as_ref().and_then(|creator| {
                destinations.iter().find_map(|d| {
                    creator
                        .ensure(&d.topic)
                        .err()
                        .map(|e| DeadLetterReason::ProduceFailed {
                            topic: d.topic.clone(),
                            error: format!("the broker refused to create it: {e}"),
                        })
                })
            });
            if let Some(reason) = refused {
                shared.stats.record_dead_letter(reason.kind());
                let event = in_flight(1);
                shared.producer.send_dead_letter(&event, &reason, None);
                return;
            }
            shared.stats.routed.fetch_add(1, Ordering::Relaxed);
            let event = in_flight(destinations.len() as u32);
            for d in destinations {
                let mut headers: Vec<_> = d.headers.into_iter().map(|h| (h.key, h.value)).collect();
                headers.push(event.lineage_header());
                let record = OutRecord {
                    topic: d.topic,
                    key: d.key.or_else(|| event.key.clone()),
                    payload: d.payload,
                    headers,
                };
                shared.producer.send_route(&event, record);
            }
        }
        Outcome::Filtered => {
            shared.stats.filtered.fetch_add(1, Ordering::Relaxed);
            let _ = shared.acks.send(Ack {
                partition,
                offset,
                epoch,
            });
        }
        Outcome::DeadLetter { reason, plugin } => {
            shared.stats.record_dead_letter(reason.kind());
            let event = in_flight(1);
            shared
                .producer
                .send_dead_letter(&event, &reason, plugin.as_deref());
        }
    }
}

/// The bytes of the record written for `destination`, at least: [`policy::record_size`], plus
/// the source key it keeps when it sets none. Without the record's and its batch's framing.
fn record_size(destination: &Destination, source_key: Option<&[u8]>, raw: &[u8]) -> usize {
    let kept_key = match destination.key {
        Some(_) => 0,
        None => source_key.map_or(0, <[u8]>::len),
    };
    policy::record_size(destination, raw.len()) + kept_key
}
