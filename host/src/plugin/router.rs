//! Routing one event through a plugin set, on the calling thread.
//!
//! A [`Router`] belongs to one thread. It keeps one store and instance per plugin and reuses them
//! across calls (instantiating per event would cost 25-40 µs). A call runs under the deadline
//! (epoch interruption for wasm code, a timeout for a wait in a host call) and the memory cap;
//! after a trap or a timeout the instance is dropped, since its store is poisoned or its call
//! was abandoned half-way, and a fresh one is started from the plugin's `InstancePre` on the
//! next event.

use std::sync::Arc;

use wasmtime::Trap;

use super::engine::PluginEngine;
use super::lift::{LiftBudget, RouteAnswer};
use super::load::{Instance, StartError};
use super::set::SharedSet;
use crate::bindings::Destination;
use crate::deadletter::DeadLetterReason;
use crate::event::SharedEvent;

/// What happens to one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Write these records. Never empty.
    Routed(Vec<Destination>),
    /// Every plugin returned an empty list: the event is intentionally dropped.
    Filtered,
    /// Send the event to the dead-letter topic. `plugin` names the plugin responsible, if any.
    DeadLetter {
        reason: DeadLetterReason,
        plugin: Option<Arc<str>>,
    },
}

/// Anything that decides an event's outcome on a routing thread: the plugin runtime, or a native
/// function for comparison.
pub trait RouteEvent: Send {
    fn route(&mut self, event: &SharedEvent) -> Outcome;

    /// The version of the routing logic that decided the last event: the plugin set's version,
    /// which every record written for the event carries as its lineage.
    fn version(&self) -> Arc<str>;
}

impl RouteEvent for Router {
    fn route(&mut self, event: &SharedEvent) -> Outcome {
        Router::route(self, event)
    }

    fn version(&self) -> Arc<str> {
        self.set.version_arc()
    }
}

/// Routes events through one plugin set on one thread.
pub struct Router {
    engine: PluginEngine,
    set: SharedSet,
    instances: Vec<Option<Instance>>,
    /// Per plugin, where its call latency is recorded, if anywhere.
    latency: Vec<Option<prometheus_client::metrics::histogram::Histogram>>,
}

impl Router {
    pub fn new(engine: PluginEngine, set: SharedSet) -> Self {
        let instances = set.plugins().iter().map(|_| None).collect();
        let latency = set.plugins().iter().map(|_| None).collect();
        Self {
            engine,
            set,
            instances,
            latency,
        }
    }

    /// Records each plugin's call latency in `latency` (two clock reads per call).
    pub fn observed_by(mut self, latency: &crate::ops::metrics::PluginLatency) -> Self {
        self.latency = self
            .set
            .plugins()
            .iter()
            .map(|p| Some(latency.for_plugin(&p.name)))
            .collect();
        self
    }

    pub fn set(&self) -> &SharedSet {
        &self.set
    }

    /// Routes one event through every plugin, in order. Their destinations are concatenated
    /// and de-duplicated. The event is all-or-nothing: if any plugin fails, or the combined
    /// output breaks the policy, the whole event is dead-lettered and nothing is written, so
    /// every source offset has exactly one outcome.
    pub fn route(&mut self, event: &SharedEvent) -> Outcome {
        let limits = self.engine.limits();
        let mut all: Vec<Destination> = Vec::new();
        for (index, plugin) in self.set.plugins().iter().enumerate() {
            let dead = |reason| Outcome::DeadLetter {
                reason,
                plugin: Some(plugin.name.clone()),
            };
            let slot = &mut self.instances[index];
            let instance = match slot {
                Some(instance) => instance,
                None => match plugin.start(&self.engine) {
                    Ok(instance) => slot.insert(instance),
                    Err(e) => {
                        let detail = match e {
                            StartError::Instantiate(e) | StartError::Trap(e) => format!("{e:#}"),
                            StartError::Refused(msg) => format!("init refused: {msg}"),
                        };
                        return dead(DeadLetterReason::PluginUnavailable(detail));
                    }
                },
            };
            instance.store.data_mut().start_call();
            instance.store.set_epoch_deadline(limits.deadline_ticks());
            let started = self.latency[index]
                .as_ref()
                .map(|_| std::time::Instant::now());
            let budget = LiftBudget::new(&limits.output, event.raw.len());
            let result = instance.call_route(event, limits.call_deadline, budget);
            if let (Some(histogram), Some(started)) = (&self.latency[index], started) {
                histogram.observe(started.elapsed().as_secs_f64());
            }
            let destinations = match result {
                Ok(RouteAnswer::Lifted(Ok(destinations))) => destinations,
                Ok(RouteAnswer::Lifted(Err(message))) => {
                    return dead(DeadLetterReason::plugin_error(&message));
                }
                // Too big to lift: the host copied nothing, and the instance is fine.
                Ok(RouteAnswer::Refused(reason)) => return dead(reason),
                Err(error) => {
                    let reason = classify_trap(&error, instance, limits.call_deadline);
                    tracing::warn!(plugin = %plugin.name, "{reason}; starting a fresh instance");
                    *slot = None;
                    return dead(reason);
                }
            };
            // Checked per plugin as well, so a plugin returning 10,000 destinations is refused
            // before any de-duplication work.
            if let Err(reason) = limits.output.check(&destinations, event.raw.len()) {
                return dead(reason);
            }
            for d in destinations {
                if !all.contains(&d) {
                    all.push(d);
                }
            }
        }
        if let Err(reason) = limits.output.check(&all, event.raw.len()) {
            return Outcome::DeadLetter {
                reason,
                plugin: None,
            };
        }
        if all.is_empty() {
            Outcome::Filtered
        } else {
            Outcome::Routed(all)
        }
    }
}

fn classify_trap(
    error: &wasmtime::Error,
    instance: &Instance,
    deadline: std::time::Duration,
) -> DeadLetterReason {
    if instance.store.data().memory_refused() {
        let mib = instance.store.data().memory_limit() >> 20;
        return DeadLetterReason::PluginTrap(format!("memory limit of {mib} MiB exceeded"));
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => DeadLetterReason::PluginTimeout(deadline),
        Some(trap) => DeadLetterReason::PluginTrap(trap.to_string()),
        None => DeadLetterReason::PluginTrap(crate::deadletter::truncate(&format!("{error:#}"))),
    }
}
