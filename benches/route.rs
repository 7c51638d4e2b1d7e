//! `cargo bench --bench route`: the cost of one `route` call on a ~1 KiB event, WebAssembly
//! against the same logic as a native Rust function, measured in the same run; and the cost of
//! loading a plugin compiled from scratch against one served by the compile cache.
//!
//! Each figure is the median over batches of calls (a batch's mean per call), so timer overhead
//! does not distort sub-microsecond calls. Ratios, not absolute numbers, are the point: they
//! compare contenders on the same machine in the same process.

#[path = "../tests/integration/support.rs"]
#[allow(dead_code)]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use fanout::event::SharedEvent;
use fanout::plugin::{CompileCache, Outcome, Plugin, PluginEngine, PluginSource, RuntimeLimits};
use fanout::policy::OutputPolicy;

const BATCHES: usize = 30;
const CALLS_PER_BATCH: usize = 20_000;

fn main() {
    let event = one_kib_event();
    println!(
        "event: {} bytes (a fixture envelope, message padded)",
        event.raw.len()
    );
    println!();

    let policy = OutputPolicy::default();
    let native = measure(|| {
        let destinations = fanout::native::by_namespace(black_box(&event), "").unwrap();
        policy.check(&destinations, event.raw.len()).unwrap();
        black_box(destinations);
    });
    let engine = support::engine();
    let mut by_namespace = support::router(&engine, &["by_namespace"], &[]);
    let wasm = measure(|| expect_routed(by_namespace.route(black_box(&event))));
    let mut alerts = support::router(&engine, &["alerts"], &[]);
    let example = measure(|| expect_routed(alerts.route(black_box(&event))));
    let mut hostile = support::router(&engine, &["hostile"], &[]);
    let raw_bindings = measure(|| expect_routed(hostile.route(black_box(&event))));
    let mut both = support::router(&engine, &["alerts", "by_namespace"], &[]);
    let two = measure(|| expect_routed(both.route(black_box(&event))));

    println!("route, ns per call (median of {BATCHES} batches x {CALLS_PER_BATCH} calls):");
    println!("  {:<44} {:>9} {:>9}", "contender", "ns/call", "vs native");
    let row = |name: &str, d: Duration| {
        println!(
            "  {:<44} {:>9.0} {:>8.2}x",
            name,
            d.as_secs_f64() * 1e9,
            d.as_secs_f64() / native.as_secs_f64()
        );
    };
    row("native Rust by_namespace + output check", native);
    row("by_namespace.wasm (Router::route)", wasm);
    row("alerts.wasm, the example plugin", example);
    row("hostile.wasm normal path (no SDK)", raw_bindings);
    row("alerts.wasm + by_namespace.wasm, deduplicated", two);
    println!();

    load_times();
}

fn expect_routed(outcome: Outcome) {
    match outcome {
        Outcome::Routed(d) => {
            black_box(d);
        }
        other => panic!("the bench event must route: {other:?}"),
    }
}

/// The median over batches of the mean time per call.
fn measure(mut call: impl FnMut()) -> Duration {
    for _ in 0..CALLS_PER_BATCH {
        call(); // warm up caches, branch predictors and the instance
    }
    let mut batches: Vec<Duration> = (0..BATCHES)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..CALLS_PER_BATCH {
                call();
            }
            started.elapsed() / CALLS_PER_BATCH as u32
        })
        .collect();
    batches.sort();
    batches[BATCHES / 2]
}

/// A Warning event from the fixtures, its message padded so the envelope is about 1 KiB.
fn one_kib_event() -> SharedEvent {
    let line = support::lines("events/eventrouter.jsonl")
        .into_iter()
        .find(|l| l.windows(9).any(|w| w == b"\"Warning\""))
        .expect("a Warning event in the fixtures");
    let mut envelope: serde_json::Value = serde_json::from_slice(&line).unwrap();
    let message = envelope["event"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let pad = 1024usize.saturating_sub(line.len());
    envelope["event"]["message"] = format!("{message}{}", " ".repeat(pad)).into();
    support::event(&serde_json::to_vec(&envelope).unwrap())
}

fn load_times() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cached = PluginEngine::new(
        RuntimeLimits::default(),
        Some(CompileCache::open(cache_dir.path()).unwrap()),
    )
    .unwrap();
    let uncached = PluginEngine::new(RuntimeLimits::default(), None).unwrap();
    println!("plugin load, median of 5 (compile + check + instantiate + init):");
    for name in ["by_namespace", "alerts"] {
        let load = |engine: &PluginEngine| {
            let mut times: Vec<Duration> = (0..5)
                .map(|_| {
                    let started = Instant::now();
                    Plugin::load(engine, PluginSource::file(support::wasm(name), None)).unwrap();
                    started.elapsed()
                })
                .collect();
            times.sort();
            times[2]
        };
        let compiled = load(&uncached);
        Plugin::load(&cached, PluginSource::file(support::wasm(name), None)).unwrap();
        let from_cache = load(&cached);
        println!(
            "  {:<14} compiled {:>7.1} ms   from cache {:>6.1} ms   ({:.0}x faster)",
            name,
            compiled.as_secs_f64() * 1e3,
            from_cache.as_secs_f64() * 1e3,
            compiled.as_secs_f64() / from_cache.as_secs_f64()
        );
    }
}
