//! The envelope decoder, `fanout::event::parse`, on any bytes (what the source topic can hold).
//!
//! Beyond "no panic, no sanitizer report":
//! - decoding is deterministic: the same bytes give the same event, or the same error;
//! - an error has a message; an accepted envelope's accessors work, and the event carries
//!   exactly the input bytes as `raw`;
//! - what is accepted, `serde_json::Value` accepts too (so it is UTF-8, has no lone surrogate
//!   escape and no number beyond an f64, anywhere), and it agrees with that independent
//!   reading: an object whose `verb` is the string "ADDED" or "UPDATED", whose `event` and
//!   nested records are objects, and whose extracted fields have the values the decoder
//!   returned (absent: Go's zero value).

#![no_main]

use fanout::bindings::{SourceRecord, Verb};
use fanout::event::{self, Event};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

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

fn decode(data: &[u8]) -> Result<Event, String> {
    match event::parse(data) {
        Ok(parsed) => {
            let name = parsed.involved_object_name().to_owned();
            let event = parsed.into_event(data.to_vec(), source());
            assert_eq!(event.involved_object_name(), name);
            Ok(event)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The input as a JSON value. Whatever the decoder accepts, serde_json must parse too: the
/// decoder forwards the bytes unchanged, so an envelope that a strict parser downstream (or a
/// plugin's lazy JSON) refuses must be a dead letter instead. (The decoder refuses more: a
/// duplicate key, a key Go's case-insensitive matching would read as an extracted field.)
fn as_json(data: &[u8]) -> Value {
    serde_json::from_slice(data).unwrap_or_else(|e| panic!("accepted, but not JSON: {e}"))
}

/// A string field: absent is "", anything but a string would have been refused.
fn string(record: &Value, field: &str) -> String {
    match record.get(field) {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => panic!("accepted a non-string `{field}`: {other}"),
    }
}

/// An optional string field: absent or null is None.
fn opt_string(record: &Value, field: &str) -> Option<String> {
    match record.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => panic!("accepted a non-string `{field}`: {other}"),
    }
}

/// A nested record: absent is empty; anything but an object is not a Kubernetes record.
fn record<'a>(parent: &'a Value, field: &str) -> Option<&'a Value> {
    match parent.get(field) {
        None => None,
        Some(v @ Value::Object(_)) => Some(v),
        Some(other) => panic!("accepted a non-object `{field}`: {other}"),
    }
}

fn agrees_with_json(event: &Event, value: &Value) {
    assert!(value.is_object(), "accepted a non-object envelope");
    let verb = match value.get("verb") {
        Some(Value::String(v)) if v == "ADDED" => Verb::Added,
        Some(Value::String(v)) if v == "UPDATED" => Verb::Updated,
        other => panic!("accepted verb {other:?}"),
    };
    assert!(verb == event.verb, "{verb:?} decoded as {:?}", event.verb);
    let ev = match value.get("event") {
        Some(v @ Value::Object(_)) => v,
        other => panic!("accepted `event` {other:?}"),
    };
    let empty = Value::Object(Default::default());
    let metadata = record(ev, "metadata").unwrap_or(&empty);
    let involved = record(ev, "involvedObject").unwrap_or(&empty);
    let src = record(ev, "source").unwrap_or(&empty);

    assert_eq!(event.name(), string(metadata, "name"));
    assert_eq!(event.namespace(), string(metadata, "namespace"));
    assert_eq!(event.uid(), string(metadata, "uid"));
    let o = &event.involved_object();
    assert_eq!(o.kind, string(involved, "kind"));
    assert_eq!(o.namespace, string(involved, "namespace"));
    assert_eq!(o.name, string(involved, "name"));
    assert_eq!(o.uid, string(involved, "uid"));
    assert_eq!(o.api_version, string(involved, "apiVersion"));
    assert_eq!(o.field_path, string(involved, "fieldPath"));
    assert_eq!(event.reason(), string(ev, "reason"));
    assert_eq!(event.message(), string(ev, "message"));
    assert_eq!(event.event_type(), string(ev, "type"));
    assert_eq!(event.source_component(), string(src, "component"));
    assert_eq!(event.source_host(), string(src, "host"));
    assert_eq!(event.reporting_controller(), string(ev, "reportingComponent"));
    assert_eq!(event.first_timestamp(), opt_string(ev, "firstTimestamp").as_deref());
    assert_eq!(event.last_timestamp(), opt_string(ev, "lastTimestamp").as_deref());
    assert_eq!(event.event_time(), opt_string(ev, "eventTime").as_deref());
    let count = match ev.get("count") {
        None => 0,
        Some(v) => v
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or_else(|| panic!("accepted count {v}")),
    };
    assert_eq!(event.count, count);
}

fuzz_target!(|data: &[u8]| {
    let first = decode(data);
    let second = decode(data);
    assert_eq!(first, second, "decoding the same bytes twice differs");
    match first {
        Ok(event) => {
            assert_eq!(event.raw, data);
            agrees_with_json(&event, &as_json(data));
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
