//! Example fanout plugin: forwards each event to a per-namespace topic, and additionally writes
//! a compact JSON alert for warnings to an alerts topic. See `README.md` for the configuration.

use fanout_sdk::serde_json::{Map, Value};
use fanout_sdk::{Destination, Event};
use serde::{Deserialize, Serialize};

/// The plugin's configuration; every field is optional.
#[derive(Deserialize, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Prepended to the namespace to make the per-namespace topic.
    topic_prefix: String,
    /// Where alerts are written.
    alerts_topic: String,
    /// Event types (`event.type`) that also produce an alert.
    alert_types: Vec<String>,
    /// Reasons (`event.reason`) whose events are dropped.
    drop_reasons: Vec<String>,
    /// When not empty, only events from these namespaces are routed; the others are dropped.
    namespaces: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            topic_prefix: String::new(),
            alerts_topic: "k8s-alerts".to_string(),
            alert_types: vec!["Warning".to_string()],
            drop_reasons: Vec::new(),
            namespaces: Vec::new(),
        }
    }
}

impl fanout_sdk::Config for Config {
    fn validate(&self) -> Result<(), String> {
        check_topic_chars("topic_prefix", &self.topic_prefix)?;
        if self.topic_prefix.len() >= 200 {
            return Err("topic_prefix must be shorter than 200 characters".into());
        }
        check_topic_chars("alerts_topic", &self.alerts_topic)?;
        let topic = self.alerts_topic.as_str();
        if topic.is_empty() || topic.len() > 249 || topic == "." || topic == ".." {
            return Err(format!(
                "alerts_topic {topic:?} is not a valid Kafka topic name (1 to 249 characters, not `.` or `..`)"
            ));
        }
        if topic.starts_with("__") {
            return Err(format!(
                "alerts_topic {topic:?} starts with `__`, which is reserved for Kafka's internal topics"
            ));
        }
        Ok(())
    }
}

fn check_topic_chars(field: &str, value: &str) -> Result<(), String> {
    match value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(bad) => Err(format!(
            "{field} {value:?} contains {bad:?}; a Kafka topic name may only contain [a-zA-Z0-9._-]"
        )),
        None => Ok(()),
    }
}

/// The value written to the alerts topic.
#[derive(Serialize)]
struct Alert<'a> {
    namespace: &'a str,
    kind: &'a str,
    name: &'a str,
    reason: &'a str,
    message: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    count: i32,
    /// The node that reported the event (`event.source.host`).
    node: &'a str,
    first_seen: Option<&'a str>,
    last_seen: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a Map<String, Value>>,
}

fn route(ev: &Event, config: &Config) -> Result<Vec<Destination>, String> {
    let namespace = ev.namespace();
    if namespace.is_empty() {
        return Err(
            "event.metadata.namespace is missing or empty; cannot route by namespace".into(),
        );
    }
    if config.drop_reasons.iter().any(|r| r == ev.reason()) {
        fanout_sdk::debug!(
            "dropping {namespace}/{}: reason {} is in drop_reasons",
            ev.name(),
            ev.reason()
        );
        return Ok(vec![]);
    }
    if !config.namespaces.is_empty() && !config.namespaces.iter().any(|n| n == namespace) {
        return Ok(vec![]);
    }

    let object = ev.involved_object();

    // 1. The event itself, unchanged, keyed like the source (or by object name if it had none).
    let mut forward = Destination::to(format!("{}{namespace}", config.topic_prefix));
    if ev.source_key().is_none() && !object.name.is_empty() {
        forward = forward.key(object.name.as_str());
    }
    let mut out = vec![forward];

    // 2. A compact alert, for the configured event types.
    if config.alert_types.iter().any(|t| t == ev.event_type()) {
        let alert = Alert {
            namespace,
            kind: &object.kind,
            name: &object.name,
            reason: ev.reason(),
            message: ev.message(),
            event_type: ev.event_type(),
            count: ev.count(),
            node: ev.source_host(),
            first_seen: ev.first_timestamp(),
            last_seen: ev.last_timestamp().or(ev.event_time()),
            labels: ev.labels(),
        };
        out.push(
            Destination::to(config.alerts_topic.as_str())
                .key(format!("{namespace}/{}/{}", object.kind, object.name))
                .header("fanout-alert-type", ev.event_type())
                .header("k8s-namespace", namespace)
                .header("k8s-reason", ev.reason())
                .json_payload(&alert)?,
        );
    }
    Ok(out)
}

