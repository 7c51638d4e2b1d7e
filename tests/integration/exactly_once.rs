//! Exactly-once (`--delivery exactly-once`) with `fanout run` as child processes.
//!
//! On the mock cluster, which speaks the whole transactional protocol (InitProducerId,
//! AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn, producer-epoch checks) but keeps
//! none of its promises (its TxnOffsetCommit stores no offsets, EndTxn writes no markers, Fetch
//! reports no aborted transactions, a second producer with the same transactional id is not
//! fenced; librdkafka's `rdkafka_mock_handlers.c`): batches are committed as transactions with
//! dead letters inside them; a replica fenced (by an injected answer) exits non-zero and says why.
//!
//! On the real Apache Kafka cluster ([`apache_kafka`]), where a `read_committed` reader proves
//! what was committed: SIGKILL mid-transaction five times, scaling 1 → 2 → 1 under load, and a
//! zombie replica fenced by its group's generation (KIP-447), each with zero duplicates; a
//! failed transaction is aborted and its events routed again.

use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::apache_kafka::{self, Scope, committed};
use crate::kafka::{self, DEAD_LETTER, SOURCE};
use crate::ops;
use crate::service::Service;
use crate::support;

const PARTITIONS: i32 = 8;

/// A replica routing with by_namespace.wasm inside transactions.
fn replica(bootstrap: &str, group: &str, plugins: &std::path::Path, id: &str) -> Service {
    Service::start(|c| {
        c.args([
            "--bootstrap-servers",
            bootstrap,
            "--group-id",
            group,
            "--workers",
            "2",
            "--delivery",
            "exactly-once",
            "--transactional-id",
            id,
            "--deadline-ms",
            "2000",
        ])
        .arg("--plugins")
        .arg(plugins);
    })
}

/// One counter from the replica's /metrics (0 until it is exported).
pub fn metric(service: &Service, name: &str) -> f64 {
    let (_, body) = ops::get(&ops::endpoint(service), "/metrics");
    ops::samples(&body).get(name).copied().unwrap_or(0.0)
}

