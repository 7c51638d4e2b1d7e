//! Poison pills: inputs and client failures that used to stall a partition, or the whole
//! pipeline, for ever. Each is fed to the real pipeline (librdkafka's mock cluster here; the
//! broker-side refusals on a real Apache Kafka in `poison_on_a_real_cluster`), and each test
//! checks that the offset moves on and the event is not lost: it is in the dead-letter topic
//! with its reason.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::{self, DEAD_LETTER, RunningPipeline, SOURCE};
use crate::support;

/// The size of the envelope in issue 18: a real broker takes it (Kafka's default
/// `message.max.bytes` is 1,048,588), but it is over fanout's 1,000,000-byte record limit and
/// librdkafka's default `message.max.bytes`, so neither its routed write nor a dead letter
/// carrying it can be produced.
const OVERSIZED: usize = 1_010_194;

/// A fixture envelope whose message is padded to make it `size` bytes.
pub fn envelope_of(size: usize) -> Vec<u8> {
    let line = support::lines("events/eventrouter.jsonl")
        .into_iter()
        .next()
        .unwrap();
    let mut envelope: serde_json::Value = serde_json::from_slice(&line).unwrap();
    envelope["event"]["message"] = "".into();
    let bare = serde_json::to_vec(&envelope).unwrap().len();
    envelope["event"]["message"] = "x".repeat(size - bare).into();
    let value = serde_json::to_vec(&envelope).unwrap();
    assert_eq!(value.len(), size);
    value
}

