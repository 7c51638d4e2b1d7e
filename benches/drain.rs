//! `cargo bench -p fanout --bench drain`: the pipeline bench's real-Kafka lane. A backlog of
//! EventRouter envelopes on Apache Kafka (one KRaft node, a child JVM: `tests/kafka-cluster`),
//! drained by each contender in turn, each its own process:
//!
//! - **floor**: a minimal rust-rdkafka consume → produce loop with fanout's client settings and
//!   no decoding, routing or tracking (`benches/peers/floor/floor.rs`): what librdkafka costs;
//! - **native**: `fanout run --builtin-router`;
//! - **by_namespace.wasm**: `fanout run` with the default plugin, at-least-once;
//! - **exactly-once**: the same with `--delivery exactly-once` at the default batch;
//! - **go franz-go**: the old Go tool's job on franz-go, its bugs fixed
//!   (`benches/peers/go-franz`, built by `make setup-peers`);
//! - **python confluent-kafka**: `benches/python_fanout.py` (Debian's confluent-kafka 1.7).
//!
//! The backlog is produced once, before any contender starts; each contender reads it from the
//! start in a consumer group of its own and writes to the same destination topics. Progress is
//! read from the broker, not from a consumer of ours competing for the two cores: the sum of the
//! destination partitions' end offsets (one ListOffsets request) for the at-least-once
//! contenders, and the group's committed source offsets for exactly-once (whose end offsets
//! also count transaction markers). Sampled every 100 ms with the contender's and the broker's
//! CPU time (`/proc`), the figures are taken over the steady middle of the drain, from 10% to
//! 90% of the events, so start-up, the group join and the tail are left out; time to the first
//! record routed is reported apart.
//!
//! Everything shares two cores with the broker, so compare ratios from one run, not absolute
//! figures across machines. Runs are interleaved (each round runs every contender once, in a
//! rotated order); the table has medians over rounds and ratios are taken per round.
//!
//! Settings (environment): `FANOUT_BENCH_EVENTS` (default 1,000,000), `FANOUT_BENCH_ROUNDS`
//! (default 2), `FANOUT_BENCH_ONLY=floor,go,...` (labels' first words). For a change's before
//! and after in one run, `FANOUT_BENCH_BASELINE=PATH` adds a contender: by_namespace.wasm run
//! by the `fanout` binary at PATH (say, a release build of the previous commit).
//!
//! Under `cargo test --bench drain` (no `--bench` argument) it runs the CI setting: 20,000
//! events, one round, every at-least-once contender, and it fails unless each wrote exactly one
//! record per event to its namespace's topic and none to the dead-letter topic. It asserts
//! correctness, never speed.

