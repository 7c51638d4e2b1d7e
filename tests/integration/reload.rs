//! Hot reload without Kafka: real plugins in a directory that the kubelet's atomic writer (or a
//! developer's editor) changes, the real reloader thread watching it, and routing threads' view
//! of the set in service.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fanout::event::SharedEvent;
use fanout::plugin::{Outcome, PluginEngine, PluginSet, RouteEvent as _};
use fanout::reload::{LiveRouter, LiveSet, Reloader, RollbackPolicy, WatchSettings, scan};

use crate::atomic_writer::{AtomicWriter, Step};
use crate::support;

/// A ConfigMap volume: the atomic writer's target dir, written by the kubelet's protocol.
pub struct ConfigMap {
    pub dir: tempfile::TempDir,
    pub writer: AtomicWriter,
}

impl ConfigMap {
    pub fn new(files: &[(&str, Vec<u8>)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = AtomicWriter::new(dir.path());
        writer.write(&payload(files)).unwrap();
        Self { dir, writer }
    }

    pub fn update(&mut self, files: &[(&str, Vec<u8>)]) {
        let report = self.writer.write(&payload(files)).unwrap();
        assert!(report.changed, "the update changed nothing");
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn payload(files: &[(&str, Vec<u8>)]) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|(name, bytes)| ((*name).to_owned(), bytes.clone()))
        .collect()
}

/// A ConfigMap's content: file name → bytes.
pub type Files = Vec<(&'static str, Vec<u8>)>;

/// `by_namespace.wasm` with the given topic prefix.
pub fn by_namespace_files(prefix: &str) -> Files {
    vec![
        (
            "by_namespace.wasm",
            std::fs::read(support::wasm("by_namespace")).unwrap(),
        ),
        (
            "by_namespace.json",
            format!(r#"{{"prefix":"{prefix}"}}"#).into_bytes(),
        ),
    ]
}

/// `hostile.wasm` with the given config.
pub fn hostile_files(config: &str) -> Files {
    vec![
        (
            "hostile.wasm",
            std::fs::read(support::wasm("hostile")).unwrap(),
        ),
        ("hostile.json", config.as_bytes().to_vec()),
    ]
}

/// Loads what `path` holds now, as the service does at start-up.
pub fn load(engine: &PluginEngine, path: &Path) -> PluginSet {
    let snapshot = scan::snapshot(path).unwrap();
    PluginSet::load_files(engine, snapshot.files, None).unwrap_or_else(|e| panic!("{e}"))
}

/// A live set over `path` with a reloader watching it.
pub fn watched(
    engine: &PluginEngine,
    path: &Path,
    policy: RollbackPolicy,
) -> (Arc<LiveSet>, Reloader) {
    let live = LiveSet::new(load(engine, path), policy);
    let reloader = Reloader::start(
        engine.clone(),
        path.to_owned(),
        live.clone(),
        WatchSettings {
            debounce: Duration::from_millis(50),
            rescan_interval: Duration::from_secs(60),
        },
    )
    .unwrap();
    (live, reloader)
}

pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "{what}: not after {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The first fixture event (namespace `checkout`), at source offset `offset`.
fn event(offset: i64) -> SharedEvent {
    let mut event = support::event(&support::lines("events/eventrouter.jsonl")[0]);
    Arc::make_mut(&mut event).source.offset = offset;
    event
}

fn topic(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Routed(destinations) => destinations[0].topic.clone(),
        other => panic!("not routed: {other:?}"),
    }
}

#[test]
fn configmap_updates_swap_the_set_between_events() {
    let engine = support::engine();
    let mut configmap = ConfigMap::new(&by_namespace_files("a-"));
    let (live, _reloader) = watched(&engine, configmap.path(), RollbackPolicy::default());
    let mut router = LiveRouter::new(engine.clone(), live.clone());
    assert_eq!(topic(&router.route(&event(0))), "a-checkout");
    let first = router.version();

    configmap.update(&by_namespace_files("b-"));
    wait_until("the swap", Duration::from_secs(10), || {
        live.version() != first
    });
    // The router picks the new set up at its next event, and reports the version that routed.
    assert_eq!(topic(&router.route(&event(1))), "b-checkout");
    assert_eq!(router.version(), live.version());
    let status = live.status();
    assert_eq!(status.counts.reloads, 1);
    let last = status.last_reload.unwrap();
    assert_eq!(
        (last.result, last.from.as_str()),
        ("swapped", first.as_ref())
    );
    assert_eq!(last.to.as_deref(), Some(status.version.as_str()));

    // Back to the first config: the same content has the same version.
    configmap.update(&by_namespace_files("a-"));
    wait_until("the swap back", Duration::from_secs(10), || {
        live.version() == first
    });
    assert_eq!(topic(&router.route(&event(2))), "a-checkout");
}

#[test]
fn a_plugin_added_by_an_update_is_read_at_the_data_swap_before_its_visible_link_exists() {
    let engine = support::engine();
    let mut configmap = ConfigMap::new(&by_namespace_files(""));
    let mut files = by_namespace_files("");
    files.push((
        "alerts.wasm",
        std::fs::read(support::wasm("alerts")).unwrap(),
    ));
    let dir = configmap.path().to_owned();
    let mut seen_at_swap = None;
    configmap
        .writer
        .write_with(&payload(&files), |step| {
            if step == Step::DataSwapped {
                assert!(
                    !dir.join("alerts.wasm").exists(),
                    "the kubelet links new names after the swap"
                );
                let names: Vec<String> = scan::sources(&dir)
                    .unwrap()
                    .into_iter()
                    .map(|s| s.name)
                    .collect();
                seen_at_swap = Some(names);
            }
        })
        .unwrap();
    assert_eq!(
        seen_at_swap.unwrap(),
        ["alerts", "by_namespace"],
        "a scan right after the ..data rename must see the whole new snapshot"
    );
    assert_eq!(load(&engine, &dir).plugins().len(), 2);
}

#[test]
fn broken_wasm_wrong_world_and_failing_init_are_refused_and_the_old_set_keeps_serving() {
    let engine = support::engine();
    let mut configmap = ConfigMap::new(&by_namespace_files("good-"));
    let (live, _reloader) = watched(&engine, configmap.path(), RollbackPolicy::default());
    let serving = live.version();
    let mut router = LiveRouter::new(engine.clone(), live.clone());

    let wrong_world = std::fs::read(support::wasm("wrong_world")).unwrap();
    let cases: [(&str, Files, &str); 3] = [
        (
            "broken wasm",
            vec![("by_namespace.wasm", b"\0asm\x0d\0\x01\0garbage".to_vec())],
            "by_namespace.wasm: invalid or unsupported component",
        ),
        (
            "wrong world",
            vec![("wrong_world.wasm", wrong_world)],
            "wrong_world.wasm: does not target the fanout:router world",
        ),
        (
            "failing init",
            hostile_files(r#"{"fail_init": true}"#),
            "hostile.wasm: init refused its config",
        ),
    ];
    for (i, (case, files, message)) in cases.into_iter().enumerate() {
        configmap.update(&files);
        wait_until(case, Duration::from_secs(10), || {
            live.counts().failures == i as u64 + 1
        });
        let status = live.status();
        let error = status.last_error.unwrap();
        assert!(error.contains(message), "{case}: {error}");
        assert_eq!(status.last_reload.unwrap().result, "refused");
        assert_eq!(
            live.version(),
            serving,
            "{case}: the old set must keep serving"
        );
        assert_eq!(topic(&router.route(&event(i as i64))), "good-checkout");
    }
    assert_eq!(live.counts().reloads, 0);

    // A good update after the failures is taken, and clears the error.
    configmap.update(&by_namespace_files("fixed-"));
    wait_until("the good update", Duration::from_secs(10), || {
        live.counts().reloads == 1
    });
    assert_eq!(topic(&router.route(&event(9))), "fixed-checkout");
    assert_eq!(live.status().last_error, None);
}

#[test]
fn local_edits_reload_and_a_touch_or_an_identical_rewrite_does_not() {
    let engine = support::engine();
    let dir = support::plugin_set_dir(&["by_namespace"], &[("by_namespace", r#"{"prefix":"x-"}"#)]);
    let (live, _reloader) = watched(&engine, dir.path(), RollbackPolicy::default());
    let mut router = LiveRouter::new(engine.clone(), live.clone());
    assert_eq!(topic(&router.route(&event(0))), "x-checkout");

    // As an editor saves: a temporary file renamed over the config.
    let config = dir.path().join("by_namespace.json");
    let tmp = dir.path().join(".by_namespace.json.swp");
    std::fs::write(&tmp, r#"{"prefix":"y-"}"#).unwrap();
    std::fs::rename(&tmp, &config).unwrap();
    wait_until("the edit", Duration::from_secs(10), || {
        live.counts().reloads == 1
    });
    assert_eq!(topic(&router.route(&event(1))), "y-checkout");

    // The same bytes again, and a touch: the directory changed, its content did not.
    std::fs::write(&tmp, r#"{"prefix":"y-"}"#).unwrap();
    std::fs::rename(&tmp, &config).unwrap();
    let file = std::fs::File::options().append(true).open(&config).unwrap();
    file.set_modified(std::time::SystemTime::now()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(live.counts().reloads, 1);
    assert_eq!(live.counts().failures, 0);

    // A rewrite in place can be seen half-done (refused), but its completion is the set in
    // service: no swap to the same version.
    std::fs::write(&config, r#"{"prefix":"y-"}"#).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(live.counts().reloads, 1);
    assert_eq!(live.version(), router.version());
}

#[test]
fn compressed_plugins_load_with_the_version_of_the_plain_file() {
    use std::io::Write as _;
    let engine = support::engine();
    let wasm = std::fs::read(support::wasm("by_namespace")).unwrap();
    let plain = support::plugin_set_dir(&["by_namespace"], &[]);
    let plain_version = load(&engine, plain.path()).version().to_owned();

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&wasm).unwrap();
    let zst = zstd::encode_all(wasm.as_slice(), 19).unwrap();
    for (file, bytes) in [
        ("by_namespace.wasm.gz", gz.finish().unwrap()),
        ("by_namespace.wasm.zst", zst),
    ] {
        assert!(bytes.len() < wasm.len() / 2, "{file} barely compressed");
        let configmap = ConfigMap::new(&[(file, bytes)]);
        let set = load(&engine, configmap.path());
        assert_eq!(set.plugins()[0].name.as_ref(), "by_namespace");
        assert_eq!(set.version(), plain_version, "{file}");
        let mut router = fanout::plugin::Router::new(engine.clone(), Arc::new(set));
        assert_eq!(topic(&router.route(&event(0))), "checkout", "{file}");
    }
}

#[test]
fn corrupt_and_oversized_compressed_plugins_are_refused_naming_the_file() {
    let engine = support::engine();
    // 65 MiB of zeros compress to a few KiB: a decompression bomb must stop at the limit.
    let zeros = std::io::Read::take(std::io::repeat(0), 65 << 20);
    let bomb = zstd::encode_all(zeros, 3).unwrap();
    let cases = [
        (
            "bomb.wasm.zst",
            bomb,
            "bomb.wasm.zst: decompresses to more than the 67108864-byte limit",
        ),
        (
            "corrupt.wasm.gz",
            b"\x1f\x8b\x08\0not gzip at all".to_vec(),
            "corrupt.wasm.gz: cannot decompress the gzip file",
        ),
    ];
    for (file, bytes, message) in cases {
        let configmap = ConfigMap::new(&[(file, bytes)]);
        let snapshot = scan::snapshot(configmap.path()).unwrap();
        let error = PluginSet::load_files(&engine, snapshot.files, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains(message), "{error}");
    }
}

#[test]
fn two_files_for_one_plugin_name_are_refused() {
    let engine = support::engine();
    let wasm = std::fs::read(support::wasm("by_namespace")).unwrap();
    let gz = {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&wasm).unwrap();
        gz.finish().unwrap()
    };
    let configmap = ConfigMap::new(&[("x.wasm", wasm), ("x.wasm.gz", gz)]);
    let snapshot = scan::snapshot(configmap.path()).unwrap();
    let error = PluginSet::load_files(&engine, snapshot.files, None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("plugin `x` is defined twice"), "{error}");
}

/// A set that starts failing half its events after a swap is rolled back to the last good one,
/// and the content that failed is not tried again until it changes.
#[test]
fn a_set_failing_half_its_events_is_rolled_back_and_not_retried() {
    let engine = support::engine();
    let mut configmap = ConfigMap::new(&hostile_files("{}"));
    let policy = RollbackPolicy {
        window_events: 200,
        ..RollbackPolicy::default()
    };
    let (live, _reloader) = watched(&engine, configmap.path(), policy);
    let good = live.version();
    let mut router = LiveRouter::new(engine.clone(), live.clone());
    for offset in 0..300 {
        assert_eq!(topic(&router.route(&event(offset))), "ok.checkout");
    }

    configmap.update(&hostile_files(r#"{"trap_odd_offsets": true}"#));
    wait_until("the swap", Duration::from_secs(10), || {
        live.version() != good
    });
    let bad = live.version();
    let mut failed_by_bad = 0;
    for offset in 300..700 {
        let outcome = router.route(&event(offset));
        if router.version() == bad {
            if let Outcome::DeadLetter { reason, .. } = &outcome {
                assert_eq!(reason.kind(), "plugin-trap");
                assert_eq!(offset % 2, 1);
                failed_by_bad += 1;
            }
        } else {
            assert_eq!(router.version(), good);
            assert_eq!(topic(&outcome), "ok.checkout");
        }
    }
    // 5% of a 200-event window is 10 faults: the 11th decides.
    assert_eq!(failed_by_bad, 11);
    assert_eq!(live.version(), good);
    let status = live.status();
    assert_eq!(status.counts.rollbacks, 1);
    let last = status.last_reload.unwrap();
    assert_eq!(last.result, "rolled-back");
    assert_eq!(last.from, bad.as_ref());
    assert_eq!(last.to.as_deref(), Some(good.as_ref()));
    assert!(
        last.detail.contains("11 of 22 events failed"),
        "{}",
        last.detail
    );

    // The rolled-back content is still in the directory; a rescan must not load it again.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(live.counts().reloads, 1);
    configmap.update(&hostile_files(r#"{"fixed": true}"#));
    wait_until("the fixed update", Duration::from_secs(10), || {
        live.counts().reloads == 2
    });
}

#[test]
fn a_set_that_passes_its_trial_by_events_or_by_time_becomes_the_rollback_target() {
    let engine = support::engine();
    let mut configmap = ConfigMap::new(&by_namespace_files("a-"));
    let policy = RollbackPolicy {
        window_events: 50,
        window: Duration::from_millis(300),
        ..RollbackPolicy::default()
    };
    let (live, _reloader) = watched(&engine, configmap.path(), policy);
    let mut router = LiveRouter::new(engine.clone(), live.clone());

    // By events: the window fills.
    configmap.update(&by_namespace_files("b-"));
    wait_until("the swap", Duration::from_secs(10), || {
        live.counts().reloads == 1
    });
    assert!(live.status().trial.is_some());
    for offset in 0..50 {
        router.route(&event(offset));
    }
    let status = live.status();
    assert!(status.trial.is_none());
    assert_eq!(status.last_good_version, status.version);

    // By time: no events at all, and the reloader ends the trial when the window passes.
    configmap.update(&by_namespace_files("c-"));
    wait_until("the second swap", Duration::from_secs(10), || {
        live.counts().reloads == 2
    });
    wait_until("the trial's end by time", Duration::from_secs(10), || {
        live.status().trial.is_none()
    });
    let status = live.status();
    assert_eq!(status.last_good_version, status.version);
    assert_eq!(status.counts.rollbacks, 0);
}

#[test]
fn the_periodic_rescan_catches_a_change_no_event_reports() {
    let engine = support::engine();
    let configmap = ConfigMap::new(&by_namespace_files("a-"));
    let live = LiveSet::new(load(&engine, configmap.path()), RollbackPolicy::default());
    let _reloader = Reloader::start(
        engine.clone(),
        configmap.path().to_owned(),
        live.clone(),
        WatchSettings {
            debounce: Duration::from_millis(50),
            rescan_interval: Duration::from_secs(1),
        },
    )
    .unwrap();
    let first = live.version();
    // Let the reloader's first look at the directory (at start-up) pass.
    std::thread::sleep(Duration::from_millis(300));
    // An edit inside the snapshot directory, behind `..data`: the watch is on the mount
    // directory only, so no event reports it.
    let snapshot = scan::sources(configmap.path()).unwrap()[0]
        .config
        .clone()
        .unwrap();
    assert!(
        snapshot
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("..")
    );
    std::fs::write(&snapshot, r#"{"prefix":"rescanned-"}"#).unwrap();
    wait_until("the rescan", Duration::from_secs(10), || {
        live.version() != first
    });
    let mut router = LiveRouter::new(engine, live);
    assert_eq!(topic(&router.route(&event(0))), "rescanned-checkout");
}
