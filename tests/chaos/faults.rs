//! The faults: planned up front from the seed, spread over the run by fanout's progress (the
//! share of events read back), and carried out one at a time by [`Chaos`], which owns the
//! replicas, the plugin directory and the cluster ([`Cluster`]: the mock's control channel, or
//! the real cluster's nodes), and records what it did and when.
//!
//! On the mock, brokers go down and up and request errors are injected; on the real cluster,
//! which has no control channel, the node leading the busiest source or destination partition
//! is SIGKILLed and restarted instead. Kills of fanout, the second replica and plugin swaps are
//! the same on both.
//!
//! One at a time, and a broken plugin revision is always followed by a good one within the
//! same step: a replica restarted while a broken revision is mounted would (rightly) wait,
//! unready, for a good one, which is documented behaviour and not what this run is about.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::broker::BROKERS;
use crate::cluster::Cluster;
use crate::plugins::{PluginVolume, Revision, Written};
use crate::replica::{Launch, Replica, Slot};
use crate::rng::Rng;
use crate::settings::{Delivery, Settings};
use crate::workload::SOURCE_TOPIC;

/// Errors injected into fanout's (and the feeder's) produce requests: all retriable.
const PRODUCE_ERRORS: &[&str] = &[
    "NOT_LEADER_FOR_PARTITION",
    "LEADER_NOT_AVAILABLE",
    "REQUEST_TIMED_OUT",
    "NOT_ENOUGH_REPLICAS",
    "_TRANSPORT",
];
/// Errors injected into offset commits. REBALANCE_IN_PROGRESS also makes the member rejoin.
const COMMIT_ERRORS: &[&str] = &[
    "COORDINATOR_NOT_AVAILABLE",
    "NOT_COORDINATOR",
    "REQUEST_TIMED_OUT",
    "COORDINATOR_LOAD_IN_PROGRESS",
    "REBALANCE_IN_PROGRESS",
];
/// How long a replica may take to show a plugin change in `/status`.
const SWAP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a replica may take to exit after SIGTERM (its drain is bounded by 30 s).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
/// Faults are at least this far apart, so each has its own effect (and its own duplicates).
const SPACING: Duration = Duration::from_millis(250);
/// A replica is only killed once it has run this long: killing one that has not even joined
/// its group yet tests little.
const MIN_UPTIME_BEFORE_KILL: Duration = Duration::from_secs(5);
/// Changes to the group's membership (kill, start, stop) are at least this far apart, and
/// none happens while a replica drains after SIGTERM. Besides letting each rebalance show its
/// own effect, this keeps clear of a crash of librdkafka's mock coordinator
/// (`rd_kafka_mock_cgrp_classic_member_add`/`_sync_set`: ``Assertion `!member->resp'
/// failed``), seen when members come and go while others rejoin: the mock names members by
/// their memory address, so a new member can take the id of one that just expired.
const MEMBERSHIP_SPACING: Duration = Duration::from_secs(8);
/// Broker outages stay well below the session timeout, so no live member's session expires
/// while its coordinator is away (which, with the above, also crashed the mock). A killed
/// real node stays down as long before it is restarted.
const OUTAGE_MS: std::ops::RangeInclusive<u64> = 1_000..=4_000;
/// How often the replicas' transaction counters are read from `/metrics` (exactly-once).
const METRICS_EVERY: Duration = Duration::from_secs(2);

/// One planned fault.
#[derive(Debug, Clone)]
pub enum Fault {
    /// SIGKILL a running replica and start it again at once.
    Kill,
    /// Start the second replica, in the same group.
    ReplicaStart,
    /// Stop the second replica with SIGTERM.
    ReplicaStop,
    BrokerOutage {
        broker: i32,
        down_for: Duration,
    },
    RequestErrors {
        api: &'static str,
        count: u32,
        error: &'static str,
    },
    /// Real cluster: SIGKILL the node leading the busiest partition of `of`, and restart it
    /// after `down_for`.
    LeaderKill {
        of: Partitions,
        down_for: Duration,
    },
    GoodSwap,
    /// A broken revision, then a good one.
    BrokenSwap(Revision),
}

