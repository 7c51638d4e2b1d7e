//! The events fed to the source topic, and what must become of each.
//!
//! Generated EventRouter envelopes (`fanout::generate`, keyed by `involvedObject.name`), of which
//! about 1% get `reason` `HostileTrap`, which makes the hostile plugin panic (a `plugin-trap`
//! dead letter), and about 0.5% are malformed in one of several ways (each a `malformed-event`
//! dead letter). Every other event must reach `ok.<namespace>` with its bytes and key unchanged.
//!
//! The sequence is a pure function of the seed, so the driver plans it once (what to expect of
//! every event, and how to recognise its records) and then produces it a second time without
//! holding a million envelopes in memory.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash as _, Hasher as _};

use fanout::generate::EventGenerator;

use crate::rng::Rng;
use crate::settings::Settings;

pub const SOURCE_TOPIC: &str = "cluster-events";
pub const SOURCE_PARTITIONS: i32 = 8;
pub const DEAD_LETTER_TOPIC: &str = "fanout-dead-letter";
pub const DEAD_LETTER_PARTITIONS: i32 = 4;
/// Namespaces the events spread over (Zipf), so destination topics `ok.<namespace>`.
pub const NAMESPACES: usize = 20;
/// Partitions of each destination topic: the mock keeps 5 MiB per partition, and the reader
/// keeps up with the writes, so this only needs to absorb the reader's lag.
pub const DESTINATION_PARTITIONS: i32 = 8;

/// The reason the hostile plugin panics on.
const TRAP_REASON: &str = "HostileTrap";

/// What an event is made to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Normal,
    /// `reason` is `HostileTrap`: the plugin panics on it.
    Trap,
    Malformed(Malformed),
}

/// The ways an envelope is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Malformed {
    /// A klog line, as EventRouter's own log output would be.
    NotJson,
    /// A generated envelope cut off part way.
    Truncated,
    /// A raw 0xFF byte inside the namespace string.
    NotUtf8,
    /// A record with an empty value.
    Empty,
    /// Valid JSON with `old_event` but no `event`.
    NoEvent,
}

impl Malformed {
    const ALL: [Malformed; 5] = [
        Malformed::NotJson,
        Malformed::Truncated,
        Malformed::NotUtf8,
        Malformed::Empty,
        Malformed::NoEvent,
    ];
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Normal => "normal",
            Kind::Trap => "HostileTrap (plugin traps)",
            Kind::Malformed(Malformed::NotJson) => "malformed: not JSON",
            Kind::Malformed(Malformed::Truncated) => "malformed: truncated JSON",
            Kind::Malformed(Malformed::NotUtf8) => "malformed: not UTF-8",
            Kind::Malformed(Malformed::Empty) => "malformed: empty value",
            Kind::Malformed(Malformed::NoEvent) => "malformed: no `event`",
        }
    }

    /// The outcome fanout must give an event of this kind in `namespace`.
    fn expected(self, topic: u16) -> Expected {
        match self {
            Kind::Normal => Expected::Routed(topic),
            Kind::Trap => Expected::DeadLetter("plugin-trap"),
            Kind::Malformed(_) => Expected::DeadLetter("malformed-event"),
        }
    }
}

/// Where an event must end up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// In this destination topic (an index into [`Plan::topics`]), bytes and key unchanged.
    Routed(u16),
    /// In the dead-letter topic, with a `fanout-reason` of this kind.
    DeadLetter(&'static str),
}

/// One source record.
#[derive(Debug, Clone)]
pub struct SourceEvent {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub partition: i32,
    pub kind: Kind,
    /// Index into [`Plan::topics`] of `ok.<namespace>` (meaningful for normal events).
    pub topic: u16,
}

/// The deterministic sequence of source records for a seed.
pub struct Workload {
    generator: EventGenerator,
    rng: Rng,
    trap_per_mille: u64,
    malformed_per_mille: u64,
    topic_index: HashMap<String, u16>,
    produced: u64,
}

impl Workload {
    pub fn new(settings: &Settings) -> Self {
        let generator = EventGenerator::new(settings.seed, NAMESPACES);
        let topic_index = generator
            .namespaces()
            .iter()
            .enumerate()
            .map(|(i, ns)| (ns.clone(), i as u16))
            .collect();
        Self {
            generator,
            rng: Rng::new(settings.seed ^ 0x5eed_f0e7_e7e7),
            trap_per_mille: settings.trap_per_mille,
            malformed_per_mille: settings.malformed_per_mille,
            topic_index,
            produced: 0,
        }
    }

    /// The destination topics, `ok.<namespace>`, in [`SourceEvent::topic`] order.
    pub fn topics(&self) -> Vec<String> {
        destination_topics(self.generator.namespaces())
    }
}

fn destination_topics(namespaces: &[String]) -> Vec<String> {
    namespaces.iter().map(|ns| format!("ok.{ns}")).collect()
}

impl Iterator for Workload {
    type Item = SourceEvent;

