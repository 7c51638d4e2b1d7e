//! Decoding: EventRouter envelope bytes → the [`Event`] every router reads, and which plugins
//! reach through their WIT `event` handle.
//!
//! The envelope is parsed exactly once, here, with serde_json. Only the fields the WIT `event`
//! offers are extracted; everything else stays in `raw`, which plugins can parse lazily. A
//! decode failure is a typed value that becomes a `malformed-event` dead letter: nothing in this
//! module panics on input, and serde_json's recursion limit bounds nesting.

use std::sync::Arc;

use serde::Deserialize;

use crate::bindings::{ObjectReference, SourceRecord, Verb};

/// One decoded event: the fields of the WIT `event` resource, plus the exact source bytes.
///
/// Strings absent from the JSON are empty, as in Kubernetes' Go types.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub verb: Verb,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub involved_object: ObjectReference,
    pub reason: String,
    pub message: String,
    pub event_type: String,
    pub count: i32,
    pub source_component: String,
    pub source_host: String,
    pub reporting_controller: String,
    pub first_timestamp: Option<String>,
    pub last_timestamp: Option<String>,
    pub event_time: Option<String>,
    /// The source record's value, unchanged: the whole envelope.
    pub raw: Vec<u8>,
    pub source: SourceRecord,
}

/// An event as it is routed: shared, read-only, by every plugin's `event` handle (each plugin
/// instance has its own resource table, so the handle holds a reference, not a copy).
pub type SharedEvent = Arc<Event>;

/// Why an envelope could not be decoded. Its message is serde_json's, which names the line and
/// column and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

/// The fields of one envelope, parsed from borrowed bytes and not yet joined to their source.
#[derive(Debug)]
pub struct Parsed(WireEnvelope);

/// Deepest nesting accepted. It matches serde_json's recursion limit, so a plugin's lazy JSON can
/// parse every event the host accepts.
pub const MAX_DEPTH: usize = 128;

/// Parses one EventRouter envelope (`{"verb":..,"event":{..},"old_event":{..}}`).
pub fn parse(raw: &[u8]) -> Result<Parsed, DecodeError> {
    // serde_json would read an array as the struct's fields in order; say what is wrong instead.
    match raw.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => {}
        Some(&other) => {
            return Err(DecodeError(format!(
                "an envelope must be a JSON object, found `{}` at the start",
                char::from(other).escape_default()
            )));
        }
    }
    check_depth(raw)?;
    serde_json::from_slice::<WireEnvelope>(raw)
        .map(Parsed)
        .map_err(|e| DecodeError(e.to_string()))
}

