//! The dead-letter topic on the real Apache Kafka cluster ([`apache_kafka`], broker
//! auto-create off), where a missing topic stays missing unless fanout creates it:
//!
//! - missing at start with `[topics] create_missing = false`: fanout is never ready, logs one
//!   line naming the topic and the setting, and exits non-zero within
//!   [`MISSING_TOPIC_WAIT`] and a few seconds, in both delivery modes, without an abort;
//! - missing at start with `create_missing = true`: fanout creates it with the configured
//!   partitions, replication factor and configs, and exactly-once commits every source offset
//!   with at most one abort;
//! - deleted while exactly-once runs: fanout turns not ready within seconds, says why once, and
//!   exits non-zero instead of aborting transaction after transaction.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fanout::pipeline::topics::{MISSING_TOPIC_WAIT, WATCH_INTERVAL};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};

use crate::apache_kafka::{self, Scope};
use crate::kafka::SourceRecord;
use crate::ops;
use crate::service::Service;
use crate::support;

const SOURCE_PARTITIONS: i32 = 4;

/// How long past [`MISSING_TOPIC_WAIT`] the exit may come: the check's own round trips, the
/// plugin set's loading before it, and the bounded drain after it.
const EXIT_SLACK: Duration = Duration::from_secs(15);

/// A `fanout run` for `scope` routing with by_namespace.wasm, in `delivery` mode, with
/// `config` as its file if given.
fn start(scope: &Scope, delivery: &str, config: Option<&str>, dir: &Path) -> Service {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        support::wasm("by_namespace"),
        plugins.join("by_namespace.wasm"),
    )
    .unwrap();
    let file = dir.join("fanout.toml");
    std::fs::write(&file, config.unwrap_or("")).unwrap();
    let transactional_id = format!("{}-txn", scope.name);
    Service::start(|c| {
        c.arg("--config")
            .arg(&file)
            .args(scope.args())
            .args(["--workers", "2", "--delivery", delivery])
            // The plugin's deadline is not what these tests are about: a busy test machine
            // must not turn an event into a plugin-timeout dead letter.
            .args(["--deadline-ms", "5000"])
            .args(["--transactional-id", &transactional_id])
            .arg("--plugins")
            .arg(&plugins);
    })
}

/// A GET that may find nobody listening (the process has exited): `None` then.
fn try_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// One sample of /metrics (0 until it is exported).
fn metric(addr: &str, name: &str) -> Option<f64> {
    let (_, body) = try_get(addr, "/metrics")?;
    Some(ops::samples(&body).get(name).copied().unwrap_or(0.0))
}

/// What /readyz and /metrics said until the process stopped answering.
#[derive(Debug, Default)]
struct Observed {
    /// Every /readyz answer: (when, code, body).
    readyz: Vec<(Instant, u16, String)>,
    /// The largest `fanout_transactions_aborted_total` seen.
    aborted: f64,
}

