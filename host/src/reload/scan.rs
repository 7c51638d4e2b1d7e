//! Reading a plugin path at one moment: which files it holds, whether they changed, and their
//! content.
//!
//! Two levels of "changed": a [`StatKey`] (names, sizes, modification times, inodes, and the
//! ConfigMap snapshot directory) is cheap enough for a periodic rescan; only when it differs are
//! the files read and hashed into a [`Snapshot`], whose version says whether the content really
//! changed (a `touch` or a rewrite with the same bytes is not a reload).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::plugin::set::{discover, snapshot_root, version_of};
use crate::plugin::{LoadError, PluginFiles, PluginSource};

/// How many times a read is retried when the kubelet swaps `..data` while it runs.
const SNAPSHOT_ATTEMPTS: usize = 5;

/// A cheap summary of a plugin path's files, without reading them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatKey(Vec<(PathBuf, u64, i64, i64, u64)>);

/// The files of a plugin path, read, with the version of the set they make.
#[derive(Debug)]
pub struct Snapshot {
    /// Every plugin with its files, or the error reading them.
    pub files: Vec<(PluginSource, Result<PluginFiles, LoadError>)>,
    /// The version a set loaded from these files will have; `None` if a file could not be read.
    pub version: Option<std::sync::Arc<str>>,
}

/// The plugins at `path`: a directory's plugins, or one plugin file (whose config, if any, is
/// `X.json` beside it).
pub fn sources(path: &Path) -> std::io::Result<Vec<PluginSource>> {
    if path.is_dir() {
        return discover(path);
    }
    let mut source = PluginSource::file(path, None);
    let config = path.with_file_name(format!("{}.json", source.name));
    source.config = config.is_file().then_some(config);
    Ok(vec![source])
}

pub fn stat_key(path: &Path) -> std::io::Result<StatKey> {
    let mut entries = Vec::new();
    if path.is_dir() {
        // The snapshot directory's name alone identifies a ConfigMap version.
        let root = snapshot_root(path)?;
        entries.push((root, 0, 0, 0, 0));
    }
    for source in sources(path)? {
        for file in std::iter::once(&source.wasm).chain(source.config.as_ref()) {
            let meta = std::fs::metadata(file)?;
            entries.push((
                file.clone(),
                meta.len(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.ino(),
            ));
        }
    }
    Ok(StatKey(entries))
}

/// Reads every plugin file at `path`. A ConfigMap volume is read from one snapshot directory; if
/// the kubelet swapped `..data` during the read, the read starts again.
pub fn snapshot(path: &Path) -> std::io::Result<Snapshot> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = path.is_dir().then(|| snapshot_root(path)).transpose()?;
        let files: Vec<_> = sources(path)?
            .into_iter()
            .map(|source| {
                let files = PluginFiles::read(&source);
                (source, files)
            })
            .collect();
        let after = path.is_dir().then(|| snapshot_root(path)).transpose()?;
        if before == after || attempt == SNAPSHOT_ATTEMPTS {
            let version = files
                .iter()
                .map(|(source, files)| {
                    let files = files.as_ref().ok()?;
                    Some((source.name.as_str(), files.sha256, files.config.as_str()))
                })
                .collect::<Option<Vec<_>>>()
                .map(|plugins| version_of(plugins.into_iter()));
            return Ok(Snapshot { files, version });
        }
        tracing::debug!(
            attempt,
            "the ConfigMap changed while it was read; reading again"
        );
    }
}
