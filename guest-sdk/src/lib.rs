//! Write [fanout](https://github.com/fanout-dev/fanout) routing plugins in plain Rust.
//!
//! fanout consumes Kubernetes EventRouter envelopes from Kafka and, for every event, calls a
//! plugin — a WebAssembly component built for `wasm32-wasip2` — to decide which records to write.
//! This crate hides the component-model plumbing of the `fanout:router` WIT world: a plugin is one
//! function and one [`export!`] line.
//!
//! # A complete plugin
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "my-plugin"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib", "rlib"]   # cdylib for the component, rlib for native unit tests
//!
//! [dependencies]
//! fanout-sdk = { path = "../../guest-sdk" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use fanout_sdk::{Destination, Event};
//!
//! /// Configuration, read from `my_plugin.json` beside `my_plugin.wasm` (or `{}` when absent).
//! #[derive(serde::Deserialize, Default)]
//! #[serde(default, deny_unknown_fields)]
//! struct Config {
//!     /// Prepended to every topic name.
//!     prefix: String,
//! }
//!
//! // Optional: checked once, at load. Without this impl the config is only parsed.
//! impl fanout_sdk::Config for Config {
//!     fn validate(&self) -> Result<(), String> {
//!         if self.prefix.starts_with("__") {
//!             return Err("prefix must not start with `__`".into());
//!         }
//!         Ok(())
//!     }
//! }
//!
//! fn route(ev: &Event, config: &Config) -> Result<Vec<Destination>, String> {
//!     if ev.namespace().is_empty() {
//!         // An error sends the event to the dead-letter topic with this message.
//!         return Err("event has no namespace".into());
//!     }
//!     if ev.reason() == "Pulled" {
//!         // An empty list drops the event on purpose.
//!         return Ok(vec![]);
//!     }
//!     // Labels are read from the raw envelope, parsed only when first asked for.
//!     let team = ev.label("team").unwrap_or("unknown");
//!     fanout_sdk::debug!("routing {} for team {team}", ev.name());
//!
//!     // No `.payload(..)`: the source bytes are forwarded unchanged. No `.key(..)`: the source
//!     // record's key is kept.
//!     Ok(vec![
//!         Destination::to(format!("{}{}", config.prefix, ev.namespace()))
//!             .header("team", team),
//!     ])
//! }
//!
//! fanout_sdk::export!(route, config: Config);
//! # fn main() {
//! #     let ev = Event::from_envelope(
//! #         r#"{"verb":"ADDED","event":{"metadata":{"namespace":"shop","name":"x.1"},
//! #             "reason":"BackOff","type":"Warning"}}"#,
//! #     )
//! #     .unwrap()
//! #     .with_source_key("x");
//! #     let config: Config = fanout_sdk::parse_config!(Config, r#"{"prefix":"k8s-"}"#).unwrap();
//! #     let out = route(&ev, &config).unwrap();
//! #     assert_eq!(out, vec![Destination::to("k8s-shop").header("team", "unknown")]);
//! #     assert!(fanout_sdk::parse_config!(Config, r#"{"prefix":"__x"}"#).is_err());
//! # }
//! ```
//!
//! Unit tests run natively with `cargo test`: build events from envelope JSON with
//! [`Event::from_envelope`], parse configurations exactly as `init` does with [`parse_config!`],
//! and call the route function directly:
//!
//! ```text
//! #[cfg(test)]
//! mod tests {
//!     use super::*;
//!
//!     #[test]
//!     fn routes_by_namespace() {
//!         let ev = Event::from_envelope(
//!             r#"{"verb":"ADDED","event":{"metadata":{"namespace":"shop","name":"x.1"},
//!                 "reason":"BackOff","type":"Warning"}}"#,
//!         )
//!         .unwrap()
//!         .with_source_key("x");
//!         let config: Config = fanout_sdk::parse_config!(Config, r#"{"prefix":"k8s-"}"#).unwrap();
//!         let out = route(&ev, &config).unwrap();
//!         assert_eq!(out, vec![Destination::to("k8s-shop").header("team", "unknown")]);
//!     }
//! }
//! ```
//!
//! Build the component with `cargo build --release --target wasm32-wasip2`; it is
//! `target/wasm32-wasip2/release/my_plugin.wasm`.
//!
//! # The contract, in short
//!
//! - The route function takes `&Event` (and `&Config` when the plugin has one) and returns
//!   `Result<Vec<Destination>, E>` for any `E: Display` (`String`, `anyhow::Error`, ...).
//!   - `Ok` with destinations: the host writes every one.
//!   - `Ok(vec![])`: the event is intentionally dropped and counted as filtered.
//!   - `Err(e)`: the event goes to the dead-letter topic with reason `plugin-error: <e>`.
//!   - A panic traps the instance: the event is dead-lettered with reason `plugin-trap` and the
//!     host starts a fresh instance (and calls `init` again).
//! - Configuration: see [`export!`] and [`Config`]. Without a config type the plugin accepts
//!   only an empty configuration (`{}`, `null` or nothing).
//! - Logging: [`log`] and the [`trace!`], [`debug!`], [`info!`], [`warn!`], [`error!`] macros
//!   write to the host's log, tagged with the plugin's name. In native tests they print to stderr.
//!
//! The WIT contract is `wit/router.wit` (`fanout:router@0.2.0`, world `router`).
#![warn(missing_docs)]

