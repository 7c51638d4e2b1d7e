//! A plugin set: every plugin of a directory, loaded and checked, immutable once built.
//!
//! Routing threads share a set through an `Arc`; a different set (a reload) is a new value, never
//! an edit of this one, so one event is always routed by exactly one set. The set's version is a
//! short content hash of its plugins and configs.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::cache::hex;
use super::engine::PluginEngine;
use super::load::{LoadError, LoadProblem, Packing, Plugin, PluginFiles, PluginSource};

/// The entry a Kubernetes ConfigMap volume swaps atomically: a symlink to the timestamped
/// directory holding the current files.
pub const CONFIGMAP_DATA: &str = "..data";

/// Plugins in the order they run: file-name order.
#[derive(Debug)]
pub struct PluginSet {
    plugins: Vec<Plugin>,
    version: Arc<str>,
}

/// Every plugin of a set that failed to load; the set is refused as a whole.
#[derive(Debug, thiserror::Error)]
#[error("{} plugin(s) could not be loaded:\n  {}", .0.len(), list(.0))]
pub struct SetLoadError(pub Vec<LoadError>);

fn list(errors: &[LoadError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

impl PluginSet {
    /// Loads every source; refuses the whole set if any plugin fails, listing every failure.
    pub fn load(engine: &PluginEngine, sources: Vec<PluginSource>) -> Result<Self, SetLoadError> {
        let files = sources
            .into_iter()
            .map(|source| {
                let files = PluginFiles::read(&source);
                (source, files)
            })
            .collect();
        Self::load_files(engine, files, None)
    }

    /// Loads plugins from files already read. Plugins whose component is in `previous` reuse
    /// it instead of compiling again. Refuses the whole set if any plugin fails (including a
    /// read that failed earlier), listing every failure.
    pub fn load_files(
        engine: &PluginEngine,
        files: Vec<(PluginSource, Result<PluginFiles, LoadError>)>,
        previous: Option<&PluginSet>,
    ) -> Result<Self, SetLoadError> {
        let mut plugins: Vec<Plugin> = Vec::with_capacity(files.len());
        let mut errors = Vec::new();
        let mut names: Vec<(String, std::path::PathBuf)> = Vec::new();
        for (source, files) in files {
            if let Some((_, first)) = names.iter().find(|(name, _)| *name == source.name) {
                errors.push(LoadError {
                    path: source.wasm.clone(),
                    problem: LoadProblem::DuplicateName(source.name.clone(), first.clone()),
                });
                continue;
            }
            names.push((source.name.clone(), source.wasm.clone()));
            let reusable = previous.map_or(&[][..], |set| &set.plugins);
            let loaded =
                files.and_then(|files| Plugin::from_files(engine, source, files, reusable));
            match loaded {
                Ok(plugin) => plugins.push(plugin),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(SetLoadError(errors));
        }
        Ok(Self::from_plugins(plugins))
    }

    /// Loads a plugin directory, or a single `.wasm` file with an optional config.
    pub fn load_path(
        engine: &PluginEngine,
        path: &Path,
        config: Option<&Path>,
    ) -> Result<Self, SetLoadError> {
        let sources = if path.is_dir() {
            if config.is_some() {
                return Err(single(
                    path,
                    LoadProblem::Read(std::io::Error::other(
                        "--config applies to a single plugin file; in a directory, the config of \
                     X.wasm is X.json beside it",
                    )),
                ));
            }
            discover(path).map_err(|e| single(path, LoadProblem::Read(e)))?
        } else {
            vec![PluginSource::file(path, config.map(Path::to_path_buf))]
        };
        if sources.is_empty() {
            return Err(single(
                path,
                LoadProblem::Read(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no *.wasm plugins in this directory",
                )),
            ));
        }
        Self::load(engine, sources)
    }

    fn from_plugins(plugins: Vec<Plugin>) -> Self {
        let version = version_of(
            plugins
                .iter()
                .map(|p| (p.name.as_ref(), p.sha256, p.config.as_str())),
        );
        Self { plugins, version }
    }

    pub fn plugins(&self) -> &[Plugin] {
        &self.plugins
    }

    /// A short hash of every plugin's name, bytes and config: equal sets have equal versions.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn version_arc(&self) -> Arc<str> {
        self.version.clone()
    }
}

/// The version of a set of `(name, sha256 of the component, config)`, in running order:
/// a short hex hash, the same for the same content however it is packed or where it is read.
pub fn version_of<'a>(plugins: impl Iterator<Item = (&'a str, [u8; 32], &'a str)>) -> Arc<str> {
    let mut hash = Sha256::new();
    for (name, sha256, config) in plugins {
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(sha256);
        hash.update(config.as_bytes());
        hash.update([0]);
    }
    hex(&hash.finalize()[..6]).into()
}

fn single(path: &Path, problem: LoadProblem) -> SetLoadError {
    SetLoadError(vec![LoadError {
        path: path.to_owned(),
        problem,
    }])
}

/// Lists the plugins of a directory: every `X.wasm` (or `X.wasm.gz`, `X.wasm.zst`), sorted by
/// file name, each with `X.json` beside it as its config when present.
///
/// A ConfigMap volume is read through its `..data` symlink, resolved once: every file then comes
/// from the same timestamped directory, so a set is never a mix of two ConfigMap versions, even
/// if the kubelet swaps `..data` while the set is read, and a key that was just added is seen
/// before the kubelet has created its visible symlink. Hidden entries are skipped.
pub fn discover(dir: &Path) -> std::io::Result<Vec<PluginSource>> {
    let root = snapshot_root(dir)?;
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(&root)? {
        let path = entry?.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((name, _)) = Packing::of(file_name) else {
            continue;
        };
        if file_name.starts_with('.') || !path.is_file() {
            continue;
        }
        let config = root.join(format!("{name}.json"));
        sources.push(PluginSource {
            name: name.to_owned(),
            config: config.is_file().then_some(config),
            wasm: path,
        });
    }
    sources.sort_by(|a, b| a.wasm.file_name().cmp(&b.wasm.file_name()));
    Ok(sources)
}

/// Where a directory's current files are: the target of its `..data` symlink when it is a
/// ConfigMap volume, else the directory itself.
pub fn snapshot_root(dir: &Path) -> std::io::Result<std::path::PathBuf> {
    match std::fs::read_link(dir.join(CONFIGMAP_DATA)) {
        // The kubelet writes a relative target; `join` keeps an absolute one as it is.
        Ok(target) => Ok(dir.join(target)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(dir.to_owned()),
        // `..data` exists but is not a symlink: not a kubelet-managed volume.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(dir.to_owned()),
        Err(e) => Err(e),
    }
}

/// Shared handle to a set, as routing threads hold it.
pub type SharedSet = Arc<PluginSet>;
