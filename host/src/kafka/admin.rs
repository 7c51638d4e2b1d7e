//! Creating missing destination topics through the Admin API, instead of relying on the
//! broker's auto-create (often disabled, and never configurable per topic).
//!
//! Known topics are cached: the cluster's existing topics are read once at start, and each topic
//! is created at most once. A failed creation is logged and retried no more than once a minute;
//! the write itself goes ahead, and if the topic truly does not exist the write fails and the
//! event is dead-lettered, so nothing is lost or stuck.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;

use crate::lock;

/// How long a failed creation is remembered before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// How long one CreateTopics call may block a routing thread.
const CREATE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of created topics.
#[derive(Debug, Clone)]
pub struct NewTopicSettings {
    pub partitions: i32,
    /// -1 uses the broker's default.
    pub replication_factor: i32,
    pub configs: Vec<(String, String)>,
}

pub struct TopicCreator {
    admin: AdminClient<DefaultClientContext>,
    runtime: tokio::runtime::Runtime,
    settings: NewTopicSettings,
    known: Mutex<HashSet<String>>,
    failed: Mutex<HashMap<String, Instant>>,
    /// Set when the cluster does not answer CreateTopics at all (timeout, unsupported): every
    /// creation is skipped until then, so routing threads are not held up topic after topic.
    paused_until: Mutex<Option<Instant>>,
}

impl TopicCreator {
    pub fn new(
        bootstrap_servers: &str,
        properties: &[(String, String)],
        settings: NewTopicSettings,
    ) -> anyhow::Result<Self> {
        let mut config = ClientConfig::new();
        for (key, value) in properties {
            config.set(key, value);
        }
        config.set("bootstrap.servers", bootstrap_servers);
        let admin: AdminClient<DefaultClientContext> = config
            .create()
            .map_err(|e| super::client_error(e, "creating the Kafka admin client"))?;
        let known = match admin.inner().fetch_metadata(None, Duration::from_secs(10)) {
            Ok(metadata) => metadata
                .topics()
                .iter()
                .map(|t| t.name().to_owned())
                .collect(),
            Err(e) => {
                tracing::warn!(
                    "listing topics: {e}; every destination will be checked on first use"
                );
                HashSet::new()
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .context("starting the admin runtime")?;
        Ok(Self {
            admin,
            runtime,
            settings,
            known: Mutex::new(known),
            failed: Mutex::new(HashMap::new()),
            paused_until: Mutex::new(None),
        })
    }

    /// Makes sure `topic` exists before its first write. Cheap after the first call.
    pub fn ensure(&self, topic: &str) {
        if lock(&self.known).contains(topic) {
            return;
        }
        if lock(&self.failed)
            .get(topic)
            .is_some_and(|at| at.elapsed() < RETRY_AFTER)
        {
            return;
        }
        if lock(&self.paused_until).is_some_and(|until| Instant::now() < until) {
            return;
        }
        match self.create(topic) {
            Ok(()) => {
                lock(&self.known).insert(topic.to_owned());
                lock(&self.failed).remove(topic);
            }
            Err(CreateError::Unanswered(e)) => {
                tracing::warn!(
                    topic,
                    "the cluster did not answer CreateTopics ({e}); not creating topics for {} s, \
                     writing anyway",
                    RETRY_AFTER.as_secs()
                );
                *lock(&self.paused_until) = Some(Instant::now() + RETRY_AFTER);
            }
            Err(CreateError::Refused(e)) => {
                tracing::warn!(topic, "creating topic failed: {e}; writing to it anyway");
                lock(&self.failed).insert(topic.to_owned(), Instant::now());
            }
        }
    }

    fn create(&self, topic: &str) -> Result<(), CreateError> {
        let mut new = NewTopic::new(
            topic,
            self.settings.partitions,
            TopicReplication::Fixed(self.settings.replication_factor),
        );
        for (key, value) in &self.settings.configs {
            new = new.set(key, value);
        }
        let options = AdminOptions::new().operation_timeout(Some(CREATE_TIMEOUT));
        let results = self
            .runtime
            .block_on(async {
                tokio::time::timeout(CREATE_TIMEOUT, self.admin.create_topics([&new], &options))
                    .await
            })
            .map_err(|_| {
                CreateError::Unanswered(format!("no answer in {} s", CREATE_TIMEOUT.as_secs()))
            })?
            .map_err(|e| CreateError::Unanswered(e.to_string()))?;
        for result in results {
            match result {
                Ok(_) => tracing::info!(
                    topic,
                    partitions = self.settings.partitions,
                    "topic created"
                ),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(CreateError::Refused(code.to_string())),
            }
        }
        Ok(())
    }
}

/// Why a topic was not created.
enum CreateError {
    /// The cluster did not process the request (timeout, unsupported, unreachable).
    Unanswered(String),
    /// The cluster refused this topic (policy, authorisation, invalid settings).
    Refused(String),
}