/// Polls `addr` every 200 ms on a thread until `done` is called (an answer that fails, such as
/// one cut short by a busy machine, is skipped).
fn observe(addr: String) -> Observer {
    let done = Arc::new(AtomicBool::new(false));
    let thread = std::thread::spawn({
        let done = done.clone();
        move || {
            let mut observed = Observed::default();
            while !done.load(Ordering::Relaxed) {
                if let Some((code, body)) = try_get(&addr, "/readyz") {
                    observed.readyz.push((Instant::now(), code, body));
                }
                if let Some(aborted) = metric(&addr, "fanout_transactions_aborted_total") {
                    observed.aborted = observed.aborted.max(aborted);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            observed
        }
    });
    Observer { done, thread }
}

struct Observer {
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Observed>,
}

impl Observer {
    /// Stops polling (the process has exited) and says what was seen.
    fn done(self) -> Observed {
        self.done.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Whether `topic` exists, by Metadata (the cluster never creates topics on its own).
fn exists(scope: &Scope, topic: &str) -> bool {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &scope.bootstrap)
        .create()
        .unwrap();
    let metadata = probe
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none())
}

/// Source records the scope's group has committed past.
fn committed(scope: &Scope) -> i64 {
    apache_kafka::committed(&scope.offsets_reader(), &scope.source)
}

fn wait_for_committed(scope: &Scope, want: i64, timeout: Duration, service: &Service) {
    let started = Instant::now();
    loop {
        let n = committed(scope);
        if n >= want {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "only {n} of {want} source records committed after {timeout:?}; fanout's log:\n{}",
            service.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// fanout's own log lines that name `topic` (librdkafka's left out).
fn lines_naming<'a>(log: &'a str, topic: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| !l.contains("librdkafka") && l.contains(topic))
        .collect()
}

/// The dead-letter topic is missing, and fanout may not create it: not ready from start to
/// exit, one line naming the topic and `create_missing`, a non-zero exit within the bound,
/// nothing consumed and no abort.
fn missing_without_create_missing(name: &str, delivery: &str) {
    let scope = Scope::new(name);
    apache_kafka::cluster()
        .create_topics(&[(scope.source.clone(), SOURCE_PARTITIONS)], &[])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let workload = scope.workload(500, 3);
    scope.produce(&workload);
    let dir = tempfile::tempdir().unwrap();

    let started = Instant::now();
    let mut service = start(&scope, delivery, None, dir.path());
    let observer = observe(ops::endpoint(&service));
    let status = service.wait_for_exit(MISSING_TOPIC_WAIT + EXIT_SLACK + Duration::from_secs(15));
    let took = started.elapsed();
    let observed = observer.done();
    let log = service.log();

    assert!(!status.success(), "exits non-zero: {status}\n{log}");
    assert!(
        took >= MISSING_TOPIC_WAIT && took <= MISSING_TOPIC_WAIT + EXIT_SLACK,
        "exited after {took:?}, not within {MISSING_TOPIC_WAIT:?} + {EXIT_SLACK:?}:\n{log}"
    );
    let named = lines_naming(&log, &scope.dead_letter);
    assert_eq!(named.len(), 1, "one line names the topic:\n{log}");
    assert!(
        named[0].contains("[topics] create_missing = true") && named[0].contains("ERROR"),
        "it says which setting would fix it: {}",
        named[0]
    );
    assert!(
        log.lines()
            .last()
            .is_some_and(|l| l.starts_with("error: the dead-letter topic is still missing")),
        "the last line says why it stopped:\n{log}"
    );
    assert!(!observed.readyz.is_empty(), "/readyz answered");
    assert!(
        observed.readyz.iter().all(|(_, code, _)| *code == 503),
        "never ready: {:?}",
        observed.readyz
    );
    assert!(
        observed.readyz.iter().any(
            |(_, _, body)| body.contains(&scope.dead_letter) && body.contains("create_missing")
        ),
        "/readyz names the topic: {:?}",
        observed.readyz.last()
    );
    assert_eq!(observed.aborted, 0.0, "no transaction was begun:\n{log}");
    assert_eq!(committed(&scope), 0, "nothing was committed");
    assert!(
        !exists(&scope, &scope.dead_letter),
        "nothing created the topic"
    );
    println!(
        "{delivery}, dead-letter topic missing, create_missing off: never ready, one line, \
         exit {status} after {:.1} s",
        took.as_secs_f64()
    );
}

#[test]
fn a_missing_dead_letter_topic_without_create_missing_is_never_ready_and_exits_non_zero() {
    missing_without_create_missing("dlt-absent-alo", "at-least-once");
}

#[test]
fn a_missing_dead_letter_topic_without_create_missing_stops_exactly_once_before_any_abort() {
    missing_without_create_missing("dlt-absent-eos", "exactly-once");
}

#[test]
fn a_missing_dead_letter_topic_with_create_missing_is_created_with_the_configured_settings() {
    let scope = Scope::new("dlt-created");
    let workload = scope.workload(3_000, 4);
    // The source and the namespace topics exist; only the dead-letter topic is missing.
    let mut topics = vec![(scope.source.clone(), SOURCE_PARTITIONS)];
    topics.extend(
        scope
            .output_topics(&workload)
            .into_iter()
            .filter(|t| *t != scope.dead_letter)
            .map(|t| (t, 3)),
    );
    apache_kafka::cluster()
        .create_topics(&topics, &[])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!exists(&scope, &scope.dead_letter));
    scope.produce(&workload);
    let dir = tempfile::tempdir().unwrap();
    let config = "[topics]\ncreate_missing = true\npartitions = 2\nreplication_factor = 3\n\
                  [topics.configs]\n\"retention.ms\" = \"3600000\"\n";

    let started = Instant::now();
    let service = start(&scope, "exactly-once", Some(config), dir.path());
    let addr = ops::endpoint(&service);
    wait_for_committed(
        &scope,
        workload.len() as i64,
        Duration::from_secs(120),
        &service,
    );
    let took = started.elapsed();
    let (code, body) = ops::get(&addr, "/readyz");
    assert_eq!(code, 200, "{body}");
    let aborted = metric(&addr, "fanout_transactions_aborted_total").unwrap();
    let acknowledged = metric(&addr, "fanout_events_acknowledged_total").unwrap();

    // Created as configured: 2 partitions, each on 3 replicas, and the topic config.
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &scope.bootstrap)
        .create()
        .unwrap();
    let metadata = probe
        .fetch_metadata(Some(&scope.dead_letter), Duration::from_secs(10))
        .unwrap();
    let replicas: Vec<usize> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.replicas().len())
        .collect();
    assert_eq!(replicas, [3, 3], "two partitions, three replicas each");
    let admin: AdminClient<DefaultClientContext> =
        apache_kafka::cluster().client().create().unwrap();
    let described = kafka_cluster::block_on(admin.describe_configs(
        &[ResourceSpecifier::Topic(&scope.dead_letter)],
        &AdminOptions::new(),
    ))
    .unwrap();
    let resource = described[0].as_ref().unwrap();
    assert_eq!(
        resource
            .get("retention.ms")
            .and_then(|e| e.value.as_deref()),
        Some("3600000")
    );

    // Every event in its place once, dead letters included, as a read_committed reader sees.
    let received = scope.read_outputs(&workload, "read_committed", Duration::from_secs(60));
    assert_eq!(scope.reconcile(&workload, &received), 0, "no duplicates");
    assert!(
        received.iter().any(|r| r.topic == scope.dead_letter),
        "the malformed fixtures were dead-lettered into the new topic"
    );
    assert!(aborted <= 1.0, "{aborted} aborts:\n{}", service.log());
    assert_eq!(
        acknowledged,
        workload.len() as f64,
        "every event acknowledged once, when its transaction committed"
    );
    let (status, log) = service.terminate();
    assert!(status.success(), "{log}");
    assert!(
        lines_naming(&log, &scope.dead_letter)
            .iter()
            .any(|l| l.contains("topic created")),
        "{log}"
    );
    println!(
        "exactly-once, dead-letter topic missing, create_missing on: created (2 partitions × 3 \
         replicas, retention.ms), {} source offsets committed in {:.1} s, {aborted} aborts",
        workload.len(),
        took.as_secs_f64()
    );
}

