//! Helpers for tests against a real Kafka protocol peer: librdkafka's mock cluster, events in,
//! every record out, and the expected routing of each source record.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::producer::{DefaultProducerContext, Producer as _, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use fanout::demo::EmbeddedKafka;
use fanout::pipeline::{PipelineSettings, Routing};
use fanout::stats::Stats;

use crate::support;
use crate::watermarks;

pub const SOURCE: &str = "cluster-events";
pub const DEAD_LETTER: &str = "fanout-dead-letter";

/// One record as produced to the source topic.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

/// Where a source record must end up with the by-namespace plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    Topic(String),
    DeadLetter(&'static str),
}

/// A record read back from any topic.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// A mock cluster with the source topic, the dead-letter topic and every destination topic of
/// `workload` created. librdkafka's mock broker keeps only 5 MiB per partition, so destination
/// topics get 16 partitions and the source is fed no faster than it is routed
/// ([`produce_paced`]).
pub fn start_kafka(partitions: i32, workload: &[SourceRecord]) -> EmbeddedKafka {
    let kafka = EmbeddedKafka::start(3).unwrap();
    kafka.create_topic(SOURCE, partitions).unwrap();
    for topic in output_topics(workload) {
        kafka.create_topic(&topic, 16).unwrap();
    }
    kafka
}

/// Produces `records` on a thread, never more than `backlog` ahead of `acknowledged`.
pub fn produce_paced(
    bootstrap: &str,
    records: Vec<SourceRecord>,
    acknowledged: impl Fn() -> u64 + Send + 'static,
    backlog: u64,
) -> JoinHandle<()> {
    produce_paced_to(bootstrap, SOURCE, records, acknowledged, backlog)
}

/// [`produce_paced`] to `topic`.
pub fn produce_paced_to(
    bootstrap: &str,
    topic: &str,
    records: Vec<SourceRecord>,
    acknowledged: impl Fn() -> u64 + Send + 'static,
    backlog: u64,
) -> JoinHandle<()> {
    let bootstrap = bootstrap.to_owned();
    let topic = topic.to_owned();
    std::thread::spawn(move || {
        for (i, chunk) in records.chunks(1000).enumerate() {
            while (i as u64 * 1000) > acknowledged() + backlog {
                std::thread::sleep(Duration::from_millis(10));
            }
            produce(&bootstrap, &topic, chunk);
        }
    })
}

/// The workload: the repo's fixtures, its malformed lines, then generated events, `total` in all.
pub fn workload(total: usize, namespaces: usize) -> Vec<SourceRecord> {
    let mut records = Vec::with_capacity(total);
    for line in support::lines("events/eventrouter.jsonl")
        .into_iter()
        .chain(support::lines("events/malformed.jsonl"))
    {
        let key = serde_json::from_slice::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| {
                v["event"]["involvedObject"]["name"]
                    .as_str()
                    .map(|s| s.as_bytes().to_vec())
            });
        records.push(SourceRecord { key, value: line });
    }
    let mut generator = fanout::generate::EventGenerator::new(7, namespaces);
    while records.len() < total {
        let event = generator.next_event();
        records.push(SourceRecord {
            key: Some(event.key.into_bytes()),
            value: event.value,
        });
    }
    records.truncate(total);
    records
}

/// What by-namespace does with a record, computed independently of fanout's own decoder.
pub fn expected(record: &SourceRecord) -> Expected {
    let Ok(envelope) = serde_json::from_slice::<serde_json::Value>(&record.value) else {
        return Expected::DeadLetter("malformed-event");
    };
    let valid_verb = matches!(envelope["verb"].as_str(), Some("ADDED" | "UPDATED"));
    let event = &envelope["event"];
    let namespace = &event["metadata"]["namespace"];
    if !envelope.is_object()
        || !valid_verb
        || !event.is_object()
        || !(namespace.is_string() || namespace.is_null())
    {
        return Expected::DeadLetter("malformed-event");
    }
    match namespace.as_str().unwrap_or("") {
        "" => Expected::DeadLetter("plugin-error"),
        ns if fanout::topic_name::check_topic_name(ns).is_err() => {
            Expected::DeadLetter("invalid-topic")
        }
        ns => Expected::Topic(ns.to_owned()),
    }
}

