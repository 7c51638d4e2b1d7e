//! Whether the topics fanout uses by itself exist: the source topic it reads, and the
//! dead-letter topic any event may need. (Plugins name every other topic;
//! [`crate::kafka::admin::TopicCreator`] creates those on first use when asked to.)
//!
//! Both are checked through the Admin API before the pipeline starts, then every
//! [`WATCH_INTERVAL`] and after every aborted transaction while it runs. A missing dead-letter
//! topic is created with `[topics]`'s partitions, replication factor and configs when
//! `[topics] create_missing` is on. The source topic is never created: its partitions are sized
//! for EventRouter, not by fanout. Otherwise a missing topic makes fanout not ready: it logs one
//! line naming the topic and the setting that would fix it, and takes no more events, so that
//! exactly-once does not abort transaction after transaction on writes that can't land. If the
//! topic has not appeared after [`MISSING_TOPIC_WAIT`], the pipeline stops with
//! [`MissingTopic`] and fanout exits non-zero, so Kubernetes shows the cause.
//!
//! A cluster that does not answer is not a missing topic: fanout waits for it as long as it
//! takes, and is not ready meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::kafka::admin::{Admin, CreateError, NewTopicSettings, Presence};
use crate::lock;
use crate::stats::Stats;

/// How long a missing topic may stay missing before the pipeline gives up on it.
pub const MISSING_TOPIC_WAIT: Duration = Duration::from_secs(30);

/// How often a running pipeline checks its topics.
/// (Two Metadata requests; the shorter it is, the fewer transactions write to a dead-letter
/// topic deleted meanwhile.)
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Longest wait for one Metadata answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the start-up check reports under, in `/readyz`, while the cluster has not answered.
const CHECKING: &str = "topics";

/// Which of fanout's own topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Source,
    DeadLetter,
}

impl Role {
    fn key(self) -> &'static str {
        match self {
            Role::Source => "source topic",
            Role::DeadLetter => "dead-letter topic",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

/// A topic the pipeline can't work without stayed missing for [`MISSING_TOPIC_WAIT`]: the
/// process should exit non-zero. (The line naming the topic and the fix was logged when it
/// was found missing.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {role} is still missing after {} s (see the line naming it above); stopping", .waited.as_secs())]
pub struct MissingTopic {
    pub role: Role,
    pub waited: Duration,
}

/// What the guard asks the cluster: the Admin API ([`Admin`]), or a stand-in in tests.
pub trait Cluster: Send + Sync {
    fn presence(&self, topic: &str, timeout: Duration) -> Result<Presence, String>;
    fn create(&self, topic: &str, settings: &NewTopicSettings) -> Result<(), CreateError>;
}

impl Cluster for Admin {
    fn presence(&self, topic: &str, timeout: Duration) -> Result<Presence, String> {
        Admin::presence(self, topic, timeout)
    }

    fn create(&self, topic: &str, settings: &NewTopicSettings) -> Result<(), CreateError> {
        Admin::create(self, topic, settings)
    }
}

/// A topic found missing, and since when.
#[derive(Debug)]
struct Missing {
    since: Instant,
}

/// Checks the source and dead-letter topics, and says whether the pipeline may go on.
pub struct TopicGuard {
    admin: Arc<dyn Cluster>,
    /// How long a topic may stay missing ([`MISSING_TOPIC_WAIT`]).
    wait: Duration,
    topics: [(Role, String); 2],
    create: Option<NewTopicSettings>,
    stats: Arc<Stats>,
    missing: Mutex<BTreeMap<Role, Missing>>,
    /// Topics the cluster would not describe, already warned about.
    hidden: Mutex<BTreeSet<Role>>,
    /// One check at a time, so that an older answer never overwrites a newer one.
    checking: Mutex<()>,
    /// Set when the watcher should stop.
    stopped: (Mutex<bool>, Condvar),
}

impl TopicGuard {
    /// `create`: the settings to create a missing dead-letter topic with, if fanout may.
    pub fn new(
        admin: Arc<dyn Cluster>,
        source_topic: &str,
        dead_letter_topic: &str,
        create: Option<NewTopicSettings>,
        stats: Arc<Stats>,
    ) -> Arc<Self> {
        Self::with_wait(
            admin,
            source_topic,
            dead_letter_topic,
            create,
            stats,
            MISSING_TOPIC_WAIT,
        )
    }

    fn with_wait(
        admin: Arc<dyn Cluster>,
        source_topic: &str,
        dead_letter_topic: &str,
        create: Option<NewTopicSettings>,
        stats: Arc<Stats>,
        wait: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            admin,
            wait,
            topics: [
                (Role::Source, source_topic.to_owned()),
                (Role::DeadLetter, dead_letter_topic.to_owned()),
            ],
            create,
            stats,
            missing: Mutex::default(),
            hidden: Mutex::default(),
            checking: Mutex::default(),
            stopped: (Mutex::new(false), Condvar::new()),
        })
    }

