//! Why an event went to the dead-letter topic, as a typed value.
//!
//! Every event has exactly one outcome: routed, filtered (an empty destination list) or
//! dead-lettered with one of these reasons. The reason's [`kind`](DeadLetterReason::kind) is a
//! stable identifier for metrics and alerting; its `Display` form, `<kind>: <detail>`, is what
//! the `fanout-reason` header and `fanout route` print. [`headers`] names the headers a
//! dead-letter record carries.

use std::fmt;
use std::time::Duration;

/// The longest source key a dead-letter record without the value still carries.
pub const MAX_KEPT_KEY: usize = 4096;

/// Header names on dead-letter records.
pub mod headers {
    pub const REASON: &str = "fanout-reason";
    pub const SOURCE_TOPIC: &str = "fanout-source-topic";
    pub const SOURCE_PARTITION: &str = "fanout-source-partition";
    pub const SOURCE_OFFSET: &str = "fanout-source-offset";
    pub const PLUGIN: &str = "fanout-plugin";
    /// On every record fanout writes, routed or dead letter: the version of the plugin set that
    /// decided it (`native` for the built-in router).
    pub const PLUGIN_SET: &str = "fanout-plugin-set";
    /// On a dead-letter record written without the event's value, because the whole record
    /// would not fit the producer's or the broker's size limit: the value's size, in bytes.
    pub const VALUE_OMITTED: &str = "fanout-value-omitted";
    /// Likewise for a key longer than [`MAX_KEPT_KEY`](super::MAX_KEPT_KEY), dropped with it.
    pub const KEY_OMITTED: &str = "fanout-key-omitted";
}

/// Longest detail kept from a plugin's own message, so that a plugin cannot inflate every
/// dead-letter record.
pub const MAX_DETAIL_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The envelope is not a usable EventRouter event. Holds the parser's message.
    MalformedEvent(String),
    /// The plugin returned an error. Holds its message.
    PluginError(String),
    /// The plugin trapped (panic, stack overflow, memory cap, ...). Holds what happened.
    PluginTrap(String),
    /// The plugin ran past the per-call deadline.
    PluginTimeout(Duration),
    /// A fresh instance of the plugin could not be started after an earlier trap.
    PluginUnavailable(String),
    /// The plugins returned more destinations than allowed.
    TooManyDestinations { count: usize, limit: usize },
    /// A destination topic breaks Kafka's naming rules.
    InvalidTopic {
        topic: String,
        problem: &'static str,
    },
    /// A destination topic is legal but not allowed by policy (for example an internal `__` topic).
    TopicDenied { topic: String, rule: String },
    /// A destination sets a header the host reserves: the lineage header, which must name the
    /// routing that really decided the event.
    ReservedHeader { topic: String, header: String },
    /// One destination record has more headers than allowed.
    TooManyHeaders {
        topic: String,
        count: usize,
        limit: usize,
    },
    /// One destination record is larger than the configured limit.
    RecordTooLarge {
        topic: String,
        bytes: usize,
        limit: usize,
    },
    /// The broker refused a destination write for good (too large, not authorised, invalid
    /// topic). Other writes of the event may have landed.
    ProduceFailed { topic: String, error: String },
}

impl DeadLetterReason {
    /// A stable identifier of the reason, without details.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MalformedEvent(_) => "malformed-event",
            Self::PluginError(_) => "plugin-error",
            Self::PluginTrap(_) => "plugin-trap",
            Self::PluginTimeout(_) => "plugin-timeout",
            Self::PluginUnavailable(_) => "plugin-unavailable",
            Self::TooManyDestinations { .. } => "too-many-destinations",
            Self::InvalidTopic { .. } => "invalid-topic",
            Self::TopicDenied { .. } => "topic-denied",
            Self::ReservedHeader { .. } => "reserved-header",
            Self::TooManyHeaders { .. } => "too-many-headers",
            Self::RecordTooLarge { .. } => "record-too-large",
            Self::ProduceFailed { .. } => "produce-failed",
        }
    }

    /// Whether the plugin set is to blame: its error, trap or timeout, or output that breaks the
    /// policy. Not a malformed input (no plugin saw it) nor a broker's refusal. These are what a
    /// set on trial after a reload is judged by.
    pub fn is_plugin_fault(&self) -> bool {
        !matches!(self, Self::MalformedEvent(_) | Self::ProduceFailed { .. })
    }

    /// A plugin error, with the plugin's message cut to [`MAX_DETAIL_BYTES`].
    pub fn plugin_error(message: &str) -> Self {
        Self::PluginError(truncate(message))
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.kind())?;
        match self {
            Self::MalformedEvent(detail)
            | Self::PluginError(detail)
            | Self::PluginTrap(detail)
            | Self::PluginUnavailable(detail) => f.write_str(detail),
            Self::PluginTimeout(deadline) => {
                write!(f, "exceeded the {} ms deadline", deadline.as_millis())
            }
            Self::TooManyDestinations { count, limit } => {
                write!(f, "{count} destinations, at most {limit} are allowed")
            }
            Self::InvalidTopic { topic, problem } => {
                write!(f, "topic {:?} {problem}", shorten(topic))
            }
            Self::TopicDenied { topic, rule } => write!(f, "topic {:?} {rule}", shorten(topic)),
            Self::ReservedHeader { topic, header } => write!(
                f,
                "the record for topic {:?} sets header {:?}, which fanout reserves for the \
                 plugin set's version",
                shorten(topic),
                shorten(header)
            ),
            Self::TooManyHeaders {
                topic,
                count,
                limit,
            } => write!(
                f,
                "record for topic {:?} has {count} headers, at most {limit} are allowed",
                shorten(topic)
            ),
            Self::RecordTooLarge {
                topic,
                bytes,
                limit,
            } => write!(
                f,
                "record for topic {:?} is {bytes} bytes, the limit is {limit}",
                shorten(topic)
            ),
            Self::ProduceFailed { topic, error } => {
                write!(
                    f,
                    "writing to topic {:?} failed: {}",
                    shorten(topic),
                    truncate(error)
                )
            }
        }
    }
}

/// Cuts `s` to at most [`MAX_DETAIL_BYTES`] on a character boundary.
pub fn truncate(s: &str) -> String {
    if s.len() <= MAX_DETAIL_BYTES {
        return s.to_owned();
    }
    let mut end = MAX_DETAIL_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// Topic names in reasons are cut to 64 characters: a 10 KB "topic" must not become a 10 KB header.
fn shorten(topic: &str) -> String {
    match topic.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", &topic[..end]),
        None => topic.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_kind_then_detail() {
        let r = DeadLetterReason::plugin_error("no namespace");
        assert_eq!(r.to_string(), "plugin-error: no namespace");
        let r = DeadLetterReason::PluginTimeout(Duration::from_millis(100));
        assert_eq!(
            r.to_string(),
            "plugin-timeout: exceeded the 100 ms deadline"
        );
    }

    #[test]
    fn long_details_are_truncated_on_char_boundaries() {
        let long = "é".repeat(2000);
        let r = DeadLetterReason::plugin_error(&long);
        let shown = r.to_string();
        assert!(shown.len() < MAX_DETAIL_BYTES + 64, "{}", shown.len());
        assert!(shown.ends_with("(4000 bytes)"));
        let topic = "a".repeat(300);
        let r = DeadLetterReason::InvalidTopic {
            topic,
            problem: "is too long",
        };
        assert!(r.to_string().len() < 120, "{r}");
    }
}
