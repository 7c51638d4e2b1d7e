//! `cargo bench -p fanout --bench decode`: the cost of decoding one EventRouter envelope
//! (`fanout::event::parse` + `into_event`), the first thing every consumed record goes through.
//!
//! Two inputs: every line of `tests/fixtures/events/eventrouter.jsonl` in turn (real-shaped
//! envelopes, 230 B to 3 KiB), and the route bench's 1 KiB Warning event. For scale, the same
//! bytes through `serde_json::from_slice::<serde_json::Value>` (a full parse into a tree, which
//! is what the guest SDK's `json()` does). Each figure is the median over batches of each
//! batch's mean per call.

#[path = "../tests/integration/support.rs"]
#[allow(dead_code)]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use fanout::bindings::SourceRecord;

const BATCHES: usize = 30;
const ROUNDS_PER_BATCH: usize = 500;

fn main() {
    let fixtures = support::lines("events/eventrouter.jsonl");
    let bytes: usize = fixtures.iter().map(Vec::len).sum();
    let one_kib = one_kib_envelope(&fixtures);
    println!(
        "fixtures: {} envelopes, {} bytes on average; 1 KiB event: {} bytes",
        fixtures.len(),
        bytes / fixtures.len(),
        one_kib.len()
    );
    println!();
    println!("decode, ns per envelope (median of {BATCHES} batches):");
    println!("  {:<52} {:>9} {:>9}", "what", "ns/call", "MB/s");
    let row = |name: &str, per_call: Duration, bytes_per_call: f64| {
        println!(
            "  {:<52} {:>9.0} {:>9.0}",
            name,
            per_call.as_secs_f64() * 1e9,
            bytes_per_call / per_call.as_secs_f64() / 1e6
        );
    };
    let average = bytes as f64 / fixtures.len() as f64;
    row(
        "fanout::event::parse + into_event, fixtures",
        measure(&fixtures, decode),
        average,
    );
    let single = std::slice::from_ref(&one_kib);
    row(
        "fanout::event::parse + into_event, 1 KiB event",
        measure(single, decode),
        one_kib.len() as f64,
    );
    row(
        "serde_json::Value (for scale), fixtures",
        measure(&fixtures, |raw| {
            black_box(serde_json::from_slice::<serde_json::Value>(raw).unwrap());
        }),
        average,
    );
}

fn decode(raw: &[u8]) {
    let parsed = fanout::event::parse(black_box(raw)).unwrap();
    // `into_event` takes the bytes; the pipeline moves the record's own buffer in, so an
    // empty one here measures decoding, not a copy.
    black_box(parsed.into_event(Vec::new(), source()));
}

fn source() -> SourceRecord {
    SourceRecord {
        topic: String::new(),
        partition: 0,
        offset: 0,
        timestamp_ms: None,
        key: None,
        headers: vec![],
    }
}

/// The median over batches of the mean time per input.
fn measure(inputs: &[Vec<u8>], mut call: impl FnMut(&[u8])) -> Duration {
    let calls = (ROUNDS_PER_BATCH * 40 / inputs.len()).max(1);
    let mut batch = || {
        let started = Instant::now();
        for _ in 0..calls {
            for input in inputs {
                call(input);
            }
        }
        started.elapsed() / (calls * inputs.len()) as u32
    };
    batch(); // warm up
    let mut batches: Vec<Duration> = (0..BATCHES).map(|_| batch()).collect();
    batches.sort();
    batches[BATCHES / 2]
}

/// The route bench's event: a Warning fixture, its message padded to about 1 KiB.
fn one_kib_envelope(fixtures: &[Vec<u8>]) -> Vec<u8> {
    let line = fixtures
        .iter()
        .find(|l| l.windows(9).any(|w| w == b"\"Warning\""))
        .expect("a Warning event in the fixtures");
    let mut envelope: serde_json::Value = serde_json::from_slice(line).unwrap();
    let message = envelope["event"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let pad = 1024usize.saturating_sub(line.len());
    envelope["event"]["message"] = format!("{message}{}", " ".repeat(pad)).into();
    serde_json::to_vec(&envelope).unwrap()
}
