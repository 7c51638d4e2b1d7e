//! The destination validator: `fanout::topic_name::check_topic_name` and `OutputPolicy::check`, on
//! structured input (a policy, and the destinations a plugin could return).
//!
//! Every result is compared with an independent statement of the rules, written here from
//! Kafka's and fanout's documentation rather than from policy.rs:
//! - `check_topic_name` accepts exactly the legal Kafka topic names: 1 to 249 characters, each
//!   of `[a-zA-Z0-9._-]`, and not `.` or `..`;
//! - whatever `check` accepts has at most `max_destinations` destinations, each with a legal
//!   topic that is not internal (`__*`), not reserved, matched by no deny pattern and by some
//!   allow pattern, without the `fanout-plugin-set` header, and a record (key + value, the
//!   source's when the destination has no payload, + header keys and values) within
//!   `max_record_bytes`; so reserved topics and the lineage header are always refused;
//! - whatever it refuses, it refuses for a true reason: the destination its error names breaks
//!   the rule the error names, and every refusal counts as the plugin set's fault.

#![no_main]

use arbitrary::Arbitrary;
use fanout::bindings::{Destination, Header};
use fanout::topic_name::Glob;
use fanout::deadletter::DeadLetterReason;
use fanout::policy::OutputPolicy;
use fanout::topic_name::check_topic_name;
use libfuzzer_sys::fuzz_target;

const LINEAGE_HEADER: &str = "fanout-plugin-set";

static SHOW_OUTCOMES: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("FANOUT_FUZZ_OUTCOMES").is_some());

/// A small alphabet of legal characters, so that generated topics collide with each other, with
/// reserved topics and with patterns.
const LEGAL: &[u8] = b"abcXYZ019._-";
const ILLEGAL: &[char] = &[' ', '/', '*', '#', ':', '\0', '\u{e9}', '\u{1F600}'];

#[derive(Arbitrary, Debug)]
enum TopicInput {
    /// Any string at all.
    Raw(String),
    /// Mostly legal characters, now and then an illegal one.
    Mostly(Vec<u8>),
    /// One legal character repeated, around the 249 limit.
    Long(u8, u16),
    /// `__` and then legal characters: an internal topic.
    Internal(Vec<u8>),
    /// `.`, `..`, `...`.
    Dots(u8),
    /// One of the policy's reserved topics.
    Reserved(u8),
}

#[derive(Arbitrary, Debug)]
enum PatternInput {
    Raw(String),
    /// Legal characters and `*`.
    Glob(Vec<u8>),
    Any,
}

