//! The passthrough floor: what librdkafka costs by itself for fanout's job. A minimal
//! rust-rdkafka consume → produce loop with fanout's client settings (a 5 ms linger, the
//! idempotent producer with `acks=all`, offsets committed automatically every 5 s) and nothing
//! else: no decoding, no routing beyond a byte search, no delivery tracking, no metrics.
//!
//! Each record's value is forwarded, with its key and its source timestamp, to the topic named
//! by the first `"namespace":"..."` in it, if that is one of the namespaces it was given (every
//! other record goes to the dead-letter topic). Offsets are stored as records are consumed, not
//! as they are delivered: a floor, not a fanout.
//!
//! It is the drain bench's binary itself, run again as
//! `drain --floor BOOTSTRAP SOURCE GROUP DEAD_LETTER NAMESPACE,...`, so nothing is built for it
//! apart from the bench. It runs until SIGTERM, then flushes and exits 0.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};

const NEEDLE: &[u8] = br#""namespace":""#;

/// Runs the floor with `args` (after `--floor`) until SIGTERM.
pub fn main(args: &[String]) {
    let [bootstrap, source, group, dead_letter, namespaces] = args else {
        panic!("usage: --floor BOOTSTRAP SOURCE GROUP DEAD_LETTER NAMESPACE,...");
    };
    let topics: HashMap<&[u8], &str> = namespaces.split(',').map(|n| (n.as_bytes(), n)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::spawn({
        let stop = stop.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let mut term = signal(SignalKind::terminate()).unwrap();
                let mut int = signal(SignalKind::interrupt()).unwrap();
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            });
            stop.store(true, Ordering::Relaxed);
        }
    });

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .create()
        .unwrap();
    consumer.subscribe(&[source]).unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();

    while !stop.load(Ordering::Relaxed) {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("consume");
        let value = message.payload().unwrap_or_default();
        let topic = namespace(value)
            .and_then(|n| topics.get(n).copied())
            .unwrap_or(dead_letter);
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(value);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(ts) = message.timestamp().to_millis() {
            record = record.timestamp(ts);
        }
        // Many in flight; only a full queue waits, for the background thread's delivery reports.
        while let Err((e, back)) = producer.send(record) {
            match e {
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(1));
                    record = back;
                }
                e => panic!("produce: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// The bytes of the first `"namespace":"..."` value, if it has no escape.
fn namespace(value: &[u8]) -> Option<&[u8]> {
    let start = value.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let len = value[start..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\')?;
    (value.get(start + len) == Some(&b'"')).then(|| &value[start..start + len])
}
