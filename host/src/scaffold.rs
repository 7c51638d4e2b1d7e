//! `fanout new`: a new plugin project that builds, tests and routes out of the box.
//!
//! A Rust project is a crate depending on `fanout-sdk` (by path: the SDK is not on crates.io),
//! with an example `route`, native unit tests, sample events from the repo's fixtures, and an
//! integration test that builds the component and routes the samples with `fanout route`. It
//! builds both with `cargo build --release --target wasm32-wasip2` and with `cargo component
//! build --release`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The repo's recorded EventRouter envelopes; the project's samples are the first few.
const FIXTURES: &str = include_str!("../../tests/fixtures/events/eventrouter.jsonl");
const SAMPLES: usize = 8;

/// What to create.
pub struct NewPlugin {
    /// The crate name, also the plugin's name (`-` becomes `_` in the `.wasm` file name).
    pub name: String,
    /// The directory to create the project in; the project is `<parent>/<name>`.
    pub parent: PathBuf,
    /// The guest SDK (`guest-sdk/` of a fanout checkout).
    pub sdk: PathBuf,
    /// The `fanout` binary the project's route test runs unless `FANOUT` is set.
    pub fanout: PathBuf,
}

/// Why a name is not a valid plugin name, if it is not: a crate name that is also a readable
/// file name (`[a-z][a-z0-9_-]*`, at most 64 characters).
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_lowercase()) {
        return Err(format!("{name:?} must start with a lowercase letter"));
    }
    if let Some(bad) =
        chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "{name:?} contains {bad:?}; use lowercase letters, digits, '-' and '_'"
        ));
    }
    if name.len() > 64 {
        return Err(format!("{name:?} is longer than 64 characters"));
    }
    Ok(())
}

/// Creates the project and returns its directory. Refuses to touch an existing directory.
pub fn create(plugin: &NewPlugin) -> anyhow::Result<PathBuf> {
    check_name(&plugin.name).map_err(|e| anyhow::anyhow!("invalid plugin name: {e}"))?;
    let dir = plugin.parent.join(&plugin.name);
    anyhow::ensure!(
        !dir.exists(),
        "{} already exists; choose another name or directory",
        dir.display()
    );
    let sdk = plugin
        .sdk
        .canonicalize()
        .with_context(|| format!("the SDK directory {}", plugin.sdk.display()))?;
    anyhow::ensure!(
        sdk.join("Cargo.toml").is_file(),
        "{} is not the fanout-sdk crate (no Cargo.toml); pass --sdk <fanout checkout>/guest-sdk",
        sdk.display()
    );
    let file = plugin.name.replace('-', "_");
    let files = [
        ("Cargo.toml", cargo_toml(&plugin.name, &sdk)),
        ("src/lib.rs", LIB_RS.replace("{name}", &plugin.name)),
        (
            "tests/route.rs",
            ROUTE_TEST
                .replace("{file}", &file)
                .replace("{fanout}", &plugin.fanout.display().to_string()),
        ),
        ("sample/events.jsonl", samples()),
        (
            "README.md",
            README
                .replace("{name}", &plugin.name)
                .replace("{file}", &file),
        ),
        (".gitignore", "/target\n".to_owned()),
    ];
    for (path, content) in files {
        write(&dir, path, &content)?;
    }
    Ok(dir)
}

fn write(dir: &Path, path: &str, content: &str) -> anyhow::Result<()> {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().expect("every file is inside the project"))
        .with_context(|| format!("creating {}", path.display()))?;
    std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))
}

/// The first recorded envelopes with a namespace: what the example routes without error.
fn samples() -> String {
    let mut out = String::new();
    for line in FIXTURES
        .lines()
        .filter(|l| l.contains("\"namespace\":\"") && !l.contains("\"namespace\":\"\""))
        .take(SAMPLES)
    {
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    // TOML basic strings escape backslashes and quotes.
    let sdk = sdk
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the WebAssembly component. rlib: native unit tests (`cargo test`).
crate-type = ["cdylib", "rlib"]

[dependencies]
fanout-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}

[dev-dependencies]
serde_json = "1"

# Small components: a ConfigMap holds at most 1 MiB.
[profile.release]
codegen-units = 1
lto = "thin"

# A project of its own, even when created inside another workspace.
[workspace]
"#
    )
}

const LIB_RS: &str = r##"//! {name}: a fanout routing plugin.
//!
//! Routes every event, byte for byte and with its key, to `<prefix><namespace>`, and events
//! without a namespace to the dead-letter topic. Change `route` to change the routing.
//!
//! Configuration (`{name}.json` beside the `.wasm`; everything optional): `{"prefix": ""}`.

use fanout_sdk::{Destination, Event};

/// The plugin's configuration, parsed and validated once, at `init`.
#[derive(serde::Deserialize, Debug, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Prepended to the namespace to make the topic name.
    prefix: String,
}

