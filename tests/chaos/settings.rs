//! What the chaos runs do: the CI setting by default, the full one with `FANOUT_CHAOS=full`,
//! the Kafka cluster they run on and the delivery guarantee under test. Read once from the
//! environment; nothing else in the driver reads it.
//!
//! By default one invocation runs twice: on the mock cluster at least once (the run's original
//! form), then on a real Apache Kafka cluster at least once; the full setting adds exactly once
//! on the real cluster.
//! `FANOUT_CHAOS_KAFKA` (`mock` or `apache`) and `FANOUT_CHAOS_DELIVERY` pick one run
//! ([`Settings::runs_from_env`]).

use std::time::Duration;

use crate::rng;

/// The knobs of one run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `ci` or `full`.
    pub name: &'static str,
    /// The cluster the run is against.
    pub kafka: Kafka,
    pub seed: u64,
    /// Source events fed.
    pub events: u64,
    /// Events fed per second, so the run lasts long enough for its faults to be spread over
    /// it (they are due at shares of the events, see `faults`).
    pub feed_rate: u64,
    /// Of every 1000 events, how many are crafted to make the plugin trap, and how many are
    /// malformed.
    pub trap_per_mille: u64,
    pub malformed_per_mille: u64,
    /// Fault counts.
    pub kills: u32,
    /// Mock only: a broker taken down and up through the mock's control channel.
    pub broker_outages: u32,
    /// Real cluster only: the node leading the busiest partition SIGKILLed, then restarted.
    pub leader_kills: u32,
    /// Mock only: request errors injected through the mock's control channel.
    pub produce_error_bursts: u32,
    pub commit_error_bursts: u32,
    /// Plugin swaps in all, good and broken (each broken one is followed by a good one).
    pub swaps: u32,
    pub delivery: Delivery,
    /// The whole run, drain included, must end within this.
    pub deadline: Duration,
}

