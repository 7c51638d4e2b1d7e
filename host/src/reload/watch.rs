//! The reloader thread: file-system events and a periodic rescan → debounce → scan → load →
//! swap (or refuse).
//!
//! It watches the plugin directory itself, not recursively: a ConfigMap update shows there as a
//! new timestamped directory and then the rename of `..data`, a local edit as a change to a file.
//! The rename of `..data` is the kubelet's last content step, so it is scanned at once; other
//! events wait until the directory has been quiet for the debounce time, so a file still being
//! copied is not loaded half-written. The periodic rescan catches whatever events were missed
//! (an overflowed inotify queue, a network file system), and the same thread ends a set's trial
//! when its time is up.
//!
//! Loading runs here, off the routing threads: compiling, checking and `init`ing a new set never
//! delays an event.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use notify::Watcher as _;

use super::live::LiveSet;
use super::scan::{self, StatKey};
use crate::plugin::set::CONFIGMAP_DATA;
use crate::plugin::{PluginEngine, PluginSet};

/// How the reloader watches.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchSettings {
    /// Quiet time after a file-system event before scanning (not after a `..data` rename).
    pub debounce: Duration,
    /// Interval of the backstop rescan.
    pub rescan_interval: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(100),
            rescan_interval: Duration::from_secs(30),
        }
    }
}

/// A burst of events is scanned after this long even if it never goes quiet.
const MAX_DEBOUNCE: Duration = Duration::from_secs(2);
/// How often a trial's time limit is checked.
const TICK: Duration = Duration::from_millis(100);

enum Wake {
    Changed { data_swap: bool },
    Stop,
}

/// The running reloader; stops when dropped.
pub struct Reloader {
    wake: Sender<Wake>,
    thread: Option<JoinHandle<()>>,
}

impl Reloader {
    /// Watches `path` (a plugin directory or a single plugin file) and swaps new sets into
    /// `live`. `loaded` is the content `live` was loaded from, so an unchanged directory is not
    /// loaded again.
    pub fn start(
        engine: PluginEngine,
        path: PathBuf,
        live: Arc<LiveSet>,
        settings: WatchSettings,
    ) -> anyhow::Result<Self> {
        let (wake, events) = channel();
        let watcher = watch(&path, wake.clone());
        let mut state = ReloadLoop {
            engine,
            // Unknown, so the first check reads the directory: a change made between the initial
            // load and the start of the watch is not missed.
            stat_key: None,
            attempted: Some(live.version()),
            path,
            live,
            settings,
            last_problem: None,
        };
        let thread = std::thread::Builder::new()
            .name("fanout-reload".into())
            .spawn(move || {
                // Owned by the thread: dropping it stops the events.
                let _watcher = watcher;
                state.run(&events);
            })
            .context("starting the reload thread")?;
        Ok(Self {
            wake,
            thread: Some(thread),
        })
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        let _ = self.wake.send(Wake::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the file-system watch. Without one (an inotify limit reached, say) reloading still
/// works through the periodic rescan, only slower: that is logged, not fatal.
fn watch(path: &Path, wake: Sender<Wake>) -> Option<notify::RecommendedWatcher> {
    let dir = if path.is_dir() {
        path.to_owned()
    } else {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned()
    };
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) => {
            use notify::event::{AccessKind, AccessMode};
            if let notify::EventKind::Access(access) = event.kind
                && access != AccessKind::Close(AccessMode::Write)
            {
                return; // opening or reading a file (our own scans among them) changes nothing
            }
            let data_swap = event
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| n == CONFIGMAP_DATA));
            let _ = wake.send(Wake::Changed { data_swap });
        }
        Err(e) => {
            tracing::warn!("watching the plugin directory: {e}; the periodic rescan continues");
            let _ = wake.send(Wake::Changed { data_swap: false });
        }
    };
    let started = notify::recommended_watcher(handler).and_then(|mut watcher| {
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        Ok(watcher)
    });
    match started {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!(
                dir = %dir.display(),
                "cannot watch the plugin directory ({e}); changes are picked up by the periodic \
                 rescan only"
            );
            None
        }
    }
}