impl fanout_sdk::Config for Config {
    fn validate(&self) -> Result<(), String> {
        match self
            .prefix
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            Some(bad) => Err(format!("prefix contains {bad:?}; topic names use [a-zA-Z0-9._-]")),
            None => Ok(()),
        }
    }
}

/// Decides where one event goes. Each accessor (`ev.namespace()`, `ev.reason()`, ...) copies
/// one field from the host on first use, so read only what you need.
fn route(ev: &Event, config: &Config) -> Result<Vec<Destination>, String> {
    let namespace = ev.namespace();
    if namespace.is_empty() {
        // An error dead-letters the event with this message as its reason.
        return Err("the event has no namespace".into());
    }
    // No key and no payload: the source record's key and bytes, unchanged.
    Ok(vec![Destination::to(format!("{}{namespace}", config.prefix))])
}

fanout_sdk::export!(route, config: Config);

#[cfg(test)]
mod tests {
    use super::*;

    fn event(namespace: &str) -> Event<'static> {
        Event::from_envelope(format!(
            r#"{{"verb":"ADDED","event":{{"metadata":{{"namespace":"{namespace}"}},"reason":"Started"}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn routes_to_the_namespace_with_the_prefix() {
        let config: Config = fanout_sdk::parse_config!(Config, r#"{"prefix":"k8s."}"#).unwrap();
        let out = route(&event("shop"), &config).unwrap();
        assert_eq!(out, vec![Destination::to("k8s.shop")]);
    }

    #[test]
    fn an_event_without_namespace_is_an_error() {
        assert!(route(&event(""), &Config::default()).is_err());
    }

    #[test]
    fn a_bad_prefix_is_refused_at_init() {
        assert!(fanout_sdk::parse_config!(Config, r#"{"prefix":"a b"}"#).is_err());
    }
}
"##;

const ROUTE_TEST: &str = r#"//! Builds the plugin as fanout loads it and routes `sample/events.jsonl` with `fanout route`.
//!
//! Runs the `fanout` binary that created this project, or the one `FANOUT` names.

use std::path::Path;
use std::process::Command;

const FANOUT: &str = "{fanout}";

#[test]
fn routes_the_sample_events_to_their_namespaces() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Its own target directory: the outer `cargo test` holds the lock on `target/`.
    let target = root.join("target/route-test");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target)
        .status()
        .expect("running cargo");
    assert!(status.success(), "the component did not build");
    let wasm = target.join("wasm32-wasip2/release/{file}.wasm");
    let samples = root.join("sample/events.jsonl");

    let fanout = std::env::var("FANOUT").unwrap_or_else(|_| FANOUT.into());
    let output = Command::new(&fanout)
        .arg("route")
        .arg("--plugins")
        .arg(&wasm)
        .arg("--input")
        .arg(&samples)
        .output()
        .unwrap_or_else(|e| panic!("running {fanout} (set FANOUT to fanout's path): {e}"));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let input = std::fs::read_to_string(&samples).unwrap();
    let routed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(routed.lines().count(), input.lines().count());
    for (event, result) in input.lines().zip(routed.lines()) {
        let event: serde_json::Value = serde_json::from_str(event).unwrap();
        let result: serde_json::Value = serde_json::from_str(result).unwrap();
        let namespace = &event["event"]["metadata"]["namespace"];
        assert_eq!(result["destinations"][0]["topic"], *namespace, "{result}");
        assert_eq!(result["destinations"][0]["payload"], serde_json::Value::Null);
    }
}
"#;

const README: &str = r#"# {name}

A [fanout](https://github.com/fanout-dev/fanout) routing plugin, made by `fanout new`.

```sh
cargo test                                              # unit tests, then build and route the samples
cargo build --release --target wasm32-wasip2            # target/wasm32-wasip2/release/{file}.wasm
cargo component build --release                         # target/wasm32-wasip1/release/{file}.wasm
fanout check target/wasm32-wasip2/release/{file}.wasm   # what fanout sees: world, exports, timings
fanout route --plugins target/wasm32-wasip2/release/{file}.wasm --input sample/events.jsonl
```

Both builds produce a component fanout loads. `cargo build` needs `rustup target add
wasm32-wasip2`; `cargo component` needs `cargo install cargo-component --locked --version 0.21.1`
and `rustup target add wasm32-wasip1`.

Deploy it by putting `{file}.wasm` (and an optional `{file}.json` config) in fanout's plugin
directory, for example a ConfigMap:

```sh
kubectl create configmap fanout-plugins --from-file=target/wasm32-wasip2/release/{file}.wasm \
    --dry-run=client -o yaml | kubectl apply --server-side --force-conflicts -f -
```

fanout picks the change up without a restart; see the plugin guide, `docs/plugins.md` in the
fanout repository.
"#;