    /// Before the pipeline starts: checks every second until both topics exist (`Ok(true)`),
    /// `stop` is set (`Ok(false)`), or one has been missing for [`MISSING_TOPIC_WAIT`].
    pub fn wait_at_start(
        &self,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<bool, MissingTopic> {
        use std::sync::atomic::Ordering;
        self.stats.set_unready(
            CHECKING,
            Some("checking that the source and dead-letter topics exist".to_owned()),
        );
        let mut last_error = None;
        loop {
            match self.check() {
                Ok(()) => {
                    self.stats.set_unready(CHECKING, None);
                    if !self.hold()? {
                        return Ok(true);
                    }
                }
                Err(e) => {
                    if last_error.as_ref() != Some(&e) {
                        tracing::warn!("checking the source and dead-letter topics: {e}; retrying");
                    }
                    self.stats.set_unready(
                        CHECKING,
                        Some(format!(
                            "can't check the source and dead-letter topics: {e}"
                        )),
                    );
                    last_error = Some(e);
                    self.hold()?;
                }
            }
            for _ in 0..10 {
                if stop.load(Ordering::Relaxed) {
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Checks both topics in the background every [`WATCH_INTERVAL`], until dropped.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<Watcher> {
        let guard = self.clone();
        std::thread::Builder::new()
            .name("fanout-topics".into())
            .spawn(move || {
                loop {
                    {
                        let (stopped, wake) = &guard.stopped;
                        let stopped = wake
                            .wait_timeout_while(lock(stopped), WATCH_INTERVAL, |s| !*s)
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .0;
                        if *stopped {
                            return;
                        }
                    }
                    if let Err(e) = guard.check() {
                        tracing::debug!("checking the source and dead-letter topics: {e}");
                    }
                }
            })
            .map_err(anyhow::Error::from)?;
        Ok(Watcher(self.clone()))
    }

    /// Checks both topics now (after an abort, which a missing topic may have caused).
    pub fn recheck(&self) {
        if let Err(e) = self.check() {
            tracing::debug!("checking the source and dead-letter topics: {e}");
        }
    }

    /// Whether the pipeline must hold off (`Ok(true)`: a topic is missing, and may yet
    /// appear), or give up (`Err`: it has been missing too long).
    pub fn hold(&self) -> Result<bool, MissingTopic> {
        let missing = lock(&self.missing);
        let Some((role, oldest)) = missing.iter().min_by_key(|(_, m)| m.since) else {
            return Ok(false);
        };
        let waited = oldest.since.elapsed();
        if waited >= self.wait {
            return Err(MissingTopic {
                role: *role,
                waited,
            });
        }
        Ok(true)
    }

    /// Which topic is missing, if one is.
    pub fn missing(&self) -> Option<Role> {
        lock(&self.missing).keys().next().copied()
    }

    /// One round: asks about both topics, creates a missing dead-letter topic if it may, and
    /// records what it found. `Err` when the cluster did not answer about one of them.
    fn check(&self) -> Result<(), String> {
        let _one_at_a_time = lock(&self.checking);
        let mut unanswered = Ok(());
        for (role, topic) in &self.topics {
            match self.problem(*role, topic) {
                Ok(problem) => self.update(*role, problem),
                Err(e) => unanswered = Err(e),
            }
        }
        unanswered
    }

    /// What is wrong with `topic`, as the one line to log: `None` when it exists (or was just
    /// created).
    fn problem(&self, role: Role, topic: &str) -> Result<Option<String>, String> {
        let wait = self.wait.as_secs();
        match self.admin.presence(topic, CHECK_TIMEOUT)? {
            Presence::Exists { .. } => Ok(None),
            Presence::Hidden(e) => {
                if lock(&self.hidden).insert(role) {
                    tracing::warn!(
                        "the cluster would not describe the {role} {topic:?} ({e}); \
                         carrying on as if it exists"
                    );
                }
                Ok(None)
            }
            Presence::Missing => Ok(Some(match (role, &self.create) {
                (Role::Source, _) => format!(
                    "the source topic {topic:?} does not exist: create it, or set \
                     kafka.source_topic (FANOUT_SOURCE_TOPIC, TOPIC) to the topic EventRouter \
                     writes to; not ready, and exiting in {wait} s unless it appears"
                ),
                (Role::DeadLetter, None) => format!(
                    "the dead-letter topic {topic:?} does not exist: create it, or set \
                     [topics] create_missing = true for fanout to create it (or \
                     kafka.dead_letter_topic to a topic that exists); not ready, and exiting \
                     in {wait} s unless it appears"
                ),
                (Role::DeadLetter, Some(settings)) => match self.admin.create(topic, settings) {
                    Ok(()) => return Ok(None),
                    Err(e) => format!(
                        "the dead-letter topic {topic:?} does not exist and creating it failed \
                         ({e}): create it, or change [topics] partitions, replication_factor or \
                         configs; not ready, and exiting in {wait} s unless it appears"
                    ),
                },
            })),
        }
    }

    fn update(&self, role: Role, problem: Option<String>) {
        let mut missing = lock(&self.missing);
        match (problem, missing.contains_key(&role)) {
            (Some(problem), false) => {
                tracing::error!("{problem}");
                self.stats.set_unready(role.key(), Some(problem));
                missing.insert(
                    role,
                    Missing {
                        since: Instant::now(),
                    },
                );
            }
            (None, true) => {
                missing.remove(&role);
                self.stats.set_unready(role.key(), None);
                tracing::info!("the {role} exists now");
            }
            // Still missing (and said so), or still there.
            (Some(_), true) | (None, false) => {}
        }
    }
}

/// The background check; stops when dropped (without waiting for a check in progress).
pub struct Watcher(Arc<TopicGuard>);

impl Drop for Watcher {
    fn drop(&mut self) {
        let (stopped, wake) = &self.0.stopped;
        *lock(stopped) = true;
        wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A cluster with these topics, that may or may not create more.
    #[derive(Default)]
    struct FakeCluster {
        topics: Mutex<BTreeSet<String>>,
        refuse_creation: bool,
        created: Mutex<Vec<(String, i32)>>,
        unanswered: AtomicBool,
    }

    impl FakeCluster {
        fn with(topics: &[&str]) -> Arc<Self> {
            let cluster = Self::default();
            lock(&cluster.topics).extend(topics.iter().map(|t| t.to_string()));
            Arc::new(cluster)
        }
    }

    impl Cluster for FakeCluster {
        fn presence(&self, topic: &str, _: Duration) -> Result<Presence, String> {
            if self.unanswered.load(std::sync::atomic::Ordering::Relaxed) {
                return Err("Local: Broker transport failure".to_owned());
            }
            Ok(if lock(&self.topics).contains(topic) {
                Presence::Exists { partitions: 1 }
            } else {
                Presence::Missing
            })
        }

        fn create(&self, topic: &str, settings: &NewTopicSettings) -> Result<(), CreateError> {
            if self.refuse_creation {
                return Err(CreateError::Refused(
                    "Broker: Invalid replication factor".into(),
                ));
            }
            lock(&self.created).push((topic.to_owned(), settings.partitions));
            lock(&self.topics).insert(topic.to_owned());
            Ok(())
        }
    }

    fn settings() -> NewTopicSettings {
        NewTopicSettings {
            partitions: 2,
            replication_factor: 3,
            configs: vec![],
        }
    }

    fn guard(
        cluster: &Arc<FakeCluster>,
        create: Option<NewTopicSettings>,
        wait: Duration,
    ) -> (Arc<TopicGuard>, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let guard = TopicGuard::with_wait(
            cluster.clone(),
            "events",
            "dead",
            create,
            stats.clone(),
            wait,
        );
        (guard, stats)
    }

    #[test]
    fn both_topics_there_starts_and_is_ready() {
        let cluster = FakeCluster::with(&["events", "dead"]);
        let (guard, stats) = guard(&cluster, None, Duration::from_secs(30));
        assert_eq!(guard.wait_at_start(&AtomicBool::new(false)), Ok(true));
        assert!(stats.unready().is_empty(), "{:?}", stats.unready());
        assert_eq!(guard.hold(), Ok(false));
        assert!(lock(&cluster.created).is_empty());
    }

    #[test]
    fn a_missing_dead_letter_topic_is_created_with_the_configured_settings() {
        let cluster = FakeCluster::with(&["events"]);
        let (guard, stats) = guard(&cluster, Some(settings()), Duration::from_secs(30));
        assert_eq!(guard.wait_at_start(&AtomicBool::new(false)), Ok(true));
        assert_eq!(*lock(&cluster.created), [("dead".to_owned(), 2)]);
        assert!(stats.unready().is_empty());
    }

    #[test]
    fn a_missing_dead_letter_topic_without_creation_is_unready_then_fatal() {
        let cluster = FakeCluster::with(&["events"]);
        let (guard, stats) = guard(&cluster, None, Duration::from_millis(300));
        let started = Instant::now();
        let error = guard.wait_at_start(&AtomicBool::new(false)).unwrap_err();
        assert_eq!(error.role, Role::DeadLetter);
        assert!(started.elapsed() < Duration::from_secs(3));
        let reasons = stats.unready();
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].contains("\"dead\""), "{reasons:?}");
        assert!(reasons[0].contains("create_missing = true"), "{reasons:?}");
        assert!(
            !error.to_string().contains("\"dead\""),
            "named once, in the log line"
        );
    }

    #[test]
    fn a_refused_creation_says_why_and_which_settings() {
        let cluster = Arc::new(FakeCluster {
            refuse_creation: true,
            ..FakeCluster::default()
        });
        lock(&cluster.topics).insert("events".into());
        let (guard, stats) = guard(&cluster, Some(settings()), Duration::from_millis(100));
        assert!(guard.wait_at_start(&AtomicBool::new(false)).is_err());
        let reasons = stats.unready().join("\n");
        assert!(reasons.contains("Invalid replication factor"), "{reasons}");
        assert!(reasons.contains("replication_factor"), "{reasons}");
    }

    #[test]
    fn a_missing_source_topic_is_never_created() {
        let cluster = FakeCluster::with(&["dead"]);
        let (guard, stats) = guard(&cluster, Some(settings()), Duration::from_millis(100));
        assert_eq!(
            guard
                .wait_at_start(&AtomicBool::new(false))
                .unwrap_err()
                .role,
            Role::Source
        );
        assert!(lock(&cluster.created).is_empty());
        assert!(stats.unready().join("\n").contains("kafka.source_topic"));
    }

    #[test]
    fn a_topic_deleted_while_running_holds_then_clears_when_it_comes_back() {
        let cluster = FakeCluster::with(&["events", "dead"]);
        let (guard, stats) = guard(&cluster, None, Duration::from_secs(30));
        assert_eq!(guard.wait_at_start(&AtomicBool::new(false)), Ok(true));
        lock(&cluster.topics).remove("dead");
        guard.recheck();
        assert_eq!(guard.hold(), Ok(true));
        assert_eq!(guard.missing(), Some(Role::DeadLetter));
        assert_eq!(stats.unready().len(), 1);
        lock(&cluster.topics).insert("dead".into());
        guard.recheck();
        assert_eq!(guard.hold(), Ok(false));
        assert_eq!(guard.missing(), None);
        assert!(stats.unready().is_empty());
    }

    #[test]
    fn an_unanswering_cluster_is_waited_for_not_given_up_on() {
        let cluster = FakeCluster::with(&["events", "dead"]);
        cluster
            .unanswered
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let (guard, stats) = guard(&cluster, None, Duration::from_millis(100));
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(1500));
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            })
        };
        // Well past the wait: still not given up, until stopped.
        assert_eq!(guard.wait_at_start(&stop), Ok(false));
        stopper.join().unwrap();
        assert!(stats.unready().join("\n").contains("can't check"));
        // And while running, no answer changes nothing.
        guard.recheck();
        assert_eq!(guard.hold(), Ok(false));
    }
}