#[path = "peers/floor/floor.rs"]
mod floor;
#[path = "measure.rs"]
mod measure;
#[path = "../tests/integration/support.rs"]
#[allow(dead_code)]
mod support;
#[path = "workload.rs"]
mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fanout::demo::send;
use kafka_cluster::KafkaCluster;
use measure::{cpu_seconds, env_or, median, peak_rss_mib, python_available, tail, terminate};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{DefaultProducerContext, Producer as _, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use workload::Workload;

const SOURCE_TOPIC: &str = "cluster-events";
const DEAD_LETTER_TOPIC: &str = "fanout-dead-letter";
const SOURCE_PARTITIONS: i32 = 8;
const DESTINATION_PARTITIONS: i32 = 8;
/// As many as in the first profile of fanout on a real broker, the samples' shapes.
const NAMESPACES: usize = 12;
/// A run that makes no progress for this long has failed.
const STALL: Duration = Duration::from_secs(60);
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--floor") {
        return floor::main(&args[at + 1..]);
    }
    let full = args.iter().any(|a| a == "--bench");
    let (events, rounds) = if full {
        (
            env_or("FANOUT_BENCH_EVENTS", 1_000_000),
            env_or("FANOUT_BENCH_ROUNDS", 2),
        )
    } else {
        (20_000, 1)
    };
    let mut contenders = vec![
        Contender::Floor,
        Contender::Native,
        Contender::Wasm,
        Contender::Go,
        Contender::Python,
    ];
    if full {
        contenders.push(Contender::ExactlyOnce);
    }
    let baseline = std::env::var_os("FANOUT_BENCH_BASELINE").map(PathBuf::from);
    if baseline.is_some() {
        contenders.push(Contender::Baseline);
    }
    contenders.retain(|c| match c.available() {
        Ok(()) => true,
        Err(why) if full => {
            println!("{} skipped: {why}", c.label());
            false
        }
        Err(why) => panic!("the CI setting runs every contender, but {why}"),
    });
    if let Ok(only) = std::env::var("FANOUT_BENCH_ONLY") {
        let wanted: Vec<&str> = only.split(',').collect();
        contenders.retain(|c| wanted.iter().any(|w| c.label().starts_with(w)));
    }

    let started = Instant::now();
    let cluster = KafkaCluster::single().unwrap_or_else(|e| panic!("{e:#}"));
    println!(
        "Apache Kafka: 1 node ready in {:.1} s",
        cluster.started_in().as_secs_f64()
    );
    let bootstrap = cluster.bootstrap_servers();
    let workload = Workload::generate(events, NAMESPACES);
    let mut topics = vec![
        (SOURCE_TOPIC.to_owned(), SOURCE_PARTITIONS),
        (DEAD_LETTER_TOPIC.to_owned(), 1),
    ];
    topics.extend(
        workload
            .per_namespace
            .keys()
            .map(|n| (n.clone(), DESTINATION_PARTITIONS)),
    );
    cluster
        .create_topics(&topics, &[])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let loaded = Instant::now();
    produce(&workload, &bootstrap);
    println!(
        "backlog: {events} events ({:.0} bytes each on average, {NAMESPACES} namespaces) loaded in {:.1} s",
        workload.bytes as f64 / events as f64,
        loaded.elapsed().as_secs_f64()
    );

    let launch = Launch {
        fanout: PathBuf::from(env!("CARGO_BIN_EXE_fanout")),
        baseline,
        cache: tempfile::tempdir().unwrap(),
        plugins: support::plugin_set_dir(&["by_namespace"], &[]),
        bootstrap: bootstrap.clone(),
        namespaces: workload.per_namespace.keys().cloned().collect(),
        full,
    };
    let outputs = Outputs::new(&bootstrap, &workload);
    let mut results: Vec<Vec<Drain>> = vec![Vec::new(); contenders.len()];
    for round in 0..rounds {
        for i in 0..contenders.len() {
            let index = (i + round) % contenders.len();
            let contender = &contenders[index];
            let group = format!("drain-{round}-{index}");
            let drain = drain(contender, &launch, &group, &cluster, &outputs, &workload);
            println!(
                "round {} {:<24} {:>8.0} events/s  cpu {:>5.2} µs/event  broker {:>5.2} µs/event  peak rss {:>5.1} MiB  first record {:.1} s",
                round + 1,
                contender.label(),
                drain.events_per_second,
                drain.cpu_us_per_event,
                drain.broker_us_per_event,
                drain.peak_rss_mib,
                drain.first_record_s
            );
            results[index].push(drain);
        }
    }

    let table = report(&contenders, &results, events);
    println!("\n{table}");
    println!("(whole bench: {:.0} s)", started.elapsed().as_secs_f64());
    if full {
        let out = support::root().join("target/bench");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("drain.md"), &table).unwrap();
        println!("wrote {}/drain.md", out.display());
    }
}

// --- The workload. ---

/// Loads the backlog onto the source topic.
fn produce(workload: &Workload, bootstrap: &str) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()
        .unwrap();
    for (key, value, _) in &workload.events {
        send(&producer, SOURCE_TOPIC, Some(key.as_bytes()), value).unwrap();
    }
    producer.flush(Duration::from_secs(120)).unwrap();
}

// --- The contenders. ---

#[derive(Clone, Copy, PartialEq)]
enum Contender {
    Floor,
    Native,
    Wasm,
    ExactlyOnce,
    Go,
    Python,
    /// by_namespace.wasm run by another build of fanout (`FANOUT_BENCH_BASELINE`).
    Baseline,
}

/// What every run shares.
struct Launch {
    fanout: PathBuf,
    baseline: Option<PathBuf>,
    cache: tempfile::TempDir,
    plugins: tempfile::TempDir,
    bootstrap: String,
    namespaces: Vec<String>,
    /// The benchmark proper, not the CI setting.
    full: bool,
}

