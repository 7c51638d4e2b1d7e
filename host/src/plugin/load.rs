//! Loading one plugin: file → checked component → ready-to-instantiate `RouterPre` → `init`.
//!
//! Everything that can be wrong with a plugin is found here, at load, and reported with the file
//! and the exact problem, so that a broken plugin never reaches an event.
//!
//! A plugin file is `X.wasm`, or `X.wasm.gz` / `X.wasm.zst` compressed ([`Packing`]) so that a
//! larger component fits a 1 MiB ConfigMap. Its identity is the sha256 of the component itself,
//! after decompression: the same component packed two ways is the same plugin.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use wasmtime::Store;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::cache::{self, CacheOutcome};
use super::engine::{PluginEngine, run_within};
use super::host::HostState;
use super::lift::{LiftBudget, RouteAnswer, with_budget};
use crate::bindings::{self, Router, RouterPre};
use crate::event::SharedEvent;
use wasmtime::component::{Resource, TypedFunc};

/// Largest plugin file read, and largest component after decompression.
pub const MAX_WASM_BYTES: u64 = 64 << 20;
/// Largest plugin config read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Where one plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSource {
    /// The file stem, which names the plugin in logs and in the `fanout-plugin` header.
    pub name: String,
    pub wasm: PathBuf,
    /// Its JSON config, if it has one.
    pub config: Option<PathBuf>,
}

impl PluginSource {
    /// A single plugin file, with an explicit config file or none.
    pub fn file(wasm: impl Into<PathBuf>, config: Option<PathBuf>) -> Self {
        let wasm = wasm.into();
        let name = plugin_name(&wasm);
        Self { name, wasm, config }
    }

    /// How the plugin file is stored, from its name.
    pub fn packing(&self) -> Packing {
        self.wasm
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(Packing::of)
            .map_or(Packing::Plain, |(_, packing)| packing)
    }
}

fn plugin_name(path: &Path) -> String {
    let file_name = path.file_name().map(|n| n.to_string_lossy());
    match file_name.as_deref().and_then(Packing::of) {
        Some((stem, _)) => stem.to_owned(),
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string()),
    }
}

/// How a plugin file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// `X.wasm`
    Plain,
    /// `X.wasm.gz`
    Gzip,
    /// `X.wasm.zst`
    Zstd,
}

impl Packing {
    const SUFFIXES: [(&'static str, Packing); 3] = [
        (".wasm", Packing::Plain),
        (".wasm.gz", Packing::Gzip),
        (".wasm.zst", Packing::Zstd),
    ];

    /// The plugin name and packing of a plugin file name, or `None` if it names no plugin.
    pub fn of(file_name: &str) -> Option<(&str, Packing)> {
        Self::SUFFIXES.iter().find_map(|(suffix, packing)| {
            let stem = file_name.strip_suffix(suffix)?;
            (!stem.is_empty()).then_some((stem, *packing))
        })
    }

    /// Decompresses `bytes`, refusing output larger than [`MAX_WASM_BYTES`] (a small file can
    /// expand to gigabytes).
    fn unpack(self, bytes: Vec<u8>) -> Result<Vec<u8>, LoadProblem> {
        use std::io::Read as _;
        let reader: Box<dyn std::io::Read + '_> = match self {
            Packing::Plain => return Ok(bytes),
            Packing::Gzip => Box::new(flate2::read::GzDecoder::new(bytes.as_slice())),
            Packing::Zstd => Box::new(
                zstd::stream::read::Decoder::new(bytes.as_slice())
                    .map_err(|e| LoadProblem::Decompress(self, e))?,
            ),
        };
        let mut out = Vec::new();
        reader
            .take(MAX_WASM_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| LoadProblem::Decompress(self, e))?;
        if out.len() as u64 > MAX_WASM_BYTES {
            return Err(LoadProblem::DecompressedTooLarge);
        }
        Ok(out)
    }
}

impl std::fmt::Display for Packing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Packing::Plain => "plain",
            Packing::Gzip => "gzip",
            Packing::Zstd => "zstd",
        })
    }
}

/// A plugin's files as read: the component (decompressed) and the config text.
#[derive(Debug, Clone)]
pub struct PluginFiles {
    pub wasm: Vec<u8>,
    /// sha256 of `wasm`, computed once at read: the scan's version and the load both use it.
    pub sha256: [u8; 32],
    pub config: String,
}