#[derive(Arbitrary, Debug)]
enum HeaderKey {
    Lineage,
    /// Near misses of the lineage header's name, which are ordinary headers.
    NearMiss(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct HeaderInput {
    key: HeaderKey,
    value: Option<Vec<u8>>,
}

#[derive(Arbitrary, Debug)]
struct DestinationInput {
    topic: TopicInput,
    key: Option<Vec<u8>>,
    headers: Vec<HeaderInput>,
    /// Length of the destination's own payload; none forwards the source value.
    payload: Option<u16>,
}

#[derive(Arbitrary, Debug)]
struct PolicyInput {
    /// fanout's default limits (64 destinations, 1,000,000 bytes), or the two below.
    default_limits: bool,
    max_destinations: u8,
    max_record_bytes: u16,
    reserved: Vec<TopicInput>,
    allow: Vec<PatternInput>,
    deny: Vec<PatternInput>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    policy: PolicyInput,
    destinations: Vec<DestinationInput>,
    /// Size of the source value. Kafka records are under 2 GiB, so u32 covers every real one.
    raw_len: u32,
}

fn legal(b: u8) -> char {
    char::from(LEGAL[usize::from(b) % LEGAL.len()])
}

fn topic(input: &TopicInput, reserved: &[String]) -> String {
    match input {
        TopicInput::Raw(s) => s.clone(),
        TopicInput::Mostly(bytes) => bytes
            .iter()
            .map(|&b| {
                if b >= 240 {
                    ILLEGAL[usize::from(b - 240) % ILLEGAL.len()]
                } else {
                    legal(b)
                }
            })
            .collect(),
        TopicInput::Long(c, n) => std::iter::repeat_n(legal(*c), usize::from(*n) % 300).collect(),
        TopicInput::Internal(bytes) => {
            let mut t = "__".to_owned();
            t.extend(bytes.iter().map(|&b| legal(b)));
            t
        }
        TopicInput::Dots(n) => ".".repeat(usize::from(*n % 3) + 1),
        TopicInput::Reserved(i) if !reserved.is_empty() => {
            reserved[usize::from(*i) % reserved.len()].clone()
        }
        TopicInput::Reserved(_) => "cluster-events".to_owned(),
    }
}

fn pattern(input: &PatternInput) -> Option<Glob> {
    match input {
        PatternInput::Raw(s) => Glob::new(s).ok(),
        PatternInput::Glob(bytes) => {
            let p: String = bytes
                .iter()
                .map(|&b| if b % 4 == 0 { '*' } else { legal(b) })
                .collect();
            if p.is_empty() {
                assert!(Glob::new(&p).is_err(), "an empty pattern is refused");
                return None;
            }
            Some(Glob::new(&p).expect("patterns of [a-zA-Z0-9._*-] are valid"))
        }
        PatternInput::Any => Some(Glob::any()),
    }
}

fn header_key(key: &HeaderKey) -> String {
    match key {
        HeaderKey::Lineage => LINEAGE_HEADER.to_owned(),
        HeaderKey::NearMiss(i) => [
            "Fanout-Plugin-Set",
            "fanout-plugin-set ",
            "fanout-plugin-se",
            "fanout_plugin_set",
            "fanout-plugin",
        ][usize::from(*i) % 5]
            .to_owned(),
        HeaderKey::Other(s) => s.clone(),
    }
}

// ---- The independent rules ---------------------------------------------------------------------

/// Kafka's topic naming rule, by characters.
fn is_legal_topic(t: &str) -> bool {
    (1..=249).contains(&t.chars().count())
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}

/// Whole-string glob match, `*` matching any run (also empty): dynamic programming.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    // m[i][j]: p[i..] matches t[j..].
    let mut m = vec![vec![false; t.len() + 1]; p.len() + 1];
    m[p.len()][t.len()] = true;
    for i in (0..p.len()).rev() {
        for j in (0..=t.len()).rev() {
            m[i][j] = if p[i] == b'*' {
                m[i + 1][j] || (j < t.len() && m[i][j + 1])
            } else {
                j < t.len() && p[i] == t[j] && m[i + 1][j + 1]
            };
        }
    }
    m[0][0]
}

struct Rules<'a> {
    max_destinations: usize,
    max_record_bytes: usize,
    reserved: &'a [String],
    allow: &'a [String],
    deny: &'a [String],
}

impl Rules<'_> {
    fn topic_refused(&self, t: &str) -> bool {
        t.starts_with("__")
            || self.reserved.iter().any(|r| r == t)
            || self.deny.iter().any(|p| glob_matches(p, t))
            || !self.allow.iter().any(|p| glob_matches(p, t))
    }
}

fn has_lineage_header(d: &Destination) -> bool {
    d.headers.iter().any(|h| h.key == LINEAGE_HEADER)
}

fn record_bytes(d: &Destination, raw_len: usize) -> u128 {
    let len = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, |v| v.len() as u128);
    len(&d.key)
        + d.payload.as_ref().map_or(raw_len as u128, |p| p.len() as u128)
        + d.headers
            .iter()
            .map(|h| h.key.len() as u128 + len(&h.value))
            .sum::<u128>()
}

fn is_allowed(rules: &Rules, d: &Destination, raw_len: usize) -> bool {
    is_legal_topic(&d.topic)
        && !rules.topic_refused(&d.topic)
        && !has_lineage_header(d)
        && record_bytes(d, raw_len) <= rules.max_record_bytes as u128
}

