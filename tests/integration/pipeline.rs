//! The Kafka pipeline end to end on a real Kafka protocol peer (librdkafka's mock cluster):
//! routing, at-least-once under faults, and dead letters with their headers.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::kafka::{self, DEAD_LETTER, Expected, RunningPipeline, SOURCE};

#[test]
fn routes_100k_events_to_their_namespaces_byte_identical_with_keys_and_order() {
    let source = kafka::workload(100_000, 20);
    let kafka = kafka::start_kafka(8, &source);
    let bootstrap = kafka.bootstrap_servers();

    let pipeline = RunningPipeline::start(
        kafka::settings(&bootstrap, "e2e"),
        kafka::by_namespace_routing(),
    );
    let stats = pipeline.stats.clone();
    let feeder = kafka::produce_paced(
        &bootstrap,
        source.clone(),
        move || {
            stats
                .acknowledged
                .load(std::sync::atomic::Ordering::Relaxed)
        },
        20_000,
    );
    pipeline.wait_acknowledged(source.len() as u64, Duration::from_secs(300));
    feeder.join().unwrap();
    let stats = pipeline.stop();

    let topics = kafka::output_topics(&source);
    assert!(
        topics.len() > 20,
        "20 generated namespaces plus the fixtures' ({})",
        topics.len()
    );
    let received = kafka::read_all(&bootstrap, &topics, source.len(), Duration::from_secs(120));
    let duplicates = kafka::reconcile(&source, &received);
    assert_eq!(duplicates, 0, "no faults, no restarts: exactly once");
    assert_eq!(received.len(), source.len());

    // Per-key order: a key's records keep their source order in their destination partition.
    // (The same object name can occur in several namespaces, so order is per topic and key.)
    let mut source_order: HashMap<(String, &[u8]), Vec<&[u8]>> = HashMap::new();
    for r in &source {
        if let (Some(key), Expected::Topic(topic)) = (&r.key, kafka::expected(r)) {
            source_order.entry((topic, key)).or_default().push(&r.value);
        }
    }
    let mut sorted: Vec<&kafka::Received> =
        received.iter().filter(|r| r.topic != DEAD_LETTER).collect();
    sorted.sort_by_key(|r| (r.topic.clone(), r.partition, r.offset));
    let mut dest_order: HashMap<(String, &[u8]), Vec<&[u8]>> = HashMap::new();
    for r in sorted {
        dest_order
            .entry((r.topic.clone(), r.key.as_deref().unwrap()))
            .or_default()
            .push(&r.value);
    }
    assert_eq!(source_order.len(), dest_order.len());
    for (key, values) in &source_order {
        assert!(
            dest_order[key] == *values,
            "order of key {:?} in {} changed",
            String::from_utf8_lossy(key.1),
            key.0
        );
    }

    // The dead-letter topic holds exactly the malformed and unroutable inputs, with headers.
    let dead: Vec<&kafka::Received> = received.iter().filter(|r| r.topic == DEAD_LETTER).collect();
    let expected_dead = source
        .iter()
        .filter(|r| matches!(kafka::expected(r), Expected::DeadLetter(_)))
        .count();
    assert_eq!(dead.len(), expected_dead);
    assert!(
        expected_dead >= 14,
        "the malformed fixtures and unroutable events ({expected_dead})"
    );
    for d in &dead {
        let reason = &d.headers["fanout-reason"];
        let source_record = kafka::SourceRecord {
            key: d.key.clone(),
            value: d.value.clone(),
        };
        let Expected::DeadLetter(kind) = kafka::expected(&source_record) else {
            unreachable!()
        };
        assert!(reason.starts_with(kind), "{reason} should be {kind}");
        assert_eq!(d.headers["fanout-source-topic"], SOURCE);
        let partition: i32 = d.headers["fanout-source-partition"].parse().unwrap();
        let offset: i64 = d.headers["fanout-source-offset"].parse().unwrap();
        assert!((0..8).contains(&partition) && offset >= 0);
        if kind == "plugin-error" {
            assert_eq!(d.headers["fanout-plugin"], "by_namespace");
        }
    }
    assert_eq!(
        stats.dead_letters().values().sum::<u64>() as usize,
        expected_dead
    );
}

#[test]
fn no_loss_with_produce_errors_and_a_broker_down_and_up() {
    let source = kafka::workload(20_000, 10);
    let kafka = kafka::start_kafka(8, &source);
    let bootstrap = kafka.bootstrap_servers();
    kafka::produce(&bootstrap, SOURCE, &source);

    // Produce requests fail transiently: the producer must retry, never drop.
    let errors = [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
    ];
    let injected: Vec<RDKafkaRespErr> = errors.iter().cycle().take(40).copied().collect();
    kafka
        .cluster()
        .request_errors(RDKafkaApiKey::Produce, &injected);
    let pipeline = RunningPipeline::start(
        kafka::settings(&bootstrap, "faults"),
        kafka::by_namespace_routing(),
    );
    pipeline.wait_acknowledged(5_000, Duration::from_secs(120));
    kafka.cluster().broker_down(2).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    kafka.cluster().broker_up(2).unwrap();
    pipeline.wait_acknowledged(source.len() as u64, Duration::from_secs(300));
    let stats = pipeline.stop();

    let received = kafka::read_outputs(&bootstrap, &source, Duration::from_secs(120));
    let duplicates = kafka::reconcile(&source, &received);
    println!(
        "faults: {} produce errors reported, {duplicates} duplicates of {} records (at-least-once)",
        stats
            .produce_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        source.len()
    );
}