/// Writes `values` to partition `partition` of the source topic, in order, keyed `k<i>`.
fn produce_to_partition(bootstrap: &str, partition: i32, values: &[Vec<u8>]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.max.bytes", "2000000")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for (i, value) in values.iter().enumerate() {
        let key = format!("k{i}");
        producer
            .send(
                BaseRecord::to(SOURCE)
                    .partition(partition)
                    .key(&key)
                    .payload(value),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// The offset `group` has committed on `partition` of the source topic (0 before any commit).
fn committed(bootstrap: &str, group: &str, partition: i32) -> i64 {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition(SOURCE, partition);
    match reader.committed_offsets(list, Duration::from_secs(5)) {
        Ok(list) => match list.elements()[0].offset() {
            Offset::Offset(offset) => offset,
            _ => 0,
        },
        Err(_) => 0,
    }
}

#[test]
fn an_oversized_event_is_dead_lettered_without_its_value_and_its_partition_moves_on() {
    // 20 events, the 1,010,194-byte one, 20 more, all on partition 0. Before, its dead letter
    // (the value plus headers) was itself too large: retried for ever, partition 0's committed
    // offset stuck at 20, and after max_in_flight more events the whole consumer stopped.
    let normal: Vec<kafka::SourceRecord> = support::lines("events/eventrouter.jsonl")
        .into_iter()
        .map(|value| kafka::SourceRecord { key: None, value })
        .filter(|record| matches!(kafka::expected(record), kafka::Expected::Topic(_)))
        .take(20)
        .collect();
    assert_eq!(normal.len(), 20);
    let mut values: Vec<Vec<u8>> = normal.iter().map(|r| r.value.clone()).collect();
    values.push(envelope_of(OVERSIZED));
    values.extend(normal.iter().map(|r| r.value.clone()));
    // Its destination topics exist (the dead-letter topic too).
    let kafka = kafka::start_kafka(4, &normal);
    let bootstrap = kafka.bootstrap_servers();
    produce_to_partition(&bootstrap, 0, &values);

    let pipeline = RunningPipeline::start(
        kafka::settings(&bootstrap, "poison-oversized"),
        kafka::by_namespace_routing(),
    );
    let started = Instant::now();
    let mut at = 0;
    while at < values.len() as i64 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        at = committed(&bootstrap, "poison-oversized", 0);
    }
    let took = started.elapsed();
    assert_eq!(
        at,
        values.len() as i64,
        "partition 0's committed offset passes the oversized event"
    );
    println!("partition 0 committed past the oversized event after {took:?}");
    let stats = pipeline.stop();
    assert_eq!(stats.dead_letters().get("record-too-large"), Some(&1));

    let dead = kafka::read_all(
        &bootstrap,
        &[DEAD_LETTER.to_owned()],
        1,
        Duration::from_secs(30),
    );
    assert_eq!(dead.len(), 1, "exactly one dead letter");
    let letter = &dead[0];
    assert!(
        letter.headers["fanout-reason"].starts_with("record-too-large"),
        "{:?}",
        letter.headers
    );
    assert_eq!(
        letter.headers["fanout-value-omitted"],
        OVERSIZED.to_string()
    );
    assert_eq!(letter.headers["fanout-source-partition"], "0");
    assert_eq!(letter.headers["fanout-source-offset"], "20");
    assert!(letter.value.is_empty(), "the value is left out");
    assert_eq!(letter.key.as_deref(), Some(&b"k20"[..]), "the key is kept");
    let routed = kafka::read_all(
        &bootstrap,
        &kafka::output_topics(&normal),
        41,
        Duration::from_secs(30),
    );
    assert_eq!(
        routed.iter().filter(|r| r.topic != DEAD_LETTER).count(),
        40,
        "the events on either side are routed"
    );
}

#[test]
fn a_fatal_producer_error_stops_the_pipeline_with_the_reason() {
    // An idempotent producer's fatal error (here: the broker answers the oldest in-flight
    // produce request with OUT_OF_ORDER_SEQUENCE_NUMBER, which librdkafka takes as its state
    // out of step with the broker's) fails every later write. Before, those were retried for
    // ever, nothing was committed, and the probes stayed green.
    // The mock cluster fails the next Produce request of any client, so the error is queued
    // after the source is written and before fanout starts: its first request gets it.
    let source = kafka::workload(4_000, 5);
    let kafka = kafka::start_kafka(4, &source);
    let bootstrap = kafka.bootstrap_servers();
    kafka::produce(&bootstrap, SOURCE, &source);
    kafka.cluster().request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    let pipeline = RunningPipeline::start(
        kafka::settings(&bootstrap, "poison-fatal"),
        kafka::by_namespace_routing(),
    );
    let started = Instant::now();
    let result = pipeline
        .finished_within(Duration::from_secs(30))
        .expect("the pipeline stops by itself");
    println!("stopped {:?} after the fault", started.elapsed());
    let error = format!("{:#}", result.expect_err("with an error"));
    assert!(error.contains("failed for good"), "{error}");
    assert!(
        error.contains("Fatal") || error.contains("sequence"),
        "{error}"
    );
}

/// An event hostile.wasm routes to `ok.chaos` (any reason but its attacks' names).
const CHAOS_EVENT: &str = r#"{"verb":"ADDED","event":{"metadata":{"name":"api-0.1","namespace":"chaos","uid":"n1"},"involvedObject":{"kind":"Pod","namespace":"chaos","name":"api-0","uid":"p1","apiVersion":"v1"},"reason":"Started","message":"Started container api","source":{"component":"kubelet","host":"node-1"},"firstTimestamp":"2026-11-20T08:15:02Z","lastTimestamp":"2026-11-20T08:15:02Z","count":1,"type":"Normal","eventTime":null,"reportingComponent":""}}"#;

/// hostile.wasm with the default 100 ms deadline.
fn hostile_routing() -> fanout::pipeline::Routing {
    let engine = support::engine();
    let set =
        fanout::plugin::PluginSet::load_path(&engine, &support::wasm("hostile"), None).unwrap();
    fanout::pipeline::Routing::fixed(engine, set)
}

#[test]
fn a_slow_routing_thread_pauses_only_its_own_partitions() {
    slow_partition("HostileLoop");
}

#[test]
fn a_partition_of_sleepers_does_not_stall_the_others() {
    slow_partition("HostileSleep");
}

#[test]
fn a_partition_of_poll_loops_does_not_stall_the_others() {
    slow_partition("HostilePollLoop");
}

/// Two partitions, two routing threads, 200 events in flight at most (100 queued per thread).
/// Partition 0 holds 400 events on which hostile.wasm does `attack` (spins, sleeps 60 s, polls
/// a clock in a loop) until the 100 ms deadline stops it: its thread needs 40 s for them.
/// Partition 1 holds 3,000 ordinary events. Before, once thread 0's queue was full the
/// consumer waited on it, and partition 1 stood still too; a sleep ran past the deadline.
fn slow_partition(attack: &str) {
    const SLOW: usize = 400;
    const FAST: usize = 3_000;
    let kafka = fanout::demo::EmbeddedKafka::start(3).unwrap();
    kafka.create_topic(SOURCE, 2).unwrap();
    kafka.create_topic("ok.chaos", 4).unwrap();
    kafka.create_topic(DEAD_LETTER, 4).unwrap();
    let bootstrap = kafka.bootstrap_servers();
    let spin = CHAOS_EVENT.replace(r#""reason":"Started""#, &format!(r#""reason":"{attack}""#));
    produce_to_partition(&bootstrap, 0, &vec![spin.into_bytes(); SLOW]);
    produce_to_partition(&bootstrap, 1, &vec![CHAOS_EVENT.as_bytes().to_vec(); FAST]);

    let group = format!("poison-slow-{attack}");
    let mut settings = kafka::settings(&bootstrap, &group);
    settings.max_in_flight = 200;
    let pipeline = RunningPipeline::start(settings, hostile_routing());
    let started = Instant::now();
    let (mut slow, mut fast) = (0, 0);
    while fast < FAST as i64 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
        fast = committed(&bootstrap, &group, 1);
        slow = committed(&bootstrap, &group, 0);
    }
    println!(
        "{attack}: partition 1 committed {fast} of {FAST} after {:?}, partition 0 then at \
         {slow} of {SLOW}",
        started.elapsed()
    );
    assert_eq!(fast, FAST as i64, "partition 1 is routed in full");
    assert!(
        slow < SLOW as i64 / 2,
        "while partition 0's thread is still busy ({slow} of {SLOW} done)"
    );
    let stats = pipeline.stop();
    assert!(
        stats
            .dead_letters()
            .get("plugin-timeout")
            .copied()
            .unwrap_or(0)
            >= slow as u64
    );
}

/// `fanout run` on the real cluster for `scope`, with `plugins`, in `delivery` mode, until its
/// group has committed all `records` of the source topic.
fn serve_until_committed(
    scope: &crate::apache_kafka::Scope,
    records: usize,
    plugins: &std::path::Path,
    delivery: &str,
    extra: &[&str],
) -> crate::service::Service {
    let transactional_id = format!("{}-txn", scope.name);
    let service = crate::service::Service::start(|c| {
        c.args(scope.args())
            .args(["--workers", "2", "--delivery", delivery])
            .args(["--transactional-id", &transactional_id])
            .args(["--deadline-ms", "2000"])
            .args(extra)
            .arg("--plugins")
            .arg(plugins);
    });
    crate::exactly_once::wait_for_committed(
        scope,
        &scope.offsets_reader(),
        records as i64,
        Duration::from_secs(180),
        &service,
    );
    service
}

/// On the real cluster: a dead-letter topic whose `max.message.bytes` (20,000) is smaller than
/// 20 malformed 50,000-byte records among 2,000 events. fanout reads the limit at start and
/// writes those dead letters without the value; every offset is committed. Before, the broker
/// refused each: at-least-once retried it for ever (its offset held), and exactly-once aborted
/// the same batch until it gave up.
fn a_dead_letter_the_broker_refuses_goes_without_its_value(delivery: &str) {
    use crate::apache_kafka::{self, Scope};
    let scope = Scope::new(&format!("poison-dl-{delivery}"));
    let mut source = scope.workload(2_000, 5);
    let garbage = |i: usize| format!("not an envelope {i}: {}", "x".repeat(50_000)).into_bytes();
    for (n, record) in source.iter_mut().skip(50).step_by(100).enumerate() {
        record.value = garbage(n);
    }
    let mut outputs: Vec<(String, i32)> = scope
        .output_topics(&source)
        .into_iter()
        .filter(|t| *t != scope.dead_letter)
        .map(|t| (t, 4))
        .collect();
    outputs.push((scope.source.clone(), 4));
    let cluster = apache_kafka::cluster();
    cluster.create_topics(&outputs, &[]).unwrap();
    cluster
        .create_topics(
            &[(scope.dead_letter.clone(), 2)],
            &[("max.message.bytes", "20000")],
        )
        .unwrap();
    scope.produce(&source);
    let plugins = support::plugin_set_dir(&["by_namespace"], &[]);
    let service = serve_until_committed(&scope, source.len(), plugins.path(), delivery, &[]);
    let aborted = crate::exactly_once::metric(&service, "fanout_transactions_aborted_total");
    let (status, log) = service.terminate();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("larger than the topic's max.message.bytes go without the event's value"),
        "the limit is read and logged:\n{log}"
    );

    let received = scope.read_outputs(&source, "read_committed", Duration::from_secs(60));
    let letters: Vec<&kafka::Received> = received
        .iter()
        .filter(|r| r.topic == scope.dead_letter && r.headers.contains_key("fanout-value-omitted"))
        .collect();
    let mut offsets: Vec<&str> = letters
        .iter()
        .map(|r| r.headers["fanout-source-offset"].as_str())
        .collect();
    offsets.sort();
    offsets.dedup();
    assert_eq!(
        offsets.len(),
        20,
        "each refused dead letter is written without its value"
    );
    for letter in &letters {
        assert!(letter.value.is_empty());
        assert!(letter.headers["fanout-reason"].starts_with("malformed-event"));
        let size: usize = letter.headers["fanout-value-omitted"].parse().unwrap();
        assert!(
            (50_017..50_030).contains(&size),
            "the original size: {size}"
        );
    }
    if delivery == "exactly-once" {
        assert_eq!(letters.len(), 20, "exactly once, after the aborts");
        assert_eq!(aborted, 0.0, "no dead letter is refused");
    }
    // Everything else is where it belongs, with its bytes.
    let rest: Vec<kafka::SourceRecord> = source
        .iter()
        .filter(|r| !r.value.starts_with(b"not an envelope"))
        .cloned()
        .collect();
    let others: Vec<kafka::Received> = received
        .iter()
        .filter(|r| !r.headers.contains_key("fanout-value-omitted"))
        .cloned()
        .collect();
    let duplicates = scope.reconcile(&rest, &others);
    if delivery == "exactly-once" {
        assert_eq!(duplicates, 0);
    }
}

