//! Decoding: EventRouter envelope bytes → the [`Event`] every router reads, and which plugins
//! reach through their WIT `event` handle.
//!
//! The envelope is decoded once, here, with serde_json. Only the fields the WIT `event` offers
//! are extracted; everything else stays in `raw`, which plugins can parse lazily and which is
//! forwarded unchanged. So before the typed decode, the whole text is checked to be what strict
//! parsers downstream read the same way (valid UTF-8, and the rules of [`strict`]): whatever
//! is accepted here, serde_json and Go's `encoding/json` accept too. A decode failure is a
//! typed value, with the byte where it was found, that becomes a `malformed-event` dead
//! letter: nothing in this module panics on input, and nesting is bounded before any parser
//! recurses.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;

use crate::bindings::{ObjectReference, SourceRecord, Verb};

mod strict;

/// One decoded event: the fields of the WIT `event` resource, plus the exact source bytes.
///
/// Strings absent from the JSON are empty, as in Kubernetes' Go types. They are kept in one
/// buffer, one after another (an event is decoded for every record, and most plugins read one
/// or two of its fields): see the accessors.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub verb: Verb,
    pub count: i32,
    fields: Fields,
    /// The source record's value, unchanged: the whole envelope.
    pub raw: Vec<u8>,
    pub source: SourceRecord,
}

/// The string fields of an [`Event`], in the order of [`Field`].
#[derive(Debug, Clone, PartialEq, Default)]
struct Fields {
    text: String,
    /// Where each field is in `text`; `None` for an optional field absent or `null`.
    spans: [Option<(u32, u32)>; FIELDS],
}

/// The string fields an event has.
#[derive(Debug, Clone, Copy)]
enum Field {
    Name,
    Namespace,
    Uid,
    ObjectKind,
    ObjectNamespace,
    ObjectName,
    ObjectUid,
    ObjectApiVersion,
    ObjectFieldPath,
    Reason,
    Message,
    Type,
    SourceComponent,
    SourceHost,
    ReportingController,
    FirstTimestamp,
    LastTimestamp,
    EventTime,
}

const FIELDS: usize = Field::EventTime as usize + 1;

impl Fields {
    fn get(&self, field: Field) -> Option<&str> {
        self.spans[field as usize].map(|(start, len)| {
            let start = start as usize;
            &self.text[start..start + len as usize]
        })
    }

    fn str(&self, field: Field) -> &str {
        self.get(field).unwrap_or_default()
    }
}

impl Event {
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.fields.str(Field::Name)
    }
    /// `metadata.namespace`.
    pub fn namespace(&self) -> &str {
        self.fields.str(Field::Namespace)
    }
    /// `metadata.uid`.
    pub fn uid(&self) -> &str {
        self.fields.str(Field::Uid)
    }
    /// `involvedObject.name`, which EventRouter uses as the record key.
    pub fn involved_object_name(&self) -> &str {
        self.fields.str(Field::ObjectName)
    }
    /// `involvedObject`, copied out.
    pub fn involved_object(&self) -> ObjectReference {
        let f = |field| self.fields.str(field).to_owned();
        ObjectReference {
            kind: f(Field::ObjectKind),
            namespace: f(Field::ObjectNamespace),
            name: f(Field::ObjectName),
            uid: f(Field::ObjectUid),
            api_version: f(Field::ObjectApiVersion),
            field_path: f(Field::ObjectFieldPath),
        }
    }
    pub fn reason(&self) -> &str {
        self.fields.str(Field::Reason)
    }
    pub fn message(&self) -> &str {
        self.fields.str(Field::Message)
    }
    /// `type`: `Normal` or `Warning`, by convention.
    pub fn event_type(&self) -> &str {
        self.fields.str(Field::Type)
    }
    /// `source.component`.
    pub fn source_component(&self) -> &str {
        self.fields.str(Field::SourceComponent)
    }
    /// `source.host`.
    pub fn source_host(&self) -> &str {
        self.fields.str(Field::SourceHost)
    }
    /// `reportingComponent`.
    pub fn reporting_controller(&self) -> &str {
        self.fields.str(Field::ReportingController)
    }
    pub fn first_timestamp(&self) -> Option<&str> {
        self.fields.get(Field::FirstTimestamp)
    }
    pub fn last_timestamp(&self) -> Option<&str> {
        self.fields.get(Field::LastTimestamp)
    }
    pub fn event_time(&self) -> Option<&str> {
        self.fields.get(Field::EventTime)
    }
}

/// An event as it is routed: shared, read-only, by every plugin's `event` handle (each plugin
/// instance has its own resource table, so the handle holds a reference, not a copy).
pub type SharedEvent = Arc<Event>;

/// Why an envelope could not be decoded: what is wrong (serde_json's words for JSON errors)
/// and where, as `at byte N` (counted from 1, the column on a one-line envelope).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

