//! Plugins built the ways users build them: with `cargo component build` as well as `cargo
//! build --target wasm32-wasip2`, and in a second language (Python, with componentize-py), each
//! loaded by the real runtime and routing the repo's recorded events.

use std::path::Path;
use std::process::Command;

use crate::support;

/// Routes the fixtures with `fanout route` and returns one JSON result per input line.
fn route_fixtures(wasm: &Path) -> Vec<serde_json::Value> {
    let wasm = wasm.to_str().expect("a UTF-8 path");
    crate::by_namespace::route(
        &["--plugins", wasm],
        &support::fixture("events/eventrouter.jsonl"),
    )
}

fn fixture_events() -> Vec<serde_json::Value> {
    support::lines("events/eventrouter.jsonl")
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

#[test]
fn cargo_component_builds_a_plugin_that_routes_like_the_wasip2_build() {
    let target = support::root().join("target/cargo-component");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = Command::new(&cargo)
        .current_dir(support::root().join("plugins/by-namespace"))
        .args(["component", "build", "--release", "--target-dir"])
        .arg(&target)
        .output()
        .expect("running cargo");
    assert!(
        build.status.success(),
        "cargo component build failed (make setup installs cargo-component 0.21.1):\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = target.join("wasm32-wasip1/release/by_namespace.wasm");
    assert!(wasm.is_file(), "{} was not built", wasm.display());

    let component = route_fixtures(&wasm);
    let wasip2 = route_fixtures(&support::wasm("by_namespace"));
    assert_eq!(component.len(), fixture_events().len());
    assert_eq!(
        component, wasip2,
        "both builds route every fixture the same way"
    );
}

#[test]
fn a_python_plugin_built_from_source_routes_warnings_and_filters_the_rest() {
    let out = tempfile::tempdir().unwrap();
    let build = Command::new(support::root().join("plugins/python-warnings/build.sh"))
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = out.path().join("python_warnings.wasm");

    let results = route_fixtures(&wasm);
    let events = fixture_events();
    assert_eq!(results.len(), events.len());
    let mut warnings = 0;
    for (event, result) in events.iter().zip(&results) {
        assert_eq!(result["dead_letter"], serde_json::Value::Null, "{result}");
        let destinations = result["destinations"].as_array().unwrap();
        if event["event"]["type"] == "Warning" {
            warnings += 1;
            assert_eq!(destinations.len(), 1, "{result}");
            assert_eq!(destinations[0]["topic"], "k8s-warnings");
            assert_eq!(destinations[0]["payload"], serde_json::Value::Null);
            assert_eq!(
                destinations[0]["headers"]["fanout-reason"],
                event["event"]["reason"]
            );
        } else {
            assert!(destinations.is_empty(), "{result}");
        }
    }
    assert!(warnings > 5, "the fixtures have warnings to route");
}
