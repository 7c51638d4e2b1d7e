//! The real Apache Kafka cluster these tests share (3 nodes, replication 3,
//! `min.insync.replicas=2`, broker auto-create off; `kafka-cluster` starts it once per test
//! binary), and the [`Scope`] that gives each test its own topics and group in it.

use std::sync::OnceLock;
use std::time::Duration;

use kafka_cluster::KafkaCluster;

use crate::kafka::{self, Expected, Received, SourceRecord};

/// The cluster, started by the first test that asks (its nodes die with the test process).
pub fn cluster() -> &'static KafkaCluster {
    static CLUSTER: OnceLock<KafkaCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let cluster = KafkaCluster::three().unwrap_or_else(|e| panic!("{e:#}"));
        println!(
            "Apache Kafka {} (3 nodes) ready in {:.1} s: {}",
            kafka_cluster::KAFKA_VERSION,
            cluster.started_in().as_secs_f64(),
            cluster.bootstrap_servers()
        );
        cluster
    })
}

/// One test's corner of the shared cluster: its source topic, dead-letter topic, consumer
/// group, and namespaces (so destination topics) all carry its name.
pub struct Scope {
    pub name: String,
    pub bootstrap: String,
    pub source: String,
    pub dead_letter: String,
    pub group: String,
}

impl Scope {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            bootstrap: cluster().bootstrap_servers(),
            source: format!("{name}-cluster-events"),
            dead_letter: format!("{name}-dead-letter"),
            group: format!("{name}-fanout"),
        }
    }

    /// [`kafka::workload`] with every routable namespace `ns` renamed `{name}-ns`: the same
    /// fixtures, malformed lines and generated events, routed to this scope's topics.
    pub fn workload(&self, total: usize, namespaces: usize) -> Vec<SourceRecord> {
        kafka::workload(total, namespaces)
            .into_iter()
            .map(|record| self.rename_namespace(record))
            .collect()
    }

    fn rename_namespace(&self, record: SourceRecord) -> SourceRecord {
        let Expected::Topic(namespace) = kafka::expected(&record) else {
            return record;
        };
        let mut envelope: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
        envelope["event"]["metadata"]["namespace"] = format!("{}-{namespace}", self.name).into();
        let renamed = SourceRecord {
            key: record.key.clone(),
            value: serde_json::to_vec(&envelope).unwrap(),
        };
        match kafka::expected(&renamed) {
            Expected::Topic(_) => renamed,
            Expected::DeadLetter(_) => record,
        }
    }

    /// Every destination topic of `workload`, and the dead-letter topic.
    pub fn output_topics(&self, workload: &[SourceRecord]) -> Vec<String> {
        kafka::output_topics_with(workload, &self.dead_letter)
    }

    /// Creates the source topic (`source_partitions`) and every output topic of `workload`
    /// (`output_partitions` each), replicated 3 times.
    pub fn create_topics(
        &self,
        workload: &[SourceRecord],
        source_partitions: i32,
        output_partitions: i32,
    ) {
        let mut topics = vec![(self.source.clone(), source_partitions)];
        topics.extend(
            self.output_topics(workload)
                .into_iter()
                .map(|t| (t, output_partitions)),
        );
        cluster()
            .create_topics(&topics, &[])
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// `fanout run`'s arguments for this scope's brokers, topics and group.
    pub fn args(&self) -> Vec<String> {
        [
            "--bootstrap-servers",
            &self.bootstrap,
            "--source-topic",
            &self.source,
            "--dead-letter-topic",
            &self.dead_letter,
            "--group-id",
            &self.group,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    pub fn produce(&self, records: &[SourceRecord]) {
        kafka::produce(&self.bootstrap, &self.source, records);
    }

    /// Every record of the workload's outputs, to each partition's high watermark.
    pub fn read_outputs(
        &self,
        workload: &[SourceRecord],
        isolation: &str,
        timeout: Duration,
    ) -> Vec<Received> {
        kafka::read_all_with(
            &self.bootstrap,
            &self.output_topics(workload),
            workload.len(),
            timeout,
            isolation,
        )
    }

    /// Checks every source record is in its place; returns the number of duplicates.
    pub fn reconcile(&self, workload: &[SourceRecord], received: &[Received]) -> usize {
        kafka::reconcile_with(workload, received, &self.dead_letter)
    }
}
