//! Hostile plugins under load (issue 8, item 3): the hostile fixture, hot-loaded into a running
//! `fanout run` process mid-stream, attacks some partitions while steady traffic flows on every
//! partition. Every event must keep exactly one outcome, partitions of the other routing threads
//! must keep flowing while a call is stuck, no partition may wait longer than one call deadline
//! (plus slack), and the process's memory must stay within the per-instance caps.
//!
//! fanout runs as a child process (the real binary, with its real flags) so that its memory can be
//! read from `/proc/<pid>/status`; the Kafka it talks to is the embedded mock cluster of this
//! process, and a consumer of this process timestamps every record fanout writes as it arrives.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use fanout::deadletter::headers;

use crate::kafka::{DEAD_LETTER, SOURCE};
use crate::reload::{ConfigMap, by_namespace_files, hostile_files};
use crate::support;

/// Source partitions; each gets one normal event per [`ROUND`].
const PARTITIONS: i32 = 8;
/// Routing threads. fanout hands partition `p` to thread `p % WORKERS`, so every thread owns
/// two partitions: `t` and `t + 4`.
const WORKERS: i32 = 4;
/// The call deadline (`--deadline-ms`). Long on purpose: scheduling noise on a loaded 2-core
/// machine (tens, at worst a few hundred milliseconds) is small next to it, so "stuck for one
/// deadline" and "not stuck" are far apart.
const DEADLINE_MS: i64 = 2_000;
/// The memory cap per instance (`--memory-limit-mib`). Small, so that a memory bomb that got past
/// it (it allocates 8 MiB chunks until allocation fails: up to 4 GiB) would be plain to see.
const MEMORY_CAP_MIB: u64 = 16;
/// Steady traffic: one normal event per partition every round (400 events/s in all).
const ROUND: Duration = Duration::from_millis(20);
/// Between two waves of attacks: one deadline plus room, so that no routing thread ever has two
/// long calls queued one behind the other (each stall is then one deadline, not several).
const WAVE_SPACING: Duration = Duration::from_millis(DEADLINE_MS as u64 + 1_500);

/// Waves of attacks, `(partition, reason)`, one every [`WAVE_SPACING`]. Four have a
/// `HostileLoop`, on a different routing thread each time, which holds its thread for the whole
/// deadline; the memory bombs and the other attacks end in milliseconds, and run meanwhile on
/// the other threads. 26 memory bombs in all, at most two per thread per wave.
const WAVES: &[&[(i32, &str)]] = &[
    // Thread 0 stuck, nothing else: the clean case for the progress check.
    &[(0, "HostileLoop")],
    // Every thread: two memory bombs (one per partition, back to back) and the other traps.
    &[
        (0, "HostileMemoryBomb"),
        (1, "HostileMemoryBomb"),
        (2, "HostileMemoryBomb"),
        (3, "HostileMemoryBomb"),
        (4, "HostileMemoryBomb"),
        (5, "HostileMemoryBomb"),
        (6, "HostileMemoryBomb"),
        (7, "HostileMemoryBomb"),
        (1, "HostileRecursion"),
        (2, "HostileTrap"),
        (3, "HostileFlood"),
        (7, "HostileHugePayload"),
    ],
    // Thread 1 stuck while threads 0, 2 and 3 are bombed, and every policy attack on thread 2.
    &[
        (5, "HostileLoop"),
        (0, "HostileMemoryBomb"),
        (2, "HostileMemoryBomb"),
        (3, "HostileMemoryBomb"),
        (4, "HostileMemoryBomb"),
        (6, "HostileMemoryBomb"),
        (7, "HostileMemoryBomb"),
        (6, "HostileBadTopic"),
        (6, "HostileInternalTopic"),
        (6, "HostileDotTopic"),
        (6, "HostileLongTopic"),
        (6, "HostileEmptyTopic"),
        (6, "HostileReadFile"),
        (6, "HostileReadEnv"),
        (6, "HostileErr"),
        (6, "HostileLog"),
    ],
    // Thread 2 stuck.
    &[
        (6, "HostileLoop"),
        (0, "HostileMemoryBomb"),
        (1, "HostileMemoryBomb"),
        (3, "HostileMemoryBomb"),
        (4, "HostileMemoryBomb"),
        (5, "HostileMemoryBomb"),
        (7, "HostileMemoryBomb"),
        (1, "HostileRecursion"),
        (3, "HostileTrap"),
        (4, "HostileFlood"),
        (5, "HostileHugePayload"),
    ],
    // Thread 3 stuck.
    &[
        (3, "HostileLoop"),
        (0, "HostileMemoryBomb"),
        (1, "HostileMemoryBomb"),
        (2, "HostileMemoryBomb"),
        (4, "HostileMemoryBomb"),
        (5, "HostileMemoryBomb"),
        (6, "HostileMemoryBomb"),
        (0, "HostileTrap"),
        (2, "HostileRecursion"),
    ],
];

