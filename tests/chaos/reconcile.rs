//! The reconciliation: every record read back, from the source topic and from every output
//! topic, is booked against the source event it came from, and at the end every source offset
//! must have its expected outcome.
//!
//! - **Correct:** a routed event is in `ok.<namespace>` with its bytes and key unchanged; a
//!   dead-lettered one is in the dead-letter topic with the expected reason kind, its original
//!   bytes and key, and `fanout-source-topic`/`-partition`/`-offset` naming a place where the
//!   source topic really holds it.
//! - **Lost:** an event in the source with no record anywhere else. Must be 0.
//! - **Wrong outcome:** a record in a place its event should not be (another topic, a dead
//!   letter for an event that should have been routed, the wrong reason or source headers), a
//!   record that matches no source event, or lineage from a plugin set that was never good.
//!   Must be 0.
//! - **Duplicate:** a second (third, ...) correct copy. At-least-once allows them, and each is
//!   blamed on a fault ([`crate::attribution`]); exactly-once must have none.
//!
//! The source topic is read like the others, not taken from the feeder's delivery reports: the
//! mock does not de-duplicate an idempotent producer's retries, so an outage can store one of
//! the feeder's events twice, and fanout then rightly routes it twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::attribution::{self, UNEXPLAINED};
use crate::faults::FaultRecord;
use crate::settings::Delivery;
use crate::workload::{DEAD_LETTER_TOPIC, Expected, Plan, SOURCE_TOPIC, identity};

/// How many examples of each problem the report keeps.
const EXAMPLES: usize = 20;

/// What a topic the reader reads is to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    /// `ok.<namespace>`, an index into [`Plan::topics`].
    Routed(u16),
    DeadLetter,
}

/// One record as read.
pub struct Read<'a> {
    pub topic: &'a str,
    pub role: Role,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: Vec<(String, String)>,
    /// When it was read, in ms since the run started.
    pub at_ms: u32,
}

/// Where and when one copy of an event was read.
#[derive(Debug, Clone, Copy, Default)]
struct Copy {
    at_ms: u32,
    /// An index into [`Plan::topics`], or `u16::MAX` for the dead-letter topic.
    topic: u16,
    partition: u16,
    offset: u32,
    /// Its `fanout-plugin-set` version, numbered in [`Ledger::versions`].
    lineage: u16,
}

/// Everything read so far, booked per source event.
pub struct Ledger {
    plan: Arc<Plan>,
    delivery: Delivery,
    /// Where each event is in the source topic (-1: not read there), and any further places
    /// when the feeder's write was stored twice.
    source_offset: Vec<i64>,
    source_copies: HashMap<u32, Vec<i64>>,
    /// What the reader found at each source offset, per partition: an event, or `u32::MAX`.
    source_records: Vec<Vec<u32>>,
    /// Correct copies of each event.
    copies: Vec<u16>,
    /// Whether any output record of each event has been read, correct or not.
    seen: Vec<bool>,
    first_copy: Vec<Copy>,
    /// (event, copy) of every correct copy after the first.
    extra_copies: Vec<(u32, Copy)>,
    /// `fanout-plugin-set` versions, numbered as first seen.
    versions: Vec<String>,
    wrong_events: HashSet<u32>,
    wrong_records: u64,
    wrong_examples: Vec<String>,
    /// (event, partition, offset) named by each correct dead letter's headers.
    dead_letter_sources: Vec<(u32, i32, i64)>,
    /// Every dead-letter record by its reason kind.
    dead_letters: BTreeMap<String, u64>,
    /// Records per `fanout-plugin-set` version.
    lineage: BTreeMap<String, u64>,
    records_by_topic: BTreeMap<String, u64>,
    next_offset: HashMap<(String, i32), i64>,
    /// Offsets the reader never saw, or never reached.
    unread: Vec<String>,
}

impl Ledger {
    pub fn new(plan: Arc<Plan>, delivery: Delivery) -> Self {
        let events = plan.events();
        Self {
            plan,
            delivery,
            source_offset: vec![-1; events],
            source_copies: HashMap::new(),
            source_records: vec![Vec::new(); crate::workload::SOURCE_PARTITIONS as usize],
            copies: vec![0; events],
            seen: vec![false; events],
            first_copy: vec![Copy::default(); events],
            extra_copies: Vec::new(),
            versions: Vec::new(),
            wrong_events: HashSet::new(),
            wrong_records: 0,
            wrong_examples: Vec::new(),
            dead_letter_sources: Vec::new(),
            dead_letters: BTreeMap::new(),
            lineage: BTreeMap::new(),
            records_by_topic: BTreeMap::new(),
            next_offset: HashMap::new(),
            unread: Vec::new(),
        }
    }

