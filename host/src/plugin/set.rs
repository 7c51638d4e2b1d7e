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
use super::load::{LoadError, LoadProblem, Plugin, PluginSource};

/// Plugins in the order they run: file-name order.
#[derive(Debug)]
pub struct PluginSet {
    plugins: Vec<Plugin>,
    version: String,
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
        let mut plugins = Vec::with_capacity(sources.len());
        let mut errors = Vec::new();
        for source in sources {
            match Plugin::load(engine, source) {
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
        let mut hash = Sha256::new();
        for p in &plugins {
            hash.update(p.name.as_bytes());
            hash.update([0]);
            hash.update(p.sha256);
            hash.update(p.config.as_bytes());
            hash.update([0]);
        }
        let version = hex(&hash.finalize()[..6]);
        Self { plugins, version }
    }

    pub fn plugins(&self) -> &[Plugin] {
        &self.plugins
    }

    /// A short hash of every plugin's name, bytes and config: equal sets have equal versions.
    pub fn version(&self) -> &str {
        &self.version
    }
}

fn single(path: &Path, problem: LoadProblem) -> SetLoadError {
    SetLoadError(vec![LoadError {
        path: path.to_owned(),
        problem,
    }])
}

/// Lists the plugins of a directory: every `*.wasm`, sorted by file name, each with `X.json`
/// beside it as its config when present. Hidden entries (a ConfigMap mount's `..data` and
/// timestamped directories) are skipped; the visible names are symlinks through them.
pub fn discover(dir: &Path) -> std::io::Result<Vec<PluginSource>> {
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if file_name.starts_with('.') || !file_name.ends_with(".wasm") || !path.is_file() {
            continue;
        }
        let config = path.with_extension("json");
        sources.push(PluginSource {
            name: file_name.trim_end_matches(".wasm").to_owned(),
            config: config.is_file().then_some(config),
            wasm: path,
        });
    }
    sources.sort_by(|a, b| a.wasm.file_name().cmp(&b.wasm.file_name()));
    Ok(sources)
}

/// Shared handle to a set, as routing threads hold it.
pub type SharedSet = Arc<PluginSet>;