/// Which partitions a leader kill picks the busiest of.
#[derive(Debug, Clone, Copy)]
pub enum Partitions {
    Source,
    Destinations,
}

/// A fault and when it is due: once this share of the events has come out of fanout.
#[derive(Debug, Clone)]
pub struct Planned {
    pub at: f64,
    pub fault: Fault,
}

/// Spreads the faults of `settings` over the run.
pub fn plan(settings: &Settings, rng: &mut Rng) -> Vec<Planned> {
    let mut plan = Vec::new();
    let mut add = |at: f64, fault: Fault| plan.push(Planned { at, fault });
    for _ in 0..settings.kills {
        add(rng.fraction(0.05, 0.90), Fault::Kill);
    }
    // Two replicas for a good part of the middle of the run.
    add(rng.fraction(0.15, 0.35), Fault::ReplicaStart);
    add(rng.fraction(0.55, 0.75), Fault::ReplicaStop);
    for _ in 0..settings.broker_outages {
        let fault = Fault::BrokerOutage {
            broker: rng.between(1..=BROKERS as u64) as i32,
            down_for: Duration::from_millis(rng.between(OUTAGE_MS)),
        };
        add(rng.fraction(0.05, 0.90), fault);
    }
    // Spaced through the run: the i-th in the i-th of as many stretches of 5%..90%; they take
    // turns at the source's partitions and the destinations'.
    let stretch = 0.85 / f64::from(settings.leader_kills.max(1));
    for i in 0..settings.leader_kills {
        let from = 0.05 + stretch * f64::from(i);
        let fault = Fault::LeaderKill {
            of: if i % 2 == 0 {
                Partitions::Source
            } else {
                Partitions::Destinations
            },
            down_for: Duration::from_millis(rng.between(OUTAGE_MS)),
        };
        add(rng.fraction(from, from + stretch), fault);
    }
    for _ in 0..settings.produce_error_bursts {
        let fault = Fault::RequestErrors {
            api: "Produce",
            count: rng.between(3..=12) as u32,
            error: rng.pick(PRODUCE_ERRORS),
        };
        add(rng.fraction(0.05, 0.90), fault);
    }
    for _ in 0..settings.commit_error_bursts {
        let fault = Fault::RequestErrors {
            api: settings.delivery.commit_api(),
            count: rng.between(2..=6) as u32,
            error: rng.pick(COMMIT_ERRORS),
        };
        add(rng.fraction(0.05, 0.90), fault);
    }
    // A quarter of the swaps are broken revisions, each followed by a good one.
    let broken = settings.swaps / 4;
    for i in 0..broken {
        let revision = Revision::BROKEN[i as usize % Revision::BROKEN.len()];
        add(rng.fraction(0.03, 0.92), Fault::BrokenSwap(revision));
    }
    for _ in 0..settings.swaps - 2 * broken {
        add(rng.fraction(0.03, 0.92), Fault::GoodSwap);
    }
    plan.sort_by(|a, b| a.at.total_cmp(&b.at));
    plan
}

/// What a fault record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    Kill,
    ReplicaStart,
    ReplicaStop,
    BrokerDown,
    BrokerUp,
    LeaderKill,
    NodeRestart,
    ProduceErrors,
    CommitErrors,
    GoodSwap,
    BrokenSwap,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::ReplicaStart => "replica start",
            FaultKind::ReplicaStop => "replica stop",
            FaultKind::BrokerDown => "broker down",
            FaultKind::BrokerUp => "broker up",
            FaultKind::LeaderKill => "leader kill",
            FaultKind::NodeRestart => "node restart",
            FaultKind::ProduceErrors => "produce errors",
            FaultKind::CommitErrors => "commit errors",
            FaultKind::GoodSwap => "plugin swap",
            FaultKind::BrokenSwap => "broken plugin swap",
        }
    }
}