impl Contender {
    fn label(self) -> &'static str {
        match self {
            Contender::Floor => "floor (rust-rdkafka)",
            Contender::Native => "native (built-in)",
            Contender::Wasm => "by_namespace.wasm",
            Contender::ExactlyOnce => "exactly-once .wasm",
            Contender::Go => "go franz-go",
            Contender::Python => "python confluent-kafka",
            Contender::Baseline => "baseline .wasm",
        }
    }

    fn go_binary() -> PathBuf {
        support::root().join("target/peers/go-franz")
    }

    fn available(self) -> Result<(), String> {
        match self {
            Contender::Go if !Self::go_binary().exists() => Err(format!(
                "{} is not built (make setup-peers builds it)",
                Self::go_binary().display()
            )),
            Contender::Python => python_available(),
            _ => Ok(()),
        }
    }

    fn spawn(self, launch: &Launch, group: &str, log: &Path) -> Child {
        let bootstrap = launch.bootstrap.as_str();
        let mut command = match self {
            Contender::Floor => {
                let mut c = Command::new(std::env::current_exe().unwrap());
                c.arg("--floor")
                    .args([bootstrap, SOURCE_TOPIC, group, DEAD_LETTER_TOPIC])
                    .arg(launch.namespaces.join(","));
                c
            }
            Contender::Go => {
                let mut c = Command::new(Self::go_binary());
                c.args([bootstrap, SOURCE_TOPIC, group, "500", DEAD_LETTER_TOPIC]);
                c
            }
            Contender::Python => {
                let mut c = Command::new("/usr/bin/python3");
                c.arg(support::root().join("benches/python_fanout.py"))
                    .args([bootstrap, SOURCE_TOPIC, group, "500"]);
                c
            }
            Contender::Native | Contender::Wasm | Contender::ExactlyOnce | Contender::Baseline => {
                let binary = match (self, &launch.baseline) {
                    (Contender::Baseline, Some(baseline)) => baseline,
                    _ => &launch.fanout,
                };
                let mut c = Command::new(binary);
                c.args(["run", "--bootstrap-servers", bootstrap])
                    .args(["--source-topic", SOURCE_TOPIC, "--group-id", group])
                    .args(["--dead-letter-topic", DEAD_LETTER_TOPIC])
                    .args(["--http-listen", "none"])
                    // Extra flags, for investigating: FANOUT_BENCH_FANOUT_ARGS="--config x.toml".
                    .args(
                        std::env::var("FANOUT_BENCH_FANOUT_ARGS")
                            .unwrap_or_default()
                            .split_whitespace(),
                    )
                    .env("FANOUT_LOG_FORMAT", "text")
                    .env("RUST_LOG", "warn");
                if !launch.full {
                    // The CI setting checks every record's place on a machine that also
                    // compiles and tests: no plugin-timeout dead letters from descheduling.
                    c.args(["--deadline-ms", "5000"]);
                }
                if self == Contender::Native {
                    c.arg("--builtin-router");
                } else {
                    c.arg("--plugins").arg(launch.plugins.path());
                    c.arg("--cache-dir").arg(launch.cache.path());
                }
                if self == Contender::ExactlyOnce {
                    c.args(["--delivery", "exactly-once", "--transactional-id", group]);
                }
                c
            }
        };
        let log = std::fs::File::create(log).unwrap();
        command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.label()))
    }
}

// --- Progress, read from the broker. ---

/// The destination topics' partitions, and their end offsets before a run.
struct Outputs {
    reader: BaseConsumer,
    partitions: TopicPartitionList,
}

impl Outputs {
    fn new(bootstrap: &str, workload: &Workload) -> Self {
        let reader = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "drain-observer")
            .create()
            .unwrap();
        let mut partitions = TopicPartitionList::new();
        for topic in workload
            .per_namespace
            .keys()
            .map(String::as_str)
            .chain([DEAD_LETTER_TOPIC])
        {
            let count = if topic == DEAD_LETTER_TOPIC {
                1
            } else {
                DESTINATION_PARTITIONS
            };
            for p in 0..count {
                partitions
                    .add_partition_offset(topic, p, Offset::End)
                    .unwrap();
            }
        }
        Self { reader, partitions }
    }

    /// Every destination partition's end offset, by topic (summed over its partitions), in one
    /// ListOffsets request (a timestamp of -1, `Offset::End`, asks for the latest offset).
    fn end_offsets(&self) -> BTreeMap<String, i64> {
        let list = self
            .reader
            .offsets_for_times(self.partitions.clone(), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("listing end offsets: {e}"));
        let mut ends = BTreeMap::new();
        for e in list.elements() {
            let Offset::Offset(end) = e.offset() else {
                panic!(
                    "{} [{}]: end offset {:?}",
                    e.topic(),
                    e.partition(),
                    e.offset()
                );
            };
            *ends.entry(e.topic().to_owned()).or_insert(0) += end;
        }
        ends
    }
}