pub fn produce(bootstrap: &str, topic: &str, records: &[SourceRecord]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for record in records {
        fanout::demo::send(&producer, topic, record.key.as_deref(), &record.value).unwrap();
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// Reads back every destination topic of `source` (its namespaces and the dead-letter topic)
/// until `source.len()` records have come, to every partition's high watermark.
pub fn read_outputs(bootstrap: &str, source: &[SourceRecord], timeout: Duration) -> Vec<Received> {
    read_all(bootstrap, &output_topics(source), source.len(), timeout)
}

/// Reads every record of `topics` from the beginning to each partition's high watermark, again
/// and again until at least `want` records are read or `timeout` passes. It never stops at a
/// quiet spell: a round ends only when every partition's position has reached the end offset
/// taken at its start.
pub fn read_all(
    bootstrap: &str,
    topics: &[String],
    want: usize,
    timeout: Duration,
) -> Vec<Received> {
    read_all_with(bootstrap, topics, want, timeout, "read_committed")
}

/// [`read_all`] at an `isolation.level`: `read_committed` (librdkafka's default) hides the
/// writes of aborted transactions, `read_uncommitted` shows them. (librdkafka moves a
/// partition's position past transaction markers, so a `read_committed` reader reaches the
/// high watermark once no transaction is open.)
pub fn read_all_with(
    bootstrap: &str,
    topics: &[String],
    want: usize,
    timeout: Duration,
    isolation: &str,
) -> Vec<Received> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "verifier")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        for t in metadata.topics() {
            for p in t.partitions() {
                list.add_partition_offset(topic, p.id(), Offset::Beginning)
                    .unwrap();
            }
        }
    }
    consumer.assign(&list).unwrap();
    let partitions: Vec<(String, i32)> = list
        .elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect();
    let started = Instant::now();
    let mut out = Vec::new();
    loop {
        let ends = ends(&consumer, &partitions);
        while !at_ends(&consumer, &ends) {
            if started.elapsed() > timeout {
                return out;
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => out.push(Received {
                    topic: m.topic().to_owned(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| {
                                    (
                                        h.key.to_owned(),
                                        String::from_utf8_lossy(h.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                Some(Err(e)) => panic!("verifier consumer: {e}"),
                None => {}
            }
        }
        if out.len() >= want || started.elapsed() > timeout {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The end offset (high watermark) of every partition that holds records, in one ListOffsets
/// round per watermark ([`watermarks`]).
fn ends(consumer: &BaseConsumer, partitions: &[(String, i32)]) -> HashMap<(String, i32), i64> {
    watermarks::ends_of_nonempty(consumer, partitions).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Whether `consumer`'s position in every partition of `ends` has reached its end offset.
fn at_ends(consumer: &BaseConsumer, ends: &HashMap<(String, i32), i64>) -> bool {
    let positions = consumer.position().unwrap();
    ends.iter().all(|((topic, partition), &end)| {
        positions
            .find_partition(topic, *partition)
            .is_some_and(|p| matches!(p.offset(), Offset::Offset(o) if o >= end))
    })
}

/// Settings for an in-process pipeline against `bootstrap`.
pub fn settings(bootstrap: &str, group: &str) -> PipelineSettings {
    PipelineSettings {
        bootstrap_servers: bootstrap.to_owned(),
        source_topic: SOURCE.into(),
        group_id: group.into(),
        dead_letter_topic: DEAD_LETTER.into(),
        consumer_properties: vec![],
        producer_properties: vec![],
        workers: 2,
        max_in_flight: 5_000,
        commit_interval: Duration::from_millis(200),
        delivery: fanout::config::Delivery::AtLeastOnce,
        shutdown_timeout: Duration::from_secs(20),
        create_topics: None,
    }
}

/// The by-namespace plugin, loaded as the service loads it.
pub fn by_namespace_routing() -> Routing {
    let engine = support::unhurried_engine();
    let set = fanout::plugin::PluginSet::load_path(&engine, &support::wasm("by_namespace"), None)
        .unwrap();
    Routing::fixed(engine, set)
}

/// An in-process pipeline on its own thread.
pub struct RunningPipeline {
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<()>>,
}

impl RunningPipeline {
    pub fn start(settings: PipelineSettings, routing: Routing) -> Self {
        // Pipeline logs appear in a failing test's output (captured otherwise).
        let _ = tracing_subscriber::fmt()
            .with_env_filter("fanout=info")
            .with_test_writer()
            .try_init();
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (stats, stop) = (stats.clone(), stop.clone());
            move || fanout::pipeline::run(&settings, &routing, stats, stop)
        });
        Self {
            stats,
            stop,
            thread,
        }
    }

    /// Waits until `n` events are acknowledged (or panics after `timeout`).
    pub fn wait_acknowledged(&self, n: u64, timeout: Duration) {
        let started = Instant::now();
        while self.stats.acknowledged.load(Ordering::Relaxed) < n {
            assert!(
                started.elapsed() < timeout,
                "only {} of {n} events acknowledged after {timeout:?}",
                self.stats.acknowledged.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the pipeline returned, if it stopped by itself within `timeout`.
    pub fn finished_within(self, timeout: Duration) -> Option<anyhow::Result<()>> {
        let started = Instant::now();
        while !self.thread.is_finished() {
            if started.elapsed() > timeout {
                self.stop.store(true, Ordering::Relaxed);
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(self.thread.join().unwrap())
    }

    /// Graceful stop: drain, flush, commit.
    pub fn stop(self) -> Arc<Stats> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap().unwrap();
        self.stats
    }
}

/// Checks every source record reached its expected place at least once, with its exact bytes
/// and key. Returns the number of duplicates (records delivered more than once).
pub fn reconcile(source: &[SourceRecord], received: &[Received]) -> usize {
    reconcile_with(source, received, DEAD_LETTER)
}

/// [`reconcile`] with the dead letters in `dead_letter`.
pub fn reconcile_with(source: &[SourceRecord], received: &[Received], dead_letter: &str) -> usize {
    reconcile_by(source, received, |record| match expected(record) {
        Expected::Topic(topic) => topic,
        Expected::DeadLetter(_) => dead_letter.to_owned(),
    })
}

/// [`reconcile`] for any router: `destination` names the one topic each source record belongs
/// in (its dead-letter topic included).
pub fn reconcile_by(
    source: &[SourceRecord],
    received: &[Received],
    destination: impl Fn(&SourceRecord) -> String,
) -> usize {
    /// Where a record is, and what it is: (topic, key, value).
    type Placement<'a> = (String, Option<&'a [u8]>, &'a [u8]);
    let mut delivered: HashMap<Placement<'_>, usize> = HashMap::new();
    for r in received {
        *delivered
            .entry((r.topic.clone(), r.key.as_deref(), r.value.as_slice()))
            .or_default() += 1;
    }
    let mut wanted: HashMap<Placement<'_>, usize> = HashMap::new();
    for record in source {
        let topic = destination(record);
        *wanted
            .entry((topic, record.key.as_deref(), record.value.as_slice()))
            .or_default() += 1;
    }
    let mut lost = Vec::new();
    let mut duplicates = 0;
    for (placement, want) in &wanted {
        let got = delivered.get(placement).copied().unwrap_or(0);
        if got < *want {
            // Where the record went instead, if anywhere, and why (a dead letter's reason).
            let instead: Vec<String> = received
                .iter()
                .filter(|r| r.value == placement.2 && r.topic != placement.0)
                .map(|r| match r.headers.get("fanout-reason") {
                    Some(reason) => format!("{} ({reason})", r.topic),
                    None => r.topic.clone(),
                })
                .collect();
            lost.push((placement.0.clone(), want - got, instead));
        }
        duplicates += got.saturating_sub(*want);
    }
    let unexpected: Vec<&String> = delivered
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .map(|k| &k.0)
        .collect();
    assert!(
        lost.is_empty(),
        "{} source records lost (expected topic, missing copies, found instead in), e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        unexpected.is_empty(),
        "records nobody sent: {:?}",
        &unexpected[..unexpected.len().min(5)]
    );
    duplicates
}

/// Every destination topic the workload can produce to, plus the dead-letter topic.
pub fn output_topics(source: &[SourceRecord]) -> Vec<String> {
    output_topics_with(source, DEAD_LETTER)
}

/// [`output_topics`] with the dead letters in `dead_letter`.
pub fn output_topics_with(source: &[SourceRecord], dead_letter: &str) -> Vec<String> {
    let mut topics: Vec<String> = source
        .iter()
        .filter_map(|r| match expected(r) {
            Expected::Topic(t) => Some(t),
            Expected::DeadLetter(_) => None,
        })
        .collect();
    topics.push(dead_letter.into());
    topics.sort();
    topics.dedup();
    topics
}
