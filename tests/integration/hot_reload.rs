//! Hot reload under load on the mock cluster: swaps through the kubelet's atomic writer while
//! events flow, checked record by record through the lineage header.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fanout::deadletter::headers;
use fanout::pipeline::Routing;
use fanout::reload::RollbackPolicy;

use crate::kafka::{self, DEAD_LETTER, Expected, SOURCE, SourceRecord};
use crate::reload::{ConfigMap, by_namespace_files, hostile_files, wait_until, watched};
use crate::support;

/// Where a received record sits, and what it is: (place, key, value).
type Placement = (String, Option<Vec<u8>>, Vec<u8>);

fn placement(place: String, key: Option<&[u8]>, value: &[u8]) -> Placement {
    (place, key.map(<[u8]>::to_vec), value.to_vec())
}

/// Counts of each expected placement, for comparison with what was received.
fn wanted(
    source: &[SourceRecord],
    place: impl Fn(Expected) -> String,
) -> HashMap<Placement, usize> {
    let mut wanted = HashMap::new();
    for record in source {
        let at = place(kafka::expected(record));
        *wanted
            .entry(placement(at, record.key.as_deref(), &record.value))
            .or_default() += 1;
    }
    wanted
}

#[test]
fn fifty_swaps_under_load_route_every_event_by_exactly_one_version() {
    const SWAPS: u64 = 50;
    let source = kafka::workload(200_000, 10);
    // Creates the source and dead-letter topics.
    let kafka = kafka::start_kafka(8, &[]);
    let namespaces: Vec<String> = kafka::output_topics(&source)
        .into_iter()
        .filter(|t| t != DEAD_LETTER)
        .collect();
    for prefix in ["a-", "b-"] {
        for ns in &namespaces {
            // The mock broker keeps 5 MiB per partition, and the busiest namespace gets
            // about a quarter of the events.
            kafka.create_topic(&format!("{prefix}{ns}"), 32).unwrap();
        }
    }
    let bootstrap = kafka.bootstrap_servers();

    let engine = support::unhurried_engine();
    let mut configmap = ConfigMap::new(&by_namespace_files("a-"));
    let (live, _reloader) = watched(&engine, configmap.path(), RollbackPolicy::default());
    let version_a = live.version();
    let pipeline = kafka::RunningPipeline::start(
        kafka::settings(&bootstrap, "swaps"),
        Routing::Plugins {
            engine,
            live: live.clone(),
            latency: None,
        },
    );
    let stats = pipeline.stats.clone();
    let producer = kafka::produce_paced(
        &bootstrap,
        source.clone(),
        move || stats.acknowledged.load(Ordering::Relaxed),
        15_000,
    );

    // A swap every 3,500 events, alternating the prefix.
    let mut version_b = None;
    for swap in 1..=SWAPS {
        pipeline.wait_acknowledged(swap * 3_500, Duration::from_secs(120));
        let before = live.version();
        configmap.update(&by_namespace_files(if swap % 2 == 1 { "b-" } else { "a-" }));
        wait_until("the swap", Duration::from_secs(10), || {
            live.version() != before
        });
        version_b.get_or_insert_with(|| live.version());
    }
    let version_b = version_b.unwrap();
    assert_ne!(version_a, version_b);
    producer.join().unwrap();
    pipeline.wait_acknowledged(source.len() as u64, Duration::from_secs(120));
    let stats = pipeline.stop();
    let counts = live.counts();
    assert_eq!(
        (counts.reloads, counts.failures, counts.rollbacks),
        (SWAPS, 0, 0)
    );

    let mut topics: Vec<String> = ["a-", "b-"]
        .iter()
        .flat_map(|p| namespaces.iter().map(move |ns| format!("{p}{ns}")))
        .collect();
    topics.push(DEAD_LETTER.into());
    let received = kafka::read_all(&bootstrap, &topics, source.len(), Duration::from_secs(120));

    // Each record's topic agrees with the version in its header: a set is never half applied.
    let mut delivered: HashMap<Placement, usize> = HashMap::new();
    let mut by_version: HashMap<String, usize> = HashMap::new();
    for r in &received {
        let version = &r.headers[headers::PLUGIN_SET];
        *by_version.entry(version.clone()).or_default() += 1;
        let place = if r.topic == DEAD_LETTER {
            assert!(
                [&*version_a, &*version_b].contains(&version.as_str()),
                "{version}"
            );
            DEAD_LETTER.to_owned()
        } else {
            let (prefix, ns) = r.topic.split_at(2);
            let expected = if prefix == "a-" {
                &version_a
            } else {
                &version_b
            };
            assert_eq!(
                version.as_str(),
                &**expected,
                "{} routed by {version}",
                r.topic
            );
            ns.to_owned()
        };
        *delivered
            .entry(placement(place, r.key.as_deref(), &r.value))
            .or_default() += 1;
    }
    // Every event exactly once, in its namespace under one version's prefix or dead-lettered.
    let wanted = wanted(&source, |e| match e {
        Expected::Topic(ns) => ns,
        Expected::DeadLetter(_) => DEAD_LETTER.to_owned(),
    });
    let mut lost_by_place: HashMap<&str, usize> = HashMap::new();
    for (p, n) in &wanted {
        if delivered.get(p).copied().unwrap_or(0) < *n {
            *lost_by_place.entry(p.0.as_str()).or_default() += 1;
        }
    }
    let lost: usize = lost_by_place.values().sum();
    let duplicated = delivered
        .iter()
        .filter(|(p, n)| wanted.get(*p).copied().unwrap_or(0) < **n)
        .count();
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "lost, duplicated or unexpected; lost by namespace: {lost_by_place:?}; received by \
         version: {by_version:?}"
    );
    assert_eq!(received.len(), source.len());
    assert!(by_version[&*version_a] > 10_000 && by_version[&*version_b] > 10_000);
    println!(
        "{SWAPS} swaps over {} events: {by_version:?}, 0 lost, 0 duplicated; {} acknowledged",
        source.len(),
        stats.acknowledged.load(Ordering::Relaxed)
    );
}

