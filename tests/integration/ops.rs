//! The operations endpoint of a real `fanout run` process: `/metrics` against what the test
//! produced, `/readyz` before and after plugins load, `/status`, `fanout config check`, and
//! secrets kept out of all of them and of the logs.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::kafka::{self, DEAD_LETTER, Expected, SOURCE};
use crate::reload::wait_until;
use crate::service::{Service, wait_for_count};
use crate::support;

/// A plain HTTP/1.0 GET: (status code, body).
pub fn get(addr: &str, path: &str) -> (u16, String) {
    get_with(addr, path, "")
}

/// [`get`] with more header lines (each ending in `\r\n`).
pub fn get_with(addr: &str, path: &str, headers: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

/// The endpoint's address, from the service's log.
pub fn endpoint(service: &Service) -> String {
    let line = service.log_line("HTTP endpoint listening", Duration::from_secs(30));
    let addr = line.split("addr=").nth(1).unwrap();
    addr.split_whitespace().next().unwrap().to_owned()
}

/// Samples of the exposition: `name{labels}` → value.
pub fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn metrics_count_exactly_what_was_consumed_routed_and_dead_lettered() {
    let source = kafka::workload(3_000, 5);
    let kafka = kafka::start_kafka(4, &source);
    let bootstrap = kafka.bootstrap_servers();
    let topics = kafka::output_topics(&source);
    let plugins = support::plugin_set_dir(&["by_namespace"], &[]);
    let service = Service::replica(&bootstrap, "metrics", plugins.path());
    let addr = endpoint(&service);
    kafka::produce(&bootstrap, SOURCE, &source);
    wait_for_count(&bootstrap, &topics, source.len(), Duration::from_secs(120));

    let mut routed: BTreeMap<String, u64> = BTreeMap::new();
    let mut dead: BTreeMap<&str, u64> = BTreeMap::new();
    for record in &source {
        match kafka::expected(record) {
            Expected::Topic(topic) => *routed.entry(topic).or_default() += 1,
            Expected::DeadLetter(reason) => *dead.entry(reason).or_default() += 1,
        }
    }
    let malformed = dead.get("malformed-event").copied().unwrap_or(0);
    // Counters move a moment after the broker confirms; wait for the last acknowledgement.
    let total = source.len() as f64;
    let mut metrics = BTreeMap::new();
    wait_until("all events acknowledged", Duration::from_secs(30), || {
        metrics = samples(&get(&addr, "/metrics").1);
        metrics.get("fanout_events_acknowledged_total") == Some(&total)
    });
    assert_eq!(metrics["fanout_events_consumed_total"], total);
    assert_eq!(
        metrics["fanout_events_routed_total"],
        routed.values().sum::<u64>() as f64
    );
    assert_eq!(metrics["fanout_events_filtered_total"], 0.0);
    for (topic, n) in &routed {
        assert_eq!(
            metrics[&format!("fanout_records_produced_total{{topic=\"{topic}\"}}")],
            *n as f64,
            "{topic}"
        );
    }
    for (reason, n) in &dead {
        assert_eq!(
            metrics[&format!("fanout_dead_letters_total{{reason=\"{reason}\"}}")],
            *n as f64,
            "{reason}"
        );
    }
    assert_eq!(
        metrics["fanout_dead_letters_written_total"],
        dead.values().sum::<u64>() as f64
    );
    // Every well-formed event was one call of the plugin.
    assert_eq!(
        metrics["fanout_plugin_call_seconds_count{plugin=\"by_namespace\"}"],
        total - malformed as f64
    );
    assert_eq!(metrics["fanout_in_flight_events"], 0.0);
    assert_eq!(metrics["fanout_ready"], 1.0);
    assert_eq!(metrics["fanout_plugin_reloads_total"], 0.0);
    assert_eq!(metrics["fanout_commit_failures_total"], 0.0);
    // Lag is librdkafka's statistics (every `statistics.interval.ms`), so it reaches 0 one
    // report after the last commit: on a loaded machine that came after the counters (a full run
    // saw partition 0 still at 541). It must reach 0, and stay a partition-wise figure.
    let lag = |metrics: &BTreeMap<String, f64>| -> f64 {
        metrics
            .iter()
            .filter(|(k, _)| k.starts_with("fanout_consumer_lag{"))
            .map(|(_, v)| v)
            .sum()
    };
    wait_until(
        "the reported lag reaches 0",
        Duration::from_secs(30),
        || {
            metrics = samples(&get(&addr, "/metrics").1);
            lag(&metrics) == 0.0
        },
    );
    assert!(
        metrics
            .keys()
            .any(|k| k.starts_with("fanout_consumer_lag{partition=")),
        "{metrics:?}"
    );

    let (code, status) = get(&addr, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["routing"], "plugins");
    assert_eq!(status["ready"], serde_json::json!([]));
    let version = status["plugins"]["version"].as_str().unwrap();
    assert_eq!(
        metrics[&format!("fanout_plugin_set_info{{version=\"{version}\"}}")],
        1.0
    );
    assert_eq!(get(&addr, "/healthz").0, 200);
    let (status, log) = service.terminate();
    assert!(status.success(), "{log}");
    let _ = DEAD_LETTER;
}

#[test]
fn readyz_fails_until_a_plugin_set_loads_then_passes() {
    let kafka = kafka::start_kafka(2, &[]);
    let bootstrap = kafka.bootstrap_servers();
    let plugins = tempfile::tempdir().unwrap();
    let service = Service::replica(&bootstrap, "ready", plugins.path());
    let addr = endpoint(&service);

    // An empty directory: alive, not ready, and it says why.
    service.wait_for_log("no plugin set to start with", Duration::from_secs(30));
    let (code, body) = get(&addr, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no plugin set has loaded"), "{body}");
    assert!(body.contains("no plugins"), "{body}");
    assert_eq!(get(&addr, "/healthz").0, 200);
    let status: serde_json::Value = serde_json::from_str(&get(&addr, "/status").1).unwrap();
    assert_eq!(status["routing"], "loading");

    // The plugin arrives (as a rename, like an editor or a kubelet): ready.
    let tmp = plugins.path().join(".by_namespace.wasm.tmp");
    std::fs::copy(support::wasm("by_namespace"), &tmp).unwrap();
    std::fs::rename(&tmp, plugins.path().join("by_namespace.wasm")).unwrap();
    let started = Instant::now();
    let mut last = (0, String::new());
    while started.elapsed() < Duration::from_secs(60) {
        last = get(&addr, "/readyz");
        if last.0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(last.0, 200, "{}\n{}", last.1, service.log());
    let (status, log) = service.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn config_check_names_a_bad_field_and_prints_the_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[kafka]\nbootstrap_servers = \"k:9092\"\n\n[http]\nlisten = \"everywhere\"\n",
    )
    .unwrap();
    let output = support::fanout()
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("bad.toml: line 5"), "{stderr}");
    assert!(stderr.contains("http.listen"), "{stderr}");
    assert!(
        stderr.contains("\"everywhere\" is not an address"),
        "{stderr}"
    );

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[kafka]\nbootstrap_servers = \"k:9092\"\n").unwrap();
    let output = support::fanout()
        .args(["config", "check"])
        .arg(&good)
        .env_remove("FANOUT_HTTP_LISTEN")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    for line in [
        "bootstrap_servers = \"k:9092\"",
        "source_topic = \"cluster-events\"",
        "listen = \"0.0.0.0:9090\"",
        "rollback_fault_percent = 5",
    ] {
        assert!(stdout.contains(line), "{line:?} not in:\n{stdout}");
    }
}

