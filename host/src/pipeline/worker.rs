//! Routing threads: decode → route → hand writes to the producer.
//!
//! Wasm runs here, on dedicated OS threads, never on the async runtime: synchronous WASI calls
//! `block_on`, and a slow plugin must not starve consumer polling. Each thread owns a [`Router`]
//! (one store per plugin, reused). Events of one source partition always go to the same thread,
//! so their writes are handed to the producer in order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};

use crate::bindings::{Header, SourceRecord};
use crate::deadletter::DeadLetterReason;
use crate::event;
use crate::event::Event;
use crate::kafka::producer::{OutRecord, Producer};
use crate::pipeline::inflight::InFlightEvent;
use crate::plugin::{Outcome, RouteEvent};
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
}

/// What every routing thread shares.
#[derive(Clone)]
pub struct WorkerShared {
    pub source_topic: Arc<str>,
    pub dead_letter_topic: Arc<str>,
    pub producer: Producer,
    pub acks: Sender<(i32, i64)>,
    pub stats: Arc<Stats>,
    /// Set at shutdown: events not yet routed are left unacknowledged (and so uncommitted), so
    /// the drain is bounded by one event per thread rather than by the queue's depth.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
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
            return;
        }
        busy.start(&shared.stats);
        route_one(router.as_mut(), &shared, item);
        busy.stop();
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
    } = item;
    let (outcome, key, raw) = match event::parse(&value) {
        Err(e) => {
            let reason = DeadLetterReason::MalformedEvent(e.to_string());
            (
                Outcome::DeadLetter {
                    reason,
                    plugin: None,
                },
                key,
                value,
            )
        }
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
            writes,
            shared.acks.clone(),
        )
    };
    match outcome {
        Outcome::Routed(destinations) => {
            shared.stats.routed.fetch_add(1, Ordering::Relaxed);
            let event = in_flight(destinations.len() as u32);
            for d in destinations {
                if let Some(creator) = &shared.topics {
                    creator.ensure(&d.topic);
                }
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
            let _ = shared.acks.send((partition, offset));
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
