//! The plugin set in service, and the only place where it changes: swaps, refusals, trials and
//! rollbacks.
//!
//! Routing threads look at the current set once per event ([`LiveRouter`]). An atomic activation
//! number tells them cheaply whether it changed; if it did, they take the new set and start fresh
//! instances. A swap therefore lands between two events of each thread, and every event is routed
//! entirely by one set. Events already routed are unaffected, and their writes carry the version
//! that routed them.
//!
//! After a reload the new set is on trial ([`RollbackPolicy`]): if, within the trial window, the
//! share of events it fails on (plugin errors, traps, timeouts, output the policy refuses) exceeds
//! the last good set's own share by more than the threshold, the last good set is put back. The
//! events the new set failed on stay in the dead-letter topic, tagged with its version.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::event::SharedEvent;
use crate::lock;
use crate::ops::metrics::PluginLatency;
use crate::plugin::{Outcome, PluginEngine, PluginSet, RouteEvent, Router, SharedSet};

/// When a newly loaded set is judged, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackPolicy {
    pub enabled: bool,
    /// How much larger than the last good set's, as a share of events, the new set's fault rate
    /// may be. 0.05 is five percentage points.
    pub max_fault_ratio: f64,
    /// The trial ends after this many events routed by the new set...
    pub window_events: u64,
    /// ...or after this long, whichever comes first.
    pub window: Duration,
}

impl Default for RollbackPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            max_fault_ratio: 0.05,
            window_events: 1000,
            window: Duration::from_secs(60),
        }
    }
}

/// A trial that ends by time with fewer events than this confirms the set: too few to judge.
pub const MIN_EVENTS_TO_JUDGE: u64 = 10;
/// A good set's own fault rate counts as its baseline once it has routed this many events.
const MIN_EVENTS_FOR_BASELINE: u64 = 100;

/// How one activation of a set fared on live events.
#[derive(Debug, Default)]
struct Health {
    events: AtomicU64,
    faults: AtomicU64,
}

impl Health {
    fn counts(&self) -> (u64, u64) {
        (
            self.events.load(Ordering::Relaxed),
            self.faults.load(Ordering::Relaxed),
        )
    }

    fn fault_ratio(&self) -> f64 {
        let (events, faults) = self.counts();
        if events < MIN_EVENTS_FOR_BASELINE {
            0.0
        } else {
            faults as f64 / events as f64
        }
    }
}

/// The judgement pending on a set after a reload.
#[derive(Debug)]
struct Trial {
    started: Instant,
    /// The last good set's fault ratio, which the new set is compared with.
    baseline: f64,
    /// Cleared once the trial is decided, so routing threads stop evaluating it.
    open: AtomicBool,
}

/// One activation of a set: at start-up, by a reload, or by a rollback.
#[derive(Debug)]
pub struct Active {
    activation: u64,
    set: SharedSet,
    health: Health,
    trial: Option<Trial>,
    since: SystemTime,
}

impl Active {
    pub fn set(&self) -> &SharedSet {
        &self.set
    }

    pub fn activation(&self) -> u64 {
        self.activation
    }
}

/// Reload counters, for metrics.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ReloadCounts {
    /// Sets swapped in by a reload.
    pub reloads: u64,
    /// Reloads refused because the new set did not load, validate or init.
    pub failures: u64,
    /// Sets taken out of service by their trial.
    pub rollbacks: u64,
}

/// The last thing that happened to the set in service.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReloadRecord {
    pub at_unix_ms: u64,
    /// `swapped`, `refused` or `rolled-back`.
    pub result: &'static str,
    pub from: String,
    /// The version put in service; `None` when a reload was refused.
    pub to: Option<String>,
    pub detail: String,
}

/// What `/status` shows about the plugins.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    pub version: String,
    pub plugins: Vec<PluginStatus>,
    pub in_service_since_unix_ms: u64,
    pub last_good_version: String,
    pub trial: Option<TrialStatus>,
    pub counts: ReloadCounts,
    pub last_reload: Option<ReloadRecord>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub file: String,
    pub sha256: String,
    pub wit_version: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrialStatus {
    pub events: u64,
    pub faults: u64,
    pub baseline_fault_ratio: f64,
    pub elapsed_ms: u64,
}