impl PluginFiles {
    /// Reads (and decompresses) the plugin file and reads its config, within the size limits.
    pub fn read(source: &PluginSource) -> Result<Self, LoadError> {
        let fail = |problem| LoadError {
            path: source.wasm.clone(),
            problem,
        };
        let packed = read_limited(&source.wasm, MAX_WASM_BYTES).map_err(|e| match e {
            ReadLimited::Io(e) => fail(LoadProblem::Read(e)),
            ReadLimited::TooLarge(n) => fail(LoadProblem::TooLarge(n)),
        })?;
        let wasm = source.packing().unpack(packed).map_err(fail)?;
        let config = read_config(source.config.as_deref()).map_err(fail)?;
        Ok(Self {
            sha256: Sha256::digest(&wasm).into(),
            wasm,
            config,
        })
    }
}

/// Why a plugin was refused. Displayed after the file name by [`LoadError`].
#[derive(Debug, thiserror::Error)]
pub enum LoadProblem {
    #[error("cannot read the file: {0}")]
    Read(std::io::Error),
    #[error("file is {0} bytes, larger than the {MAX_WASM_BYTES}-byte limit")]
    TooLarge(u64),
    #[error("cannot decompress the {0} file: {1}")]
    Decompress(Packing, std::io::Error),
    #[error("decompresses to more than the {MAX_WASM_BYTES}-byte limit")]
    DecompressedTooLarge,
    #[error(
        "plugin `{0}` is defined twice in this set: {path} also defines it; keep one file per \
         plugin name", path = .1.display()
    )]
    DuplicateName(String, PathBuf),
    #[error("not a WebAssembly file (it does not start with the `\\0asm` magic bytes)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component; build the plugin with \
         `cargo build --target wasm32-wasip2` or `cargo component build`, or wrap the module \
         with `wasm-tools component new`"
    )]
    CoreModule,
    #[error("invalid or unsupported component: {0:#}")]
    Compile(wasmtime::Error),
    #[error(
        "built against fanout:router@{found}, but this host implements fanout:router@{supported}; \
         rebuild the plugin against fanout:router@{supported}"
    )]
    IncompatibleWit {
        found: String,
        supported: &'static str,
    },
    #[error(
        "does not target the fanout:router world: missing export `{0}` \
         (a plugin exports `init` and `route`; see wit/router.wit)"
    )]
    MissingExport(&'static str),
    #[error("does not match the fanout:router@{version} world: {0:#}", version = bindings::WIT_VERSION)]
    WrongWorld(wasmtime::Error),
    #[error(
        "imports `{0}`, which fanout does not provide (plugins may import fanout:router and WASI only)"
    )]
    UnsupportedImport(String),
    #[error("cannot read config {path}: {1}", path = .0.display())]
    ConfigRead(PathBuf, std::io::Error),
    #[error("config {path} is {1} bytes, larger than the {MAX_CONFIG_BYTES}-byte limit", path = .0.display())]
    ConfigTooLarge(PathBuf, u64),
    #[error("config {path} is not valid JSON: {1}", path = .0.display())]
    ConfigNotJson(PathBuf, serde_json::Error),
    #[error("init refused its config{name}: {1}", name = config_name(.0))]
    InitFailed(Option<PathBuf>, String),
    #[error("init trapped{name}: {1:#}", name = config_name(.0))]
    InitTrapped(Option<PathBuf>, wasmtime::Error),
    #[error("cannot instantiate: {0:#}")]
    Instantiate(wasmtime::Error),
}

fn config_name(config: &Option<PathBuf>) -> String {
    match config {
        Some(path) => format!(" ({})", path.display()),
        None => " (config `{}`)".to_owned(),
    }
}

/// A plugin that could not be loaded: the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", .path.display())]
pub struct LoadError {
    pub path: PathBuf,
    // Not a `#[source]`: the message already includes it, and error chains would repeat it.
    pub problem: LoadProblem,
}

/// How long loading took, and whether the compile cache served it.
#[derive(Debug, Clone, Copy)]
pub struct LoadTiming {
    pub compile: Duration,
    pub cache: CacheOutcome,
    pub init: Duration,
}

/// A loaded, checked and initialised plugin, ready to be instantiated on any thread.
pub struct Plugin {
    pub name: Arc<str>,
    pub source: PluginSource,
    /// sha256 of the component (after any decompression): the plugin's identity.
    pub sha256: [u8; 32],
    /// Size of the component, in bytes (after any decompression).
    pub size: u64,
    /// The config passed to `init`, exactly as read (`{}` when none).
    pub config: String,
    pub timing: LoadTiming,
    linked: Arc<Linked>,
}

