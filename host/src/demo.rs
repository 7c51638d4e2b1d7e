//! `fanout demo`: the real pipeline on an embedded Kafka.
//!
//! It starts librdkafka's mock cluster (3 brokers speaking the real Kafka protocol on
//! 127.0.0.1, so kcat or any client can connect), creates the source topic, produces the repo's
//! own EventRouter fixtures plus generated volume across many namespaces (keyed by
//! `involvedObject.name`, as EventRouter does), runs the pipeline with the given plugins, and
//! shows live counts until every event is acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaErrorCode, RDKafkaRespErr};

use crate::generate::EventGenerator;
use crate::pipeline::{self, PipelineSettings, Routing};
use crate::stats::Stats;

/// The repo's own sample envelopes: realistic lines, then malformed ones.
const FIXTURES: &str = include_str!("../../tests/fixtures/events/eventrouter.jsonl");
const MALFORMED: &[u8] = include_bytes!("../../tests/fixtures/events/malformed.jsonl");

/// What the demo runs.
pub struct DemoSettings {
    pub events: u64,
    /// Events per second to produce; 0 produces as fast as possible.
    pub rate: u64,
    pub partitions: i32,
    pub namespaces: usize,
    pub workers: usize,
    pub keep_running: bool,
}

/// What a demo run measured.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub events: u64,
    pub elapsed: Duration,
}

impl DemoReport {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// An embedded Kafka: librdkafka's mock cluster.
pub struct EmbeddedKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedKafka {
    pub fn start(brokers: i32) -> anyhow::Result<Self> {
        let cluster = MockCluster::new(brokers).context("starting the mock Kafka cluster")?;
        Ok(Self { cluster })
    }

    /// The mock cluster itself, for fault injection (request errors, brokers down and up).
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }

    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let replication = 3.min(self.broker_count());
        self.cluster
            .create_topic(topic, partitions, replication)
            .with_context(|| format!("creating topic {topic}"))
    }

    /// Brokers in the cluster; their ids are `1..=broker_count()`.
    pub fn broker_count(&self) -> i32 {
        self.bootstrap_servers().split(',').count() as i32
    }

    /// Takes broker `id` down (`None`: every broker): its connections are closed and new ones
    /// refused. Its partitions keep it as their leader, as a crashed broker's do until a
    /// controller moves them, so their clients wait for it.
    pub fn broker_down(&self, id: Option<i32>) -> anyhow::Result<()> {
        let id = self.broker_id(id)?;
        self.cluster
            .broker_down(id)
            .with_context(|| format!("taking broker {id} down"))
    }

    /// Lets broker `id` (`None`: every broker) accept connections again, on the same port.
    pub fn broker_up(&self, id: Option<i32>) -> anyhow::Result<()> {
        let id = self.broker_id(id)?;
        self.cluster
            .broker_up(id)
            .with_context(|| format!("bringing broker {id} up"))
    }

    /// librdkafka's id for broker `id`, or -1 for every broker; refuses ids not in the cluster.
    fn broker_id(&self, id: Option<i32>) -> anyhow::Result<i32> {
        match id {
            None => Ok(-1),
            Some(id) if (1..=self.broker_count()).contains(&id) => Ok(id),
            Some(id) => anyhow::bail!(
                "no broker {id}: the brokers are 1 to {}",
                self.broker_count()
            ),
        }
    }

    /// Makes the next `count` requests of `api`, from any client to any broker, fail with
    /// `error` without being executed. `_TRANSPORT` closes the connection instead of answering.
    pub fn request_errors(&self, api: RDKafkaApiKey, count: usize, error: RDKafkaRespErr) {
        self.cluster.request_errors(api, &vec![error; count]);
    }

    /// Drops the errors still queued for `api` by [`request_errors`](Self::request_errors).
    pub fn clear_request_errors(&self, api: RDKafkaApiKey) {
        self.cluster.clear_request_errors(api);
    }

    /// The request type called `name` (case-insensitive), among those the mock cluster serves.
    pub fn api_key(name: &str) -> Option<RDKafkaApiKey> {
        MOCK_APIS
            .iter()
            .copied()
            .find(|api| format!("{api:?}").eq_ignore_ascii_case(name))
    }

    /// Names of the request types the mock cluster serves, for help and error messages.
    pub fn api_names() -> Vec<String> {
        MOCK_APIS.iter().map(|api| format!("{api:?}")).collect()
    }

    /// The Kafka error called `name`, as librdkafka names it without its `RD_KAFKA_RESP_ERR_`
    /// prefix (`NOT_LEADER_FOR_PARTITION`, `_TRANSPORT`; case-insensitive), or its number.
    pub fn error_code(name: &str) -> Option<RDKafkaRespErr> {
        if let Ok(number) = name.parse::<i32>() {
            return RDKafkaRespErr::try_from(number).ok();
        }
        let wanted = name.trim_start_matches("RD_KAFKA_RESP_ERR_");
        // librdkafka's codes run from -200 (its own, negative) to a few hundred (the broker's).
        (-200..1000)
            .filter_map(|code| RDKafkaRespErr::try_from(code).ok())
            .find(|error| {
                format!("{error:?}")
                    .strip_prefix("RD_KAFKA_RESP_ERR_")
                    .is_some_and(|n| n.eq_ignore_ascii_case(wanted))
            })
    }
}