    fn next(&mut self) -> Option<SourceEvent> {
        let generated = self.generator.next_event();
        let n = self.produced;
        self.produced += 1;
        let topic = self.topic_index[&generated.namespace];
        let roll = self.rng.below(1000);
        let kind = if roll < self.trap_per_mille {
            Kind::Trap
        } else if roll < self.trap_per_mille + self.malformed_per_mille {
            Kind::Malformed(self.rng.pick(&Malformed::ALL))
        } else {
            Kind::Normal
        };
        let mut key = generated.key.into_bytes();
        let value = match kind {
            Kind::Normal => generated.value,
            Kind::Trap => with_reason(&generated.value, TRAP_REASON),
            Kind::Malformed(Malformed::NotJson) => format!(
                "E1127 08:00:00.{:06}       1 eventrouter.go:98] chaos event {n}: watch of \
                 *v1.Event ended with: an error on the server (\"unable to decode an event from \
                 the watch stream\") has prevented the request from succeeding",
                n % 1_000_000
            )
            .into_bytes(),
            Kind::Malformed(Malformed::Truncated) => {
                let len = generated.value.len() as u64;
                let cut = self.rng.between(len / 2..=len - 2) as usize;
                generated.value[..cut].to_vec()
            }
            Kind::Malformed(Malformed::NotUtf8) => {
                insert_after(&generated.value, br#""namespace":""#, &[0xff])
            }
            Kind::Malformed(Malformed::Empty) => {
                // An empty value can only be told apart from the others by its key.
                key = format!("chaos-empty-{n}").into_bytes();
                Vec::new()
            }
            Kind::Malformed(Malformed::NoEvent) => {
                replace_first(&generated.value, br#""event":"#, br#""old_event":"#)
            }
        };
        let partition = partition_for(&key);
        Some(SourceEvent {
            key,
            value,
            partition,
            kind,
            topic,
        })
    }
}

/// The envelope with its event's `reason` (the first one: `event` precedes `old_event`)
/// replaced.
fn with_reason(value: &[u8], reason: &str) -> Vec<u8> {
    let marker = br#""reason":""#;
    let start = find(value, marker).expect("every generated event has a reason") + marker.len();
    let end = start + find(&value[start..], b"\"").expect("the reason string ends");
    [&value[..start], reason.as_bytes(), &value[end..]].concat()
}

fn insert_after(value: &[u8], marker: &[u8], inserted: &[u8]) -> Vec<u8> {
    let at = find(value, marker).expect("the marker is in every generated event") + marker.len();
    [&value[..at], inserted, &value[at..]].concat()
}

fn replace_first(value: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = find(value, from).expect("the marker is in every generated event");
    [&value[..at], to, &value[at + from.len()..]].concat()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The partition EventRouter's Kafka sink (sarama's hash partitioner) picks for a key:
/// FNV-1a 32 of the key, as a signed number, modulo the partitions, made positive.
pub fn partition_for(key: &[u8]) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for &b in key {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    ((hash as i32) % SOURCE_PARTITIONS).abs()
}

/// What identifies a record across topics: a 128-bit hash of its key and value. fanout forwards
/// both unchanged, to a destination topic or the dead-letter topic, so any output record maps
/// back to its source event. (`DefaultHasher::new()` has fixed keys: stable within the run.)
pub fn identity(key: Option<&[u8]>, value: &[u8]) -> u128 {
    let half = |salt: u8| {
        let mut hasher = DefaultHasher::new();
        salt.hash(&mut hasher);
        key.hash(&mut hasher);
        value.hash(&mut hasher);
        hasher.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

/// Everything known in advance about the workload: what each event must become and how to
/// recognise its records.
pub struct Plan {
    /// `identity` → event index.
    pub identities: HashMap<u128, u32>,
    pub expected: Vec<Expected>,
    /// The source partition of each event.
    pub partitions: Vec<u8>,
    pub kinds: BTreeMap<Kind, u64>,
    /// Destination topics, `ok.<namespace>`.
    pub topics: Vec<String>,
}

impl Plan {
    /// Runs the workload once, without keeping the bytes. Also checks the workload itself:
    /// every record is distinct, and every malformed one really fails fanout's decoder.
    pub fn build(settings: &Settings) -> Self {
        let workload = Workload::new(settings);
        let topics = workload.topics();
        let n = settings.events as usize;
        let mut plan = Plan {
            identities: HashMap::with_capacity(n),
            expected: Vec::with_capacity(n),
            partitions: Vec::with_capacity(n),
            kinds: BTreeMap::new(),
            topics,
        };
        for (i, event) in workload.take(n).enumerate() {
            let previous = plan
                .identities
                .insert(identity(Some(&event.key), &event.value), i as u32);
            assert!(
                previous.is_none(),
                "workload bug: events {previous:?} and {i} are identical"
            );
            if let Kind::Malformed(how) = event.kind {
                assert!(
                    fanout::event::parse(&event.value).is_err(),
                    "workload bug: a {how:?} event decodes"
                );
            }
            plan.expected.push(event.kind.expected(event.topic));
            plan.partitions.push(event.partition as u8);
            *plan.kinds.entry(event.kind).or_default() += 1;
        }
        plan
    }

    pub fn events(&self) -> usize {
        self.expected.len()
    }
}