impl Settings {
    /// The runs of this invocation, in order. `FANOUT_CHAOS` (`ci`, the default, or `full`);
    /// `FANOUT_CHAOS_KAFKA` (`mock` or `apache`) and `FANOUT_CHAOS_DELIVERY` (`at-least-once`
    /// or `exactly-once`): with neither, the mock and Apache at least once, and in the full
    /// setting Apache exactly once too; with either, the one run they name, on the mock and at least once
    /// unless said otherwise (exactly-once on the mock stops at once and says why:
    /// [`Delivery::unsupported_by_the_mock`]); `FANOUT_CHAOS_SEED` (every run's seed) and, to
    /// try something quickly, `FANOUT_CHAOS_EVENTS` and `FANOUT_CHAOS_RATE` (events per
    /// second).
    pub fn runs_from_env() -> Result<Vec<Self>, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let full = match var("FANOUT_CHAOS").as_deref() {
            None | Some("ci") => false,
            Some("full") => true,
            Some(other) => return Err(format!("FANOUT_CHAOS={other}: expected `ci` or `full`")),
        };
        let kafka = match var("FANOUT_CHAOS_KAFKA") {
            None => None,
            Some(kafka) => Some(Kafka::parse(&kafka).ok_or_else(|| {
                format!("FANOUT_CHAOS_KAFKA={kafka}: expected `mock` or `apache`")
            })?),
        };
        let delivery = match var("FANOUT_CHAOS_DELIVERY") {
            None => None,
            Some(delivery) => Some(Delivery::parse(&delivery).ok_or_else(|| {
                format!("FANOUT_CHAOS_DELIVERY={delivery}: expected at-least-once or exactly-once")
            })?),
        };
        let runs = if kafka.is_none() && delivery.is_none() {
            let mut runs = vec![
                (Kafka::Mock, Delivery::AtLeastOnce),
                (Kafka::Apache, Delivery::AtLeastOnce),
            ];
            // Not in CI yet: with librdkafka 2.12 a SIGKILLed group coordinator can leave
            // `send_offsets_to_transaction` hanging past its timeout, which fanout's watchdog
            // turns into an exit, which fails the run (see `fanout::pipeline::watchdog`).
            if full {
                runs.push((Kafka::Apache, Delivery::ExactlyOnce));
            }
            runs
        } else {
            vec![(
                kafka.unwrap_or(Kafka::Mock),
                delivery.unwrap_or(Delivery::AtLeastOnce),
            )]
        };
        let seed = match var("FANOUT_CHAOS_SEED") {
            None => None,
            Some(seed) => Some(
                seed.parse()
                    .map_err(|_| format!("FANOUT_CHAOS_SEED={seed}: expected a number"))?,
            ),
        };
        let events = match var("FANOUT_CHAOS_EVENTS") {
            None => None,
            Some(events) => {
                Some(events.parse().ok().filter(|n| *n >= 1_000).ok_or_else(|| {
                    format!("FANOUT_CHAOS_EVENTS={events}: expected at least 1000")
                })?)
            }
        };
        let rate =
            match var("FANOUT_CHAOS_RATE") {
                None => None,
                Some(rate) => Some(rate.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    format!("FANOUT_CHAOS_RATE={rate}: expected events per second")
                })?),
            };
        Ok(runs
            .into_iter()
            .map(|(kafka, delivery)| {
                let settings = match (full, kafka) {
                    (false, Kafka::Mock) => Self::ci(),
                    (false, Kafka::Apache) => Self::ci_apache(),
                    (true, Kafka::Mock) => Self::full(),
                    (true, Kafka::Apache) => Self::full_apache(),
                };
                Self {
                    delivery,
                    seed: seed.unwrap_or(settings.seed),
                    events: events.unwrap_or(settings.events),
                    feed_rate: rate.unwrap_or(settings.feed_rate),
                    ..settings
                }
            })
            .collect())
    }

    /// How the run names itself in its directory and report: `apache-exactly-once`, say.
    pub fn label(&self) -> String {
        format!("{}-{}", self.kafka.name(), self.delivery.name())
    }

    /// What CI runs on every change: a debug build on 2 cores, within about 5 minutes.
    fn ci() -> Self {
        Self {
            name: "ci",
            kafka: Kafka::Mock,
            seed: rng::fresh_seed(),
            events: 50_000,
            // About two minutes of feeding.
            feed_rate: 400,
            trap_per_mille: 10,
            malformed_per_mille: 5,
            kills: 5,
            broker_outages: 5,
            leader_kills: 0,
            produce_error_bursts: 5,
            commit_error_bursts: 5,
            swaps: 20,
            delivery: Delivery::AtLeastOnce,
            deadline: Duration::from_secs(10 * 60),
        }
    }

    /// The full setting, meant for a release build.
    fn full() -> Self {
        Self {
            name: "full",
            events: 1_000_000,
            // About ten minutes of feeding.
            feed_rate: 1_700,
            swaps: 100,
            deadline: Duration::from_secs(60 * 60),
            ..Self::ci()
        }
    }

    /// On the real cluster: node kills instead of the mock's outages and injected errors, and
    /// in CI a shorter run (each of its two deliveries starts a cluster of its own).
    fn on_apache(self) -> Self {
        Self {
            kafka: Kafka::Apache,
            broker_outages: 0,
            leader_kills: 3,
            produce_error_bursts: 0,
            commit_error_bursts: 0,
            ..self
        }
    }

    /// About 50 s of feeding, 8 swaps; with the cluster's start and the faults' pauses about
    /// 2.5 minutes a delivery in a debug build on 2 cores.
    fn ci_apache() -> Self {
        Self {
            events: 20_000,
            swaps: 8,
            ..Self::ci().on_apache()
        }
    }

    fn full_apache() -> Self {
        Self::full().on_apache()
    }
}