/// What one drain measured.
#[derive(Clone)]
struct Drain {
    events_per_second: f64,
    cpu_us_per_event: f64,
    broker_us_per_event: f64,
    peak_rss_mib: f64,
    first_record_s: f64,
}

struct Sample {
    at: Instant,
    cpu: f64,
    broker_cpu: f64,
    events: i64,
}

/// Runs `contender` over the whole backlog in consumer group `group`, then stops it (SIGTERM,
/// exit 0) and, in the CI setting, checks what it wrote.
fn drain(
    contender: &Contender,
    launch: &Launch,
    group: &str,
    cluster: &KafkaCluster,
    outputs: &Outputs,
    workload: &Workload,
) -> Drain {
    let total = workload.events.len() as i64;
    let before = outputs.end_offsets();
    let committed = Committed::new(&launch.bootstrap, group);
    let broker_pids = cluster.pids();
    let broker_cpu = || broker_pids.iter().map(|&pid| cpu_seconds(pid)).sum::<f64>();

    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("contender.log");
    let spawned = Instant::now();
    let mut child = contender.spawn(launch, group, &log);
    let pid = child.id();
    let progress = || match contender {
        Contender::ExactlyOnce => committed.total(),
        _ => {
            let after = outputs.end_offsets();
            after.iter().map(|(t, end)| end - before[t]).sum()
        }
    };
    let mut samples: Vec<Sample> = Vec::new();
    let mut last_progress = (Instant::now(), 0);
    loop {
        let events = progress();
        samples.push(Sample {
            at: Instant::now(),
            cpu: cpu_seconds(pid),
            broker_cpu: broker_cpu(),
            events,
        });
        if events >= total {
            break;
        }
        if events > last_progress.1 {
            last_progress = (Instant::now(), events);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{} exited ({status}) after {events} of {total} events:\n{}",
                contender.label(),
                tail(&log)
            );
        }
        assert!(
            last_progress.0.elapsed() < STALL,
            "{}: no progress for {STALL:?} at {events} of {total} events:\n{}",
            contender.label(),
            tail(&log)
        );
        std::thread::sleep(SAMPLE_EVERY);
    }
    let peak_rss_mib = peak_rss_mib(pid);
    terminate(child, contender.label(), &log);

    if !launch.full {
        let after = outputs.end_offsets();
        let written: BTreeMap<String, i64> = after
            .iter()
            .map(|(t, end)| (t.clone(), end - before[t]))
            .filter(|(_, n)| *n > 0)
            .collect();
        let expected: BTreeMap<String, i64> = workload
            .per_namespace
            .iter()
            .map(|(namespace, &n)| (namespace.clone(), n as i64))
            .collect();
        assert_eq!(
            written,
            expected,
            "{}: records per topic differ from one per event in its namespace's topic",
            contender.label()
        );
        println!("  every event arrived once: {total} records, as expected");
    }

    // The steady middle: from the first sample at 10% of the events to the first at 90%. A
    // drain too quick for two distinct samples there (the CI setting) falls back to the whole.
    let at = |share: f64| {
        samples
            .iter()
            .find(|s| s.events as f64 >= share * total as f64 && s.events > 0)
            .unwrap()
    };
    let (mut from, to) = (at(0.1), at(0.9));
    if from.events == to.events {
        from = samples.iter().find(|s| s.events > 0).unwrap();
    }
    // Still one sample (all of it came out between two): nothing to measure, NaN.
    let events = (to.events - from.events) as f64;
    let seconds = to.at.duration_since(from.at).as_secs_f64();
    Drain {
        events_per_second: events / seconds,
        cpu_us_per_event: (to.cpu - from.cpu) / events * 1e6,
        broker_us_per_event: (to.broker_cpu - from.broker_cpu) / events * 1e6,
        peak_rss_mib,
        first_record_s: samples
            .iter()
            .find(|s| s.events > 0)
            .map_or(f64::NAN, |s| s.at.duration_since(spawned).as_secs_f64()),
    }
}

/// A group's committed offsets on the source topic (dense from 0: the backlog was written
/// without transactions), summed.
struct Committed {
    reader: BaseConsumer,
    partitions: TopicPartitionList,
}

