//! `/metrics` in the Prometheus (OpenMetrics text) format. Counters are read from [`Stats`] and
//! the live set at scrape time, so there is one source of truth; only the plugin call latency,
//! a histogram, is recorded here as calls happen.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{OpsState, RoutingState};

type PluginLabel = [(&'static str, String); 1];

/// Latency of `route` calls, per plugin: 1 µs to about 1 s.
#[derive(Debug, Clone)]
pub struct PluginLatency(Family<PluginLabel, Histogram, fn() -> Histogram>);

impl Default for PluginLatency {
    fn default() -> Self {
        Self(Family::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1e-6, 4.0, 11))
        }))
    }
}

impl PluginLatency {
    /// The histogram of one plugin, to keep and observe without a lookup per call.
    pub fn for_plugin(&self, name: &str) -> Histogram {
        self.0.get_or_create(&[("plugin", name.to_owned())]).clone()
    }
}

/// Renders every metric.
pub fn render(state: &Arc<OpsState>) -> String {
    let mut registry = Registry::default();
    registry.register(
        "fanout_plugin_call_seconds",
        "Duration of one plugin's route call",
        state.latency.0.clone(),
    );
    registry.register(
        "fanout_transaction_abort_seconds",
        "Exactly-once: how long aborting a transaction took, from the decision to the broker's answer",
        state.stats.abort_seconds.clone(),
    );
    registry.register_collector(Box::new(Snapshot(state.clone())));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

/// Reads the counters at scrape time.
#[derive(Debug)]
struct Snapshot(Arc<OpsState>);

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// One metric per label value; the metric type is taken from the rows' type.
fn family<M: EncodeMetric + Default>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = ((&'static str, String), M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, M::default().metric_type())?;
    for (label, metric) in rows {
        metric.encode(family.encode_family(&[label])?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = &self.0;
        let stats = &state.stats;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let e = &mut encoder;
        counter(
            e,
            "fanout_events_consumed",
            "Events consumed from the source topic",
            load(&stats.consumed),
        )?;
        counter(
            e,
            "fanout_events_routed",
            "Events a plugin routed to one or more destinations",
            load(&stats.routed),
        )?;
        counter(
            e,
            "fanout_events_filtered",
            "Events every plugin dropped on purpose",
            load(&stats.filtered),
        )?;
        counter(
            e,
            "fanout_events_acknowledged",
            "Events whose every write is confirmed (exactly-once: and whose transaction committed)",
            load(&stats.acknowledged),
        )?;
        counter(
            e,
            "fanout_produce_errors",
            "Writes the broker refused or that timed out (retried or dead-lettered)",
            load(&stats.produce_errors),
        )?;
        counter(
            e,
            "fanout_commit_failures",
            "Offset commits that failed",
            load(&stats.commit_failures),
        )?;
        counter(
            e,
            "fanout_transactions_committed",
            "Exactly-once: transactions committed",
            load(&stats.transactions_committed),
        )?;
        counter(
            e,
            "fanout_transactions_aborted",
            "Exactly-once: transactions aborted; their events are routed again",
            load(&stats.transactions_aborted),
        )?;
        counter(
            e,
            "fanout_offsets_committed",
            "Partition offsets committed",
            load(&stats.committed_offsets),
        )?;
        counter(
            e,
            "fanout_consumer_pauses",
            "Times the consumer paused its partitions after staying at max_in_flight for 10 s",
            load(&stats.pauses),
        )?;
        counter(
            e,
            "fanout_dead_letters_written",
            "Dead-letter records confirmed by the broker",
            stats.dead_letters_written(),
        )?;
        gauge(
            e,
            "fanout_in_flight_events",
            "Events consumed and not yet fully written",
            load(&stats.in_flight) as i64,
        )?;
        gauge(
            e,
            "fanout_retry_bytes",
            "Bytes of failed writes waiting to be sent again",
            load(&stats.retry_bytes) as i64,
        )?;
        gauge(
            e,
            "fanout_ready",
            "1 when /readyz passes",
            i64::from(state.readiness().is_ok()),
        )?;

        family(
            e,
            "fanout_records_produced",
            "Records confirmed per destination topic (topics past the cardinality cap count as `other`)",
            stats
                .produced()
                .into_iter()
                .map(|(topic, n)| (("topic", topic), ConstCounter::new(n))),
        )?;
        family(
            e,
            "fanout_dead_letters",
            "Events sent to the dead-letter topic, by reason",
            stats
                .dead_letters()
                .into_iter()
                .map(|(reason, n)| (("reason", reason.to_owned()), ConstCounter::new(n))),
        )?;
        family(
            e,
            "fanout_transactions_aborted_by_cause",
            "Exactly-once: transactions aborted, by cause",
            stats
                .aborts_by_cause()
                .into_iter()
                .map(|(cause, n)| (("cause", cause.to_owned()), ConstCounter::new(n))),
        )?;
        family(
            e,
            "fanout_consumer_lag",
            "Messages behind the end of each assigned source partition",
            stats.clients().lag.into_iter().map(|(partition, lag)| {
                (("partition", partition.to_string()), ConstGauge::new(lag))
            }),
        )?;
        if let RoutingState::Plugins(live) = state.routing() {
            let counts = live.counts();
            counter(
                e,
                "fanout_plugin_reloads",
                "Plugin sets swapped in by a reload",
                counts.reloads,
            )?;
            counter(
                e,
                "fanout_plugin_reload_failures",
                "Reloads refused: the new set did not load",
                counts.failures,
            )?;
            counter(
                e,
                "fanout_plugin_rollbacks",
                "Plugin sets rolled back after failing their trial",
                counts.rollbacks,
            )?;
            family(
                e,
                "fanout_plugin_set_info",
                "The plugin set in service (value 1), by version",
                std::iter::once((
                    ("version", live.version().to_string()),
                    ConstGauge::new(1i64),
                )),
            )?;
        }
        Ok(())
    }
}