/// One thing the driver did to the system.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub number: usize,
    pub kind: FaultKind,
    /// When it started, in ms since the run started.
    pub at_ms: u64,
    /// The share of events that had come out of fanout by then, in percent.
    pub progress: f64,
    pub detail: String,
    /// Whether it had the effect it should (a swap applied or refused, a clean exit).
    pub ok: bool,
}

impl FaultRecord {
    /// How the report names this fault.
    pub fn title(&self) -> String {
        format!(
            "#{} {} at {:.1} s ({:.0}%): {}",
            self.number,
            self.kind.name(),
            self.at_ms as f64 / 1e3,
            self.progress,
            self.detail
        )
    }
}

/// How many faults of each kind were carried out.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FaultCounts {
    pub kills: u32,
    pub replica_starts: u32,
    pub replica_stops: u32,
    pub broker_downs: u32,
    pub broker_ups: u32,
    /// Real cluster: partition leaders SIGKILLed, and those nodes restarted (cluster ready).
    pub leader_kills: u32,
    pub node_restarts: u32,
    pub produce_error_bursts: u32,
    pub produce_errors_injected: u32,
    pub commit_error_bursts: u32,
    pub commit_errors_injected: u32,
    pub swaps_good: u32,
    pub swaps_good_applied: u32,
    pub swaps_broken: u32,
    pub swaps_broken_refused: u32,
    /// Replicas that exited without being told to.
    pub unexpected_exits: u32,
}

/// What is down: a mock broker, or a real node.
#[derive(Debug, Clone, Copy)]
enum Outage {
    Broker(i32),
    Node(i32),
}

/// One replica process's transaction counters, as last read from its `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
struct TransactionCounts {
    committed: f64,
    aborted: f64,
}

/// Transactions of every replica process of the run, summed (exactly-once).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Transactions {
    /// `fanout_transactions_committed_total`, summed over every process.
    pub committed: u64,
    /// `fanout_transactions_aborted_total`, summed over every process: aborts fanout did
    /// itself. A SIGKILLed process's open transaction is aborted by the broker when its
    /// successor (same transactional id) starts, and counts in no metric; nor do aborts in a
    /// process's last moments after its last scrape.
    pub aborted: u64,
    /// Processes whose counters were read at least once.
    pub processes: usize,
}

/// The system under test and the faults done to it.
pub struct Chaos {
    cluster: Cluster,
    /// The run's topics (name, partitions): where leader kills look for the busiest partition.
    topics: Vec<(String, i32)>,
    launch: Launch,
    replicas: BTreeMap<Slot, Replica>,
    incarnations: BTreeMap<Slot, u32>,
    volume: PluginVolume,
    /// Every version a good revision had: the only ones records may carry.
    pub good_versions: HashSet<String>,
    rng: Rng,
    clock: Instant,
    /// What is down, and when it comes back.
    outage: Option<(Outage, Instant)>,
    /// Exactly-once: each replica process's counters, by slot and incarnation.
    transactions: BTreeMap<(Slot, u32), TransactionCounts>,
    last_metrics: Instant,
    /// The second replica while it drains after SIGTERM, with the index of its fault record.
    stopping: Option<(Replica, Instant, usize)>,
    last_fault: Instant,
    last_membership_change: Instant,
    pub records: Vec<FaultRecord>,
    pub counts: FaultCounts,
    /// What went wrong with the system (not with the driver): failed swaps, crashes, unclean
    /// shutdowns. Each fails the run.
    pub problems: Vec<String>,
}

impl Chaos {
    /// Starts replica `a` with the volume's first revision in place.
    pub fn start(
        cluster: Cluster,
        topics: Vec<(String, i32)>,
        launch: Launch,
        volume: PluginVolume,
        first: Written,
        rng: Rng,
        clock: Instant,
    ) -> anyhow::Result<Self> {
        let mut chaos = Self {
            cluster,
            topics,
            launch,
            replicas: BTreeMap::new(),
            incarnations: BTreeMap::new(),
            volume,
            good_versions: first.version.into_iter().collect(),
            rng,
            clock,
            outage: None,
            transactions: BTreeMap::new(),
            last_metrics: Instant::now(),
            stopping: None,
            last_fault: Instant::now(),
            last_membership_change: Instant::now(),
            records: Vec::new(),
            counts: FaultCounts::default(),
            problems: Vec::new(),
        };
        chaos.start_replica(Slot::A)?;
        Ok(chaos)
    }

