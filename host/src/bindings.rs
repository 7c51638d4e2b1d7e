//! The one `bindgen!` for the `fanout:router` world. Everything else imports its types from here,
//! so the WIT file is the single source of truth for what crosses the boundary.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "router",
    // Destinations are compared to de-duplicate the outputs of several plugins.
    additional_derives: [PartialEq],
});

// The world `use`s `event`, `destination` and `log-level`, so those are already in scope here.
pub use self::fanout::router::types::{Header, ObjectReference, SourceRecord, Verb};

/// The `fanout:router` package version this host implements.
pub const WIT_VERSION: &str = "0.1.0";

/// The name under which a component built against this package imports the shared types.
pub const TYPES_INTERFACE: &str = "fanout:router/types";