/// The fields of one envelope, parsed from borrowed bytes and not yet joined to their source.
#[derive(Debug)]
pub struct Parsed {
    verb: Verb,
    count: i32,
    fields: Fields,
}

/// Deepest nesting accepted. serde_json refuses a 128th level ("recursion limit exceeded"), so
/// this is the most a plugin's lazy JSON can parse.
pub const MAX_DEPTH: usize = 127;

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
    // Once for the whole text, so that neither pass below validates UTF-8 string by string.
    let text = std::str::from_utf8(raw)
        .map_err(|e| DecodeError(format!("invalid UTF-8 at byte {}", e.valid_up_to() + 1)))?;
    check_depth(raw)?;
    strict::check(text).map_err(|e| located(raw, &e))?;
    serde_json::from_str::<WireEnvelope<'_>>(text)
        .map(Parsed::new)
        .map_err(|e| located(raw, &e))
}

/// serde_json's message, its `at line L column C` turned into the byte it names.
fn located(raw: &[u8], error: &serde_json::Error) -> DecodeError {
    let message = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match message.strip_suffix(&suffix) {
        Some(what) if error.line() > 0 => {
            // serde_json's words for these are misleading: it calls a lone trailing surrogate a
            // leading one, and a leading one with no trailing one an "end of hex escape".
            let what = if what == "lone leading surrogate in hex escape"
                || what == "unexpected end of hex escape"
            {
                "lone surrogate in a \\u escape"
            } else {
                what
            };
            // serde_json counts lines from 1 and, within one, the bytes up to and including the
            // one it names.
            let line_start = raw
                .split_inclusive(|&b| b == b'\n')
                .take(error.line() - 1)
                .map(<[u8]>::len)
                .sum::<usize>();
            DecodeError(format!(
                "{what} at byte {}",
                line_start + error.column().max(1)
            ))
        }
        _ => DecodeError(message),
    }
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
    /// Copies the borrowed fields into one buffer.
    fn new(envelope: WireEnvelope<'_>) -> Self {
        let WireEnvelope { verb, event } = envelope;
        let WireEvent {
            metadata,
            involved_object: object,
            reason,
            message,
            event_type,
            count,
            source,
            reporting_component,
            first_timestamp,
            last_timestamp,
            event_time,
        } = event;
        // In the order of `Field`.
        let values: [Option<&str>; FIELDS] = [
            Some(metadata.name.as_ref()),
            Some(metadata.namespace.as_ref()),
            Some(metadata.uid.as_ref()),
            Some(object.kind.as_ref()),
            Some(object.namespace.as_ref()),
            Some(object.name.as_ref()),
            Some(object.uid.as_ref()),
            Some(object.api_version.as_ref()),
            Some(object.field_path.as_ref()),
            Some(reason.as_ref()),
            Some(message.as_ref()),
            Some(event_type.as_ref()),
            Some(source.component.as_ref()),
            Some(source.host.as_ref()),
            Some(reporting_component.as_ref()),
            first_timestamp.as_deref(),
            last_timestamp.as_deref(),
            event_time.as_deref(),
        ];
        let mut fields = Fields {
            text: String::with_capacity(values.iter().flatten().map(|v| v.len()).sum()),
            spans: [None; FIELDS],
        };
        for (span, value) in fields.spans.iter_mut().zip(values) {
            *span = value.map(|v| {
                // The envelope came from one Kafka record, so every length fits in a u32.
                let start = fields.text.len() as u32;
                fields.text.push_str(v);
                (start, v.len() as u32)
            });
        }
        Self {
            verb: match verb {
                WireVerb::Added => Verb::Added,
                WireVerb::Updated => Verb::Updated,
            },
            count,
            fields,
        }
    }

    /// `involvedObject.name`, which EventRouter uses as the record key.
    pub fn involved_object_name(&self) -> &str {
        self.fields.str(Field::ObjectName)
    }

    /// Joins the parsed fields with the exact source bytes and the record they came from. `raw`
    /// is moved, not copied: plugins receive these very bytes, and forwarding them is free.
    pub fn into_event(self, raw: Vec<u8>, source: SourceRecord) -> Event {
        Event {
            verb: self.verb,
            count: self.count,
            fields: self.fields,
            raw,
            source,
        }
    }
}

// The wire types mirror Kubernetes' Go structs: a field absent from the JSON takes its zero value
// (`#[serde(default)]`), while a field of the wrong type is an error. Unknown fields (labels,
// annotations, series, old_event, ...) are skipped without being stored.

#[derive(Debug, Deserialize)]
struct WireEnvelope<'a> {
    verb: WireVerb,
    #[serde(borrow)]
    event: WireEvent<'a>,
}

#[derive(Debug, Deserialize)]
enum WireVerb {
    #[serde(rename = "ADDED")]
    Added,
    #[serde(rename = "UPDATED")]
    Updated,
}

