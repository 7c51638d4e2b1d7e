//! The run's report: a table on standard output, and `target/chaos/report.json` and
//! `report.md` for CI artifacts and for reading later.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::faults::{FaultCounts, FaultRecord, Transactions};
use crate::reconcile::Reconciliation;
use crate::replica::ReloadLog;

#[derive(Debug, Serialize)]
pub struct Report {
    pub setting: &'static str,
    /// The cluster the run was against (mock or Apache Kafka, with its shape).
    pub cluster: String,
    /// Faults this cluster can't have, which the run therefore did not do.
    pub not_done: Vec<String>,
    pub seed: u64,
    pub delivery: &'static str,
    pub events: u64,
    pub elapsed_s: f64,
    /// Time from the first event fed to the last committed.
    pub feed_and_drain_s: f64,
    pub passed: bool,
    /// Why the run failed; empty when it passed.
    pub failures: Vec<String>,
    /// Events fed by kind.
    pub workload: BTreeMap<String, u64>,
    pub faults: FaultCounts,
    pub outcome: Reconciliation,
    /// Exactly-once: the replicas' transactions committed and aborted.
    pub transactions: Option<Transactions>,
    pub reload_log: ReloadLog,
    /// Times the group's committed offset of a partition went backwards.
    pub committed_offset_regressions: u64,
    /// Earlier attempts that the mock cluster's own crash ended (then the run is tried once
    /// more, with a new seed).
    pub mock_crashes: Vec<String>,
    /// The time of day (UTC) the run's clock started: fault times are relative to it.
    pub clock_zero_utc: String,
    pub fault_log: Vec<FaultRecord>,
}

