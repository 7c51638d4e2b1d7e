//! Integration tests: real plugins built from source, loaded by the real runtime, and the real
//! `fanout` binary. One test binary (ripgrep's layout) with shared helpers in `support`.

mod alerts;
mod by_namespace;
mod cache;
mod cli;
mod hostile;
mod kafka;
mod load_errors;
mod pipeline;
mod service;
mod support;
