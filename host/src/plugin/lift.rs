//! Lifting a plugin's answer into host memory, with its size checked first.
//!
//! In the canonical ABI a list or a string is a pointer and a length into the plugin's memory,
//! and nothing stops a plugin from returning 64 destinations whose payloads are all the same
//! 32 MiB: a plain lift (the generated `call_route`) copies each one, 2 GiB from a plugin capped
//! at 64 MiB, before any policy check sees the list. [`RouteAnswer`] reads the lengths straight
//! from guest memory first (a few words per destination and header, no copies), refuses an
//! answer the output policy would refuse for its size, and only then copies.
//!
//! What one call can make the host allocate is then bounded by the policy: at most
//! `max_destinations` records, each with a topic of at most 249 bytes, at most
//! [`MAX_HEADERS`](crate::policy::MAX_HEADERS) headers and at most `max_record_bytes` of key,
//! value and headers; or an error message, of which at most [`MAX_DETAIL_BYTES`] is copied.
//! (64 MiB and 48 KiB of header structs per plugin call with the defaults.)

use std::cell::Cell;

use wasmtime::component::__internal::wasmtime_environ::component::StringEncoding;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Lift};

use crate::bindings::Destination;
use crate::deadletter::{DeadLetterReason, MAX_DETAIL_BYTES};
use crate::policy::{MAX_HEADERS, OutputPolicy};
use crate::topic_name::MAX_TOPIC_LEN;

/// `route`'s result as the generated bindings lift it.
type Plain = Result<Vec<Destination>, String>;

/// The result of `route`: lifted, or refused for its size before anything was copied.
#[derive(Debug)]
pub enum RouteAnswer {
    /// What the plugin returned (an error message longer than [`MAX_DETAIL_BYTES`] is cut).
    Lifted(Plain),
    /// The destinations would break the output policy's size limits; nothing was copied.
    Refused(DeadLetterReason),
}

/// The size limits a [`RouteAnswer`] is lifted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiftBudget {
    pub max_destinations: usize,
    pub max_record_bytes: usize,
    /// The size of the source value, which a destination without a payload forwards.
    pub raw_len: usize,
}

impl LiftBudget {
    pub fn new(policy: &OutputPolicy, raw_len: usize) -> Self {
        Self {
            max_destinations: policy.max_destinations,
            max_record_bytes: policy.max_record_bytes,
            raw_len,
        }
    }
}

thread_local! {
    /// The budget of the call in progress on this thread. `Lift` is a static trait method, so
    /// this is how the call's limits reach it; a plugin's fiber runs on the thread that polls
    /// the call, so the thread-local is the caller's.
    static BUDGET: Cell<Option<LiftBudget>> = const { Cell::new(None) };
}

/// Runs `call` with `budget` applying to every [`RouteAnswer`] lifted on this thread meanwhile.
pub fn with_budget<R>(budget: LiftBudget, call: impl FnOnce() -> R) -> R {
    struct Restore(Option<LiftBudget>);
    impl Drop for Restore {
        fn drop(&mut self) {
            BUDGET.set(self.0);
        }
    }
    let _restore = Restore(BUDGET.replace(Some(budget)));
    call()
}

fn current_budget() -> LiftBudget {
    // Without a budget (never the case in the router), the default policy's limits apply.
    BUDGET
        .get()
        .unwrap_or_else(|| LiftBudget::new(&OutputPolicy::default(), 0))
}

// Canonical ABI layouts (wasm32), checked against wasmtime's own in the tests below.
/// `result<list<destination>, string>`: discriminant byte, then the case's payload at 4.
const RESULT_PAYLOAD: usize = 4;
/// `destination`: topic (ptr, len) at 0, key option at 8 (payload at 12), headers (ptr, len)
/// at 20, payload option at 28 (payload at 32).
const DESTINATION_SIZE: usize = 40;
/// `header`: key (ptr, len) at 0, value option at 8 (payload at 12).
const HEADER_SIZE: usize = 20;

// SAFETY: every associated item is `Plain`'s, whose representation `RouteAnswer` lifts from.
unsafe impl ComponentType for RouteAnswer {
    type Lower = <Plain as ComponentType>::Lower;

