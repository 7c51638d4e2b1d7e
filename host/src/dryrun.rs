//! `fanout route`: the pipeline's decode → route → validate flow over a file, with no Kafka.
//!
//! Each input line is treated as one record of `cluster-events` (partition 0, offset = line - 1)
//! with the key EventRouter would give it (`involvedObject.name`). Output is one JSON object per
//! line, in input order. Routing runs on its own thread, as in the service, with a reader thread
//! in front and the caller writing results behind, all joined by bounded channels.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use anyhow::Context as _;
use serde::Serialize;

use crate::bindings::{Destination, SourceRecord};
use crate::deadletter::DeadLetterReason;
use crate::event;
use crate::plugin::{Outcome, PluginEngine, Router, SharedSet};

/// The source topic a dry run pretends to read.
pub const DRY_RUN_TOPIC: &str = "cluster-events";

/// Lines in flight between the threads; bounds memory on any input size.
const CHANNEL_DEPTH: usize = 256;

/// Counts of a dry run's outcomes, printed at the end.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub lines: u64,
    pub routed: u64,
    pub filtered: u64,
    pub records: u64,
    /// Dead letters by reason kind.
    pub dead_letters: BTreeMap<&'static str, u64>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} lines: {} routed ({} records), {} filtered, {} dead-lettered",
            self.lines,
            self.routed,
            self.records,
            self.filtered,
            self.dead_letters.values().sum::<u64>()
        )?;
        for (kind, n) in &self.dead_letters {
            write!(f, "; {kind}: {n}")?;
        }
        Ok(())
    }
}

/// One output line of `fanout route`.
#[derive(Debug, Serialize)]
struct LineResult {
    line: u64,
    destinations: Vec<DestinationView>,
    dead_letter: Option<String>,
}

#[derive(Debug, Serialize)]
struct DestinationView {
    topic: String,
    /// The key that would be written: the destination's own, else the source record's.
    key: Option<String>,
    headers: BTreeMap<String, Option<String>>,
    /// `None` when the source bytes are forwarded unchanged.
    payload: Option<String>,
}

/// Routes every line of `input` and writes one JSON result per line to `output`.
pub fn run(
    engine: PluginEngine,
    set: SharedSet,
    input: Box<dyn BufRead + Send>,
    output: &mut dyn Write,
) -> anyhow::Result<Summary> {
    let (line_tx, line_rx) = sync_channel::<(u64, Vec<u8>)>(CHANNEL_DEPTH);
    let (result_tx, result_rx) = sync_channel::<(String, LineOutcome)>(CHANNEL_DEPTH);

    let reader = std::thread::Builder::new()
        .name("fanout-read".into())
        .spawn(move || read_lines(input, line_tx))
        .context("starting the reader thread")?;
    let worker = std::thread::Builder::new()
        .name("fanout-route-0".into())
        .spawn(move || route_lines(Router::new(engine, set), line_rx, result_tx))
        .context("starting the routing thread")?;

    let mut summary = Summary::default();
    for (json, outcome) in result_rx {
        summary.lines += 1;
        match outcome {
            LineOutcome::Routed(n) => {
                summary.routed += 1;
                summary.records += n as u64;
            }
            LineOutcome::Filtered => summary.filtered += 1,
            LineOutcome::DeadLetter(kind) => *summary.dead_letters.entry(kind).or_default() += 1,
        }
        writeln!(output, "{json}").context("writing results")?;
    }
    output.flush().context("writing results")?;

    worker
        .join()
        .map_err(|_| anyhow::anyhow!("the routing thread panicked"))?;
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))?
        .context("reading input")?;
    Ok(summary)
}

enum LineOutcome {
    Routed(usize),
    Filtered,
    DeadLetter(&'static str),
}

fn read_lines(
    mut input: Box<dyn BufRead + Send>,
    tx: SyncSender<(u64, Vec<u8>)>,
) -> std::io::Result<()> {
    let mut line_no = 0;
    loop {
        // Lines are bytes, not strings: invalid UTF-8 must reach the decoder and be dead-lettered
        // like any other malformed record.
        let mut line = Vec::new();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        line_no += 1;
        if tx.send((line_no, line)).is_err() {
            return Ok(()); // the router stopped; its error is reported by the caller
        }
    }
}

fn route_lines(
    mut router: Router,
    lines: Receiver<(u64, Vec<u8>)>,
    results: SyncSender<(String, LineOutcome)>,
) {
    for (line_no, raw) in lines {
        let (result, outcome) = route_line(&mut router, line_no, raw);
        let json = serde_json::to_string(&result).expect("a LineResult always serializes");
        if results.send((json, outcome)).is_err() {
            return;
        }
    }
}

fn route_line(router: &mut Router, line_no: u64, raw: Vec<u8>) -> (LineResult, LineOutcome) {
    let dead = |reason: DeadLetterReason| {
        let kind = reason.kind();
        let result = LineResult {
            line: line_no,
            destinations: Vec::new(),
            dead_letter: Some(reason.to_string()),
        };
        (result, LineOutcome::DeadLetter(kind))
    };
    let parsed = match event::parse(&raw) {
        Ok(parsed) => parsed,
        Err(e) => return dead(DeadLetterReason::MalformedEvent(e.to_string())),
    };
    let key = Some(parsed.involved_object_name())
        .filter(|name| !name.is_empty())
        .map(|name| name.as_bytes().to_vec());
    let source = SourceRecord {
        topic: DRY_RUN_TOPIC.into(),
        partition: 0,
        offset: line_no as i64 - 1,
        timestamp_ms: None,
        key,
        headers: Vec::new(),
    };
    let event = std::sync::Arc::new(parsed.into_event(raw, source));
    match router.route(&event) {
        Outcome::Routed(destinations) => {
            let n = destinations.len();
            let views = destinations
                .into_iter()
                .map(|d| view(d, event.source.key.as_deref()))
                .collect();
            let result = LineResult {
                line: line_no,
                destinations: views,
                dead_letter: None,
            };
            (result, LineOutcome::Routed(n))
        }
        Outcome::Filtered => (
            LineResult {
                line: line_no,
                destinations: Vec::new(),
                dead_letter: None,
            },
            LineOutcome::Filtered,
        ),
        Outcome::DeadLetter { reason, .. } => dead(reason),
    }
}

fn view(d: Destination, source_key: Option<&[u8]>) -> DestinationView {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    DestinationView {
        key: d.key.as_deref().or(source_key).map(text),
        headers: d
            .headers
            .into_iter()
            .map(|h| (h.key, h.value.as_deref().map(text)))
            .collect(),
        payload: d.payload.as_deref().map(text),
        topic: d.topic,
    }
}