#[test]
fn secrets_from_the_file_a_secret_file_and_the_environment_never_show() {
    const INLINE: &str = "inline-hunter2";
    const FROM_FILE: &str = "file-correct-horse";
    const FROM_ENV: &str = "env-battery-staple";
    const STATUS_TOKEN: &str = "status-token-tr0ub4dor-and-3";
    let kafka = kafka::start_kafka(2, &[]);
    let bootstrap = kafka.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("password");
    std::fs::write(&secret, format!("{FROM_FILE}\n")).unwrap();
    let token = dir.path().join("status-token");
    std::fs::write(&token, format!("{STATUS_TOKEN}\n")).unwrap();
    let config = dir.path().join("fanout.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
             [kafka.properties]\n\"ssl.key.password\" = \"{INLINE}\"\n\
             [kafka.secret_files]\n\"sasl.password\" = \"{}\"\n\
             [kafka.secret_env]\n\"sasl.username\" = \"FANOUT_TEST_SECRET\"\n\
             [http]\nstatus_token_file = \"{}\"\n",
            secret.display(),
            token.display()
        ),
    )
    .unwrap();
    let plugins = support::plugin_set_dir(&["by_namespace"], &[]);

    let check = support::fanout()
        .args(["config", "check"])
        .arg(&config)
        .env("FANOUT_TEST_SECRET", FROM_ENV)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let printed = String::from_utf8(check.stdout).unwrap();
    assert!(
        printed.contains("\"ssl.key.password\" = \"<redacted>\""),
        "{printed}"
    );
    assert!(printed.contains(&format!("\"sasl.password\" = \"{}\"", secret.display())));
    // A value from a secret variable is redacted whatever its key.
    assert!(printed.contains("\"sasl.username\" = \"FANOUT_TEST_SECRET\""));

    // The service itself, logging JSON at debug level, with its /status.
    let service = Service::start(|c| {
        c.arg("--config")
            .arg(&config)
            .arg("--plugins")
            .arg(plugins.path())
            .env("FANOUT_TEST_SECRET", FROM_ENV)
            .env("FANOUT_LOG", "debug")
            .env("FANOUT_LOG_FORMAT", "json");
    });
    let line = service.log_line("HTTP endpoint listening", Duration::from_secs(30));
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = event["addr"].as_str().unwrap().to_owned();
    // Without the status token, no config at all; with it, the redacted one.
    let anonymous = get(&addr, "/status").1;
    assert!(!anonymous.contains(&bootstrap), "{anonymous}");
    assert!(!anonymous.contains("sasl"), "{anonymous}");
    let status = get_with(
        &addr,
        "/status",
        &format!("Authorization: Bearer {STATUS_TOKEN}\r\n"),
    )
    .1;
    assert!(status.contains("<redacted>"), "{status}");
    assert!(status.contains(&bootstrap), "{status}");
    let (_, log) = service.terminate();
    // Every line of the log is a JSON object.
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    for secret in [INLINE, FROM_FILE, FROM_ENV, STATUS_TOKEN] {
        for (place, text) in [
            ("config check", &printed),
            ("/status", &status),
            ("log", &log),
        ] {
            assert!(!text.contains(secret), "{secret} appears in {place}");
        }
    }
}

