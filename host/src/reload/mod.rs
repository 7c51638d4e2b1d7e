//! Hot reload: plugins and their configs change while the pipeline runs, and a bad change can't
//! take it down.
//!
//! - [`scan`]: what the plugin directory holds now (through a ConfigMap's `..data`), and whether
//!   it changed.
//! - [`watch`]: the reloader thread: events and rescans → load the whole new set off the hot
//!   path → swap it in, or refuse it and keep serving.
//! - [`live`]: the set in service, swapped between events; the trial after a swap and the
//!   automatic rollback.

pub mod live;
pub mod scan;
pub mod watch;

pub use live::{LiveRouter, LiveSet, ReloadCounts, ReloadStatus, RollbackPolicy};
pub use watch::{Reloader, WatchSettings};