/// What an attack must come to: `(fanout-reason prefix, text it must contain)`, or `None` for
/// `HostileLog`, which logs and then routes normally.
fn expected_outcome(reason: &str) -> Option<(&'static str, &'static str)> {
    Some(match reason {
        "HostileLoop" => ("plugin-timeout: ", "exceeded the 2000 ms deadline"),
        "HostileMemoryBomb" => ("plugin-trap: ", "memory limit of 16 MiB exceeded"),
        "HostileRecursion" => ("plugin-trap: ", "call stack exhausted"),
        "HostileTrap" => ("plugin-trap: ", "unreachable"),
        "HostileFlood" => ("too-many-destinations: ", "10000 destinations"),
        "HostileHugePayload" => ("record-too-large: ", "ok.huge"),
        "HostileBadTopic" | "HostileDotTopic" | "HostileLongTopic" | "HostileEmptyTopic" => {
            ("invalid-topic: ", "topic")
        }
        "HostileInternalTopic" => ("topic-denied: ", "__consumer_offsets"),
        "HostileReadFile" => ("plugin-error: ", "file access denied"),
        "HostileReadEnv" => ("plugin-error: ", "environment is empty"),
        "HostileErr" => ("plugin-error: ", "rejected by hostile plugin"),
        "HostileLog" => return None,
        other => panic!("no expected outcome for {other}"),
    })
}

/// Milliseconds since the epoch: the clock of the source records' timestamps and of arrivals.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// An EventRouter envelope; `key` is also its name and uid, so every event is unique.
fn envelope(key: &str, namespace: &str, reason: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "verb": "ADDED",
        "event": {
            "metadata": {"name": key, "namespace": namespace, "uid": key},
            "involvedObject": {
                "kind": "Pod", "namespace": namespace, "name": key, "uid": key, "apiVersion": "v1"
            },
            "reason": reason,
            "message": "steady traffic under attack",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2026-11-20T08:15:02Z",
            "lastTimestamp": "2026-11-20T08:15:02Z",
            "count": 1,
            "type": "Normal",
            "eventTime": null,
            "reportingComponent": ""
        }
    }))
    .unwrap()
}

/// Partition `p`'s namespace: by-namespace routes it to `load-<p>`, hostile to `ok.load-<p>`.
fn namespace(partition: i32) -> String {
    format!("load-{partition}")
}

/// One source record as the feeder sent it.
#[derive(Debug, Clone)]
struct Sent {
    partition: i32,
    /// Its timestamp, set by the feeder when it sent it; fanout's outputs carry it on.
    sent_ms: i64,
    /// The attack, or `None` for a normal event.
    attack: Option<&'static str>,
}

