//! fanout replicas: `fanout run` child processes with a config file the driver writes, JSON
//! logs in `target/chaos/logs/`, and their `/status` read over HTTP.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::settings::{Delivery, Kafka};
use crate::support;
use crate::workload::{DEAD_LETTER_TOPIC, SOURCE_TOPIC};

/// The plugin call deadline. It is wall-clock time, and on a starved machine (2 cores shared
/// with the broker, the driver, a second replica and often a compiler) a call that takes a
/// millisecond of CPU has been seen to pass the default 100 ms, which dead-letters its event as
/// `plugin-timeout`. This run is not about deadlines, so it allows far more.
const PLUGIN_DEADLINE_MS: u64 = 2_000;

/// Every idempotent producer of the run (fanout's and the feeder's) sends one request per
/// connection at a time, because librdkafka's mock cluster checks produce sequence numbers
/// only for transactional producers. If a request fails with a retriable error (an injected
/// one, say)
/// while a later request for the same partition is in flight, the mock appends the later one
/// anyway; librdkafka then takes the earlier request's messages as persisted ("implicitly acked
/// by subsequent batch success") and reports them delivered, with offset -1001, though they
/// were never stored. A real broker refuses the later request (OUT_OF_ORDER_SEQUENCE_NUMBER),
/// so the earlier one is retried in order. With several requests in flight the run lost
/// source events this way; with one at a time there is no later request to be ahead.
pub const ONE_REQUEST_IN_FLIGHT: (&str, &str) = ("max.in.flight.requests.per.connection", "1");

/// The replicas' consumer session timeout.
pub const SESSION_TIMEOUT_MS: u64 = 10_000;

/// The consumer group every replica joins.
pub const GROUP: &str = "chaos";

/// The two places a replica can run: `a` runs the whole time; `b` joins for part of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
}

/// What every replica is started with.
pub struct Launch {
    pub bootstrap: String,
    pub plugins: PathBuf,
    pub delivery: Delivery,
    /// The cluster, for its workarounds ([`Kafka::producer_workarounds`]).
    pub kafka: Kafka,
    /// Config files and logs go here.
    pub dir: PathBuf,
}

impl Launch {
    /// The config file of a slot. Each slot has its own because, exactly-once, each needs its
    /// own transactional id (stable across its restarts, so a restart fences its predecessor).
    fn config(&self, slot: Slot) -> anyhow::Result<PathBuf> {
        let transactional_id = match self.delivery {
            Delivery::AtLeastOnce => String::new(),
            Delivery::ExactlyOnce => format!("transactional_id = \"{GROUP}-{}\"\n", slot.name()),
        };
        // The mock's workarounds (`Kafka::*_workarounds`), if any. A 10 s session lets the
        // group notice a SIGKILLed member sooner than librdkafka's default 45 s, while
        // outliving every broker outage of the run (see `faults`).
        let properties = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(k, v)| format!("\"{k}\" = \"{v}\"\n"))
                .collect::<String>()
        };
        let config = format!(
            r#"[kafka]
bootstrap_servers = "{bootstrap}"
source_topic = "{SOURCE_TOPIC}"
group_id = "{GROUP}"
dead_letter_topic = "{DEAD_LETTER_TOPIC}"
commit_interval_ms = 1000
delivery = "{delivery}"
{transactional_id}
[kafka.producer]
{producer}
[kafka.consumer]
{consumer}"session.timeout.ms" = "{SESSION_TIMEOUT_MS}"
"heartbeat.interval.ms" = "1000"

[plugins]
dir = "{plugins}"
deadline_ms = {PLUGIN_DEADLINE_MS}

[pipeline]
workers = 2

[http]
listen = "127.0.0.1:0"
"#,
            bootstrap = self.bootstrap,
            delivery = self.delivery.name(),
            producer = properties(self.kafka.producer_workarounds()),
            consumer = properties(self.kafka.consumer_workarounds()),
            plugins = self.plugins.display(),
        );
        let path = self.dir.join(format!("fanout-{}.toml", slot.name()));
        std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// One `fanout run` process.
pub struct Replica {
    pub slot: Slot,
    /// 1 for the first process of the slot, then one more per restart.
    pub incarnation: u32,
    child: Child,
    started: Instant,
    pub log: PathBuf,
    http: Option<String>,
}

