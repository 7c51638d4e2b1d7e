//! Property tests of what untrusted input reaches first: the envelope decoder (any bytes from
//! the source topic) and the destination validator (anything a plugin returns). Neither may
//! panic, and each must agree with an independent statement of its rule.

use proptest::prelude::*;

use fanout::bindings::{Destination, SourceRecord};
use fanout::event::{self, MAX_DEPTH};
use fanout::policy::OutputPolicy;
use fanout::topic_name::check_topic_name;

use crate::support;

fn source() -> SourceRecord {
    SourceRecord {
        topic: "cluster-events".into(),
        partition: 0,
        offset: 0,
        timestamp_ms: None,
        key: None,
        headers: vec![],
    }
}

/// Decodes like the pipeline; on success the event carries exactly the input bytes.
fn decode(raw: &[u8]) -> bool {
    match event::parse(raw) {
        Ok(parsed) => {
            let event = parsed.into_event(raw.to_vec(), source());
            assert_eq!(event.raw, raw);
            true
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            false
        }
    }
}

/// The input as a JSON value: whatever the decoder accepts, serde_json parses too (it forwards
/// the bytes unchanged, so nothing a strict parser downstream refuses may pass).
fn as_json(raw: &[u8]) -> serde_json::Value {
    serde_json::from_slice(raw).unwrap_or_else(|e| panic!("accepted, but not JSON: {e}"))
}

/// A fixture envelope with some bytes changed, removed or inserted.
fn mutated_envelope() -> impl Strategy<Value = Vec<u8>> {
    let lines = support::lines("events/eventrouter.jsonl");
    (
        0..lines.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8),
    )
        .prop_map(move |(line, edits)| {
            let mut bytes = lines[line].clone();
            for (at, byte, kind) in edits {
                if bytes.is_empty() {
                    break;
                }
                let i = at.index(bytes.len());
                match kind {
                    0 => bytes[i] = byte,
                    1 => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, byte),
                }
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_bytes_decode_or_fail_cleanly(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        if decode(&raw) {
            // Accepted input is a JSON object.
            prop_assert!(as_json(&raw).is_object());
        }
    }

    #[test]
    fn mutated_envelopes_decode_or_fail_cleanly(raw in mutated_envelope()) {
        if decode(&raw) {
            prop_assert!(matches!(as_json(&raw)["verb"].as_str(), Some("ADDED" | "UPDATED")));
        }
    }

    #[test]
    fn nesting_is_accepted_up_to_the_limit_and_refused_beyond(depth in 1usize..400) {
        let raw = format!(
            r#"{{"verb":"ADDED","event":{{}},"x":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        // The envelope's own object is one level.
        prop_assert_eq!(decode(raw.as_bytes()), depth < MAX_DEPTH);
        // The limit is serde_json's, so a plugin's lazy JSON parses every event accepted.
        prop_assert_eq!(
            decode(raw.as_bytes()),
            serde_json::from_str::<serde_json::Value>(&raw).is_ok()
        );
    }

    #[test]
    fn topic_names_follow_kafkas_rule(topic in "[a-zA-Z0-9._\\-]{0,260}|\\PC{0,20}") {
        let legal = (1..=249).contains(&topic.len())
            && topic != "."
            && topic != ".."
            && topic.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        prop_assert_eq!(check_topic_name(&topic).is_ok(), legal, "{:?}", topic);
    }

    #[test]
    fn the_output_policy_refuses_what_breaks_it(
        topics in prop::collection::vec("[a-z_.]{0,6}|__[a-z]{1,4}|\\PC{0,8}", 0..80),
        payload in 0usize..2_000_000,
    ) {
        let policy = OutputPolicy::default();
        let destinations: Vec<Destination> = topics
            .iter()
            .map(|t| Destination {
                topic: t.clone(),
                key: None,
                headers: vec![],
                payload: Some(vec![b'x'; payload / topics.len().max(1)]),
            })
            .collect();
        let allowed = destinations.len() <= policy.max_destinations
            && destinations.iter().all(|d| {
                check_topic_name(&d.topic).is_ok()
                    && !d.topic.starts_with("__")
                    && d.topic.len() + d.payload.as_ref().map_or(0, Vec::len) <= policy.max_record_bytes
            });
        let checked = policy.check(&destinations, 1_000);
        prop_assert_eq!(checked.is_ok(), allowed, "{:?}", checked);
    }
}
