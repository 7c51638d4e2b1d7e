//! The default plugin over the repo's fixtures, through the real `fanout route` binary: the old
//! tool's topics, byte-identical payloads, EventRouter's keys, and a dead letter (never a silent
//! drop) for everything that cannot be routed by namespace.

use serde_json::Value;

use crate::support;

/// Runs `fanout route` and returns its output lines, parsed.
pub fn route(args: &[&str], input: &std::path::Path) -> Vec<Value> {
    let output = support::fanout()
        .arg("route")
        .args(args)
        .arg("--input")
        .arg(input)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "fanout route failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn plugin_arg() -> String {
    support::wasm("by_namespace").display().to_string()
}

#[test]
fn routes_like_the_old_tool_with_keys_kept() {
    let input = support::fixture("events/eventrouter.jsonl");
    let lines = support::lines("events/eventrouter.jsonl");
    let results = route(&["--plugins", &plugin_arg()], &input);
    assert_eq!(results.len(), lines.len(), "one result per input line");

    let mut routed = 0;
    let mut unroutable = 0;
    for (i, (line, result)) in lines.iter().zip(&results).enumerate() {
        assert_eq!(result["line"], i + 1);
        let envelope: Value = serde_json::from_slice(line).unwrap();
        let namespace = envelope["event"]["metadata"]["namespace"]
            .as_str()
            .unwrap_or("");
        let name = envelope["event"]["involvedObject"]["name"]
            .as_str()
            .unwrap();
        if namespace.is_empty() {
            unroutable += 1;
            assert_eq!(
                result["destinations"],
                serde_json::json!([]),
                "line {}",
                i + 1
            );
            let reason = result["dead_letter"].as_str().unwrap();
            assert!(
                reason.starts_with("plugin-error: event.metadata.namespace is missing or empty"),
                "line {}: {reason}",
                i + 1
            );
        } else {
            routed += 1;
            // payload null: the source bytes are forwarded unchanged, as the old tool did.
            let expected = serde_json::json!([{
                "topic": namespace, "key": name, "headers": {}, "payload": null
            }]);
            assert_eq!(result["destinations"], expected, "line {}", i + 1);
            assert_eq!(result["dead_letter"], Value::Null, "line {}", i + 1);
        }
    }
    assert!(
        routed >= 30,
        "the fixture covers many routable events ({routed})"
    );
    assert_eq!(
        unroutable, 2,
        "the fixture's missing and empty namespace lines"
    );
}

#[test]
fn forwards_the_exact_source_bytes() {
    let engine = support::engine();
    let mut router = support::router(&engine, &["by_namespace"], &[]);
    for line in support::lines("events/eventrouter.jsonl") {
        let event = support::event(&line);
        assert_eq!(event.raw, line, "the event carries the exact source bytes");
        if let fanout::plugin::Outcome::Routed(destinations) = router.route(&event) {
            assert_eq!(destinations.len(), 1);
            assert_eq!(
                destinations[0].payload, None,
                "no payload means the raw bytes, unchanged"
            );
        }
    }
}

#[test]
fn malformed_lines_become_dead_letters_with_reasons() {
    let input = support::fixture("events/malformed.jsonl");
    let lines = support::lines("events/malformed.jsonl");
    let results = route(&["--plugins", &plugin_arg()], &input);
    assert_eq!(results.len(), lines.len());
    let (last, malformed) = results.split_last().unwrap();
    for result in malformed {
        assert_eq!(result["destinations"], serde_json::json!([]));
        let reason = result["dead_letter"]
            .as_str()
            .unwrap_or_else(|| panic!("{result}"));
        assert!(reason.starts_with("malformed-event: "), "{result}");
        assert!(
            reason.len() > "malformed-event: ".len() + 5,
            "the parser's message is kept: {reason}"
        );
    }
    // The last line decodes, but its namespace is not a legal topic name.
    let reason = last["dead_letter"].as_str().unwrap();
    assert!(
        reason.starts_with("invalid-topic: topic \"Not_A_Valid/Topic\""),
        "{reason}"
    );
}

#[test]
fn prefix_config_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("by-namespace.json");
    std::fs::write(&config, r#"{"prefix": "k8s.events."}"#).unwrap();
    let input = support::fixture("events/eventrouter.jsonl");
    let results = route(
        &[
            "--plugins",
            &plugin_arg(),
            "--config",
            config.to_str().unwrap(),
        ],
        &input,
    );
    let topics: Vec<&str> = results
        .iter()
        .filter_map(|r| r["destinations"].get(0)?["topic"].as_str())
        .collect();
    assert!(!topics.is_empty());
    assert!(
        topics.iter().all(|t| t.starts_with("k8s.events.")),
        "{topics:?}"
    );
}
