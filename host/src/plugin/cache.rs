//! The compile cache: precompiled plugins, keyed by what makes them valid.
//!
//! `Component::deserialize` trusts its input (it maps machine code), so artifacts are only ever
//! read from a directory this process owns and nobody else can write. The key is the sha256 of
//! the wasm bytes together with the engine's `precompile_compatibility_hash()`, so a changed
//! plugin, wasmtime version or engine setting never loads a stale artifact. Files are written
//! to a temporary name and renamed, so a crash never leaves a half-written artifact under a key.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of precompiled plugins.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

/// Whether a component came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    Disabled,
    /// Not compiled at all: a reload reused the component of the set it replaces.
    Reused,
}

impl CompileCache {
    /// Opens (creating if needed, mode 0700) a cache directory, and refuses one that another user
    /// owns or that others can write to.
    pub fn open(dir: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)
            .with_context(|| format!("creating compile cache directory {}", dir.display()))?;
        let meta = fs::symlink_metadata(&dir)
            .with_context(|| format!("reading compile cache directory {}", dir.display()))?;
        if !meta.is_dir() {
            bail!(
                "compile cache {} is not a directory (symlinks are refused)",
                dir.display()
            );
        }
        let uid = rustix::process::geteuid().as_raw();
        if meta.uid() != uid {
            bail!(
                "compile cache {} is owned by uid {}, not by this process (uid {uid}); \
                 precompiled code is only loaded from a directory fanout owns",
                dir.display(),
                meta.uid()
            );
        }
        if meta.mode() & 0o022 != 0 {
            // Tighten a directory we own rather than fail: it is ours to fix.
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).with_context(|| {
                format!("making compile cache {} private (mode 0700)", dir.display())
            })?;
        }
        Ok(Self { dir })
    }

    /// The cache to use: an explicitly configured directory must be usable (an error
    /// otherwise); without one, the default location is a convenience, and if it cannot be used
    /// plugins are simply compiled on each load.
    pub fn configured(explicit: Option<&Path>) -> anyhow::Result<Option<Self>> {
        match explicit {
            Some(dir) => Self::open(dir).map(Some),
            None => Ok(Self::default_dir().and_then(|dir| {
                Self::open(&dir)
                    .inspect_err(|e| tracing::warn!("compile cache disabled: {e:#}"))
                    .ok()
            })),
        }
    }

    /// The default location: `$XDG_CACHE_HOME/fanout`, else `$HOME/.cache/fanout`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(base.join("fanout"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_for(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let mut digest = hasher.0;
        digest.update(Sha256::digest(wasm));
        self.dir.join(format!("{}.cwasm", hex(&digest.finalize())))
    }

    /// Loads the precompiled form of `wasm`, compiling and storing it on a miss. A corrupt or
    /// unreadable artifact is recompiled, never trusted; a failure to store one only logs.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.path_for(engine, wasm);
        if path.is_file() {
            // SAFETY: the file lives in a directory owned by this user and closed to others
            // (checked in `open`), was written by `store` below under a key derived from the
            // wasm bytes and this engine's compatibility hash, and wasmtime validates the
            // artifact's header and engine settings before using it.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    "ignoring unusable precompiled plugin, recompiling: {e:#}"
                ),
            }
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), "could not cache precompiled plugin: {e:#}");
        }
        Ok((component, CacheOutcome::Miss))
    }

    fn store(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        let bytes = component.serialize()?;
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// Compiles `wasm`, through the cache when there is one.
pub fn compile(
    engine: &Engine,
    cache: Option<&CompileCache>,
    wasm: &[u8],
) -> wasmtime::Result<(Component, CacheOutcome)> {
    match cache {
        Some(cache) => cache.load_or_compile(engine, wasm),
        None => Ok((Component::new(engine, wasm)?, CacheOutcome::Disabled)),
    }
}

/// Feeds `Hash` output into sha256, so the key is stable across processes (unlike `DefaultHasher`).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the digest is used")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