/// The set in service, shared by the routing threads and the reloader.
#[derive(Debug)]
pub struct LiveSet {
    activation: AtomicU64,
    policy: RollbackPolicy,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    current: Arc<Active>,
    /// What a rollback returns to: the first set, or the last one that passed its trial.
    good: Arc<Active>,
    counts: ReloadCounts,
    last: Option<ReloadRecord>,
    last_error: Option<String>,
}

impl LiveSet {
    /// Puts `set` in service. The first set is good by definition: there is nothing to return to.
    pub fn new(set: PluginSet, policy: RollbackPolicy) -> Arc<Self> {
        let active = Arc::new(Active {
            activation: 0,
            set: Arc::new(set),
            health: Health::default(),
            trial: None,
            since: SystemTime::now(),
        });
        Arc::new(Self {
            activation: AtomicU64::new(0),
            policy,
            state: Mutex::new(State {
                good: active.clone(),
                current: active,
                counts: ReloadCounts::default(),
                last: None,
                last_error: None,
            }),
        })
    }

    /// The activation in service; it changes with every swap.
    pub fn activation(&self) -> u64 {
        self.activation.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Arc<Active> {
        lock(&self.state).current.clone()
    }

    pub fn version(&self) -> Arc<str> {
        self.current().set.version_arc()
    }

    pub fn counts(&self) -> ReloadCounts {
        lock(&self.state).counts
    }

    pub fn policy(&self) -> &RollbackPolicy {
        &self.policy
    }

    /// Puts a newly loaded set in service, on trial, and logs the swap.
    pub fn swap(&self, set: PluginSet, reason: &str) {
        let mut state = lock(&self.state);
        let from = state.current.set.version_arc();
        let to = set.version_arc();
        let trial = self.policy.enabled.then(|| Trial {
            started: Instant::now(),
            baseline: state.good.health.fault_ratio(),
            open: AtomicBool::new(true),
        });
        self.activate(&mut state, Arc::new(set), trial, Health::default());
        state.counts.reloads += 1;
        state.last = Some(record("swapped", &from, Some(&to), reason));
        state.last_error = None;
        tracing::info!(%from, %to, reason, "plugin set swapped");
    }

    /// Records a reload that could not be loaded (`detail` names the files and the problems):
    /// the set in service stays.
    pub fn refuse(&self, detail: &str) {
        let mut state = lock(&self.state);
        let from = state.current.set.version_arc();
        state.counts.failures += 1;
        tracing::error!(
            serving = %from,
            "plugin reload refused, the current set keeps serving: {detail}"
        );
        state.last = Some(record("refused", &from, None, detail));
        state.last_error = Some(detail.to_owned());
    }

    /// Counts one event routed by `active`, and decides its trial as soon as the outcome is
    /// certain.
    pub fn record(&self, active: &Active, outcome: &Outcome) {
        let fault =
            matches!(outcome, Outcome::DeadLetter { reason, .. } if reason.is_plugin_fault());
        active.health.events.fetch_add(1, Ordering::Relaxed);
        if fault {
            active.health.faults.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(trial) = &active.trial
            && trial.open.load(Ordering::Relaxed)
        {
            self.judge(active, trial, false);
        }
    }

    /// Ends the trial in progress if its time is up. The reloader calls this periodically, so a
    /// trial ends even when no events flow.
    pub fn tick(&self) {
        let active = self.current();
        if let Some(trial) = &active.trial
            && trial.open.load(Ordering::Relaxed)
        {
            self.judge(&active, trial, true);
        }
    }

    fn judge(&self, active: &Active, trial: &Trial, clock: bool) {
        let (events, faults) = active.health.counts();
        let limit = trial.baseline + self.policy.max_fault_ratio;
        let window = self.policy.window_events;
        // Past this many faults, the ratio over the whole window cannot end below the limit.
        let certain = faults as f64 > limit * window as f64;
        let full = events >= window;
        let timed_out = clock && trial.started.elapsed() >= self.policy.window;
        if !(certain || full || timed_out) {
            return;
        }
        let ratio = if events == 0 {
            0.0
        } else {
            faults as f64 / events as f64
        };
        let failed = certain || (ratio > limit && events >= MIN_EVENTS_TO_JUDGE);
        let mut state = lock(&self.state);
        if state.current.activation != active.activation
            || !trial.open.swap(false, Ordering::AcqRel)
        {
            return; // already decided, or replaced
        }
        let version = active.set.version_arc();
        if !failed {
            tracing::info!(
                %version,
                events,
                faults,
                "plugin set passed its trial; it is now the one a rollback returns to"
            );
            state.good = state.current.clone();
            return;
        }
        let good = state.good.clone();
        let to = good.set.version_arc();
        let why = format!(
            "{faults} of {events} events failed ({:.1}%) after the swap, over the limit of {:.1}% \
             (the last good set's {:.1}% plus {:.1} points)",
            ratio * 100.0,
            limit * 100.0,
            trial.baseline * 100.0,
            self.policy.max_fault_ratio * 100.0
        );
        tracing::warn!(from = %version, %to, "plugin set rolled back: {why}");
        let carried = Health::default();
        let (good_events, good_faults) = good.health.counts();
        carried.events.store(good_events, Ordering::Relaxed);
        carried.faults.store(good_faults, Ordering::Relaxed);
        self.activate(&mut state, good.set.clone(), None, carried);
        state.good = state.current.clone();
        state.counts.rollbacks += 1;
        state.last = Some(record("rolled-back", &version, Some(&to), &why));
        state.last_error = Some(format!("version {version} rolled back: {why}"));
    }

    fn activate(&self, state: &mut State, set: SharedSet, trial: Option<Trial>, health: Health) {
        let activation = state.current.activation + 1;
        state.current = Arc::new(Active {
            activation,
            set,
            health,
            trial,
            since: SystemTime::now(),
        });
        self.activation.store(activation, Ordering::Release);
    }

    pub fn status(&self) -> ReloadStatus {
        let state = lock(&self.state);
        let current = &state.current;
        ReloadStatus {
            version: current.set.version().to_owned(),
            plugins: current
                .set
                .plugins()
                .iter()
                .map(|p| PluginStatus {
                    name: p.name.to_string(),
                    file: p.source.wasm.display().to_string(),
                    sha256: crate::plugin::cache::hex(&p.sha256),
                    wit_version: p.wit_version().to_owned(),
                })
                .collect(),
            in_service_since_unix_ms: unix_ms(current.since),
            last_good_version: state.good.set.version().to_owned(),
            trial: current
                .trial
                .as_ref()
                .filter(|t| t.open.load(Ordering::Relaxed))
                .map(|t| {
                    let (events, faults) = current.health.counts();
                    TrialStatus {
                        events,
                        faults,
                        baseline_fault_ratio: t.baseline,
                        elapsed_ms: t.started.elapsed().as_millis() as u64,
                    }
                }),
            counts: state.counts,
            last_reload: state.last.clone(),
            last_error: state.last_error.clone(),
        }
    }
}

fn record(result: &'static str, from: &str, to: Option<&str>, detail: &str) -> ReloadRecord {
    ReloadRecord {
        at_unix_ms: unix_ms(SystemTime::now()),
        result,
        from: from.to_owned(),
        to: to.map(str::to_owned),
        detail: detail.to_owned(),
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A routing thread's view of the live set: routes each event with the set in service when the
/// event starts, and reports the outcome for the set's trial.
pub struct LiveRouter {
    engine: PluginEngine,
    live: Arc<LiveSet>,
    active: Arc<Active>,
    router: Router,
    latency: Option<PluginLatency>,
}

impl LiveRouter {
    pub fn new(engine: PluginEngine, live: Arc<LiveSet>) -> Self {
        Self::observed(engine, live, None)
    }

    /// A router that records each plugin call's latency in `latency`.
    pub fn observed(
        engine: PluginEngine,
        live: Arc<LiveSet>,
        latency: Option<PluginLatency>,
    ) -> Self {
        let active = live.current();
        let router = make_router(&engine, &active, latency.as_ref());
        Self {
            engine,
            live,
            active,
            router,
            latency,
        }
    }
}

fn make_router(engine: &PluginEngine, active: &Active, latency: Option<&PluginLatency>) -> Router {
    let router = Router::new(engine.clone(), active.set.clone());
    match latency {
        Some(latency) => router.observed_by(latency),
        None => router,
    }
}

impl RouteEvent for LiveRouter {
    fn route(&mut self, event: &SharedEvent) -> Outcome {
        if self.live.activation() != self.active.activation {
            self.active = self.live.current();
            // Instances of the old set are dropped here; the new set's start on first use.
            self.router = make_router(&self.engine, &self.active, self.latency.as_ref());
        }
        let outcome = self.router.route(event);
        self.live.record(&self.active, &outcome);
        outcome
    }

    fn version(&self) -> Arc<str> {
        self.active.set.version_arc()
    }
}
