//! The reliability chaos run (issues 8 and 17): fanout as real child processes, fed
//! EventRouter envelopes while everything around it fails, then every source offset
//! reconciled.
//!
//! In one run ([`run`]):
//!
//! - a Kafka cluster of 3 brokers ([`cluster`]) with the source topic (8 partitions), the
//!   dead-letter topic and one `ok.<namespace>` topic per namespace: librdkafka's mock cluster
//!   in a process of its own (`fanout mock-broker --control stdin`, [`broker`]), or a real
//!   Apache Kafka cluster of 3 nodes (`kafka-cluster`: KRaft, replication 3,
//!   `min.insync.replicas=2`, auto-create off, as the integration tests');
//! - N generated envelopes are fed, about 1% made to trap the `hostile` plugin and about 0.5%
//!   malformed in five ways ([`workload`], [`feeder`]);
//! - fanout routes them with the hostile plugin from a ConfigMap-style directory ([`plugins`]),
//!   while the driver ([`faults`]) SIGKILLs and restarts it 5 times, runs a second replica for
//!   part of the run (rebalances under load) and swaps the plugins (20 times in the mock's CI
//!   setting, 8 in the real cluster's, 100 in full), a quarter of them broken revisions that
//!   must be refused. On the mock it also takes brokers down and up 5 times and injects
//!   Produce and offset-commit request errors; on the real cluster, which has no control
//!   channel for either (the report says so), it SIGKILLs the node leading the busiest source
//!   or destination partition 3 times, spaced through the run, and restarts it, the run going
//!   on while the node comes back and the cluster is ready again;
//! - every record of every topic, the source included, is read as it is written ([`observer`])
//!   and booked against its source event ([`reconcile`]); after the drain every partition is
//!   read to its high watermark, lost and wrong-outcome events must be 0, and duplicates are
//!   reported with their likely cause ([`attribution`], [`report`]).
//!
//! Delivery: at least once, duplicates are counted, not failed. Exactly once
//! (`FANOUT_CHAOS_DELIVERY=exactly-once`, real cluster only), fanout runs with Kafka
//! transactions, each replica with a transactional id of its own that its restarts reuse
//! (`chaos-a`, `chaos-b`), the reader reads `read_committed`, and one duplicate fails the run;
//! the report adds the transactions the replicas committed and aborted (their `/metrics`). On
//! the mock it stops at once and says why ([`settings::Delivery::unsupported_by_the_mock`]).
//!
//! The mock cluster has limits a real one does not, which the run works around there, each
//! documented where it is: it keeps 5 MiB per partition ([`feeder`] paces the source, the
//! reader keeps up), does not check an idempotent producer's sequence numbers
//! ([`replica::ONE_REQUEST_IN_FLIGHT`]), and its group coordinator can crash on membership
//! churn ([`faults`] spaces membership changes; should it crash anyway, the attempt says so and
//! the run is tried once more with a new seed, which the report records).
//!
//! Settings ([`settings`]). By default (`cargo test --workspace` in CI) two runs: the mock at
//! least once (50,000 events at 400 a second, 20 swaps; about 2.5 minutes in a debug build on
//! 2 cores), then the real cluster at least once (20,000 events at 400 a second, 8 swaps; about
//! 3 minutes, the cluster's start included). `FANOUT_CHAOS=full` (`make chaos`): 1,000,000
//! events and 100 swaps each, and a third run, the real cluster exactly once, meant for `cargo
//! test --release -p fanout --test chaos`. Exactly once is not in CI yet: with librdkafka 2.12
//! a SIGKILLed group coordinator can leave `send_offsets_to_transaction` hanging past its
//! timeout; fanout's watchdog then exits (`fanout::pipeline::watchdog`), which the run counts
//! as a failure. `FANOUT_CHAOS_KAFKA` (`mock`, `apache`) and `FANOUT_CHAOS_DELIVERY` pick one
//! run instead. `FANOUT_CHAOS_SEED` replays a run's plan (the seed is printed). One
//! run writes its report to `target/chaos/report.{json,md}` and fanout's logs to
//! `target/chaos/logs/`; several runs each write to `target/chaos/<cluster>-<delivery>/`.
//!
//! It is a `harness = false` test: one long scenario, not many small tests, with its own
//! output. It still behaves as `cargo test` expects: a name filter that does not match
//! `chaos` skips it, and `--list` lists it.

#[path = "../integration/atomic_writer.rs"]
mod atomic_writer;
mod attribution;
mod broker;
mod cluster;
mod faults;
mod feeder;
mod group;
mod observer;
mod plugins;
mod reconcile;
mod replica;
mod report;
mod rng;
mod settings;
#[path = "../integration/support.rs"]
#[allow(dead_code)]
mod support;
#[path = "../integration/watermarks.rs"]
#[allow(dead_code)]
mod watermarks;
mod workload;

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};