/// The request types librdkafka's mock cluster serves (`rdkafka_mock_handlers.c`), so the only
/// ones a request error can be injected into.
const MOCK_APIS: &[RDKafkaApiKey] = &[
    RDKafkaApiKey::Produce,
    RDKafkaApiKey::Fetch,
    RDKafkaApiKey::ListOffsets,
    RDKafkaApiKey::Metadata,
    RDKafkaApiKey::OffsetCommit,
    RDKafkaApiKey::OffsetFetch,
    RDKafkaApiKey::FindCoordinator,
    RDKafkaApiKey::JoinGroup,
    RDKafkaApiKey::Heartbeat,
    RDKafkaApiKey::LeaveGroup,
    RDKafkaApiKey::SyncGroup,
    RDKafkaApiKey::ApiVersion,
    RDKafkaApiKey::InitProducerId,
    RDKafkaApiKey::OffsetForLeaderEpoch,
    RDKafkaApiKey::AddPartitionsToTxn,
    RDKafkaApiKey::AddOffsetsToTxn,
    RDKafkaApiKey::EndTxn,
    RDKafkaApiKey::TxnOffsetCommit,
];

/// The mock cluster keeps at most 5 MiB per partition and deletes older records (a constant in
/// librdkafka's mock broker). The demo therefore never lets the backlog of unrouted events grow
/// past this many, so nothing is deleted before fanout has read it.
pub const MOCK_BACKLOG: u64 = 15_000;

/// Produces the fixtures and `total` generated events (fixtures included in the count) to
/// `topic`, keyed like EventRouter, at `rate` per second (0: unthrottled), keeping at most
/// [`MOCK_BACKLOG`] events ahead of `acknowledged`. Returns how many.
pub fn produce_events(
    bootstrap: &str,
    topic: &str,
    total: u64,
    rate: u64,
    namespaces: usize,
    acknowledged: &std::sync::atomic::AtomicU64,
    stop: &AtomicBool,
) -> anyhow::Result<u64> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .context("creating the demo's event producer")?;
    let mut pacer = Pacer {
        started: Instant::now(),
        sent: 0,
        rate,
        acknowledged,
        stop,
    };
    for line in FIXTURES
        .lines()
        .map(str::as_bytes)
        .chain(MALFORMED.split(|&b| b == b'\n'))
    {
        if pacer.sent >= total || line.is_empty() || stop.load(Ordering::Relaxed) {
            continue;
        }
        let key = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| {
                v["event"]["involvedObject"]["name"]
                    .as_str()
                    .map(str::to_owned)
            });
        send(&producer, topic, key.as_deref().map(str::as_bytes), line)?;
        pacer.sent_one();
    }
    let mut generator = EventGenerator::new(42, namespaces);
    while pacer.sent < total && !stop.load(Ordering::Relaxed) {
        let event = generator.next_event();
        send(&producer, topic, Some(event.key.as_bytes()), &event.value)?;
        pacer.sent_one();
    }
    producer
        .flush(Duration::from_secs(60))
        .context("flushing the demo's events")?;
    Ok(pacer.sent)
}

/// Counts sent events and, with a rate, sleeps to keep to it.
struct Pacer<'a> {
    started: Instant,
    sent: u64,
    rate: u64,
    acknowledged: &'a std::sync::atomic::AtomicU64,
    stop: &'a AtomicBool,
}

impl Pacer<'_> {
    fn sent_one(&mut self) {
        self.sent += 1;
        while self.sent > self.acknowledged.load(Ordering::Relaxed) + MOCK_BACKLOG
            && !self.stop.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.rate > 0 {
            let due = self.started + Duration::from_secs_f64(self.sent as f64 / self.rate as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
}

/// Produces one record, waiting while librdkafka's queue is full; any other error is returned.
pub fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
) -> anyhow::Result<()> {
    loop {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e).context("producing a demo event"),
        }
    }
}