    /// Books one record. True if it is the first output record read of its source event.
    pub fn book(&mut self, read: Read<'_>) -> bool {
        *self
            .records_by_topic
            .entry(read.topic.to_owned())
            .or_default() += 1;
        self.check_contiguous(&read);
        let at = format!("{}/{}@{}", read.topic, read.partition, read.offset);
        let event = self
            .plan
            .identities
            .get(&identity(read.key, read.value))
            .copied();
        let Some(event) = event else {
            self.wrong(
                None,
                format!(
                    "{at}: matches no source event (key {:?}, {} bytes)",
                    read.key.map(String::from_utf8_lossy),
                    read.value.len()
                ),
            );
            return false;
        };
        if read.role == Role::Source {
            self.book_source(event, &read, &at);
            return false;
        }
        let first = !std::mem::replace(&mut self.seen[event as usize], true);
        let header = |name: &str| {
            read.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let lineage = match header("fanout-plugin-set") {
            Some(version) => {
                *self.lineage.entry(version.to_owned()).or_default() += 1;
                self.version_number(version)
            }
            None => {
                self.wrong(Some(event), format!("{at}: no fanout-plugin-set header"));
                u16::MAX
            }
        };
        if read.role == Role::DeadLetter {
            let kind = header("fanout-reason")
                .map(|r| r.split(':').next().unwrap_or(r))
                .unwrap_or("(none)");
            *self.dead_letters.entry(kind.to_owned()).or_default() += 1;
        }
        let expected = self.plan.expected[event as usize];
        let problem = match (read.role, expected) {
            (Role::Routed(topic), Expected::Routed(want)) if topic == want => None,
            (Role::DeadLetter, Expected::DeadLetter(want)) => {
                self.dead_letter_problem(event, want, &header)
            }
            _ => Some(format!(
                "{at}: event {event} expected {}",
                self.describe(expected)
            )),
        };
        if let Some(problem) = problem {
            self.wrong(Some(event), problem);
            return first;
        }
        let copy = Copy {
            at_ms: read.at_ms,
            topic: match read.role {
                Role::Routed(topic) => topic,
                _ => u16::MAX,
            },
            partition: read.partition as u16,
            offset: read.offset as u32,
            lineage,
        };
        let e = event as usize;
        self.copies[e] = self.copies[e].saturating_add(1);
        if self.copies[e] == 1 {
            self.first_copy[e] = copy;
        } else {
            self.extra_copies.push((event, copy));
        }
        first
    }

    /// A record of the source topic: where the event is.
    fn book_source(&mut self, event: u32, read: &Read<'_>, at: &str) {
        if let Some(records) = self.source_records.get_mut(read.partition as usize) {
            let at = read.offset as usize;
            if records.len() <= at {
                records.resize(at + 1, u32::MAX);
            }
            records[at] = event;
        }
        let e = event as usize;
        if i32::from(self.plan.partitions[e]) != read.partition {
            self.wrong(
                Some(event),
                format!(
                    "{at}: the feeder meant event {event} for partition {}",
                    self.plan.partitions[e]
                ),
            );
        }
        let first = self.source_offset[e];
        if first < 0 {
            self.source_offset[e] = read.offset;
        } else {
            self.source_copies
                .entry(event)
                .or_insert_with(|| vec![first])
                .push(read.offset);
        }
    }

    /// What is wrong with a dead letter of `event`, which must have reason kind `want`.
    fn dead_letter_problem<'h>(
        &mut self,
        event: u32,
        want: &str,
        header: &impl Fn(&str) -> Option<&'h str>,
    ) -> Option<String> {
        let reason = header("fanout-reason").unwrap_or("(none)");
        if reason.split(':').next() != Some(want) {
            return Some(format!(
                "event {event}: dead letter \"{reason}\", expected reason {want}"
            ));
        }
        if want == "plugin-trap" && header("fanout-plugin") != Some("hostile") {
            return Some(format!(
                "event {event}: plugin-trap dead letter names plugin {:?}",
                header("fanout-plugin")
            ));
        }
        if header("fanout-source-topic") != Some(SOURCE_TOPIC) {
            return Some(format!(
                "event {event}: dead letter names source topic {:?}",
                header("fanout-source-topic")
            ));
        }
        let partition = header("fanout-source-partition").and_then(|p| p.parse().ok());
        let offset = header("fanout-source-offset").and_then(|o| o.parse().ok());
        let (Some(partition), Some(offset)) = (partition, offset) else {
            return Some(format!(
                "event {event}: dead letter without a usable fanout-source-partition/-offset"
            ));
        };
        // Checked at the end: the reader may see the dead letter before the source record.
        self.dead_letter_sources.push((event, partition, offset));
        None
    }