/// Sends one normal event per partition every [`ROUND`], and the attacks queued in `attacks`
/// after them, until `stop`. Returns every record sent, by key.
fn feed(
    bootstrap: String,
    stop: Arc<AtomicBool>,
    attacks: Arc<Mutex<Vec<(i32, &'static str)>>>,
) -> JoinHandle<HashMap<String, Sent>> {
    std::thread::spawn(move || {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "1")
            .create()
            .unwrap();
        let mut sent = HashMap::new();
        let mut send = |partition: i32, key: String, attack: Option<&'static str>| {
            let value = envelope(&key, &namespace(partition), attack.unwrap_or("Started"));
            let sent_ms = now_ms();
            loop {
                let record = BaseRecord::<str, [u8]>::to(SOURCE)
                    .partition(partition)
                    .key(&key)
                    .payload(&value)
                    .timestamp(sent_ms);
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                        if !stop.load(Ordering::Relaxed) =>
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => panic!("feeding {key}: {e}"),
                }
            }
            let previous = sent.insert(
                key,
                Sent {
                    partition,
                    sent_ms,
                    attack,
                },
            );
            assert!(previous.is_none());
        };
        let started = Instant::now();
        let mut round: u32 = 0;
        while !stop.load(Ordering::Relaxed) {
            for partition in 0..PARTITIONS {
                send(partition, format!("n{partition}-{round}"), None);
            }
            for (partition, attack) in std::mem::take(&mut *attacks.lock().unwrap()) {
                send(
                    partition,
                    format!("h{partition}-{attack}-{round}"),
                    Some(attack),
                );
            }
            round += 1;
            // Paced against the start, so a late round does not push back every later one.
            std::thread::sleep((started + ROUND * round).saturating_duration_since(Instant::now()));
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        sent
    })
}

/// A record fanout wrote, and when it reached this process's consumer.
#[derive(Debug, Clone)]
struct Arrival {
    at_ms: i64,
    topic: String,
    key: String,
    headers: BTreeMap<String, String>,
}

/// Reads every partition of `topics` from the beginning as records arrive, until `stop`.
fn watch_outputs(
    bootstrap: String,
    topics: Vec<String>,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicUsize>,
) -> JoinHandle<Vec<Arrival>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "hostile-load-verifier")
        .set("enable.auto.commit", "false")
        // Arrival time is what this test measures: don't let the broker hold fetches back.
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for topic in &topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        for p in metadata.topics()[0].partitions() {
            list.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&list).unwrap();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(50)) {
                None => {}
                Some(Err(e)) => panic!("verifier consumer: {e}"),
                Some(Ok(m)) => {
                    let at_ms = now_ms();
                    out.push(Arrival {
                        at_ms,
                        topic: m.topic().to_owned(),
                        key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
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
                    });
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        out
    })
}

