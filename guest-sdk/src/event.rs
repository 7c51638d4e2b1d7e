//! The event a plugin routes.

use std::cell::OnceCell;
use std::fmt;

use serde_json::{Map, Value};

use crate::__private::WitEvent;
use crate::{Header, ObjectReference, SourceRecord, Verb};

/// One Kubernetes event, as parsed by the host from an EventRouter envelope
/// `{"verb":..,"event":{core/v1 Event},"old_event":{..}}`, plus the Kafka record it came from.
///
/// The common fields are parsed by the host. Each is copied into the plugin the first time it is
/// read and then cached, so a plugin pays only for the fields it reads: reading the namespace
/// costs one call to the host, while the 1 KiB [`raw`](Event::raw) envelope is never copied
/// unless asked for. Everything else (labels, annotations, `series`, `old_event`, ...) is read
/// from the raw envelope with [`json`](Event::json), [`pointer`](Event::pointer),
/// [`label`](Event::label), [`annotation`](Event::annotation) and
/// [`old_event`](Event::old_event): the envelope is parsed the first time one of them is called
/// and the result is cached too.
///
/// As in Kubernetes' Go types, a string field absent from the JSON is the empty string.
///
/// In native unit tests, build events with [`Event::from_envelope`] and the `with_source_*`
/// methods.
#[derive(Clone)]
pub struct Event<'h> {
    /// The host's event, valid for one `route` call. `None` for an event built natively by
    /// [`Event::from_envelope`], which fills every field up front.
    handle: Option<&'h WitEvent>,
    fields: Loaded,
    json: OnceCell<Result<Value, JsonError>>,
}

/// The event's fields, each filled on first use.
#[derive(Clone, Default)]
struct Loaded {
    verb: OnceCell<Verb>,
    name: OnceCell<String>,
    namespace: OnceCell<String>,
    uid: OnceCell<String>,
    involved_object: OnceCell<ObjectReference>,
    reason: OnceCell<String>,
    message: OnceCell<String>,
    event_type: OnceCell<String>,
    count: OnceCell<i32>,
    source_component: OnceCell<String>,
    source_host: OnceCell<String>,
    reporting_controller: OnceCell<String>,
    first_timestamp: OnceCell<Option<String>>,
    last_timestamp: OnceCell<Option<String>>,
    event_time: OnceCell<Option<String>>,
    raw: OnceCell<Vec<u8>>,
    source: OnceCell<SourceRecord>,
    /// Filled instead of `source` when only the key is read, which is the common case.
    source_key: OnceCell<Option<Vec<u8>>>,
}

impl fmt::Debug for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("verb", &self.verb())
            .field("name", &self.name())
            .field("namespace", &self.namespace())
            .field("uid", &self.uid())
            .field("involved_object", self.involved_object())
            .field("reason", &self.reason())
            .field("message", &self.message())
            .field("event_type", &self.event_type())
            .field("count", &self.count())
            .field("source_component", &self.source_component())
            .field("source_host", &self.source_host())
            .field("reporting_controller", &self.reporting_controller())
            .field("first_timestamp", &self.first_timestamp())
            .field("last_timestamp", &self.last_timestamp())
            .field("event_time", &self.event_time())
            .field("raw", &String::from_utf8_lossy(self.raw()))
            .field("source", self.source())
            .finish()
    }
}

/// An error from reading or writing JSON: the event's raw envelope is not valid JSON, or a
/// payload cannot be encoded.
///
/// It implements `std::error::Error` and converts into `String`, so `?` works in route
/// functions returning `Result<_, String>` as well as `anyhow::Result`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonError {
    message: String,
}

