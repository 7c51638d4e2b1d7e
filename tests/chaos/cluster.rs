//! Which Kafka cluster a run is against, and the faults only it can do: librdkafka's mock
//! ([`MockBroker`], driven over its control channel: brokers down and up, injected request
//! errors) or a real Apache Kafka cluster of 3 nodes ([`kafka_cluster::KafkaCluster`]: the
//! node leading a partition SIGKILLed and restarted on its data).

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kafka_cluster::KafkaCluster;
use rdkafka::Offset;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;

use crate::broker::{self, MockBroker};
use crate::settings::Kafka;
use crate::watermarks;

/// The running cluster.
pub enum Cluster {
    Mock(MockBroker),
    Apache(Apache),
}

/// The real cluster, shared with the thread that restarts a killed node: a restart waits until
/// the whole cluster is ready again, which takes 15-60 s on a loaded 2-core machine, and the
/// run (replicas noticed, plugins swapped) goes on meanwhile.
pub struct Apache {
    nodes: Arc<Mutex<KafkaCluster>>,
    bootstrap: String,
    description: String,
    /// The restart under way: the node, and the thread (how long it took, once done).
    restarting: Option<(i32, JoinHandle<anyhow::Result<Duration>>)>,
}

impl Cluster {
    /// Starts the cluster of `kafka` with `topics` (name, partitions) created: on the real
    /// cluster with replication 3 and `min.insync.replicas=2`, as the integration tests'
    /// (`KafkaCluster::three`).
    pub fn start(
        kafka: Kafka,
        topics: &[(String, i32)],
        logs: &std::path::Path,
    ) -> anyhow::Result<Self> {
        match kafka {
            Kafka::Mock => Ok(Self::Mock(MockBroker::start(
                crate::support::fanout(),
                topics,
                logs,
            )?)),
            Kafka::Apache => {
                let cluster = KafkaCluster::three().context("starting Apache Kafka")?;
                cluster.create_topics(topics, &[])?;
                Ok(Self::Apache(Apache {
                    bootstrap: cluster.bootstrap_servers(),
                    description: format!(
                        "Apache Kafka {} ({} nodes, KRaft; replication 3, \
                         min.insync.replicas=2), ready in {:.1} s",
                        kafka_cluster::KAFKA_VERSION,
                        cluster.node_ids().len(),
                        cluster.started_in().as_secs_f64()
                    ),
                    nodes: Arc::new(Mutex::new(cluster)),
                    restarting: None,
                }))
            }
        }
    }

    pub fn bootstrap(&self) -> String {
        match self {
            Self::Mock(mock) => mock.bootstrap.clone(),
            Self::Apache(apache) => apache.bootstrap.clone(),
        }
    }

    /// How the report names the cluster.
    pub fn describe(&self) -> String {
        match self {
            Self::Mock(_) => format!("librdkafka's mock cluster ({} brokers)", broker::BROKERS),
            Self::Apache(apache) => apache.description.clone(),
        }
    }

    /// The mock's control channel, for the faults only it can do.
    pub fn mock(&mut self) -> anyhow::Result<&mut MockBroker> {
        match self {
            Self::Mock(mock) => Ok(mock),
            Self::Apache(_) => bail!("the real cluster has no control channel"),
        }
    }

    fn apache(&mut self) -> anyhow::Result<&mut Apache> {
        match self {
            Self::Apache(apache) => Ok(apache),
            Self::Mock(_) => bail!("the mock cluster has no nodes to kill"),
        }
    }

    /// Why the cluster can't go on, if it can't: the mock process died, or a real node that
    /// the run had not killed (`down`) exited by itself. (Not looked at while a restart holds
    /// the nodes.)
    pub fn failed(&mut self, down: Option<i32>) -> Option<anyhow::Error> {
        match self {
            Self::Mock(mock) => mock.crashed().map(anyhow::Error::from),
            Self::Apache(apache) => {
                let mut nodes = apache.nodes.try_lock().ok()?;
                let id = nodes
                    .node_ids()
                    .into_iter()
                    .find(|&id| Some(id) != down && !nodes.is_running(id))?;
                Some(anyhow::anyhow!(
                    "Kafka node {id} exited by itself; its log:\n{}",
                    nodes.log_tail(id, 30)
                ))
            }
        }
    }

    /// SIGKILLs the node leading the partition of `topics` (name, partitions) with the most
    /// records; returns the node and what it led.
    pub fn kill_busiest_leader(
        &mut self,
        topics: &[(String, i32)],
    ) -> anyhow::Result<(i32, String)> {
        let apache = self.apache()?;
        let (topic, partition, end) = busiest(&apache.bootstrap, topics)?;
        let mut nodes = crate::lock(&apache.nodes);
        let leader = nodes.leader(&topic, partition)?;
        nodes.kill(leader)?;
        Ok((leader, format!("{topic}/{partition}, {end} records")))
    }

    /// Restarts killed node `id` on its data, on a thread of its own, unless that is under
    /// way; once the whole cluster is ready again (every node listed by Metadata:
    /// `KafkaCluster::restart`), returns how long the restart took. `wait`: waits for that.
    pub fn restart(&mut self, id: i32, wait: bool) -> anyhow::Result<Option<Duration>> {
        let apache = self.apache()?;
        if apache.restarting.is_none() {
            let nodes = apache.nodes.clone();
            let thread = std::thread::Builder::new()
                .name(format!("chaos-restart-{id}"))
                .spawn(move || {
                    let started = Instant::now();
                    crate::lock(&nodes).restart(id)?;
                    Ok(started.elapsed())
                })?;
            apache.restarting = Some((id, thread));
        }
        let Some((restarting, thread)) =
            apache.restarting.take_if(|(_, t)| wait || t.is_finished())
        else {
            return Ok(None);
        };
        anyhow::ensure!(
            restarting == id,
            "node {restarting} is restarting, not {id}"
        );
        let took = thread
            .join()
            .map_err(|_| anyhow::anyhow!("restarting Kafka node {id} panicked"))?
            .with_context(|| format!("restarting Kafka node {id}"))?;
        Ok(Some(took))
    }

    /// Stops the cluster: the mock through its control channel; the real one's nodes are
    /// SIGKILLed and their data removed.
    pub fn stop(self) -> anyhow::Result<()> {
        match self {
            Self::Mock(mock) => mock.stop(),
            Self::Apache(apache) => {
                if let Some((_, thread)) = apache.restarting {
                    let _ = thread.join();
                }
                drop(apache.nodes);
                Ok(())
            }
        }
    }
}

/// The partition of `topics` with the highest high watermark: (topic, partition, watermark).
fn busiest(bootstrap: &str, topics: &[(String, i32)]) -> anyhow::Result<(String, i32, i64)> {
    let ends = high_watermarks(bootstrap, topics)?;
    ends.into_iter()
        .max_by_key(|(_, end)| *end)
        .map(|((topic, partition), end)| (topic, partition, end))
        .context("no partitions")
}

/// The high watermark of every partition of `topics` (name, partitions), in one ListOffsets
/// round: read uncommitted, so it is the high watermark and not the last stable offset.
pub fn high_watermarks(
    bootstrap: &str,
    topics: &[(String, i32)],
) -> anyhow::Result<watermarks::Offsets> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("isolation.level", "read_uncommitted")
        .create()?;
    let partitions: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|(topic, n)| (0..*n).map(move |p| (topic.clone(), p)))
        .collect();
    watermarks::offsets_at(&client, &partitions, Offset::End)
}