    const ABI: CanonicalAbiInfo = <Plain as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <Plain as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: lifting only reads guest memory through the bounds-checked `LiftContext`, and the
// final lift is `Plain`'s own.
unsafe impl Lift for RouteAnswer {
    fn linear_lift_from_flat(
        _cx: &mut LiftContext<'_>,
        _ty: InterfaceType,
        _src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        // `result<list<..>, string>` flattens to three values, more than a function may return
        // flat, so the canonical ABI always returns it through memory.
        wasmtime::bail!("a `route` result is never returned flat")
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        let guest = Guest {
            memory: cx.memory(),
            encoding: cx.options().string_encoding,
        };
        match inspect(&guest, bytes, &current_budget()) {
            Inspected::Refused(reason) => Ok(Self::Refused(reason)),
            Inspected::LongError(message) => Ok(Self::Lifted(Err(message))),
            Inspected::Lift => Ok(Self::Lifted(Plain::linear_lift_from_memory(cx, ty, bytes)?)),
        }
    }
}

/// A view of the plugin's memory. Reads out of bounds are `None`: the plain lift that follows
/// reports them as wasmtime does.
struct Guest<'a> {
    memory: &'a [u8],
    encoding: StringEncoding,
}

impl Guest<'_> {
    fn u8_at(&self, at: usize) -> Option<u8> {
        self.memory.get(at).copied()
    }

    fn u32_at(&self, at: usize) -> Option<usize> {
        let bytes = self.memory.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?) as usize)
    }

    /// The (ptr, len) pair at `at`.
    fn pair_at(&self, at: usize) -> Option<(usize, usize)> {
        Some((self.u32_at(at)?, self.u32_at(at + 4)?))
    }

    /// An `option<list<u8>>` at `at`: its length, 0 for `none`.
    fn option_bytes_at(&self, at: usize) -> Option<Option<usize>> {
        match self.u8_at(at)? {
            0 => Some(None),
            _ => Some(Some(self.u32_at(at + 8)?)),
        }
    }

    /// The most bytes a string of canonical length `len` becomes once lifted as UTF-8.
    fn string_bytes(&self, len: usize) -> usize {
        const UTF16_TAG: usize = 1 << 31;
        match self.encoding {
            StringEncoding::Utf8 => len,
            // One UTF-16 code unit is at most three bytes of UTF-8.
            StringEncoding::Utf16 => len.saturating_mul(3),
            StringEncoding::CompactUtf16 if len & UTF16_TAG != 0 => {
                (len ^ UTF16_TAG).saturating_mul(3)
            }
            // Latin-1: at most two bytes of UTF-8 per byte.
            StringEncoding::CompactUtf16 => len.saturating_mul(2),
        }
    }

    /// Up to `max` bytes of the string at (`ptr`, `len`), for a message; lossy.
    fn prefix(&self, ptr: usize, len: usize, max: usize) -> String {
        let end = ptr.saturating_add(len.min(max)).min(self.memory.len());
        let bytes = self.memory.get(ptr.min(end)..end).unwrap_or_default();
        String::from_utf8_lossy(bytes).into_owned()
    }
}

enum Inspected {
    /// Within the budget (or malformed, which the plain lift reports): lift it.
    Lift,
    /// An error message too long to copy whole: its beginning.
    LongError(String),
    Refused(DeadLetterReason),
}

/// Reads the sizes of a `result<list<destination>, string>` stored at `bytes` without copying
/// anything, and refuses destinations the budget does not allow, in the terms the output
/// policy would use.
fn inspect(guest: &Guest<'_>, bytes: &[u8], budget: &LiftBudget) -> Inspected {
    let word = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let (Some(ptr), Some(len)) = (word(RESULT_PAYLOAD), word(RESULT_PAYLOAD + 4)) else {
        return Inspected::Lift;
    };
    match bytes.first() {
        Some(0) => match check_destinations(guest, ptr, len, budget) {
            Some(reason) => Inspected::Refused(reason),
            None => Inspected::Lift,
        },
        Some(1) => {
            let bytes = guest.string_bytes(len);
            if bytes <= MAX_DETAIL_BYTES {
                return Inspected::Lift;
            }
            // Short enough that the dead-letter reason keeps it whole, with the true length.
            let start = guest.prefix(ptr, len, MAX_DETAIL_BYTES - 64);
            Inspected::LongError(format!("{start}… ({bytes} bytes)"))
        }
        _ => Inspected::Lift,
    }
}