impl JsonError {
    pub(crate) fn new(message: String) -> Self {
        JsonError { message }
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JsonError {}

impl From<JsonError> for String {
    fn from(e: JsonError) -> String {
        e.message
    }
}

impl<'h> Event<'h> {
    /// Wraps the handle received from the host. Nothing is copied until a field is read.
    pub(crate) fn from_wit(handle: &'h WitEvent) -> Self {
        Event {
            handle: Some(handle),
            fields: Loaded::default(),
            json: OnceCell::new(),
        }
    }

    /// A field: cached, or copied from the host on first use.
    fn field<'s, T>(&'s self, cell: &'s OnceCell<T>, fetch: fn(&WitEvent) -> T) -> &'s T {
        cell.get_or_init(|| {
            // An event built natively has every field filled, so only a host event gets here.
            fetch(
                self.handle
                    .expect("an event without a host handle has every field set"),
            )
        })
    }

    /// The envelope's `verb`: [`Verb::Added`] or [`Verb::Updated`].
    pub fn verb(&self) -> Verb {
        *self.field(&self.fields.verb, WitEvent::verb)
    }

    /// `event.metadata.name`, for example `prometheus-k8s-0.180001eef`.
    pub fn name(&self) -> &str {
        self.field(&self.fields.name, WitEvent::name).as_str()
    }

    /// `event.metadata.namespace`: where the Event object is stored; empty when missing.
    /// Events about cluster-scoped objects are stored in `default`.
    pub fn namespace(&self) -> &str {
        self.field(&self.fields.namespace, WitEvent::namespace)
            .as_str()
    }

    /// `event.metadata.uid`.
    pub fn uid(&self) -> &str {
        self.field(&self.fields.uid, WitEvent::uid).as_str()
    }

    /// `event.involvedObject`: the object the event is about.
    pub fn involved_object(&self) -> &ObjectReference {
        self.field(&self.fields.involved_object, WitEvent::involved_object)
    }

    /// `event.reason`, a short CamelCase machine-readable cause, for example `BackOff`.
    pub fn reason(&self) -> &str {
        self.field(&self.fields.reason, WitEvent::reason).as_str()
    }

    /// `event.message`, human-readable.
    pub fn message(&self) -> &str {
        self.field(&self.fields.message, WitEvent::message).as_str()
    }

    /// `event.type`: `Normal` or `Warning` (other values occur and are passed through).
    pub fn event_type(&self) -> &str {
        self.field(&self.fields.event_type, WitEvent::event_type)
            .as_str()
    }

    /// `event.count`: how many times this event has occurred; 0 when absent.
    pub fn count(&self) -> i32 {
        *self.field(&self.fields.count, WitEvent::count)
    }

    /// `event.source.component`, for example `kubelet`.
    pub fn source_component(&self) -> &str {
        self.field(&self.fields.source_component, WitEvent::source_component)
            .as_str()
    }

    /// `event.source.host`: the node that reported the event.
    pub fn source_host(&self) -> &str {
        self.field(&self.fields.source_host, WitEvent::source_host)
            .as_str()
    }

    /// `event.reportingComponent`, for example `default-scheduler`.
    pub fn reporting_controller(&self) -> &str {
        self.field(
            &self.fields.reporting_controller,
            WitEvent::reporting_controller,
        )
        .as_str()
    }

    /// `event.firstTimestamp` exactly as found (RFC 3339), or `None` when null or absent.
    pub fn first_timestamp(&self) -> Option<&str> {
        self.field(&self.fields.first_timestamp, WitEvent::first_timestamp)
            .as_deref()
    }

    /// `event.lastTimestamp` exactly as found (RFC 3339), or `None` when null or absent.
    pub fn last_timestamp(&self) -> Option<&str> {
        self.field(&self.fields.last_timestamp, WitEvent::last_timestamp)
            .as_deref()
    }

    /// `event.eventTime` exactly as found (RFC 3339 with microseconds), or `None` when null or
    /// absent.
    pub fn event_time(&self) -> Option<&str> {
        self.field(&self.fields.event_time, WitEvent::event_time)
            .as_deref()
    }

    /// The exact bytes of the source record's value: the whole EventRouter envelope.
    ///
    /// Copied from the host on first use (about 1 KiB). A destination without a payload forwards
    /// these bytes without the plugin ever reading them.
    pub fn raw(&self) -> &[u8] {
        self.field(&self.fields.raw, WitEvent::raw).as_slice()
    }

    /// The length of [`raw`](Event::raw) in bytes, without copying it.
    pub fn raw_len(&self) -> usize {
        match (self.handle, self.fields.raw.get()) {
            (Some(handle), None) => handle.raw_len() as usize,
            _ => self.raw().len(),
        }
    }

    /// The Kafka record the event came from: topic, partition, offset, timestamp, key, headers.
    pub fn source(&self) -> &SourceRecord {
        self.field(&self.fields.source, WitEvent::source)
    }

    /// The source record's key, if it had one. EventRouter sets it to `involvedObject.name`.
    pub fn source_key(&self) -> Option<&[u8]> {
        match (self.handle, self.fields.source.get()) {
            // Only the key is needed: don't copy the topic and headers too.
            (Some(_), None) => self
                .field(&self.fields.source_key, WitEvent::source_key)
                .as_deref(),
            _ => self.source().key.as_deref(),
        }
    }

    /// The value of the source record's header `name` (case-sensitive).
    ///
    /// When the name occurs more than once the last occurrence wins, as with Kafka's
    /// `Headers.lastHeader`. `None` when there is no such header or it has no value.
    pub fn source_header(&self, name: &str) -> Option<&[u8]> {
        self.source()
            .headers
            .iter()
            .rev()
            .find(|h| h.key == name)
            .and_then(|h| h.value.as_deref())
    }

    /// The whole envelope as JSON, parsed from [`raw`](Event::raw) on first use and cached.
    ///
    /// Fails only if the source bytes are not valid JSON (the host has already parsed them, so
    /// in practice this does not happen); the failure is cached too.
    pub fn json(&self) -> Result<&Value, JsonError> {
        self.json
            .get_or_init(|| {
                serde_json::from_slice(self.raw()).map_err(|e| {
                    JsonError::new(format!("the event's raw envelope is not valid JSON: {e}"))
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A value in the envelope by [JSON Pointer](https://www.rfc-editor.org/rfc/rfc6901), for
    /// example `/event/metadata/labels/app` or `/event/series/count`.
    ///
    /// `None` when the value is absent or the envelope is not valid JSON. Note that a JSON `null`
    /// is returned as `Some(Value::Null)`. In keys, `/` is written `~1` and `~` is written `~0`.
    pub fn pointer(&self, pointer: &str) -> Option<&Value> {
        self.json().ok()?.pointer(pointer)
    }

    /// `event.metadata.labels`, when present.
    pub fn labels(&self) -> Option<&Map<String, Value>> {
        self.metadata_map("labels")
    }

    /// The label `key` of the Event object (`event.metadata.labels[key]`), when present and a
    /// string. Keys are used as they are: no `~1` escaping, unlike [`pointer`](Event::pointer).
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels()?.get(key)?.as_str()
    }

    /// `event.metadata.annotations`, when present.
    pub fn annotations(&self) -> Option<&Map<String, Value>> {
        self.metadata_map("annotations")
    }

    /// The annotation `key` of the Event object (`event.metadata.annotations[key]`), when present
    /// and a string.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations()?.get(key)?.as_str()
    }

    /// The envelope's `old_event`: the previous version of the event, which EventRouter sends
    /// with [`Verb::Updated`]. `None` when absent or null.
    pub fn old_event(&self) -> Option<&Value> {
        self.json().ok()?.get("old_event").filter(|v| !v.is_null())
    }

    fn metadata_map(&self, field: &str) -> Option<&Map<String, Value>> {
        self.json()
            .ok()?
            .get("event")?
            .get("metadata")?
            .get(field)?
            .as_object()
    }
}

impl Event<'static> {
    /// Builds an event from an EventRouter envelope the way the host does, for native unit tests.
    ///
    /// `verb` must be `"ADDED"` or `"UPDATED"` and `event` an object. Strings that are absent or
    /// null become `""`, timestamps that are absent or null become `None`, and an absent or null
    /// `count` becomes 0; a field of the wrong JSON type is an error. `raw` is a copy of `envelope`.
    ///
    /// The source record is topic `cluster-events`, partition 0, offset 0, with no timestamp, no
    /// key and no headers; change it with the `with_source_*` methods.
    ///
    /// ```
    /// use fanout_sdk::{Event, Verb};
    ///
    /// let ev = Event::from_envelope(
    ///     r#"{"verb":"UPDATED","event":{"metadata":{"namespace":"shop","labels":{"app":"web"}},
    ///         "involvedObject":{"kind":"Pod","name":"web-0"},"count":3,"type":"Warning"},
    ///         "old_event":{"count":2}}"#,
    /// )
    /// .unwrap()
    /// .with_source_key("web-0");
    /// assert_eq!(ev.verb(), Verb::Updated);
    /// assert_eq!(ev.namespace(), "shop");
    /// assert_eq!(ev.involved_object().kind, "Pod");
    /// assert_eq!(ev.count(), 3);
    /// assert_eq!(ev.reason(), "");
    /// assert_eq!(ev.first_timestamp(), None);
    /// assert_eq!(ev.label("app"), Some("web"));
    /// assert_eq!(ev.old_event().unwrap()["count"], 2);
    /// assert_eq!(ev.source_key(), Some(&b"web-0"[..]));
    /// ```
    pub fn from_envelope(envelope: impl AsRef<[u8]>) -> Result<Event<'static>, String> {
        let raw = envelope.as_ref();
        let root: Value = serde_json::from_slice(raw)
            .map_err(|e| format!("the envelope is not valid JSON: {e}"))?;
        let root = root
            .as_object()
            .ok_or("the envelope is not a JSON object")?;
        let verb = match root.get("verb").and_then(Value::as_str) {
            Some("ADDED") => Verb::Added,
            Some("UPDATED") => Verb::Updated,
            other => {
                return Err(format!(
                    "verb: expected \"ADDED\" or \"UPDATED\", got {}",
                    other.map_or_else(|| "none".to_string(), |v| format!("{v:?}"))
                ));
            }
        };
        let event = root
            .get("event")
            .and_then(Value::as_object)
            .ok_or("event: missing or not an object")?;
        let obj = Fields::new(event.get("involvedObject"), "event.involvedObject")?;
        let meta = Fields::new(event.get("metadata"), "event.metadata")?;
        let src = Fields::new(event.get("source"), "event.source")?;
        let ev = Fields {
            map: Some(event),
            path: "event",
        };
        let fields = Loaded {
            verb: verb.into(),
            name: meta.string("name")?.into(),
            namespace: meta.string("namespace")?.into(),
            uid: meta.string("uid")?.into(),
            involved_object: ObjectReference {
                kind: obj.string("kind")?,
                namespace: obj.string("namespace")?,
                name: obj.string("name")?,
                uid: obj.string("uid")?,
                api_version: obj.string("apiVersion")?,
                field_path: obj.string("fieldPath")?,
            }
            .into(),
            reason: ev.string("reason")?.into(),
            message: ev.string("message")?.into(),
            event_type: ev.string("type")?.into(),
            count: ev.count("count")?.into(),
            source_component: src.string("component")?.into(),
            source_host: src.string("host")?.into(),
            reporting_controller: ev.string("reportingComponent")?.into(),
            first_timestamp: ev.optional_string("firstTimestamp")?.into(),
            last_timestamp: ev.optional_string("lastTimestamp")?.into(),
            event_time: ev.optional_string("eventTime")?.into(),
            raw: raw.to_vec().into(),
            source: SourceRecord {
                topic: "cluster-events".to_string(),
                partition: 0,
                offset: 0,
                timestamp_ms: None,
                key: None,
                headers: Vec::new(),
            }
            .into(),
            source_key: OnceCell::new(),
        };
        Ok(Event {
            handle: None,
            fields,
            json: OnceCell::new(),
        })
    }

    /// The source record of a natively built event, which always has one.
    fn source_mut(&mut self) -> &mut SourceRecord {
        self.fields
            .source
            .get_mut()
            .expect("a natively built event has its source record")
    }

    /// Sets the source record's key (by default there is none). For tests.
    pub fn with_source_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.source_mut().key = Some(key.into());
        self
    }

    /// Sets the source record's topic (by default `cluster-events`). For tests.
    pub fn with_source_topic(mut self, topic: impl Into<String>) -> Self {
        self.source_mut().topic = topic.into();
        self
    }

    /// Sets the source record's partition (by default 0). For tests.
    pub fn with_source_partition(mut self, partition: i32) -> Self {
        self.source_mut().partition = partition;
        self
    }

    /// Sets the source record's offset (by default 0). For tests.
    pub fn with_source_offset(mut self, offset: i64) -> Self {
        self.source_mut().offset = offset;
        self
    }

    /// Sets the source record's timestamp in milliseconds since the Unix epoch (by default
    /// none). For tests.
    pub fn with_source_timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.source_mut().timestamp_ms = Some(timestamp_ms);
        self
    }

    /// Appends a header to the source record (by default there are none). For tests.
    pub fn with_source_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> Self {
        self.source_mut().headers.push(Header {
            key: name.into(),
            value: Some(value.into()),
        });
        self
    }
}

/// Reads fields of one JSON object with the host's defaults, naming the path in errors.
struct Fields<'a> {
    map: Option<&'a Map<String, Value>>,
    path: &'static str,
}

impl<'a> Fields<'a> {
    fn new(value: Option<&'a Value>, path: &'static str) -> Result<Self, String> {
        match value {
            None | Some(Value::Null) => Ok(Fields { map: None, path }),
            Some(Value::Object(map)) => Ok(Fields {
                map: Some(map),
                path,
            }),
            Some(_) => Err(format!("{path}: expected an object")),
        }
    }