    fn start_replica(&mut self, slot: Slot) -> anyhow::Result<String> {
        self.last_membership_change = Instant::now();
        let incarnation = self.incarnations.entry(slot).or_insert(0);
        *incarnation += 1;
        let replica = Replica::start(&self.launch, slot, *incarnation)?;
        let label = replica.label();
        self.replicas.insert(slot, replica);
        Ok(label)
    }

    /// Whether `fault` can be carried out now: a little after the last one, one broker outage
    /// at a time, membership changes well apart, and only kills of replicas that have been up
    /// for a while.
    pub fn can_run(&self, fault: &Fault) -> bool {
        let membership_settled =
            self.stopping.is_none() && self.last_membership_change.elapsed() >= MEMBERSHIP_SPACING;
        self.last_fault.elapsed() >= SPACING
            && match fault {
                Fault::BrokerOutage { .. } | Fault::LeaderKill { .. } => self.outage.is_none(),
                Fault::Kill => membership_settled && !self.killable().is_empty(),
                Fault::ReplicaStart | Fault::ReplicaStop => membership_settled,
                _ => true,
            }
    }

    fn killable(&self) -> Vec<Slot> {
        self.replicas
            .iter()
            .filter(|(_, r)| r.uptime() >= MIN_UPTIME_BEFORE_KILL)
            .map(|(slot, _)| *slot)
            .collect()
    }

    /// Carries out one fault; `progress` is the share of events that have come out, in percent.
    pub fn run(&mut self, fault: &Fault, progress: f64) -> anyhow::Result<()> {
        let at_ms = self.clock.elapsed().as_millis() as u64;
        let (kind, detail, ok) = match fault {
            Fault::Kill => {
                let slot = self.rng.pick(&self.killable());
                let mut victim = self.replicas.remove(&slot).expect("running");
                self.read_transactions(&mut victim);
                let label = victim.label();
                victim.kill()?;
                let restarted = self.start_replica(slot)?;
                self.counts.kills += 1;
                (
                    FaultKind::Kill,
                    format!("SIGKILL {label}; restarted as {restarted}"),
                    true,
                )
            }
            Fault::ReplicaStart => {
                let label = self.start_replica(Slot::B)?;
                self.counts.replica_starts += 1;
                (FaultKind::ReplicaStart, format!("started {label}"), true)
            }
            Fault::ReplicaStop => {
                // The run goes on while it drains; `tick` sees it exit.
                let mut replica = self.replicas.remove(&Slot::B).context("no replica b")?;
                self.read_transactions(&mut replica);
                replica.send_term()?;
                self.last_membership_change = Instant::now();
                let detail = format!("SIGTERM {}", replica.label());
                self.stopping = Some((replica, Instant::now(), self.records.len()));
                self.counts.replica_stops += 1;
                (FaultKind::ReplicaStop, detail, true)
            }
            Fault::BrokerOutage { broker, down_for } => {
                self.cluster
                    .mock()?
                    .command(&format!("broker-down {broker}"))?;
                self.outage = Some((Outage::Broker(*broker), Instant::now() + *down_for));
                self.counts.broker_downs += 1;
                (
                    FaultKind::BrokerDown,
                    format!("broker {broker} down for {:.1} s", down_for.as_secs_f64()),
                    true,
                )
            }
            Fault::RequestErrors { api, count, error } => {
                self.cluster
                    .mock()?
                    .command(&format!("request-errors {api} {count} {error}"))?;
                let kind = if *api == "Produce" {
                    self.counts.produce_error_bursts += 1;
                    self.counts.produce_errors_injected += count;
                    FaultKind::ProduceErrors
                } else {
                    self.counts.commit_error_bursts += 1;
                    self.counts.commit_errors_injected += count;
                    FaultKind::CommitErrors
                };
                (
                    kind,
                    format!("next {count} {api} requests fail with {error}"),
                    true,
                )
            }
            Fault::LeaderKill { of, down_for } => {
                let topics: Vec<(String, i32)> = self
                    .topics
                    .iter()
                    .filter(|(topic, _)| match of {
                        Partitions::Source => topic == SOURCE_TOPIC,
                        Partitions::Destinations => topic.starts_with("ok."),
                    })
                    .cloned()
                    .collect();
                let (node, led) = self.cluster.kill_busiest_leader(&topics)?;
                self.outage = Some((Outage::Node(node), Instant::now() + *down_for));
                self.counts.leader_kills += 1;
                (
                    FaultKind::LeaderKill,
                    format!(
                        "SIGKILL Kafka node {node}, leader of the busiest {} partition ({led}); \
                         restart in {:.1} s",
                        match of {
                            Partitions::Source => "source",
                            Partitions::Destinations => "destination",
                        },
                        down_for.as_secs_f64()
                    ),
                    true,
                )
            }
            Fault::GoodSwap => {
                let (detail, ok) = self.swap(Revision::Good)?;
                (FaultKind::GoodSwap, detail, ok)
            }
            Fault::BrokenSwap(revision) => {
                let (broken, refused) = self.swap(*revision)?;
                self.record(FaultKind::BrokenSwap, at_ms, progress, broken, refused);
                let at_ms = self.clock.elapsed().as_millis() as u64;
                let (detail, ok) = self.swap(Revision::Good)?;
                self.record(FaultKind::GoodSwap, at_ms, progress, detail, ok);
                return Ok(());
            }
        };
        self.record(kind, at_ms, progress, detail, ok);
        Ok(())
    }