/// Runs the demo: embedded Kafka, events in, the pipeline, live counts. `interrupt` (Ctrl-C)
/// ends it early.
pub fn run(
    settings: &DemoSettings,
    routing: Routing,
    interrupt: &AtomicBool,
) -> anyhow::Result<DemoReport> {
    // This run's own stop flag: a finished run must not stop the next one.
    let stop = Arc::new(AtomicBool::new(false));
    let kafka = EmbeddedKafka::start(3)?;
    let bootstrap = kafka.bootstrap_servers();
    kafka.create_topic("cluster-events", settings.partitions)?;
    kafka.create_topic("fanout-dead-letter", 3)?;
    // Destination topics are created up front with as many partitions as the source, so the
    // mock's 5 MiB-per-partition retention holds every routed record.
    for namespace in demo_namespaces(settings.namespaces) {
        kafka.create_topic(&namespace, settings.partitions)?;
    }
    println!("embedded Kafka (librdkafka mock cluster, 3 brokers): {bootstrap}");
    println!("  watch it with a client of your own, e.g.: kcat -b {bootstrap} -L");
    println!("routing with {routing}");

    let pipeline_settings = PipelineSettings {
        bootstrap_servers: bootstrap.clone(),
        source_topic: "cluster-events".into(),
        group_id: "fanout-demo".into(),
        dead_letter_topic: "fanout-dead-letter".into(),
        consumer_properties: vec![],
        producer_properties: vec![],
        workers: settings.workers,
        max_in_flight: 10_000,
        commit_interval: Duration::from_secs(1),
        delivery: crate::config::Delivery::AtLeastOnce,
        shutdown_timeout: Duration::from_secs(30),
        create_topics: None,
    };
    let stats = Arc::new(Stats::default());
    let pipeline = std::thread::Builder::new()
        .name("fanout-consume".into())
        .spawn({
            let (stats, stop) = (stats.clone(), stop.clone());
            move || pipeline::run(&pipeline_settings, &routing, stats, stop)
        })?;

    let producer = std::thread::Builder::new()
        .name("demo-events".into())
        .spawn({
            let (bootstrap, stats, stop) = (bootstrap.clone(), stats.clone(), stop.clone());
            let (total, rate, namespaces) = (settings.events, settings.rate, settings.namespaces);
            move || {
                let acknowledged = &stats.acknowledged;
                produce_events(
                    &bootstrap,
                    "cluster-events",
                    total,
                    rate,
                    namespaces,
                    acknowledged,
                    &stop,
                )
            }
        })?;

    let started = Instant::now();
    let mut first: Option<Instant> = None;
    let mut last_print = Instant::now();
    let total = settings.events;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let acknowledged = stats.acknowledged.load(Ordering::Relaxed);
        if first.is_none() && stats.consumed.load(Ordering::Relaxed) > 0 {
            first = Some(Instant::now());
        }
        let finished = acknowledged >= total;
        if last_print.elapsed() >= Duration::from_secs(1) || finished {
            last_print = Instant::now();
            print_progress(&stats, started.elapsed(), total);
        }
        if interrupt.load(Ordering::Relaxed) || (finished && !settings.keep_running) {
            break;
        }
        if pipeline.is_finished() {
            break;
        }
    }
    let elapsed = first.map_or(Duration::ZERO, |f| f.elapsed());
    stop.store(true, Ordering::Relaxed);
    let produced = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the event producer panicked"))??;
    pipeline
        .join()
        .map_err(|_| anyhow::anyhow!("the pipeline panicked"))??;
    print_summary(&stats);
    let acknowledged = stats.acknowledged.load(Ordering::Relaxed);
    println!(
        "{acknowledged} of {produced} events acknowledged in {:.2} s: {:.0} events/s end to end",
        elapsed.as_secs_f64(),
        acknowledged as f64 / elapsed.as_secs_f64()
    );
    drop(kafka);
    Ok(DemoReport {
        events: acknowledged,
        elapsed,
    })
}

/// Every namespace the demo's events can carry: the fixtures' and the generator's.
pub fn demo_namespaces(generated: usize) -> Vec<String> {
    let mut namespaces: Vec<String> = EventGenerator::new(42, generated).namespaces().to_vec();
    for line in FIXTURES.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
            && let Some(ns) = v["event"]["metadata"]["namespace"].as_str()
            && crate::topic_name::check_topic_name(ns).is_ok()
        {
            namespaces.push(ns.to_owned());
        }
    }
    namespaces.sort();
    namespaces.dedup();
    namespaces
}

fn print_progress(stats: &Stats, elapsed: Duration, total: u64) {
    let consumed = stats.consumed.load(Ordering::Relaxed);
    let acknowledged = stats.acknowledged.load(Ordering::Relaxed);
    let dead: u64 = stats.dead_letters().values().sum();
    println!(
        "[{:>6.1}s] consumed {consumed:>8}/{total}  routed {:>8}  filtered {:>6}  dead-lettered {dead:>6}  acknowledged {acknowledged:>8}",
        elapsed.as_secs_f64(),
        stats.routed.load(Ordering::Relaxed),
        stats.filtered.load(Ordering::Relaxed),
    );
}

fn print_summary(stats: &Stats) {
    let produced = stats.produced();
    println!("records per destination topic:");
    let mut topics: Vec<_> = produced.iter().collect();
    topics.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (topic, n) in &topics {
        println!("  {topic:<32} {n:>8}");
    }
    println!(
        "dead letters by reason ({} written):",
        stats.dead_letters_written()
    );
    for (kind, n) in stats.dead_letters() {
        println!("  {kind:<32} {n:>8}");
    }
}