#[test]
fn a_dead_letter_the_broker_refuses_goes_without_its_value_at_least_once() {
    a_dead_letter_the_broker_refuses_goes_without_its_value("at-least-once");
}

#[test]
fn a_dead_letter_the_broker_refuses_goes_without_its_value_exactly_once() {
    a_dead_letter_the_broker_refuses_goes_without_its_value("exactly-once");
}

#[test]
fn a_dead_letter_refused_as_too_large_is_written_again_without_its_value() {
    // Every event is malformed, so every write is a dead letter; the broker answers the first
    // produce requests with MESSAGE_TOO_LARGE (as a topic whose max.message.bytes was lowered
    // while fanout runs would). Those dead letters go again without the value; none is held.
    let values: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("{{\"verb\":\"ADDED\",\"event\":{i}").into_bytes())
        .collect();
    let kafka = kafka::start_kafka(1, &[]);
    let bootstrap = kafka.bootstrap_servers();
    produce_to_partition(&bootstrap, 0, &values);
    kafka.cluster().request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 3],
    );
    let pipeline = RunningPipeline::start(
        kafka::settings(&bootstrap, "poison-refused"),
        kafka::by_namespace_routing(),
    );
    pipeline.wait_acknowledged(values.len() as u64, Duration::from_secs(60));
    let stats = pipeline.stop();
    assert_eq!(
        stats.dead_letters().get("malformed-event"),
        Some(&(values.len() as u64))
    );
    let dead = kafka::read_all(
        &bootstrap,
        &[DEAD_LETTER.to_owned()],
        values.len(),
        Duration::from_secs(30),
    );
    let mut offsets: Vec<i64> = dead
        .iter()
        .map(|r| r.headers["fanout-source-offset"].parse().unwrap())
        .collect();
    offsets.sort();
    assert_eq!(offsets, (0..values.len() as i64).collect::<Vec<_>>());
    let cut: Vec<&kafka::Received> = dead
        .iter()
        .filter(|r| r.headers.contains_key("fanout-value-omitted"))
        .collect();
    assert!(!cut.is_empty(), "the refused ones went without their value");
    for letter in &cut {
        let offset: usize = letter.headers["fanout-source-offset"].parse().unwrap();
        assert_eq!(
            letter.headers["fanout-value-omitted"],
            values[offset].len().to_string()
        );
        assert!(letter.value.is_empty());
    }
    for letter in dead
        .iter()
        .filter(|r| !r.headers.contains_key("fanout-value-omitted"))
    {
        let offset: usize = letter.headers["fanout-source-offset"].parse().unwrap();
        assert_eq!(letter.value, values[offset], "the others carry the event");
    }
}