    fn record(&mut self, kind: FaultKind, at_ms: u64, progress: f64, detail: String, ok: bool) {
        self.last_fault = Instant::now();
        let number = self.records.len() + 1;
        let record = FaultRecord {
            number,
            kind,
            at_ms,
            progress,
            detail,
            ok,
        };
        println!("  [{:>6.1}s] {}", at_ms as f64 / 1e3, record.title());
        self.records.push(record);
    }

    /// Writes a revision and waits until every running replica shows its effect in `/status`:
    /// a good one in service, a broken one refused (naming its directory) while the last good
    /// one keeps serving.
    fn swap(&mut self, revision: Revision) -> anyhow::Result<(String, bool)> {
        let mut problems = Vec::new();
        let mut failures_before = BTreeMap::new();
        for (slot, replica) in &mut self.replicas {
            match wait_for_plugins(replica) {
                Ok(plugins) => {
                    let failures = plugins["counts"]["failures"].as_u64().unwrap_or(0);
                    failures_before.insert(*slot, failures);
                }
                Err(e) => problems.push(format!("{}: {e:#}", replica.label())),
            }
        }
        let written = self.volume.write(revision)?;
        let started = Instant::now();
        for (slot, replica) in &mut self.replicas {
            let Some(&failures) = failures_before.get(slot) else {
                continue;
            };
            if let Err(e) = verify(replica, &written, failures) {
                problems.push(format!("{}: {e:#}", replica.label()));
            }
        }
        let took = started.elapsed().as_secs_f64() * 1e3;
        let ok = problems.is_empty();
        let detail = match &written.version {
            Some(version) => {
                self.good_versions.insert(version.clone());
                self.counts.swaps_good += 1;
                self.counts.swaps_good_applied += u32::from(ok);
                format!(
                    "{} -> version {version}, in service on {} replica(s) within {took:.0} ms",
                    written.dir,
                    self.replicas.len()
                )
            }
            None => {
                self.counts.swaps_broken += 1;
                self.counts.swaps_broken_refused += u32::from(ok);
                format!(
                    "{} ({}), refused by {} replica(s) within {took:.0} ms",
                    written.dir,
                    revision.label(),
                    self.replicas.len()
                )
            }
        };
        if !ok {
            self.problems
                .push(format!("swap {detail}: {}", problems.join("; ")));
        }
        Ok((detail, ok))
    }

