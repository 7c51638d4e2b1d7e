//! `cargo bench --bench pipeline`: the whole pipeline, end to end on the embedded broker, for four
//! contenders in one run.
//!
//! - **native**: `fanout run --builtin-router`, routing with a native Rust function that has
//!   by-namespace's logic: the practical limit of the pipeline.
//! - **by-namespace.wasm**: `fanout run` with the default plugin.
//! - **three plugins**: `fanout run` with by-namespace, alerts and archive loaded together (every
//!   event is written two or three times).
//! - **python**: `benches/python_fanout.py`, the confluent-kafka script a user would otherwise
//!   write.
//!
//! Each contender is its own process, so its CPU time and peak RSS are its own. Each run gets a
//! fresh embedded broker (librdkafka's mock cluster, in this process) with the source topic
//! `cluster-events` (8 partitions) and one topic per namespace. A feeder thread produces the
//! workload: generated EventRouter envelopes, about 1 KiB each, over 50 namespaces, keyed by
//! `involvedObject.name`. An observer consumes every destination topic and counts.
//!
//! The mock broker keeps only 5 MiB per partition (a constant in librdkafka), so the workload
//! cannot be loaded in full before timing: the feeder keeps at most 20,000 events ahead of what
//! has come out instead. Throughput is measured from the first record out to the last, which
//! leaves out start-up and the consumer group join, i.e. from first consumed to last
//! acknowledged, to within the observer's fetch wait.
//!
//! Latency is measured in a second run per contender, paced at half its own measured throughput,
//! after a warm-up of 2,000 events (so start-up and the group join are left out): every contender
//! keeps the source record's timestamp (set when the feeder produced it) on its writes, and the
//! observer takes the difference to the time it receives the record. That includes the feeder's
//! and observer's client latency (a few ms), the same for everyone. Every contender's consumer
//! runs with `fetch.wait.max.ms=10`: the mock broker holds a fetch that finds no data for the
//! whole wait, even when data arrives meanwhile, which a real broker does not.
//!
//! Runs are interleaved (each round runs every contender once, in a rotated order) and the table
//! shows medians over rounds; ratios are per round, then the median. Everything here shares two
//! cores with the broker, feeder and observer, so absolute figures are low and noisy; ratios are
//! the point.
//!
//! Settings (environment): `FANOUT_BENCH_EVENTS` (default 1,000,000), `FANOUT_BENCH_ROUNDS`
//! (default 3), `FANOUT_BENCH_LATENCY_EVENTS` (default 100,000).
//!
//! Under `cargo test --bench pipeline` (no `--bench` argument) it runs the CI setting instead:
//! 20,000 events, one round, no latency runs, and it fails unless every contender wrote exactly
//! the expected records to every topic. It asserts correctness, never speed.

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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fanout::demo::{EmbeddedKafka, send};
use fanout::plugin::Outcome;
use measure::{cpu_seconds, env_or, median, peak_rss_mib, python_available, tail, terminate};
use rdkafka::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{DefaultProducerContext, Producer as _, ThreadedProducer};
use workload::Workload;

