//! What a JSON text must be for fanout to accept it as an envelope: what a strict parser
//! downstream, such as serde_json or Go's `encoding/json`, reads the same way fanout does.
//!
//! fanout forwards the source bytes unchanged, so whatever it accepts reaches every consumer
//! of its output topics and every plugin's lazy JSON. The typed decode in `event.rs` looks only
//! at the fields it extracts and skips the rest by syntax alone, which let through, in skipped
//! fields, bytes that serde_json refuses (invalid UTF-8, `"\ud800"`, `1e999`). This pass walks
//! the whole text once with serde_json, without building anything, and refuses:
//!
//! - what serde_json refuses as a `serde_json::Value` (RFC 8259 syntax; no lone surrogate
//!   escape; every number finite as an f64; nesting within its recursion limit). The caller
//!   has already checked that the bytes are UTF-8;
//! - a key twice in one object (after unescaping). RFC 8259 only says names SHOULD be unique;
//!   I-JSON (RFC 7493) and Go's `encoding/json/v2` refuse duplicates, and the parsers that take
//!   them disagree on which one wins;
//! - in the objects Go decodes into structs (the envelope, `event` and `old_event`, and their
//!   `metadata`, `involvedObject`, `related` and `source`), two keys that Go's case-insensitive
//!   field matching reads as one field (`namespace` and `Namespace`), and a key that Go reads
//!   as a field fanout extracts but fanout would not (`Namespace` alone). Either way a Go
//!   consumer would see another value than fanout routed by. Inside maps (labels,
//!   annotations) keys are compared exactly, as Go compares map keys.
//!
//! Keys are held borrowed from the input (an escaped key is copied), on one stack shared by
//! the whole walk; small objects are checked pairwise, large ones with a hash set, so that no
//! input costs more than linear time.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// Walks `text` (already known to be UTF-8) and refuses what the module doc lists. The error
/// is serde_json's, with its position.
pub(super) fn check(text: &str) -> Result<(), serde_json::Error> {
    let mut keys = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    Walk {
        keys: &mut keys,
        shape: Shape::Envelope,
    }
    .deserialize(&mut de)?;
    de.end()
}

/// Which Go type an object decodes into, for the case-folding rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `{"verb", "event", "old_event"}`.
    Envelope,
    /// A core/v1 Event.
    Event,
    /// ObjectMeta.
    Metadata,
    /// ObjectReference (`involvedObject`, `related`).
    Reference,
    /// EventSource.
    Source,
    /// Anything else: maps, lists, scalars, and structs fanout does not model.
    Other,
}

impl Shape {
    /// The JSON names of the struct's fields that fanout reads (extracts, or descends into).
    fn fields(self) -> &'static [&'static str] {
        match self {
            Shape::Envelope => &["verb", "event", "old_event"],
            Shape::Event => &[
                "metadata",
                "involvedObject",
                "related",
                "reason",
                "message",
                "type",
                "count",
                "source",
                "reportingComponent",
                "firstTimestamp",
                "lastTimestamp",
                "eventTime",
            ],
            Shape::Metadata => &["name", "namespace", "uid"],
            Shape::Reference => &[
                "kind",
                "namespace",
                "name",
                "uid",
                "apiVersion",
                "fieldPath",
            ],
            Shape::Source => &["component", "host"],
            Shape::Other => &[],
        }
    }

    fn is_struct(self) -> bool {
        self != Shape::Other
    }

    /// The shape of the value under `key` (spelled exactly: a near miss was refused first).
    fn child(self, key: &str) -> Shape {
        match (self, key) {
            (Shape::Envelope, "event" | "old_event") => Shape::Event,
            (Shape::Event, "metadata") => Shape::Metadata,
            (Shape::Event, "involvedObject" | "related") => Shape::Reference,
            (Shape::Event, "source") => Shape::Source,
            _ => Shape::Other,
        }
    }
}

/// Objects with more keys than this are checked with a hash set instead of pairwise.
const PAIRWISE_MAX: usize = 32;

/// Go's `encoding/json` field-name folding (`foldName`): ASCII letters to upper case, any
/// other character through `unicode.ToUpper(unicode.ToLower(r))`, so that `ſ` (U+017F) reads
/// as `S` and the Kelvin sign as `K`.
fn go_fold(key: &str) -> impl Iterator<Item = char> + '_ {
    key.chars().map(|c| {
        if c.is_ascii() {
            c.to_ascii_uppercase()
        } else {
            let lower = single(c.to_lowercase()).unwrap_or(c);
            single(lower.to_uppercase()).unwrap_or(lower)
        }
    })
}

