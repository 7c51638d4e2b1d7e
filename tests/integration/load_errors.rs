//! Plugins that cannot be used are refused at load, with the file and the exact problem.

use fanout::plugin::{LoadProblem, Plugin, PluginSet, PluginSource};

use crate::support;

fn load_error(source: PluginSource) -> (String, LoadProblem) {
    let error = Plugin::load(&support::engine(), source).expect_err("the plugin must be refused");
    (error.to_string(), error.problem)
}

#[test]
fn core_module_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core.wasm");
    // A valid core module with one exported function, as `wat` would produce it.
    std::fs::write(&path, wat_core_module()).unwrap();
    let (message, problem) = load_error(PluginSource::file(&path, None));
    assert!(matches!(problem, LoadProblem::CoreModule), "{message}");
    assert!(
        message.starts_with(&format!("{}: ", path.display())),
        "{message}"
    );
    assert!(
        message.contains("core WebAssembly module, not a component"),
        "{message}"
    );
}

fn wat_core_module() -> Vec<u8> {
    // (module (func (export "route")))
    vec![
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
        0x03, 0x02, 0x01, 0x00, // function section
        0x07, 0x09, 0x01, 0x05, b'r', b'o', b'u', b't', b'e', 0x00, 0x00, // export "route"
        0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code section
    ]
}

#[test]
fn wrong_world_component_is_refused() {
    let path = support::wasm("wrong_world");
    let (message, problem) = load_error(PluginSource::file(&path, None));
    assert!(
        matches!(problem, LoadProblem::MissingExport("init")),
        "{message}"
    );
    assert!(
        message.contains("does not target the fanout:router world"),
        "{message}"
    );
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn incompatible_wit_version_is_refused() {
    let (message, problem) = load_error(PluginSource::file(support::wasm("future_version"), None));
    assert!(
        matches!(problem, LoadProblem::IncompatibleWit { .. }),
        "{message}"
    );
    assert!(
        message.contains(
            "built against fanout:router@0.3.0, but this host implements fanout:router@0.2.0"
        ),
        "{message}"
    );
}

#[test]
fn files_that_are_not_wasm_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.wasm");
    std::fs::write(&path, "#!/bin/sh\necho hi\n").unwrap();
    let (message, problem) = load_error(PluginSource::file(&path, None));
    assert!(matches!(problem, LoadProblem::NotWasm), "{message}");

    // A truncated component passes the header check and fails in validation.
    let good = std::fs::read(support::wasm("by_namespace")).unwrap();
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let (message, problem) = load_error(PluginSource::file(&path, None));
    assert!(matches!(problem, LoadProblem::Compile(_)), "{message}");

    let missing = dir.path().join("missing.wasm");
    let (message, problem) = load_error(PluginSource::file(&missing, None));
    assert!(matches!(problem, LoadProblem::Read(_)), "{message}");
    assert!(message.contains("missing.wasm"), "{message}");
}

#[test]
fn config_that_is_not_json_names_file_line_and_column() {
    let dir = support::plugin_set_dir(
        &["by_namespace"],
        &[("by_namespace", "{\n  \"prefix\": \"k8s.\",\n  oops\n}\n")],
    );
    let error = PluginSet::load_path(&support::engine(), dir.path(), None).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("by_namespace.json is not valid JSON"),
        "{message}"
    );
    assert!(message.contains("line 3 column 3"), "{message}");
}

#[test]
fn config_the_plugin_rejects_fails_init_with_its_message() {
    let dir = support::plugin_set_dir(
        &["by_namespace"],
        &[("by_namespace", r#"{"prefix": "bad prefix/"}"#)],
    );
    let error = PluginSet::load_path(&support::engine(), dir.path(), None).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("by_namespace.wasm: init refused its config"),
        "{message}"
    );
    assert!(message.contains("by_namespace.json"), "{message}");

    let dir = support::plugin_set_dir(&["by_namespace"], &[("by_namespace", r#"{"prefixx": ""}"#)]);
    let message = PluginSet::load_path(&support::engine(), dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(message.contains("unknown field `prefixx`"), "{message}");
}

#[test]
fn init_failure_and_init_trap_are_refused() {
    let source = |json: &str| {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("hostile.json");
        std::fs::write(&config, json).unwrap();
        (
            dir,
            PluginSource::file(support::wasm("hostile"), Some(config)),
        )
    };
    let (_dir, failing) = source(r#"{"fail_init": true}"#);
    let (message, problem) = load_error(failing);
    assert!(matches!(problem, LoadProblem::InitFailed(..)), "{message}");
    assert!(
        message.contains("init refused: fail_init is set"),
        "{message}"
    );

    let (_dir, trapping) = source(r#"{"trap_init": true}"#);
    let (message, problem) = load_error(trapping);
    assert!(matches!(problem, LoadProblem::InitTrapped(..)), "{message}");
}

#[test]
fn a_set_with_several_bad_plugins_lists_every_one() {
    let dir = support::plugin_set_dir(&["by_namespace", "wrong_world", "future_version"], &[]);
    std::fs::write(dir.path().join("zz-empty.wasm"), b"").unwrap();
    let error = PluginSet::load_path(&support::engine(), dir.path(), None).unwrap_err();
    assert_eq!(error.0.len(), 3, "{error}");
    let message = error.to_string();
    for name in ["wrong_world.wasm", "future_version.wasm", "zz-empty.wasm"] {
        assert!(message.contains(name), "{name} missing from: {message}");
    }
    assert!(!message.contains("by_namespace.wasm"), "{message}");
}

#[test]
fn an_empty_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.md"), "no plugins here").unwrap();
    let error = PluginSet::load_path(&support::engine(), dir.path(), None).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no *.wasm plugins in this directory"),
        "{error}"
    );
}