const SOURCE_TOPIC: &str = "cluster-events";
const SOURCE_PARTITIONS: i32 = 8;
const DESTINATION_PARTITIONS: i32 = 8;
const NAMESPACES: usize = 50;
/// How far the feeder may run ahead of the output: well within the mock's 5 MiB per partition.
const MAX_BACKLOG: u64 = 20_000;
/// A run that makes no progress for this long has failed.
const STALL: Duration = Duration::from_secs(60);
/// `fetch.wait.max.ms` for every contender's consumer. The mock broker answers a fetch that
/// finds no data only after the full wait, even if data arrives meanwhile (a real broker answers
/// as soon as there is data), so librdkafka's default of 500 ms would be measured as latency.
const FETCH_WAIT_MS: &str = "10";
/// Events fed before latency is measured: the contender has joined its group and is routing.
const WARM_UP: usize = 2_000;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let settings = if full {
        Settings {
            events: env_or("FANOUT_BENCH_EVENTS", 1_000_000),
            rounds: env_or("FANOUT_BENCH_ROUNDS", 3),
            latency_events: env_or("FANOUT_BENCH_LATENCY_EVENTS", 100_000),
        }
    } else {
        Settings {
            events: 20_000,
            rounds: 1,
            latency_events: 0,
        }
    };
    let python = python_available();
    let mut contenders = vec![
        Contender::Native,
        Contender::Plugins(PluginSet::ByNamespace),
        Contender::Plugins(PluginSet::Three),
        Contender::ExactlyOnce(TransactionBatch::Default),
        Contender::ExactlyOnce(TransactionBatch::Small),
    ];
    match &python {
        Ok(()) => contenders.push(Contender::Python),
        Err(why) if full => println!("python contender skipped: {why}"),
        Err(why) => panic!("the CI setting runs every contender, but python can't: {why}"),
    }
    // For investigating one contender: FANOUT_BENCH_ONLY=python,native (labels' first words).
    if let Ok(only) = std::env::var("FANOUT_BENCH_ONLY") {
        let wanted: Vec<&str> = only.split(',').collect();
        contenders.retain(|c| wanted.iter().any(|w| c.label().starts_with(w)));
    }

    println!(
        "workload: {} events over {NAMESPACES} namespaces, {SOURCE_PARTITIONS} source partitions",
        settings.events
    );
    let workload = Workload::generate(settings.events, NAMESPACES);
    println!(
        "  mean envelope {:.0} bytes; hottest namespace {:.1}% of events",
        workload.bytes as f64 / workload.events.len() as f64,
        100.0 * *workload.per_namespace.values().max().unwrap() as f64
            / workload.events.len() as f64
    );
    let fanout_bin = PathBuf::from(env!("CARGO_BIN_EXE_fanout"));
    let cache = tempfile::tempdir().unwrap();
    let dirs = PluginDirs::new();
    let expected: Vec<BTreeMap<String, u64>> = contenders
        .iter()
        .map(|c| c.expected(&workload, &dirs))
        .collect();

    let mut results: Vec<Vec<Throughput>> = vec![Vec::new(); contenders.len()];
    for round in 0..settings.rounds {
        for i in 0..contenders.len() {
            let index = (i + round) % contenders.len();
            let contender = &contenders[index];
            let launch = Launch {
                fanout: &fanout_bin,
                cache: cache.path(),
                dirs: &dirs,
                full,
            };
            let run = run(contender, &launch, &workload, &expected[index], None);
            println!(
                "round {} {:<22} {:>9.0} events/s  cpu {:>6.2} s/M  peak rss {:>5.1} MiB",
                round + 1,
                contender.label(),
                run.throughput.events_per_second,
                run.throughput.cpu_seconds_per_million,
                run.throughput.peak_rss_mib
            );
            if !full {
                assert_eq!(
                    run.seen,
                    expected[index],
                    "{}: records per topic differ from what its routing decides",
                    contender.label()
                );
                println!(
                    "  every event arrived: {} records, as expected",
                    run.total()
                );
            }
            results[index].push(run.throughput);
        }
    }

    let mut latencies: Vec<Option<Latency>> = vec![None; contenders.len()];
    if settings.latency_events > 0 {
        let latency_workload = Workload::generate(settings.latency_events, NAMESPACES);
        for (index, contender) in contenders.iter().enumerate() {
            let rate = median(results[index].iter().map(|r| r.events_per_second)) / 2.0;
            let launch = Launch {
                fanout: &fanout_bin,
                cache: cache.path(),
                dirs: &dirs,
                full,
            };
            let expected = contender.expected(&latency_workload, &dirs);
            let run = run(contender, &launch, &latency_workload, &expected, Some(rate));
            let latency = run.latency(rate);
            println!(
                "latency {:<22} at {:>7.0} events/s: p50 {:>6.1} ms  p99 {:>6.1} ms",
                contender.label(),
                rate,
                latency.p50_ms,
                latency.p99_ms
            );
            latencies[index] = Some(latency);
        }
    }

    let report = Report::new(&contenders, &results, &latencies);
    let mut table = report.table();
    // Exactly-once against at-least-once, with the same plugin, per round, then the median.
    let at_least_once = contenders
        .iter()
        .position(|c| matches!(c, Contender::Plugins(PluginSet::ByNamespace)));
    for (i, contender) in contenders.iter().enumerate() {
        if let (Contender::ExactlyOnce(_), Some(base)) = (contender, at_least_once) {
            let ratio = median((0..results[i].len()).map(|round| {
                results[i][round].events_per_second / results[base][round].events_per_second
            }));
            writeln!(
                table,
                "\n{} vs at-least-once by_namespace.wasm: {ratio:.2}",
                contender.label()
            )
            .unwrap();
        }
    }
    println!("\n{table}");
    if full {
        let out = support::root().join("target/bench");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("pipeline.md"), &table).unwrap();
        std::fs::write(out.join("pipeline.svg"), report.svg(&settings)).unwrap();
        println!("wrote {0}/pipeline.md and {0}/pipeline.svg", out.display());
    }
}

