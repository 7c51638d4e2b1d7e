//! Two replicas joining and leaving one consumer group on the real Apache Kafka cluster
//! ([`apache_kafka`]), with the classic group protocol and with KIP-848's
//! `group.protocol=consumer` (the broker assigns partitions; librdkafka 2.12 speaks it to
//! Kafka 4.x): replica A routes under load, B joins and takes partitions from it, A leaves on
//! SIGTERM and B finishes. At-least-once: every source offset's outcome is found (0 lost);
//! duplicates, events routed again after a hand-over, are allowed and printed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::apache_kafka::{Scope, committed};
use crate::kafka;
use crate::ops;
use crate::service::Service;
use crate::support;

const PARTITIONS: i32 = 8;

/// Fails with the replica's log if it exited with an error.
fn assert_running(name: &str, service: &Service) {
    let log = service.log();
    assert!(
        !log.lines().any(|l| l.starts_with("error: ")),
        "replica {name} exited with an error:\n{log}"
    );
}

fn wait_for_committed(scope: &Scope, want: i64, timeout: Duration, replicas: &[(&str, &Service)]) {
    let reader = scope.offsets_reader();
    let started = Instant::now();
    loop {
        let n = committed(&reader, &scope.source);
        if n >= want {
            return;
        }
        for (name, service) in replicas {
            assert_running(name, service);
        }
        assert!(
            started.elapsed() < timeout,
            "only {n} of {want} source records committed after {timeout:?}; logs:\n{}",
            replicas
                .iter()
                .map(|(name, s)| format!("--- {name} ---\n{}", s.log()))
                .collect::<String>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for `needle` in the replica's log, failing early if it exited with an error.
fn wait_for_log(name: &str, service: &Service, needle: &str, timeout: Duration) {
    let started = Instant::now();
    while !service.log().contains(needle) {
        assert_running(name, service);
        assert!(
            started.elapsed() < timeout,
            "no {needle:?} in replica {name}'s log after {timeout:?}:\n{}",
            service.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A replica of the scope's group with `protocol`'s consumer properties.
fn replica(scope: &Scope, plugins: &Path, config: &Path, protocol: &[&str]) -> Service {
    Service::start(|c| {
        c.arg("--config")
            .arg(config)
            .args(scope.args())
            .args(["--workers", "2"])
            // On two loaded cores (three brokers, two replicas) a by-namespace call can pass
            // the default 100 ms deadline and its event become a plugin-timeout dead letter,
            // which is not what this test is about.
            .args(["--deadline-ms", "5000"])
            .arg("--plugins")
            .arg(plugins);
        for property in protocol {
            c.args(["--kafka-property", property]);
        }
    })
}

/// Waits until the replica has been assigned at least one partition.
fn wait_for_partitions(name: &str, service: &Service, timeout: Duration) {
    let started = Instant::now();
    while !assignments(&service.log()).iter().any(|a| a != "[]") {
        assert_running(name, service);
        assert!(
            started.elapsed() < timeout,
            "replica {name} has no partitions after {timeout:?}:\n{}",
            service.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The partitions of every "partitions assigned" line of `log`, in order.
fn assignments(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("partitions assigned"))
        .filter_map(|l| l.split("partitions=").nth(1))
        .map(str::to_owned)
        .collect()
}

/// Produces `source` on a thread in chunks, never past `limit` nor more than `backlog` records
/// ahead of what the scope's group has committed.
fn feed(
    scope: &Scope,
    source: &[kafka::SourceRecord],
    limit: Arc<AtomicU64>,
    backlog: u64,
) -> std::thread::JoinHandle<()> {
    let reader = scope.offsets_reader();
    let (bootstrap, topic) = (scope.bootstrap.clone(), scope.source.clone());
    let source = source.to_vec();
    std::thread::spawn(move || {
        let mut sent = 0;
        for chunk in source.chunks(500) {
            let end = (sent + chunk.len()) as u64;
            while end > limit.load(Ordering::Relaxed)
                || end > committed(&reader, &topic) as u64 + backlog
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            kafka::produce(&bootstrap, &topic, chunk);
            sent += chunk.len();
        }
    })
}

/// A routes, B joins and takes some partitions, A leaves on SIGTERM, B finishes: 0 lost.
fn join_and_leave(name: &str, protocol: &[&str]) {
    let started = Instant::now();
    let scope = Scope::new(name);
    let source = scope.workload(20_000, 10);
    scope.create_topics(&source, PARTITIONS, 4);
    let plugins = support::plugin_set_dir(&["by_namespace"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fanout.toml");
    std::fs::write(&config, "[kafka]\ncommit_interval_ms = 500\n").unwrap();
    // The source is fed in stages, each no more than 5,000 records ahead of the group's
    // commits: events flow at every hand-over, and there is work left for B after A goes.
    let limit = Arc::new(AtomicU64::new(6_000));
    let feeder = feed(&scope, &source, limit.clone(), 5_000);
    let progress = scope.offsets_reader();

    let a = replica(&scope, plugins.path(), &config, protocol);
    wait_for_partitions("A", &a, Duration::from_secs(60));
    wait_for_committed(&scope, 4_000, Duration::from_secs(90), &[("A", &a)]);

    // B joins under load and gets some of A's partitions.
    limit.store(12_000, Ordering::Relaxed);
    let b = replica(&scope, plugins.path(), &config, protocol);
    let joined = Instant::now();
    wait_for_partitions("B", &b, Duration::from_secs(90));
    wait_for_log("A", &a, "partitions revoked", Duration::from_secs(60));
    let handed_over = joined.elapsed();
    let (_, ready) = ops::get(&ops::endpoint(&b), "/readyz");
    let ready = ready.trim().to_owned();
    // Both route for a while.
    let shared_from = committed(&progress, &scope.source);
    wait_for_committed(
        &scope,
        (shared_from + 2_000).min(12_000),
        Duration::from_secs(90),
        &[("A", &a), ("B", &b)],
    );

    // A leaves: B takes every partition and finishes.
    let left = Instant::now();
    let (status, a_log) = a.terminate();
    assert!(status.success(), "A exits 0 on SIGTERM: {status}\n{a_log}");
    let left_for_b = source.len() as i64 - committed(&progress, &scope.source);
    limit.store(source.len() as u64, Ordering::Relaxed);
    feeder.join().unwrap();
    wait_for_committed(
        &scope,
        source.len() as i64,
        Duration::from_secs(90),
        &[("B", &b)],
    );
    let finished = left.elapsed();
    let (status, b_log) = b.terminate();
    assert!(status.success(), "B exits 0 on SIGTERM: {status}\n{b_log}");

    let received = scope.read_outputs(&source, "read_committed", Duration::from_secs(60));
    let duplicates = scope.reconcile(&source, &received);
    println!(
        "{name} ({}): {} events, 0 lost, {duplicates} duplicates in {:.1} s; B had partitions \
         {:.1} s after joining, finished the last {left_for_b} {:.1} s after A left; A's \
         assignments {:?}, B's {:?}; B's /readyz: {ready}",
        if protocol.is_empty() {
            "classic".to_owned()
        } else {
            protocol.join(" ")
        },
        source.len(),
        started.elapsed().as_secs_f64(),
        handed_over.as_secs_f64(),
        finished.as_secs_f64(),
        assignments(&a_log),
        assignments(&b_log),
    );
    // B ended with every partition: its last assignment (incremental: the union of all) covers
    // the eight.
    let b_partitions: std::collections::BTreeSet<i64> = assignments(&b_log)
        .iter()
        .flat_map(|list| {
            list.trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .filter_map(|p| p.trim().parse().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        b_partitions.len(),
        PARTITIONS as usize,
        "B took over every partition after A left: {b_partitions:?}\n--- A ---\n{a_log}\n--- B \
         ---\n{b_log}"
    );
}

#[test]
fn classic_protocol_two_replicas_join_and_leave_without_loss() {
    // The broker's minimum session timeout: a member that stops heartbeating is noticed fast.
    join_and_leave(
        "groups-classic",
        &["group.protocol=classic", "session.timeout.ms=6000"],
    );
}

#[test]
fn consumer_protocol_kip_848_two_replicas_join_and_leave_without_loss() {
    // KIP-848: the broker runs the assignment, and session timeout and heartbeat interval are
    // the broker's (`group.consumer.*`); librdkafka refuses them on the client.
    join_and_leave("groups-consumer", &["group.protocol=consumer"]);
}
