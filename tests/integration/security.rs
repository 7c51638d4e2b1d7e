//! fanout against a SASL_SSL listener of a real Apache Kafka: SCRAM-SHA-512 over TLS, with the
//! client settings of `deploy/fanout/configmap.yaml` (only its file paths and addresses
//! swapped), the password read from a file (`[kafka.secret_files]`) and a CA file. It routes;
//! with a wrong password or a CA that did not sign the broker's certificate it never becomes
//! ready, says why once, and consumes nothing.
//!
//! The node is its own (1 node, started once for these tests): a PLAINTEXT listener for the
//! test's own clients and a SASL_SSL one, `SECURE`, for fanout, with a certificate for
//! 127.0.0.1 signed by a CA made with openssl at test time and the deploy example's user
//! created when the node is formatted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kafka_cluster::{ClusterBuilder, KafkaCluster};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};

use crate::apache_kafka::Scope;
use crate::kafka::SourceRecord;
use crate::ops;
use crate::service::{self, Service};
use crate::support;

/// The SCRAM user's password, as the broker knows it.
const PASSWORD: &str = "fanout-scram-secret";
/// The PKCS12 keystore's password.
const KEYSTORE_PASSWORD: &str = "keystore-secret";
/// How long a misconfigured fanout is watched for readiness it must never reach.
const WATCH: Duration = Duration::from_secs(15);

/// The deploy example's `fanout.toml`, and the settings these tests rely on from it.
struct Deployed {
    toml: toml::Table,
    mechanism: String,
    username: String,
}

fn deployed() -> &'static Deployed {
    static DEPLOYED: OnceLock<Deployed> = OnceLock::new();
    DEPLOYED.get_or_init(|| {
        let configmap =
            std::fs::read_to_string(support::root().join("deploy/fanout/configmap.yaml")).unwrap();
        let text: String = configmap
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("fanout.toml: |"))
            .skip(1)
            .take_while(|l| l.starts_with("    ") || l.is_empty())
            .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
            .collect();
        let toml: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let kafka = &toml["kafka"];
        let property = |key: &str| {
            kafka["properties"][key]
                .as_str()
                .unwrap_or_else(|| panic!("the deploy example sets no {key}:\n{text}"))
                .to_owned()
        };
        assert_eq!(property("security.protocol"), "SASL_SSL", "{text}");
        assert!(
            kafka["properties"].get("ssl.ca.location").is_some(),
            "{text}"
        );
        assert!(
            kafka["secret_files"].get("sasl.password").is_some(),
            "the deploy example reads its password from a file:\n{text}"
        );
        Deployed {
            mechanism: property("sasl.mechanism"),
            username: property("sasl.username"),
            toml,
        }
    })
}

/// The node, its certificates, and a CA that signed nothing of it.
struct Secure {
    cluster: KafkaCluster,
    ca: PathBuf,
    other_ca: PathBuf,
    _certs: tempfile::TempDir,
}

fn secure() -> &'static Secure {
    static SECURE: OnceLock<Secure> = OnceLock::new();
    SECURE.get_or_init(|| {
        let certs = tempfile::Builder::new()
            .prefix("fanout-certs-")
            .tempdir()
            .unwrap();
        let started = Instant::now();
        let keystore = make_certificates(certs.path());
        let certificates_in = started.elapsed();
        let Deployed {
            mechanism,
            username,
            ..
        } = deployed();
        assert_eq!(
            mechanism, "SCRAM-SHA-512",
            "these tests create a SCRAM-SHA-512 user"
        );
        let cluster = ClusterBuilder::new(1)
            .listener("SECURE", "SASL_SSL")
            .property("sasl.enabled.mechanisms", mechanism)
            .property(
                &format!(
                    "listener.name.secure.{}.sasl.jaas.config",
                    mechanism.to_lowercase()
                ),
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            )
            .property("ssl.keystore.location", keystore.to_str().unwrap())
            .property("ssl.keystore.type", "PKCS12")
            .property("ssl.keystore.password", KEYSTORE_PASSWORD)
            .property("ssl.key.password", KEYSTORE_PASSWORD)
            .format_arg("--add-scram")
            .format_arg(&format!(
                "{mechanism}=[name={username},password={PASSWORD}]"
            ))
            .start()
            .unwrap_or_else(|e| panic!("{e:#}"));
        println!(
            "Apache Kafka {} (1 node, SASL_SSL {mechanism}) ready in {:.1} s (certificates in \
             {:.1} s): PLAINTEXT {}, SASL_SSL {}",
            kafka_cluster::KAFKA_VERSION,
            cluster.started_in().as_secs_f64(),
            certificates_in.as_secs_f64(),
            cluster.bootstrap_servers(),
            cluster.listener_bootstrap("SECURE"),
        );
        Secure {
            cluster,
            ca: certs.path().join("ca.crt"),
            other_ca: certs.path().join("other-ca.crt"),
            _certs: certs,
        }
    })
}