#[test]
fn a_release_trapping_on_half_the_events_is_rolled_back_and_its_failures_are_dead_lettered() {
    let source = kafka::workload(20_000, 10);
    let kafka = kafka::start_kafka(8, &[]);
    // hostile.wasm routes to ok.<namespace> (ok.none without one).
    let ok_topic = |e: Expected| match e {
        Expected::Topic(ns) => format!("ok.{ns}"),
        Expected::DeadLetter("plugin-error") => "ok.none".to_owned(),
        Expected::DeadLetter(_) => DEAD_LETTER.to_owned(),
    };
    let wanted = wanted(&source, ok_topic);
    let mut topics: Vec<String> = wanted.keys().map(|p| p.0.clone()).collect();
    topics.sort();
    topics.dedup();
    for topic in topics.iter().filter(|t| *t != DEAD_LETTER) {
        kafka.create_topic(topic, 4).unwrap();
    }
    let bootstrap = kafka.bootstrap_servers();

    let engine = support::unhurried_engine();
    let mut configmap = ConfigMap::new(&hostile_files("{}"));
    let (live, _reloader) = watched(&engine, configmap.path(), RollbackPolicy::default());
    let good = live.version();
    let pipeline = kafka::RunningPipeline::start(
        kafka::settings(&bootstrap, "rollback"),
        Routing::Plugins {
            engine,
            live: live.clone(),
            latency: None,
        },
    );
    let (first, rest) = source.split_at(5_000);
    kafka::produce(&bootstrap, SOURCE, first);
    pipeline.wait_acknowledged(first.len() as u64, Duration::from_secs(60));

    configmap.update(&hostile_files(r#"{"trap_odd_offsets": true}"#));
    wait_until("the swap", Duration::from_secs(10), || {
        live.counts().reloads == 1
    });
    let bad = live.version();
    kafka::produce(&bootstrap, SOURCE, rest);
    wait_until("the rollback", Duration::from_secs(60), || {
        live.counts().rollbacks == 1
    });
    assert_eq!(live.version(), good);
    pipeline.wait_acknowledged(source.len() as u64, Duration::from_secs(60));
    let stats = pipeline.stop();
    let status = live.status();
    let last = status.last_reload.unwrap();
    assert_eq!((last.result, last.from.as_str()), ("rolled-back", &*bad));
    assert!(status.last_error.unwrap().contains(&*bad));

    let received = kafka::read_all(&bootstrap, &topics, source.len(), Duration::from_secs(60));
    let mut delivered: HashMap<Placement, usize> = HashMap::new();
    let mut failed_by_bad = 0;
    for r in &received {
        let version = &r.headers[headers::PLUGIN_SET];
        if r.topic == DEAD_LETTER && *version == *bad {
            assert!(
                r.headers[headers::REASON].starts_with("plugin-trap: "),
                "{:?}",
                r.headers
            );
            let offset: i64 = r.headers[headers::SOURCE_OFFSET].parse().unwrap();
            assert_eq!(offset % 2, 1, "only odd offsets trap");
            assert_eq!(r.headers[headers::PLUGIN], "hostile");
            failed_by_bad += 1;
            // It would have been routed had the release been good.
            continue;
        }
        *delivered
            .entry(placement(r.topic.clone(), r.key.as_deref(), &r.value))
            .or_default() += 1;
    }
    // Every trap the bad release hit is a dead letter, and it was stopped early: 5% of 1,000.
    assert_eq!(failed_by_bad as u64, stats.dead_letters()["plugin-trap"]);
    assert!((51..=80).contains(&failed_by_bad), "{failed_by_bad} traps");
    // Everything else is where the good release puts it, exactly once.
    let missing: usize = wanted
        .iter()
        .map(|(p, n)| n.saturating_sub(delivered.get(p).copied().unwrap_or(0)))
        .sum();
    assert_eq!(
        missing, failed_by_bad,
        "events neither routed nor dead-lettered"
    );
    assert_eq!(received.len(), source.len());
    println!(
        "rolled back {bad} -> {good} after {failed_by_bad} traps; {} events, 0 lost",
        source.len()
    );
}
