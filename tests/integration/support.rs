//! Shared helpers: build the real plugins from source (once per test run), load them with a
//! real engine, and read the repo's own fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use fanout::bindings::SourceRecord;
use fanout::event::SharedEvent;
use fanout::plugin::{CompileCache, PluginEngine, PluginSet, Router, RuntimeLimits};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

pub fn fixture(path: &str) -> PathBuf {
    root().join("tests/fixtures").join(path)
}

/// Plugin crates built for every test run: (cargo package, output file name).
const WORKSPACE_PLUGINS: &[&str] = &[
    "by-namespace",
    "alerts",
    "archive",
    "hostile",
    "wrong-world",
];

/// Builds every plugin crate for wasm32-wasip2 (release, as users do) and returns the directory
/// holding the `.wasm` files. Runs once per test process; cargo makes repeat runs cheap. A
/// separate target dir keeps this nested cargo off the outer build's lock.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = root().join("target/plugins");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(&cargo);
        build
            .current_dir(root())
            .args(["build", "--release", "--target", "wasm32-wasip2"]);
        for package in WORKSPACE_PLUGINS {
            build.args(["-p", package]);
        }
        build.arg("--target-dir").arg(&target);
        run(&mut build);
        // A standalone crate: it carries a copy of the WIT with another version.
        let mut future = Command::new(&cargo);
        future
            .current_dir(root())
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(fixture("plugins/future-version/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target);
        run(&mut future);
        target.join("wasm32-wasip2/release")
    })
}

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

/// The path of a built plugin, e.g. `wasm("by_namespace")`.
pub fn wasm(name: &str) -> PathBuf {
    let path = plugin_dir().join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A fresh directory holding copies of the named plugins (and configs: `(name, json)`).
pub fn plugin_set_dir(plugins: &[&str], configs: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in plugins {
        std::fs::copy(wasm(name), dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    for (name, json) in configs {
        std::fs::write(dir.path().join(format!("{name}.json")), json).unwrap();
    }
    dir
}

/// A compile cache shared by the tests of one run, so each plugin is compiled once.
pub fn shared_cache() -> CompileCache {
    CompileCache::open(root().join("target/test-compile-cache")).unwrap()
}

pub fn engine() -> PluginEngine {
    engine_with(RuntimeLimits::default())
}

/// The call deadline of tests that route under load but are not about deadlines: on two cores
/// shared with the rest of the suite, a plain by_namespace call did exceed the 100 ms default,
/// and its event became a `plugin-timeout` dead letter the test counted as lost.
pub const UNHURRIED_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// [`engine`] with [`UNHURRIED_DEADLINE`].
pub fn unhurried_engine() -> PluginEngine {
    engine_with(RuntimeLimits {
        call_deadline: UNHURRIED_DEADLINE,
        ..RuntimeLimits::default()
    })
}

pub fn engine_with(limits: RuntimeLimits) -> PluginEngine {
    PluginEngine::new(limits, Some(shared_cache())).unwrap()
}

/// A router over the given plugin files (in this order of names), each with optional config.
pub fn router(engine: &PluginEngine, plugins: &[&str], configs: &[(&str, &str)]) -> Router {
    let dir = plugin_set_dir(plugins, configs);
    let set = PluginSet::load_path(engine, dir.path(), None).unwrap_or_else(|e| panic!("{e}"));
    Router::new(engine.clone(), Arc::new(set))
}

/// Decodes one envelope as the pipeline would, with EventRouter's key.
pub fn event(raw: &[u8]) -> SharedEvent {
    let parsed =
        fanout::event::parse(raw).unwrap_or_else(|e| panic!("fixture does not decode: {e}"));
    let key = Some(parsed.involved_object_name().as_bytes().to_vec()).filter(|k| !k.is_empty());
    let source = SourceRecord {
        topic: "cluster-events".into(),
        partition: 0,
        offset: 0,
        timestamp_ms: None,
        key,
        headers: vec![],
    };
    Arc::new(parsed.into_event(raw.to_vec(), source))
}

/// The lines of a fixture file, as bytes (some are deliberately not UTF-8).
pub fn lines(path: &str) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(fixture(path)).unwrap();
    bytes
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The `fanout` binary built for this test run.
pub fn fanout() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fanout"));
    command.env("FANOUT_CACHE_DIR", root().join("target/test-compile-cache"));
    command.env_remove("FANOUT_PLUGINS");
    // The tests read the human format; one test checks the JSON one. Port 0: tests run side by
    // side, and each reads its endpoint's address from the log.
    command.env("FANOUT_LOG_FORMAT", "text");
    command.env("FANOUT_HTTP_LISTEN", "127.0.0.1:0");
    command
}
