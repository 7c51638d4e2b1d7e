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

#[test]
fn the_deployed_config_is_valid_for_this_fanout() {
    // deploy/fanout/configmap.yaml's fanout.toml, with the Secret's mount replaced by a file.
    let configmap =
        std::fs::read_to_string(support::root().join("deploy/fanout/configmap.yaml")).unwrap();
    let toml: String = configmap
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("fanout.toml: |"))
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert!(toml.contains("[kafka.secret_files]"), "{toml}");
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "scram-secret\n").unwrap();
    let config = dir.path().join("fanout.toml");
    std::fs::write(
        &config,
        toml.replace(
            "/etc/fanout/kafka-user/password",
            password.to_str().unwrap(),
        ),
    )
    .unwrap();
    let output = support::fanout()
        .args(["config", "check"])
        .arg(&config)
        .env_remove("FANOUT_HTTP_LISTEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(
        printed.contains("\"security.protocol\" = \"SASL_SSL\""),
        "{printed}"
    );
    assert!(
        printed.contains("\"sasl.mechanism\" = \"SCRAM-SHA-512\""),
        "{printed}"
    );
    assert!(!printed.contains("scram-secret"), "{printed}");
}

#[test]
fn the_deployed_tls_and_scram_settings_are_accepted_by_librdkafka() {
    // The same properties given to `fanout run`: librdkafka refuses a property this build lacks
    // (as it did before TLS was built in) before any connection is tried. With a CA file that
    // exists, it starts and tries to connect, then is stopped.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::copy("/etc/ssl/certs/ca-certificates.crt", &ca).unwrap();
    let plugins = support::plugin_set_dir(&["by_namespace"], &[]);
    let mut child = support::fanout()
        .args(["run", "--bootstrap-servers", "127.0.0.1:1", "--plugins"])
        .arg(plugins.path())
        .args([
            "--kafka-property",
            "security.protocol=SASL_SSL",
            "--kafka-property",
            "sasl.mechanism=SCRAM-SHA-512",
            "--kafka-property",
            "sasl.username=fanout",
            "--kafka-property",
            "sasl.password=pw",
        ])
        .arg("--kafka-property")
        .arg(format!("ssl.ca.location={}", ca.display()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let early_exit = child.try_wait().unwrap();
    child.kill().ok();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        early_exit.is_none(),
        "fanout exited with these TLS/SCRAM settings: {stderr}"
    );
    // Built with these settings, the client tried the address over TLS with SASL: nothing
    // listens there, so fanout waits (not ready) for the cluster to answer.
    assert!(
        stderr.contains("sasl_ssl://127.0.0.1:1/bootstrap"),
        "{stderr}"
    );
}