// Strings borrow from the envelope's text unless they hold an escape.

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireEvent<'a> {
    #[serde(borrow)]
    metadata: WireMetadata<'a>,
    #[serde(borrow)]
    involved_object: WireObjectReference<'a>,
    #[serde(borrow)]
    reason: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    count: i32,
    #[serde(borrow)]
    source: WireEventSource<'a>,
    #[serde(borrow)]
    reporting_component: Cow<'a, str>,
    #[serde(borrow)]
    first_timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    last_timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event_time: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireMetadata<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    namespace: Cow<'a, str>,
    #[serde(borrow)]
    uid: Cow<'a, str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireObjectReference<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    namespace: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    api_version: Cow<'a, str>,
    #[serde(borrow)]
    field_path: Cow<'a, str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireEventSource<'a> {
    #[serde(borrow)]
    component: Cow<'a, str>,
    #[serde(borrow)]
    host: Cow<'a, str>,
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
        assert_eq!(ev.name(), "web-0.17f");
        assert_eq!(ev.namespace(), "shop");
        assert_eq!(ev.uid(), "u1");
        assert_eq!(ev.involved_object().kind, "Pod");
        assert_eq!(ev.involved_object().namespace, "shop");
        assert_eq!(ev.involved_object_name(), "web-0");
        assert_eq!(ev.involved_object().uid, "u2");
        assert_eq!(ev.involved_object().api_version, "v1");
        assert_eq!(ev.involved_object().field_path, "spec.containers{web}");
        assert_eq!(ev.reason(), "BackOff");
        assert_eq!(ev.message(), "Back-off <image>");
        assert_eq!(ev.event_type(), "Warning");
        assert_eq!(ev.count, 7);
        assert_eq!(ev.source_component(), "kubelet");
        assert_eq!(ev.source_host(), "node-1");
        assert_eq!(ev.reporting_controller(), "");
        assert_eq!(ev.first_timestamp(), Some("2026-11-20T08:15:02Z"));
        assert_eq!(ev.last_timestamp(), None);
        assert_eq!(ev.event_time(), None);
        assert_eq!(ev.raw, raw, "raw bytes are passed through untouched");
        assert_eq!(ev.source.offset, 42);
    }

    #[test]
    fn absent_fields_take_go_zero_values() {
        let raw = br#"{"verb":"ADDED","event":{}}"#.to_vec();
        let ev = parse(&raw).unwrap().into_event(raw.clone(), source());
        assert_eq!(ev.namespace(), "");
        assert_eq!(ev.count, 0);
        assert_eq!(ev.first_timestamp(), None);
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
                "invalid UTF-8 at byte 37",
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
            err.to_string().contains("nesting deeper than 127 levels"),
            "{err}"
        );
    }

    #[test]
    fn brackets_inside_strings_do_not_count_as_nesting() {
        let message = format!(r#"{{\"[\": \"{}\"}}"#, "[{".repeat(500));
        let raw = format!(r#"{{"verb":"ADDED","event":{{"message":"{message}"}}}}"#).into_bytes();
        let ev = parse(&raw).unwrap().into_event(raw.clone(), source());
        assert!(
            ev.message().starts_with(r#"{"[": "[{[{"#),
            "{}",
            ev.message()
        );
    }

    #[test]
    fn nesting_at_the_limit_is_accepted() {
        let mut input = br#"{"verb":"ADDED","event":{"metadata":{"labels":"#.to_vec();
        let inner = MAX_DEPTH - 3; // the envelope, event and metadata objects are 3 levels
        input.extend(std::iter::repeat_n(b'[', inner));
        input.extend(std::iter::repeat_n(b']', inner));
        input.extend(b"}}}");
        parse(&input).unwrap();
        serde_json::from_slice::<serde_json::Value>(&input).expect("a plugin can parse it");
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
        assert!(serde_json::from_slice::<serde_json::Value>(&deeper).is_err());
    }

    /// An envelope with `field` (raw JSON text) added to its metadata, a field the decoder
    /// does not extract.
    fn with_metadata(field: &[u8]) -> Vec<u8> {
        let mut raw = br#"{"verb":"ADDED","event":{"metadata":{"namespace":"shop","#.to_vec();
        raw.extend_from_slice(field);
        raw.extend_from_slice(b"}}}");
        raw
    }

    #[track_caller]
    fn refused(raw: &[u8], expected: &str) {
        let err = parse(raw).expect_err(&String::from_utf8_lossy(raw));
        assert_eq!(
            err.to_string(),
            expected,
            "{}",
            String::from_utf8_lossy(raw)
        );
    }

    #[test]
    fn what_strict_parsers_refuse_in_skipped_fields_is_refused_with_its_byte() {
        // The prefix `{"verb":"ADDED","event":{"metadata":{"namespace":"shop",` is 56 bytes.
        refused(
            &with_metadata(b"\"labels\":{\"a\":\"x\xffy\"}"),
            "invalid UTF-8 at byte 73",
        );
        refused(
            &with_metadata(b"\"labels\":{\"a\":\"\xed\xa0\x80\"}"),
            "invalid UTF-8 at byte 72",
        );
        refused(
            &with_metadata(br#""labels":{"a":"\ud800"}"#),
            "lone surrogate in a \\u escape at byte 78",
        );
        refused(
            &with_metadata(br#""labels":{"a":"\udc00x"}"#),
            "lone surrogate in a \\u escape at byte 77",
        );
        refused(
            &with_metadata(br#""labels":{"a":"\ud83d\u0041"}"#),
            "lone surrogate in a \\u escape at byte 83",
        );
        // A pair is one character.
        parse(&with_metadata(br#""labels":{"a":"\ud83d\ude00"}"#)).unwrap();
        refused(
            &with_metadata(br#""generation":1e999"#),
            "number out of range at byte 74",
        );
        refused(
            &with_metadata(br#""generation":-1e400"#),
            "number out of range at byte 75",
        );
        // Tiny numbers round to zero, as in serde_json and Go: accepted.
        parse(&with_metadata(br#""generation":1e-999"#)).unwrap();
    }

    #[test]
    fn duplicate_keys_are_refused_exactly_in_maps_and_ignoring_case_in_structs() {
        refused(
            &with_metadata(br#""labels":{"team":"a","team":"b"}"#),
            "duplicate key `team` at byte 83",
        );
        // Keys are compared unescaped.
        refused(
            &with_metadata(br#""labels":{"team":"a","t\u0065am":"b"}"#),
            "duplicate key `team` at byte 88",
        );
        // Kubernetes label keys are case-sensitive, and Go decodes labels into a map: both are
        // kept, so both are fine.
        parse(&with_metadata(br#""labels":{"app":"a","App":"b"}"#)).unwrap();
        // Go matches struct fields ignoring case, so it would read one of these two.
        refused(
            &with_metadata(br#""generation":1,"Generation":2"#),
            "duplicate key `Generation` (Go's encoding/json compares these keys ignoring case) \
             at byte 83",
        );
        refused(
            br#"{"verb":"ADDED","event":{},"Event":{}}"#,
            "key `Event` is not `event`, but Go's encoding/json reads it as `event` at byte 34",
        );
        refused(
            &with_metadata(br#""NAME":"web""#),
            "key `NAME` is not `name`, but Go's encoding/json reads it as `name` at byte 62",
        );
        // Go folds `ſ` to `S` and the Kelvin sign to `K`.
        refused(
            &with_metadata("\"name\u{17f}pace\":\"kube-system\"".as_bytes()),
            "key `name\u{17f}pace` is not `namespace`, but Go's encoding/json reads it as \
             `namespace` at byte 68",
        );
        refused(
            br#"{"verb":"ADDED","event":{"involvedObject":{"\u212aind":"Pod"}}}"#,
            "key `\u{212a}ind` is not `kind`, but Go's encoding/json reads it as `kind` at byte 54",
        );
        // Inside a struct fanout does not model, keys are compared exactly.
        parse(&with_metadata(
            br#""ownerReferences":[{"kind":"a","Kind":"b"}]"#,
        ))
        .unwrap();
    }

    #[test]
    fn a_large_object_is_checked_for_duplicates_in_linear_time() {
        let keys: Vec<String> = (0..20_000).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let unique = with_metadata(format!(r#""labels":{{{}}}"#, keys.join(",")).as_bytes());
        let started = std::time::Instant::now();
        parse(&unique).unwrap();
        let mut keys = keys;
        keys.push(r#""k7":0"#.to_owned());
        let twice = with_metadata(format!(r#""labels":{{{}}}"#, keys.join(",")).as_bytes());
        assert!(
            parse(&twice)
                .unwrap_err()
                .to_string()
                .starts_with("duplicate key `k7`")
        );
        // Pairwise, 20,000 keys are 200 million comparisons: seconds, not milliseconds.
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // And in a struct, where keys are compared ignoring case.
        let keys: Vec<String> = (0..20_000).map(|i| format!(r#""K{i}":{i}"#)).collect();
        let mut fields = keys.join(",");
        fields.push_str(r#","k19999":0"#);
        assert!(
            parse(&with_metadata(fields.as_bytes()))
                .unwrap_err()
                .to_string()
                .starts_with("duplicate key `k19999`")
        );
    }

    #[test]
    fn a_position_on_a_later_line_is_the_byte_in_the_whole_envelope() {
        let raw = b"{\"verb\":\"ADDED\",\n\"event\":{},\n\"x\":1e999}";
        refused(raw, "number out of range at byte 38");
    }
}
