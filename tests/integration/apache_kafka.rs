//! The real Apache Kafka cluster these tests share (3 nodes, replication 3,
//! `min.insync.replicas=2`, broker auto-create off; `kafka-cluster` starts it once per test
//! binary), and the [`Scope`] that gives each test its own topics and group in it.

use std::sync::OnceLock;
use std::time::Duration;

use kafka_cluster::KafkaCluster;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};

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

/// Source records a group has committed past in `topic`, through `reader` (a client of that
/// group): the sum of its committed offsets over every partition (the source is written without
/// transactions, so its offsets are dense from 0). 0 while the cluster does not answer.
pub fn committed(reader: &BaseConsumer, topic: &str) -> i64 {
    let Ok(metadata) = reader.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return 0;
    };
    let mut list = TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        list.add_partition(topic, p.id());
    }
    reader
        .committed_offsets(list, Duration::from_secs(5))
        .map(|list| {
            list.elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
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

    /// A client that reads this scope's group's committed offsets without joining it.
    pub fn offsets_reader(&self) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", &self.group)
            .create()
            .unwrap()
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
