//! The Admin API: which topics exist, and creating the missing ones, instead of relying on the
//! broker's auto-create (often disabled, and never configurable per topic).
//!
//! [`Admin`] answers one topic at a time ([`Admin::presence`], from Metadata, which may let a
//! broker that creates topics on demand create it, as a producer's write would) and creates one
//! ([`Admin::create`]), and says how large a record batch one accepts
//! ([`Admin::max_message_bytes`]). What a missing topic means is the pipeline's business (its
//! topic guard checks the source and dead-letter topics); destinations are created by
//! [`TopicCreator`].
//!
//! [`TopicCreator`] caches known topics: the cluster's existing topics are read once at start,
//! and each topic is created at most once. A failed creation is logged and retried no more than
//! once a minute; the write itself goes ahead, and if the topic truly does not exist the write
//! fails and the event is dead-lettered, so nothing is lost or stuck.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::RDKafkaRespErr;

use crate::lock;

/// How long a failed creation is remembered before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// How long one CreateTopics call may block its caller.
const CREATE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of created topics.
#[derive(Debug, Clone)]
pub struct NewTopicSettings {
    pub partitions: i32,
    /// -1 uses the broker's default.
    pub replication_factor: i32,
    pub configs: Vec<(String, String)>,
}

/// What the cluster says about one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// It exists, with this many partitions.
    Exists { partitions: usize },
    /// The cluster says it does not exist (and did not create it on demand).
    Missing,
    /// The cluster would not say (not authorised to describe it).
    Hidden(String),
}

/// Why a topic was not created.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CreateError {
    /// The cluster did not process the request (timeout, unsupported, unreachable).
    #[error("the cluster did not answer CreateTopics: {0}")]
    Unanswered(String),
    /// The cluster refused this topic (policy, authorisation, invalid settings).
    #[error("the cluster refused to create it: {0}")]
    Refused(String),
}

/// An admin client, with the runtime its calls are futures on.
pub struct Admin {
    admin: AdminClient<DefaultClientContext>,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin {
    /// `properties` are the producer's (security settings included). `broker_may_create`:
    /// whether asking about a missing topic lets a broker that creates topics on demand
    /// (`auto.create.topics.enable`) create it, as a producer's first write would.
    pub fn new(
        bootstrap_servers: &str,
        properties: &[(String, String)],
        broker_may_create: bool,
    ) -> anyhow::Result<Self> {
        let mut config = ClientConfig::new();
        for (key, value) in properties {
            config.set(key, value);
        }
        config
            .set("bootstrap.servers", bootstrap_servers)
            .set("allow.auto.create.topics", broker_may_create.to_string());
        let admin: AdminClient<DefaultClientContext> = config
            .create()
            .map_err(|e| super::client_error(e, "creating the Kafka admin client"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .context("starting the admin runtime")?;
        Ok(Self { admin, runtime })
    }

    /// Every topic's name. `Err` when the cluster did not answer within `timeout`.
    pub fn topic_names(&self, timeout: Duration) -> Result<HashSet<String>, String> {
        let metadata = self
            .admin
            .inner()
            .fetch_metadata(None, timeout)
            .map_err(|e| e.to_string())?;
        Ok(metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .collect())
    }

    /// Whether `topic` exists. `Err` when the cluster did not answer within `timeout`.
    pub fn presence(&self, topic: &str, timeout: Duration) -> Result<Presence, String> {
        let metadata = self
            .admin
            .inner()
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| e.to_string())?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(Presence::Missing);
        };
        match found.error() {
            None | Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE) => {
                Ok(Presence::Exists {
                    partitions: found.partitions().len(),
                })
            }
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Ok(Presence::Missing),
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) => Ok(
                Presence::Hidden(RDKafkaErrorCode::TopicAuthorizationFailed.to_string()),
            ),
            Some(other) => Err(RDKafkaErrorCode::from(other).to_string()),
        }
    }

    /// Waits for `request`'s answer for at most `timeout`; `Err` says it did not come.
    fn answer_within<T>(
        &self,
        timeout: Duration,
        request: impl std::future::Future<Output = T>,
    ) -> Result<T, String> {
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, request).await })
            .map_err(|_| format!("no answer in {} s", timeout.as_secs()))
    }

    /// The largest record batch `topic` accepts, in bytes: its `max.message.bytes`, the broker's
    /// default unless the topic overrides it. `Err` when the cluster did not say.
    pub fn max_message_bytes(&self, topic: &str, timeout: Duration) -> Result<usize, String> {
        let resource = ResourceSpecifier::Topic(topic);
        let options = AdminOptions::new().request_timeout(Some(timeout));
        let results = self
            .answer_within(timeout, self.admin.describe_configs([&resource], &options))?
            .map_err(|e| e.to_string())?;
        let config = results
            .into_iter()
            .next()
            .ok_or("an empty DescribeConfigs answer")?
            .map_err(|code| code.to_string())?;
        let value = config
            .get("max.message.bytes")
            .and_then(|entry| entry.value.as_deref())
            .ok_or("no max.message.bytes in the topic's configuration")?;
        value
            .parse()
            .map_err(|e| format!("max.message.bytes = {value:?}: {e}"))
    }

    /// Creates `topic` with `settings`; one that already exists is not an error.
    pub fn create(&self, topic: &str, settings: &NewTopicSettings) -> Result<(), CreateError> {
        let mut new = NewTopic::new(
            topic,
            settings.partitions,
            TopicReplication::Fixed(settings.replication_factor),
        );
        for (key, value) in &settings.configs {
            new = new.set(key, value);
        }
        let options = AdminOptions::new().operation_timeout(Some(CREATE_TIMEOUT));
        let results = self
            .answer_within(CREATE_TIMEOUT, self.admin.create_topics([&new], &options))
            .map_err(CreateError::Unanswered)?
            .map_err(|e| CreateError::Unanswered(e.to_string()))?;
        for result in results {
            match result {
                Ok(_) => tracing::info!(topic, partitions = settings.partitions, "topic created"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(CreateError::Refused(code.to_string())),
            }
        }
        Ok(())
    }
}

