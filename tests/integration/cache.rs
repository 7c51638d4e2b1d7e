//! The compile cache: a second load is served from it; a bad artifact or an unsafe directory is
//! never trusted.

use std::os::unix::fs::PermissionsExt as _;

use fanout::plugin::{
    CacheOutcome, CompileCache, Plugin, PluginEngine, PluginSource, RuntimeLimits,
};

use crate::support;

fn engine_with_cache(dir: &std::path::Path) -> PluginEngine {
    PluginEngine::new(
        RuntimeLimits::default(),
        Some(CompileCache::open(dir).unwrap()),
    )
    .unwrap()
}

fn load(engine: &PluginEngine) -> CacheOutcome {
    let source = PluginSource::file(support::wasm("by_namespace"), None);
    Plugin::load(engine, source).unwrap().timing.cache
}

#[test]
fn second_load_is_a_cache_hit() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_cache(dir.path());
    assert_eq!(load(&engine), CacheOutcome::Miss);
    assert_eq!(load(&engine), CacheOutcome::Hit);
    // A new engine with the same settings (a restarted process) hits too.
    assert_eq!(load(&engine_with_cache(dir.path())), CacheOutcome::Hit);
    let artifacts: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(
        artifacts.len(),
        1,
        "one artifact, no temporary files left: {artifacts:?}"
    );
}

#[test]
fn corrupt_artifact_is_recompiled_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_cache(dir.path());
    assert_eq!(load(&engine), CacheOutcome::Miss);
    let artifact = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&artifact, b"\x7fELF garbage").unwrap();
    assert_eq!(
        load(&engine),
        CacheOutcome::Miss,
        "the corrupt file is replaced"
    );
    assert_eq!(load(&engine), CacheOutcome::Hit);
}

#[test]
fn cache_directory_is_made_private() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    CompileCache::open(&cache).unwrap();
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn cache_directory_owned_by_someone_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let me = rustix::process::geteuid().as_raw();
    let other = if me == 65534 { 65533 } else { 65534 };
    if std::os::unix::fs::chown(&cache, Some(other), None).is_err() {
        // Only root can give a directory away; as another user, make one we do not own instead.
        let error = CompileCache::open("/").unwrap_err();
        assert!(error.to_string().contains("is owned by uid"), "{error:#}");
        return;
    }
    let error = CompileCache::open(&cache).unwrap_err();
    assert!(
        error
            .to_string()
            .contains(&format!("is owned by uid {other}")),
        "{error:#}"
    );
}

#[test]
fn symlinked_cache_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let error = CompileCache::open(&link).unwrap_err();
    assert!(
        error.to_string().contains("symlinks are refused"),
        "{error:#}"
    );
}