fanout_sdk::export!(route, config: Config);

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_sdk::Header;

    const BACKOFF: &str = r#"{
        "verb": "UPDATED",
        "event": {
            "metadata": {"name": "web-0.17f3", "namespace": "shop", "labels": {"team": "checkout"}},
            "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "web-0"},
            "reason": "BackOff",
            "message": "Back-off restarting failed container",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2024-05-01T10:00:00Z",
            "lastTimestamp": "2024-05-01T10:05:00Z",
            "count": 5,
            "type": "Warning"
        },
        "old_event": {"count": 4}
    }"#;

    fn event(json: &str) -> Event<'static> {
        Event::from_envelope(json).unwrap()
    }

    fn config(json: &str) -> Config {
        fanout_sdk::parse_config!(Config, json).unwrap()
    }

    fn header(key: &str, value: &str) -> Header {
        Header {
            key: key.into(),
            value: Some(value.into()),
        }
    }

    fn payload_json(d: &Destination) -> Value {
        fanout_sdk::serde_json::from_slice(d.payload.as_deref().expect("a payload")).unwrap()
    }

    #[test]
    fn defaults() {
        let c = config("{}");
        assert_eq!(c, Config::default());
        assert_eq!(c.alerts_topic, "k8s-alerts");
        assert_eq!(c.alert_types, ["Warning"]);
    }

    #[test]
    fn warning_goes_to_namespace_topic_and_alerts_topic() {
        let ev = event(BACKOFF).with_source_key("web-0");
        let out = route(&ev, &config("{}")).unwrap();
        assert_eq!(out.len(), 2);

        assert_eq!(
            out[0],
            Destination::to("shop"),
            "forwarded unchanged, source key kept"
        );

        let alert = &out[1];
        assert_eq!(alert.topic, "k8s-alerts");
        assert_eq!(alert.key.as_deref(), Some(&b"shop/Pod/web-0"[..]));
        assert_eq!(
            alert.headers,
            vec![
                header("fanout-alert-type", "Warning"),
                header("k8s-namespace", "shop"),
                header("k8s-reason", "BackOff"),
            ]
        );
        assert_eq!(
            payload_json(alert),
            fanout_sdk::serde_json::json!({
                "namespace": "shop",
                "kind": "Pod",
                "name": "web-0",
                "reason": "BackOff",
                "message": "Back-off restarting failed container",
                "type": "Warning",
                "count": 5,
                "node": "node-1",
                "first_seen": "2024-05-01T10:00:00Z",
                "last_seen": "2024-05-01T10:05:00Z",
                "labels": {"team": "checkout"},
            })
        );
    }

    #[test]
    fn alert_payload_is_compact_and_in_field_order() {
        let ev = event(
            r#"{"verb":"ADDED","event":{"metadata":{"namespace":"ns"},
                "involvedObject":{"kind":"Node","name":"n1"},"type":"Warning"}}"#,
        );
        let out = route(&ev, &config("{}")).unwrap();
        assert_eq!(
            std::str::from_utf8(out[1].payload.as_deref().unwrap()).unwrap(),
            r#"{"namespace":"ns","kind":"Node","name":"n1","reason":"","message":"","type":"Warning","count":0,"node":"","first_seen":null,"last_seen":null}"#,
            "no labels key when the event has no labels"
        );
    }

    #[test]
    fn last_seen_falls_back_to_event_time() {
        let ev = event(
            r#"{"verb":"ADDED","event":{"metadata":{"namespace":"ns"},"type":"Warning",
                "lastTimestamp":null,"eventTime":"2024-05-01T10:00:00.123456Z"}}"#,
        );
        let out = route(&ev, &config("{}")).unwrap();
        let p = payload_json(&out[1]);
        assert_eq!(p["last_seen"], "2024-05-01T10:00:00.123456Z");
        assert_eq!(p["first_seen"], Value::Null);
    }

    #[test]
    fn normal_events_are_only_forwarded() {
        let ev = event(&BACKOFF.replace(r#""type": "Warning""#, r#""type": "Normal""#));
        let out = route(&ev, &config("{}")).unwrap();
        assert_eq!(out, vec![Destination::to("shop").key("web-0")]);
    }

    #[test]
    fn alert_types_and_topics_are_configurable() {
        let c = config(
            r#"{"topic_prefix":"k8s.","alerts_topic":"pager","alert_types":["Normal","Warning"]}"#,
        );
        let ev = event(&BACKOFF.replace(r#""type": "Warning""#, r#""type": "Normal""#));
        let out = route(&ev, &c).unwrap();
        assert_eq!(out[0].topic, "k8s.shop");
        assert_eq!(out[1].topic, "pager");
        assert_eq!(out[1].headers[0], header("fanout-alert-type", "Normal"));

        let none = config(r#"{"alert_types":[]}"#);
        assert_eq!(route(&event(BACKOFF), &none).unwrap().len(), 1);
    }

    #[test]
    fn key_falls_back_to_object_name_only_without_source_key() {
        let out = route(&event(BACKOFF), &config("{}")).unwrap();
        assert_eq!(out[0].key.as_deref(), Some(&b"web-0"[..]));
        let out = route(&event(BACKOFF).with_source_key("k"), &config("{}")).unwrap();
        assert_eq!(out[0].key, None);
    }

    #[test]
    fn drop_reasons_filter() {
        let c = config(r#"{"drop_reasons":["Pulled","BackOff"]}"#);
        assert_eq!(route(&event(BACKOFF), &c).unwrap(), vec![]);
        let c = config(r#"{"drop_reasons":["Pulled"]}"#);
        assert_eq!(route(&event(BACKOFF), &c).unwrap().len(), 2);
    }

    #[test]
    fn namespaces_filter() {
        let c = config(r#"{"namespaces":["payments","shop"]}"#);
        assert_eq!(route(&event(BACKOFF), &c).unwrap().len(), 2);
        let c = config(r#"{"namespaces":["payments"]}"#);
        assert_eq!(route(&event(BACKOFF), &c).unwrap(), vec![]);
    }

    #[test]
    fn missing_namespace_is_an_error_even_with_filters() {
        let ev = event(r#"{"verb":"ADDED","event":{"type":"Warning","reason":"BackOff"}}"#);
        for c in [
            "{}",
            r#"{"namespaces":["shop"]}"#,
            r#"{"drop_reasons":["BackOff"]}"#,
        ] {
            assert_eq!(
                route(&ev, &config(c)).unwrap_err(),
                "event.metadata.namespace is missing or empty; cannot route by namespace"
            );
        }
    }

    #[test]
    fn invalid_configs_are_refused() {
        let parse = |json: &str| fanout_sdk::parse_config!(Config, json);
        let err = parse(r#"{"alert_topic":"x"}"#).unwrap_err();
        assert!(
            err.starts_with("invalid config: unknown field `alert_topic`"),
            "{err}"
        );
        assert!(parse(r#"{"topic_prefix":"a b"}"#).is_err());
        assert!(parse(r#"{"alerts_topic":""}"#).is_err());
        assert!(parse(r#"{"alerts_topic":".."}"#).is_err());
        assert!(parse(r#"{"alerts_topic":"__consumer_offsets"}"#).is_err());
        assert!(parse(r#"{"alerts_topic":"a/b"}"#).is_err());
        assert!(parse(r#"{"namespaces":"shop"}"#).is_err());
    }
}
