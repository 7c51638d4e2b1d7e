//! What one chaos run does: the CI setting by default, the full one with `FANOUT_CHAOS=full`,
//! and the delivery guarantee under test. Read once from the environment; nothing else in the
//! driver reads it.

use std::time::Duration;

use crate::rng;

/// The knobs of one run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `ci` or `full`.
    pub name: &'static str,
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
    pub broker_outages: u32,
    pub produce_error_bursts: u32,
    pub commit_error_bursts: u32,
    /// Plugin swaps in all, good and broken (each broken one is followed by a good one).
    pub swaps: u32,
    pub delivery: Delivery,
    /// The whole run, drain included, must end within this.
    pub deadline: Duration,
}

impl Settings {
    /// `FANOUT_CHAOS` (`ci`, the default, or `full`), `FANOUT_CHAOS_SEED`,
    /// `FANOUT_CHAOS_DELIVERY` (`at-least-once`, the default, or `exactly-once`) and, to try
    /// something quickly, `FANOUT_CHAOS_EVENTS` and `FANOUT_CHAOS_RATE` (events per second).
    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut settings = match var("FANOUT_CHAOS").as_deref() {
            None | Some("ci") => Self::ci(),
            Some("full") => Self::full(),
            Some(other) => return Err(format!("FANOUT_CHAOS={other}: expected `ci` or `full`")),
        };
        if let Some(seed) = var("FANOUT_CHAOS_SEED") {
            settings.seed = seed
                .parse()
                .map_err(|_| format!("FANOUT_CHAOS_SEED={seed}: expected a number"))?;
        }
        if let Some(events) = var("FANOUT_CHAOS_EVENTS") {
            settings.events =
                events.parse().ok().filter(|n| *n >= 1_000).ok_or_else(|| {
                    format!("FANOUT_CHAOS_EVENTS={events}: expected at least 1000")
                })?;
        }
        if let Some(rate) = var("FANOUT_CHAOS_RATE") {
            settings.feed_rate =
                rate.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    format!("FANOUT_CHAOS_RATE={rate}: expected events per second")
                })?;
        }
        if let Some(delivery) = var("FANOUT_CHAOS_DELIVERY") {
            settings.delivery = Delivery::parse(&delivery).ok_or_else(|| {
                format!("FANOUT_CHAOS_DELIVERY={delivery}: expected at-least-once or exactly-once")
            })?;
        }
        Ok(settings)
    }

    /// What CI runs on every change: a debug build on 2 cores, within about 5 minutes.
    fn ci() -> Self {
        Self {
            name: "ci",
            seed: rng::fresh_seed(),
            events: 50_000,
            // About two minutes of feeding.
            feed_rate: 400,
            trap_per_mille: 10,
            malformed_per_mille: 5,
            kills: 5,
            broker_outages: 5,
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
                 never move and a read_committed reader sees aborted writes. The run's faults \
                 need the mock; this mode needs a broker that keeps transactions' promises.",
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