    fn get(&self, field: &str) -> Option<&'a Value> {
        self.map?.get(field).filter(|v| !v.is_null())
    }

    fn optional_string(&self, field: &str) -> Result<Option<String>, String> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{}.{field}: expected a string", self.path)),
        }
    }

    fn string(&self, field: &str) -> Result<String, String> {
        Ok(self.optional_string(field)?.unwrap_or_default())
    }

    fn count(&self, field: &str) -> Result<i32, String> {
        match self.get(field) {
            None => Ok(0),
            Some(v) => v
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| format!("{}.{field}: expected a 32-bit integer", self.path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
        "verb": "ADDED",
        "event": {
            "metadata": {
                "name": "web-0.17f3",
                "namespace": "shop",
                "uid": "u-1",
                "labels": {"app": "web", "n": 1},
                "annotations": {"a/b": "c"}
            },
            "involvedObject": {
                "kind": "Pod", "namespace": "shop", "name": "web-0", "uid": "u-2",
                "apiVersion": "v1", "fieldPath": "spec.containers{app}"
            },
            "reason": "BackOff",
            "message": "Back-off restarting failed container",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2024-05-01T10:00:00Z",
            "lastTimestamp": null,
            "eventTime": "2024-05-01T10:00:00.123456Z",
            "count": 7,
            "type": "Warning",
            "reportingComponent": "kubelet-rc"
        }
    }"#;

    #[test]
    fn from_envelope_fills_every_field() {
        let ev = Event::from_envelope(FULL).unwrap();
        assert_eq!(ev.verb(), Verb::Added);
        assert_eq!(ev.name(), "web-0.17f3");
        assert_eq!(ev.namespace(), "shop");
        assert_eq!(ev.uid(), "u-1");
        assert_eq!(
            ev.involved_object(),
            &ObjectReference {
                kind: "Pod".into(),
                namespace: "shop".into(),
                name: "web-0".into(),
                uid: "u-2".into(),
                api_version: "v1".into(),
                field_path: "spec.containers{app}".into(),
            }
        );
        assert_eq!(ev.reason(), "BackOff");
        assert_eq!(ev.message(), "Back-off restarting failed container");
        assert_eq!(ev.event_type(), "Warning");
        assert_eq!(ev.count(), 7);
        assert_eq!(ev.source_component(), "kubelet");
        assert_eq!(ev.source_host(), "node-1");
        assert_eq!(ev.reporting_controller(), "kubelet-rc");
        assert_eq!(ev.first_timestamp(), Some("2024-05-01T10:00:00Z"));
        assert_eq!(ev.last_timestamp(), None);
        assert_eq!(ev.event_time(), Some("2024-05-01T10:00:00.123456Z"));
        assert_eq!(ev.raw(), FULL.as_bytes());
        assert_eq!(ev.raw_len(), FULL.len());
        assert_eq!(ev.source().topic, "cluster-events");
        assert_eq!(ev.source_key(), None);
    }

    #[test]
    fn from_envelope_defaults() {
        let ev = Event::from_envelope(r#"{"verb":"UPDATED","event":{"count":null}}"#).unwrap();
        assert_eq!(ev.verb(), Verb::Updated);
        assert_eq!(ev.name(), "");
        assert_eq!(ev.namespace(), "");
        assert_eq!(ev.involved_object().kind, "");
        assert_eq!(ev.count(), 0);
        assert_eq!(ev.first_timestamp(), None);
        assert_eq!(ev.event_time(), None);
    }

    #[test]
    fn from_envelope_errors() {
        assert!(Event::from_envelope("nope").is_err());
        assert!(Event::from_envelope("[]").is_err());
        let err = Event::from_envelope(r#"{"verb":"DELETED","event":{}}"#).unwrap_err();
        assert_eq!(err, r#"verb: expected "ADDED" or "UPDATED", got "DELETED""#);
        assert!(Event::from_envelope(r#"{"event":{}}"#).is_err());
        assert!(Event::from_envelope(r#"{"verb":"ADDED"}"#).is_err());
        let err = Event::from_envelope(r#"{"verb":"ADDED","event":{"reason":1}}"#).unwrap_err();
        assert_eq!(err, "event.reason: expected a string");
        let err =
            Event::from_envelope(r#"{"verb":"ADDED","event":{"count":4294967296}}"#).unwrap_err();
        assert_eq!(err, "event.count: expected a 32-bit integer");
        let err = Event::from_envelope(r#"{"verb":"ADDED","event":{"metadata":"x"}}"#).unwrap_err();
        assert_eq!(err, "event.metadata: expected an object");
    }

    #[test]
    fn json_is_lazy_and_cached() {
        let ev = Event::from_envelope(FULL).unwrap();
        assert!(ev.json.get().is_none(), "parsed before being asked");
        let first: *const Value = ev.json().unwrap();
        assert!(ev.json.get().is_some());
        let second: *const Value = ev.json().unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn json_accessors() {
        let ev = Event::from_envelope(FULL).unwrap();
        assert_eq!(ev.label("app"), Some("web"));
        assert_eq!(ev.label("n"), None, "not a string");
        assert_eq!(ev.label("missing"), None);
        assert_eq!(ev.labels().unwrap().len(), 2);
        assert_eq!(ev.annotation("a/b"), Some("c"));
        assert_eq!(
            ev.pointer("/event/metadata/annotations/a~1b"),
            Some(&Value::from("c"))
        );
        assert_eq!(ev.pointer("/event/lastTimestamp"), Some(&Value::Null));
        assert_eq!(ev.pointer("/nope"), None);
        assert_eq!(ev.old_event(), None);

        let ev = Event::from_envelope(r#"{"verb":"UPDATED","event":{},"old_event":{"count":1}}"#)
            .unwrap();
        assert_eq!(ev.old_event().unwrap()["count"], 1);
        assert_eq!(ev.labels(), None);
        assert_eq!(ev.annotation("x"), None);
    }

    #[test]
    fn invalid_raw_json_is_an_error_not_a_panic() {
        let mut ev = Event::from_envelope(r#"{"verb":"ADDED","event":{}}"#).unwrap();
        ev.fields.raw = b"{not json".to_vec().into();
        let err = ev.json().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the event's raw envelope is not valid JSON: "),
            "{err}"
        );
        assert_eq!(ev.pointer("/event"), None);
        assert_eq!(ev.label("a"), None);
        let as_string: String = err.into();
        assert!(!as_string.is_empty());
    }

    #[test]
    fn source_setters_and_headers() {
        let ev = Event::from_envelope(FULL)
            .unwrap()
            .with_source_key("web-0")
            .with_source_topic("t")
            .with_source_partition(3)
            .with_source_offset(42)
            .with_source_timestamp_ms(1_700_000_000_000)
            .with_source_header("h", "1")
            .with_source_header("h", "2")
            .with_source_header("other", "x");
        assert_eq!(ev.source_key(), Some(&b"web-0"[..]));
        let s = ev.source();
        assert_eq!(
            (s.topic.as_str(), s.partition, s.offset, s.timestamp_ms),
            ("t", 3, 42, Some(1_700_000_000_000))
        );
        assert_eq!(ev.source_header("h"), Some(&b"2"[..]));
        assert_eq!(ev.source_header("other"), Some(&b"x"[..]));
        assert_eq!(ev.source_header("H"), None);
        assert_eq!(ev.source_header("missing"), None);
    }

    #[test]
    fn debug_shows_raw_as_text() {
        let ev = Event::from_envelope(r#"{"verb":"ADDED","event":{}}"#).unwrap();
        let s = format!("{ev:?}");
        assert!(s.contains(r#"raw: "{\"verb\""#), "{s}");
    }
}