struct Settings {
    events: usize,
    rounds: usize,
    latency_events: usize,
}

// --- The contenders. ---

#[derive(Clone, Copy)]
enum PluginSet {
    ByNamespace,
    Three,
}

impl PluginSet {
    fn plugins(self) -> &'static [&'static str] {
        match self {
            PluginSet::ByNamespace => &["by_namespace"],
            PluginSet::Three => &["by_namespace", "alerts", "archive"],
        }
    }
}

enum Contender {
    Native,
    Plugins(PluginSet),
    /// by_namespace.wasm with `delivery = "exactly-once"`.
    ExactlyOnce(TransactionBatch),
    Python,
}

/// Events per transaction at most (each also ends after 100 ms, the default).
#[derive(Clone, Copy)]
enum TransactionBatch {
    /// `kafka.transaction_max_events`'s default.
    Default,
    Small,
}

impl TransactionBatch {
    fn max_events(self) -> usize {
        match self {
            TransactionBatch::Default => 5_000,
            TransactionBatch::Small => 500,
        }
    }
}

/// Plugin directories, made once and shared by every run.
struct PluginDirs {
    by_namespace: tempfile::TempDir,
    three: tempfile::TempDir,
}

impl PluginDirs {
    fn new() -> Self {
        Self {
            by_namespace: support::plugin_set_dir(PluginSet::ByNamespace.plugins(), &[]),
            three: support::plugin_set_dir(PluginSet::Three.plugins(), &[]),
        }
    }

    fn get(&self, set: PluginSet) -> &Path {
        match set {
            PluginSet::ByNamespace => self.by_namespace.path(),
            PluginSet::Three => self.three.path(),
        }
    }
}

struct Launch<'a> {
    fanout: &'a Path,
    cache: &'a Path,
    dirs: &'a PluginDirs,
    /// The benchmark proper, not the CI setting.
    full: bool,
}