/// serde_json skips unknown fields iteratively, without its recursion limit, so nesting inside
/// fields we do not extract (labels, `old_event`, ...) is bounded here instead.
fn check_depth(raw: &[u8]) -> Result<(), DecodeError> {
    // Fast path: with no more opening brackets than the limit, nothing can nest deeper. This
    // count vectorises; only pathological inputs pay for the exact scan below.
    if raw.iter().filter(|&&b| b == b'[' || b == b'{').count() <= MAX_DEPTH {
        return Ok(());
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in raw.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(DecodeError(format!(
                        "nesting deeper than {MAX_DEPTH} levels at byte {}",
                        i + 1
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

impl Parsed {
    /// `involvedObject.name`, which EventRouter uses as the record key.
    pub fn involved_object_name(&self) -> &str {
        &self.0.event.involved_object.name
    }

    /// Joins the parsed fields with the exact source bytes and the record they came from. `raw`
    /// is moved, not copied: plugins receive these very bytes, and forwarding them is free.
    pub fn into_event(self, raw: Vec<u8>, source: SourceRecord) -> Event {
        let WireEnvelope { verb, event } = self.0;
        let WireEvent {
            metadata,
            involved_object,
            reason,
            message,
            event_type,
            count,
            source: event_source,
            reporting_component,
            first_timestamp,
            last_timestamp,
            event_time,
        } = event;
        Event {
            verb: match verb {
                WireVerb::Added => Verb::Added,
                WireVerb::Updated => Verb::Updated,
            },
            name: metadata.name,
            namespace: metadata.namespace,
            uid: metadata.uid,
            involved_object: ObjectReference {
                kind: involved_object.kind,
                namespace: involved_object.namespace,
                name: involved_object.name,
                uid: involved_object.uid,
                api_version: involved_object.api_version,
                field_path: involved_object.field_path,
            },
            reason,
            message,
            event_type,
            count,
            source_component: event_source.component,
            source_host: event_source.host,
            reporting_controller: reporting_component,
            first_timestamp,
            last_timestamp,
            event_time,
            raw,
            source,
        }
    }
}

// The wire types mirror Kubernetes' Go structs: a field absent from the JSON takes its zero value
// (`#[serde(default)]`), while a field of the wrong type is an error. Unknown fields (labels,
// annotations, series, old_event, ...) are skipped without being stored.

#[derive(Debug, Deserialize)]
struct WireEnvelope {
    verb: WireVerb,
    event: WireEvent,
}

#[derive(Debug, Deserialize)]
enum WireVerb {
    #[serde(rename = "ADDED")]
    Added,
    #[serde(rename = "UPDATED")]
    Updated,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireEvent {
    metadata: WireMetadata,
    involved_object: WireObjectReference,
    reason: String,
    message: String,
    #[serde(rename = "type")]
    event_type: String,
    count: i32,
    source: WireEventSource,
    reporting_component: String,
    first_timestamp: Option<String>,
    last_timestamp: Option<String>,
    event_time: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireMetadata {
    name: String,
    namespace: String,
    uid: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireObjectReference {
    kind: String,
    namespace: String,
    name: String,
    uid: String,
    api_version: String,
    field_path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireEventSource {
    component: String,
    host: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> SourceRecord {
        SourceRecord {
            topic: "cluster-events".into(),
            partition: 3,
            offset: 42,
            timestamp_ms: Some(1_700_000_000_000),
            key: Some(b"web-0".to_vec()),
            headers: vec![],
        }
    }

    const POD_EVENT: &str = r#"{"verb":"UPDATED","event":{"metadata":{"name":"web-0.17f","namespace":"shop","uid":"u1"},"involvedObject":{"kind":"Pod","namespace":"shop","name":"web-0","uid":"u2","apiVersion":"v1","fieldPath":"spec.containers{web}"},"reason":"BackOff","message":"Back-off \u003cimage\u003e","source":{"component":"kubelet","host":"node-1"},"firstTimestamp":"2026-11-20T08:15:02Z","lastTimestamp":null,"count":7,"type":"Warning","eventTime":null,"reportingComponent":""},"old_event":{"metadata":{"labels":{"a":"b"}}}}"#;

    #[test]
    fn decodes_every_record_field() {
        let raw = POD_EVENT.as_bytes().to_vec();
        let ev = parse(&raw).unwrap().into_event(raw.clone(), source());
        assert!(matches!(ev.verb, Verb::Updated));
        assert_eq!(ev.name, "web-0.17f");
        assert_eq!(ev.namespace, "shop");
        assert_eq!(ev.uid, "u1");
        assert_eq!(ev.involved_object.kind, "Pod");
        assert_eq!(ev.involved_object.namespace, "shop");
        assert_eq!(ev.involved_object.name, "web-0");
        assert_eq!(ev.involved_object.uid, "u2");
        assert_eq!(ev.involved_object.api_version, "v1");
        assert_eq!(ev.involved_object.field_path, "spec.containers{web}");
        assert_eq!(ev.reason, "BackOff");
        assert_eq!(ev.message, "Back-off <image>");
        assert_eq!(ev.event_type, "Warning");
        assert_eq!(ev.count, 7);
        assert_eq!(ev.source_component, "kubelet");
        assert_eq!(ev.source_host, "node-1");
        assert_eq!(ev.reporting_controller, "");
        assert_eq!(ev.first_timestamp.as_deref(), Some("2026-11-20T08:15:02Z"));
        assert_eq!(ev.last_timestamp, None);
        assert_eq!(ev.event_time, None);
        assert_eq!(ev.raw, raw, "raw bytes are passed through untouched");
        assert_eq!(ev.source.offset, 42);
    }

    #[test]
    fn absent_fields_take_go_zero_values() {
        let raw = br#"{"verb":"ADDED","event":{}}"#.to_vec();
        let ev = parse(&raw).unwrap().into_event(raw.clone(), source());
        assert_eq!(ev.namespace, "");
        assert_eq!(ev.count, 0);
        assert_eq!(ev.first_timestamp, None);
    }

    #[test]
    fn malformed_envelopes_are_typed_errors_not_panics() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "must be a JSON object, found `n`"),
            (
                br#"{"verb":"ADDED","event":{"metadata":{"#,
                "EOF while parsing",
            ),
            (br#"{"verb":"ADDED","event":null}"#, "invalid type: null"),
            (br#"{"verb":"ADDED"}"#, "missing field `event`"),
            (br#"{"event":{}}"#, "missing field `verb`"),
            (
                br#"{"verb":"DELETED","event":{}}"#,
                "unknown variant `DELETED`",
            ),
            (
                br#"{"verb":"ADDED","event":{"metadata":{"namespace":42}}}"#,
                "invalid type: integer `42`, expected a string",
            ),
            (b"[1,2,3]", "must be a JSON object, found `[`"),
            (
                b"{\"verb\":\"ADDED\",\"event\":{\"reason\":\"a\xff\"}}",
                "invalid unicode",
            ),
            (br#"{"verb":"ADDED","event":{}} xyz"#, "trailing characters"),
            (b"", "EOF while parsing"),
            (
                br#"{"verb":"ADDED","event":{"count":99999999999}}"#,
                "invalid value",
            ),
        ];
        for (input, expected) in cases {
            let err = parse(input).expect_err(&String::from_utf8_lossy(input));
            assert!(
                err.to_string().contains(expected),
                "{:?}: got {err}, expected it to mention {expected}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn extreme_nesting_is_an_error_not_a_stack_overflow() {
        // Well-formed, but 100,000 levels deep inside a field the host does not extract.
        let mut input = br#"{"verb":"ADDED","event":{"metadata":{"labels":"#.to_vec();
        input.extend(std::iter::repeat_n(b'[', 100_000));
        input.extend(std::iter::repeat_n(b']', 100_000));
        input.extend(b"}}}");
        let err = parse(&input).unwrap_err();
        assert!(
            err.to_string().contains("nesting deeper than 128 levels"),
            "{err}"
        );
    }

    #[test]
    fn brackets_inside_strings_do_not_count_as_nesting() {
        let message = format!(r#"{{\"[\": \"{}\"}}"#, "[{".repeat(500));
        let raw = format!(r#"{{"verb":"ADDED","event":{{"message":"{message}"}}}}"#).into_bytes();
        let ev = parse(&raw).unwrap().into_event(raw.clone(), source());
        assert!(ev.message.starts_with(r#"{"[": "[{[{"#), "{}", ev.message);
    }

    #[test]
    fn nesting_at_the_limit_is_accepted() {
        let mut input = br#"{"verb":"ADDED","event":{"metadata":{"labels":"#.to_vec();
        let inner = MAX_DEPTH - 3; // the envelope, event and metadata objects are 3 levels
        input.extend(std::iter::repeat_n(b'[', inner));
        input.extend(std::iter::repeat_n(b']', inner));
        input.extend(b"}}}");
        parse(&input).unwrap();
        let mut deeper = br#"{"verb":"ADDED","event":{"metadata":{"labels":"#.to_vec();
        deeper.extend(std::iter::repeat_n(b'[', inner + 1));
        deeper.extend(std::iter::repeat_n(b']', inner + 1));
        deeper.extend(b"}}}");
        assert!(
            parse(&deeper)
                .unwrap_err()
                .to_string()
                .contains("nesting deeper")
        );
    }
}
