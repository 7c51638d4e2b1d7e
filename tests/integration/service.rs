//! `fanout run` as real child processes against the mock cluster: killed mid-stream and
//! restarted, two replicas sharing the partitions, the old tool's environment, and kcat (a
//! client that is not ours) on both ends.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::BaseConsumer;

use crate::kafka::{self, SOURCE};
use crate::{apache_kafka, support};

/// A `fanout run` child process whose log goes to a file.
pub struct Service {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Service {
    pub fn start(configure: impl FnOnce(&mut Command)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("fanout.log");
        let mut command = support::fanout();
        command
            .arg("run")
            .env_remove("FANOUT_CONFIG")
            .env("FANOUT_LOG", log_filter())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        configure(&mut command);
        let child = command.spawn().unwrap();
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    /// A replica in `group` routing with by_namespace.wasm.
    pub fn replica(bootstrap: &str, group: &str, plugins: &std::path::Path) -> Self {
        Self::start(|c| {
            c.args([
                "--bootstrap-servers",
                bootstrap,
                "--group-id",
                group,
                "--workers",
                "2",
                "--deadline-ms",
                "2000",
            ])
            .arg("--plugins")
            .arg(plugins);
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The first log line containing `needle`, once there is one.
    pub fn log_line(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_log(needle, timeout);
        self.log()
            .lines()
            .find(|l| l.contains(needle))
            .unwrap()
            .to_owned()
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let started = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                started.elapsed() < timeout,
                "no {needle:?} in the log after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no drain, no final commit.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGSTOP: frozen, as in a long GC pause or on a stalled node; [`Self::resume`] thaws it.
    pub fn pause(&self) {
        kafka_cluster::signal(&self.child, rustix::process::Signal::STOP).unwrap();
    }

    /// SIGCONT.
    pub fn resume(&self) {
        kafka_cluster::signal(&self.child, rustix::process::Signal::CONT).unwrap();
    }

    /// Waits for the process to exit by itself.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > timeout {
                self.child.kill().unwrap();
                panic!("fanout did not exit within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log());
            }
            if started.elapsed() > Duration::from_secs(60) {
                self.child.kill().unwrap();
                panic!(
                    "fanout did not exit within 60 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The tested services' log filter: `info`, or `FANOUT_TEST_SERVICE_LOG` (e.g. to debug a
/// test with `fanout::pipeline=debug`).
fn log_filter() -> String {
    std::env::var("FANOUT_TEST_SERVICE_LOG").unwrap_or_else(|_| "info".into())
}

/// A test that fails half-way must not leave its fanout running.
impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts the records currently in `topics` (reading each partition to its high watermark).
pub fn count(bootstrap: &str, topics: &[String]) -> usize {
    kafka::read_all(bootstrap, topics, 0, Duration::from_secs(30)).len()
}

/// Waits until `group` has committed past `want` source records. At-least-once commits an offset
/// only after its event was delivered, so from then on every event has its copy; a count of
/// output records cannot say that once a restart has written duplicates.
pub fn wait_for_committed(bootstrap: &str, group: &str, want: usize, timeout: Duration) {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let started = Instant::now();
    loop {
        let n = apache_kafka::committed(&reader, SOURCE);
        if n >= want as i64 {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{group} committed only {n} of {want} source records after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn wait_for_count(bootstrap: &str, topics: &[String], want: usize, timeout: Duration) {
    let started = Instant::now();
    loop {
        let n = count(bootstrap, topics);
        if n >= want {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "only {n} of {want} records after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn killed_mid_stream_and_restarted_loses_nothing() {
    let source = kafka::workload(20_000, 10);
    let kafka = kafka::start_kafka(8, &source);
    let bootstrap = kafka.bootstrap_servers();
    kafka::produce(&bootstrap, SOURCE, &source);
    let topics = kafka::output_topics(&source);
    let plugins = support::plugin_set_dir(&["by_namespace"], &[]);

    let first = Service::replica(&bootstrap, "restart", plugins.path());
    wait_for_count(&bootstrap, &topics, 3_000, Duration::from_secs(120));
    first.kill();

    let second = Service::replica(&bootstrap, "restart", plugins.path());
    wait_for_committed(
        &bootstrap,
        "restart",
        source.len(),
        Duration::from_secs(180),
    );
    let (status, log) = second.terminate();
    assert!(
        status.success(),
        "graceful shutdown exits 0: {status}\n{log}"
    );
    assert!(log.contains("final commit done"), "{log}");

    let received = kafka::read_all(&bootstrap, &topics, source.len(), Duration::from_secs(60));
    let duplicates = kafka::reconcile(&source, &received);
    println!(
        "restart after SIGKILL: 0 lost, {duplicates} duplicates (events routed again after the kill)"
    );
}

#[test]
fn sigterm_with_full_routing_queues_exits_zero_within_the_shutdown_timeout() {
    // Plugin calls that run to their deadline hold the routing threads while the consumer fills
    // their queues. At SIGTERM those queued events are left unrouted. The drain must not wait
    // for acknowledgements they will never get: it used to wait out shutdown_timeout_ms, then
    // 10 s more while closing the consumer, and a late hand-over could exit 2.
    let looping = &support::lines("events/hostile.jsonl")[0];
    let mut source = Vec::new();
    for i in 0..16 {
        let mut envelope: serde_json::Value = serde_json::from_slice(looping).unwrap();
        envelope["event"]["metadata"]["name"] = format!("loop-{i}").into();
        source.push(kafka::SourceRecord {
            key: Some(format!("loop-{i}").into_bytes()),
            value: serde_json::to_vec(&envelope).unwrap(),
        });
    }
    source.extend(kafka::workload(20_000, 10));
    let kafka = kafka::start_kafka(8, &source);
    let bootstrap = kafka.bootstrap_servers();
    kafka::produce(&bootstrap, SOURCE, &source);
    let plugins = support::plugin_set_dir(&["hostile"], &[]);

    let service = Service::start(|c| {
        c.args(["--bootstrap-servers", &bootstrap, "--group-id", "sigterm"])
            .args(["--workers", "2", "--deadline-ms", "1000"])
            .arg("--plugins")
            .arg(plugins.path());
    });
    service.wait_for_log("partitions assigned", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    let signalled = Instant::now();
    let (status, log) = service.terminate();
    let took = signalled.elapsed();
    assert!(status.success(), "exit 0 after SIGTERM: {status}\n{log}");
    let done = log
        .lines()
        .find(|l| l.contains("final commit done"))
        .unwrap_or_else(|| panic!("no final commit:\n{log}"));
    let abandoned: u64 = done
        .split("abandoned=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no abandoned count: {done}"));
    assert!(abandoned > 0, "the queues were full at the signal: {done}");
    // 30 s is shutdown_timeout_ms's default, the promise made to Kubernetes' grace period.
    assert!(
        took < Duration::from_secs(30),
        "took {took:?} against a 30 s shutdown timeout:\n{log}"
    );
    println!("SIGTERM with full queues: exited 0 in {took:?}; {done}");
}

#[test]
fn two_replicas_share_the_partitions_and_one_takes_over() {
    let source = kafka::workload(20_000, 10);
    let kafka = kafka::start_kafka(8, &source);
    let bootstrap = kafka.bootstrap_servers();
    let topics = kafka::output_topics(&source);
    let plugins = support::plugin_set_dir(&["by_namespace"], &[]);

    let a = Service::replica(&bootstrap, "pair", plugins.path());
    let b = Service::replica(&bootstrap, "pair", plugins.path());
    a.wait_for_log("partitions assigned", Duration::from_secs(60));
    b.wait_for_log("partitions assigned", Duration::from_secs(60));
    let (first_half, second_half) = source.split_at(source.len() / 2);
    kafka::produce(&bootstrap, SOURCE, first_half);
    wait_for_count(
        &bootstrap,
        &topics,
        first_half.len(),
        Duration::from_secs(120),
    );

    // Both replicas routed part of the stream.
    for (name, replica) in [("a", &a), ("b", &b)] {
        assert!(
            replica.log().contains("partitions assigned partitions=["),
            "{name}:\n{}",
            replica.log()
        );
    }

    // One leaves gracefully; the other takes every partition and routes the rest.
    let (status, log) = a.terminate();
    assert!(status.success(), "{log}");
    assert!(log.contains("partitions revoked"), "{log}");
    kafka::produce(&bootstrap, SOURCE, second_half);
    wait_for_committed(&bootstrap, "pair", source.len(), Duration::from_secs(180));
    let (status, log) = b.terminate();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("partitions=[0, 1, 2, 3, 4, 5, 6, 7]")
            || log.matches("partitions assigned").count() >= 2,
        "b took over a's partitions:\n{log}"
    );

    let received = kafka::read_all(&bootstrap, &topics, source.len(), Duration::from_secs(60));
    let duplicates = kafka::reconcile(&source, &received);
    println!("two replicas and a hand-over: 0 lost, {duplicates} duplicates");
}

#[test]
fn old_tool_environment_and_kcat_on_both_ends() {
    // Only ENDPOINT and TOPIC, like the Go tool's deployment; input written by kcat.
    let source = kafka::workload(2_000, 5);
    let kafka = kafka::start_kafka(4, &source);
    let bootstrap = kafka.bootstrap_servers();
    let topics = kafka::output_topics(&source);

    let service = Service::start(|c| {
        c.env_clear()
            .env("ENDPOINT", &bootstrap)
            .env("TOPIC", SOURCE)
            .env("FANOUT_LOG", log_filter());
    });
    service.wait_for_log("partitions assigned", Duration::from_secs(60));
    assert!(
        service
            .log()
            .contains("routing by namespace with the built-in router"),
        "{}",
        service.log()
    );

    // kcat -P with a key delimiter: key<TAB>value per line.
    let mut input = Vec::new();
    for r in &source {
        input.extend_from_slice(r.key.as_deref().unwrap_or_default());
        input.push(b'\t');
        input.extend_from_slice(&r.value);
        input.push(b'\n');
    }
    // Lines without a key get an empty key from kcat; those are the malformed fixtures, which
    // go to the dead-letter topic either way.
    let mut kcat = Command::new("kcat")
        .args(["-b", &bootstrap, "-P", "-t", SOURCE, "-K", "\t"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat is installed by `make setup`");
    std::io::Write::write_all(&mut kcat.stdin.take().unwrap(), &input).unwrap();
    assert!(kcat.wait().unwrap().success());

    wait_for_count(&bootstrap, &topics, source.len(), Duration::from_secs(120));
    let (status, log) = service.terminate();
    assert!(status.success(), "{log}");

    // kcat reads one destination topic back: keys and values as fanout wrote them.
    let topic = "payments";
    let output = Command::new("kcat")
        .args([
            "-b",
            &bootstrap,
            "-C",
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k\t%s\n",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut read: Vec<Vec<u8>> = output
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let mut expected: Vec<Vec<u8>> = source
        .iter()
        .filter(|r| kafka::expected(r) == kafka::Expected::Topic(topic.into()))
        .map(|r| [r.key.as_deref().unwrap(), b"\t", &r.value].concat())
        .collect();
    read.sort();
    expected.sort();
    assert!(!expected.is_empty());
    assert_eq!(
        read.len(),
        expected.len(),
        "kcat read every record of {topic}"
    );
    assert!(read == expected, "kcat saw the same keys and bytes");
}

#[test]
fn a_second_signal_exits_at_once() {
    let source = kafka::workload(2_000, 5);
    let kafka = kafka::start_kafka(4, &source);
    let bootstrap = kafka.bootstrap_servers();
    let plugins = support::plugin_set_dir(&["by_namespace"], &[]);
    let mut service = Service::replica(&bootstrap, "signals", plugins.path());
    service.wait_for_log("partitions assigned", Duration::from_secs(60));
    let pid = rustix::process::Pid::from_child(&service.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = service.child.wait().unwrap();
    let log = service.log();
    // Either the second signal won (exit 130 without draining) or, if the drain beat it, the
    // first one finished cleanly: never a hang, never a crash.
    assert!(
        status.code() == Some(fanout::signals::FORCED_EXIT)
            || (status.success() && log.contains("final commit done")),
        "{status}\n{log}"
    );
    // Both signals are pending at once, so either may be handled first.
    assert!(log.contains(": draining and committing"), "{log}");
}

#[test]
fn invalid_configuration_is_refused_with_every_error_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fanout.toml");
    std::fs::write(
        &config,
        "[kafka]\nbootstrap_servers = \"127.0.0.1:1\"\ncommit_interval_ms = \"soon\"\n\n[kafka.properties]\n\"enable.auto.offset.store\" = \"true\"\n",
    )
    .unwrap();
    let output = support::fanout()
        .args(["run", "--config"])
        .arg(&config)
        .env("FANOUT_WORKERS", "lots")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("fanout.toml: line 3"), "{stderr}");
    assert!(stderr.contains("commit_interval_ms"), "{stderr}");
    assert!(stderr.contains("enable.auto.offset.store"), "{stderr}");
    assert!(stderr.contains("FANOUT_WORKERS"), "{stderr}");
}

#[test]
fn librdkafka_properties_reach_librdkafka() {
    // An unknown property is refused by librdkafka itself, which proves it was passed through.
    let output = support::fanout()
        .args(["run", "--bootstrap-servers", "127.0.0.1:1", "--plugins"])
        .arg(support::plugin_set_dir(&["by_namespace"], &[]).path())
        .args(["--kafka-property", "no.such.property=1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("no.such.property"), "{stderr}");
}

#[test]
fn a_configmap_update_reaches_the_running_service_and_its_log() {
    let source = kafka::workload(4_000, 5);
    let kafka = kafka::start_kafka(4, &source);
    let bootstrap = kafka.bootstrap_servers();
    let namespaces: Vec<String> = kafka::output_topics(&source)
        .into_iter()
        .filter(|t| t != kafka::DEAD_LETTER)
        .collect();
    let renamed: Vec<String> = namespaces.iter().map(|ns| format!("v2-{ns}")).collect();
    for topic in &renamed {
        kafka.create_topic(topic, 4).unwrap();
    }
    let mut configmap = crate::reload::ConfigMap::new(&crate::reload::by_namespace_files(""));
    let service = Service::replica(&bootstrap, "reload", configmap.path());
    service.wait_for_log("partitions assigned", Duration::from_secs(60));

    let (first, second) = source.split_at(2_000);
    kafka::produce(&bootstrap, SOURCE, first);
    wait_for_count(
        &bootstrap,
        &namespaces,
        routed(first),
        Duration::from_secs(60),
    );
    configmap.update(&crate::reload::by_namespace_files("v2-"));
    service.wait_for_log("plugin set swapped", Duration::from_secs(30));
    kafka::produce(&bootstrap, SOURCE, second);
    wait_for_count(
        &bootstrap,
        &renamed,
        routed(second),
        Duration::from_secs(60),
    );

    let (status, log) = service.terminate();
    assert!(status.success(), "{log}");
    // The swap is logged with both versions and the reason.
    let swap = log
        .lines()
        .find(|l| l.contains("plugin set swapped"))
        .unwrap();
    for field in ["from=", "to=", "reason=", "changed; new set loaded in"] {
        assert!(swap.contains(field), "{swap}");
    }
    // Nothing of the first half was routed again under the new prefix.
    assert_eq!(count(&bootstrap, &renamed), routed(second));
}

/// How many of `records` by-namespace routes (rather than dead-letters).
fn routed(records: &[kafka::SourceRecord]) -> usize {
    records
        .iter()
        .filter(|r| matches!(kafka::expected(r), kafka::Expected::Topic(_)))
        .count()
}