fn check_destinations(
    guest: &Guest<'_>,
    ptr: usize,
    len: usize,
    budget: &LiftBudget,
) -> Option<DeadLetterReason> {
    if len > budget.max_destinations {
        return Some(DeadLetterReason::TooManyDestinations {
            count: len,
            limit: budget.max_destinations,
        });
    }
    for index in 0..len {
        let at = ptr.checked_add(index.checked_mul(DESTINATION_SIZE)?)?;
        let (topic_ptr, topic_len) = guest.pair_at(at)?;
        let topic = || guest.prefix(topic_ptr, topic_len, MAX_TOPIC_LEN);
        if guest.string_bytes(topic_len) > MAX_TOPIC_LEN {
            return Some(DeadLetterReason::InvalidTopic {
                topic: topic(),
                problem: crate::topic_name::TOPIC_TOO_LONG,
            });
        }
        let key = guest.option_bytes_at(at + 8)?.unwrap_or(0);
        let (headers_ptr, headers_len) = guest.pair_at(at + 20)?;
        let value = guest.option_bytes_at(at + 28)?.unwrap_or(budget.raw_len);
        if headers_len > MAX_HEADERS {
            return Some(DeadLetterReason::TooManyHeaders {
                topic: topic(),
                count: headers_len,
                limit: MAX_HEADERS,
            });
        }
        let mut bytes = key.saturating_add(value);
        for header in 0..headers_len {
            let at = headers_ptr.checked_add(header * HEADER_SIZE)?;
            let (_, key_len) = guest.pair_at(at)?;
            let value = guest.option_bytes_at(at + 8)?.unwrap_or(0);
            bytes = bytes
                .saturating_add(guest.string_bytes(key_len))
                .saturating_add(value);
        }
        if bytes > budget.max_record_bytes {
            return Some(DeadLetterReason::RecordTooLarge {
                topic: topic(),
                bytes,
                limit: budget.max_record_bytes,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::Header;

    #[test]
    fn layouts_are_the_canonical_abi() {
        assert_eq!(<Destination as ComponentType>::SIZE32, DESTINATION_SIZE);
        assert_eq!(<Header as ComponentType>::SIZE32, HEADER_SIZE);
        assert_eq!(<Plain as ComponentType>::SIZE32, RESULT_PAYLOAD + 8);
        assert_eq!(<Plain as ComponentType>::ALIGN32, 4);
    }

    const BUDGET: LiftBudget = LiftBudget {
        max_destinations: 64,
        max_record_bytes: 1_000_000,
        raw_len: 900,
    };

    /// (topic, key length, payload length, headers as (key length, value length)).
    type TestDestination<'a> = (&'a str, Option<u32>, Option<u32>, &'a [(u32, Option<u32>)]);

    /// A guest memory holding `ok(list)` at 0 with the list of `destinations` at 64, every list
    /// pointing at the same bytes at 4096 (only the lengths matter here).
    fn answer(destinations: &[TestDestination<'_>]) -> Vec<u8> {
        let mut memory = vec![0u8; 65536];
        let put = |memory: &mut Vec<u8>, at: usize, word: u32| {
            memory[at..at + 4].copy_from_slice(&word.to_le_bytes())
        };
        let list = 64;
        put(&mut memory, 4, list as u32);
        put(&mut memory, 8, destinations.len() as u32);
        let mut headers_at = 8192;
        let mut strings_at = 6144;
        for (i, (topic, key, payload, headers)) in destinations.iter().enumerate() {
            let at = list + i * DESTINATION_SIZE;
            memory[strings_at..strings_at + topic.len()].copy_from_slice(topic.as_bytes());
            put(&mut memory, at, strings_at as u32);
            put(&mut memory, at + 4, topic.len() as u32);
            strings_at += topic.len();
            if let Some(len) = key {
                memory[at + 8] = 1;
                put(&mut memory, at + 12, 4096);
                put(&mut memory, at + 16, *len);
            }
            put(&mut memory, at + 20, headers_at as u32);
            put(&mut memory, at + 24, headers.len() as u32);
            for (key_len, value_len) in headers.iter() {
                put(&mut memory, headers_at, 4096);
                put(&mut memory, headers_at + 4, *key_len);
                if let Some(len) = value_len {
                    memory[headers_at + 8] = 1;
                    put(&mut memory, headers_at + 12, 4096);
                    put(&mut memory, headers_at + 16, *len);
                }
                headers_at += HEADER_SIZE;
            }
            if let Some(len) = payload {
                memory[at + 28] = 1;
                put(&mut memory, at + 32, 4096);
                put(&mut memory, at + 36, *len);
            }
        }
        memory
    }

    fn check(memory: &[u8]) -> Inspected {
        let guest = Guest {
            memory,
            encoding: StringEncoding::Utf8,
        };
        inspect(&guest, &memory[..12], &BUDGET)
    }

    fn refused(memory: &[u8]) -> DeadLetterReason {
        match check(memory) {
            Inspected::Refused(reason) => reason,
            Inspected::Lift => panic!("lifted"),
            Inspected::LongError(e) => panic!("an error: {e}"),
        }
    }

    #[test]
    fn answers_within_the_policy_are_lifted() {
        let memory = answer(&[
            ("ok.a", None, None, &[]),
            (
                "ok.b",
                Some(16),
                Some(999_000),
                &[(10, Some(50)), (3, None)],
            ),
        ]);
        assert!(matches!(check(&memory), Inspected::Lift));
    }

    #[test]
    fn aliased_payloads_are_refused_before_any_copy() {
        // 64 destinations, each claiming the same 32 MiB: refused at the first, whatever the
        // memory holds (the lengths are all that is read).
        let one = ("ok.alias", None, Some(32 << 20), &[][..]);
        let memory = answer(&[one; 64]);
        assert_eq!(
            refused(&memory),
            DeadLetterReason::RecordTooLarge {
                topic: "ok.alias".into(),
                bytes: 32 << 20,
                limit: 1_000_000
            }
        );
    }

    #[test]
    fn forwarded_source_bytes_count_toward_the_record() {
        let memory = answer(&[("ok.a", Some(999_200), None, &[])]);
        assert_eq!(
            refused(&memory),
            DeadLetterReason::RecordTooLarge {
                topic: "ok.a".into(),
                bytes: 999_200 + 900,
                limit: 1_000_000
            }
        );
    }

    #[test]
    fn headers_count_in_number_and_bytes() {
        let many = vec![(0, None); MAX_HEADERS + 1];
        let memory = answer(&[("ok.a", None, Some(1), &many)]);
        assert_eq!(
            refused(&memory),
            DeadLetterReason::TooManyHeaders {
                topic: "ok.a".into(),
                count: MAX_HEADERS + 1,
                limit: MAX_HEADERS
            }
        );
        let memory = answer(&[("ok.a", None, Some(1), &[(500_000, Some(500_000))])]);
        assert_eq!(refused(&memory).kind(), "record-too-large");
    }

    #[test]
    fn too_many_destinations_are_refused_without_reading_them() {
        let mut memory = vec![0u8; 16];
        memory[4..8].copy_from_slice(&0xFFFF_0000u32.to_le_bytes()); // out of bounds
        memory[8..12].copy_from_slice(&1_000_000u32.to_le_bytes());
        assert_eq!(
            refused(&memory),
            DeadLetterReason::TooManyDestinations {
                count: 1_000_000,
                limit: 64
            }
        );
    }

    #[test]
    fn long_topics_and_long_errors_are_cut_not_copied() {
        let long = "t".repeat(300);
        let memory = answer(&[(&long, None, None, &[])]);
        match refused(&memory) {
            DeadLetterReason::InvalidTopic { topic, problem } => {
                assert_eq!(topic.len(), MAX_TOPIC_LEN);
                assert_eq!(problem, crate::topic_name::TOPIC_TOO_LONG);
            }
            other => panic!("{other:?}"),
        }
        let mut memory = vec![b'e'; 8192];
        memory[..12].fill(0);
        memory[0] = 1;
        memory[4..8].copy_from_slice(&16u32.to_le_bytes());
        memory[8..12].copy_from_slice(&(64u32 << 20).to_le_bytes()); // past the end: never read
        match check(&memory) {
            Inspected::LongError(message) => {
                assert!(message.len() <= MAX_DETAIL_BYTES, "{}", message.len());
                assert!(message.starts_with("eee"), "{message}");
                assert!(
                    message.ends_with(&format!("… ({} bytes)", 64 << 20)),
                    "{message}"
                );
            }
            _ => panic!("not cut"),
        }
    }

    #[test]
    fn out_of_bounds_lists_are_left_to_the_plain_lift() {
        let mut memory = vec![0u8; 16];
        memory[4..8].copy_from_slice(&0xFFFF_0000u32.to_le_bytes());
        memory[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(check(&memory), Inspected::Lift));
    }
}
