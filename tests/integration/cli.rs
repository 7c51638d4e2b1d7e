//! The `fanout` binary's own behaviour: `check`, standard input, plugin logs, exit codes.

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::support;

#[test]
fn check_reports_world_exports_and_timings() {
    let output = support::fanout()
        .arg("check")
        .arg(support::wasm("by_namespace"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("world:     fanout:router@0.2.0"), "{text}");
    assert!(
        text.contains("exports:   init, route") || text.contains("exports:   route, init"),
        "{text}"
    );
    assert!(text.contains("compile:"), "{text}");
    assert!(text.contains("init:      ok"), "{text}");
}

#[test]
fn check_refuses_an_unusable_plugin_with_a_clear_error() {
    let output = support::fanout()
        .arg("check")
        .arg(support::wasm("wrong_world"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("wrong_world.wasm: does not target the fanout:router world"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("does not target").count(),
        1,
        "said once: {stderr}"
    );
}

#[test]
fn route_fails_clearly_when_a_plugin_cannot_be_used() {
    let dir = support::plugin_set_dir(&["by_namespace", "future_version"], &[]);
    let output = support::fanout()
        .args(["route", "--input", "/dev/null", "--plugins"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("future_version.wasm: built against fanout:router@0.3.0"),
        "{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "nothing is routed by a refused set"
    );
}

#[test]
fn route_reads_standard_input_and_keeps_order() {
    let mut child = support::fanout()
        .args(["route", "--plugins"])
        .arg(support::wasm("by_namespace"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = support::lines("events/eventrouter.jsonl");
    let writer = std::thread::spawn(move || {
        // Many times the channel depth, to exercise backpressure between the threads.
        for _ in 0..20 {
            for line in &lines {
                stdin.write_all(line).unwrap();
                stdin.write_all(b"\n").unwrap();
            }
        }
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success());
    let results: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected = support::lines("events/eventrouter.jsonl").len() * 20;
    assert_eq!(results.len(), expected);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["line"], i + 1);
    }
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("{expected} lines:")),
        "a summary is logged: {stderr}"
    );
}

#[test]
fn plugin_logs_and_output_reach_the_host_log_tagged_with_the_plugin() {
    let event = r#"{"verb":"ADDED","event":{"metadata":{"namespace":"chaos"},"involvedObject":{"name":"x"},"reason":"HostileLog"}}"#;
    let mut child = support::fanout()
        .args(["route", "--log-level", "fanout=trace", "--plugins"])
        .arg(support::wasm("hostile"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{event}").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains(r#""topic":"ok.chaos""#),
        "plugin output is not routed output: {stdout}"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    for level in ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"] {
        let expected = format!("hostile log at {}", level.to_lowercase());
        assert!(
            stderr.lines().any(|l| l.contains(level)
                && l.contains(&expected)
                && l.contains(r#"plugin="hostile" stream="log""#)),
            "no {level} line from the plugin: {stderr}"
        );
    }
    assert!(
        stderr.contains(r#"wrote to stdout plugin="hostile" stream="stdout""#),
        "{stderr}"
    );
    assert!(
        stderr.contains(r#"wrote to stderr plugin="hostile" stream="stderr""#),
        "{stderr}"
    );
}

#[test]
fn invalid_flags_are_refused() {
    let output = support::fanout()
        .args(["route", "--plugins", "x", "--memory-limit-mib", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--memory-limit-mib"));
}

#[test]
fn mock_broker_outlives_its_clients_and_reports_its_address_in_the_port_file() {
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("bootstrap");
    let mut broker = support::fanout()
        .args([
            "mock-broker",
            "--brokers",
            "3",
            "--topic",
            "cluster-events:4",
        ])
        .arg("--port-file")
        .arg(&port_file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !port_file.exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no port file"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let bootstrap = std::fs::read_to_string(&port_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(bootstrap.split(',').count(), 3, "{bootstrap}");

    // A client that is not ours sees the topic, writes to it, and a second one reads it back.
    let metadata = Command::new("kcat")
        .args(["-b", &bootstrap, "-L", "-t", "cluster-events"])
        .output()
        .expect("kcat is installed by `make setup`");
    let listing = String::from_utf8_lossy(&metadata.stdout);
    assert!(
        listing.contains("topic \"cluster-events\" with 4 partitions"),
        "{listing}"
    );
    let mut produce = Command::new("kcat")
        .args(["-b", &bootstrap, "-P", "-t", "cluster-events", "-p", "0"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut produce.stdin.take().unwrap(), b"one\ntwo\n").unwrap();
    assert!(produce.wait().unwrap().success());
    let consume = Command::new("kcat")
        .args(["-b", &bootstrap, "-C", "-t", "cluster-events", "-p", "0"])
        .args(["-o", "beginning", "-e", "-q"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&consume.stdout), "one\ntwo\n");

    // SIGTERM stops it cleanly.
    Command::new("kill")
        .args(["-TERM", &broker.id().to_string()])
        .status()
        .unwrap();
    assert!(broker.wait().unwrap().success());

    // A bad topic spec is refused with the spec named.
    let refused = support::fanout()
        .args(["mock-broker", "--topic", "cluster-events"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--topic cluster-events: expected NAME:PARTITIONS"),
        "{stderr}"
    );
}

#[test]
fn a_new_plugin_project_passes_its_own_tests_out_of_the_box() {
    let parent = tempfile::tempdir().unwrap();
    let output = support::fanout()
        .args(["new", "team-router", "--dir"])
        .arg(parent.path())
        .arg("--sdk")
        .arg(support::root().join("guest-sdk"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let project = parent.path().join("team-router");
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "tests/route.rs",
        "sample/events.jsonl",
        "README.md",
    ] {
        assert!(project.join(file).is_file(), "{file} is missing");
    }

    // The project's own tests: native unit tests, then the component built and the samples
    // routed by this fanout binary. Dependencies are shared with other runs through the target
    // directory, so only the project itself compiles each time.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let test = Command::new(&cargo)
        .current_dir(&project)
        .arg("test")
        .env(
            "CARGO_TARGET_DIR",
            support::root().join("target/scaffold-test"),
        )
        .env("FANOUT", env!("CARGO_BIN_EXE_fanout"))
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(test.status.success(), "{log}");
    assert!(
        log.contains("routes_the_sample_events_to_their_namespaces"),
        "{log}"
    );

    // The other workflow, `cargo component build`, makes a component that routes the same.
    let component_target = support::root().join("target/scaffold-component");
    let build = Command::new(&cargo)
        .current_dir(&project)
        .args(["component", "build", "--release"])
        .env("CARGO_TARGET_DIR", &component_target)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "cargo component build (make setup installs cargo-component):\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let routed = support::fanout()
        .arg("route")
        .arg("--plugins")
        .arg(component_target.join("wasm32-wasip1/release/team_router.wasm"))
        .arg("--input")
        .arg(project.join("sample/events.jsonl"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&routed.stderr);
    assert!(routed.status.success(), "{stderr}");
    assert!(stderr.contains("8 lines: 8 routed (8 records)"), "{stderr}");

    // Creating it again refuses rather than overwrite; a bad name is refused with the rule.
    let again = support::fanout()
        .args(["new", "team-router", "--dir"])
        .arg(parent.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = support::fanout()
        .args(["new", "Team Router"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must start with a lowercase letter"));
}

#[test]
fn mock_broker_takes_fault_commands_on_standard_input_and_refuses_bad_ones() {
    use std::io::BufRead as _;
    let mut broker = support::fanout()
        .args(["mock-broker", "--brokers", "2", "--control", "stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut commands = broker.stdin.take().unwrap();
    let mut answers = std::io::BufReader::new(broker.stdout.take().unwrap()).lines();
    let banner = answers.next().unwrap().unwrap();
    assert!(
        banner.starts_with("mock Kafka cluster (2 brokers): "),
        "{banner}"
    );
    let mut ask = |command: &str| {
        writeln!(commands, "{command}").unwrap();
        answers.next().unwrap().unwrap()
    };
    for (command, answer) in [
        ("broker-down 2", "ok broker 2 down"),
        ("broker-up 2", "ok broker 2 up"),
        ("broker-down all", "ok every broker down"),
        ("broker-up all", "ok every broker up"),
        (
            "request-errors Produce 5 NOT_LEADER_FOR_PARTITION",
            "ok the next 5 Produce requests fail with NotLeaderForPartition",
        ),
        (
            "request-errors offsetcommit 3 COORDINATOR_NOT_AVAILABLE",
            "ok the next 3 OffsetCommit requests fail with CoordinatorNotAvailable",
        ),
        (
            "clear-request-errors Produce",
            "ok no more injected Produce errors",
        ),
        (
            "create-topic late 3",
            "ok topic late created with 3 partitions",
        ),
        // Refused, with what is wrong, and the broker carries on.
        ("broker-down 3", "error no broker 3: the brokers are 1 to 2"),
        (
            "request-errors Gossip 1 _TRANSPORT",
            "error unknown API \"Gossip\"",
        ),
        (
            "request-errors Produce 1 NO_SUCH_ERROR",
            "error unknown error \"NO_SUCH_ERROR\"",
        ),
        (
            "request-errors Produce 0 _TRANSPORT",
            "error COUNT \"0\" is not a number",
        ),
        ("create-topic bad/name 1", "error topic \"bad/name\""),
        ("broker-down", "error wrong arguments for broker-down"),
        ("reboot", "error unknown command \"reboot\""),
    ] {
        let got = ask(command);
        assert!(got.starts_with(answer), "{command:?}: {got:?}");
    }
    // The brokers still serve: a client that is not ours sees the topic made above.
    let bootstrap = banner.rsplit(' ').next().unwrap();
    let metadata = Command::new("kcat")
        .args(["-b", bootstrap, "-L", "-t", "late"])
        .output()
        .expect("kcat is installed by `make setup`");
    assert!(
        String::from_utf8_lossy(&metadata.stdout).contains("topic \"late\" with 3 partitions"),
        "{}",
        String::from_utf8_lossy(&metadata.stdout)
    );
    assert_eq!(ask("stop"), "ok stopping");
    assert!(broker.wait().unwrap().success());

    // The end of standard input stops it too, so it never outlives its driver.
    let mut orphan = support::fanout()
        .args(["mock-broker", "--control", "stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    drop(orphan.stdin.take());
    let started = std::time::Instant::now();
    while orphan.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "mock-broker did not stop at the end of its input"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(orphan.wait().unwrap().success());
}

/// The dry run refuses what `fanout run` refuses: by-namespace routes an event of namespace
/// `cluster-events` to the source topic, and one of `fanout-dead-letter` to the dead-letter
/// topic, both `topic-denied` in the service; and it reads the same variables naming them.
#[test]
fn route_refuses_the_services_source_and_dead_letter_topics() {
    let line = String::from_utf8(support::lines("events/eventrouter.jsonl").remove(0)).unwrap();
    let in_namespace = |ns: &str| {
        line.replace(
            r#""namespace":"checkout""#,
            &format!(r#""namespace":"{ns}""#),
        )
    };
    let input = [
        in_namespace("cluster-events"),
        in_namespace("fanout-dead-letter"),
        in_namespace("events-in"),
        in_namespace("checkout"),
    ]
    .join("\n");
    let run = |env: &[(&str, &str)]| -> Vec<serde_json::Value> {
        let mut command = support::fanout();
        command
            .args(["route", "--plugins"])
            .arg(support::wasm("by_namespace"))
            .env_remove("FANOUT_SOURCE_TOPIC")
            .env_remove("FANOUT_DEAD_LETTER_TOPIC")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let denied = |result: &serde_json::Value| {
        result["dead_letter"]
            .as_str()
            .is_some_and(|reason| reason.starts_with("topic-denied: "))
    };

    let defaults = run(&[]);
    assert_eq!(defaults.len(), 4);
    assert!(denied(&defaults[0]), "the source topic: {}", defaults[0]);
    assert!(
        defaults[0]["dead_letter"]
            .as_str()
            .unwrap()
            .contains("source topic"),
        "{}",
        defaults[0]
    );
    assert!(
        denied(&defaults[1]),
        "the dead-letter topic: {}",
        defaults[1]
    );
    assert!(defaults[2]["dead_letter"].is_null(), "{}", defaults[2]);
    assert!(defaults[3]["dead_letter"].is_null(), "{}", defaults[3]);

    // The service's variables move the reservations with them.
    let renamed = run(&[
        ("FANOUT_SOURCE_TOPIC", "events-in"),
        ("FANOUT_DEAD_LETTER_TOPIC", "checkout"),
    ]);
    assert!(renamed[0]["dead_letter"].is_null(), "{}", renamed[0]);
    assert!(renamed[1]["dead_letter"].is_null(), "{}", renamed[1]);
    assert!(denied(&renamed[2]), "{}", renamed[2]);
    assert!(denied(&renamed[3]), "{}", renamed[3]);
}
