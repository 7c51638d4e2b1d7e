//! Poison envelopes (`tests/fixtures/events/poison.jsonl`): real-shaped EventRouter envelopes
//! that strict parsers refuse or read differently from fanout, in fields fanout does not
//! extract. Each must be a `malformed-event` dead letter that names what is wrong and at which
//! byte, through `fanout route` and through `fanout run` on the mock cluster, without holding
//! up the events behind it. And what fanout accepts, Go's `encoding/json` must accept and read
//! the same way: a small Go program (`tests/go/envelope-verdict`) gives Go's verdict on every
//! fixture.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::by_namespace::route;
use crate::kafka::{self, DEAD_LETTER, SOURCE};
use crate::service::{Service, wait_for_count};
use crate::support;

/// What each line of poison.jsonl must be refused for (a part of its reason).
const POISON: [&str; 18] = [
    "invalid UTF-8 at byte 258",
    "invalid UTF-8 at byte 918",
    "invalid UTF-8 at byte 251",
    "invalid UTF-8 at byte 722",
    "lone surrogate in a \\u escape at byte",
    "lone surrogate in a \\u escape at byte",
    "lone surrogate in a \\u escape at byte",
    "number out of range at byte",
    "number out of range at byte",
    "number out of range at byte",
    "duplicate key `example.net/owner` at byte",
    "duplicate key `action` (Go's encoding/json compares these keys ignoring case) at byte",
    "key `Namespace` is not `namespace`, but Go's encoding/json reads it as `namespace` at byte",
    "key `NameSpace` is not `namespace`",
    "key `name\u{17f}pace` is not `namespace`",
    "key `\u{212a}ind` is not `kind`",
    "key `NAMESPACE` is not `namespace`",
    "nesting deeper than 127 levels at byte",
];

fn poison() -> Vec<Vec<u8>> {
    let lines = support::lines("events/poison.jsonl");
    assert_eq!(lines.len(), POISON.len(), "one expected reason per line");
    lines
}

#[test]
fn poison_envelopes_are_malformed_events_naming_what_and_where_in_fanout_route() {
    let results = route(
        &[
            "--plugins",
            &support::wasm("by_namespace").display().to_string(),
        ],
        &support::fixture("events/poison.jsonl"),
    );
    assert_eq!(results.len(), POISON.len());
    for (i, (result, expected)) in results.iter().zip(POISON).enumerate() {
        let reason = result["dead_letter"]
            .as_str()
            .unwrap_or_else(|| panic!("line {} was not dead-lettered: {result}", i + 1));
        assert!(
            reason.starts_with("malformed-event: ") && reason.contains(expected),
            "line {}: {reason:?} should mention {expected:?}",
            i + 1
        );
        assert_eq!(result["destinations"], serde_json::json!([]), "{result}");
    }
}

#[test]
fn poison_envelopes_are_dead_lettered_by_fanout_run_and_the_events_behind_them_route() {
    // The poison first, then every EventRouter fixture: the same partitions carry both, so a
    // poison envelope that stalled its partition would hold up the fixtures behind it.
    let key = |line: &[u8]| {
        let text = String::from_utf8_lossy(line);
        let name = text.split(r#""involvedObject":{"#).nth(1)?;
        let name = name.split(r#""name":""#).nth(1)?;
        Some(name.split('"').next()?.as_bytes().to_vec())
    };
    let records: Vec<kafka::SourceRecord> = poison()
        .into_iter()
        .chain(support::lines("events/eventrouter.jsonl"))
        .map(|value| kafka::SourceRecord {
            key: key(&value),
            value,
        })
        .collect();
    let kafka = kafka::start_kafka(2, &records);
    let bootstrap = kafka.bootstrap_servers();
    let topics = kafka::output_topics(&records);
    let plugins = support::plugin_set_dir(&["by_namespace"], &[]);
    let service = Service::replica(&bootstrap, "poison", plugins.path());
    kafka::produce(&bootstrap, SOURCE, &records);
    wait_for_count(&bootstrap, &topics, records.len(), Duration::from_secs(120));

    let received = kafka::read_all(&bootstrap, &topics, records.len(), Duration::from_secs(30));
    let dead: BTreeMap<&[u8], &kafka::Received> = received
        .iter()
        .filter(|r| r.topic == DEAD_LETTER)
        .map(|r| (r.value.as_slice(), r))
        .collect();
    for (i, (line, expected)) in poison().iter().zip(POISON).enumerate() {
        let record = dead
            .get(line.as_slice())
            .unwrap_or_else(|| panic!("poison line {} is not in {DEAD_LETTER}", i + 1));
        let reason = &record.headers["fanout-reason"];
        assert!(
            reason.starts_with("malformed-event: ") && reason.contains(expected),
            "line {}: fanout-reason {reason:?} should mention {expected:?}",
            i + 1
        );
        assert_eq!(record.key, key(line), "the key is kept");
    }
    for record in &records[POISON.len()..] {
        let expected = kafka::expected(record);
        let found = received.iter().any(|r| {
            r.value == record.value
                && match &expected {
                    kafka::Expected::Topic(t) => &r.topic == t,
                    kafka::Expected::DeadLetter(_) => r.topic == DEAD_LETTER,
                }
        });
        assert!(
            found,
            "a fixture behind the poison did not arrive: {expected:?}"
        );
    }
    assert_eq!(received.len(), records.len(), "nothing written twice");
    let (status, log) = service.terminate();
    assert!(status.success(), "{log}");
}

/// Go's reading of one envelope (see tests/go/envelope-verdict/main.go).
#[derive(Debug, serde::Deserialize)]
struct GoVerdict {
    valid: bool,
    #[serde(rename = "struct")]
    struct_error: String,
    #[serde(rename = "any")]
    any_error: String,
    utf8: bool,
    #[serde(default)]
    verb: String,
    has_event: bool,
    namespace: String,
    name: String,
    kind: String,
    object: String,
    object_namespace: String,
    reason: String,
    message: String,
    count: i32,
}

fn source() -> fanout::bindings::SourceRecord {
    fanout::bindings::SourceRecord {
        topic: SOURCE.into(),
        partition: 0,
        offset: 0,
        timestamp_ms: None,
        key: None,
        headers: vec![],
    }
}

/// The `go` command: on `PATH`, or where Go's installer puts it.
fn go() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("go"))
            .find(|go| go.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/local/go/bin/go")).filter(|go| go.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "this test compares fanout's verdicts with Go's encoding/json and needs the `go` \
                 command (1.19 or later; `make setup` installs Debian's golang-go): none on PATH \
                 or at /usr/local/go/bin/go"
            )
        })
}

