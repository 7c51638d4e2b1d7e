//! The plugin runtime: load WebAssembly components, check them against the `fanout:router`
//! world, and call them safely.
//!
//! - [`engine`]: the shared Engine, Linker, limits and epoch ticker.
//! - [`cache`]: precompiled artifacts in a host-owned directory.
//! - [`load`]: one file → a checked, initialised [`Plugin`], or a [`LoadError`] naming the file.
//! - [`set`]: all plugins of a directory as one immutable, versioned [`PluginSet`].
//! - [`router`]: per-thread instances that route one event to an [`Outcome`].
//! - [`lift`]: a plugin's answer into host memory, its sizes checked before anything is copied.
//! - [`host`]: what an instance can reach (its log, nothing else).

pub mod cache;
pub mod engine;
pub mod host;
pub mod lift;
pub mod load;
pub mod router;
pub mod set;

pub use cache::{CacheOutcome, CompileCache};
pub use engine::{PluginEngine, RuntimeLimits};
pub use load::{LoadError, LoadProblem, Packing, Plugin, PluginFiles, PluginSource};
pub use router::{Outcome, RouteEvent, Router};
pub use set::{PluginSet, SetLoadError, SharedSet};
