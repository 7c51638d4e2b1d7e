//! fanout: routes Kubernetes events between Kafka topics with hot-reloadable WebAssembly plugins.
//!
//! Data flows one way: decode ([`event`]) → route ([`plugin`]) → validate ([`policy`]) → write
//! or dead-letter ([`deadletter`]). [`dryrun`] runs that flow over a file, without Kafka.

pub mod bindings;
pub mod cli;
pub mod deadletter;
pub mod dryrun;
pub mod event;
pub mod native;
pub mod plugin;
pub mod policy;
