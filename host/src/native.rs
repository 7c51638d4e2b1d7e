//! The default plugin's logic as a native Rust function: the baseline the benchmarks measure
//! `by-namespace.wasm` against. It must stay behaviourally identical to `plugins/by-namespace`.

use crate::bindings::Destination;
use crate::event::{Event, SharedEvent};

/// Routes to `<prefix><namespace>`, forwarding the bytes unchanged and keeping the source key,
/// falling back to `involvedObject.name`.
pub fn by_namespace(event: &Event, prefix: &str) -> Result<Vec<Destination>, String> {
    if event.namespace().is_empty() {
        return Err(
            "event.metadata.namespace is missing or empty; cannot route by namespace".into(),
        );
    }
    let key = match &event.source.key {
        Some(_) => None,
        None if event.involved_object_name().is_empty() => None,
        None => Some(event.involved_object_name().as_bytes().to_vec()),
    };
    Ok(vec![Destination {
        topic: format!("{prefix}{}", event.namespace()),
        key,
        headers: Vec::new(),
        payload: None,
    }])
}

/// The native function behind the same interface as the plugin runtime, so the pipeline can be
/// measured with routing that costs (almost) nothing.
#[derive(Clone)]
pub struct NativeRouter {
    pub prefix: String,
    pub output: crate::policy::OutputPolicy,
    lineage: std::sync::Arc<str>,
}

/// The lineage header's value on records the native router decided.
pub const NATIVE_VERSION: &str = "native";

impl NativeRouter {
    /// The old Go tool's routing: topic = namespace, no prefix.
    pub fn old_tool(output: crate::policy::OutputPolicy) -> Self {
        Self {
            prefix: String::new(),
            output,
            lineage: NATIVE_VERSION.into(),
        }
    }
}

impl crate::plugin::RouteEvent for NativeRouter {
    fn route(&mut self, event: &SharedEvent) -> crate::plugin::Outcome {
        use crate::deadletter::DeadLetterReason;
        use crate::plugin::Outcome;
        match by_namespace(event, &self.prefix) {
            Err(message) => Outcome::DeadLetter {
                reason: DeadLetterReason::plugin_error(&message),
                plugin: Some("native-by-namespace".into()),
            },
            Ok(destinations) => match self.output.check(&destinations, event.raw.len()) {
                Ok(()) => Outcome::Routed(destinations),
                Err(reason) => Outcome::DeadLetter {
                    reason,
                    plugin: None,
                },
            },
        }
    }

    fn version(&self) -> std::sync::Arc<str> {
        self.lineage.clone()
    }
}