/// Makes in `dir` a CA (`ca.crt`), a broker certificate for IP 127.0.0.1 signed by it in a
/// PKCS12 keystore (returned), and an unrelated CA (`other-ca.crt`).
fn make_certificates(dir: &Path) -> PathBuf {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl");
        assert!(
            output.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    for (name, subject) in [("ca", "/CN=fanout test CA"), ("other-ca", "/CN=another CA")] {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "7",
            "-subj",
            subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "broker.key",
        "-out",
        "broker.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("broker.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "broker.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "7",
        "-extfile",
        "broker.ext",
        "-out",
        "broker.crt",
    ]);
    openssl(&[
        "pkcs12",
        "-export",
        "-in",
        "broker.crt",
        "-inkey",
        "broker.key",
        "-certfile",
        "ca.crt",
        "-name",
        "broker",
        "-out",
        "broker.p12",
        "-passout",
        &format!("pass:{KEYSTORE_PASSWORD}"),
    ]);
    dir.join("broker.p12")
}

/// A test's topics and group on the secure node (the test's own clients use PLAINTEXT).
fn scope(name: &str) -> Scope {
    Scope {
        name: name.to_owned(),
        bootstrap: secure().cluster.bootstrap_servers(),
        source: format!("{name}-cluster-events"),
        dead_letter: format!("{name}-dead-letter"),
        group: format!("{name}-fanout"),
    }
}

/// Creates the scope's source (4 partitions) and output topics (2 each), and fills the source.
fn prepare(scope: &Scope, workload: &[SourceRecord]) {
    let mut topics = vec![(scope.source.clone(), 4)];
    topics.extend(scope.output_topics(workload).into_iter().map(|t| (t, 2)));
    secure()
        .cluster
        .create_topics(&topics, &[])
        .unwrap_or_else(|e| panic!("{e:#}"));
    scope.produce(workload);
}

/// `fanout run` with the deploy example's config: its `[kafka.properties]` as they are but for
/// the CA file's path, the password from a file holding `password`, and the scope's topics,
/// group and the SASL_SSL listener's address.
fn start_fanout(scope: &Scope, password: &str, ca: &Path) -> (Service, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    // A mounted Secret ends with a newline more often than not.
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::copy(
        support::wasm("by_namespace"),
        dir.path().join("plugins/by_namespace.wasm"),
    )
    .unwrap();

    let mut toml = deployed().toml.clone();
    let kafka = toml["kafka"].as_table_mut().unwrap();
    for (key, value) in [
        (
            "bootstrap_servers",
            secure().cluster.listener_bootstrap("SECURE"),
        ),
        ("source_topic", scope.source.clone()),
        ("group_id", scope.group.clone()),
        ("dead_letter_topic", scope.dead_letter.clone()),
    ] {
        kafka.insert(key.into(), value.into());
    }
    kafka["properties"]
        .as_table_mut()
        .unwrap()
        .insert("ssl.ca.location".into(), ca.to_str().unwrap().into());
    kafka["secret_files"].as_table_mut().unwrap().insert(
        "sasl.password".into(),
        password_file.to_str().unwrap().into(),
    );
    toml["plugins"].as_table_mut().unwrap().insert(
        "dir".into(),
        dir.path().join("plugins").to_str().unwrap().into(),
    );
    let config = dir.path().join("fanout.toml");
    std::fs::write(&config, toml::to_string(&toml).unwrap()).unwrap();

    let service = Service::start(|c| {
        // support::fanout() sets FANOUT_HTTP_LISTEN=127.0.0.1:0 over the file's port.
        c.arg("--config").arg(&config).args(["--workers", "2"]);
    });
    (service, dir)
}