    /// Why `event` may be missing from the source, given where its delivery report put it.
    fn not_in_source(&self, event: usize, delivered_at: i64) -> String {
        let partition = self.plan.partitions[event];
        let found = usize::try_from(delivered_at)
            .ok()
            .and_then(|o| self.source_records[partition as usize].get(o))
            .map_or("nothing".to_owned(), |&e| match e {
                u32::MAX => "nothing".to_owned(),
                e => format!("event {e}"),
            });
        format!(
            "event {event}: acknowledged at {SOURCE_TOPIC}/{partition}@{delivered_at}, where the \
             reader found {found}; {} output records of it were read",
            self.copies[event]
        )
    }

    fn version_number(&mut self, version: &str) -> u16 {
        match self.versions.iter().position(|v| v == version) {
            Some(i) => i as u16,
            None => {
                self.versions.push(version.to_owned());
                (self.versions.len() - 1) as u16
            }
        }
    }

    /// `ok.x/3@120 (set 0a1b2c3d4e5f) read at 12.345 s`.
    fn describe_copy(&self, copy: &Copy) -> String {
        let topic = match copy.topic {
            u16::MAX => DEAD_LETTER_TOPIC,
            t => &self.plan.topics[t as usize],
        };
        let version = self
            .versions
            .get(copy.lineage as usize)
            .map_or("?", String::as_str);
        format!(
            "{topic}/{}@{} (set {version}) read at {:.3} s",
            copy.partition,
            copy.offset,
            copy.at_ms as f64 / 1e3
        )
    }

    fn describe(&self, expected: Expected) -> String {
        match expected {
            Expected::Routed(topic) => format!("in {}", self.plan.topics[topic as usize]),
            Expected::DeadLetter(kind) => format!("dead-lettered as {kind}"),
        }
    }

    fn wrong(&mut self, event: Option<u32>, what: String) {
        self.wrong_records += 1;
        if let Some(event) = event {
            self.wrong_events.insert(event);
        }
        if self.wrong_examples.len() < EXAMPLES {
            self.wrong_examples.push(what);
        }
    }

    /// Without transactions every offset is a record: a hole means the mock deleted records
    /// before the reader got to them, and the run could not check them.
    fn check_contiguous(&mut self, read: &Read<'_>) {
        if !self.delivery.offsets_are_contiguous() {
            return;
        }
        let next = self
            .next_offset
            .entry((read.topic.to_owned(), read.partition))
            .or_insert(0);
        if read.offset > *next && self.unread.len() < EXAMPLES {
            self.unread.push(format!(
                "{}/{}: offsets {}..{} were never read (deleted by the mock's retention first?)",
                read.topic,
                read.partition,
                *next,
                read.offset - 1
            ));
        }
        *next = (*next).max(read.offset + 1);
    }

    /// Partitions the reader did not read to their end.
    pub fn note_unread(&mut self, short: Vec<String>) {
        self.unread.extend(
            short
                .into_iter()
                .map(|s| format!("not read to the end: {s}")),
        );
    }

