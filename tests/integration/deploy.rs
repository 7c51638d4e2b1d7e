//! The deployment helpers in `deploy/`, run for real: the ConfigMap update script with kubectl's
//! client-side dry run (no cluster needed), and what it produces loaded by fanout.

use std::process::Command;

use crate::reload::{ConfigMap, load};
use crate::support;

fn update_plugins(dir: &std::path::Path) -> std::process::Output {
    Command::new(support::root().join("deploy/plugins/update-plugins.sh"))
        .arg(dir)
        .arg("--dry-run")
        .env("OUTPUT", "json")
        .output()
        .expect("running deploy/plugins/update-plugins.sh (needs kubectl: make setup)")
}

fn base64_decode(text: &str) -> Vec<u8> {
    // Through a file: piping both ways would deadlock once the output fills the pipe.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let output = Command::new("base64")
        .arg("-d")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    output.stdout
}

#[test]
fn the_update_script_packs_plugins_as_binary_data_that_fanout_loads() {
    let config = r#"{"prefix":"x-"}"#;
    let dir = support::plugin_set_dir(&["by_namespace"], &[("by_namespace", config)]);
    let output = update_plugins(dir.path());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let configmap: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(configmap["kind"], "ConfigMap");
    assert_eq!(configmap["metadata"]["name"], "fanout-plugins");
    assert_eq!(configmap["metadata"]["namespace"], "fanout");
    let wasm = base64_decode(
        configmap["binaryData"]["by_namespace.wasm"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(wasm, std::fs::read(support::wasm("by_namespace")).unwrap());
    assert_eq!(configmap["data"]["by_namespace.json"], config);

    // Projected by the kubelet, it is the same plugin set as the directory it came from.
    let projected = ConfigMap::new(&[
        ("by_namespace.wasm", wasm),
        ("by_namespace.json", config.as_bytes().to_vec()),
    ]);
    let engine = support::engine();
    assert_eq!(
        load(&engine, projected.path()).version(),
        load(&engine, dir.path()).version()
    );
}

#[test]
fn the_update_script_refuses_more_than_a_configmap_holds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.wasm"), vec![0u8; 1_100_000]).unwrap();
    let output = update_plugins(dir.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("over the ConfigMap limit of 1048576"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}
