//! `[topics] create_missing = true` on the real Apache Kafka cluster ([`apache_kafka`]), whose
//! broker auto-create is off: the only way a namespace topic comes to exist is fanout's own
//! CreateTopics. (The mock cluster has no CreateTopics, so there only the unanswered path ran.)
//!
//! - Namespace topics are created, from four routing threads at once, with the configured
//!   partitions, replication factor and topic configs (checked by describing them), each by
//!   exactly one CreateTopics request (counted in the controller's own log), without a
//!   warning or a failed write, and every event lands.
//! - A creation the broker refuses (replication factor 4 on 3 nodes) dead-letters the events
//!   bound for that topic, and the dead letter's `fanout-reason` carries the broker's reason.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ConfigSource, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};

use crate::apache_kafka::{self, Scope};
use crate::kafka::{self, Expected};
use crate::ops;
use crate::service::Service;
use crate::support;

const SOURCE_PARTITIONS: i32 = 8;
const PARTITIONS: i32 = 5;
const REPLICATION: usize = 2;
const RETENTION_MS: &str = "7200000";

/// Creates only the scope's source and dead-letter topics: every namespace topic is left to
/// fanout.
fn create_source_and_dead_letter(scope: &Scope) {
    apache_kafka::cluster()
        .create_topics(
            &[
                (scope.source.clone(), SOURCE_PARTITIONS),
                (scope.dead_letter.clone(), 3),
            ],
            &[],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// The namespace topics `workload` routes to (its output topics but the dead-letter topic).
fn namespace_topics(scope: &Scope, workload: &[kafka::SourceRecord]) -> Vec<String> {
    scope
        .output_topics(workload)
        .into_iter()
        .filter(|t| *t != scope.dead_letter)
        .collect()
}

/// The cluster's topics, by Metadata: name → the replica count of each partition.
fn topic_layout(scope: &Scope) -> BTreeMap<String, Vec<usize>> {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &scope.bootstrap)
        .create()
        .unwrap();
    let metadata = probe.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| {
            (
                t.name().to_owned(),
                t.partitions().iter().map(|p| p.replicas().len()).collect(),
            )
        })
        .collect()
}

/// Waits until the group has committed past `want` source records; fails early, with the log,
/// if fanout exits with an error.
fn wait_for_committed(scope: &Scope, want: i64, timeout: Duration, service: &Service) {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &scope.bootstrap)
        .set("group.id", &scope.group)
        .create()
        .unwrap();
    let started = Instant::now();
    loop {
        let n = apache_kafka::committed(&reader, &scope.source);
        if n >= want {
            return;
        }
        let log = service.log();
        assert!(
            !log.lines().any(|l| l.starts_with("error: ")),
            "fanout exited with an error:\n{log}"
        );
        assert!(
            started.elapsed() < timeout,
            "only {n} of {want} source records committed after {timeout:?}; fanout's log:\n{}",
            warnings(&log).join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The log's WARN and ERROR lines, fanout's and librdkafka's.
fn warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.starts_with("error: "))
        .collect()
}

/// A `fanout run` for `scope` with `config` as its file and four routing threads.
fn start(scope: &Scope, config: &str, plugins: &Path, dir: &Path) -> Service {
    let file = dir.join("fanout.toml");
    std::fs::write(&file, config).unwrap();
    Service::start(|c| {
        c.arg("--config")
            .arg(&file)
            .args(scope.args())
            .args(["--workers", "4"])
            // On two loaded cores a by-namespace call can pass the default 100 ms deadline;
            // a plugin-timeout dead letter is not what these tests are about.
            .args(["--deadline-ms", "5000"])
            .arg("--plugins")
            .arg(plugins);
    })
}

/// The controller's logger that writes one line per CreateTopics request it handles, with
/// each topic's outcome: `CreateTopics result(s): CreatableTopic(name='t', ...): SUCCESS` or
/// `...: TOPIC_ALREADY_EXISTS (Topic 't' already exists.)`.
const CREATE_TOPICS_LOGGER: &str = "org.apache.kafka.controller.ReplicationControlManager";