#[test]
fn a_dead_letter_topic_deleted_while_exactly_once_runs_is_unready_and_exits_non_zero() {
    let scope = Scope::new("dlt-deleted");
    let workload = scope.workload(2_000, 3);
    scope.create_topics(&workload, SOURCE_PARTITIONS, 3);
    let dir = tempfile::tempdir().unwrap();
    let mut service = start(&scope, "exactly-once", None, dir.path());
    let addr = ops::endpoint(&service);
    scope.produce(&workload);
    wait_for_committed(
        &scope,
        workload.len() as i64,
        Duration::from_secs(120),
        &service,
    );
    let (code, body) = ops::get(&addr, "/readyz");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        metric(&addr, "fanout_transactions_aborted_total"),
        Some(0.0)
    );

    let admin: AdminClient<DefaultClientContext> =
        apache_kafka::cluster().client().create().unwrap();
    let deleted = kafka_cluster::block_on(
        admin.delete_topics(&[scope.dead_letter.as_str()], &AdminOptions::new()),
    )
    .unwrap();
    assert!(deleted[0].is_ok(), "{deleted:?}");
    let deleted_at = Instant::now();
    // Events that need the dead-letter topic, and events that don't.
    let mut more: Vec<SourceRecord> = (0..50)
        .map(|i| SourceRecord {
            key: None,
            value: format!("not an event {i}").into_bytes(),
        })
        .collect();
    more.extend(scope.workload(1_000, 3).into_iter().skip(500));
    let observer = observe(addr.clone());
    scope.produce(&more);

    let status = service.wait_for_exit(MISSING_TOPIC_WAIT + WATCH_INTERVAL + EXIT_SLACK * 2);
    let took = deleted_at.elapsed();
    let observed = observer.done();
    let log = service.log();
    assert!(!status.success(), "exits non-zero: {status}\n{log}");
    assert!(
        took <= MISSING_TOPIC_WAIT + WATCH_INTERVAL + EXIT_SLACK,
        "exited {took:?} after the deletion:\n{log}"
    );
    let fix: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("create_missing"))
        .collect();
    assert_eq!(fix.len(), 1, "one line says what to do:\n{log}");
    assert!(fix[0].contains(&scope.dead_letter), "{}", fix[0]);
    let last = log.lines().last().unwrap_or_default();
    // Two endings, both bounded: the watcher finds the topic gone first, and fanout holds,
    // not ready, until it gives up; or a transaction wrote to the topic after it was deleted,
    // and its abort is refused (Kafka 4.1 answers EndTxn with INVALID_TXN_STATE, which
    // librdkafka takes as fatal), and fanout exits at once, saying the topic is missing.
    let ending = if last.starts_with("error: the dead-letter topic is still missing") {
        let unready_at = observed
            .readyz
            .iter()
            .find(|(_, code, body)| *code == 503 && body.contains(&scope.dead_letter))
            .map(|(at, _, _)| at.duration_since(deleted_at))
            .unwrap_or_else(|| {
                panic!(
                    "/readyz never named the topic: {:?}\n{log}",
                    observed.readyz
                )
            });
        assert!(
            unready_at <= WATCH_INTERVAL + Duration::from_secs(5),
            "not ready only {unready_at:?} after the deletion"
        );
        assert!(
            took >= MISSING_TOPIC_WAIT,
            "held {took:?}, less than the wait"
        );
        format!("held, not ready after {:.1} s", unready_at.as_secs_f64())
    } else {
        assert!(
            last.starts_with("error: aborting a transaction failed")
                && last.contains("the dead-letter topic is missing"),
            "{log}"
        );
        assert!(
            took <= EXIT_SLACK,
            "a refused abort stops at once, not after {took:?}"
        );
        "stopped at once: its abort was refused".to_owned()
    };
    assert!(
        observed.aborted <= 2.0,
        "{} aborts: no abort loop:\n{log}",
        observed.aborted
    );
    println!(
        "exactly-once, dead-letter topic deleted while running: {ending}, {} aborts, exit \
         {status} after {:.1} s",
        observed.aborted,
        took.as_secs_f64()
    );
}