/// Most topics [`TopicCreator`] remembers as existing, or as refused.
const MAX_KNOWN_TOPICS: usize = 100_000;

/// Creates missing destination topics before their first write.
pub struct TopicCreator {
    admin: Arc<Admin>,
    settings: NewTopicSettings,
    known: Mutex<HashSet<String>>,
    /// Refused topics: when, and the broker's reason.
    failed: Mutex<HashMap<String, (Instant, String)>>,
    /// Topics whose CreateTopics is in flight: another thread meeting one waits for its
    /// outcome instead of sending a second request.
    creating: Mutex<HashSet<String>>,
    created: std::sync::Condvar,
    /// Set when the cluster does not answer CreateTopics at all (timeout, unsupported): every
    /// creation is skipped until then, so routing threads are not held up topic after topic.
    paused_until: Mutex<Option<Instant>>,
}

impl TopicCreator {
    pub fn new(admin: Arc<Admin>, settings: NewTopicSettings) -> Self {
        let known = admin
            .topic_names(Duration::from_secs(10))
            .unwrap_or_else(|e| {
                tracing::warn!(
                    "listing topics: {e}; every destination will be checked on first use"
                );
                HashSet::new()
            });
        Self {
            admin,
            settings,
            known: Mutex::new(known),
            failed: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
            created: std::sync::Condvar::new(),
            paused_until: Mutex::new(None),
        }
    }

    /// Makes sure `topic` exists before its first write. Cheap after the first call. `Err`
    /// with the broker's reason when it refused to create the topic (in the last minute).
    pub fn ensure(&self, topic: &str) -> Result<(), String> {
        if lock(&self.known).contains(topic) {
            return Ok(());
        }
        if let Some((at, reason)) = lock(&self.failed).get(topic)
            && at.elapsed() < RETRY_AFTER
        {
            return Err(reason.clone());
        }
        if lock(&self.paused_until).is_some_and(|until| Instant::now() < until) {
            return Ok(());
        }
        {
            let mut creating = lock(&self.creating);
            if creating.contains(topic) {
                while creating.contains(topic) {
                    creating = self
                        .created
                        .wait(creating)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                drop(creating);
                return match lock(&self.failed).get(topic) {
                    Some((_, reason)) => Err(reason.clone()),
                    None => Ok(()),
                };
            }
            creating.insert(topic.to_owned());
        }
        let result = match self.admin.create(topic, &self.settings) {
            Ok(()) => {
                let mut known = lock(&self.known);
                // A plugin that names a new topic for every event must not grow this without
                // bound; forgetting costs one CreateTopics answered "already exists".
                if known.len() >= MAX_KNOWN_TOPICS {
                    known.clear();
                }
                known.insert(topic.to_owned());
                lock(&self.failed).remove(topic);
                Ok(())
            }
            Err(CreateError::Unanswered(e)) => {
                tracing::warn!(
                    topic,
                    "the cluster did not answer CreateTopics ({e}); not creating topics for {} s, \
                     writing anyway",
                    RETRY_AFTER.as_secs()
                );
                *lock(&self.paused_until) = Some(Instant::now() + RETRY_AFTER);
                Ok(())
            }
            Err(CreateError::Refused(e)) => {
                tracing::warn!(
                    topic,
                    "creating topic failed: {e}; its events are dead-lettered"
                );
                let mut failed = lock(&self.failed);
                if failed.len() >= MAX_KNOWN_TOPICS {
                    failed.retain(|_, (at, _)| at.elapsed() < RETRY_AFTER);
                }
                if failed.len() < MAX_KNOWN_TOPICS {
                    failed.insert(topic.to_owned(), (Instant::now(), e.clone()));
                }
                Err(e)
            }
        };
        lock(&self.creating).remove(topic);
        self.created.notify_all();
        result
    }
}
