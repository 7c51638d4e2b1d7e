//! fanout: routes Kubernetes events between Kafka topics with hot-reloadable WebAssembly plugins.
//!
//! Data flows one way: decode ([`event`]) → route ([`plugin`]) → validate ([`policy`]) → write
//! or dead-letter ([`deadletter`]). [`dryrun`] runs that flow over a file, without Kafka.

pub mod bindings;
pub mod cli;
pub mod config;
pub mod deadletter;
pub mod demo;
pub mod dryrun;
pub mod event;
pub mod generate;
pub mod kafka;
pub mod native;
pub mod ops;
pub mod pipeline;
pub mod plugin;
pub mod policy;
pub mod reload;
pub mod scaffold;
pub mod signals;
pub mod stats;
pub mod topic_name;

/// Locks a mutex even if a thread panicked while holding it. fanout's shared state (counters,
/// offset windows, caches) stays consistent between operations, so carrying on is right, and a
/// panic elsewhere must not take the data path down with it.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
