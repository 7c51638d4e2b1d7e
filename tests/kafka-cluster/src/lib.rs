//! A real Apache Kafka cluster for tests: where fanout's delivery promises meet broker truth.
//!
//! librdkafka's mock cluster speaks the protocol but keeps none of the transactional promises,
//! has no CreateTopics, TLS or SASL, and runs inside the test process. This crate starts pinned
//! Apache Kafka ([`KAFKA_VERSION`]) as 1 or 3 combined broker+controller nodes (KRaft, static
//! voters), each a `java` child process of its own on free 127.0.0.1 ports, so a test can
//! SIGKILL one node, restart it without re-formatting, and watch the cluster carry on.
//!
//! - The jars come from Maven Central, fetched once by `.ci/setup-kafka` (`make setup-kafka`)
//!   into a cache outside the work tree ([`jars`]).
//! - [`ClusterBuilder::start`] formats every node, starts them, and waits until every node's
//!   client port answers and a Metadata request lists them all; when a node does not come up the
//!   error says which, with the tail of its log.
//! - Nodes are tuned for a 2-core machine: 256-768 MiB of heap, 2 network and I/O threads, no
//!   initial rebalance delay, broker auto-create off (fanout's own topic creation is under test).
//! - Every node dies with the cluster value (`Drop`, which runs after a panic too) and, should the
//!   test process itself be killed, with the process: nodes are spawned by one thread that lives
//!   as long as the process, with `PR_SET_PDEATHSIG` set to SIGKILL.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};

/// The Apache Kafka release the tests run against (also in `java/pom.xml`).
pub const KAFKA_VERSION: &str = "4.1.1";

/// How long a node may take to come up on a loaded 2-core machine (measured: 5-10 s alone).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The folder of Kafka's jars: `$FANOUT_KAFKA_LIB`, else the cache `.ci/setup-kafka` fills.
pub fn jars() -> anyhow::Result<PathBuf> {
    let lib = match std::env::var_os("FANOUT_KAFKA_LIB") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .context("neither XDG_CACHE_HOME nor HOME is set")?;
            cache
                .join("fanout")
                .join(format!("kafka-{KAFKA_VERSION}"))
                .join("lib")
        }
    };
    let broker = lib.join(format!("kafka_2.13-{KAFKA_VERSION}.jar"));
    if !broker.is_file() {
        bail!(
            "Apache Kafka {KAFKA_VERSION} is not set up: no {} (run `make setup-kafka`, which \
             fetches it from Maven Central, or point FANOUT_KAFKA_LIB at a folder of its jars)",
            broker.display()
        );
    }
    Ok(lib)
}

/// A cluster to start: how many nodes, and what to add to their properties and listeners.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    nodes: usize,
    properties: BTreeMap<String, String>,
    listeners: Vec<(String, String)>,
    format_args: Vec<String>,
}

impl ClusterBuilder {
    /// `nodes` combined nodes (1 or 3): with 3, replication 3 and `min.insync.replicas=2`
    /// everywhere, internal topics included; with 1, replication 1.
    pub fn new(nodes: usize) -> Self {
        assert!(nodes == 1 || nodes == 3, "1 or 3 nodes, not {nodes}");
        let replication = nodes.to_string();
        let min_isr = if nodes == 3 { "2" } else { "1" };
        let mut properties = BTreeMap::new();
        for (key, value) in [
            ("group.initial.rebalance.delay.ms", "0"),
            ("offsets.topic.num.partitions", "5"),
            ("transaction.state.log.num.partitions", "5"),
            ("num.network.threads", "2"),
            ("num.io.threads", "2"),
            ("background.threads", "2"),
            ("num.replica.fetchers", "1"),
            ("log.cleaner.dedupe.buffer.size", "2097152"),
            ("auto.create.topics.enable", "false"),
            ("offsets.topic.replication.factor", &replication),
            ("transaction.state.log.replication.factor", &replication),
            ("default.replication.factor", &replication),
            (
                "share.coordinator.state.topic.replication.factor",
                &replication,
            ),
            ("transaction.state.log.min.isr", min_isr),
            ("min.insync.replicas", min_isr),
            ("share.coordinator.state.topic.min.isr", min_isr),
            // A killed node is fenced, and its partitions led elsewhere, within seconds.
            ("broker.session.timeout.ms", "3000"),
            ("broker.heartbeat.interval.ms", "500"),
        ] {
            properties.insert(key.to_owned(), value.to_owned());
        }
        Self {
            nodes,
            properties,
            listeners: Vec::new(),
            format_args: Vec::new(),
        }
    }

