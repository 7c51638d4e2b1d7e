//! Operations: what a platform team watches and probes. The HTTP endpoint ([`http`]) serves
//! `/metrics` ([`metrics`]), `/healthz`, `/readyz` and `/status` from one [`OpsState`], which the
//! rest of the service only writes to through [`Stats`] and the live plugin set.
//!
//! Anyone who can reach the pod can read these, so they hold nothing that helps an attacker
//! further: `/status` shows the effective config (brokers, topics, the paths of secret files
//! and the names of secret variables) only to a client that presents the status token.

pub mod http;
pub mod metrics;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::StatusToken;
use crate::lock;
use crate::reload::{LiveSet, ReloadStatus};
use crate::stats::{ClientReport, Stats};
use metrics::PluginLatency;

/// How events are being routed, as far as readiness is concerned.
#[derive(Debug, Clone)]
pub enum RoutingState {
    /// No plugin set has loaded yet; holds why, once a load has failed.
    Loading(Option<String>),
    Plugins(Arc<LiveSet>),
    /// The built-in router: nothing to load.
    Native,
}

/// Everything the endpoint reports, shared with the service.
#[derive(Debug)]
pub struct OpsState {
    pub stats: Arc<Stats>,
    pub latency: PluginLatency,
    routing: Mutex<RoutingState>,
    /// The effective configuration, secrets redacted.
    config: String,
    /// What `/status` asks for before it shows `config`; without one it never does.
    status_token: Option<StatusToken>,
    /// A routing thread busy on one event for longer than this is wedged.
    wedged_after: Duration,
    started: SystemTime,
}

impl OpsState {
    pub fn new(
        stats: Arc<Stats>,
        config: String,
        wedged_after: Duration,
        status_token: Option<StatusToken>,
    ) -> Arc<Self> {
        Arc::new(Self {
            stats,
            latency: PluginLatency::default(),
            routing: Mutex::new(RoutingState::Loading(None)),
            config,
            status_token,
            wedged_after,
            started: SystemTime::now(),
        })
    }

    pub fn set_routing(&self, routing: RoutingState) {
        *lock(&self.routing) = routing;
    }

    pub fn routing(&self) -> RoutingState {
        lock(&self.routing).clone()
    }

    /// `Ok` when alive; else why not.
    pub fn health(&self) -> Result<(), String> {
        match self.stats.longest_busy() {
            Some(busy) if busy > self.wedged_after => Err(format!(
                "a routing thread has been on one event for {:.1} s (limit {:.1} s)",
                busy.as_secs_f64(),
                self.wedged_after.as_secs_f64()
            )),
            _ => Ok(()),
        }
    }

    /// `Ok` when the service can do its work: plugins loaded, the consumer in its group (with
    /// partitions or waiting for some), the producer connected to a broker, and nothing the
    /// pipeline needs missing (its source and dead-letter topics). Else every reason.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        match self.routing() {
            RoutingState::Loading(None) => reasons.push("plugins are loading".to_owned()),
            RoutingState::Loading(Some(error)) => {
                reasons.push(format!("no plugin set has loaded: {error}"))
            }
            RoutingState::Plugins(_) | RoutingState::Native => {}
        }
        let clients = self.stats.clients();
        match clients.group_state.as_deref() {
            Some("up") => {}
            Some(state) => reasons.push(format!("the consumer is not in its group yet ({state})")),
            None => reasons.push("the consumer has not reported yet".to_owned()),
        }
        match clients.producer_brokers_up {
            Some(n) if n > 0 => {}
            Some(_) => reasons.push("the producer is connected to no broker".to_owned()),
            None => reasons.push("the producer has not reported yet".to_owned()),
        }
        reasons.extend(self.stats.unready());
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    pub fn status_token(&self) -> Option<&StatusToken> {
        self.status_token.as_ref()
    }

    /// The state of the service; with the effective config only when `with_config`.
    pub fn status(&self, with_config: bool) -> Status {
        let routing = self.routing();
        let (routing_name, plugins, loading_error) = match &routing {
            RoutingState::Loading(error) => ("loading", None, error.clone()),
            RoutingState::Plugins(live) => ("plugins", Some(live.status()), None),
            RoutingState::Native => ("native", None, None),
        };
        Status {
            started_unix_ms: crate::reload::live::unix_ms(self.started),
            ready: self.readiness().err().unwrap_or_default(),
            healthy: self.health().err(),
            routing: routing_name,
            plugins,
            loading_error,
            clients: self.stats.clients(),
            in_flight: self
                .stats
                .in_flight
                .load(std::sync::atomic::Ordering::Relaxed),
            config: with_config.then(|| self.config.clone()),
        }
    }
}

/// `/status`: the state of the service as JSON. Secrets appear nowhere: the config, shown only
/// to a holder of the status token, is the redacted one.
#[derive(Debug, Serialize)]
pub struct Status {
    pub started_unix_ms: u64,
    /// Why the service is not ready; empty when it is.
    pub ready: Vec<String>,
    /// Why the service is not healthy, if it is not.
    pub healthy: Option<String>,
    /// `plugins`, `native` or `loading`.
    pub routing: &'static str,
    pub plugins: Option<ReloadStatus>,
    pub loading_error: Option<String>,
    pub clients: ClientReport,
    pub in_flight: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_pipeline_finds_missing_makes_it_not_ready() {
        let stats = Arc::new(Stats::default());
        let ops = OpsState::new(stats.clone(), String::new(), Duration::from_secs(30), None);
        ops.set_routing(RoutingState::Native);
        let missing = "the dead-letter topic \"dlq\" does not exist".to_owned();
        stats.set_unready("dead-letter topic", Some(missing.clone()));
        let reasons = ops.readiness().unwrap_err();
        assert!(reasons.contains(&missing), "{reasons:?}");
        stats.set_unready("dead-letter topic", None);
        let reasons = ops.readiness().unwrap_err();
        assert!(!reasons.contains(&missing), "{reasons:?}");
    }
}