impl Contender {
    fn label(&self) -> &'static str {
        match self {
            Contender::Native => "native (built-in)",
            Contender::Plugins(PluginSet::ByNamespace) => "by_namespace.wasm",
            Contender::Plugins(PluginSet::Three) => "three plugins",
            Contender::ExactlyOnce(TransactionBatch::Default) => "exactly-once, 5000/txn",
            Contender::ExactlyOnce(TransactionBatch::Small) => "exactly-once, 500/txn",
            Contender::Python => "python confluent-kafka",
        }
    }

    fn spawn(&self, launch: &Launch, bootstrap: &str, log: &Path) -> Child {
        let mut command = match self {
            Contender::Python => {
                let mut c = Command::new("/usr/bin/python3");
                c.arg(support::root().join("benches/python_fanout.py"))
                    .args([bootstrap, SOURCE_TOPIC, "bench", FETCH_WAIT_MS]);
                c
            }
            _ => {
                let mut c = Command::new(launch.fanout);
                c.args(["run", "--bootstrap-servers", bootstrap])
                    // Extra flags, for investigating: FANOUT_BENCH_FANOUT_ARGS="--config x.toml".
                    .args(
                        std::env::var("FANOUT_BENCH_FANOUT_ARGS")
                            .unwrap_or_default()
                            .split_whitespace(),
                    )
                    .args(["--source-topic", SOURCE_TOPIC, "--group-id", "bench"])
                    .args(["--http-listen", "none"])
                    .arg("--kafka-property")
                    .arg(format!("fetch.wait.max.ms={FETCH_WAIT_MS}"))
                    .env("FANOUT_LOG_FORMAT", "text")
                    .env("RUST_LOG", "warn");
                if !launch.full {
                    // The CI setting checks every record's place, on a shared 2-core machine
                    // that also compiles and tests: a descheduled routing thread must not turn
                    // an event into a plugin-timeout dead letter there.
                    c.args(["--deadline-ms", "5000"]);
                }
                match self {
                    Contender::Plugins(set) => {
                        c.arg("--plugins").arg(launch.dirs.get(*set));
                        c.arg("--cache-dir").arg(launch.cache);
                    }
                    Contender::ExactlyOnce(batch) => {
                        let config = launch
                            .cache
                            .join(format!("eos-{}.toml", batch.max_events()));
                        std::fs::write(
                            &config,
                            format!("[kafka]\ntransaction_max_events = {}\n", batch.max_events()),
                        )
                        .unwrap();
                        c.arg("--config").arg(config);
                        c.args(["--delivery", "exactly-once", "--transactional-id", "bench"]);
                        c.arg("--plugins")
                            .arg(launch.dirs.get(PluginSet::ByNamespace));
                        c.arg("--cache-dir").arg(launch.cache);
                    }
                    _ => {
                        c.arg("--builtin-router");
                    }
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

    /// Records per topic the contender must write for `workload`, decided by the same routing
    /// run in this process (the plugins themselves, for the plugin contenders).
    fn expected(&self, workload: &Workload, dirs: &PluginDirs) -> BTreeMap<String, u64> {
        let Contender::Plugins(PluginSet::Three) = self else {
            return workload.per_namespace.clone();
        };
        let engine = support::engine();
        let set = fanout::plugin::PluginSet::load_path(&engine, dirs.get(PluginSet::Three), None)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut router = fanout::plugin::Router::new(engine.clone(), Arc::new(set));
        let mut expected = BTreeMap::new();
        for (_, value, _) in &workload.events {
            match router.route(&support::event(value)) {
                Outcome::Routed(destinations) => {
                    for d in destinations {
                        *expected.entry(d.topic).or_insert(0) += 1;
                    }
                }
                other => panic!("the workload must route cleanly, got {other:?}"),
            }
        }
        expected
    }
}

// --- One run. ---

#[derive(Clone)]
struct Throughput {
    events_per_second: f64,
    cpu_seconds_per_million: f64,
    peak_rss_mib: f64,
}

#[derive(Clone)]
struct Latency {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

struct Run {
    throughput: Throughput,
    seen: BTreeMap<String, u64>,
    latencies_ms: Vec<f64>,
}

impl Run {
    fn total(&self) -> u64 {
        self.seen.values().sum()
    }

    fn latency(mut self, rate: f64) -> Latency {
        self.latencies_ms.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let i = ((self.latencies_ms.len() as f64 - 1.0) * q).round() as usize;
            self.latencies_ms[i]
        };
        Latency {
            rate,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
        }
    }
}

/// Runs one contender over `workload` on a fresh broker: as fast as it goes, or at `rate`.
fn run(
    contender: &Contender,
    launch: &Launch,
    workload: &Workload,
    expected: &BTreeMap<String, u64>,
    rate: Option<f64>,
) -> Run {
    let kafka = EmbeddedKafka::start(1).unwrap();
    let bootstrap = kafka.bootstrap_servers();
    kafka.create_topic(SOURCE_TOPIC, SOURCE_PARTITIONS).unwrap();
    kafka.create_topic("fanout-dead-letter", 1).unwrap();
    for topic in expected.keys() {
        kafka.create_topic(topic, DESTINATION_PARTITIONS).unwrap();
    }
    let expected_total: u64 = expected.values().sum();

    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("contender.log");
    let mut child = contender.spawn(launch, &bootstrap, &log);
    let observer = Observer::start(&bootstrap, expected, &workload.per_namespace);
    let stop = Arc::new(AtomicBool::new(false));
    let (elapsed, cpu_seconds, peak_rss_mib) = std::thread::scope(|scope| {
        let feeder = scope.spawn(|| feed(&bootstrap, workload, rate, &observer, &stop));
        let measured = observe(&mut child, &observer, expected_total, &log);
        stop.store(true, Ordering::Relaxed);
        feeder.join().unwrap();
        measured
    });
    terminate(child, contender.label(), &log);
    let (seen, latencies_ms) = observer.finish();
    let events = workload.events.len() as f64;
    Run {
        throughput: Throughput {
            events_per_second: events / elapsed.as_secs_f64(),
            cpu_seconds_per_million: cpu_seconds / events * 1e6,
            peak_rss_mib,
        },
        seen,
        latencies_ms,
    }
}

/// Produces the workload, never more than [`MAX_BACKLOG`] ahead of the output. With a `rate`,
/// it first feeds [`WARM_UP`] events and waits for them to come out, so the contender's start-up
/// and group join are not measured, then paces the rest at `rate` events per second and tells
/// the observer to measure latency from there.
fn feed(
    bootstrap: &str,
    workload: &Workload,
    rate: Option<f64>,
    observer: &Observer,
    stop: &AtomicBool,
) {
    let events_out = &observer.events_out;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "1")
        .create()
        .unwrap();
    let warm_up = if rate.is_some() { WARM_UP } else { 0 };
    let mut started = Instant::now();
    for (sent, (key, value, _)) in workload.events.iter().enumerate() {
        let ahead = if sent == warm_up && warm_up > 0 {
            0
        } else {
            MAX_BACKLOG
        };
        while sent as u64 > events_out.load(Ordering::Relaxed) + ahead {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if sent == warm_up && warm_up > 0 {
            started = Instant::now();
            observer
                .measure_from_ms
                .store(unix_ms() as i64, Ordering::Relaxed);
        }
        if let (Some(rate), true) = (rate, sent >= warm_up) {
            let due = started + Duration::from_secs_f64((sent - warm_up) as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        send(&producer, SOURCE_TOPIC, Some(key.as_bytes()), value).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Waits for every expected record, sampling the contender's CPU time at the first record out
/// and at the last. Returns the elapsed time between the two, the CPU seconds used in it, and
/// the contender's peak RSS.
fn observe(
    child: &mut Child,
    observer: &Observer,
    expected_total: u64,
    log: &Path,
) -> (Duration, f64, f64) {
    let pid = child.id();
    let mut first: Option<(Instant, f64)> = None;
    let mut last_progress = (Instant::now(), 0);
    loop {
        let total = observer.records_out.load(Ordering::Relaxed);
        if first.is_none() && total > 0 {
            first = Some((Instant::now(), cpu_seconds(pid)));
        }
        if total >= expected_total {
            let (started, cpu_at_start) = first.unwrap();
            let elapsed = started.elapsed();
            return (elapsed, cpu_seconds(pid) - cpu_at_start, peak_rss_mib(pid));
        }
        if total > last_progress.1 {
            last_progress = (Instant::now(), total);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the contender exited ({status}) after {total} of {expected_total} records:\n{}",
                tail(log)
            );
        }
        assert!(
            last_progress.0.elapsed() < STALL,
            "no progress for {STALL:?} at {total} of {expected_total} records:\n{}",
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

// --- The observer: a consumer of every destination topic. ---

struct Observer {
    /// Every record seen, and source events seen (records in namespace topics: one per event).
    records_out: Arc<AtomicU64>,
    events_out: Arc<AtomicU64>,
    /// Latency is recorded for events produced from this time on (ms since the Unix epoch).
    measure_from_ms: Arc<std::sync::atomic::AtomicI64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(BTreeMap<String, u64>, Vec<f64>)>,
}

impl Observer {
    fn start(
        bootstrap: &str,
        expected: &BTreeMap<String, u64>,
        per_namespace: &BTreeMap<String, u64>,
    ) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "bench-observer")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "5")
            .create()
            .unwrap();
        let names: Vec<&str> = expected.keys().map(String::as_str).collect();
        consumer.subscribe(&names).unwrap();
        // Every event has exactly one record in its namespace's topic.
        let namespaces: std::collections::HashSet<String> = per_namespace.keys().cloned().collect();
        let records_out = Arc::new(AtomicU64::new(0));
        let events_out = Arc::new(AtomicU64::new(0));
        let measure_from_ms = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (records_out, events_out, stop) =
                (records_out.clone(), events_out.clone(), stop.clone());
            let measure_from_ms = measure_from_ms.clone();
            move || {
                let mut seen: BTreeMap<String, u64> = BTreeMap::new();
                let mut latencies = Vec::new();
                // For investigating the latency tail: FANOUT_BENCH_LATENCY_DUMP=FILE writes one
                // line per measured record: produced (ms), received (ms), topic, partition.
                let mut dump = std::env::var_os("FANOUT_BENCH_LATENCY_DUMP")
                    .map(|path| std::io::BufWriter::new(std::fs::File::create(path).unwrap()));
                while !stop.load(Ordering::Relaxed) {
                    let Some(message) = consumer.poll(Duration::from_millis(50)) else {
                        continue;
                    };
                    let message = message.expect("the observer's consumer failed");
                    let now_ms = unix_ms();
                    let topic = message.topic();
                    *seen.entry(topic.to_owned()).or_insert(0) += 1;
                    if namespaces.contains(topic) {
                        if let Some(ts) = message.timestamp().to_millis() {
                            latencies.push((ts, now_ms - ts as f64));
                            if let Some(dump) = dump.as_mut() {
                                use std::io::Write as _;
                                let partition = message.partition();
                                writeln!(dump, "{ts} {now_ms:.0} {topic} {partition}").unwrap();
                            }
                        }
                        events_out.fetch_add(1, Ordering::Relaxed);
                    }
                    records_out.fetch_add(1, Ordering::Relaxed);
                }
                // Only now is the end of the warm-up known for certain: its records were
                // received before the feeder set `measure_from_ms`.
                let from = measure_from_ms.load(Ordering::Relaxed);
                let latencies = latencies
                    .into_iter()
                    .filter(|&(ts, _)| ts >= from)
                    .map(|(_, latency)| latency)
                    .collect();
                (seen, latencies)
            }
        });
        Self {
            records_out,
            events_out,
            measure_from_ms,
            stop,
            thread,
        }
    }

    /// Waits briefly for stragglers (duplicates would show up here), then stops.
    fn finish(self) -> (BTreeMap<String, u64>, Vec<f64>) {
        std::thread::sleep(Duration::from_millis(500));
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1e3
}

// --- The report. ---

struct Row {
    label: &'static str,
    events_per_second: f64,
    ratio: f64,
    latency: Option<Latency>,
    cpu_seconds_per_million: f64,
    peak_rss_mib: f64,
}

struct Report {
    rows: Vec<Row>,
    rounds: usize,
}

impl Report {
    fn new(
        contenders: &[Contender],
        results: &[Vec<Throughput>],
        latencies: &[Option<Latency>],
    ) -> Self {
        let rounds = results[0].len();
        let rows = contenders
            .iter()
            .enumerate()
            .map(|(i, c)| Row {
                label: c.label(),
                events_per_second: median(results[i].iter().map(|r| r.events_per_second)),
                // Per round against that round's native run, then the median: drift between
                // rounds cancels out.
                ratio: median((0..rounds).map(|round| {
                    results[i][round].events_per_second / results[0][round].events_per_second
                })),
                latency: latencies[i].clone(),
                cpu_seconds_per_million: median(
                    results[i].iter().map(|r| r.cpu_seconds_per_million),
                ),
                peak_rss_mib: results[i]
                    .iter()
                    .map(|r| r.peak_rss_mib)
                    .fold(0.0, f64::max),
            })
            .collect();
        Self { rows, rounds }
    }

    fn table(&self) -> String {
        let mut t = String::new();
        writeln!(
            t,
            "| contender | events/s (median of {}) | vs native | p50 ms | p99 ms | at events/s | CPU s per 1M events | peak RSS MiB |",
            self.rounds
        )
        .unwrap();
        writeln!(
            t,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        )
        .unwrap();
        for r in &self.rows {
            let (p50, p99, rate) = match &r.latency {
                Some(l) => (
                    format!("{:.1}", l.p50_ms),
                    format!("{:.1}", l.p99_ms),
                    format!("{:.0}", l.rate),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            writeln!(
                t,
                "| {} | {:.0} | {:.2} | {p50} | {p99} | {rate} | {:.1} | {:.1} |",
                r.label, r.events_per_second, r.ratio, r.cpu_seconds_per_million, r.peak_rss_mib
            )
            .unwrap();
        }
        t
    }

    /// A horizontal bar chart of throughput per contender, labelled with the ratio to native.
    fn svg(&self, settings: &Settings) -> String {
        let (width, bar_x, bar_max, row_h, top) = (760.0, 200.0, 440.0, 44.0, 56.0);
        let height = top + row_h * self.rows.len() as f64 + 40.0;
        let max = self
            .rows
            .iter()
            .map(|r| r.events_per_second)
            .fold(1.0, f64::max);
        let mut s = String::new();
        writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="14">"#
        )
        .unwrap();
        writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#).unwrap();
        writeln!(
            s,
            r#"<text x="20" y="28" font-size="16" font-weight="bold">fanout end to end on the embedded broker: events per second ({} events, median of {} rounds)</text>"#,
            settings.events, settings.rounds
        )
        .unwrap();
        for (i, r) in self.rows.iter().enumerate() {
            let y = top + row_h * i as f64;
            let w = bar_max * r.events_per_second / max;
            let fill = if i == 0 { "#888888" } else { "#2f6db5" };
            writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                bar_x - 10.0,
                y + 22.0,
                r.label
            )
            .unwrap();
            writeln!(
                s,
                r#"<rect x="{bar_x}" y="{}" width="{w:.1}" height="28" fill="{fill}"/>"#,
                y + 4.0
            )
            .unwrap();
            writeln!(
                s,
                r#"<text x="{:.1}" y="{}">{:.0}/s ({:.2}x native)</text>"#,
                bar_x + w + 8.0,
                y + 22.0,
                r.events_per_second,
                r.ratio
            )
            .unwrap();
        }
        writeln!(
            s,
            r##"<text x="20" y="{}" font-size="12" fill="#555">cargo bench --bench pipeline; 2 cores shared with the broker, feeder and observer</text>"##,
            height - 14.0
        )
        .unwrap();
        s.push_str("</svg>\n");
        s
    }
}
