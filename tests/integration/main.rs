//! Integration tests: real plugins built from source, loaded by the real runtime, and the real
//! `fanout` binary. One test binary (ripgrep's layout) with shared helpers in `support`.

mod alerts;
mod apache_kafka;
mod architecture;
mod atomic_writer;
mod atomic_writer_tests;
mod authoring;
mod by_namespace;
mod cache;
mod cli;
mod dead_letter_topic;
mod deploy;
mod exactly_once;
mod group_protocols;
mod hostile;
mod hostile_load;
mod hot_reload;
mod kafka;
mod load_errors;
mod ops;
mod ops_http;
mod pipeline;
mod poison;
mod poison_envelopes;
mod properties;
mod reload;
mod security;
mod service;
mod support;
mod topic_creation;
mod watermarks;
