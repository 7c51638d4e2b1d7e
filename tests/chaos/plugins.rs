//! The plugin directory, as Kubernetes mounts a ConfigMap: every change is a new timestamped
//! directory behind the `..data` symlink, written by the kubelet's own algorithm
//! (`atomic_writer.rs`). It always holds `hostile.wasm` and `hostile.json`.
//!
//! A good revision changes only the config (`{"swap":N}`): a new plugin-set version that routes
//! exactly as before. A broken one must be refused while the set in service keeps routing:
//! garbage bytes, a component of another world, a config that is not JSON, or one whose `init`
//! fails or traps.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;

use crate::atomic_writer::AtomicWriter;
use crate::support;

/// The plugin every revision holds, by file name.
const PLUGIN: &str = "hostile";

/// What a revision of the directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Revision {
    Good,
    /// Not WebAssembly (after the magic number).
    Garbage,
    /// The `wrong-world` fixture in `hostile.wasm`'s place.
    WrongWorld,
    /// A config that is not JSON.
    ConfigNotJson,
    /// `"fail_init": true`: `init` returns an error.
    FailInit,
    /// `"trap_init": true`: `init` panics.
    TrapInit,
}

impl Revision {
    /// The broken kinds, in the order the run cycles through them.
    pub const BROKEN: [Revision; 5] = [
        Revision::Garbage,
        Revision::WrongWorld,
        Revision::ConfigNotJson,
        Revision::FailInit,
        Revision::TrapInit,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Revision::Good => "good (config change)",
            Revision::Garbage => "garbage .wasm",
            Revision::WrongWorld => "wrong-world component",
            Revision::ConfigNotJson => "config not JSON",
            Revision::FailInit => "init fails (fail_init)",
            Revision::TrapInit => "init traps (trap_init)",
        }
    }
}

/// One revision as written.
#[derive(Debug, Clone)]
pub struct Written {
    /// Its timestamped directory, which a refusal names.
    pub dir: String,
    /// The plugin-set version fanout must put in service (good revisions only).
    pub version: Option<String>,
}

/// The mounted plugin directory.
pub struct PluginVolume {
    writer: AtomicWriter,
    hostile: Vec<u8>,
    wrong_world: Vec<u8>,
    hostile_sha256: [u8; 32],
    written: u32,
}

impl PluginVolume {
    /// Creates the volume at `dir` with its first, good revision.
    pub fn create(dir: &Path) -> anyhow::Result<(Self, Written)> {
        std::fs::create_dir_all(dir)?;
        let hostile_path = support::wasm(PLUGIN);
        // The plugin's hash, as fanout computes it, for the versions good revisions must get.
        let plugin = fanout::plugin::Plugin::load(
            &support::engine(),
            fanout::plugin::PluginSource::file(&hostile_path, None),
        )
        .context("loading the hostile plugin")?;
        let mut volume = Self {
            writer: AtomicWriter::new(dir),
            hostile: std::fs::read(&hostile_path)?,
            wrong_world: std::fs::read(support::wasm("wrong_world"))?,
            hostile_sha256: plugin.sha256,
            written: 0,
        };
        let first = volume.write(Revision::Good)?;
        Ok((volume, first))
    }

    /// Writes the next revision, as one kubelet update.
    pub fn write(&mut self, revision: Revision) -> anyhow::Result<Written> {
        let n = self.written;
        self.written += 1;
        let good_config = format!(r#"{{"swap":{n}}}"#);
        let (wasm, config) = match revision {
            Revision::Good => (self.hostile.clone(), good_config),
            Revision::Garbage => (
                [
                    b"\0asm\x0d\x00\x01\x00".as_slice(),
                    format!("garbage {n}").as_bytes(),
                ]
                .concat(),
                good_config,
            ),
            Revision::WrongWorld => (self.wrong_world.clone(), good_config),
            Revision::ConfigNotJson => (self.hostile.clone(), format!("{{swap: {n}")),
            Revision::FailInit => (
                self.hostile.clone(),
                format!(r#"{{"swap":{n},"fail_init":true}}"#),
            ),
            Revision::TrapInit => (
                self.hostile.clone(),
                format!(r#"{{"swap":{n},"trap_init":true}}"#),
            ),
        };
        let version = (revision == Revision::Good).then(|| {
            fanout::plugin::set::version_of(std::iter::once((
                PLUGIN,
                self.hostile_sha256,
                config.as_str(),
            )))
            .to_string()
        });
        let payload = BTreeMap::from([
            (format!("{PLUGIN}.wasm"), wasm),
            (format!("{PLUGIN}.json"), config.into_bytes()),
        ]);
        let report = self
            .writer
            .write(&payload)
            .context("writing a plugin revision")?;
        Ok(Written {
            dir: report.new_dir,
            version,
        })
    }
}