/// The scope group's committed offset of each source partition that has one.
fn committed(scope: &Scope) -> Vec<(i32, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &scope.bootstrap)
        .set("group.id", &scope.group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..4 {
        list.add_partition(&scope.source, p);
    }
    // Right after the group's first contact its coordinator may still be loading.
    let started = Instant::now();
    let offsets = loop {
        match consumer.committed_offsets(list.clone(), Duration::from_secs(10)) {
            Ok(offsets) => break offsets,
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                println!("{}: committed offsets: {e}; retrying", scope.group);
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("{}: committed offsets: {e}", scope.group),
        }
    };
    offsets
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

#[test]
fn scram_over_tls_with_the_deploy_settings_routes_every_event() {
    let scope = scope("sec-routes");
    let workload = scope.workload(2_000, 5);
    prepare(&scope, &workload);
    let started = Instant::now();
    let (service, _dir) = start_fanout(&scope, PASSWORD, &secure().ca);
    let addr = ops::endpoint(&service);
    let mut last = (0, String::new());
    while last.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not ready after 60 s: {}\n{}",
            last.1,
            service.log()
        );
        std::thread::sleep(Duration::from_millis(100));
        last = ops::get(&addr, "/readyz");
    }
    let ready_in = started.elapsed();

    // At-least-once commits an offset only once everything before it is written: when the
    // group's offsets reach the ends, every event is in the output topics.
    let mut offsets = committed(&scope);
    while offsets.iter().map(|(_, o)| o).sum::<i64>() < workload.len() as i64 {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "committed {offsets:?} of {} events after 180 s:\n{}",
            workload.len(),
            service.log()
        );
        std::thread::sleep(Duration::from_millis(250));
        offsets = committed(&scope);
    }
    let routed_in = started.elapsed();
    let received = scope.read_outputs(&workload, "read_committed", Duration::from_secs(60));
    let duplicates = scope.reconcile(&workload, &received);
    let (status, log) = service.terminate();
    assert!(status.success(), "graceful exit: {status}\n{log}");
    assert!(log.contains("final commit done"), "{log}");
    println!(
        "SASL_SSL {}: ready in {:.1} s, {} events routed and committed in {:.1} s, 0 lost, \
         {duplicates} duplicates, offsets {offsets:?}",
        deployed().mechanism,
        ready_in.as_secs_f64(),
        workload.len(),
        routed_in.as_secs_f64()
    );
}

/// A misconfigured fanout: over [`WATCH`] never ready and nothing consumed, and its log names
/// the cause (one of `causes`) once, among no more than a handful of warnings and errors (a
/// retry each second must not be a line each second).
fn refused(name: &str, password: &str, ca: &Path, causes: &[&str]) {
    let scope = scope(name);
    let workload = scope.workload(300, 3);
    prepare(&scope, &workload);
    let (service, _dir) = start_fanout(&scope, password, ca);
    let addr = ops::endpoint(&service);
    let started = Instant::now();
    let mut reasons = String::new();
    while started.elapsed() < WATCH {
        let (code, body) = ops::get(&addr, "/readyz");
        assert_ne!(code, 200, "{name}: ready:\n{}", service.log());
        reasons = body;
        std::thread::sleep(Duration::from_millis(250));
    }
    let metrics = ops::samples(&ops::get(&addr, "/metrics").1);
    let log = service.log();

    // Nothing consumed: no event counted, no offset committed, no record written.
    assert_eq!(
        metrics.get("fanout_events_consumed_total"),
        Some(&0.0),
        "{metrics:?}"
    );
    assert_eq!(
        committed(&scope),
        vec![],
        "{name}: the group committed offsets"
    );
    assert_eq!(
        service::count(&scope.bootstrap, &scope.output_topics(&workload)),
        0,
        "{name}: records reached the output topics"
    );

    // Said once, clearly.
    let messages: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        // Without the timestamp.
        .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest.trim_start()))
        .collect();
    let naming: Vec<&str> = messages
        .iter()
        .copied()
        .filter(|l| causes.iter().any(|c| l.contains(c)))
        .collect();
    let mut distinct: Vec<(usize, &str)> = Vec::new();
    for message in &messages {
        // "(after 193ms in state AUTH_REQ, 1 identical error(s) suppressed)" varies.
        let message = message.split(" (after ").next().unwrap();
        match distinct.iter_mut().find(|(_, m)| *m == message) {
            Some((n, _)) => *n += 1,
            None => distinct.push((1, message)),
        }
    }
    let summary: String = distinct
        .iter()
        .map(|(n, m)| format!("{n:>5} x {m}\n"))
        .collect();
    println!(
        "{name}: not ready after {WATCH:?} ({}), nothing consumed; {} warnings and errors, {} \
         naming the cause:\n{summary}",
        reasons.trim().replace('\n', " "),
        messages.len(),
        naming.len(),
    );
    let (status, log) = service.terminate();
    println!("{name}: after SIGTERM, {status}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        !naming.is_empty(),
        "{name}: no warning or error names {causes:?} after {WATCH:?}:\n{log}"
    );
    // One line (or one per client: the consumer and the producer).
    assert!(
        naming.len() <= 2,
        "{name}: the cause is logged {} times in {WATCH:?}, not once:\n{summary}",
        naming.len()
    );
    assert!(
        messages.len() <= 5,
        "{name}: {} warnings and errors in {WATCH:?} bury the cause:\n{summary}",
        messages.len()
    );
}

#[test]
fn a_wrong_password_is_never_ready_says_so_once_and_consumes_nothing() {
    refused(
        "sec-password",
        "not-the-password",
        &secure().ca,
        &["SASL authentication error"],
    );
}

#[test]
fn an_unknown_ca_is_never_ready_says_so_once_and_consumes_nothing() {
    refused(
        "sec-ca",
        PASSWORD,
        &secure().other_ca,
        &["certificate verify failed"],
    );
}