    /// Brings a broker or node back when its outage is over, reads the replicas'
    /// transaction counters now and then, and notices replicas that exited by themselves (each
    /// is a problem; it is restarted so the run can go on).
    pub fn tick(&mut self, progress: f64) -> anyhow::Result<()> {
        let down = match self.outage {
            Some((Outage::Node(id), _)) => Some(id),
            _ => None,
        };
        if let Some(failure) = self.cluster.failed(down) {
            // Not fanout's doing, and nothing can be checked without the cluster's data.
            return Err(failure);
        }
        if let Some((outage, until)) = self.outage
            && Instant::now() >= until
        {
            self.end_outage(outage, progress, false)?;
        }
        if self.last_metrics.elapsed() >= METRICS_EVERY {
            self.last_metrics = Instant::now();
            let mut replicas = std::mem::take(&mut self.replicas);
            for replica in replicas.values_mut() {
                self.read_transactions(replica);
            }
            self.replicas = replicas;
        }
        self.check_stopping(false)?;
        let exited: Vec<(Slot, String)> = self
            .replicas
            .iter_mut()
            .filter_map(|(slot, r)| {
                r.exited()
                    .map(|status| (*slot, format!("{} exited by itself ({status})", r.label())))
            })
            .collect();
        for (slot, what) in exited {
            let replica = self.replicas.remove(&slot).expect("listed");
            let tail = tail(&replica.log_text(), 15);
            self.problems.push(format!("{what}; log tail:\n{tail}"));
            self.counts.unexpected_exits += 1;
            let restarted = self.start_replica(slot)?;
            println!("  {what}; restarted as {restarted}");
        }
        Ok(())
    }

    /// Records the exit of the replica stopped by SIGTERM, once it is out (`wait`: waits for
    /// it). Not exiting 0 within [`SHUTDOWN_TIMEOUT`] is a problem.
    fn check_stopping(&mut self, wait: bool) -> anyhow::Result<()> {
        let Some((replica, since, record)) = &mut self.stopping else {
            return Ok(());
        };
        let status = loop {
            match replica.exited() {
                Some(status) => break Some(status),
                None if since.elapsed() > SHUTDOWN_TIMEOUT => break None,
                None if wait => std::thread::sleep(Duration::from_millis(20)),
                None => return Ok(()),
            }
        };
        let took = since.elapsed().as_secs_f64();
        let record = &mut self.records[*record];
        match status {
            Some(status) => {
                record.detail = format!("{}: exited {status} after {took:.1} s", record.detail);
                record.ok = status.success();
            }
            None => {
                record.detail = format!("{}: still running after {took:.1} s", record.detail);
                record.ok = false;
            }
        }
        println!("  {}", record.title());
        if !record.ok {
            self.problems
                .push(format!("graceful stop failed: {}", record.title()));
        }
        self.stopping = None; // drops (and so kills) a replica that did not exit
        Ok(())
    }

    /// Brings a mock broker up, or restarts a real node (in the background, unless `wait`);
    /// the outage is over, and recorded, once the node is back and the cluster ready again.
    fn end_outage(&mut self, outage: Outage, progress: f64, wait: bool) -> anyhow::Result<()> {
        let (kind, detail) = match outage {
            Outage::Broker(broker) => {
                self.cluster
                    .mock()?
                    .command(&format!("broker-up {broker}"))?;
                self.counts.broker_ups += 1;
                (FaultKind::BrokerUp, format!("broker {broker} up"))
            }
            Outage::Node(node) => {
                let Some(took) = self.cluster.restart(node, wait)? else {
                    return Ok(()); // still restarting
                };
                self.counts.node_restarts += 1;
                (
                    FaultKind::NodeRestart,
                    format!(
                        "Kafka node {node} restarted; cluster ready after {:.1} s",
                        took.as_secs_f64()
                    ),
                )
            }
        };
        self.outage = None;
        let at_ms = self.clock.elapsed().as_millis() as u64;
        self.record(kind, at_ms, progress, detail, true);
        Ok(())
    }