#[test]
fn missing_topic_creation_never_blocks_routing() {
    // The mock cluster has no CreateTopics: creation fails, is logged and cached, and the writes
    // still land through the broker's auto-create. (The success path needs a real broker; see
    // the README.)
    let source = kafka::workload(2_000, 5);
    let kafka = fanout::demo::EmbeddedKafka::start(3).unwrap();
    kafka.create_topic(SOURCE, 4).unwrap();
    kafka.create_topic(DEAD_LETTER, 4).unwrap();
    let bootstrap = kafka.bootstrap_servers();
    kafka::produce(&bootstrap, SOURCE, &source);
    let mut settings = kafka::settings(&bootstrap, "create");
    settings.create_topics = Some(fanout::kafka::admin::NewTopicSettings {
        partitions: 4,
        replication_factor: -1,
        configs: vec![("retention.ms".into(), "604800000".into())],
    });
    let pipeline = RunningPipeline::start(settings, kafka::by_namespace_routing());
    pipeline.wait_acknowledged(source.len() as u64, Duration::from_secs(180));
    pipeline.stop();
    let received = kafka::read_outputs(&bootstrap, &source, Duration::from_secs(60));
    kafka::reconcile(&source, &received);
}

#[test]
fn a_write_the_broker_refuses_for_good_dead_letters_its_event() {
    let source = kafka::workload(3_000, 5);
    let kafka = kafka::start_kafka(4, &source);
    let bootstrap = kafka.bootstrap_servers();
    kafka::produce(&bootstrap, SOURCE, &source);
    // The next Produce requests fail with "message too large": permanent, not retried.
    kafka.cluster().request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 3],
    );
    let pipeline = RunningPipeline::start(
        kafka::settings(&bootstrap, "refused"),
        kafka::by_namespace_routing(),
    );
    pipeline.wait_acknowledged(source.len() as u64, Duration::from_secs(180));
    let stats = pipeline.stop();

    let received = kafka::read_outputs(&bootstrap, &source, Duration::from_secs(60));
    let refused: Vec<&kafka::Received> = received
        .iter()
        .filter(|r| {
            r.topic == DEAD_LETTER && r.headers["fanout-reason"].starts_with("produce-failed")
        })
        .collect();
    assert!(
        !refused.is_empty(),
        "some writes were refused and dead-lettered"
    );
    assert!(
        refused
            .iter()
            .all(|r| r.headers["fanout-reason"].contains("too large")),
        "{:?}",
        refused[0].headers
    );
    // Every source record is in its topic or, refused, in the dead-letter topic: none is lost.
    for record in &source {
        let in_place = received
            .iter()
            .any(|r| r.value == record.value && r.topic != DEAD_LETTER)
            || matches!(kafka::expected(record), Expected::DeadLetter(_));
        let dead_lettered = refused.iter().any(|r| r.value == record.value);
        assert!(
            in_place || dead_lettered,
            "lost: {}",
            String::from_utf8_lossy(&record.value)
        );
    }
    assert!(
        stats
            .produce_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}

#[test]
fn backpressure_bounds_events_in_flight_and_a_long_stall_pauses_then_recovers() {
    let source = kafka::workload(6_000, 10);
    let kafka = kafka::start_kafka(8, &source);
    let bootstrap = kafka.bootstrap_servers();
    kafka::produce(&bootstrap, SOURCE, &source);
    let mut settings = kafka::settings(&bootstrap, "backpressure");
    settings.max_in_flight = 200;
    let pipeline = RunningPipeline::start(settings, kafka::by_namespace_routing());

    // Sample the in-flight gauge while it routes, then hold every write back for longer than
    // the 10 s the pipeline waits at the limit before it pauses its partitions.
    let sample = |until: &dyn Fn() -> bool| {
        let mut peak = 0;
        while !until() {
            peak = peak.max(pipeline.stats.in_flight.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_micros(200));
        }
        peak
    };
    let acknowledged = || pipeline.stats.acknowledged.load(Ordering::Relaxed);
    let peak = sample(&|| acknowledged() >= 2_000);
    let errors = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 5_000];
    kafka
        .cluster()
        .request_errors(RDKafkaApiKey::Produce, &errors);
    let stalled = std::time::Instant::now();
    let stall_peak = sample(&|| stalled.elapsed() > Duration::from_secs(13));
    assert_eq!(
        pipeline.stats.pauses.load(Ordering::Relaxed),
        1,
        "a stall past 10 s pauses the partitions, once"
    );
    kafka.cluster().clear_request_errors(RDKafkaApiKey::Produce);
    let final_peak = sample(&|| acknowledged() >= source.len() as u64);
    assert!(
        peak.max(stall_peak).max(final_peak) <= 200,
        "in flight peaked at {} > max_in_flight 200",
        peak.max(stall_peak).max(final_peak)
    );
    pipeline.stop();
    let received = kafka::read_outputs(&bootstrap, &source, Duration::from_secs(60));
    kafka::reconcile(&source, &received);
}
