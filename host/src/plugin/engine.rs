//! The shared wasmtime machinery: one `Engine`, one `Linker` with every import added once, the
//! epoch ticker and the per-thread executor that enforce call deadlines, and the limits every
//! instance runs under.
//!
//! Built once at start-up and cloned cheaply (everything inside is reference-counted); plugin
//! loading and per-thread routers all hang off a [`PluginEngine`].
//!
//! A deadline has two halves. Epoch interruption stops wasm code that runs too long, but not a
//! host call: a plugin sleeping in WASI (`std::thread::sleep` is a monotonic-clock pollable and
//! `poll`) would hold its routing thread for as long as it asked. So plugins are called
//! asynchronously, WASI is linked in its async form, and every call is a future run on this
//! thread's executor under a timeout of the deadline ([`run_within`]): a host call that waits
//! leaves the call pending, the timeout drops it, and wasmtime unwinds the guest's fiber. The
//! instance is then discarded as after a trap.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::cache::CompileCache;
use super::host::HostState;
use crate::bindings::Router;
use crate::policy::OutputPolicy;

/// How often the epoch advances. A call's deadline is rounded up to whole ticks, and ticks keep
/// to the clock, so a deadline is enforced to within one tick plus however late the ticker
/// thread is woken.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Wall-clock budget of starting an instance (instantiation, then `init`), unless the call
/// deadline is longer. It runs once per instance, not per event, and some plugins do real work
/// there: a componentize-py plugin restores a snapshotted CPython, which took over 100 ms on
/// two loaded cores.
pub const START_DEADLINE: Duration = Duration::from_secs(5);

/// Limits every plugin instance runs under.
#[derive(Debug, Clone)]
pub struct RuntimeLimits {
    /// Linear memory one instance may use, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock budget of one `route` call (and of starting an instance, if longer than
    /// [`START_DEADLINE`]).
    pub call_deadline: Duration,
    /// Lines a plugin may log (through `log`, stdout or stderr) per call; the rest are counted
    /// and dropped, so a chatty plugin cannot flood the host's logs.
    pub log_lines_per_call: u32,
    /// What a plugin may ask the host to write.
    pub output: OutputPolicy,
}

impl Default for RuntimeLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            call_deadline: Duration::from_millis(100),
            log_lines_per_call: 100,
            output: OutputPolicy::default(),
        }
    }
}

impl RuntimeLimits {
    /// The call deadline in epoch ticks, at least one.
    pub fn deadline_ticks(&self) -> u64 {
        ticks(self.call_deadline)
    }

    /// The deadline of starting an instance in epoch ticks: [`START_DEADLINE`], or the call
    /// deadline if that is longer.
    pub fn start_deadline_ticks(&self) -> u64 {
        ticks(self.start_deadline())
    }

    /// The wall-clock budget of starting an instance: [`START_DEADLINE`], or the call deadline
    /// if that is longer.
    pub fn start_deadline(&self) -> Duration {
        self.call_deadline.max(START_DEADLINE)
    }
}

/// `duration` in whole epoch ticks, rounded up, at least one.
fn ticks(duration: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    (duration.as_nanos().div_ceil(tick)).max(1) as u64
}

/// The engine, linker, limits and compile cache shared by every plugin and every routing thread.
#[derive(Clone)]
pub struct PluginEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    limits: RuntimeLimits,
    cache: Option<CompileCache>,
    _ticker: EpochTicker,
}

impl PluginEngine {
    /// Builds the engine. `cache` is where precompiled plugins are kept; `None` compiles every
    /// plugin from scratch.
    pub fn new(limits: RuntimeLimits, cache: Option<CompileCache>) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            // Plugins are synchronous; the component-model-async machinery costs ~0.6 µs a call.
            .concurrency_support(false);
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("creating the wasmtime engine")?;

        let mut linker = Linker::new(&engine);
        // WASI is linked so that components built by the Rust toolchain (which import it for std)
        // instantiate, but each store's WasiCtx grants nothing: no files, env, args or sockets.
        // Its async form: a blocking call (sleep, poll, a blocking read) is a future that the
        // call's timeout can drop, where the sync form would block the routing thread.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        Router::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("linking the fanout:router imports")?;

        let ticker = EpochTicker::start(engine.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                limits,
                cache,
                _ticker: ticker,
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn linker(&self) -> &Linker<HostState> {
        &self.inner.linker
    }

    pub fn limits(&self) -> &RuntimeLimits {
        &self.inner.limits
    }

    pub fn cache(&self) -> Option<&CompileCache> {
        self.inner.cache.as_ref()
    }
}

thread_local! {
    /// The executor plugin calls run on, one per thread: routing threads each own one, and so
    /// does the thread that loads a set. Current-thread, with only the timer driver, so a call
    /// that does not wait costs one poll.
    static EXECUTOR: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("building a current-thread tokio runtime with timers");
}

/// Runs `call` (a plugin call: instantiation, `init` or `route`) to completion on this thread,
/// or gives up after `limit`, dropping it: `None` then. Dropping a pending wasmtime call unwinds
/// the guest, and its store must not be called again.
///
/// Only a call waiting in a host function can be dropped; wasm code that keeps running is
/// stopped by the epoch deadline instead, which the caller sets to the same limit.
///
/// # Panics
///
/// If called from inside an async context (a tokio runtime): plugin calls are made from plain
/// threads only.
pub fn run_within<F: Future>(limit: Duration, call: F) -> Option<F::Output> {
    EXECUTOR.with(|executor| {
        executor.block_on(async {
            // `timeout` polls `call` first and only arms its timer if `call` is pending, so a
            // call that completes at once costs no timer registration.
            tokio::time::timeout(limit, call).await.ok()
        })
    })
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on its own thread, so that a plugin stuck
/// in a loop is interrupted at its deadline. Stops when dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("fanout-epoch".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    // Ticks are counted against the clock, not against sleeps: on a busy CPU a
                    // sleep wakes late, and 400 late 5 ms sleeps made a 2 s deadline 2.4-2.8 s
                    // (tests/integration/hostile_load.rs). The ticks a late wake-up missed are
                    // caught up at once.
                    let start = std::time::Instant::now();
                    let mut ticks: u128 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        let due = start.elapsed().as_nanos() / EPOCH_TICK.as_nanos();
                        while ticks < due {
                            engine.increment_epoch();
                            ticks += 1;
                        }
                    }
                }
            })
            .context("starting the epoch ticker thread")?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