fn wait_for_metric(service: &Service, name: &str, want: f64, timeout: Duration) {
    let started = Instant::now();
    loop {
        let value = metric(service, name);
        if value >= want {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{name} is {value}, not {want}, after {timeout:?}; fanout's log:\n{}",
            service.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn batches_commit_as_transactions_with_their_dead_letters() {
    let source = kafka::workload(20_000, 10);
    let kafka = kafka::start_kafka(PARTITIONS, &source);
    let bootstrap = kafka.bootstrap_servers();
    kafka::produce(&bootstrap, SOURCE, &source);
    let plugins = support::plugin_set_dir(&["by_namespace"], &[]);

    let service = replica(&bootstrap, "eos", plugins.path(), "eos-batches");
    let topics = kafka::output_topics(&source);
    let received = kafka::read_all(&bootstrap, &topics, source.len(), Duration::from_secs(180));
    wait_for_metric(
        &service,
        "fanout_events_acknowledged_total",
        source.len() as f64,
        Duration::from_secs(60),
    );
    let committed = metric(&service, "fanout_transactions_committed_total");
    let aborted = metric(&service, "fanout_transactions_aborted_total");
    let (status, log) = service.terminate();
    assert!(status.success(), "{log}");

    assert_eq!(kafka::reconcile(&source, &received), 0, "no duplicates");
    assert!(
        received.iter().any(|r| r.topic == DEAD_LETTER),
        "the fixtures' malformed lines were dead-lettered, inside the transactions"
    );
    // 20,000 events in batches of at most 5,000 (or 100 ms): at least four transactions.
    assert!(committed >= 4.0, "{committed} transactions:\n{log}");
    assert_eq!(aborted, 0.0, "nothing failed, nothing aborted:\n{log}");
    assert!(log.contains("exactly-once: transactions ready"), "{log}");
}

#[test]
fn a_fenced_replica_exits_non_zero_and_says_why() {
    let source = kafka::workload(3_000, 5);
    let kafka = kafka::start_kafka(PARTITIONS, &source);
    let bootstrap = kafka.bootstrap_servers();
    let plugins = support::plugin_set_dir(&["by_namespace"], &[]);
    let (before, after) = source.split_at(1_000);
    kafka::produce(&bootstrap, SOURCE, before);

    let mut service = replica(&bootstrap, "eos-fence", plugins.path(), "eos-fenced");
    wait_for_metric(
        &service,
        "fanout_transactions_committed_total",
        1.0,
        Duration::from_secs(120),
    );
    // The coordinator answers the next commit as it answers a zombie: another producer with
    // this transactional id has taken over. (The mock gives a second producer with the same
    // id a new producer id instead of fencing the first, so the answer is injected.)
    kafka.cluster().request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    kafka::produce(&bootstrap, SOURCE, after);
    let status = service.wait_for_exit(Duration::from_secs(120));
    let log = service.log();
    assert!(!status.success(), "a fenced replica exits non-zero:\n{log}");
    assert!(log.contains("fenced"), "the log says it was fenced:\n{log}");
}

// ------------------------------------------------------------------------------------------------
// On the real Apache Kafka cluster (3 nodes, replication 3, min.insync.replicas=2)
// ------------------------------------------------------------------------------------------------

/// A replica in `scope` routing with `plugins` inside transactions. The consumer's session
/// timeout is the broker's minimum (6 s), so a killed or paused replica's partitions move on
/// within seconds instead of librdkafka's default 45. The plugin deadline is 2 s, not 100 ms:
/// on two cores shared with three Kafka nodes a plain call did exceed 100 ms (42 events of
/// 100,000 were dead-lettered `plugin-timeout`), and deadlines are not what these tests check.
fn real_replica(scope: &Scope, plugins: &std::path::Path, id: &str) -> Service {
    real_replica_with(scope, plugins, id, &[])
}

/// [`real_replica`] with `extra` arguments.
fn real_replica_with(
    scope: &Scope,
    plugins: &std::path::Path,
    id: &str,
    extra: &[&str],
) -> Service {
    Service::start(|c| {
        c.args(scope.args())
            .args(["--workers", "2", "--delivery", "exactly-once"])
            .args(["--transactional-id", id])
            .args(["--kafka-property", "session.timeout.ms=6000"])
            .args(["--deadline-ms", "2000"])
            .args(extra)
            .arg("--plugins")
            .arg(plugins);
    })
}

/// A workload for hostile.wasm, which routes each event to `ok.<namespace>` and traps on
/// reason `HostileTrap`: `scope`'s workload with every 100th routable event made to trap and
/// every 200th record cut in half (malformed JSON), on top of the fixtures' malformed lines.
fn trapping_workload(scope: &Scope, total: usize, namespaces: usize) -> Vec<kafka::SourceRecord> {
    let mut records = scope.workload(total, namespaces);
    for (i, record) in records.iter_mut().enumerate() {
        if i % 200 == 199 {
            record.value.truncate(record.value.len() / 2);
        } else if i % 100 == 50
            && let kafka::Expected::Topic(_) = kafka::expected(record)
        {
            let mut envelope: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
            envelope["event"]["reason"] = "HostileTrap".into();
            record.value = serde_json::to_vec(&envelope).unwrap();
        }
    }
    records
}

/// Where hostile.wasm puts `record`, worked out independently of fanout.
fn hostile_destination(scope: &Scope, record: &kafka::SourceRecord) -> String {
    if kafka::expected(record) == kafka::Expected::DeadLetter("malformed-event") {
        return scope.dead_letter.clone();
    }
    let envelope: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
    if envelope["event"]["reason"] == "HostileTrap" {
        return scope.dead_letter.clone();
    }
    let namespace = envelope["event"]["metadata"]["namespace"]
        .as_str()
        .filter(|ns| !ns.is_empty())
        .unwrap_or("none");
    let topic = format!("ok.{namespace}");
    match fanout::topic_name::check_topic_name(&topic) {
        Ok(()) => topic,
        Err(_) => scope.dead_letter.clone(),
    }
}

/// Creates `scope`'s source topic and every topic hostile.wasm routes `workload` to.
fn create_hostile_topics(scope: &Scope, workload: &[kafka::SourceRecord]) -> Vec<String> {
    let mut topics: Vec<String> = workload
        .iter()
        .map(|r| hostile_destination(scope, r))
        .collect();
    topics.sort();
    topics.dedup();
    let mut create: Vec<(String, i32)> = topics.iter().map(|t| (t.clone(), 4)).collect();
    create.push((scope.source.clone(), PARTITIONS));
    apache_kafka::cluster()
        .create_topics(&create, &[])
        .unwrap_or_else(|e| panic!("{e:#}"));
    topics
}

/// Feeds `source` on a thread, never more than `backlog` records ahead of what the group has
/// committed, so transactions stay small and kills land while events flow.
fn feed_ahead_of_commits(
    scope: &Scope,
    source: &[kafka::SourceRecord],
    backlog: u64,
) -> std::thread::JoinHandle<()> {
    let reader = scope.offsets_reader();
    let topic = scope.source.clone();
    kafka::produce_paced_to(
        &scope.bootstrap,
        &scope.source,
        source.to_vec(),
        move || committed(&reader, &topic) as u64,
        backlog,
    )
}

pub fn wait_for_committed(
    scope: &Scope,
    reader: &BaseConsumer,
    want: i64,
    timeout: Duration,
    service: &Service,
) {
    let started = Instant::now();
    loop {
        let n = committed(reader, &scope.source);
        if n >= want {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "only {n} of {want} source records committed after {timeout:?}; fanout's log:\n{}",
            service.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn killed_mid_transaction_five_times_every_event_arrives_exactly_once() {
    let scope = Scope::new("eos-kill");
    let source = trapping_workload(&scope, 100_000, 20);
    let topics = create_hostile_topics(&scope, &source);
    let plugins = support::plugin_set_dir(&["hostile"], &[]);
    let feeder = feed_ahead_of_commits(&scope, &source, 20_000);
    let progress = scope.offsets_reader();
    let started = Instant::now();

    let mut service = real_replica(&scope, plugins.path(), "eos-kill-replica");
    let mut aborted_before_kills = 0.0;
    // Kill at uneven points while events flow, when a transaction is always open.
    for (kill, fraction) in [0.08, 0.23, 0.41, 0.58, 0.77].into_iter().enumerate() {
        let at = (source.len() as f64 * fraction) as i64;
        wait_for_committed(&scope, &progress, at, Duration::from_secs(300), &service);
        std::thread::sleep(Duration::from_millis(37 * kill as u64));
        aborted_before_kills += metric(&service, "fanout_transactions_aborted_total");
        service.kill();
        // The same transactional id: the new process fences the killed one and aborts what it
        // left open (InitProducerId), then resumes from the committed offsets.
        service = real_replica(&scope, plugins.path(), "eos-kill-replica");
    }
    feeder.join().unwrap();
    let total = source.len() as i64;
    wait_for_committed(&scope, &progress, total, Duration::from_secs(300), &service);
    let (status, log) = service.terminate();
    assert!(status.success(), "{log}");
    let elapsed = started.elapsed();

    let destination = |r: &kafka::SourceRecord| hostile_destination(&scope, r);
    let received = kafka::read_all(
        &scope.bootstrap,
        &topics,
        source.len(),
        Duration::from_secs(120),
    );
    let duplicates = kafka::reconcile_by(&source, &received, destination);
    let dead_letters = received
        .iter()
        .filter(|r| r.topic == scope.dead_letter)
        .count();
    // The kills did land inside transactions: their writes are in the log, aborted.
    let everything = kafka::read_all_with(
        &scope.bootstrap,
        &topics,
        source.len(),
        Duration::from_secs(120),
        "read_uncommitted",
    );
    println!(
        "exactly-once on 3 nodes: {} events ({dead_letters} dead letters) in {:.0} s, 5 SIGKILLs, \
         {} aborted copies seen by read_uncommitted, {aborted_before_kills} aborts counted \
         before the kills, {duplicates} duplicates, 0 lost",
        source.len(),
        elapsed.as_secs_f64(),
        everything.len() - received.len(),
    );
    assert_eq!(
        duplicates, 0,
        "a read_committed reader sees every event exactly once"
    );
    assert!(
        dead_letters >= 1_000,
        "traps and malformed lines were dead-lettered inside the transactions: {dead_letters}"
    );
    assert!(everything.len() > received.len(), "aborted writes exist");
}

#[test]
fn scaled_one_two_one_under_load_duplicates_nothing() {
    let scope = Scope::new("eos-scale");
    let source = scope.workload(40_000, 10);
    scope.create_topics(&source, PARTITIONS, 4);
    let plugins = support::plugin_set_dir(&["by_namespace"], &[]);
    let feeder = feed_ahead_of_commits(&scope, &source, 10_000);
    let progress = scope.offsets_reader();

    let a = real_replica(&scope, plugins.path(), "eos-scale-a");
    wait_for_committed(&scope, &progress, 8_000, Duration::from_secs(120), &a);
    // b joins under load: a gives up partitions with a transaction open, and must end it
    // before b reads them.
    let b = real_replica(&scope, plugins.path(), "eos-scale-b");
    b.wait_for_log("partitions assigned partitions=[", Duration::from_secs(60));
    a.wait_for_log(
        "partitions revoked; transaction ended",
        Duration::from_secs(60),
    );
    wait_for_committed(&scope, &progress, 24_000, Duration::from_secs(120), &b);
    // Back to one: a leaves, b takes every partition with its transactions in flight.
    let (status, log) = a.terminate();
    assert!(status.success(), "{log}");
    feeder.join().unwrap();
    let total = source.len() as i64;
    wait_for_committed(&scope, &progress, total, Duration::from_secs(180), &b);
    let (status, log) = b.terminate();
    assert!(status.success(), "{log}");

    let received = scope.read_outputs(&source, "read_committed", Duration::from_secs(120));
    assert_eq!(scope.reconcile(&source, &received), 0, "no duplicates");
}

#[test]
fn a_zombie_replica_is_fenced_by_the_group_and_duplicates_nothing() {
    let scope = Scope::new("eos-zombie");
    let source = scope.workload(30_000, 10);
    scope.create_topics(&source, PARTITIONS, 4);
    let plugins = support::plugin_set_dir(&["by_namespace"], &[]);
    let feeder = feed_ahead_of_commits(&scope, &source, 5_000);
    let progress = scope.offsets_reader();

    let zombie = real_replica(&scope, plugins.path(), "eos-zombie-a");
    wait_for_committed(&scope, &progress, 3_000, Duration::from_secs(120), &zombie);
    let other = real_replica(&scope, plugins.path(), "eos-zombie-b");
    other.wait_for_log("partitions assigned partitions=[", Duration::from_secs(60));
    wait_for_committed(&scope, &progress, 6_000, Duration::from_secs(120), &other);
    // Frozen mid-transaction (as a long GC pause or a stalled node would): its session times
    // out and the group gives every partition to the other replica, which routes on.
    zombie.pause();
    let before = committed(&progress, &scope.source);
    wait_for_committed(
        &scope,
        &progress,
        before + 6_000,
        Duration::from_secs(120),
        &other,
    );
    // Thawed, it still holds its open transaction and believes it owns its partitions. The
    // group's generation has moved on: the broker refuses its offsets (KIP-447), so that
    // transaction can only abort. It then rejoins the group as a new member, which is safe: what
    // it wrote as a zombie is never committed.
    let frozen_at = zombie.log().len();
    zombie.resume();
    // Whichever it meets first, the refused offsets of its open transaction or the news that
    // it lost its partitions, it ends that transaction without committing it and rejoins.
    let started = Instant::now();
    while !zombie.log()[frozen_at..].contains("partitions assigned") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the thawed zombie did not rejoin:\n{}",
            zombie.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    feeder.join().unwrap();
    let total = source.len() as i64;
    wait_for_committed(&scope, &progress, total, Duration::from_secs(180), &other);
    for replica in [zombie, other] {
        let (status, log) = replica.terminate();
        assert!(status.success(), "{log}");
    }

    let received = scope.read_outputs(&source, "read_committed", Duration::from_secs(120));
    assert_eq!(scope.reconcile(&source, &received), 0, "no duplicates");
}

/// What a run of [`route_around`] found.
struct RoutedAround {
    aborted: f64,
    log: String,
    /// The `fanout-reason` of every `produce-failed` dead letter.
    refusals: Vec<String>,
}

/// Feeds all of `source` to one real replica (given `extra` arguments) and waits until its
/// group has committed every offset, with the events routed to `around` expected as
/// `produce-failed` dead letters instead. A `read_committed` reader of every other
/// destination and the dead-letter topic, to each partition's high watermark, must find each
/// event exactly once: nothing of the aborted transactions, nothing lost. Creates the
/// destination topics (except `around`) and the source.
fn route_around(
    scope: &Scope,
    source: &[kafka::SourceRecord],
    around: &str,
    extra: &[&str],
) -> RoutedAround {
    let mut topics = scope.output_topics(source);
    topics.retain(|t| t != around);
    let mut create: Vec<(String, i32)> = topics.iter().map(|t| (t.clone(), 4)).collect();
    create.push((scope.source.clone(), PARTITIONS));
    apache_kafka::cluster().create_topics(&create, &[]).unwrap();
    let plugins = support::plugin_set_dir(&["by_namespace"], &[]);
    let progress = scope.offsets_reader();

    scope.produce(source);
    let service = real_replica_with(scope, plugins.path(), &scope.name, extra);
    let total = source.len() as i64;
    wait_for_committed(scope, &progress, total, Duration::from_secs(180), &service);
    let aborted = metric(&service, "fanout_transactions_aborted_total");
    let (status, log) = service.terminate();
    assert!(status.success(), "{log}");

    let received = kafka::read_all(
        &scope.bootstrap,
        &topics,
        source.len(),
        Duration::from_secs(120),
    );
    let destination = |r: &kafka::SourceRecord| match kafka::expected(r) {
        kafka::Expected::Topic(t) if t != around => t,
        _ => scope.dead_letter.clone(),
    };
    assert_eq!(
        kafka::reconcile_by(source, &received, destination),
        0,
        "no event twice across the aborts"
    );
    let refusals = received
        .iter()
        .filter(|r| r.topic == scope.dead_letter)
        .filter_map(|r| r.headers.get("fanout-reason"))
        .filter(|reason| reason.starts_with("produce-failed"))
        .cloned()
        .collect();
    for line in log.lines().filter(|l| l.contains("aborted")) {
        println!("  {line}");
    }
    RoutedAround {
        aborted,
        log,
        refusals,
    }
}

/// Sends every 1 in `step` routable events of `source`, `count` in all, to namespace `to`,
/// with `message` as the event's message if given.
fn redirect(
    source: &mut [kafka::SourceRecord],
    step: usize,
    count: usize,
    to: &str,
    message: Option<&str>,
) {
    let mut redirected = 0;
    for record in source.iter_mut().skip(step / 2).step_by(step) {
        if redirected == count || !matches!(kafka::expected(record), kafka::Expected::Topic(_)) {
            continue;
        }
        let mut envelope: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
        envelope["event"]["metadata"]["namespace"] = to.into();
        if let Some(message) = message {
            envelope["event"]["message"] = message.into();
        }
        record.value = serde_json::to_vec(&envelope).unwrap();
        redirected += 1;
    }
    assert_eq!(redirected, count, "{count} events redirected to {to}");
}

#[test]
fn a_failed_transaction_is_aborted_and_its_events_routed_again() {
    // 50 events, one in 110, go to a topic whose records may be at most 1,500 bytes, carrying a
    // 3 KB message: writes the broker refuses for good (MESSAGE_TOO_LARGE), each failing its
    // whole transaction. All are fed at once, so a batch holds several: the first refusal
    // teaches fanout the topic's limit, and the rest are dead-lettered without another abort.
    let scope = Scope::new("eos-abort");
    let refused_topic = format!("{}-refused", scope.name);
    let mut source = scope.workload(6_000, 5);
    redirect(
        &mut source,
        110,
        50,
        &refused_topic,
        Some(&"x".repeat(3_000)),
    );
    apache_kafka::cluster()
        .create_topics(
            &[(refused_topic.clone(), 1)],
            &[("max.message.bytes", "1500")],
        )
        .unwrap();

    let run = route_around(&scope, &source, &refused_topic, &[]);
    let (aborted, log) = (run.aborted, &run.log);
    println!(
        "50 refused writes: {aborted} aborted transactions, {} dead letters",
        run.refusals.len()
    );
    assert!(
        aborted >= 1.0,
        "the refused writes aborted a transaction:\n{log}"
    );
    assert!(
        log.contains("transaction aborted"),
        "each abort is logged with its cause:\n{log}"
    );
    assert!(
        aborted <= 4.0,
        "the topic's limit spares the other refused events an abort each: {aborted} aborts\n{log}"
    );
    assert!(
        log.contains("max.message.bytes"),
        "the learnt limit is logged:\n{log}"
    );
    assert_eq!(
        run.refusals.len(),
        50,
        "the refused events were dead-lettered:\n{log}"
    );
}

#[test]
fn a_topic_that_does_not_exist_costs_its_batch_one_abort() {
    // Creation off, 30 events routed to a namespace whose topic was never made: librdkafka
    // fails those writes as an unknown topic, which concerns every record for that topic. The
    // first failure aborts its transaction; the topic is remembered, so when the batch is
    // routed again its other events for that topic are dead-lettered without trying.
    let scope = Scope::new("eos-absent");
    let absent = format!("{}-absent", scope.name);
    let mut source = scope.workload(3_000, 5);
    redirect(&mut source, 80, 30, &absent, None);

    // How long librdkafka waits for a topic it was told is unknown to appear before failing
    // its writes (30 s by default).
    let run = route_around(
        &scope,
        &source,
        &absent,
        &["--kafka-property", "topic.metadata.propagation.max.ms=2000"],
    );
    let (aborted, log) = (run.aborted, &run.log);
    println!("30 writes to a missing topic: {aborted} aborted transactions");
    assert_eq!(run.refusals.len(), 30, "dead-lettered as refused:\n{log}");
    assert!(
        run.refusals.iter().all(|reason| reason.contains(&absent)),
        "each reason names the topic: {:?}",
        run.refusals
    );
    assert!(
        log.contains("refuses every write"),
        "the refusal is logged for the topic:\n{log}"
    );
    // The topic costs one abort. The mock cluster can add one of its own: after an abort that
    // purged queued writes, its sequence tracking may answer the next batch with
    // OUT_OF_ORDER_SEQUENCE_NUMBER (a full run on the loaded 2-core machine saw it once, the log naming that cause); that abort does not name the
    // topic and is not this test's concern.
    let for_the_topic = log
        .lines()
        .filter(|l| l.contains("transaction aborted") && l.contains(&absent))
        .count();
    assert_eq!(for_the_topic, 1, "one abort for the whole batch:\n{log}");
    assert!((1.0..=2.0).contains(&aborted), "{aborted} aborts:\n{log}");
}
