//! The example plugin: several destinations per event, headers, a re-encoded payload, filtering
//! from config, the lazy JSON, and several plugins in one set.

use serde_json::Value;

use fanout::bindings::Destination;
use fanout::plugin::Outcome;

use crate::support;

const WARNING: &str = r#"{"verb":"ADDED","event":{"metadata":{"name":"ledger-7d9.17a","namespace":"payments","uid":"e1","labels":{"team":"payments-core"}},"involvedObject":{"kind":"Pod","namespace":"payments","name":"ledger-7d9","uid":"p1","apiVersion":"v1"},"reason":"BackOff","message":"Back-off restarting failed container","source":{"component":"kubelet","host":"node-3"},"firstTimestamp":"2026-11-20T08:15:02Z","lastTimestamp":"2026-11-20T08:19:44Z","count":5,"type":"Warning","eventTime":null,"reportingComponent":""}}"#;

fn normal(reason: &str, namespace: &str) -> String {
    WARNING
        .replace(r#""type":"Warning""#, r#""type":"Normal""#)
        .replace(r#""reason":"BackOff""#, &format!(r#""reason":"{reason}""#))
        .replace(
            r#""namespace":"payments""#,
            &format!(r#""namespace":"{namespace}""#),
        )
}

fn routed(outcome: Outcome) -> Vec<Destination> {
    match outcome {
        Outcome::Routed(destinations) => destinations,
        other => panic!("expected destinations, got {other:?}"),
    }
}

fn header<'a>(d: &'a Destination, key: &str) -> Option<&'a str> {
    let h = d.headers.iter().find(|h| h.key == key)?;
    std::str::from_utf8(h.value.as_deref()?).ok()
}

#[test]
fn warning_goes_to_its_namespace_and_to_alerts_with_a_compact_payload() {
    let mut router = support::router(&support::engine(), &["alerts"], &[]);
    let destinations = routed(router.route(&support::event(WARNING.as_bytes())));
    assert_eq!(destinations.len(), 2, "{destinations:?}");

    let copy = &destinations[0];
    assert_eq!(copy.topic, "payments");
    assert_eq!(
        copy.payload, None,
        "the namespace copy forwards the bytes unchanged"
    );

    let alert = &destinations[1];
    assert_eq!(alert.topic, "k8s-alerts");
    assert_eq!(alert.key.as_deref(), Some(&b"payments/Pod/ledger-7d9"[..]));
    assert_eq!(header(alert, "fanout-alert-type"), Some("Warning"));
    assert_eq!(header(alert, "k8s-namespace"), Some("payments"));
    assert_eq!(header(alert, "k8s-reason"), Some("BackOff"));
    let payload: Value = serde_json::from_slice(alert.payload.as_deref().unwrap()).unwrap();
    assert_eq!(payload["namespace"], "payments");
    assert_eq!(payload["kind"], "Pod");
    assert_eq!(payload["name"], "ledger-7d9");
    assert_eq!(payload["reason"], "BackOff");
    assert_eq!(payload["count"], 5);
    assert_eq!(payload["node"], "node-3");
    assert_eq!(payload["last_seen"], "2026-11-20T08:19:44Z");
    // From the lazy JSON: labels are not part of the WIT record.
    assert_eq!(payload["labels"]["team"], "payments-core");
    assert!(
        alert.payload.as_ref().unwrap().len() < WARNING.len(),
        "the alert is compact"
    );
}

#[test]
fn normal_events_only_go_to_their_namespace() {
    let mut router = support::router(&support::engine(), &["alerts"], &[]);
    let destinations =
        routed(router.route(&support::event(normal("Pulled", "payments").as_bytes())));
    assert_eq!(destinations.len(), 1);
    assert_eq!(destinations[0].topic, "payments");
}

#[test]
fn config_filters_by_reason_and_namespace() {
    let config = r#"{"drop_reasons": ["Pulled"], "namespaces": ["payments", "shop"], "alerts_topic": "pager", "topic_prefix": "ns."}"#;
    let mut router = support::router(&support::engine(), &["alerts"], &[("alerts", config)]);
    let filtered = |router: &mut fanout::plugin::Router, raw: String| {
        assert_eq!(
            router.route(&support::event(raw.as_bytes())),
            Outcome::Filtered,
            "{raw}"
        );
    };
    filtered(&mut router, normal("Pulled", "payments"));
    filtered(&mut router, normal("Started", "kube-system"));
    let destinations = routed(router.route(&support::event(WARNING.as_bytes())));
    let topics: Vec<&str> = destinations.iter().map(|d| d.topic.as_str()).collect();
    assert_eq!(topics, ["ns.payments", "pager"]);
}

#[test]
fn several_plugins_run_in_file_name_order_and_are_deduplicated() {
    // by_namespace and alerts both send the event to `payments` unchanged: written once.
    let mut router = support::router(&support::engine(), &["by_namespace", "alerts"], &[]);
    let destinations = routed(router.route(&support::event(WARNING.as_bytes())));
    let topics: Vec<&str> = destinations.iter().map(|d| d.topic.as_str()).collect();
    assert_eq!(topics, ["payments", "k8s-alerts"]);
}

#[test]
fn one_failing_plugin_dead_letters_the_whole_event() {
    let mut router = support::router(&support::engine(), &["alerts", "hostile"], &[]);
    let raw = WARNING.replace(r#""reason":"BackOff""#, r#""reason":"HostileErr""#);
    match router.route(&support::event(raw.as_bytes())) {
        Outcome::DeadLetter { reason, plugin } => {
            assert_eq!(plugin.as_deref(), Some("hostile"));
            assert_eq!(reason.kind(), "plugin-error");
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }
}