    /// Sets a server property on every node (`{port:NAME}` in the value is replaced by the
    /// node's port of listener `NAME`).
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.properties.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds a listener `name` (upper case) with `protocol` (`SASL_SSL`, `SSL`, ...) on a port
    /// of its own per node; [`KafkaCluster::listener_bootstrap`] gives its addresses.
    pub fn listener(mut self, name: &str, protocol: &str) -> Self {
        self.listeners.push((name.to_owned(), protocol.to_owned()));
        self
    }

    /// An argument for `kafka-storage format`, e.g. `--add-scram` and its value.
    pub fn format_arg(mut self, arg: &str) -> Self {
        self.format_args.push(arg.to_owned());
        self
    }

    /// Formats and starts every node, and waits until the cluster is ready.
    pub fn start(self) -> anyhow::Result<KafkaCluster> {
        let started = Instant::now();
        let lib = jars()?;
        let dir = tempfile::Builder::new().prefix("fanout-kafka-").tempdir()?;
        let log4j = Path::new(env!("CARGO_MANIFEST_DIR")).join("java/log4j2.properties");

        let mut names = vec!["PLAINTEXT".to_owned(), "CONTROLLER".to_owned()];
        names.extend(self.listeners.iter().map(|(name, _)| name.clone()));
        let mut ports = free_ports(self.nodes * names.len())?.into_iter();
        let mut nodes: Vec<Node> = (1..=self.nodes as i32)
            .map(|id| Node {
                id,
                ports: names
                    .iter()
                    .map(|name| (name.clone(), ports.next().expect("enough ports")))
                    .collect(),
                properties: dir.path().join(format!("node-{id}.properties")),
                log: dir.path().join(format!("node-{id}.log")),
                child: None,
            })
            .collect();
        let voters: Vec<String> = nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.ports["CONTROLLER"]))
            .collect();
        for node in &nodes {
            std::fs::write(
                &node.properties,
                self.node_properties(node, &voters.join(","), dir.path()),
            )?;
        }

        let java = Java { lib, log4j };
        let cluster_id = java.cluster_id()?;
        let formats: Vec<(i32, Child)> = nodes
            .iter()
            .map(|node| {
                let mut command = java.command("kafka.tools.StorageTool");
                command
                    .args(["format", "-t", &cluster_id, "-c"])
                    .arg(&node.properties)
                    .args(&self.format_args)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                Ok((node.id, command.spawn()?))
            })
            .collect::<anyhow::Result<_>>()?;
        for (id, format) in formats {
            let output = format.wait_with_output()?;
            if !output.status.success() {
                bail!(
                    "formatting Kafka node {id} failed ({}): {}{}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }

        let mut cluster = KafkaCluster {
            java,
            nodes: Vec::new(),
            dir,
            started_in: Duration::ZERO,
        };
        for node in &mut nodes {
            node.child = Some(cluster.java.spawn_node(node)?);
        }
        cluster.nodes = nodes;
        cluster.wait_ready(READY_TIMEOUT)?;
        cluster.started_in = started.elapsed();
        Ok(cluster)
    }

    fn node_properties(&self, node: &Node, voters: &str, dir: &Path) -> String {
        let id = node.id;
        let mut protocols = vec![
            "CONTROLLER:PLAINTEXT".to_owned(),
            "PLAINTEXT:PLAINTEXT".to_owned(),
        ];
        protocols.extend(self.listeners.iter().map(|(n, p)| format!("{n}:{p}")));
        let listeners: Vec<String> = node
            .ports
            .iter()
            .map(|(name, port)| format!("{name}://127.0.0.1:{port}"))
            .collect();
        let mut text = String::new();
        let mut put = |key: &str, value: &str| {
            let mut value = value.to_owned();
            for (name, port) in &node.ports {
                value = value.replace(&format!("{{port:{name}}}"), &port.to_string());
            }
            writeln!(text, "{key}={value}").expect("writing to a String");
        };
        put("process.roles", "broker,controller");
        put("node.id", &id.to_string());
        put("controller.listener.names", "CONTROLLER");
        put("inter.broker.listener.name", "PLAINTEXT");
        put("listener.security.protocol.map", &protocols.join(","));
        put("listeners", &listeners.join(","));
        put("advertised.listeners", &listeners.join(","));
        put("controller.quorum.voters", voters);
        put(
            "log.dirs",
            &dir.join(format!("data-{id}")).display().to_string(),
        );
        for (key, value) in &self.properties {
            put(key, value);
        }
        text
    }
}

/// A running cluster. Dropping it SIGKILLs every node and removes their data.
pub struct KafkaCluster {
    java: Java,
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
    started_in: Duration,
}

impl KafkaCluster {
    /// One node, replication 1.
    pub fn single() -> anyhow::Result<Self> {
        ClusterBuilder::new(1).start()
    }

    /// Three nodes, replication 3, `min.insync.replicas=2`.
    pub fn three() -> anyhow::Result<Self> {
        ClusterBuilder::new(3).start()
    }

    /// Every node's PLAINTEXT address, comma-separated, for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        self.listener_bootstrap("PLAINTEXT")
    }

    /// Every node's address on listener `name`.
    pub fn listener_bootstrap(&self, name: &str) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.ports[name]))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node ids, 1 to N.
    pub fn node_ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// From the first spawn to ready: formatting included.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The process ids of the running nodes (for measuring the broker's CPU beside a client's).
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// Where the nodes' properties, logs and data are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL: no controlled shutdown, no flush. The node's data stays for [`Self::restart`].
    pub fn kill(&mut self, id: i32) -> anyhow::Result<()> {
        let node = self.node_mut(id)?;
        if let Some(mut child) = node.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and a controlled shutdown (leadership moved away first), up to 60 s.
    pub fn stop(&mut self, id: i32) -> anyhow::Result<()> {
        let node = self.node_mut(id)?;
        let Some(mut child) = node.child.take() else {
            return Ok(());
        };
        signal(&child, rustix::process::Signal::TERM)?;
        let started = Instant::now();
        while child.try_wait()?.is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                child.kill()?;
                child.wait()?;
                bail!("Kafka node {id} did not stop within 60 s of SIGTERM; killed");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts a stopped or killed node again on its data (no re-format), and waits until the
    /// whole cluster is ready.
    pub fn restart(&mut self, id: i32) -> anyhow::Result<()> {
        let index = self.index(id)?;
        if self.nodes[index].child.is_some() {
            bail!("Kafka node {id} is running");
        }
        let child = self.java.spawn_node(&self.nodes[index])?;
        self.nodes[index].child = Some(child);
        self.wait_ready(READY_TIMEOUT)
    }

    /// Whether node `id` has a live process.
    pub fn is_running(&mut self, id: i32) -> bool {
        self.node_mut(id)
            .ok()
            .and_then(|n| n.child.as_mut())
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until every running node's client port accepts a connection and a Metadata
    /// request lists every running node as a broker.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let running: Vec<i32> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect();
        for &id in &running {
            let index = self.index(id)?;
            let port = self.nodes[index].ports["PLAINTEXT"];
            loop {
                if let Some(status) = self.nodes[index]
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    self.nodes[index].child = None;
                    bail!(
                        "Kafka node {id} exited ({status}) before it was ready; its log:\n{}",
                        self.log_tail(id, 40)
                    );
                }
                if TcpStream::connect_timeout(
                    &([127, 0, 0, 1], port).into(),
                    Duration::from_millis(200),
                )
                .is_ok()
                {
                    break;
                }
                if started.elapsed() > timeout {
                    bail!(
                        "Kafka node {id}'s port {port} did not open within {timeout:?}; its log:\n{}",
                        self.log_tail(id, 40)
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let probe: BaseConsumer = self.client().create()?;
        loop {
            let brokers = probe
                .fetch_metadata(None, Duration::from_secs(5))
                .map(|m| m.brokers().iter().map(|b| b.id()).collect::<Vec<_>>());
            match brokers {
                Ok(mut ids) => {
                    ids.sort_unstable();
                    if ids == running {
                        return Ok(());
                    }
                    if started.elapsed() > timeout {
                        bail!(
                            "Metadata lists brokers {ids:?}, not {running:?}, after {timeout:?}; \
                             the nodes' logs:\n{}",
                            self.log_tails(20)
                        );
                    }
                }
                Err(e) if started.elapsed() > timeout => {
                    bail!(
                        "no Metadata after {timeout:?} ({e}); the nodes' logs:\n{}",
                        self.log_tails(20)
                    );
                }
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The leader of `topic`'s `partition`, by Metadata.
    pub fn leader(&self, topic: &str, partition: i32) -> anyhow::Result<i32> {
        let probe: BaseConsumer = self.client().create()?;
        let metadata = probe.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let leader = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions())
            .find(|p| p.id() == partition)
            .map(|p| p.leader())
            .with_context(|| format!("no partition {topic}/{partition}"))?;
        if leader < 0 {
            bail!("{topic}/{partition} has no leader");
        }
        Ok(leader)
    }

    /// Creates `topics` (name, partitions) with the cluster's replication and `configs`, and
    /// waits until every partition has a leader.
    pub fn create_topics(
        &self,
        topics: &[(String, i32)],
        configs: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.client().create()?;
        let replication = self.nodes.len() as i32;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(name, partitions)| {
                configs.iter().fold(
                    NewTopic::new(name, *partitions, TopicReplication::Fixed(replication)),
                    |topic, (k, v)| topic.set(k, v),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = block_on(admin.create_topics(&new, &options))?;
        for result in results {
            if let Err((topic, e)) = result {
                bail!("creating topic {topic}: {e}");
            }
        }
        let probe: BaseConsumer = self.client().create()?;
        let started = Instant::now();
        for (name, partitions) in topics {
            loop {
                let led = probe
                    .fetch_metadata(Some(name), Duration::from_secs(5))
                    .map(|m| {
                        m.topics()
                            .iter()
                            .flat_map(|t| t.partitions())
                            .filter(|p| p.leader() >= 0)
                            .count()
                    })
                    .unwrap_or(0);
                if led == *partitions as usize {
                    break;
                }
                if started.elapsed() > Duration::from_secs(60) {
                    bail!("topic {name}: {led} of {partitions} partitions led after 60 s");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Client settings for this cluster's PLAINTEXT listener.
    pub fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap_servers());
        config
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: i32, lines: usize) -> String {
        let Ok(node) = self.index(id).map(|i| &self.nodes[i]) else {
            return format!("(no node {id})");
        };
        let text = std::fs::read_to_string(&node.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} ---\n{}", n.id, self.log_tail(n.id, lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn index(&self, id: i32) -> anyhow::Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .with_context(|| format!("no Kafka node {id}"))
    }

    fn node_mut(&mut self, id: i32) -> anyhow::Result<&mut Node> {
        let index = self.index(id)?;
        Ok(&mut self.nodes[index])
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// One node: its ports by listener name, files, and process while it runs.
struct Node {
    id: i32,
    ports: BTreeMap<String, u16>,
    properties: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// How to run Kafka's classes.
struct Java {
    lib: PathBuf,
    log4j: PathBuf,
}

impl Java {
    fn command(&self, main: &str) -> Command {
        let mut command = Command::new("java");
        command
            .args(["-Xms256m", "-Xmx768m"])
            // What kafka-run-class.sh gives a broker.
            .args([
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-Djava.awt.headless=true",
            ])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.log4j.display()
            ))
            .arg("-cp")
            .arg(self.lib.join("*"))
            .arg(main)
            .stdin(Stdio::null());
        command
    }

    fn cluster_id(&self) -> anyhow::Result<String> {
        let output = self
            .command("kafka.tools.StorageTool")
            .arg("random-uuid")
            .output()
            .context("running java (Kafka needs Java 17 or newer on PATH)")?;
        if !output.status.success() {
            bail!(
                "kafka-storage random-uuid failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    }

    fn spawn_node(&self, node: &Node) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let mut command = self.command("kafka.Kafka");
        command
            .arg(&node.properties)
            .stdout(log.try_clone()?)
            .stderr(log);
        spawn_tied_to_process(command)
            .with_context(|| format!("starting Kafka node {} (java)", node.id))
    }
}

/// Spawns `command` from a thread that lives as long as the test process, with the child's
/// parent-death signal set to SIGKILL: nodes of a cluster kept in a `static` (never dropped)
/// or of a test process killed outright die with it. (The signal follows the *thread* that
/// forked, hence the one long-lived spawner.)
fn spawn_tied_to_process(command: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, queue) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("kafka-node-spawner".into())
            .spawn(move || {
                for (mut command, reply) in queue {
                    use std::os::unix::process::CommandExt as _;
                    // SAFETY: the closure runs in the forked child before exec and makes one
                    // async-signal-safe system call (prctl); it allocates nothing.
                    unsafe {
                        command.pre_exec(|| {
                            rustix::process::set_parent_process_death_signal(Some(
                                rustix::process::Signal::KILL,
                            ))
                            .map_err(std::io::Error::from)
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("spawning the Kafka node spawner thread");
        requests
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .send((command, reply))
        .map_err(|_| std::io::Error::other("the Kafka node spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the Kafka node spawner thread is gone"))?
}

/// Sends `signal` to `child`.
pub fn signal(child: &Child, signal: rustix::process::Signal) -> std::io::Result<()> {
    rustix::process::kill_process(rustix::process::Pid::from_child(child), signal)
        .map_err(std::io::Error::from)
}

/// `n` distinct free ports on 127.0.0.1, all held until all are chosen.
fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// Runs an admin future to completion (the tests have no async runtime of their own).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
        .block_on(future)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pom_pins_the_version_the_harness_names() {
        let pom = include_str!("../java/pom.xml");
        let pinned = format!(
            "<artifactId>kafka_2.13</artifactId>\n      <version>{KAFKA_VERSION}</version>"
        );
        assert!(pom.contains(&pinned), "java/pom.xml pins another Kafka");
    }

    #[test]
    fn three_nodes_start_survive_a_killed_node_and_take_it_back() {
        let mut cluster = KafkaCluster::three().unwrap();
        println!(
            "3 Kafka {KAFKA_VERSION} nodes ready in {:.1} s",
            cluster.started_in().as_secs_f64()
        );
        cluster
            .create_topics(&[("harness".to_owned(), 3)], &[])
            .unwrap();
        let leader = cluster.leader("harness", 0).unwrap();
        cluster.kill(leader).unwrap();
        assert!(!cluster.is_running(leader));
        // The survivors fence the dead node and elect another leader.
        let started = Instant::now();
        while cluster.leader("harness", 0).ok() == Some(leader) {
            assert!(started.elapsed() < Duration::from_secs(30), "no new leader");
            std::thread::sleep(Duration::from_millis(200));
        }
        cluster.restart(leader).unwrap();
        assert!(cluster.is_running(leader));
        assert!(
            cluster
                .log_tail(leader, 100)
                .contains("Kafka Server started")
        );
    }

    #[test]
    fn a_node_that_cannot_start_is_named_with_its_log() {
        // A property the broker refuses: the error names the node and shows why.
        let error = match ClusterBuilder::new(1)
            .property("num.io.threads", "zero")
            .start()
        {
            Ok(_) => panic!("a node with num.io.threads=zero started"),
            Err(e) => format!("{e:#}"),
        };
        assert!(error.contains("num.io.threads"), "{error}");
    }
}