/// A `fanout run` child process, its log in a file.
struct Fanout {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fanout {
    fn start(bootstrap: &str, plugins: &std::path::Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("fanout.log");
        // librdkafka's mock broker holds a Fetch that finds no data for the whole
        // fetch.wait.max.ms (500 ms by default) instead of answering when data arrives, as a real
        // broker does: fanout would take its input in 500 ms batches, and every gap measured
        // here would carry up to 500 ms of that.
        let config = dir.path().join("fanout.toml");
        std::fs::write(
            &config,
            "[kafka.consumer]\n\"fetch.wait.max.ms\" = \"10\"\n",
        )
        .unwrap();
        let child = support::fanout()
            .arg("run")
            .env_remove("FANOUT_CONFIG")
            .arg("--config")
            .arg(&config)
            .env("FANOUT_LOG", "info")
            .args([
                "--bootstrap-servers",
                bootstrap,
                "--group-id",
                "hostile-load",
            ])
            .arg("--plugins")
            .arg(plugins)
            .args(["--workers", &WORKERS.to_string()])
            .args(["--deadline-ms", &DEADLINE_MS.to_string()])
            .args(["--memory-limit-mib", &MEMORY_CAP_MIB.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The first log line containing `needle`, once there is one.
    fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                started.elapsed() < timeout,
                "no {needle:?} in the log after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status and the log.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
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

impl Drop for Fanout {
    fn drop(&mut self) {
        // A failing test must not leave the process behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sets its flags when dropped, so that a failing test stops its threads too.
struct StopOnDrop(Vec<Arc<AtomicBool>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for flag in &self.0 {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

/// A field of `/proc/<pid>/status` in KiB, e.g. `VmRSS` or `VmHWM`.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Samples `VmRSS` every 5 ms until `stop`: `(ms since the epoch, KiB)`.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> JoinHandle<Vec<(i64, u64)>> {
    std::thread::spawn(move || {
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            samples.push((now_ms(), proc_status_kib(pid, "VmRSS")));
            std::thread::sleep(Duration::from_millis(5));
        }
        samples
    })
}

/// The versions in a "plugin set swapped from=X to=Y" log line.
fn swap_versions(line: &str) -> (String, String) {
    let field = |name: &str| {
        line.split(&format!("{name}="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {name}= in {line}"))
            .trim_matches('"')
            .to_owned()
    };
    (field("from"), field("to"))
}

#[test]
fn hostile_plugin_hot_loaded_under_load_stalls_no_partition_past_its_deadline_and_stays_capped() {
    let test_started = Instant::now();
    let kafka = fanout::demo::EmbeddedKafka::start(3).unwrap();
    kafka.create_topic(SOURCE, PARTITIONS).unwrap();
    kafka.create_topic(DEAD_LETTER, 8).unwrap();
    let mut topics = vec![DEAD_LETTER.to_owned()];
    for p in 0..PARTITIONS {
        for topic in [namespace(p), format!("ok.{}", namespace(p))] {
            kafka.create_topic(&topic, 4).unwrap();
            topics.push(topic);
        }
    }
    let bootstrap = kafka.bootstrap_servers();

    // A good set first: by-namespace, routing partition p's events to `load-<p>`.
    let mut configmap = ConfigMap::new(&by_namespace_files(""));
    let stop_watching = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicUsize::new(0));
    let watcher = watch_outputs(
        bootstrap.clone(),
        topics,
        stop_watching.clone(),
        received.clone(),
    );
    let service = Fanout::start(&bootstrap, configmap.path());
    service.wait_for_log("partitions assigned", Duration::from_secs(60));

    let stop_feeding = Arc::new(AtomicBool::new(false));
    let attacks = Arc::new(Mutex::new(Vec::new()));
    let feeder = feed(bootstrap.clone(), stop_feeding.clone(), attacks.clone());
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(service.pid(), stop_sampling.clone());
    let _stop_on_failure = StopOnDrop(vec![
        stop_watching.clone(),
        stop_feeding.clone(),
        stop_sampling.clone(),
    ]);
    wait_until_received(&received, 2_000, Duration::from_secs(60));

    // Mid-run, the hostile plugin replaces it, the kubelet's way. It routes normal events to
    // `ok.<namespace>`, so it passes its trial on the steady traffic before the attacks begin
    // (after that, no rollback can take it out of service: this test is about containment).
    configmap.update(&hostile_files("{}"));
    let swap = service.wait_for_log("plugin set swapped", Duration::from_secs(60));
    let (good_version, hostile_version) = swap_versions(&swap);
    service.wait_for_log("plugin set passed its trial", Duration::from_secs(60));

    // The memory baseline: the hostile plugin in service on every routing thread, under the
    // steady traffic. Writing 5 to clear_refs resets VmHWM to the current RSS, so VmHWM read at
    // the end is the peak of the attack phase exactly, however short a memory bomb's peak is.
    let baseline_kib = proc_status_kib(service.pid(), "VmRSS");
    let attacks_from_ms = now_ms();
    let hwm_reset = std::fs::write(format!("/proc/{}/clear_refs", service.pid()), "5").is_ok();

    for wave in WAVES {
        attacks.lock().unwrap().extend_from_slice(wave);
        std::thread::sleep(WAVE_SPACING);
    }
    // Normal traffic goes on for a while after the last wave.
    std::thread::sleep(Duration::from_millis(DEADLINE_MS as u64 + 1_000));
    stop_feeding.store(true, Ordering::Relaxed);
    let sent = feeder.join().unwrap();
    wait_until_received(&received, sent.len(), Duration::from_secs(60));
    // A little longer, so that a duplicate would show.
    std::thread::sleep(Duration::from_millis(500));

    let peak_kib = if hwm_reset {
        proc_status_kib(service.pid(), "VmHWM")
    } else {
        0
    };
    let final_kib = proc_status_kib(service.pid(), "VmRSS");
    stop_sampling.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let (status, log) = service.terminate();
    stop_watching.store(true, Ordering::Relaxed);
    let arrivals = watcher.join().unwrap();
    assert!(status.success(), "fanout exited with {status}:\n{log}");
    assert!(!log.contains("rolled back"), "{log}");
    // The plugin's own panic messages reach the log, tagged with its name; fanout's must not.
    let host_panics: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("panicked") && !l.contains("plugin=\"hostile\""))
        .collect();
    assert!(host_panics.is_empty(), "{host_panics:?}");

    // 1. Every event has exactly one outcome, in the right place.
    let mut by_key: HashMap<&str, &Arrival> = HashMap::new();
    for a in &arrivals {
        assert!(sent.contains_key(&a.key), "a record nobody sent: {a:?}");
        // No fault and no restart here: at-least-once delivers each exactly once.
        let previous = by_key.insert(a.key.as_str(), a);
        assert!(previous.is_none(), "written twice: {a:?}");
    }
    let missing: Vec<&String> = sent
        .keys()
        .filter(|k| !by_key.contains_key(k.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events never written, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let (mut by_good, mut by_hostile, mut attacks_seen) = (0, 0, BTreeMap::<&str, usize>::new());
    for (key, s) in &sent {
        let a = by_key[key.as_str()];
        let version = &a.headers[headers::PLUGIN_SET];
        let ns = namespace(s.partition);
        match s.attack.map(|attack| (attack, expected_outcome(attack))) {
            None | Some((_, None)) => {
                if a.topic == ns {
                    assert_eq!(*version, good_version, "{a:?}");
                    by_good += 1;
                } else {
                    assert_eq!(a.topic, format!("ok.{ns}"), "{a:?}");
                    assert_eq!(*version, hostile_version, "{a:?}");
                    by_hostile += 1;
                }
            }
            Some((attack, Some((kind, detail)))) => {
                *attacks_seen.entry(attack).or_default() += 1;
                assert_eq!(a.topic, DEAD_LETTER, "{attack} was not contained: {a:?}");
                let reason = &a.headers[headers::REASON];
                assert!(
                    reason.starts_with(kind) && reason.contains(detail),
                    "{attack}: {reason}, expected {kind}...{detail}"
                );
                assert_eq!(a.headers[headers::PLUGIN], "hostile", "{a:?}");
                assert_eq!(*version, hostile_version, "{a:?}");
                assert_eq!(
                    a.headers[headers::SOURCE_PARTITION],
                    s.partition.to_string()
                );
            }
        }
    }
    assert!(
        by_good > 0 && by_hostile > 0,
        "the swap happened mid-run ({by_good} by-namespace, {by_hostile} hostile)"
    );

    // Arrivals of each source partition, in order.
    let mut per_partition: Vec<Vec<(i64, &str)>> = vec![Vec::new(); PARTITIONS as usize];
    for a in &arrivals {
        per_partition[sent[&a.key].partition as usize].push((a.at_ms, a.key.as_str()));
    }
    for list in &mut per_partition {
        list.sort();
    }

    println!(
        "hostile load: {} events ({} attacks) over {:.1} s on {PARTITIONS} partitions and \
         {WORKERS} routing threads, deadline {DEADLINE_MS} ms, memory cap {MEMORY_CAP_MIB} MiB",
        sent.len(),
        sent.values().filter(|s| s.attack.is_some()).count(),
        (arrivals.iter().map(|a| a.at_ms).max().unwrap()
            - arrivals.iter().map(|a| a.at_ms).min().unwrap()) as f64
            / 1000.0
    );
    println!("  outcomes: {by_good} by-namespace, {by_hostile} hostile, attacks {attacks_seen:?}");

    // 2. While a routing thread is stuck in a loop, the partitions of the other threads keep
    // flowing. Ordering, not timing: events produced at least half a deadline after the loop
    // event (so consumed after it, unless the consumer lagged by that much) on another thread's
    // partition are written before the loop's dead letter, which can only be written once the
    // deadline interrupted the loop.
    // Were the routing threads serialised (say, by a shared lock around plugin calls), no such
    // event could be written before that dead letter.
    let mut loops: Vec<(&String, &Sent)> = sent
        .iter()
        .filter(|(_, s)| s.attack == Some("HostileLoop"))
        .collect();
    loops.sort_by_key(|(_, s)| s.sent_ms);
    for (key, s) in loops {
        let thread = s.partition % WORKERS;
        let dead_letter_at = by_key[key.as_str()].at_ms;
        // The premise: the loop held its thread for the whole deadline (epoch ticks are never
        // shorter than 5 ms, so the deadline is never cut short by more than one tick).
        assert!(
            dead_letter_at - s.sent_ms >= DEADLINE_MS - 5,
            "{key} was dead-lettered {} ms after it was sent, before its deadline",
            dead_letter_at - s.sent_ms
        );
        let mut overtaken = Vec::new();
        for q in (0..PARTITIONS).filter(|q| q % WORKERS != thread) {
            let n = per_partition[q as usize]
                .iter()
                .filter(|(at, k)| {
                    let e = &sent[*k];
                    e.attack.is_none()
                        && e.sent_ms >= s.sent_ms + DEADLINE_MS / 2
                        && *at < dead_letter_at
                })
                .count();
            assert!(
                n > 0,
                "partition {q} (thread {}) made no progress while thread {thread} was stuck on \
                 {key}",
                q % WORKERS
            );
            overtaken.push((q, n));
        }
        println!(
            "  {key} (thread {thread}): dead letter {} ms after it was sent; events of other \
             threads' partitions sent >= {} ms after it and written before its dead letter: \
             {overtaken:?}",
            dead_letter_at - s.sent_ms,
            DEADLINE_MS / 2
        );
    }

    // 3. No partition waits longer than one deadline, plus slack. A partition's longest silence
    // is bounded by one call of its routing thread running to its deadline (waves are spaced so
    // that a thread never has two long calls queued), plus the fresh instance started after it
    // and the pipeline's ordinary latency (about 20 ms here). Two allowances, both measured on
    // the 2-core development machine:
    // - x 1.5: the deadline is counted in epoch ticks, each a 5 ms sleep of the ticker thread,
    //   and those sleeps run late under CPU contention. 400 such sleeps take 2.05 s on an idle
    //   machine but 2.3 to 2.8 s beside three busy loops (two `yes` and the plugin's own);
    //   the loop calls here then lasted up to 2.47 s.
    // - + 500 ms: scheduling noise. Under that load, every partition at once was seen silent
    //   for up to 450 ms (consumer, producer and this test's own threads all wait for a core).
    // The bound, 3.5 s, stays under two deadlines: a partition stalled by two calls in a row
    // would break it. (One stalled by another thread's call is what check 2 catches.)
    let bound_ms = DEADLINE_MS * 3 / 2 + 500;
    // When each thread was stuck in a loop: from the loop event's sending to its dead letter.
    let mut stuck: Vec<Vec<(i64, i64)>> = vec![Vec::new(); WORKERS as usize];
    for (key, s) in sent.iter().filter(|(_, s)| s.attack == Some("HostileLoop")) {
        stuck[(s.partition % WORKERS) as usize].push((s.sent_ms, by_key[key.as_str()].at_ms));
    }
    let mut worst = (0, 0, "");
    println!(
        "  longest silence per partition: overall (the output it ended at), and outside its own \
         thread's stuck calls; latency (sent to written) median and max:"
    );
    for thread in 0..WORKERS {
        let own_stuck = &stuck[thread as usize];
        for p in [thread, thread + WORKERS] {
            let list = &per_partition[p as usize];
            let gaps: Vec<(i64, i64, &str)> = list
                .windows(2)
                .map(|w| (w[1].0 - w[0].0, w[0].0, w[1].1))
                .collect();
            let (gap, _, until) = gaps.iter().copied().max().unwrap_or((0, 0, ""));
            let otherwise = gaps
                .iter()
                .filter(|(gap, from, _)| {
                    !own_stuck
                        .iter()
                        .any(|(stuck_from, stuck_to)| from < stuck_to && from + gap > *stuck_from)
                })
                .map(|g| g.0)
                .max()
                .unwrap_or(0);
            let mut latencies: Vec<i64> =
                list.iter().map(|(at, k)| at - sent[*k].sent_ms).collect();
            latencies.sort_unstable();
            println!(
                "    thread {thread} p{p}: {gap} ms (until {until}); otherwise {otherwise} ms; \
                 latency {} / {} ms",
                latencies[latencies.len() / 2],
                latencies[latencies.len() - 1]
            );
            if gap > worst.0 {
                worst = (gap, p, until);
            }
        }
    }
    assert!(
        worst.0 <= bound_ms,
        "partition {} was silent for {} ms (until {}), over the bound of {bound_ms} ms \
         (deadline {DEADLINE_MS} ms)",
        worst.1,
        worst.0,
        worst.2
    );

    // 4. Memory: the attack phase's peak stays below the baseline plus one capped instance per
    // routing thread. The slack covers librdkafka's buffers and the allocator's arenas, which
    // move by a few MiB under this traffic, and the host-side copy of a plugin's output (the
    // 2 MiB payload, the 10,000 destinations). A bomb past its cap would grow to 4 GiB, and 26
    // bombs whose memory was never given back would add over 200 MiB.
    let sampled_peak_kib = samples
        .iter()
        .filter(|(t, _)| *t >= attacks_from_ms)
        .map(|(_, kib)| *kib)
        .max()
        .unwrap_or(0);
    let peak_kib = peak_kib.max(sampled_peak_kib);
    let caps_kib = WORKERS as u64 * (MEMORY_CAP_MIB << 10);
    let slack_kib = 48 << 10;
    println!(
        "  memory: baseline RSS {} MiB; attack-phase peak {} MiB ({}; +{} MiB) against \
         baseline + {WORKERS} x {MEMORY_CAP_MIB} MiB caps + {} MiB slack = {} MiB; sampled \
         peak {} MiB; RSS at the end {} MiB; {} memory bombs",
        baseline_kib >> 10,
        peak_kib >> 10,
        if hwm_reset {
            "VmHWM"
        } else {
            "sampled every 5 ms"
        },
        peak_kib.saturating_sub(baseline_kib) >> 10,
        slack_kib >> 10,
        (baseline_kib + caps_kib + slack_kib) >> 10,
        sampled_peak_kib >> 10,
        final_kib >> 10,
        attacks_seen.get("HostileMemoryBomb").copied().unwrap_or(0)
    );
    assert!(
        peak_kib <= baseline_kib + caps_kib + slack_kib,
        "fanout's RSS peaked at {} MiB, over baseline {} MiB + {} MiB of caps + {} MiB slack",
        peak_kib >> 10,
        baseline_kib >> 10,
        caps_kib >> 10,
        slack_kib >> 10
    );
    println!("  test took {:.1} s", test_started.elapsed().as_secs_f64());
}

fn wait_until_received(received: &AtomicUsize, want: usize, timeout: Duration) {
    let started = Instant::now();
    while received.load(Ordering::Relaxed) < want {
        assert!(
            started.elapsed() < timeout,
            "only {} of {want} records written after {timeout:?}",
            received.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
