//! Hostile plugins: each attack is followed by a normal event that must still route, proving the
//! instance was contained and, after a trap, replaced.

use std::time::{Duration, Instant};

use fanout::deadletter::DeadLetterReason;
use fanout::plugin::{Outcome, Router, RuntimeLimits};

use crate::support;

const NORMAL: &str = r#"{"verb":"ADDED","event":{"metadata":{"name":"api-0.1","namespace":"chaos","uid":"n1"},"involvedObject":{"kind":"Pod","namespace":"chaos","name":"api-0","uid":"p1","apiVersion":"v1"},"reason":"Started","message":"Started container api","source":{"component":"kubelet","host":"node-1"},"firstTimestamp":"2026-11-20T08:15:02Z","lastTimestamp":"2026-11-20T08:15:02Z","count":1,"type":"Normal","eventTime":null,"reportingComponent":""}}"#;

fn attack(reason: &str) -> Vec<u8> {
    NORMAL
        .replace(r#""reason":"Started""#, &format!(r#""reason":"{reason}""#))
        .into_bytes()
}

/// Held by the tests that make this process's memory jump (memory bombs) and by the one that
/// measures it, so that the measurement sees its own call only.
static MEMORY_HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn hostile_router() -> Router {
    support::router(&support::engine(), &["hostile"], &[])
}

/// Routes `attack`, returns its outcome, and checks the next normal event routes to `ok.chaos`.
fn attack_then_normal(router: &mut Router, reason: &str) -> Outcome {
    let outcome = router.route(&support::event(&attack(reason)));
    let normal = router.route(&support::event(NORMAL.as_bytes()));
    match &normal {
        Outcome::Routed(d) if d.len() == 1 && d[0].topic == "ok.chaos" => {}
        other => panic!("after {reason}, a normal event routed to {other:?}"),
    }
    outcome
}

fn dead_letter(outcome: Outcome) -> DeadLetterReason {
    match outcome {
        Outcome::DeadLetter { reason, plugin } => {
            assert_eq!(
                plugin.as_deref(),
                Some("hostile"),
                "the dead letter names the plugin"
            );
            reason
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }
}

#[test]
fn infinite_loop_times_out_at_the_deadline() {
    let mut router = hostile_router();
    let started = Instant::now();
    let reason = dead_letter(attack_then_normal(&mut router, "HostileLoop"));
    assert_eq!(
        reason,
        DeadLetterReason::PluginTimeout(Duration::from_millis(100))
    );
    // Not a speed assertion: a loop that was never interrupted would not return at all.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn memory_bomb_is_capped() {
    let _alone = MEMORY_HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    // A generous deadline: on a loaded machine, filling 64 MiB can take longer than the default
    // 100 ms, and this test is about the memory cap, not the clock.
    let limits = RuntimeLimits {
        call_deadline: Duration::from_secs(10),
        ..RuntimeLimits::default()
    };
    let mut router = support::router(&support::engine_with(limits), &["hostile"], &[]);
    let reason = dead_letter(attack_then_normal(&mut router, "HostileMemoryBomb"));
    assert_eq!(
        reason.to_string(),
        "plugin-trap: memory limit of 64 MiB exceeded"
    );
}

#[test]
fn memory_cap_is_configurable() {
    let _alone = MEMORY_HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let limits = RuntimeLimits {
        memory_bytes: 16 << 20,
        call_deadline: Duration::from_secs(10),
        ..RuntimeLimits::default()
    };
    let mut router = support::router(&support::engine_with(limits), &["hostile"], &[]);
    let reason = dead_letter(attack_then_normal(&mut router, "HostileMemoryBomb"));
    assert_eq!(
        reason.to_string(),
        "plugin-trap: memory limit of 16 MiB exceeded"
    );
}

#[test]
fn unbounded_recursion_traps_with_stack_overflow() {
    let mut router = hostile_router();
    let reason = dead_letter(attack_then_normal(&mut router, "HostileRecursion"));
    assert_eq!(reason.kind(), "plugin-trap");
    assert!(
        reason.to_string().contains("call stack exhausted"),
        "{reason}"
    );
}

#[test]
fn explicit_trap_is_a_plugin_trap() {
    let mut router = hostile_router();
    let reason = dead_letter(attack_then_normal(&mut router, "HostileTrap"));
    assert_eq!(reason.kind(), "plugin-trap");
    assert!(reason.to_string().contains("unreachable"), "{reason}");
}

#[test]
fn plugin_error_carries_its_message() {
    let mut router = hostile_router();
    let reason = dead_letter(attack_then_normal(&mut router, "HostileErr"));
    assert_eq!(
        reason.to_string(),
        "plugin-error: rejected by hostile plugin"
    );
}

#[test]
fn ten_thousand_destinations_are_refused() {
    let mut router = hostile_router();
    let reason = dead_letter(attack_then_normal(&mut router, "HostileFlood"));
    assert_eq!(
        reason,
        DeadLetterReason::TooManyDestinations {
            count: 10_000,
            limit: 64
        }
    );
}

#[test]
fn illegal_and_internal_topics_are_refused() {
    let mut router = hostile_router();
    for (attack, kind, detail) in [
        (
            "HostileBadTopic",
            "invalid-topic",
            "has characters outside [a-zA-Z0-9._-]",
        ),
        ("HostileDotTopic", "invalid-topic", "is `.` or `..`"),
        (
            "HostileLongTopic",
            "invalid-topic",
            "is longer than 249 characters",
        ),
        ("HostileEmptyTopic", "invalid-topic", "is empty"),
        ("HostileInternalTopic", "topic-denied", "internal topic"),
    ] {
        let reason = dead_letter(attack_then_normal(&mut router, attack));
        assert_eq!(reason.kind(), kind, "{attack}: {reason}");
        assert!(reason.to_string().contains(detail), "{attack}: {reason}");
    }
}

#[test]
fn oversized_payload_is_refused() {
    // Building and copying 2 MiB took over the 100 ms default deadline on two loaded cores; the
    // deadline is not what this checks.
    let engine = support::engine_with(RuntimeLimits {
        call_deadline: Duration::from_secs(5),
        ..RuntimeLimits::default()
    });
    let mut router = support::router(&engine, &["hostile"], &[]);
    let reason = dead_letter(attack_then_normal(&mut router, "HostileHugePayload"));
    assert_eq!(reason.kind(), "record-too-large", "{reason}");
}

#[test]
fn file_and_environment_access_is_denied() {
    // The host process has an environment and /etc/passwd exists; the plugin must see neither.
    assert!(std::path::Path::new("/etc/passwd").exists());
    assert!(std::env::vars().next().is_some());
    let mut router = hostile_router();
    let reason = dead_letter(attack_then_normal(&mut router, "HostileReadFile"));
    assert_eq!(reason.kind(), "plugin-error", "{reason}");
    assert!(
        reason.to_string().contains("file access denied"),
        "{reason}"
    );
    let reason = dead_letter(attack_then_normal(&mut router, "HostileReadEnv"));
    assert_eq!(reason.kind(), "plugin-error", "{reason}");
    assert!(
        reason.to_string().contains("environment is empty"),
        "{reason}"
    );
}

#[test]
fn attacks_in_a_row_each_get_a_fresh_instance() {
    let _alone = MEMORY_HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let mut router = hostile_router();
    for _ in 0..3 {
        for attack in [
            "HostileTrap",
            "HostileRecursion",
            "HostileLoop",
            "HostileMemoryBomb",
        ] {
            let reason = dead_letter(attack_then_normal(&mut router, attack));
            assert!(
                matches!(reason.kind(), "plugin-trap" | "plugin-timeout"),
                "{reason}"
            );
        }
    }
}

#[test]
fn every_attack_in_the_fixture_is_contained_by_the_binary() {
    // The same attacks end to end through `fanout route`, on its dedicated routing thread.
    let input = support::fixture("events/hostile.jsonl");
    let plugin = support::wasm("hostile").display().to_string();
    let results = crate::by_namespace::route(&["--plugins", &plugin], &input);
    let lines = support::lines("events/hostile.jsonl");
    assert_eq!(results.len(), lines.len());
    let mut attacks = 0;
    for (line, result) in lines.iter().zip(&results) {
        let envelope: serde_json::Value = serde_json::from_slice(line).unwrap();
        let reason = envelope["event"]["reason"].as_str().unwrap();
        if reason.starts_with("Hostile") && !["HostileLog", "HostileLogFlood"].contains(&reason) {
            attacks += 1;
            assert!(
                result["dead_letter"].is_string(),
                "{reason} was not contained: {result}"
            );
            assert_eq!(result["destinations"], serde_json::json!([]), "{reason}");
        } else {
            assert_eq!(
                result["dead_letter"],
                serde_json::Value::Null,
                "{reason}: {result}"
            );
            assert_eq!(
                result["destinations"][0]["topic"], "ok.chaos",
                "{reason}: {result}"
            );
        }
    }
    assert!(attacks >= 19, "the fixture covers every attack ({attacks})");
}

/// Routes `reason` under `deadline`, checks it is a `plugin-timeout` that came back within twice
/// the deadline, and that the next normal event routes (a fresh instance).
fn times_out_within_twice_the_deadline(reason: &str, deadline: Duration) {
    let engine = support::engine_with(RuntimeLimits {
        call_deadline: deadline,
        ..RuntimeLimits::default()
    });
    let mut router = support::router(&engine, &["hostile"], &[]);
    let started = Instant::now();
    let outcome = router.route(&support::event(&attack(reason)));
    let took = started.elapsed();
    assert_eq!(
        dead_letter(outcome),
        DeadLetterReason::PluginTimeout(deadline),
        "{reason}"
    );
    assert!(
        took < deadline * 2,
        "{reason} held the routing thread for {took:?}, deadline {deadline:?}"
    );
    let normal = router.route(&support::event(NORMAL.as_bytes()));
    assert!(
        matches!(&normal, Outcome::Routed(d) if d.len() == 1 && d[0].topic == "ok.chaos"),
        "after {reason}: {normal:?}"
    );
}

#[test]
fn a_sleep_in_a_host_call_is_abandoned_at_the_deadline() {
    times_out_within_twice_the_deadline("HostileSleep", Duration::from_millis(200));
}

#[test]
fn an_endless_sleep_is_abandoned_at_the_deadline() {
    times_out_within_twice_the_deadline("HostileSleepForever", Duration::from_millis(200));
}

#[test]
fn a_loop_of_short_waits_is_stopped_at_the_deadline() {
    times_out_within_twice_the_deadline("HostilePollLoop", Duration::from_millis(200));
}

#[test]
fn every_blocking_attack_in_a_row_gets_a_fresh_instance() {
    let deadline = Duration::from_millis(200);
    let engine = support::engine_with(RuntimeLimits {
        call_deadline: deadline,
        ..RuntimeLimits::default()
    });
    let mut router = support::router(&engine, &["hostile"], &[]);
    for _ in 0..2 {
        for attack in [
            "HostileSleep",
            "HostileSleepForever",
            "HostilePollLoop",
            "HostileLoop",
        ] {
            let started = Instant::now();
            let reason = dead_letter(attack_then_normal(&mut router, attack));
            assert_eq!(
                reason,
                DeadLetterReason::PluginTimeout(deadline),
                "{attack}"
            );
            // The attack and the normal event after it.
            assert!(
                started.elapsed() < deadline * 2 + Duration::from_secs(1),
                "{attack}"
            );
        }
    }
}

#[test]
fn a_blocking_read_of_stdin_has_nothing_to_wait_for() {
    // stdin is not granted: it is a closed stream, so a blocking read ends at once with end of
    // file (`Ok(0)`), and the plugin's own error says so.
    let mut router = hostile_router();
    let started = Instant::now();
    let reason = dead_letter(attack_then_normal(&mut router, "HostileStdinRead"));
    assert_eq!(reason.to_string(), "plugin-error: stdin read: Ok(0)");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// This process's resident set size and its peak, in KiB, from `/proc/self/status`.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn aliased_payloads_do_not_multiply_in_host_memory() {
    // 64 destinations whose payloads are all one 32 MiB buffer of the plugin's: 2 GiB if the
    // host copied each before checking sizes. (wasmtime's own "hostcall fuel" stops a lift at
    // 128 MiB of copies with a trap; before this check the bomb cost that much per call and
    // per routing thread, and a fresh instance.) The host now reads the lengths first.
    let _alone = MEMORY_HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let engine = support::engine_with(RuntimeLimits {
        call_deadline: Duration::from_secs(10),
        ..RuntimeLimits::default()
    });
    let mut router = support::router(&engine, &["hostile"], &[]);
    let bomb = String::from_utf8(attack("HostileAliasBomb"))
        .unwrap()
        .replace(r#""count":1"#, r#""count":64"#);
    assert!(bomb.contains(r#""count":64"#));
    let expected = DeadLetterReason::RecordTooLarge {
        topic: "ok.alias".into(),
        bytes: 32 << 20,
        limit: 1_000_000,
    };
    // The first bomb makes the plugin allocate its 32 MiB buffer, which it keeps; an instance
    // whose answer was refused is kept too. The second one then measures the host alone.
    assert_eq!(
        dead_letter(router.route(&support::event(bomb.as_bytes()))),
        expected
    );
    // Resets the peak (VmHWM) to the current RSS (Linux 4.0+).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let (before, _) = rss_kib();
    let outcome = router.route(&support::event(bomb.as_bytes()));
    let (_, peak) = rss_kib();
    assert_eq!(dead_letter(outcome), expected);
    // Next to nothing: a copying host would add 128 MiB (the hostcall fuel) or 2 GiB.
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!("alias bomb: the host's peak RSS grew by {growth_mib} MiB");
    assert!(growth_mib < 48, "host peak grew by {growth_mib} MiB");
    let normal = router.route(&support::event(NORMAL.as_bytes()));
    assert!(matches!(normal, Outcome::Routed(_)), "{normal:?}");
}