/// Go's case mappings are one rune to one rune; where Unicode maps to several, Go keeps the
/// rune as it is.
fn single(mut chars: impl Iterator<Item = char>) -> Option<char> {
    let first = chars.next()?;
    chars.next().is_none().then_some(first)
}

/// What two keys Go reads as one field share, worked out once per key: for an ASCII key, its
/// length and its first and last bytes in upper case. Comparing these first keeps the pairwise
/// checks of a struct-like object's keys cheap (a plain comparison of every pair was the
/// decoder's hottest function).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fold {
    Ascii(u64),
    /// Any other key: compared character by character with [`go_fold`].
    Unicode,
}

impl Fold {
    fn of(key: &str) -> Self {
        if !key.is_ascii() {
            return Fold::Unicode;
        }
        match key.as_bytes() {
            [] => Fold::Ascii(0),
            [first, .., last] | [first @ last] => Fold::Ascii(
                ((key.len() as u64) << 16)
                    | (u64::from(first.to_ascii_uppercase()) << 8)
                    | u64::from(last.to_ascii_uppercase()),
            ),
        }
    }
}

/// Whether Go reads `a` and `b` (with their [`Fold`]s) as one field name.
fn go_fold_eq(a: &str, a_fold: Fold, b: &str, b_fold: Fold) -> bool {
    match (a_fold, b_fold) {
        (Fold::Ascii(x), Fold::Ascii(y)) => x == y && a.eq_ignore_ascii_case(b),
        _ => go_fold(a).eq(go_fold(b)),
    }
}

/// A key of an open object.
struct Seen<'de> {
    key: Cow<'de, str>,
    /// Only worked out where keys are compared ignoring case.
    fold: Fold,
}

struct Walk<'k, 'de> {
    /// Every open object's keys so far, innermost last.
    keys: &'k mut Vec<Seen<'de>>,
    shape: Shape,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    // serde_json has already checked each scalar: strings for lone surrogates, numbers for
    // their range as an f64.
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Walk {
                keys: &mut *self.keys,
                shape: Shape::Other,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let start = self.keys.len();
        let fold = self.shape.is_struct();
        let mut large: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(key) = map.next_key_seed(Key)? {
            let key_fold = if fold { Fold::of(&key) } else { Fold::Unicode };
            // A key spelled as one of the fields is no near miss of another: no two fields of
            // one struct fold to the same name. Most keys are, so this search is rare.
            if fold
                && !self.shape.fields().contains(&key.as_ref())
                && let Some(field) = self
                    .shape
                    .fields()
                    .iter()
                    .find(|f| go_fold_eq(f, Fold::of(f), &key, key_fold))
            {
                return Err(de::Error::custom(format_args!(
                    "key `{key}` is not `{field}`, but Go's encoding/json reads it as `{field}`"
                )));
            }
            let earlier = &self.keys[start..];
            let duplicate = match &mut large {
                Some(set) => !set.insert(if fold {
                    Cow::Owned(go_fold(&key).collect())
                } else {
                    key.clone()
                }),
                None if fold => earlier
                    .iter()
                    .any(|seen| go_fold_eq(&seen.key, seen.fold, &key, key_fold)),
                None => earlier.iter().any(|seen| seen.key == key),
            };
            if duplicate {
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{key}`{}",
                    if fold {
                        " (Go's encoding/json compares these keys ignoring case)"
                    } else {
                        ""
                    }
                )));
            }
            if large.is_none() && earlier.len() == PAIRWISE_MAX {
                let mut set: HashSet<Cow<'de, str>> = HashSet::with_capacity(4 * PAIRWISE_MAX);
                for k in earlier.iter().map(|seen| &seen.key).chain([&key]) {
                    set.insert(if fold {
                        Cow::Owned(go_fold(k).collect())
                    } else {
                        k.clone()
                    });
                }
                large = Some(set);
            }
            let shape = self.shape.child(&key);
            self.keys.push(Seen {
                key,
                fold: key_fold,
            });
            map.next_value_seed(Walk {
                keys: &mut *self.keys,
                shape,
            })?;
        }
        self.keys.truncate(start);
        Ok(())
    }
}

/// A key, borrowed from the input unless it had escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_owned()))
    }
}