impl Report {
    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let o = &self.outcome;
        let f = &self.faults;
        let _ = writeln!(
            t,
            "chaos run, {} setting: {} events, {} delivery, seed {} (FANOUT_CHAOS_SEED={} \
             replays the plan), {:.1} s: {}",
            self.setting,
            thousands(self.events),
            self.delivery,
            self.seed,
            self.seed,
            self.elapsed_s,
            if self.passed { "PASSED" } else { "FAILED" }
        );
        let _ = writeln!(t, "cluster: {}", self.cluster);
        for skipped in &self.not_done {
            let _ = writeln!(t, "not done on this cluster: {skipped}");
        }
        let row = |t: &mut String, label: &str, value: String| {
            let _ = writeln!(t, "  {label:<44} {value:>14}");
        };
        let _ = writeln!(t, "events fed");
        for (kind, n) in &self.workload {
            row(&mut t, kind, thousands(*n));
        }
        let _ = writeln!(t, "faults");
        row(&mut t, "SIGKILL and restart", f.kills.to_string());
        row(
            &mut t,
            "second replica started / stopped (SIGTERM)",
            format!("{} / {}", f.replica_starts, f.replica_stops),
        );
        row(
            &mut t,
            "broker down / up",
            format!("{} / {}", f.broker_downs, f.broker_ups),
        );
        row(
            &mut t,
            "partition leader SIGKILLed / node restarted",
            format!("{} / {}", f.leader_kills, f.node_restarts),
        );
        row(
            &mut t,
            "produce error bursts (errors injected)",
            format!("{} ({})", f.produce_error_bursts, f.produce_errors_injected),
        );
        row(
            &mut t,
            "commit error bursts (errors injected)",
            format!("{} ({})", f.commit_error_bursts, f.commit_errors_injected),
        );
        row(
            &mut t,
            "plugin swaps, good (applied everywhere)",
            format!("{} ({})", f.swaps_good, f.swaps_good_applied),
        );
        row(
            &mut t,
            "plugin swaps, broken (refused everywhere)",
            format!("{} ({})", f.swaps_broken, f.swaps_broken_refused),
        );
        row(
            &mut t,
            "replicas that exited by themselves",
            f.unexpected_exits.to_string(),
        );
        let r = &self.reload_log;
        row(
            &mut t,
            "replica logs: swapped / refused / rolled back",
            format!("{} / {} / {}", r.swapped, r.refused, r.rolled_back),
        );
        let _ = writeln!(t, "outcome");
        row(&mut t, "routed as expected", thousands(o.routed));
        row(
            &mut t,
            "dead-lettered as expected",
            thousands(o.dead_lettered),
        );
        row(&mut t, "lost (must be 0)", thousands(o.lost));
        if let Some(x) = &self.transactions {
            row(
                &mut t,
                "transactions committed / aborted (metrics)",
                format!("{} / {}", thousands(x.committed), thousands(x.aborted)),
            );
        }
        row(
            &mut t,
            "wrong outcome, events (records) (must be 0)",
            format!("{} ({})", o.wrong_outcome_events, o.wrong_records),
        );
        row(
            &mut t,
            "duplicate copies (events duplicated)",
            format!(
                "{} ({})",
                thousands(o.duplicates),
                thousands(o.duplicated_events)
            ),
        );
        row(
            &mut t,
            "feeder writes stored twice in the source",
            thousands(o.source_duplicates),
        );
        row(
            &mut t,
            "committed offsets seen going back",
            self.committed_offset_regressions.to_string(),
        );
        if !o.duplicates_by_cause.is_empty() {
            let _ = writeln!(t, "duplicate copies by cause");
            for (cause, n) in &o.duplicates_by_cause {
                let _ = writeln!(t, "  {:>8}  {cause}", thousands(*n));
            }
        }
        let _ = writeln!(
            t,
            "dead letters by reason: events (records, duplicates included)"
        );
        for (reason, records) in &o.dead_letters_by_reason {
            let events = o.dead_lettered_by_reason.get(reason).copied().unwrap_or(0);
            row(
                &mut t,
                reason,
                format!("{} ({})", thousands(events), thousands(*records)),
            );
        }
        let _ = writeln!(
            t,
            "records carry {} plugin-set versions (lineage)",
            o.lineage.len()
        );
        for (label, list) in [
            ("lost", &o.lost_examples),
            ("wrong outcome", &o.wrong_examples),
            ("duplicates no fault explains", &o.unexplained_examples),
            ("not checked", &o.unread),
            (
                "an earlier attempt ended by a crash of the mock",
                &self.mock_crashes,
            ),
            ("never found in the source", &o.not_in_source_examples),
        ] {
            if !list.is_empty() {
                let _ = writeln!(t, "{label}, first {}:", list.len());
                for item in list {
                    let _ = writeln!(t, "  {item}");
                }
            }
        }
        if !self.failures.is_empty() {
            let _ = writeln!(t, "FAILED because:");
            for failure in &self.failures {
                let _ = writeln!(t, "  - {failure}");
            }
        }
        t
    }

    /// The same, as Markdown, with the full fault log.
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let o = &self.outcome;
        let _ = writeln!(
            m,
            "# Chaos run: {}\n\n{} setting, {} events, {} delivery, seed {} \
             (`FANOUT_CHAOS_SEED={}` replays the plan), {:.1} s ({:.1} s feeding and \
             draining).\n",
            if self.passed { "passed" } else { "FAILED" },
            self.setting,
            thousands(self.events),
            self.delivery,
            self.seed,
            self.seed,
            self.elapsed_s,
            self.feed_and_drain_s
        );
        let _ = writeln!(m, "Cluster: {}.\n", self.cluster);
        for skipped in &self.not_done {
            let _ = writeln!(m, "Not done on this cluster: {skipped}.\n");
        }
        if !self.failures.is_empty() {
            let _ = writeln!(m, "## Failures\n");
            for failure in &self.failures {
                let _ = writeln!(m, "- {failure}");
            }
            m.push('\n');
        }
        let _ = writeln!(m, "## Outcome\n\n| | |\n| --- | ---: |");
        for (label, value) in [
            ("routed as expected", thousands(o.routed)),
            ("dead-lettered as expected", thousands(o.dead_lettered)),
            ("**lost**", thousands(o.lost)),
            (
                "**wrong outcome** (events)",
                thousands(o.wrong_outcome_events),
            ),
            ("duplicate copies", thousands(o.duplicates)),
            ("events duplicated", thousands(o.duplicated_events)),
            (
                "feeder writes stored twice in the source",
                thousands(o.source_duplicates),
            ),
        ] {
            let _ = writeln!(m, "| {label} | {value} |");
        }
        if let Some(x) = &self.transactions {
            let _ = writeln!(
                m,
                "| transactions committed (fanout_transactions_committed_total) | {} |\n\
                 | transactions aborted (fanout_transactions_aborted_total) | {} |",
                thousands(x.committed),
                thousands(x.aborted)
            );
        }
        let _ = writeln!(m, "\n## Events fed\n\n| kind | events |\n| --- | ---: |");
        for (kind, n) in &self.workload {
            let _ = writeln!(m, "| {kind} | {} |", thousands(*n));
        }
        let f = &self.faults;
        let _ = writeln!(m, "\n## Faults\n\n| fault | count |\n| --- | ---: |");
        for (label, value) in [
            ("SIGKILL and restart", f.kills.to_string()),
            ("second replica started", f.replica_starts.to_string()),
            (
                "second replica stopped (SIGTERM)",
                f.replica_stops.to_string(),
            ),
            ("broker down", f.broker_downs.to_string()),
            ("broker up", f.broker_ups.to_string()),
            ("partition leader SIGKILLed", f.leader_kills.to_string()),
            ("killed node restarted", f.node_restarts.to_string()),
            (
                "produce error bursts (errors)",
                format!("{} ({})", f.produce_error_bursts, f.produce_errors_injected),
            ),
            (
                "commit error bursts (errors)",
                format!("{} ({})", f.commit_error_bursts, f.commit_errors_injected),
            ),
            (
                "good plugin swaps (applied)",
                format!("{} ({})", f.swaps_good, f.swaps_good_applied),
            ),
            (
                "broken plugin swaps (refused)",
                format!("{} ({})", f.swaps_broken, f.swaps_broken_refused),
            ),
            (
                "replicas that exited by themselves",
                f.unexpected_exits.to_string(),
            ),
        ] {
            let _ = writeln!(m, "| {label} | {value} |");
        }
        let _ = writeln!(
            m,
            "\n## Duplicate copies by cause\n\nEach extra copy is blamed on the likeliest fault \
             that fits the times its copies were read (see tests/chaos/attribution.rs).\n\n\
             | copies | cause |\n| ---: | --- |"
        );
        for (cause, n) in &o.duplicates_by_cause {
            let _ = writeln!(m, "| {} | {cause} |", thousands(*n));
        }
        let _ = writeln!(
            m,
            "\n## Dead letters by reason\n\n\
             | reason | events | records (duplicates included) |\n| --- | ---: | ---: |"
        );
        for (reason, records) in &o.dead_letters_by_reason {
            let events = o.dead_lettered_by_reason.get(reason).copied().unwrap_or(0);
            let _ = writeln!(
                m,
                "| {reason} | {} | {} |",
                thousands(events),
                thousands(*records)
            );
        }
        let _ = writeln!(
            m,
            "\n## Records per topic\n\n| topic | records |\n| --- | ---: |"
        );
        for (topic, n) in &o.records_by_topic {
            let _ = writeln!(m, "| {topic} | {} |", thousands(*n));
        }
        let _ = writeln!(
            m,
            "\n## Fault log\n\n| # | at | events out | fault | what | ok |\n\
             | ---: | ---: | ---: | --- | --- | --- |"
        );
        for r in &self.fault_log {
            let _ = writeln!(
                m,
                "| {} | {:.1} s | {:.0}% | {} | {} | {} |",
                r.number,
                r.at_ms as f64 / 1e3,
                r.progress,
                r.kind.name(),
                r.detail,
                if r.ok { "yes" } else { "**no**" }
            );
        }
        m
    }

    /// Writes `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        Ok(())
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