mod config;
mod destination;
mod event;
mod log;

pub use config::Config;
pub use event::{Event, JsonError};
pub use log::{Level, log};
/// The `serde_json` crate this SDK uses, re-exported so that plugins can name
/// [`serde_json::Value`] without depending on it.
pub use serde_json;

#[doc(inline)]
pub use crate::__private::bindings::fanout::router::types::{
    Destination, Header, ObjectReference, SourceRecord, Verb,
};

/// Exports a route function as the plugin's implementation of the `fanout:router` world.
///
/// Use it exactly once in the plugin crate (a `cdylib`).
///
/// # Without configuration
///
/// ```
/// use fanout_sdk::{Destination, Event};
///
/// fn route(ev: &Event) -> Result<Vec<Destination>, String> {
///     Ok(vec![Destination::to(ev.namespace())])
/// }
///
/// fanout_sdk::export!(route);
/// # fn main() {}
/// ```
///
/// The plugin then accepts only an empty configuration: `{}`, `null`, or whitespace. Anything
/// else refuses the plugin at load with `this plugin takes no configuration, got ...`.
///
/// # With a configuration type
///
/// ```
/// use fanout_sdk::{Destination, Event};
///
/// #[derive(serde::Deserialize, Default)]
/// #[serde(default, deny_unknown_fields)]
/// struct Config {
///     prefix: String,
/// }
///
/// fn route(ev: &Event, config: &Config) -> Result<Vec<Destination>, String> {
///     Ok(vec![Destination::to(format!("{}{}", config.prefix, ev.namespace()))])
/// }
///
/// fanout_sdk::export!(route, config: Config);
/// # fn main() {}
/// ```
///
/// At `init` the host's JSON is parsed into the type (any `serde::de::DeserializeOwned + Send +
/// Sync + 'static`), validated with [`Config::validate`] if the type implements [`Config`], and
/// kept for every later call; see [`parse_config!`] for the exact behaviour. `route` is a path
/// to a function, such as `route` or `rules::route`.
///
/// The route function's error type may be anything that implements `Display`; it is formatted
/// with `{:#}`, so `anyhow`-style errors include their chain of causes.
///
/// On targets other than `wasm32` the macro only type-checks the route function: nothing is
/// exported, so native unit tests call the route function directly.
#[macro_export]
macro_rules! export {
    ($route:path $(,)?) => {
        const _: () = {
            struct __FanoutPlugin;

            impl $crate::__private::Guest for __FanoutPlugin {
                fn init(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::init_without_config(&config)
                }

                fn route(
                    ev: &$crate::__private::WitEvent,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<$crate::Destination>,
                    ::std::string::String,
                > {
                    $crate::__private::call_route(ev, $route)
                }
            }

            #[cfg(target_arch = "wasm32")]
            $crate::__private::bindings::__export_router!(
                __FanoutPlugin with_types_in $crate::__private::bindings
            );
            // Natively nothing is exported; mark the glue (and so the route function) as used.
            #[cfg(not(target_arch = "wasm32"))]
            const _: () = $crate::__private::mark_used::<__FanoutPlugin>();
        };
    };
    ($route:path, config: $config:ty $(,)?) => {
        const _: () = {
            static __FANOUT_CONFIG: ::std::sync::OnceLock<$config> = ::std::sync::OnceLock::new();

            struct __FanoutPlugin;

            impl $crate::__private::Guest for __FanoutPlugin {
                fn init(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    let config: $config = $crate::parse_config!($config, &config)?;
                    __FANOUT_CONFIG
                        .set(config)
                        .map_err(|_| $crate::__private::init_twice())
                }

                fn route(
                    ev: &$crate::__private::WitEvent,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<$crate::Destination>,
                    ::std::string::String,
                > {
                    let ::core::option::Option::Some(config) = __FANOUT_CONFIG.get() else {
                        return ::core::result::Result::Err($crate::__private::not_initialised());
                    };
                    $crate::__private::call_route(ev, |ev| $route(ev, config))
                }
            }

            #[cfg(target_arch = "wasm32")]
            $crate::__private::bindings::__export_router!(
                __FanoutPlugin with_types_in $crate::__private::bindings
            );
            // Natively nothing is exported; mark the glue (and so the route function) as used.
            #[cfg(not(target_arch = "wasm32"))]
            const _: () = $crate::__private::mark_used::<__FanoutPlugin>();
        };
    };
}

/// Implementation details used by the macros. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    use std::fmt::Display;

    /// Bindings generated by `wit-bindgen` from `wit/router.wit`.
    #[allow(missing_docs, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "router",
            pub_export_macro: true,
            export_macro_name: "__export_router",
            default_bindings_module: "::fanout_sdk::__private::bindings",
            additional_derives: [PartialEq, Eq],
        });
    }

    pub use crate::config::{
        ValidateNothing, ValidateProbe, ValidateViaConfig, deserialize_config,
    };
    pub use crate::log::log_args;
    pub use bindings::Guest;

    /// The generated event resource: a handle to the host's event.
    pub type WitEvent = bindings::Event;

    /// `init` for plugins without a configuration type.
    pub fn init_without_config(config: &str) -> Result<(), String> {
        let trimmed = config.trim();
        if trimmed.is_empty() {
            return Ok(());
        }
        match serde_json::from_str::<serde_json::Value>(trimmed) {
            Ok(serde_json::Value::Null) => Ok(()),
            Ok(serde_json::Value::Object(map)) if map.is_empty() => Ok(()),
            _ => Err(format!(
                "this plugin takes no configuration, got {}",
                crate::config::snippet(trimmed)
            )),
        }
    }

    /// Wraps the host's event and calls the plugin's route function.
    pub fn call_route<E: Display>(
        ev: &WitEvent,
        route: impl FnOnce(&crate::Event<'_>) -> Result<Vec<crate::Destination>, E>,
    ) -> Result<Vec<crate::Destination>, String> {
        run_route(&crate::Event::from_wit(ev), route)
    }

    /// Calls the route function, formatting its error with `{:#}` so causes are included.
    pub fn run_route<E: Display>(
        ev: &crate::Event<'_>,
        route: impl FnOnce(&crate::Event<'_>) -> Result<Vec<crate::Destination>, E>,
    ) -> Result<Vec<crate::Destination>, String> {
        route(ev).map_err(|e| format!("{e:#}"))
    }

    /// Does nothing; referencing the glue from a `const _` keeps dead-code lints quiet natively.
    pub const fn mark_used<T: Guest>() {
        let _ = T::init;
        let _ = T::route;
    }

    /// The error of a second `init` on one instance.
    pub fn init_twice() -> String {
        "init was called more than once on this instance".to_string()
    }

    /// The error of a `route` before `init`.
    pub fn not_initialised() -> String {
        "route was called before init: the plugin has no configuration".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::__private::*;

    #[test]
    fn no_config_accepts_empty_documents() {
        for ok in ["{}", " { } ", "\n{\n}\n", "null", "", "  "] {
            assert_eq!(init_without_config(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn no_config_refuses_anything_else() {
        let err = init_without_config(r#"{"prefix":"x"}"#).unwrap_err();
        assert_eq!(
            err,
            r#"this plugin takes no configuration, got {"prefix":"x"}"#
        );
        assert!(init_without_config("[]").is_err());
        assert!(init_without_config("{").is_err());
        let long = format!("{{\"k\":\"{}\"}}", "é".repeat(200));
        let err = init_without_config(&long).unwrap_err();
        assert!(err.ends_with('…'), "{err}");
        assert!(err.chars().count() < 150, "{err}");
    }

    #[test]
    fn route_errors_are_displayed_with_causes() {
        struct Chain;
        impl std::fmt::Display for Chain {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                if f.alternate() {
                    write!(f, "outer: inner")
                } else {
                    write!(f, "outer")
                }
            }
        }
        let ev = crate::Event::from_envelope(r#"{"verb":"ADDED","event":{}}"#).unwrap();
        let err = run_route(&ev, |_| Err::<Vec<crate::Destination>, _>(Chain)).unwrap_err();
        assert_eq!(err, "outer: inner");
    }
}