#[test]
fn a_property_librdkafka_refuses_is_named_without_its_value() {
    // This build has no libcurl, so librdkafka refuses the OIDC secret, and its own message
    // would end with the value.
    let output = support::fanout()
        .args(["run", "--bootstrap-servers", "127.0.0.1:1", "--plugins"])
        .arg(support::plugin_set_dir(&["by_namespace"], &[]).path())
        .args([
            "--kafka-property",
            "sasl.oauthbearer.client.secret=topsecret-xyzzy",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("librdkafka property \"sasl.oauthbearer.client.secret\""),
        "{stderr}"
    );
    assert!(!stderr.contains("topsecret-xyzzy"), "{stderr}");
}

#[test]
fn a_client_that_cannot_authenticate_is_never_ready() {
    // The mock cluster has no SASL: SASL_PLAINTEXT fails its handshake, as wrong credentials or
    // a wrong mechanism would against a real broker. fanout stays up, alive and not ready.
    let kafka = kafka::start_kafka(2, &[]);
    let bootstrap = kafka.bootstrap_servers();
    let plugins = support::plugin_set_dir(&["by_namespace"], &[]);
    let service = Service::start(|c| {
        c.args(["--bootstrap-servers", &bootstrap, "--plugins"])
            .arg(plugins.path())
            .args([
                "--kafka-property",
                "security.protocol=SASL_PLAINTEXT",
                "--kafka-property",
                "sasl.mechanism=SCRAM-SHA-512",
                "--kafka-property",
                "sasl.username=fanout",
                "--kafka-property",
                "sasl.password=not-this-one",
            ]);
    });
    let addr = endpoint(&service);
    // Statistics arrive every second; give the clients several rounds.
    std::thread::sleep(Duration::from_secs(4));
    let (code, body) = get(&addr, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("the producer is connected to no broker"),
        "{body}"
    );
    // The consumer joins only once the cluster has said that the source and dead-letter topics
    // exist, which a client that can't authenticate never hears.
    assert!(body.contains("the source and dead-letter topics"), "{body}");
    assert!(body.contains("the consumer has not reported yet"), "{body}");
    assert_eq!(get(&addr, "/healthz").0, 200);
    let metrics = samples(&get(&addr, "/metrics").1);
    assert_eq!(metrics["fanout_ready"], 0.0);
    let (status, log) = service.terminate();
    assert!(status.success(), "{log}");
    assert!(!log.contains("not-this-one"), "{log}");
}