/// The Kafka cluster a run is against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kafka {
    /// librdkafka's mock cluster in a `fanout mock-broker` process (`broker`).
    Mock,
    /// Apache Kafka, 3 nodes (`kafka-cluster`).
    Apache,
}

impl Kafka {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "mock" => Some(Self::Mock),
            "apache" => Some(Self::Apache),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Mock => "mock",
            Self::Apache => "apache",
        }
    }

    /// Producer settings every producer of the run (fanout's and the feeder's) needs on this
    /// cluster: on the mock, one request in flight (see `replica::ONE_REQUEST_IN_FLIGHT`).
    pub fn producer_workarounds(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Mock => &[crate::replica::ONE_REQUEST_IN_FLIGHT],
            Self::Apache => &[],
        }
    }

    /// Consumer settings for this cluster: the mock answers an empty fetch only after the full
    /// `fetch.wait.max.ms`, even when data arrives meanwhile (see benches/pipeline.rs), so its
    /// consumers wait 10 ms; a real broker answers as data arrives.
    pub fn consumer_workarounds(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Mock => &[("fetch.wait.max.ms", "10")],
            Self::Apache => &[],
        }
    }
}

/// The delivery guarantee fanout is run with, and what the reconciliation then demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    AtLeastOnce,
    ExactlyOnce,
}

impl Delivery {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "at-least-once" => Some(Self::AtLeastOnce),
            "exactly-once" => Some(Self::ExactlyOnce),
            _ => None,
        }
    }

    /// The value of fanout's `kafka.delivery`.
    pub fn name(self) -> &'static str {
        match self {
            Self::AtLeastOnce => "at-least-once",
            Self::ExactlyOnce => "exactly-once",
        }
    }

    /// How the driver reads the outputs: transactions that were aborted must not count.
    pub fn isolation_level(self) -> &'static str {
        match self {
            Self::AtLeastOnce => "read_uncommitted",
            Self::ExactlyOnce => "read_committed",
        }
    }

    /// The request through which fanout commits its source offsets, where commit errors are
    /// injected: the group's own commit, or the transaction's.
    pub fn commit_api(self) -> &'static str {
        match self {
            Self::AtLeastOnce => "OffsetCommit",
            Self::ExactlyOnce => "TxnOffsetCommit",
        }
    }

    /// Why the mock cluster cannot check this guarantee, if it cannot. Exactly-once needs the
    /// broker to keep transactions' promises, and librdkafka's mock only speaks the protocol:
    /// its TxnOffsetCommit stores no offsets, EndTxn writes no commit or abort markers, and
    /// Fetch reports no aborted transactions (`rdkafka_mock_handlers.c`; see also
    /// tests/integration/exactly_once.rs). The group's committed offsets would never move, so
    /// the feeder (paced by them) and the drain would wait forever, and a `read_committed`
    /// reader would see aborted writes as duplicates.
    pub fn unsupported_by_the_mock(self) -> Option<&'static str> {
        match self {
            Self::AtLeastOnce => None,
            Self::ExactlyOnce => Some(
                "exactly-once cannot be checked on librdkafka's mock cluster: its \
                 TxnOffsetCommit stores no offsets, EndTxn writes no commit or abort markers \
                 and Fetch reports no aborted transactions, so the group's committed offsets \
                 never move and a read_committed reader sees aborted writes. Run it on a real \
                 cluster: FANOUT_CHAOS_KAFKA=apache.",
            ),
        }
    }

    /// At-least-once may write an event twice after a fault (reported, with the cause);
    /// exactly-once may not.
    pub fn allows_duplicates(self) -> bool {
        self == Self::AtLeastOnce
    }

    /// In read_uncommitted mode every offset of a destination partition is a record, so a hole
    /// in what the reader sees means it lost records to the mock's retention. Transactions put
    /// control records between data records, so there holes are normal.
    pub fn offsets_are_contiguous(self) -> bool {
        self == Self::AtLeastOnce
    }
}