impl Committed {
    fn new(bootstrap: &str, group: &str) -> Self {
        let reader = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut partitions = TopicPartitionList::new();
        for p in 0..SOURCE_PARTITIONS {
            partitions.add_partition(SOURCE_TOPIC, p);
        }
        Self { reader, partitions }
    }

    fn total(&self) -> i64 {
        self.reader
            .committed_offsets(self.partitions.clone(), Duration::from_secs(10))
            .map(|list| {
                list.elements()
                    .iter()
                    .map(|e| match e.offset() {
                        Offset::Offset(o) => o,
                        _ => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
}

// --- The report. ---

fn report(contenders: &[Contender], results: &[Vec<Drain>], events: usize) -> String {
    let rounds = results[0].len();
    let column = |c: Contender| contenders.iter().position(|&x| x == c);
    let mut t = String::new();
    writeln!(
        t,
        "Backlog drain on Apache Kafka (1 node, same 2 cores): {events} events, median of {rounds} round(s), figures over 10-90% of the drain.\n"
    )
    .unwrap();
    writeln!(
        t,
        "| contender | events/s | CPU µs per event | vs floor | broker CPU µs per event | peak RSS MiB | first record s |"
    )
    .unwrap();
    writeln!(t, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |").unwrap();
    let floor = column(Contender::Floor);
    for (i, c) in contenders.iter().enumerate() {
        let m = |f: fn(&Drain) -> f64| median(results[i].iter().map(f));
        let vs_floor = floor.map_or("-".to_owned(), |f| {
            figure(ratio(results, i, f, |d| d.cpu_us_per_event), 2)
        });
        writeln!(
            t,
            "| {} | {} | {} | {vs_floor} | {} | {:.1} | {:.1} |",
            c.label(),
            figure(m(|d| d.events_per_second), 0),
            figure(m(|d| d.cpu_us_per_event), 2),
            figure(m(|d| d.broker_us_per_event), 2),
            results[i]
                .iter()
                .map(|d| d.peak_rss_mib)
                .fold(0.0, f64::max),
            m(|d| d.first_record_s),
        )
        .unwrap();
    }
    writeln!(t, "\nRatios (per round, then the median):").unwrap();
    let pairs: [(Contender, Contender, &str, Figure); 7] = [
        (
            Contender::Wasm,
            Contender::Floor,
            "CPU per event, by_namespace.wasm / floor",
            |d| d.cpu_us_per_event,
        ),
        (
            Contender::Wasm,
            Contender::Go,
            "CPU per event, by_namespace.wasm / go",
            |d| d.cpu_us_per_event,
        ),
        (
            Contender::Wasm,
            Contender::Python,
            "CPU per event, by_namespace.wasm / python",
            |d| d.cpu_us_per_event,
        ),
        (
            Contender::Wasm,
            Contender::Go,
            "events/s, by_namespace.wasm / go",
            |d| d.events_per_second,
        ),
        (
            Contender::ExactlyOnce,
            Contender::Wasm,
            "events/s, exactly-once / at-least-once",
            |d| d.events_per_second,
        ),
        (
            Contender::Wasm,
            Contender::Baseline,
            "CPU per event, by_namespace.wasm / baseline",
            |d| d.cpu_us_per_event,
        ),
        (
            Contender::Wasm,
            Contender::Baseline,
            "events/s, by_namespace.wasm / baseline",
            |d| d.events_per_second,
        ),
    ];
    for (a, b, what, f) in pairs {
        if let (Some(a), Some(b)) = (column(a), column(b)) {
            writeln!(t, "- {what}: {}", figure(ratio(results, a, b, f), 2)).unwrap();
        }
    }
    if let (Some(w), Some(n)) = (column(Contender::Wasm), column(Contender::Native)) {
        writeln!(
            t,
            "- events/s, by_namespace.wasm / native: {}",
            figure(ratio(results, w, n, |d| d.events_per_second), 2)
        )
        .unwrap();
    }
    t
}

/// One figure of a drain.
type Figure = fn(&Drain) -> f64;

/// `f` of contender `a` over `f` of contender `b`, per round, then the median.
fn ratio(results: &[Vec<Drain>], a: usize, b: usize, f: Figure) -> f64 {
    median((0..results[a].len()).map(|r| f(&results[a][r]) / f(&results[b][r])))
}

/// `value` with `decimals`, or `-` where a drain was too quick to measure.
fn figure(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "-".to_owned()
    }
}