impl Replica {
    pub fn start(launch: &Launch, slot: Slot, incarnation: u32) -> anyhow::Result<Self> {
        let config = launch.config(slot)?;
        let log = launch
            .dir
            .join(format!("replica-{}-{incarnation}.log", slot.name()));
        let mut command = support::fanout();
        command
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("FANOUT_CONFIG")
            .env("FANOUT_LOG", "info")
            .env("FANOUT_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        let child = command.spawn().context("starting fanout run")?;
        Ok(Self {
            slot,
            incarnation,
            child,
            started: Instant::now(),
            log,
            http: None,
        })
    }

    pub fn label(&self) -> String {
        format!(
            "replica {} #{} (pid {})",
            self.slot.name(),
            self.incarnation,
            self.child.id()
        )
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL: no drain, no final commit.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, as Kubernetes stops a pod: fanout drains, commits and exits.
    pub fn send_term(&self) -> anyhow::Result<()> {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )?;
        Ok(())
    }

    /// How long the process has been running.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// SIGTERM, then the exit status and how long the drain took.
    pub fn terminate(mut self, timeout: Duration) -> anyhow::Result<(ExitStatus, Duration)> {
        self.send_term()?;
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, started.elapsed()));
            }
            if started.elapsed() > timeout {
                bail!(
                    "{} did not exit within {timeout:?} of SIGTERM",
                    self.label()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's lines, parsed (fanout logs one JSON object per line when told to).
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        log_lines(&self.log)
    }

    /// The address of the HTTP endpoint, from the log, once it is listening.
    pub fn http(&mut self, timeout: Duration) -> anyhow::Result<String> {
        if let Some(addr) = &self.http {
            return Ok(addr.clone());
        }
        let started = Instant::now();
        loop {
            let addr = self.log_lines().into_iter().find_map(|line| {
                let message = line["message"].as_str()?;
                message
                    .starts_with("HTTP endpoint listening")
                    .then(|| line["addr"].as_str().map(str::to_owned))?
            });
            if let Some(addr) = addr {
                self.http = Some(addr.clone());
                return Ok(addr);
            }
            if let Some(status) = self.exited() {
                bail!("{} exited ({status}) before serving HTTP", self.label());
            }
            if started.elapsed() > timeout {
                bail!("{} serves no HTTP after {timeout:?}", self.label());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A counter from `/metrics`; `None` until it is exported.
    pub fn counter(&mut self, name: &str) -> anyhow::Result<Option<f64>> {
        let addr = self.http(Duration::from_secs(1))?;
        let body = http_get(&addr, "/metrics")?;
        Ok(body.lines().find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        }))
    }

    /// `/status`, parsed.
    pub fn status(&mut self) -> anyhow::Result<serde_json::Value> {
        let addr = self.http(Duration::from_secs(30))?;
        let body = http_get(&addr, "/status")?;
        serde_json::from_str(&body).with_context(|| format!("/status of {}", self.label()))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every line of a JSON log that parses.
pub fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// A plain HTTP/1.0 GET; the body of a 200 answer.
fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: no HTTP answer"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "GET {path}: {head}"
    );
    Ok(body.to_owned())
}

/// What every replica's log says about plugin reloads, summed over all of them (each replica
/// sees each change, so a swap counts once per replica running at the time).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReloadLog {
    pub swapped: u64,
    pub refused: u64,
    pub rolled_back: u64,
    pub passed_trial: u64,
    /// Lines that say a thread panicked, which fanout never should.
    pub panics: Vec<String>,
}

impl ReloadLog {
    /// Reads every `replica-*.log` in `dir`.
    pub fn read(dir: &Path) -> Self {
        let mut log = Self::default();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return log;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("replica-") {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for line in text.lines() {
                // fanout logs JSON; Rust's panic message is plain text on standard error. (A
                // plugin's own panic message arrives as a JSON log line, tagged with it.)
                if !line.starts_with('{') && line.contains("panicked") {
                    log.panics.push(format!("{name}: {line}"));
                }
                let Ok(line) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let message = line["message"].as_str().unwrap_or_default();
                let counter = if message.starts_with("plugin set swapped") {
                    &mut log.swapped
                } else if message.starts_with("plugin reload refused") {
                    &mut log.refused
                } else if message.starts_with("plugin set rolled back") {
                    &mut log.rolled_back
                } else if message.starts_with("plugin set passed its trial") {
                    &mut log.passed_trial
                } else {
                    continue;
                };
                *counter += 1;
            }
        }
        log
    }
}