/// A component checked against the world and linked: everything about a plugin that depends on
/// its bytes alone, not on its config.
struct Linked {
    pre: RouterPre<HostState>,
    wit_version: String,
    imports: Vec<String>,
    exports: Vec<String>,
}

fn link(engine: &PluginEngine, component: &Component) -> Result<Arc<Linked>, LoadProblem> {
    let (wit_version, imports, exports) = check_world(engine, component)?;
    let instance_pre = engine
        .linker()
        .instantiate_pre(component)
        .map_err(|e| LoadProblem::UnsupportedImport(format!("{e:#}")))?;
    let pre = RouterPre::new(instance_pre).map_err(LoadProblem::WrongWorld)?;
    Ok(Arc::new(Linked {
        pre,
        wit_version,
        imports,
        exports,
    }))
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("wasm", &self.source.wasm)
            .field("wit_version", &self.linked.wit_version)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Reads, compiles (through the cache), checks and initialises one plugin. The `init` call
    /// runs on a throwaway instance so that a config the plugin rejects is found here.
    pub fn load(engine: &PluginEngine, source: PluginSource) -> Result<Self, LoadError> {
        let files = PluginFiles::read(&source)?;
        Self::from_files(engine, source, files, &[])
    }

    /// Like [`Plugin::load`], from files already read. When one of `reusable` (the plugins of
    /// the set being replaced) has the same component, its checked, linked component is reused
    /// instead of compiled again, so a reload that changes only configs, or only some plugins,
    /// compiles nothing else. `init` still runs, with this source's config.
    pub fn from_files(
        engine: &PluginEngine,
        source: PluginSource,
        files: PluginFiles,
        reusable: &[Plugin],
    ) -> Result<Self, LoadError> {
        let fail = |problem| LoadError {
            path: source.wasm.clone(),
            problem,
        };
        let PluginFiles {
            wasm,
            sha256,
            config,
        } = files;
        let started = Instant::now();
        let (linked, cache_outcome) = match reusable.iter().find(|p| p.sha256 == sha256) {
            Some(previous) => (previous.linked.clone(), CacheOutcome::Reused),
            None => {
                check_header(&wasm).map_err(fail)?;
                let (component, outcome) = cache::compile(engine.engine(), engine.cache(), &wasm)
                    .map_err(|e| fail(LoadProblem::Compile(e)))?;
                (link(engine, &component).map_err(fail)?, outcome)
            }
        };
        let compile = started.elapsed();

        let name: Arc<str> = source.name.as_str().into();
        let started = Instant::now();
        Instance::start(engine, &name, &linked.pre, &config).map_err(|e| {
            fail(match e {
                StartError::Instantiate(e) => LoadProblem::Instantiate(e),
                StartError::Trap(e) => LoadProblem::InitTrapped(source.config.clone(), e),
                StartError::Refused(msg) => LoadProblem::InitFailed(source.config.clone(), msg),
            })
        })?;
        let init = started.elapsed();

        Ok(Self {
            name,
            sha256,
            size: wasm.len() as u64,
            config,
            timing: LoadTiming {
                compile,
                cache: cache_outcome,
                init,
            },
            linked,
            source,
        })
    }

    /// The `fanout:router` version the plugin was built against.
    pub fn wit_version(&self) -> &str {
        &self.linked.wit_version
    }

    pub fn imports(&self) -> &[String] {
        &self.linked.imports
    }

    pub fn exports(&self) -> &[String] {
        &self.linked.exports
    }

    /// Starts a fresh instance and runs `init` on it.
    pub(super) fn start(&self, engine: &PluginEngine) -> Result<Instance, StartError> {
        Instance::start(engine, &self.name, &self.linked.pre, &self.config)
    }
}

/// A live instance with its store. Dropped after a trap: a trapped store is poisoned.
pub(super) struct Instance {
    pub store: Store<HostState>,
    /// `route`, typed to lift its result through [`RouteAnswer`] (sizes checked before any
    /// copy) rather than as the generated bindings would.
    route: TypedFunc<(Resource<SharedEvent>,), (RouteAnswer,)>,
}

/// Why an instance could not be started.
pub(super) enum StartError {
    Instantiate(wasmtime::Error),
    Trap(wasmtime::Error),
    Refused(String),
}

