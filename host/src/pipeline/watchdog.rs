//! A bound on librdkafka calls that take a timeout but may not keep it.
//!
//! librdkafka 2.12's `send_offsets_to_transaction` waits for ever, whatever its timeout, once
//! the broker it cached as the group coordinator has left the cluster's metadata (a node
//! killed and fenced): the request waits for that broker to come back up, and the broker's
//! object is gone (librdkafka issues 5456, fixed in 2.15, and 5511, fixed after it; the
//! `rdkafka-sys` fanout builds bundles 2.12.1). The chaos run found it on a real cluster: a
//! replica hung in the call, silent, its partitions stuck. No call into the same client can
//! undo it, so when a watched call runs [`CallWatch`]'s limit past, the process says which call
//! and exits non-zero, as it does when fenced: Kubernetes restarts the pod, and the new
//! process's `init_transactions` aborts the transaction left open.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::lock;

/// The exit status of a process whose Kafka client hung.
pub const STUCK_EXIT: i32 = 3;

/// The call under way, if any: what it is, and since when.
type Current = Mutex<Option<(&'static str, Instant)>>;

/// Watches one thread's calls; a thread of its own checks them until this is dropped.
pub struct CallWatch {
    current: Arc<Current>,
}

impl CallWatch {
    /// Calls `on_stuck` (the call's name, how long it has run) once a call runs past `limit`,
    /// then stops watching.
    pub fn start(
        limit: Duration,
        on_stuck: impl FnOnce(&'static str, Duration) + Send + 'static,
    ) -> Self {
        let current = Arc::new(Mutex::new(None));
        let watched: Weak<Current> = Arc::downgrade(&current);
        let check = (limit / 10).max(Duration::from_millis(10));
        let spawned = std::thread::Builder::new()
            .name("fanout-watchdog".into())
            .spawn(move || {
                while let Some(current) = watched.upgrade() {
                    let stuck = lock(&current)
                        .filter(|(_, since)| since.elapsed() > limit)
                        .map(|(call, since)| (call, since.elapsed()));
                    drop(current);
                    if let Some((call, took)) = stuck {
                        on_stuck(call, took);
                        return;
                    }
                    std::thread::sleep(check);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("no watchdog for Kafka calls: {e}");
        }
        Self { current }
    }

    /// The watchdog of the transactional calls: past `limit`, logs which call hung and exits
    /// the process with [`STUCK_EXIT`].
    pub fn exit_when_stuck(limit: Duration) -> Self {
        Self::start(limit, |call, took| {
            tracing::error!(
                call,
                seconds = took.as_secs(),
                "Kafka client stuck: `{call}` has not returned after {} s, far past its timeout; \
                 exiting so that a restart gets a new client (its init_transactions aborts the \
                 open transaction)",
                took.as_secs()
            );
            std::process::exit(STUCK_EXIT);
        })
    }

    /// Runs `f`, the call named `call`, under watch.
    pub fn during<T>(&self, call: &'static str, f: impl FnOnce() -> T) -> T {
        *lock(&self.current) = Some((call, Instant::now()));
        let result = f();
        *lock(&self.current) = None;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn a_call_past_the_limit_is_reported_with_its_name() {
        let (tx, rx) = channel();
        let watch = CallWatch::start(Duration::from_millis(50), move |call, took| {
            tx.send((call, took)).unwrap();
        });
        watch.during("stuck call", || {
            std::thread::sleep(Duration::from_millis(300))
        });
        let (call, took) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(call, "stuck call");
        assert!(took > Duration::from_millis(50), "{took:?}");
    }

    #[test]
    fn calls_within_the_limit_are_not_reported() {
        let (tx, rx) = channel();
        let watch = CallWatch::start(Duration::from_millis(200), move |call, _| {
            tx.send(call).unwrap();
        });
        for _ in 0..5 {
            watch.during("quick call", || {
                std::thread::sleep(Duration::from_millis(20))
            });
        }
        // Idle between calls is not a call: nothing is reported however long it lasts.
        std::thread::sleep(Duration::from_millis(500));
        assert!(rx.try_recv().is_err());
    }
}