    /// Ends the fault phase: every broker or node up, no injected error left queued.
    pub fn calm(&mut self, progress: f64) -> anyhow::Result<()> {
        if let Some((outage, _)) = self.outage {
            self.end_outage(outage, progress, true)?;
        }
        if let Cluster::Mock(mock) = &mut self.cluster {
            for api in ["Produce", "OffsetCommit", "TxnOffsetCommit"] {
                mock.command(&format!("clear-request-errors {api}"))?;
            }
        }
        Ok(())
    }

    /// Exactly-once: reads `replica`'s transaction counters from its `/metrics`, if it
    /// answers (a replica still starting may not).
    fn read_transactions(&mut self, replica: &mut Replica) {
        if self.launch.delivery != Delivery::ExactlyOnce {
            return;
        }
        let counter = |replica: &mut Replica, name| replica.counter(name).ok().flatten();
        let committed = counter(replica, "fanout_transactions_committed_total");
        let aborted = counter(replica, "fanout_transactions_aborted_total");
        if let (Some(committed), Some(aborted)) = (committed, aborted) {
            self.transactions.insert(
                (replica.slot, replica.incarnation),
                TransactionCounts { committed, aborted },
            );
        }
    }

    /// Exactly-once: the transactions of every replica process, summed.
    pub fn transactions(&self) -> Option<Transactions> {
        (self.launch.delivery == Delivery::ExactlyOnce).then(|| Transactions {
            committed: self.transactions.values().map(|t| t.committed as u64).sum(),
            aborted: self.transactions.values().map(|t| t.aborted as u64).sum(),
            processes: self.transactions.len(),
        })
    }

    /// Stops every replica with SIGTERM; each must exit 0.
    pub fn stop_replicas(&mut self) -> anyhow::Result<()> {
        self.check_stopping(true)?;
        for (_, mut replica) in std::mem::take(&mut self.replicas) {
            self.read_transactions(&mut replica);
            let label = replica.label();
            let (status, took) = replica.terminate(SHUTDOWN_TIMEOUT)?;
            println!(
                "  SIGTERM {label}: exited {status} after {:.1} s",
                took.as_secs_f64()
            );
            if !status.success() {
                self.problems.push(format!(
                    "graceful stop of {label} at the end failed: {status}"
                ));
            }
        }
        Ok(())
    }

    /// The log tails of the running replicas, for a diagnosis.
    pub fn diagnosis(&self) -> String {
        self.replicas
            .values()
            .map(|r| {
                format!(
                    "--- {} ({}):\n{}",
                    r.label(),
                    r.log.display(),
                    tail(&r.log_text(), 20)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn into_cluster(self) -> Cluster {
        self.cluster
    }
}

/// The replica's `/status` `plugins` object, once it has a set in service.
fn wait_for_plugins(replica: &mut Replica) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    loop {
        let status = replica.status()?;
        if status["plugins"].is_object() {
            return Ok(status["plugins"].clone());
        }
        if started.elapsed() > SWAP_TIMEOUT {
            anyhow::bail!(
                "{} has no plugin set in service after {SWAP_TIMEOUT:?}: {status}",
                replica.label()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `replica` shows the effect of `written`.
fn verify(replica: &mut Replica, written: &Written, failures_before: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let plugins = wait_for_plugins(replica)?;
        let done = match &written.version {
            Some(version) => plugins["version"].as_str() == Some(version),
            None => {
                plugins["counts"]["failures"].as_u64().unwrap_or(0) > failures_before
                    && plugins["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains(&written.dir))
            }
        };
        if done {
            return Ok(());
        }
        if started.elapsed() > SWAP_TIMEOUT {
            anyhow::bail!(
                "{} not {} after {SWAP_TIMEOUT:?}; /status plugins: {plugins}",
                written.dir,
                if written.version.is_some() {
                    "in service"
                } else {
                    "refused"
                },
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `n` lines of a log.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
