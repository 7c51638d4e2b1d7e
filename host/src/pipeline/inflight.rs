//! One consumed event on its way out: how many of its writes are still unconfirmed, and what a
//! dead-letter record for it would carry.
//!
//! Every write (routed or dead letter) holds an `Arc` to its event through a [`WriteToken`] that
//! travels with the record through librdkafka. When the last write is confirmed, the event's
//! `(partition, offset)` is sent back to the consumer, which owns the offset tracker: that is the
//! pipeline's only backward edge.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Sender;

use crate::deadletter::DeadLetterReason;
use crate::kafka::producer::OutRecord;

/// Header names on dead-letter records.
pub mod headers {
    pub const REASON: &str = "fanout-reason";
    pub const SOURCE_TOPIC: &str = "fanout-source-topic";
    pub const SOURCE_PARTITION: &str = "fanout-source-partition";
    pub const SOURCE_OFFSET: &str = "fanout-source-offset";
    pub const PLUGIN: &str = "fanout-plugin";
    /// On every record fanout writes, routed or dead letter: the version of the plugin set that
    /// decided it (`native` for the built-in router).
    pub const PLUGIN_SET: &str = "fanout-plugin-set";
}

/// An event fully written (or filtered): its source position, and the generation it was routed
/// in. Exactly-once starts a new generation whenever it aborts a transaction, so an
/// acknowledgement of a write the abort discarded can't be mistaken for one of the same event
/// routed again; at-least-once stays at generation 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub partition: i32,
    pub offset: i64,
    pub generation: u64,
}

/// A consumed event whose writes are in flight.
#[derive(Debug)]
pub struct InFlightEvent {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// The source record's timestamp, which every write keeps: a routed record is stamped with
    /// when the event happened (as EventRouter recorded it), not when fanout forwarded it, so
    /// time-based retention and lookups downstream see the same time as the source topic.
    pub timestamp_ms: Option<i64>,
    /// The source record's key and value, for a dead-letter record.
    pub key: Option<Vec<u8>>,
    pub raw: Vec<u8>,
    /// The version of the routing that decided this event.
    pub lineage: Arc<str>,
    dead_letter_topic: Arc<str>,
    generation: u64,
    remaining: AtomicU32,
    acks: Sender<Ack>,
}

impl InFlightEvent {
    /// An event that will be acknowledged after `writes` confirmed writes (at least one).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<Vec<u8>>,
        raw: Vec<u8>,
        lineage: Arc<str>,
        dead_letter_topic: Arc<str>,
        generation: u64,
        writes: u32,
        acks: Sender<Ack>,
    ) -> Arc<Self> {
        debug_assert!(
            writes > 0,
            "an event with no writes is acknowledged directly"
        );
        Arc::new(Self {
            topic,
            partition,
            offset,
            timestamp_ms,
            key,
            raw,
            lineage,
            dead_letter_topic,
            generation,
            remaining: AtomicU32::new(writes),
            acks,
        })
    }

    /// The generation this event was routed in (see [`Ack`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }

    /// Registers one more write before an existing one is settled.
    pub fn add_write(&self) {
        self.remaining.fetch_add(1, Ordering::AcqRel);
    }

    /// Settles one write; the last one acknowledges the event.
    pub fn write_done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The consumer may be gone at shutdown; the offset then simply stays uncommitted.
            let _ = self.acks.send(Ack {
                partition: self.partition,
                offset: self.offset,
                generation: self.generation,
            });
        }
    }

    /// The dead-letter record for this event: the original bytes and key, with the reason and
    /// the source coordinates as headers.
    pub fn dead_letter_record(
        &self,
        topic: &str,
        reason: &DeadLetterReason,
        plugin: Option<&str>,
    ) -> OutRecord {
        let mut h = vec![
            (
                headers::REASON.to_owned(),
                Some(reason.to_string().into_bytes()),
            ),
            (
                headers::SOURCE_TOPIC.to_owned(),
                Some(self.topic.as_bytes().to_vec()),
            ),
            (
                headers::SOURCE_PARTITION.to_owned(),
                Some(self.partition.to_string().into_bytes()),
            ),
            (
                headers::SOURCE_OFFSET.to_owned(),
                Some(self.offset.to_string().into_bytes()),
            ),
        ];
        if let Some(plugin) = plugin {
            h.push((headers::PLUGIN.to_owned(), Some(plugin.as_bytes().to_vec())));
        }
        h.push(self.lineage_header());
        OutRecord {
            topic: topic.to_owned(),
            key: self.key.clone(),
            payload: None,
            headers: h,
        }
    }
}

impl InFlightEvent {
    /// The `fanout-plugin-set` header for a record of this event.
    pub fn lineage_header(&self) -> (String, Option<Vec<u8>>) {
        (
            headers::PLUGIN_SET.to_owned(),
            Some(self.lineage.as_bytes().to_vec()),
        )
    }
}

/// Which kind of write a token settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Route,
    DeadLetter,
}

/// Travels with one record through librdkafka and back to the delivery callback.
#[derive(Debug)]
pub struct WriteToken {
    pub event: Arc<InFlightEvent>,
    pub kind: WriteKind,
    pub attempt: u32,
}