/// Turns [`CREATE_TOPICS_LOGGER`] up to INFO on every node (the harness logs warnings only),
/// through the Admin API's broker-logger configs, with Kafka's own `kafka-configs` tool: the
/// broker, not fanout, then says how many CreateTopics requests it got for each topic.
/// (librdkafka's own debug log cannot tell: rust-rdkafka never polls the queue its admin
/// client logs to.)
fn log_create_topics_requests() {
    let lib = kafka_cluster::jars().unwrap_or_else(|e| panic!("{e:#}"));
    let cluster = apache_kafka::cluster();
    let bootstrap = cluster.bootstrap_servers();
    let log4j = support::root().join("tests/kafka-cluster/java/log4j2.properties");
    let tools: Vec<(i32, std::process::Child)> = cluster
        .node_ids()
        .into_iter()
        .map(|id| {
            let child = std::process::Command::new("java")
                .args(["-Xmx128m", "-XX:TieredStopAtLevel=1"])
                .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
                .arg("-cp")
                .arg(lib.join("*"))
                .arg("kafka.admin.ConfigCommand")
                .args(["--bootstrap-server", &bootstrap])
                .args([
                    "--entity-type",
                    "broker-loggers",
                    "--entity-name",
                    &id.to_string(),
                ])
                .args([
                    "--alter",
                    "--add-config",
                    &format!("{CREATE_TOPICS_LOGGER}=INFO"),
                ])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("running java");
            (id, child)
        })
        .collect();
    for (id, tool) in tools {
        let output = tool.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "kafka-configs --entity-type broker-loggers --entity-name {id}: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The controller's outcome of every CreateTopics request naming `topic`, in every node's log:
/// `SUCCESS`, `TOPIC_ALREADY_EXISTS (...)`, `INVALID_REPLICATION_FACTOR (...)`.
fn create_topics_outcomes(topic: &str) -> Vec<String> {
    let cluster = apache_kafka::cluster();
    let needle = format!("CreatableTopic(name='{topic}',");
    let mut outcomes = Vec::new();
    for id in cluster.node_ids() {
        for line in cluster.log_tail(id, 1_000_000).lines() {
            let Some(at) = line.find(&needle) else {
                continue;
            };
            if !line.contains("CreateTopics result(s)") || line.contains("Validate-only") {
                continue;
            }
            // `CreatableTopic(name='t', ..., configs=[...]): OUTCOME[, CreatableTopic(...` or
            // `...): OUTCOME (org.apache.kafka.controller...)` at the line's end.
            let rest = &line[at..];
            let outcome = rest
                .split_once("): ")
                .map(|(_, outcome)| outcome)
                .unwrap_or(rest);
            let outcome = outcome
                .split(", CreatableTopic(")
                .next()
                .unwrap_or(outcome)
                .trim_end_matches(&format!(" ({CREATE_TOPICS_LOGGER})"))
                .to_owned();
            outcomes.push(outcome);
        }
    }
    outcomes
}

/// Every topic's CreateTopics outcomes, as the controller logged them.
fn create_topics_requests(topics: &[String]) -> BTreeMap<String, Vec<String>> {
    topics
        .iter()
        .map(|t| (t.clone(), create_topics_outcomes(t)))
        .collect()
}

#[test]
fn missing_namespace_topics_are_created_once_each_with_the_configured_settings() {
    let started = Instant::now();
    let scope = Scope::new("topic-create");
    log_create_topics_requests();
    let source = scope.workload(6_000, 12);
    let wanted = namespace_topics(&scope, &source);
    create_source_and_dead_letter(&scope);
    let before = topic_layout(&scope);
    for topic in &wanted {
        assert!(
            !before.contains_key(topic),
            "{topic} exists before fanout runs"
        );
    }
    // Everything is there before fanout starts, so the four routing threads meet the new
    // topics at the same moment: each namespace's events are spread over every partition.
    scope.produce(&source);
    let plugins = support::plugin_set_dir(&["by_namespace"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[kafka]\ncommit_interval_ms = 500\n\
         [topics]\ncreate_missing = true\npartitions = {PARTITIONS}\n\
         replication_factor = {REPLICATION}\n\
         [topics.configs]\n\"retention.ms\" = \"{RETENTION_MS}\"\n\"min.insync.replicas\" = \"1\"\n"
    );
    let service = start(&scope, &config, plugins.path(), dir.path());
    let addr = ops::endpoint(&service);
    wait_for_committed(
        &scope,
        source.len() as i64,
        Duration::from_secs(90),
        &service,
    );
    let (_, metrics) = ops::get(&addr, "/metrics");
    let metrics = ops::samples(&metrics);
    let (status, log) = service.terminate();
    assert!(
        status.success(),
        "exit {status}:\n{}",
        warnings(&log).join("\n")
    );

    // Every event is in its place.
    let received = scope.read_outputs(&source, "read_committed", Duration::from_secs(60));
    let duplicates = scope.reconcile(&source, &received);
    assert_eq!(
        duplicates, 0,
        "one replica, no failure: no event written twice"
    );

    // Each topic has the configured layout and configs.
    let layout = topic_layout(&scope);
    for topic in &wanted {
        let replicas = layout
            .get(topic)
            .unwrap_or_else(|| panic!("{topic} was not created"));
        assert_eq!(
            replicas.len(),
            PARTITIONS as usize,
            "{topic}'s partitions: {replicas:?}"
        );
        assert!(
            replicas.iter().all(|&r| r == REPLICATION),
            "{topic}'s replicas per partition: {replicas:?}"
        );
    }
    let admin: AdminClient<DefaultClientContext> =
        apache_kafka::cluster().client().create().unwrap();
    let specifiers: Vec<ResourceSpecifier<'_>> =
        wanted.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let described = kafka_cluster::block_on(admin.describe_configs(
        &specifiers,
        &AdminOptions::new().request_timeout(Some(Duration::from_secs(30))),
    ))
    .unwrap();
    for (topic, resource) in wanted.iter().zip(described) {
        let resource = resource.unwrap_or_else(|e| panic!("describing {topic}: {e}"));
        for (key, want) in [("retention.ms", RETENTION_MS), ("min.insync.replicas", "1")] {
            let entry = resource
                .get(key)
                .unwrap_or_else(|| panic!("{topic} has no {key}"));
            assert_eq!(entry.value.as_deref(), Some(want), "{topic}'s {key}");
            assert_eq!(
                entry.source,
                ConfigSource::DynamicTopic,
                "{topic}'s {key} is the topic's own"
            );
        }
    }

    // Once each, without a warning or a failed write.
    let requests = create_topics_requests(&wanted);
    let request_count: usize = requests.values().map(Vec::len).sum();
    let repeated: BTreeMap<&String, &Vec<String>> =
        requests.iter().filter(|(_, r)| r.len() != 1).collect();
    let created: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("topic created"))
        .collect();
    let warned = warnings(&log);
    println!(
        "topic creation: {} namespace topics ({PARTITIONS} partitions, replication \
         {REPLICATION}, retention.ms and min.insync.replicas set) created by {} CreateTopics \
         requests from 4 routing threads, {} events routed in {:.1} s, {} warnings",
        wanted.len(),
        request_count,
        source.len(),
        started.elapsed().as_secs_f64(),
        warned.len()
    );
    assert!(warned.is_empty(), "fanout warned:\n{}", warned.join("\n"));
    assert_eq!(
        metrics.get("fanout_produce_errors_total").copied(),
        Some(0.0),
        "no write failed"
    );
    assert_eq!(
        created.len(),
        wanted.len(),
        "one \"topic created\" per topic:\n{}",
        created.join("\n")
    );
    assert!(
        repeated.is_empty(),
        "one CreateTopics request per topic, not one per routing thread that met it; the \
         controller's outcomes of the others: {repeated:#?}"
    );
}

#[test]
fn a_creation_the_broker_refuses_dead_letters_its_events_with_the_brokers_reason() {
    let started = Instant::now();
    let scope = Scope::new("topic-refused");
    log_create_topics_requests();
    let source = scope.workload(600, 3);
    let wanted = namespace_topics(&scope, &source);
    create_source_and_dead_letter(&scope);
    scope.produce(&source);
    let plugins = support::plugin_set_dir(&["by_namespace"], &[]);
    let dir = tempfile::tempdir().unwrap();
    // Three nodes cannot hold four replicas: the broker refuses every creation with
    // INVALID_REPLICATION_FACTOR.
    let config = "[kafka]\ncommit_interval_ms = 500\n\
                  [topics]\ncreate_missing = true\npartitions = 3\nreplication_factor = 4\n";
    let service = start(&scope, config, plugins.path(), dir.path());
    wait_for_committed(
        &scope,
        source.len() as i64,
        Duration::from_secs(120),
        &service,
    );
    let (status, log) = service.terminate();
    assert!(
        status.success(),
        "exit {status}:\n{}",
        warnings(&log).join("\n")
    );
    let requests = create_topics_requests(&wanted);

    // Every event is a dead letter, each exactly once, and no namespace topic exists.
    let received = kafka::read_all(
        &scope.bootstrap,
        std::slice::from_ref(&scope.dead_letter),
        source.len(),
        Duration::from_secs(60),
    );
    let duplicates = kafka::reconcile_by(&source, &received, |_| scope.dead_letter.clone());
    let layout = topic_layout(&scope);
    for topic in &wanted {
        assert!(!layout.contains_key(topic), "{topic} exists");
    }
    let routable: Vec<&[u8]> = source
        .iter()
        .filter(|r| matches!(kafka::expected(r), Expected::Topic(_)))
        .map(|r| r.value.as_slice())
        .collect();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for record in received
        .iter()
        .filter(|r| routable.contains(&r.value.as_slice()))
    {
        let reason = record
            .headers
            .get("fanout-reason")
            .cloned()
            .unwrap_or_default();
        // The topic differs per namespace; the reason's text does not.
        let reason = wanted
            .iter()
            .fold(reason, |reason, topic| reason.replace(topic, "<topic>"));
        *reasons.entry(reason).or_default() += 1;
    }
    println!(
        "refused creation: {} routable events of {} dead-lettered in {:.1} s ({duplicates} \
         duplicates), {} CreateTopics requests for {} topics; reasons: {reasons:#?}",
        routable.len(),
        source.len(),
        started.elapsed().as_secs_f64(),
        requests.values().map(Vec::len).sum::<usize>(),
        wanted.len(),
    );
    println!("the controller's answers: {requests:#?}");
    assert_eq!(
        reasons.values().sum::<usize>(),
        routable.len(),
        "every routable event is a dead letter"
    );
    for reason in reasons.keys() {
        assert!(
            reason.to_ascii_lowercase().contains("replication factor"),
            "the dead letter names the broker's reason for refusing the topic \
             (INVALID_REPLICATION_FACTOR), not {reason:?}"
        );
    }
}