struct ReloadLoop {
    engine: PluginEngine,
    path: PathBuf,
    live: Arc<LiveSet>,
    settings: WatchSettings,
    /// The files as last scanned.
    stat_key: Option<StatKey>,
    /// The version last loaded or tried: a set that was refused or rolled back is not tried
    /// again until the content changes.
    attempted: Option<Arc<str>>,
    /// The last problem reading the directory, so that it is logged once, not every rescan.
    last_problem: Option<String>,
}

/// File-system events waiting for the directory to go quiet.
struct Pending {
    first: Instant,
    last: Instant,
    data_swap: bool,
}

impl ReloadLoop {
    fn run(&mut self, events: &Receiver<Wake>) {
        let mut pending: Option<Pending> = None;
        let mut next_rescan = Instant::now() + self.settings.rescan_interval;
        self.check();
        loop {
            let now = Instant::now();
            let mut wake_at = next_rescan.min(now + TICK);
            if let Some(p) = &pending {
                wake_at = wake_at.min(self.due(p));
            }
            match events.recv_timeout(wake_at.saturating_duration_since(now)) {
                Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Wake::Changed { data_swap }) => {
                    let now = Instant::now();
                    let p = pending.get_or_insert(Pending {
                        first: now,
                        last: now,
                        data_swap: false,
                    });
                    p.last = now;
                    p.data_swap |= data_swap;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.live.tick();
            let now = Instant::now();
            let event_due = pending.as_ref().is_some_and(|p| self.due(p) <= now);
            if event_due || now >= next_rescan {
                pending = None;
                next_rescan = now + self.settings.rescan_interval;
                self.check();
            }
        }
    }

    /// When pending events are scanned: at once after a `..data` rename (the new snapshot is
    /// complete), else once the directory has been quiet for the debounce time.
    fn due(&self, p: &Pending) -> Instant {
        if p.data_swap {
            return p.last;
        }
        (p.last + self.settings.debounce).min(p.first + MAX_DEBOUNCE)
    }

    /// Scans the directory and, if its content changed, loads and swaps in the new set.
    fn check(&mut self) {
        let key = match scan::stat_key(&self.path) {
            Ok(key) => key,
            Err(e) => return self.problem(format!("{}: {e}", self.path.display())),
        };
        if self.stat_key.as_ref() == Some(&key) {
            return;
        }
        let snapshot = match scan::snapshot(&self.path) {
            Ok(snapshot) => snapshot,
            Err(e) => return self.problem(format!("{}: {e}", self.path.display())),
        };
        self.stat_key = Some(key);
        self.last_problem = None;
        if let Some(version) = &snapshot.version
            && (self.attempted.as_ref() == Some(version) || *version == self.live.version())
        {
            // Same content: a touch, the set in service (say, after a file was briefly
            // unreadable mid-write), or the set that was refused or rolled back.
            self.attempted = Some(version.clone());
            return;
        }
        self.attempted = snapshot.version.clone();
        if snapshot.files.is_empty() {
            return self.problem(format!(
                "{}: no plugins (*.wasm, *.wasm.gz, *.wasm.zst) left; keeping the current set",
                self.path.display()
            ));
        }
        let started = Instant::now();
        let current = self.live.current();
        match PluginSet::load_files(&self.engine, snapshot.files, Some(current.set())) {
            Ok(set) => {
                let reason = format!(
                    "{} changed; new set loaded in {} ms",
                    self.path.display(),
                    started.elapsed().as_millis()
                );
                self.live.swap(set, &reason);
            }
            Err(e) => self.live.refuse(&e.to_string()),
        }
    }

    /// A directory that cannot be read or holds no plugins: refused like a set that does not
    /// load, once per distinct problem rather than at every rescan.
    fn problem(&mut self, message: String) {
        if self.last_problem.as_deref() != Some(message.as_str()) {
            self.live.refuse(&message);
            self.last_problem = Some(message);
        }
    }
}
