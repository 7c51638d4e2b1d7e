//! `cargo bench --bench reload`: hot-reload latency, from the kubelet's rename of `..data` to the
//! first event routed by the new plugin set.
//!
//! A routing thread routes events back to back through the live set, as a busy pipeline does, and
//! notes when the version that routed changes. The ConfigMap is written by the same atomic-writer
//! code the tests use, and the clock starts right after its rename step. Three kinds of change:
//!
//! - a config-only change (the component is reused from the set in service: only `init` runs);
//! - a different plugin that the compile cache holds (deserialised, not compiled);
//! - a different plugin and no compile cache (Cranelift compiles it: a cold start).
//!
//! The watcher's debounce does not apply: a `..data` rename is acted on at once.

#[path = "../tests/integration/atomic_writer.rs"]
mod atomic_writer;
#[path = "../tests/integration/support.rs"]
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atomic_writer::{AtomicWriter, Step};
use fanout::plugin::{PluginEngine, PluginSet, RouteEvent as _, RuntimeLimits};
use fanout::reload::{LiveRouter, LiveSet, Reloader, RollbackPolicy, WatchSettings, scan};

const SWAPS: usize = 20;

/// A version, and when the routing thread first routed an event with it.
type FirstRouted = (Arc<str>, Instant);

fn main() {
    let by_namespace = std::fs::read(support::wasm("by_namespace")).unwrap();
    let alerts = std::fs::read(support::wasm("alerts")).unwrap();
    let config = |prefix: &str| format!(r#"{{"prefix":"{prefix}"}}"#).into_bytes();
    let by_namespace_with = |prefix: &str| {
        payload(&[
            ("by_namespace.wasm", by_namespace.clone()),
            ("by_namespace.json", config(prefix)),
        ])
    };
    let only_alerts = payload(&[("alerts.wasm", alerts.clone())]);

    println!(
        "reload latency: ..data rename -> first event routed by the new set ({SWAPS} swaps each)"
    );
    println!("  {:<52} {:>9} {:>9}", "change", "median", "max");
    let cached = support::engine();
    let config_only = measure(&cached, [by_namespace_with("a-"), by_namespace_with("b-")]);
    row("config only (component reused)", &config_only);
    let plugin_cached = measure(&cached, [by_namespace_with(""), only_alerts.clone()]);
    row("another plugin, from the compile cache", &plugin_cached);
    let uncompiled = PluginEngine::new(RuntimeLimits::default(), None).unwrap();
    let cold = measure(&uncompiled, [by_namespace_with(""), only_alerts]);
    row("another plugin, compiled (no cache)", &cold);
}

fn payload(files: &[(&str, Vec<u8>)]) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|(name, bytes)| ((*name).to_owned(), bytes.clone()))
        .collect()
}

fn row(name: &str, latencies: &[Duration]) {
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!(
        "  {:<52} {:>9} {:>9}",
        name,
        ms(latencies[latencies.len() / 2]),
        ms(*latencies.last().unwrap())
    );
}

/// Alternates the ConfigMap between two payloads `SWAPS` times; returns the sorted latencies.
fn measure(engine: &PluginEngine, payloads: [BTreeMap<String, Vec<u8>>; 2]) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = AtomicWriter::new(dir.path());
    writer.write(&payloads[0]).unwrap();
    let live = LiveSet::new(
        load(engine, dir.path()),
        RollbackPolicy {
            enabled: false,
            ..RollbackPolicy::default()
        },
    );
    let _reloader = Reloader::start(
        engine.clone(),
        dir.path().to_owned(),
        live.clone(),
        WatchSettings::default(),
    )
    .unwrap();

    // The routing thread: records when each new version first routed an event.
    let first_routed: Arc<Mutex<Vec<FirstRouted>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = std::thread::spawn({
        let (engine, live, first_routed, stop) = (
            engine.clone(),
            live.clone(),
            first_routed.clone(),
            stop.clone(),
        );
        move || {
            let event = support::event(&support::lines("events/eventrouter.jsonl")[0]);
            let mut router = LiveRouter::new(engine, live);
            let mut version = router.version();
            while !stop.load(Ordering::Relaxed) {
                std::hint::black_box(router.route(&event));
                if router.version() != version {
                    version = router.version();
                    first_routed
                        .lock()
                        .unwrap()
                        .push((version.clone(), Instant::now()));
                }
            }
        }
    });

    let mut latencies = Vec::with_capacity(SWAPS);
    for swap in 1..=SWAPS {
        let before = live.version();
        let mut renamed = None;
        writer
            .write_with(&payloads[swap % 2], |step| {
                if step == Step::DataSwapped {
                    renamed = Some(Instant::now());
                }
            })
            .unwrap();
        let renamed = renamed.unwrap();
        let started = Instant::now();
        let routed = loop {
            let found = first_routed
                .lock()
                .unwrap()
                .iter()
                .find(|(v, at)| *v != before && *at >= renamed)
                .map(|(_, at)| *at);
            if let Some(at) = found {
                break at;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no swap");
            std::thread::sleep(Duration::from_micros(200));
        };
        latencies.push(routed - renamed);
        first_routed.lock().unwrap().clear();
    }
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
    latencies.sort();
    latencies
}

fn load(engine: &PluginEngine, path: &Path) -> PluginSet {
    let snapshot = scan::snapshot(path).unwrap();
    PluginSet::load_files(engine, snapshot.files, None).unwrap()
}