impl Instance {
    fn start(
        engine: &PluginEngine,
        name: &Arc<str>,
        pre: &RouterPre<HostState>,
        config: &str,
    ) -> Result<Self, StartError> {
        let limits = engine.limits();
        let state = HostState::new(name.clone(), limits.memory_bytes, limits.log_lines_per_call);
        let mut store = Store::new(engine.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(limits.start_deadline_ticks());
        let deadline = limits.start_deadline();
        let instance = run_within(deadline, pre.instance_pre().instantiate_async(&mut store))
            .ok_or_else(|| StartError::Trap(timed_out("instantiation", deadline)))?
            .map_err(StartError::Instantiate)?;
        let bindings = Router::new(&mut store, &instance).map_err(StartError::Instantiate)?;
        // The export's type was checked against the world when the plugin was linked.
        let route = instance
            .get_typed_func(&mut store, "route")
            .map_err(StartError::Instantiate)?;
        store.data_mut().start_call();
        store.set_epoch_deadline(limits.start_deadline_ticks());
        match run_within(deadline, bindings.call_init(&mut store, config)) {
            None => Err(StartError::Trap(timed_out("init", deadline))),
            Some(Ok(Ok(()))) => Ok(Self { store, route }),
            Some(Ok(Err(msg))) => Err(StartError::Refused(crate::deadletter::truncate(&msg))),
            Some(Err(trap)) => Err(StartError::Trap(trap)),
        }
    }

    /// Calls the plugin's `route` with a handle to `event`, for at most `deadline` (the epoch
    /// deadline, set by the caller, stops wasm code; this stops a wait in a host call), and lifts
    /// its answer within `budget`. A call that ran out of time is a
    /// [`Trap::Interrupt`](wasmtime::Trap::Interrupt) either way, and the instance must be
    /// discarded. The handle lives in this instance's resource table for the duration of the
    /// call only.
    pub fn call_route(
        &mut self,
        event: &SharedEvent,
        deadline: Duration,
        budget: LiftBudget,
    ) -> wasmtime::Result<RouteAnswer> {
        let handle = self.store.data_mut().table.push(event.clone())?;
        let borrowed = Resource::new_borrow(handle.rep());
        let route = self.route;
        let result = with_budget(budget, || {
            run_within(deadline, route.call_async(&mut self.store, (borrowed,)))
        })
        .unwrap_or_else(|| Err(wasmtime::Trap::Interrupt.into()))
        .map(|(answer,)| answer);
        // After a trap the instance is dropped with its table, so the entry goes either way.
        self.store.data_mut().table.delete(handle)?;
        result
    }
}

/// The error of a start-up step that ran out of time waiting in a host call.
fn timed_out(step: &str, deadline: Duration) -> wasmtime::Error {
    wasmtime::format_err!(
        "{step} exceeded the {} ms start deadline",
        deadline.as_millis()
    )
}

fn check_header(wasm: &[u8]) -> Result<(), LoadProblem> {
    // Both formats start with `\0asm`; the next four bytes are the version (core: 1 0 0 0) or,
    // for components, version 0x0d and layer 1.
    match wasm.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(LoadProblem::CoreModule),
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(()),
        _ => Err(LoadProblem::NotWasm),
    }
}

/// Checks the component's exports and its `fanout:router` version, before the linker and the
/// generated bindings check every type in detail.
fn check_world(
    engine: &PluginEngine,
    component: &Component,
) -> Result<(String, Vec<String>, Vec<String>), LoadProblem> {
    let ty = component.component_type();
    // Type imports are not capabilities: the world's `use types.{event}` shows up as an import
    // of the resource type `event`, which the linker satisfies through `fanout:router/types`.
    let imports: Vec<String> = ty
        .imports(engine.engine())
        .filter(|(_, item)| !matches!(item.ty, ComponentItem::Resource(_) | ComponentItem::Type(_)))
        .map(|(n, _)| n.to_owned())
        .collect();
    let exports: Vec<(String, bool)> = ty
        .exports(engine.engine())
        .map(|(n, item)| {
            (
                n.to_owned(),
                matches!(item.ty, ComponentItem::ComponentFunc(_)),
            )
        })
        .collect();

    let found_version = imports.iter().find_map(|name| {
        let rest = name.strip_prefix(bindings::TYPES_INTERFACE)?;
        Some(rest.strip_prefix('@').unwrap_or("(unversioned)").to_owned())
    });
    for required in ["route", "init"] {
        if !exports.iter().any(|(name, _)| name == required) {
            // A component built against another version usually also lacks our exports; the
            // version is the more useful thing to report.
            if let Some(found) = &found_version
                && !wit_compatible(found)
            {
                return Err(LoadProblem::IncompatibleWit {
                    found: found.clone(),
                    supported: bindings::WIT_VERSION,
                });
            }
            return Err(LoadProblem::MissingExport(required));
        }
    }
    let Some(found) = found_version else {
        return Err(LoadProblem::WrongWorld(wasmtime::format_err!(
            "it does not import `{}`; was it built from wit/router.wit?",
            bindings::TYPES_INTERFACE
        )));
    };
    if !wit_compatible(&found) {
        return Err(LoadProblem::IncompatibleWit {
            found,
            supported: bindings::WIT_VERSION,
        });
    }
    for import in &imports {
        let ours = import.starts_with("fanout:router/") || import == "log";
        if !ours && !import.starts_with("wasi:") {
            return Err(LoadProblem::UnsupportedImport(import.clone()));
        }
    }
    Ok((
        found,
        imports,
        exports.into_iter().map(|(n, _)| n).collect(),
    ))
}