/// Go's verdict on each input, from one `go run` (its build cache outside the work tree).
fn go_verdicts(inputs: &[Vec<u8>]) -> Vec<GoVerdict> {
    let cache = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/fanout/go"))
        .unwrap_or_else(|| support::root().join("target/go"));
    let mut child = Command::new(go())
        .args(["run", ".", "-nul"])
        .current_dir(support::root().join("tests/go/envelope-verdict"))
        .env("GOCACHE", cache.join("build"))
        .env("GOPATH", cache.join("path"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GOTELEMETRY", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for input in inputs {
        assert!(!input.contains(&0), "inputs are NUL-separated");
        stdin.write_all(input).unwrap();
        stdin.write_all(&[0]).unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "go run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verdicts: Vec<GoVerdict> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(verdicts.len(), inputs.len());
    verdicts
}

#[test]
fn what_fanout_accepts_go_accepts_and_reads_the_same_way() {
    let mut inputs = Vec::new();
    for file in ["eventrouter", "hostile", "malformed", "poison"] {
        for line in support::lines(&format!("events/{file}.jsonl")) {
            inputs.push((file, line));
        }
    }
    let lines: Vec<Vec<u8>> = inputs.iter().map(|(_, l)| l.clone()).collect();
    let verdicts = go_verdicts(&lines);
    let mut accepted = 0;
    for ((file, input), go) in inputs.iter().zip(&verdicts) {
        let shown = String::from_utf8_lossy(input);
        let shown = &shown[..shown.len().min(200)];
        let Ok(parsed) = fanout::event::parse(input) else {
            continue;
        };
        accepted += 1;
        assert!(*file != "poison", "fanout accepted poison: {shown}");
        let event = parsed.into_event(input.clone(), source());
        assert!(go.valid, "json.Valid refuses what fanout accepted: {shown}");
        assert_eq!(go.struct_error, "", "{shown}");
        assert_eq!(go.any_error, "", "{shown}");
        assert!(go.utf8, "Go would replace bytes of {shown}");
        let verb = match event.verb {
            fanout::bindings::Verb::Added => "ADDED",
            fanout::bindings::Verb::Updated => "UPDATED",
        };
        assert!(go.has_event, "{shown}");
        let fanout_reads = (
            verb,
            event.namespace(),
            event.name(),
            event.involved_object().kind,
            event.involved_object_name(),
            event.involved_object().namespace,
            event.reason(),
            event.message(),
            event.count,
        );
        let go_reads = (
            go.verb.as_str(),
            go.namespace.as_str(),
            go.name.as_str(),
            go.kind.clone(),
            go.object.as_str(),
            go.object_namespace.clone(),
            go.reason.as_str(),
            go.message.as_str(),
            go.count,
        );
        assert_eq!(fanout_reads, go_reads, "Go reads {shown} otherwise");
    }
    // Every valid fixture, and the malformed file's last line (valid JSON, refused later).
    let valid = support::lines("events/eventrouter.jsonl").len()
        + support::lines("events/hostile.jsonl").len();
    assert_eq!(accepted, valid + 1);
    // Go itself is laxer: it accepts most poison, replacing what is not UTF-8 or a surrogate.
    let poison_go_accepts = verdicts[verdicts.len() - POISON.len()..]
        .iter()
        .filter(|v| v.valid && v.struct_error.is_empty())
        .count();
    assert_eq!(
        poison_go_accepts,
        POISON.len() - 1,
        "only -1e400 in old_event.count is refused"
    );
}
