//! The Kafka cluster: `fanout mock-broker` (librdkafka's mock cluster) as a process of its own,
//! driven through its control channel (`--control stdin`). It outlives every fanout process,
//! and the driver takes its brokers down and injects request errors through it.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The mock cluster process died under the run: librdkafka's mock, not fanout, failed (its
/// group coordinator asserts on some membership churn; see `faults::MEMBERSHIP_SPACING`).
#[derive(Debug)]
pub struct MockCrashed(pub String);

impl std::fmt::Display for MockCrashed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MockCrashed {}

/// Brokers in the cluster: ids 1 to 3, each partition led by one of them.
pub const BROKERS: i32 = 3;

/// The running cluster.
pub struct MockBroker {
    child: Child,
    commands: ChildStdin,
    answers: Receiver<String>,
    log: std::path::PathBuf,
    pub bootstrap: String,
}

impl MockBroker {
    /// Starts [`BROKERS`] brokers with `topics` (name, partitions) created, and waits for their
    /// address.
    pub fn start(fanout: Command, topics: &[(String, i32)], dir: &Path) -> anyhow::Result<Self> {
        let port_file = dir.join("bootstrap");
        let log_path = dir.join("mock-broker.log");
        let log = std::fs::File::create(&log_path)?;
        let mut command = fanout;
        command
            .args(["mock-broker", "--brokers", &BROKERS.to_string()])
            .args(["--control", "stdin", "--port-file"])
            .arg(&port_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        for (name, partitions) in topics {
            command.arg("--topic").arg(format!("{name}:{partitions}"));
        }
        let mut child = command.spawn().context("starting fanout mock-broker")?;
        let commands = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        let started = Instant::now();
        while !port_file.exists() {
            if let Some(status) = child.try_wait()? {
                bail!("fanout mock-broker exited at start: {status}");
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("fanout mock-broker wrote no port file within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let bootstrap = std::fs::read_to_string(&port_file)?.trim().to_owned();
        // The banner comes first; answers follow, one per command.
        let banner = answers
            .recv_timeout(Duration::from_secs(10))
            .context("no banner from fanout mock-broker")?;
        anyhow::ensure!(banner.starts_with("mock Kafka cluster"), "{banner}");
        Ok(Self {
            child,
            commands,
            answers,
            log: log_path,
            bootstrap,
        })
    }

    /// Sends one control command and returns its `ok` answer; an `error` answer is an error.
    pub fn command(&mut self, command: &str) -> anyhow::Result<String> {
        writeln!(self.commands, "{command}")
            .and_then(|()| self.commands.flush())
            .with_context(|| format!("sending {command:?} to the mock broker"))?;
        let answer = match self.answers.recv_timeout(Duration::from_secs(10)) {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => bail!("no answer to {command:?} within 10 s"),
            Err(RecvTimeoutError::Disconnected) => {
                bail!("the mock broker exited before answering {command:?}")
            }
        };
        match answer.strip_prefix("ok ") {
            Some(done) => Ok(done.to_owned()),
            None => bail!("{command:?} was refused: {answer}"),
        }
    }

    /// Why the cluster is gone, if it is: the whole run depends on it.
    pub fn crashed(&mut self) -> Option<MockCrashed> {
        let status = self.child.try_wait().ok().flatten()?;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let last = log.lines().last().unwrap_or("(nothing logged)");
        Some(MockCrashed(format!(
            "the mock cluster exited ({status}): {last}"
        )))
    }

    /// Stops the cluster through its control channel and waits for it to exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.command("stop")?;
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::ensure!(status.success(), "the mock broker exited with {status}");
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("the mock broker did not stop within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for MockBroker {
    fn drop(&mut self) {
        // Never leave a cluster behind, whatever happened to the run.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