/// What happens to an event with two destinations when the broker refuses one for good, on the
/// real cluster: alerts.wasm writes each event to its namespace's topic and each `Warning` also
/// to an alerts topic, which does not exist (broker auto-create off). At-least-once can't take
/// back a write that landed: the warning stays in its namespace topic and is dead-lettered as
/// `produce-failed` naming the alerts topic. Exactly-once is all-or-nothing: the transaction
/// aborts, and on its next attempt the warning is only dead-lettered.
fn one_refused_destination_of_two(delivery: &str, short: &str) {
    use crate::apache_kafka::Scope;
    let scope = Scope::new(&format!("poison-aon-{short}"));
    let absent = format!("{}-alerts", scope.name);
    let source = scope.workload(1_000, 5);
    scope.create_topics(&source, 4, 4);
    let config = format!(r#"{{"alerts_topic":"{absent}"}}"#);
    let plugins = support::plugin_set_dir(&["alerts"], &[("alerts", &config)]);
    scope.produce(&source);
    // How long librdkafka waits for a topic it was told is unknown (30 s by default).
    let extra = ["--kafka-property", "topic.metadata.propagation.max.ms=2000"];
    let service = serve_until_committed(&scope, source.len(), plugins.path(), delivery, &extra);
    let (status, log) = service.terminate();
    assert!(status.success(), "{log}");
    let received = scope.read_outputs(&source, "read_committed", Duration::from_secs(60));

    let is_warning = |value: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(value)
            .is_ok_and(|envelope| envelope["event"]["type"] == "Warning")
    };
    let warnings: Vec<&kafka::SourceRecord> = source
        .iter()
        .filter(|r| matches!(kafka::expected(r), kafka::Expected::Topic(_)))
        .filter(|r| is_warning(&r.value))
        .collect();
    assert!(warnings.len() >= 10, "{} warnings", warnings.len());
    for warning in &warnings {
        let kafka::Expected::Topic(namespace) = kafka::expected(warning) else {
            unreachable!()
        };
        let copies = |topic: &str| {
            received
                .iter()
                .filter(|r| r.topic == topic && r.value == warning.value)
                .collect::<Vec<_>>()
        };
        let letters = copies(&scope.dead_letter);
        assert!(!letters.is_empty(), "a warning is dead-lettered");
        for letter in &letters {
            let reason = &letter.headers["fanout-reason"];
            assert!(
                reason.starts_with("produce-failed") && reason.contains(&absent),
                "{reason}"
            );
        }
        let routed = copies(&namespace).len();
        match delivery {
            "exactly-once" => {
                assert_eq!(letters.len(), 1, "exactly once");
                assert_eq!(routed, 0, "all or nothing: not in {namespace}");
            }
            _ => assert!(routed >= 1, "the write that landed stays in {namespace}"),
        }
    }
    // Normal events are in their namespace topics, each once for exactly-once.
    let normal: Vec<kafka::SourceRecord> = source
        .iter()
        .filter(|r| !is_warning(&r.value))
        .cloned()
        .collect();
    let others: Vec<kafka::Received> = received
        .iter()
        .filter(|r| !is_warning(&r.value))
        .cloned()
        .collect();
    let duplicates = scope.reconcile(&normal, &others);
    if delivery == "exactly-once" {
        assert_eq!(duplicates, 0);
    }
}

#[test]
fn one_refused_destination_of_two_leaves_the_other_at_least_once() {
    one_refused_destination_of_two("at-least-once", "alo");
}

#[test]
fn one_refused_destination_of_two_writes_neither_exactly_once() {
    one_refused_destination_of_two("exactly-once", "eos");
}
