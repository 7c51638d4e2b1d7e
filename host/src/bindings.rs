//! The one `bindgen!` for the `fanout:router` world. Everything else imports its types from here,
//! so the WIT file is the single source of truth for what crosses the boundary.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "router",
    // Destinations are compared to de-duplicate the outputs of several plugins.
    additional_derives: [PartialEq],
    // A plugin's `event` handle is the host's decoded event, shared by every plugin that routes it.
    with: {
        "fanout:router/types.event": crate::event::SharedEvent,
    },
    // A handle the plugin should not have is a trap, not a host panic.
    imports: { default: trappable },
    // Calls into a plugin are futures, so a deadline can abandon one that waits in a host call
    // (see `plugin::engine::run_within`).
    exports: { default: async },
});

// The world `use`s `event`, `destination` and `log-level`, so those are already in scope here.
pub use self::fanout::router::types::{Header, ObjectReference, SourceRecord, Verb};

/// The `fanout:router` package version this host implements.
pub const WIT_VERSION: &str = "0.2.0";

/// The name under which a component built against this package imports the shared types.
pub const TYPES_INTERFACE: &str = "fanout:router/types";
