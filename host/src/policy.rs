//! Output validation: what a plugin may ask the host to write.
//!
//! Every destination list passes through [`OutputPolicy::check`] before anything is produced. A
//! violation dead-letters the whole event with a typed reason; nothing is partially written.

use crate::bindings::Destination;
use crate::deadletter::{DeadLetterReason, headers};
use crate::topic_name::{Glob, check_topic_name};

/// Most headers one destination record may have. Kafka sets no limit; this one bounds what a
/// record's headers cost the host even when they are all empty (see `plugin::lift`).
pub const MAX_HEADERS: usize = 1_000;

/// Limits on the destinations of one event.
#[derive(Debug, Clone)]
pub struct OutputPolicy {
    /// Most destinations one event may have, across all plugins.
    pub max_destinations: usize,
    /// Largest record (key + value + headers) one destination may produce, in bytes.
    pub max_record_bytes: usize,
    /// Topics no plugin may write to, each with why (the source topic, the dead-letter topic).
    pub reserved_topics: Vec<(String, &'static str)>,
    /// A destination must match one of these patterns...
    pub allow: Vec<Glob>,
    /// ...and none of these.
    pub deny: Vec<Glob>,
}

/// The topics the service reserves: the source topic (a write there would loop) and the
/// dead-letter topic (a plugin could forge dead letters). `fanout run` and the dry run both
/// refuse them, so a plugin author sees what the service will do.
pub fn service_reservations(source: &str, dead_letter: &str) -> Vec<(String, &'static str)> {
    vec![
        (source.to_owned(), "is the source topic"),
        (dead_letter.to_owned(), "is the dead-letter topic"),
    ]
}

impl Default for OutputPolicy {
    fn default() -> Self {
        Self {
            max_destinations: 64,
            // Just under the broker's default `message.max.bytes` (1048588) minus batch overhead.
            max_record_bytes: 1_000_000,
            reserved_topics: Vec::new(),
            allow: vec![Glob::any()],
            deny: Vec::new(),
        }
    }
}

impl OutputPolicy {
    /// Checks one event's destinations. `raw_len` is the size of the source value, which a
    /// destination without its own payload forwards.
    pub fn check(
        &self,
        destinations: &[Destination],
        raw_len: usize,
    ) -> Result<(), DeadLetterReason> {
        if destinations.len() > self.max_destinations {
            return Err(DeadLetterReason::TooManyDestinations {
                count: destinations.len(),
                limit: self.max_destinations,
            });
        }
        for d in destinations {
            check_topic_name(&d.topic).map_err(|problem| DeadLetterReason::InvalidTopic {
                topic: d.topic.clone(),
                problem,
            })?;
            self.check_topic_rules(&d.topic)
                .map_err(|rule| DeadLetterReason::TopicDenied {
                    topic: d.topic.clone(),
                    rule,
                })?;
            if d.headers.len() > MAX_HEADERS {
                return Err(DeadLetterReason::TooManyHeaders {
                    topic: d.topic.clone(),
                    count: d.headers.len(),
                    limit: MAX_HEADERS,
                });
            }
            // The lineage header names the routing that really decided the event; a forged one
            // would point an investigation at the wrong release.
            if let Some(h) = d.headers.iter().find(|h| h.key == headers::PLUGIN_SET) {
                return Err(DeadLetterReason::ReservedHeader {
                    topic: d.topic.clone(),
                    header: h.key.clone(),
                });
            }
            let bytes = record_size(d, raw_len);
            if bytes > self.max_record_bytes {
                return Err(DeadLetterReason::RecordTooLarge {
                    topic: d.topic.clone(),
                    bytes,
                    limit: self.max_record_bytes,
                });
            }
        }
        Ok(())
    }
}

impl OutputPolicy {
    fn check_topic_rules(&self, topic: &str) -> Result<(), String> {
        if topic.starts_with("__") {
            return Err("is an internal topic (starts with `__`)".into());
        }
        if let Some((_, why)) = self.reserved_topics.iter().find(|(t, _)| t == topic) {
            return Err((*why).to_owned());
        }
        if let Some(pattern) = self.deny.iter().find(|g| g.matches(topic)) {
            return Err(format!("matches the deny pattern `{}`", pattern.as_str()));
        }
        if !self.allow.iter().any(|g| g.matches(topic)) {
            return Err("matches no allow pattern".into());
        }
        Ok(())
    }
}

/// The bytes of the record a destination asks for: its own key, its value (the source's
/// `raw_len` bytes when it forwards them) and its headers, without Kafka's framing.
pub fn record_size(d: &Destination, raw_len: usize) -> usize {
    let key = d.key.as_ref().map_or(0, Vec::len);
    let value = d.payload.as_ref().map_or(raw_len, Vec::len);
    let headers: usize = d
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len))
        .sum();
    key + value + headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::Header;

    fn to(topic: &str) -> Destination {
        Destination {
            topic: topic.into(),
            key: None,
            headers: vec![],
            payload: None,
        }
    }

    #[test]
    fn internal_topics_are_denied() {
        let err = OutputPolicy::default()
            .check(&[to("__consumer_offsets")], 10)
            .unwrap_err();
        assert_eq!(err.kind(), "topic-denied");
        // A single leading underscore is an ordinary topic.
        OutputPolicy::default().check(&[to("_audit")], 10).unwrap();
    }

    #[test]
    fn reserved_allowed_and_denied_topics() {
        let policy = OutputPolicy {
            reserved_topics: vec![("cluster-events".into(), "is the source topic")],
            allow: vec!["team-*".parse().unwrap(), "audit".parse().unwrap()],
            deny: vec!["team-secret*".parse().unwrap()],
            ..OutputPolicy::default()
        };
        policy.check(&[to("team-a"), to("audit")], 1).unwrap();
        let denied = |topic: &str| match policy.check(&[to(topic)], 1).unwrap_err() {
            DeadLetterReason::TopicDenied { rule, .. } => rule,
            other => panic!("{other}"),
        };
        assert_eq!(denied("cluster-events"), "is the source topic");
        assert_eq!(
            denied("team-secrets"),
            "matches the deny pattern `team-secret*`"
        );
        assert_eq!(denied("payments"), "matches no allow pattern");
    }

    #[test]
    fn destination_count_and_record_size_are_capped() {
        let policy = OutputPolicy {
            max_destinations: 2,
            max_record_bytes: 100,
            ..OutputPolicy::default()
        };
        let err = policy.check(&[to("a"), to("b"), to("c")], 10).unwrap_err();
        assert_eq!(
            err,
            DeadLetterReason::TooManyDestinations { count: 3, limit: 2 }
        );
        // Forwarding a source value counts its size.
        assert_eq!(
            policy.check(&[to("a")], 101).unwrap_err().kind(),
            "record-too-large"
        );
        let mut d = to("a");
        d.payload = Some(vec![0; 60]);
        d.headers.push(Header {
            key: "h".into(),
            value: Some(vec![0; 40]),
        });
        assert_eq!(
            policy.check(&[d], 1).unwrap_err().kind(),
            "record-too-large"
        );
    }

    #[test]
    fn headers_are_capped_in_number() {
        let policy = OutputPolicy::default();
        let mut d = to("a");
        d.headers = vec![
            Header {
                key: String::new(),
                value: None,
            };
            MAX_HEADERS
        ];
        assert!(policy.check(std::slice::from_ref(&d), 1).is_ok());
        d.headers.push(d.headers[0].clone());
        let reason = policy.check(&[d], 1).unwrap_err();
        assert_eq!(
            reason.to_string(),
            "too-many-headers: record for topic \"a\" has 1001 headers, at most 1000 are allowed"
        );
    }

    #[test]
    fn plugins_cannot_set_the_lineage_header() {
        let mut d = to("a");
        d.headers.push(Header {
            key: "fanout-plugin-set".into(),
            value: Some(b"forged".to_vec()),
        });
        let err = OutputPolicy::default().check(&[d], 1).unwrap_err();
        assert_eq!(err.kind(), "reserved-header");
        assert!(err.to_string().contains("\"fanout-plugin-set\""), "{err}");
    }
}
