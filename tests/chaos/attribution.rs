//! Which fault a duplicate is blamed on.
//!
//! A duplicate arises when fanout consumes an event again after it was written, because the
//! offset that covered it was not committed. Each fault kind does that at its own time:
//!
//! - a **kill** loses what the dead process wrote but had not committed: its first copy was
//!   read before the kill, the second after it (once a replica rejoins);
//! - a **replica start or stop**, a **broker outage** or, on the real cluster, a **leader
//!   kill** (commits fail while the coordinator is down, sessions time out, partitions are lost
//!   and reassigned) and **request errors**
//!   (failed commits; `REBALANCE_IN_PROGRESS` makes a member rejoin) act through a rebalance
//!   that completes seconds later: the old owner may write the first copy after the fault,
//!   and the new owner the second one up to [`AFTERMATH`] after it (or after the outage ends).
//!
//! Of the faults that fit a duplicate's two read times, the likeliest kind wins (kill, replica,
//! outage, request errors), and of those the one nearest the first copy. Plugin swaps happen
//! between two events and are never a cause. A duplicate that no fault fits is reported as
//! unexplained.
//!
//! The mock cluster does not de-duplicate an idempotent producer's retries (only a
//! transactional producer's): a produce request that was appended just before a broker went
//! down is appended again when retried. Such copies sit in the same partition as the first,
//! next to it, during or just after an outage, and are blamed on the outage; a real broker
//! would have dropped them.

use crate::faults::{FaultKind, FaultRecord};

/// How long after a fault (or after an outage ends) its rebalance can still replay events:
/// a session timeout, then the mock's rebalance, which waits up to a session for members to
/// rejoin.
pub const AFTERMATH_MS: u64 = 2 * crate::replica::SESSION_TIMEOUT_MS + 2_000;
/// The reader trails the writes: a fault this long before a copy was read may still have come
/// after it was written.
const READ_LAG_MS: u64 = 200;

pub const UNEXPLAINED: &str = "no fault explains it";

/// The fault a copy read at `second` (ms since the start) is blamed on, given the first copy
/// was read at `first`.
pub fn cause(faults: &[FaultRecord], first: u32, second: u32) -> String {
    let (first, second) = (u64::from(first), u64::from(second));
    faults
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let rank = match f.kind {
                FaultKind::Kill => 0,
                FaultKind::ReplicaStart | FaultKind::ReplicaStop => 1,
                FaultKind::BrokerDown | FaultKind::LeaderKill => 2,
                FaultKind::CommitErrors | FaultKind::ProduceErrors => 3,
                // Part of an outage, blamed on its start.
                FaultKind::BrokerUp
                | FaultKind::NodeRestart
                | FaultKind::GoodSwap
                | FaultKind::BrokenSwap => return None,
            };
            let fits = match f.kind {
                FaultKind::Kill => f.at_ms + READ_LAG_MS > first && f.at_ms <= second,
                _ => f.at_ms <= second && outage_end(faults, i) + AFTERMATH_MS >= first,
            };
            fits.then_some((rank, f.at_ms.abs_diff(first), f))
        })
        .min_by_key(|(rank, distance, _)| (*rank, *distance))
        .map_or_else(|| UNEXPLAINED.to_owned(), |(_, _, f)| f.title())
}

/// When the effect of fault `i` ends: when its broker or node comes back, for an outage or a
/// leader kill; at once, otherwise.
fn outage_end(faults: &[FaultRecord], i: usize) -> u64 {
    let fault = &faults[i];
    let back = match fault.kind {
        FaultKind::BrokerDown => FaultKind::BrokerUp,
        FaultKind::LeaderKill => FaultKind::NodeRestart,
        _ => return fault.at_ms,
    };
    faults[i + 1..]
        .iter()
        .find(|f| f.kind == back)
        .map_or(u64::MAX - AFTERMATH_MS, |up| up.at_ms)
}