use cluster::Cluster;
use faults::Chaos;
use feeder::Feeder;
use group::GroupMonitor;
use observer::Observer;
use plugins::PluginVolume;
use replica::{Launch, ReloadLog};
use report::{Report, thousands};
use rng::Rng;
use settings::{Kafka, Settings};
use workload::{
    DEAD_LETTER_PARTITIONS, DEAD_LETTER_TOPIC, DESTINATION_PARTITIONS, Plan, SOURCE_PARTITIONS,
    SOURCE_TOPIC,
};

/// The run fails if the group commits nothing for this long.
const STALL: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    if !selected() {
        return ExitCode::SUCCESS;
    }
    let runs = match Settings::runs_from_env() {
        Ok(runs) => runs,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::FAILURE;
        }
    };
    let root = support::root().join("target/chaos");
    let mut failed = Vec::new();
    for settings in &runs {
        // One run keeps target/chaos/ to itself; several each have a directory of their own.
        let out = if runs.len() == 1 {
            root.clone()
        } else {
            root.join(settings.label())
        };
        let started = Instant::now();
        let passed = run_and_report(settings.clone(), &out);
        println!(
            "chaos: the {} run {} in {:.1} s\n",
            settings.label(),
            if passed { "passed" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        if !passed {
            failed.push(settings.label());
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("chaos: failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

/// One run, tried once more should the mock crash, with its report printed and written to
/// `out`; whether it passed.
fn run_and_report(mut settings: Settings, out: &std::path::Path) -> bool {
    let mut crashes = Vec::new();
    let outcome = loop {
        match run(&settings, out) {
            // The mock's coordinator can crash on membership churn (`faults` makes that rare);
            // that says nothing about fanout, so the run is tried once more, with a new seed,
            // and the report says so.
            Err(e) if e.is::<broker::MockCrashed>() && crashes.is_empty() => {
                let kept = out.join("logs-mock-crash");
                let _ = std::fs::remove_dir_all(&kept);
                let _ = std::fs::rename(out.join("logs"), &kept);
                crashes.push(format!(
                    "{e:#} (seed {}; logs in {})",
                    settings.seed,
                    kept.display()
                ));
                settings.seed = rng::fresh_seed();
                eprintln!(
                    "chaos: {e:#}\nchaos: librdkafka's mock cluster crashed, not fanout; \
                     running once more with seed {}",
                    settings.seed
                );
            }
            outcome => break outcome,
        }
    };
    match outcome.map(|report| Report {
        mock_crashes: crashes,
        ..report
    }) {
        Ok(report) => {
            println!("\n{}", report.table());
            if let Err(e) = report.write(out) {
                eprintln!("chaos: writing the report: {e:#}");
                return false;
            }
            println!(
                "wrote {0}/report.json and {0}/report.md; fanout's logs are in {0}/logs",
                out.display()
            );
            report.passed
        }
        Err(e) => {
            eprintln!(
                "chaos: the run could not be completed: {e:#}\n(seed {}; logs in {}/logs)",
                settings.seed,
                out.display()
            );
            false
        }
    }
}

/// Whether `cargo test`'s arguments select this test: no name filter, or one that `chaos`
/// matches, and no `--skip` that does; `--list` lists it instead.
fn selected() -> bool {
    let mut args = std::env::args().skip(1);
    let (mut filters, mut skips, mut exact) = (Vec::new(), Vec::new(), false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => {
                println!("chaos: test");
                return false;
            }
            "--ignored" => return false, // it is not an ignored test
            "--exact" => exact = true,
            "--skip" => skips.extend(args.next()),
            "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" | "--shuffle-seed" => {
                args.next();
            }
            flag if flag.starts_with('-') => {
                if let Some(skip) = flag.strip_prefix("--skip=") {
                    skips.push(skip.to_owned());
                }
            }
            filter => filters.push(filter.to_owned()),
        }
    }
    let matches = |pattern: &String| {
        if exact {
            pattern == "chaos"
        } else {
            "chaos".contains(pattern.as_str())
        }
    };
    (filters.is_empty() || filters.iter().any(matches)) && !skips.iter().any(matches)
}

/// One whole run: set up, feed under faults, drain, stop, read back, reconcile.
fn run(settings: &Settings, out: &std::path::Path) -> anyhow::Result<Report> {
    if settings.kafka == Kafka::Mock
        && let Some(why) = settings.delivery.unsupported_by_the_mock()
    {
        bail!("{why}");
    }
    let logs = out.join("logs");
    let volume_dir = out.join("plugins");
    for dir in [&logs, &volume_dir] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir)?;
    }
    println!(
        "chaos: {} setting on the {} cluster, seed {} (FANOUT_CHAOS_SEED={} replays the plan), \
         {} delivery, {} events",
        settings.name,
        settings.kafka.name(),
        settings.seed,
        settings.seed,
        settings.delivery.name(),
        thousands(settings.events)
    );
    support::plugin_dir(); // builds the hostile and wrong-world plugins
    let plan = Arc::new(Plan::build(settings));
    let mut rng = Rng::new(settings.seed);
    let planned = faults::plan(settings, &mut rng);

    // Every topic of the run; the reader reads them all, the source included.
    let topics: Vec<(String, i32)> = [
        (SOURCE_TOPIC.to_owned(), SOURCE_PARTITIONS),
        (DEAD_LETTER_TOPIC.to_owned(), DEAD_LETTER_PARTITIONS),
    ]
    .into_iter()
    .chain(
        plan.topics
            .iter()
            .map(|t| (t.clone(), DESTINATION_PARTITIONS)),
    )
    .collect();
    let cluster = Cluster::start(settings.kafka, &topics, &logs)?;
    let bootstrap = cluster.bootstrap();
    let cluster_name = cluster.describe();
    println!("{cluster_name}: {bootstrap}");
    let (volume, first) = PluginVolume::create(&volume_dir)?;

    let clock = Instant::now();
    let clock_zero = time_of_day_utc(std::time::SystemTime::now());
    println!("the run's clock starts at {clock_zero} UTC (fanout logs in UTC)");
    let monitor = GroupMonitor::start(&bootstrap)?;
    let observer = Observer::start(
        &bootstrap,
        &topics,
        plan.clone(),
        (settings.kafka, settings.delivery),
        clock,
    )?;
    let launch = Launch {
        bootstrap: bootstrap.clone(),
        plugins: volume_dir,
        delivery: settings.delivery,
        kafka: settings.kafka,
        dir: logs.clone(),
    };
    let mut chaos = Chaos::start(cluster, topics.clone(), launch, volume, first, rng, clock)?;
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = Feeder::start(
        settings,
        &bootstrap,
        monitor.committed.clone(),
        stop.clone(),
    )?;
    let progress = feeder.progress.clone();
    let events = plan.events() as u64;
    // The run's clock: the share of events with a record read back, in percent.
    let done = || 100.0 * observer.events.load(Ordering::Relaxed) as f64 / events as f64;

    // Feed, with faults as fanout's progress reaches them.
    let mut pending = planned.iter().peekable();
    let mut watch = Watch::new(settings.deadline);
    loop {
        let committed = monitor.committed.total();
        chaos.tick(done())?;
        while let Some(next) = pending.peek()
            && next.at * 100.0 <= done()
            && chaos.can_run(&next.fault)
        {
            chaos.run(&next.fault, done())?;
            pending.next();
        }
        watch.check(committed, &chaos, &observer, &progress)?;
        if pending.peek().is_none() && feeder.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    feeder.join()?;
    let failures_to_deliver = crate::lock(&progress.failures).clone();
    chaos.calm(done())?;

    // Drain: the group has committed every record of the source (which may hold an event
    // twice: see `reconcile`).
    println!("all events fed and every fault done; draining");
    let source_ends = cluster::high_watermarks(&bootstrap, &topics[..1])?;
    loop {
        let committed = monitor.committed.total();
        chaos.tick(done())?;
        let drained = source_ends
            .iter()
            .all(|((_, p), end)| monitor.committed.of(*p as usize) as i64 >= *end);
        if drained {
            break;
        }
        watch.check(committed, &chaos, &observer, &progress)?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let feed_and_drain = clock.elapsed();
    println!("drained; stopping the replicas");
    chaos.stop_replicas()?;

    let ends = cluster::high_watermarks(&bootstrap, &topics)?;
    let ledger = observer.finish(ends)?;
    let mut failures = unexpected_topics(&bootstrap, &topics)?;
    failures.extend(failures_to_deliver);
    let delivered: Vec<i64> = progress
        .offsets
        .iter()
        .map(|o| o.load(Ordering::Relaxed))
        .collect();
    let outcome = ledger.reconcile(&chaos.records, &chaos.good_versions, &delivered);
    if outcome.not_in_source > 0 {
        failures.push(format!(
            "{} events were never found in the source topic, so could not be checked",
            outcome.not_in_source
        ));
    }
    let reload_log = ReloadLog::read(&logs);
    let regressions = monitor.committed.regressions.load(Ordering::Relaxed);
    drop(monitor);
    let faults = chaos.counts.clone();
    let fault_log = chaos.records.clone();
    let transactions = chaos.transactions();
    let problems = std::mem::take(&mut chaos.problems);
    chaos.into_cluster().stop()?;

    if outcome.lost > 0 {
        failures.push(format!("{} events lost", outcome.lost));
    }
    if outcome.wrong_records > 0 {
        failures.push(format!(
            "{} records with the wrong outcome ({} events)",
            outcome.wrong_records, outcome.wrong_outcome_events
        ));
    }
    if !outcome.unread.is_empty() {
        failures.push(format!(
            "the run could not check everything: {}",
            outcome.unread.join("; ")
        ));
    }
    if outcome.duplicates > 0 && !settings.delivery.allows_duplicates() {
        failures.push(format!(
            "{} duplicate copies under exactly-once",
            outcome.duplicates
        ));
    }
    failures.extend(problems);
    failures.extend(
        reload_log
            .panics
            .iter()
            .map(|p| format!("a fanout thread panicked: {p}")),
    );
    Ok(Report {
        setting: settings.name,
        cluster: cluster_name,
        not_done: not_done(settings.kafka),
        seed: settings.seed,
        delivery: settings.delivery.name(),
        events,
        elapsed_s: clock.elapsed().as_secs_f64(),
        feed_and_drain_s: feed_and_drain.as_secs_f64(),
        passed: failures.is_empty(),
        failures,
        workload: plan
            .kinds
            .iter()
            .map(|(kind, n)| (kind.label().to_owned(), *n))
            .collect(),
        faults,
        outcome,
        transactions,
        reload_log,
        committed_offset_regressions: regressions,
        mock_crashes: Vec::new(),
        clock_zero_utc: clock_zero,
        fault_log,
    })
}

/// Progress lines every few seconds, and the run's limits: no commit for [`STALL`], or the
/// whole run over its deadline, ends it with a diagnosis.
struct Watch {
    started: Instant,
    deadline: Duration,
    last_progress: (Instant, u64),
    last_print: Instant,
}

impl Watch {
    fn new(deadline: Duration) -> Self {
        Self {
            started: Instant::now(),
            deadline,
            last_progress: (Instant::now(), 0),
            last_print: Instant::now(),
        }
    }

    fn check(
        &mut self,
        committed: u64,
        chaos: &Chaos,
        observer: &Observer,
        feed: &feeder::FeedProgress,
    ) -> anyhow::Result<()> {
        if committed > self.last_progress.1 {
            self.last_progress = (Instant::now(), committed);
        }
        if self.last_print.elapsed() >= Duration::from_secs(5) {
            self.last_print = Instant::now();
            println!(
                "[{:>6.1}s] fed {:>9}  committed {:>9}  came out {:>9}  records read {:>9}",
                self.started.elapsed().as_secs_f64(),
                feed.sent.load(Ordering::Relaxed),
                committed,
                observer.events.load(Ordering::Relaxed),
                observer.records.load(Ordering::Relaxed)
            );
        }
        if self.last_progress.0.elapsed() > STALL {
            bail!(
                "the group committed nothing for {STALL:?} (at {committed}); replicas:\n{}",
                chaos.diagnosis()
            );
        }
        if self.started.elapsed() > self.deadline {
            bail!(
                "the run took longer than {:?}; replicas:\n{}",
                self.deadline,
                chaos.diagnosis()
            );
        }
        Ok(())
    }
}

/// The faults of the run's form that `kafka` can't have.
fn not_done(kafka: Kafka) -> Vec<String> {
    match kafka {
        Kafka::Mock => Vec::new(),
        Kafka::Apache => vec![
            "brokers taken down and up through the mock's control channel (partition leaders \
             SIGKILLed and restarted instead)"
                .to_owned(),
            "Produce and offset-commit request errors injected through the mock's control \
             channel (a real broker has none)"
                .to_owned(),
        ],
    }
}

/// Records in topics fanout was never meant to write (a plugin leaking out of its sandbox would
/// write `leak.*`).
fn unexpected_topics(bootstrap: &str, known: &[(String, i32)]) -> anyhow::Result<Vec<String>> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let known: HashSet<&str> = known.iter().map(|(t, _)| t.as_str()).collect();
    let metadata = client.fetch_metadata(None, Duration::from_secs(10))?;
    let mut problems = Vec::new();
    for topic in metadata.topics() {
        if known.contains(topic.name()) || topic.name().starts_with("__") {
            continue;
        }
        let mut records = 0;
        for p in topic.partitions() {
            let (low, high) =
                client.fetch_watermarks(topic.name(), p.id(), Duration::from_secs(10))?;
            records += high - low;
        }
        if records > 0 {
            problems.push(format!(
                "{records} records in topic {}, which nothing should write",
                topic.name()
            ));
        }
    }
    Ok(problems)
}

/// `hh:mm:ss.mmm` in UTC, to find a moment of the run in fanout's logs.
fn time_of_day_utc(time: std::time::SystemTime) -> String {
    let ms = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Locks a mutex even if a thread panicked while holding it: the data is counters and lists.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