/// A `fanout:router` version as (major, minor, patch); a missing patch is 0.
fn parse_wit_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    Some((major, minor, patch))
}

/// Semver compatibility of a plugin's version with the host's: for 0.x the minor version must
/// match, from 1.0 the major version must match and the plugin's minor must not be newer.
fn wit_compatible_with(
    (maj, min, _): (u64, u64, u64),
    (our_maj, our_min, _): (u64, u64, u64),
) -> bool {
    if our_maj == 0 {
        maj == 0 && min == our_min
    } else {
        maj == our_maj && min <= our_min
    }
}

/// Semver compatibility with [`bindings::WIT_VERSION`].
pub fn wit_compatible(found: &str) -> bool {
    match (
        parse_wit_version(found),
        parse_wit_version(bindings::WIT_VERSION),
    ) {
        (Some(found), Some(ours)) => wit_compatible_with(found, ours),
        _ => false,
    }
}

/// Whether a compatible plugin was built against an older `fanout:router` than this host's, so
/// the newer items of the host's version are not available to it (`fanout check` warns).
pub fn wit_older(found: &str) -> bool {
    match (
        parse_wit_version(found),
        parse_wit_version(bindings::WIT_VERSION),
    ) {
        (Some(found), Some(ours)) => wit_compatible_with(found, ours) && found < ours,
        _ => false,
    }
}

enum ReadLimited {
    Io(std::io::Error),
    TooLarge(u64),
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ReadLimited> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(ReadLimited::Io)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadLimited::Io)?;
    if bytes.len() as u64 > limit {
        let size = std::fs::metadata(path)
            .map(|m| m.len())
            .unwrap_or(bytes.len() as u64);
        return Err(ReadLimited::TooLarge(size));
    }
    Ok(bytes)
}

fn read_config(path: Option<&Path>) -> Result<String, LoadProblem> {
    let Some(path) = path else {
        return Ok("{}".to_owned());
    };
    let bytes = read_limited(path, MAX_CONFIG_BYTES).map_err(|e| match e {
        ReadLimited::Io(e) => LoadProblem::ConfigRead(path.to_owned(), e),
        ReadLimited::TooLarge(n) => LoadProblem::ConfigTooLarge(path.to_owned(), n),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        LoadProblem::ConfigRead(
            path.to_owned(),
            std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
        )
    })?;
    // Checked here so the error names the file, line and column, whatever the plugin's own
    // config parser would have said.
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|e| LoadProblem::ConfigNotJson(path.to_owned(), e))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_classified() {
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(LoadProblem::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(matches!(
            check_header(b"#!/bin/sh"),
            Err(LoadProblem::NotWasm)
        ));
        assert!(matches!(check_header(b""), Err(LoadProblem::NotWasm)));
    }

    #[test]
    fn wit_versions() {
        assert!(wit_compatible("0.2.0"));
        assert!(wit_compatible("0.2.7"));
        assert!(!wit_compatible("0.1.0"));
        assert!(!wit_compatible("0.3.0"));
        assert!(!wit_compatible("1.1.0"));
        assert!(!wit_compatible("garbage"));
        assert!(!wit_older("0.2.0"), "the host's own version");
        assert!(
            !wit_older("0.3.0") && !wit_older("0.1.9"),
            "incompatible, not older"
        );
        assert!(wit_compatible_with((0, 2, 0), (0, 2, 1)) && (0, 2, 0) < (0, 2, 1));
        assert!(
            wit_compatible_with((1, 1, 0), (1, 3, 0)),
            "from 1.0 an older minor loads"
        );
        assert!(
            !wit_compatible_with((1, 4, 0), (1, 3, 0)),
            "but not a newer one"
        );
    }
}
