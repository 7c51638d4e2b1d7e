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

use crate::deadletter::{DeadLetterReason, MAX_KEPT_KEY, headers};
use crate::kafka::producer::OutRecord;

/// What a record adds to its key, value and headers' bytes in a Kafka v2 record batch, at most
/// (length, attributes, timestamp and offset deltas as varints), with room to spare. librdkafka
/// refuses a record whose key, value, headers and this overhead exceed `message.max.bytes`.
const RECORD_OVERHEAD: usize = 64;

/// An event fully written (or filtered): its source position, and the transaction epoch it was
/// routed in (fanout's own count of aborts, not the producer epoch librdkafka bumps).
/// Exactly-once starts a new epoch whenever it aborts a transaction, so an
/// acknowledgement of a write the abort discarded can't be mistaken for one of the same event
/// routed again; at-least-once stays at epoch 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub partition: i32,
    pub offset: i64,
    pub epoch: u64,
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
    epoch: u64,
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
        epoch: u64,
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
            epoch,
            remaining: AtomicU32::new(writes),
            acks,
        })
    }

    /// The epoch this event was routed in (see [`Ack`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
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
                epoch: self.epoch,
            });
        }
    }

    /// The dead-letter record for this event: the original bytes and key, with the reason and
    /// the source coordinates as headers. If that would be larger than `max_bytes` (the
    /// producer's `message.max.bytes`), the record carries no value instead (see
    /// [`without_value`](Self::without_value)): a dead letter always fits, or its offset could
    /// never be committed.
    pub fn dead_letter_record(
        &self,
        topic: &str,
        reason: &DeadLetterReason,
        plugin: Option<&str>,
        max_bytes: usize,
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
        let record = OutRecord {
            topic: topic.to_owned(),
            key: self.key.clone(),
            payload: None,
            headers: h,
        };
        if self.wire_size(&record) <= max_bytes {
            return record;
        }
        self.without_value(record).expect("it carries the value")
    }

    /// `record`, a dead letter of this event, without the event's value (and without a key
    /// longer than [`MAX_KEPT_KEY`]), saying so in [`headers::VALUE_OMITTED`] with the value's
    /// size: what is written when the whole record is too large for the producer, or the broker
    /// refused it as too large. The reason and source coordinates still say which event it was.
    /// `None` if `record` is already without the value.
    pub fn without_value(&self, mut record: OutRecord) -> Option<OutRecord> {
        if record
            .headers
            .iter()
            .any(|(name, _)| name == headers::VALUE_OMITTED)
        {
            return None;
        }
        let value_bytes = record.payload.as_ref().map_or(self.raw.len(), Vec::len);
        record.payload = Some(Vec::new());
        record.headers.push((
            headers::VALUE_OMITTED.to_owned(),
            Some(value_bytes.to_string().into_bytes()),
        ));
        if let Some(key) = record.key.take_if(|key| key.len() > MAX_KEPT_KEY) {
            record.headers.push((
                headers::KEY_OMITTED.to_owned(),
                Some(key.len().to_string().into_bytes()),
            ));
        }
        Some(record)
    }

    /// The bytes librdkafka counts against `message.max.bytes` for `record` of this event, at
    /// most.
    pub fn wire_size(&self, record: &OutRecord) -> usize {
        let value = record.payload.as_ref().map_or(self.raw.len(), Vec::len);
        let key = record.key.as_ref().map_or(0, Vec::len);
        let headers: usize = record
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.as_ref().map_or(0, Vec::len) + 10)
            .sum();
        value + key + headers + RECORD_OVERHEAD
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    fn event(key: Option<Vec<u8>>, raw: Vec<u8>) -> Arc<InFlightEvent> {
        let (acks, _) = channel();
        InFlightEvent::new(
            "cluster-events".into(),
            3,
            42,
            None,
            key,
            raw,
            "v1".into(),
            "dead".into(),
            0,
            1,
            acks,
        )
    }

    fn header<'a>(record: &'a OutRecord, name: &str) -> Option<&'a str> {
        record
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v.as_deref()?).ok())
    }

    fn reason() -> DeadLetterReason {
        DeadLetterReason::RecordTooLarge {
            topic: "prod".into(),
            bytes: 1_010_194,
            limit: 1_000_000,
        }
    }

    #[test]
    fn a_dead_letter_that_fits_carries_the_event_unchanged() {
        let event = event(Some(b"api-0".to_vec()), vec![b'x'; 999_000]);
        let record = event.dead_letter_record("dead", &reason(), None, 1_000_000);
        assert_eq!(record.payload, None, "the event's own bytes");
        assert_eq!(record.key.as_deref(), Some(&b"api-0"[..]));
        assert_eq!(header(&record, headers::VALUE_OMITTED), None);
    }

    #[test]
    fn a_dead_letter_too_large_for_the_producer_goes_without_the_value() {
        let event = event(Some(b"api-0".to_vec()), vec![b'x'; 1_010_194]);
        let record = event.dead_letter_record("dead", &reason(), Some("p"), 1_000_000);
        assert_eq!(record.payload.as_deref(), Some(&[][..]));
        assert_eq!(header(&record, headers::VALUE_OMITTED), Some("1010194"));
        assert_eq!(header(&record, headers::KEY_OMITTED), None);
        assert_eq!(
            record.key.as_deref(),
            Some(&b"api-0"[..]),
            "a short key stays"
        );
        assert!(
            header(&record, headers::REASON)
                .unwrap()
                .starts_with("record-too-large")
        );
        assert_eq!(header(&record, headers::SOURCE_PARTITION), Some("3"));
        assert_eq!(header(&record, headers::SOURCE_OFFSET), Some("42"));
        assert!(event.without_value(record).is_none(), "once is enough");
    }

    #[test]
    fn the_fallback_drops_a_long_key_and_counts_the_value_it_was_given() {
        let event = event(Some(vec![b'k'; 100_000]), vec![b'x'; 10]);
        let record = event.dead_letter_record("dead", &reason(), None, 1_000_000);
        assert_eq!(header(&record, headers::VALUE_OMITTED), None, "it fits");
        // The broker refused it (a smaller max.message.bytes): the delivery report's copy.
        let refused = OutRecord {
            payload: Some(vec![b'x'; 10]),
            ..record
        };
        let fallback = event.without_value(refused).unwrap();
        assert_eq!(fallback.key, None);
        assert_eq!(header(&fallback, headers::KEY_OMITTED), Some("100000"));
        assert_eq!(header(&fallback, headers::VALUE_OMITTED), Some("10"));
    }
}