fuzz_target!(|input: Input| {
    let p = &input.policy;
    let reserved: Vec<String> = p.reserved.iter().map(|t| topic(t, &[])).collect();
    let allow: Vec<Glob> = p.allow.iter().filter_map(pattern).collect();
    let deny: Vec<Glob> = p.deny.iter().filter_map(pattern).collect();
    let mut policy = OutputPolicy {
        reserved_topics: reserved
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let why = if i % 2 == 0 { "is the source topic" } else { "is the dead-letter topic" };
                (t.clone(), why)
            })
            .collect(),
        allow: allow.clone(),
        deny: deny.clone(),
        ..OutputPolicy::default()
    };
    if !p.default_limits {
        policy.max_destinations = usize::from(p.max_destinations);
        policy.max_record_bytes = usize::from(p.max_record_bytes);
    }
    let raw_len = input.raw_len as usize;
    let destinations: Vec<Destination> = input
        .destinations
        .iter()
        .map(|d| Destination {
            topic: topic(&d.topic, &reserved),
            key: d.key.clone(),
            headers: d
                .headers
                .iter()
                .map(|h| Header { key: header_key(&h.key), value: h.value.clone() })
                .collect(),
            payload: d.payload.map(|n| vec![b'x'; usize::from(n)]),
        })
        .collect();

    // The topic rule on its own, for every topic generated.
    for t in destinations.iter().map(|d| &d.topic).chain(&reserved) {
        assert_eq!(check_topic_name(t).is_ok(), is_legal_topic(t), "check_topic_name({t:?})");
    }

    let allow_s: Vec<String> = allow.iter().map(|g| g.as_str().to_owned()).collect();
    let deny_s: Vec<String> = deny.iter().map(|g| g.as_str().to_owned()).collect();
    let rules = Rules {
        max_destinations: policy.max_destinations,
        max_record_bytes: policy.max_record_bytes,
        reserved: &reserved,
        allow: &allow_s,
        deny: &deny_s,
    };
    for (g, s) in allow.iter().chain(&deny).zip(allow_s.iter().chain(&deny_s)) {
        for d in &destinations {
            assert_eq!(g.matches(&d.topic), glob_matches(s, &d.topic), "{s:?} vs {:?}", d.topic);
        }
    }

    let result = policy.check(&destinations, raw_len);
    if *SHOW_OUTCOMES {
        // `FANOUT_FUZZ_OUTCOMES=1 .../destination corpus/destination`: what the corpus reaches.
        eprintln!("outcome: {}", result.as_ref().map_or_else(|r| r.kind(), |()| "accepted"));
    }
    let expected = destinations.len() <= rules.max_destinations
        && destinations.iter().all(|d| is_allowed(&rules, d, raw_len));
    match result {
        Ok(()) => assert!(expected, "accepted what the rules refuse"),
        Err(reason) => {
            // A refusal reports cleanly, and blames the plugin set.
            assert!(!reason.kind().is_empty() && !reason.to_string().is_empty());
            assert!(reason.is_plugin_fault(), "{reason}");
            assert!(!expected, "refused what the rules allow: {reason}");
            let destinations = &destinations;
            let named = |topic: &str| {
                let topic = topic.to_owned();
                destinations.iter().filter(move |d| d.topic == topic)
            };
            match &reason {
                DeadLetterReason::TooManyDestinations { count, limit } => {
                    assert_eq!((*count, *limit), (destinations.len(), rules.max_destinations));
                    assert!(count > limit);
                }
                DeadLetterReason::InvalidTopic { topic, .. } => {
                    assert!(!is_legal_topic(topic), "{reason}");
                    assert!(named(topic).next().is_some());
                }
                DeadLetterReason::TopicDenied { topic, rule } => {
                    assert!(is_legal_topic(topic) && rules.topic_refused(topic), "{reason}");
                    if let Some(p) = rule
                        .strip_prefix("matches the deny pattern `")
                        .and_then(|r| r.strip_suffix('`'))
                    {
                        assert!(deny_s.iter().any(|d| d == p) && glob_matches(p, topic), "{reason}");
                    }
                }
                DeadLetterReason::ReservedHeader { topic, header } => {
                    assert_eq!(header, LINEAGE_HEADER);
                    assert!(named(topic).any(has_lineage_header), "{reason}");
                }
                DeadLetterReason::RecordTooLarge { topic, bytes, limit } => {
                    assert_eq!(*limit, rules.max_record_bytes);
                    assert!(bytes > limit);
                    assert!(
                        named(topic).any(|d| record_bytes(d, raw_len) == *bytes as u128),
                        "{reason}"
                    );
                }
                other => panic!("not a policy refusal: {other}"),
            }
        }
    }
});