    /// Every event's outcome, given the faults, the plugin-set versions that were ever good, and
    /// where the feeder's delivery reports said each event went (-1: no report).
    pub fn reconcile(
        mut self,
        faults: &[FaultRecord],
        good_versions: &HashSet<String>,
        delivered: &[i64],
    ) -> Reconciliation {
        let mut r = Reconciliation {
            events: self.plan.events() as u64,
            records_by_topic: std::mem::take(&mut self.records_by_topic),
            dead_letters_by_reason: std::mem::take(&mut self.dead_letters),
            lineage: std::mem::take(&mut self.lineage),
            unread: std::mem::take(&mut self.unread),
            wrong_records: self.wrong_records,
            wrong_examples: std::mem::take(&mut self.wrong_examples),
            ..Reconciliation::default()
        };
        let mut wrong_events = std::mem::take(&mut self.wrong_events);
        for &(event, partition, offset) in &self.dead_letter_sources {
            let e = event as usize;
            let places = self.source_copies.get(&event).cloned();
            let places = places.unwrap_or_else(|| vec![self.source_offset[e]]);
            if partition != i32::from(self.plan.partitions[e]) || !places.contains(&offset) {
                r.wrong_records += 1;
                wrong_events.insert(event);
                if r.wrong_examples.len() < EXAMPLES {
                    r.wrong_examples.push(format!(
                        "event {event}: dead letter names source {partition}/{offset}, the \
                         source holds it at {}/{places:?}",
                        self.plan.partitions[e]
                    ));
                }
            }
        }
        for (version, records) in &r.lineage {
            if !good_versions.contains(version) {
                r.wrong_records += records;
                r.wrong_examples.push(format!(
                    "{records} records carry plugin-set version {version}, which no good \
                     revision had"
                ));
            }
        }
        for (event, &delivered_at) in delivered.iter().enumerate() {
            if self.source_offset[event] < 0 {
                r.not_in_source += 1;
                if r.not_in_source_examples.len() < EXAMPLES {
                    r.not_in_source_examples
                        .push(self.not_in_source(event, delivered_at));
                }
                continue;
            }
            let wrong = wrong_events.contains(&(event as u32));
            match (self.copies[event], self.plan.expected[event]) {
                (0, expected) if !wrong => {
                    r.lost += 1;
                    if r.lost_examples.len() < EXAMPLES {
                        r.lost_examples.push(format!(
                            "event {event} at {SOURCE_TOPIC}/{}@{}: expected {}",
                            self.plan.partitions[event],
                            self.source_offset[event],
                            self.describe(expected)
                        ));
                    }
                }
                (0, _) => {}
                (_, Expected::Routed(_)) => r.routed += 1,
                (_, Expected::DeadLetter(kind)) => {
                    r.dead_lettered += 1;
                    *r.dead_lettered_by_reason
                        .entry(kind.to_owned())
                        .or_default() += 1;
                }
            }
            if self.copies[event] > 1 {
                r.duplicated_events += 1;
            }
        }
        r.source_duplicates = self
            .source_copies
            .values()
            .map(|places| places.len() as u64 - 1)
            .sum();
        r.wrong_outcome_events = wrong_events.len() as u64;
        r.duplicates = self.extra_copies.len() as u64;
        let mut causes: BTreeMap<String, u64> = BTreeMap::new();
        let mut explained_by_source: HashMap<u32, usize> = HashMap::new();
        for (event, copy) in &self.extra_copies {
            // An event stored twice in the source is rightly routed twice.
            let stored_twice = self.source_copies.get(event).map_or(0, |p| p.len() - 1);
            let used = explained_by_source.entry(*event).or_default();
            let cause = if *used < stored_twice {
                *used += 1;
                "the feeder's write was stored twice in the source (the mock does not \
                 de-duplicate idempotent retries)"
                    .to_owned()
            } else {
                let first = &self.first_copy[*event as usize];
                let cause = attribution::cause(faults, first.at_ms, copy.at_ms);
                if cause == UNEXPLAINED && r.unexplained_examples.len() < EXAMPLES {
                    r.unexplained_examples.push(format!(
                        "event {event} ({SOURCE_TOPIC}/{}@{}): {}, then {}",
                        self.plan.partitions[*event as usize],
                        self.source_offset[*event as usize],
                        self.describe_copy(first),
                        self.describe_copy(copy)
                    ));
                }
                cause
            };
            *causes.entry(cause).or_default() += 1;
        }
        let mut by_cause: Vec<(String, u64)> = causes.into_iter().collect();
        by_cause.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        r.duplicates_by_cause = by_cause;
        r
    }
}

/// The outcome of the whole run.
#[derive(Debug, Default, serde::Serialize)]
pub struct Reconciliation {
    pub events: u64,
    /// Events in their expected destination topic, and in the dead-letter topic as expected.
    pub routed: u64,
    pub dead_lettered: u64,
    pub lost: u64,
    pub lost_examples: Vec<String>,
    pub wrong_outcome_events: u64,
    pub wrong_records: u64,
    pub wrong_examples: Vec<String>,
    /// Extra copies, and the events that have them.
    pub duplicates: u64,
    pub duplicated_events: u64,
    pub duplicates_by_cause: Vec<(String, u64)>,
    /// Duplicates no fault explains.
    pub unexplained_examples: Vec<String>,
    /// Events the reader never found in the source topic, so could not check.
    pub not_in_source: u64,
    pub not_in_source_examples: Vec<String>,
    /// Extra copies of the feeder's events in the source topic.
    pub source_duplicates: u64,
    /// Events dead-lettered as expected, by reason kind.
    pub dead_lettered_by_reason: BTreeMap<String, u64>,
    /// Dead-letter records by reason kind, duplicates included.
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    pub lineage: BTreeMap<String, u64>,
    pub records_by_topic: BTreeMap<String, u64>,
    pub unread: Vec<String>,
}
