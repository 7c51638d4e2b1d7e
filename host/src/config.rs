//! Service configuration for `fanout run`: one typed [`Config`], resolved and validated once at
//! start-up from a TOML file, the environment and command-line flags.
//!
//! # Precedence
//!
//! Each setting takes its value from the first of these layers that sets it:
//!
//! 1. a command-line flag ([`Overrides`], e.g. `--group-id`);
//! 2. a `FANOUT_*` environment variable (e.g. `FANOUT_GROUP_ID`);
//! 3. the environment of the Go tool fanout replaces: `ENDPOINT` (bootstrap servers) and `TOPIC`
//!    (source topic), so a deployment that set only those two keeps working;
//! 4. the config file, if one is named (by `load`'s `file` argument, else by `FANOUT_CONFIG`);
//!    without one, the other layers suffice;
//! 5. the built-in default. Only the bootstrap servers have none.
//!
//! librdkafka properties merge key by key instead: `--kafka-property KEY=VALUE` (repeatable)
//! overrides the same key of `[kafka.properties]`, and for its own client `[kafka.consumer]` or
//! `[kafka.producer]` overrides both ([`Config::merged_consumer_properties`]).
//!
//! | setting | file key | environment | flag |
//! | --- | --- | --- | --- |
//! | bootstrap servers (required) | `kafka.bootstrap_servers` | `FANOUT_BOOTSTRAP_SERVERS`, `ENDPOINT` | `--bootstrap-servers` |
//! | source topic | `kafka.source_topic` | `FANOUT_SOURCE_TOPIC`, `TOPIC` | `--source-topic` |
//! | consumer group | `kafka.group_id` | `FANOUT_GROUP_ID` | `--group-id` |
//! | delivery guarantee | `kafka.delivery` | `FANOUT_DELIVERY` | `--delivery` |
//! | transactional id (exactly-once) | `kafka.transactional_id` | `FANOUT_TRANSACTIONAL_ID` | `--transactional-id` |
//! | dead-letter topic | `kafka.dead_letter_topic` | `FANOUT_DEAD_LETTER_TOPIC` | `--dead-letter-topic` |
//! | plugin directory | `plugins.dir` | `FANOUT_PLUGINS` | `--plugins` |
//! | compile cache | `plugins.cache_dir` | `FANOUT_CACHE_DIR` | `--cache-dir` |
//! | routing threads | `pipeline.workers` | `FANOUT_WORKERS` | `--workers` |
//! | plugin limits | `plugins.memory_limit_mib`, … | | `--memory-limit-mib`, … |
//! | librdkafka properties | `[kafka.properties]` | | `--kafka-property KEY=VALUE` |
//! | HTTP endpoint | `http.listen` | `FANOUT_HTTP_LISTEN` | `--http-listen` |
//! | `/status` token | `http.status_token_file` | `FANOUT_HTTP_STATUS_TOKEN_FILE` | |
//!
//! Everything else is set in the file only. Its layout, with every default:
//!
//! ```toml
//! [kafka]
//! bootstrap_servers = "broker:9092"        # required, from some layer
//! source_topic = "cluster-events"
//! group_id = "fanout"
//! dead_letter_topic = "fanout-dead-letter"
//! commit_interval_ms = 5000                # 100..=600000 (at-least-once)
//! delivery = "at-least-once"               # or "exactly-once": Kafka transactions
//! # transactional_id = "<group_id>-<host name>"   exactly-once: unique per replica, stable
//! #                                        # across its restarts (see docs/exactly-once.md)
//! transaction_max_events = 5000            # 1..=1000000, events per transaction at most
//! transaction_max_ms = 100                 # 10..=60000, a transaction's age at most
//! [kafka.properties]                       # both clients; values are strings (numbers and
//! # "security.protocol" = "SASL_SSL"       # booleans are accepted and stringified)
//! [kafka.consumer]                         # the consumer only
//! [kafka.producer]                         # the producer only
//! [kafka.secret_files]                     # property = file holding its value (a mounted
//! # "sasl.password" = "/etc/fanout/kafka-user/password"   Secret); trailing newlines dropped
//! [kafka.secret_env]                       # property = environment variable holding its value
//! # "sasl.password" = "KAFKA_PASSWORD"
//!
//! [plugins]
//! dir = "/etc/fanout/plugins"
//! memory_limit_mib = 64                    # 1..=4096
//! deadline_ms = 100                        # 1..=60000
//! max_destinations = 64                    # 1..=10000
//! max_record_bytes = 1000000               # 1..=100000000
//! # cache_dir = "/var/cache/fanout"        # default: the host's own choice
//! watch = true                             # hot reload when the directory changes
//! reload_debounce_ms = 100                 # 0..=10000, quiet time before a reload
//! rescan_interval_ms = 30000               # 1000..=3600000, backstop rescan
//! rollback = true                          # roll back a reload that fails too many events
//! rollback_fault_percent = 5               # 1..=100, points over the last good set's rate
//! rollback_window_events = 1000            # 1..=10000000, the trial's length in events
//! rollback_window_ms = 60000               # 1000..=86400000, or in time, whichever is first
//!
//! [pipeline]
//! # workers = <available parallelism>      # 1..=256
//! max_in_flight = 10000                    # 1..=1000000
//! shutdown_timeout_ms = 30000              # 1..=600000
//!
//! [http]
//! listen = "0.0.0.0:9090"                  # /metrics, /healthz, /readyz, /status; "none": off
//! # status_token_file = "/etc/fanout/status-token/token"   /status shows the config only with
//! #                                        # `Authorization: Bearer <this file's token>`
//!
//! [topics]
//! allow = ["*"]                            # a destination must match one (only `*` is special)
//! deny = []                                # and must match none (deny wins)
//! create_missing = false
//! partitions = 3                           # 1..=10000
//! replication_factor = -1                  # 1..=32, or -1 for the broker's default
//! [topics.configs]                         # e.g. "retention.ms" = "604800000"
//! ```
//!
//! # Errors
//!
//! Every problem is reported at once ([`ConfigErrors`]), each naming where the value came from
//! ([`Source`]: file with line and column, environment variable, flag) and what is wrong. Every
//! value given is checked, including one that a higher layer overrides: a broken setting should
//! not hide behind an override that may later be removed. Unknown keys are refused (one per
//! table is reported; the file's syntax errors stop its reading at the first).
//!
//! Secret-looking librdkafka properties ([`is_secret_property`]) never appear in
//! [`Config::redacted`], in `{:?}` or in an error message.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::topic_name::{Glob, check_topic_name};

impl Config {
    /// The plugin runtime's limits, including which topics plugins may write to: never the
    /// source topic (a loop) or the dead-letter topic (forged dead letters).
    pub fn runtime_limits(&self) -> crate::plugin::RuntimeLimits {
        crate::plugin::RuntimeLimits {
            memory_bytes: self.memory_limit_bytes,
            call_deadline: self.call_deadline,
            output: crate::policy::OutputPolicy {
                max_destinations: self.max_destinations,
                max_record_bytes: self.max_record_bytes,
                reserved_topics: crate::policy::service_reservations(
                    &self.source_topic,
                    &self.dead_letter_topic,
                ),
                allow: self.topics.allow.clone(),
                deny: self.topics.deny.clone(),
            },
            ..crate::plugin::RuntimeLimits::default()
        }
    }
}

/// Names the config file when `load` is given none.
pub const ENV_CONFIG: &str = "FANOUT_CONFIG";
pub const ENV_BOOTSTRAP_SERVERS: &str = "FANOUT_BOOTSTRAP_SERVERS";
pub const ENV_SOURCE_TOPIC: &str = "FANOUT_SOURCE_TOPIC";
pub const ENV_GROUP_ID: &str = "FANOUT_GROUP_ID";
pub const ENV_DEAD_LETTER_TOPIC: &str = "FANOUT_DEAD_LETTER_TOPIC";
pub const ENV_PLUGINS: &str = "FANOUT_PLUGINS";
pub const ENV_CACHE_DIR: &str = "FANOUT_CACHE_DIR";
pub const ENV_WORKERS: &str = "FANOUT_WORKERS";
pub const ENV_HTTP_LISTEN: &str = "FANOUT_HTTP_LISTEN";
pub const ENV_HTTP_STATUS_TOKEN_FILE: &str = "FANOUT_HTTP_STATUS_TOKEN_FILE";
pub const ENV_DELIVERY: &str = "FANOUT_DELIVERY";
pub const ENV_TRANSACTIONAL_ID: &str = "FANOUT_TRANSACTIONAL_ID";
/// The old tool's bootstrap servers; below every `FANOUT_*` variable.
pub const OLD_ENV_ENDPOINT: &str = "ENDPOINT";
/// The old tool's source topic; below every `FANOUT_*` variable.
pub const OLD_ENV_TOPIC: &str = "TOPIC";

const FLAG_BOOTSTRAP_SERVERS: &str = "--bootstrap-servers";
const FLAG_SOURCE_TOPIC: &str = "--source-topic";
const FLAG_GROUP_ID: &str = "--group-id";
const FLAG_DEAD_LETTER_TOPIC: &str = "--dead-letter-topic";
const FLAG_PLUGINS: &str = "--plugins";
const FLAG_CACHE_DIR: &str = "--cache-dir";
const FLAG_WORKERS: &str = "--workers";
const FLAG_MEMORY_LIMIT_MIB: &str = "--memory-limit-mib";
const FLAG_DEADLINE_MS: &str = "--deadline-ms";
const FLAG_MAX_DESTINATIONS: &str = "--max-destinations";
const FLAG_MAX_RECORD_BYTES: &str = "--max-record-bytes";
const FLAG_KAFKA_PROPERTY: &str = "--kafka-property";
const FLAG_HTTP_LISTEN: &str = "--http-listen";
const FLAG_DELIVERY: &str = "--delivery";
const FLAG_TRANSACTIONAL_ID: &str = "--transactional-id";

pub const DEFAULT_SOURCE_TOPIC: &str = "cluster-events";
pub const DEFAULT_GROUP_ID: &str = "fanout";
pub const DEFAULT_DEAD_LETTER_TOPIC: &str = "fanout-dead-letter";
pub const DEFAULT_PLUGINS_DIR: &str = "/etc/fanout/plugins";
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:9090";
const DEFAULT_COMMIT_INTERVAL_MS: i128 = 5_000;
const DEFAULT_TRANSACTION_MAX_EVENTS: i128 = 5_000;
const DEFAULT_TRANSACTION_MAX_MS: i128 = 100;
const DEFAULT_MEMORY_LIMIT_MIB: i128 = 64;
const DEFAULT_DEADLINE_MS: i128 = 100;
const DEFAULT_MAX_DESTINATIONS: i128 = 64;
const DEFAULT_MAX_RECORD_BYTES: i128 = 1_000_000;
const DEFAULT_MAX_IN_FLIGHT: i128 = 10_000;
const DEFAULT_SHUTDOWN_TIMEOUT_MS: i128 = 30_000;
const DEFAULT_PARTITIONS: i128 = 3;
/// The broker's `default.replication.factor`: works on a one-broker cluster and a large one.
const DEFAULT_REPLICATION_FACTOR: i128 = -1;

const COMMIT_INTERVAL_MS: RangeInclusive<i128> = 100..=600_000;
const TRANSACTION_MAX_EVENTS: RangeInclusive<i128> = 1..=1_000_000;
const TRANSACTION_MAX_MS: RangeInclusive<i128> = 10..=60_000;
const MEMORY_LIMIT_MIB: RangeInclusive<i128> = 1..=4096;
const DEADLINE_MS: RangeInclusive<i128> = 1..=60_000;
const MAX_DESTINATIONS: RangeInclusive<i128> = 1..=10_000;
const MAX_RECORD_BYTES: RangeInclusive<i128> = 1..=100_000_000;
const WORKERS: RangeInclusive<i128> = 1..=256;
const MAX_IN_FLIGHT: RangeInclusive<i128> = 1..=1_000_000;
const SHUTDOWN_TIMEOUT_MS: RangeInclusive<i128> = 1..=600_000;
const RELOAD_DEBOUNCE_MS: RangeInclusive<i128> = 0..=10_000;
const RESCAN_INTERVAL_MS: RangeInclusive<i128> = 1_000..=3_600_000;
const ROLLBACK_FAULT_PERCENT: RangeInclusive<i128> = 1..=100;
const ROLLBACK_WINDOW_EVENTS: RangeInclusive<i128> = 1..=10_000_000;
const ROLLBACK_WINDOW_MS: RangeInclusive<i128> = 1_000..=86_400_000;
const PARTITIONS: RangeInclusive<i128> = 1..=10_000;
const REPLICATION_FACTOR: RangeInclusive<i128> = 1..=32;

/// librdkafka properties that fanout sets itself, with why; refused in `[kafka.properties]`,
/// `[kafka.consumer]`, `[kafka.producer]` and `--kafka-property` (compared case-insensitively).
pub const RESERVED_PROPERTIES: &[(&str, &str)] = &[
    (
        "enable.auto.offset.store",
        "fanout sets this itself (at-least-once depends on it)",
    ),
    (
        "enable.auto.commit",
        "fanout sets this itself (it commits only fully acknowledged offsets, every \
         kafka.commit_interval_ms)",
    ),
    (
        "group.id",
        "set kafka.group_id (FANOUT_GROUP_ID, --group-id) instead",
    ),
    (
        "bootstrap.servers",
        "set kafka.bootstrap_servers (FANOUT_BOOTSTRAP_SERVERS, --bootstrap-servers) instead",
    ),
    (
        "metadata.broker.list",
        "an alias of bootstrap.servers: set kafka.bootstrap_servers instead",
    ),
    (
        "enable.idempotence",
        "fanout sets this itself (retries must not duplicate or reorder records)",
    ),
    (
        "acks",
        "fanout sets this itself (an offset is committed only once every write is fully \
         replicated)",
    ),
    (
        "request.required.acks",
        "an alias of acks, which fanout sets itself",
    ),
    (
        "partition.assignment.strategy",
        "fanout sets this itself (its offset tracking across rebalances depends on it)",
    ),
    (
        "transactional.id",
        "set kafka.transactional_id (FANOUT_TRANSACTIONAL_ID, --transactional-id) with \
         kafka.delivery = \"exactly-once\" instead",
    ),
];

use crate::kafka::REDACTED;

/// Parts of a librdkafka property key that mark its value as secret.
const SECRET_KEY_PARTS: &[&str] = &[
    "password",
    "secret",
    "sasl.jaas.config",
    "ssl.key.pem",
    "ssl.keystore",
    "token",
    "oauthbearer",
];

/// Whether a librdkafka property's value must never be shown (its key contains `password`,
/// `secret`, `token`, `oauthbearer`, `sasl.jaas.config`, `ssl.key.pem` or `ssl.keystore`).
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_PARTS.iter().any(|part| key.contains(part))
}

// ------------------------------------------------------------------------------------------------
// The /status token
// ------------------------------------------------------------------------------------------------

/// The bearer token `/status` asks for before it shows the effective config, read once at start
/// from `http.status_token_file` (a mounted Secret, say; a trailing newline is dropped). Only its
/// SHA-256 is kept: neither `{:?}` nor an error shows the token, and comparing digests tells a
/// timing attacker nothing about it.
#[derive(Clone, PartialEq, Eq)]
pub struct StatusToken {
    file: PathBuf,
    sha256: [u8; 32],
}

/// The shortest status token accepted: long enough not to be guessed over HTTP.
pub const MIN_STATUS_TOKEN_LEN: usize = 16;

impl StatusToken {
    /// Reads the token in `file`; refuses one shorter than [`MIN_STATUS_TOKEN_LEN`] or with
    /// characters an `Authorization` header cannot carry as they are.
    pub fn read(file: &Path) -> Result<Self, String> {
        use sha2::Digest as _;
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let token = text.trim_end_matches(['\n', '\r']);
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "the token in {} must be printable ASCII without spaces (it is sent as \
                 `Authorization: Bearer <token>`)",
                file.display()
            ));
        }
        if token.len() < MIN_STATUS_TOKEN_LEN {
            return Err(format!(
                "the token in {} has {} characters; at least {MIN_STATUS_TOKEN_LEN} are needed",
                file.display(),
                token.len()
            ));
        }
        Ok(Self {
            file: file.to_owned(),
            sha256: sha2::Sha256::digest(token).into(),
        })
    }

    /// The file the token was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Whether `presented` is the token.
    pub fn matches(&self, presented: &str) -> bool {
        use sha2::Digest as _;
        <[u8; 32]>::from(sha2::Sha256::digest(presented)) == self.sha256
    }
}

impl fmt::Debug for StatusToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusToken")
            .field("file", &self.file)
            .field("token", &REDACTED)
            .finish()
    }
}

// ------------------------------------------------------------------------------------------------
// The validated configuration
// ------------------------------------------------------------------------------------------------

/// The service's configuration, resolved and validated by [`load`].
///
/// `Debug` is written by hand: secret-looking properties show as `<redacted>`.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// The config file read, if any.
    pub file: Option<PathBuf>,
    /// librdkafka `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// The topic of EventRouter envelopes.
    pub source_topic: String,
    /// The consumer group.
    pub group_id: String,
    /// Where events that cannot be routed go, with a reason.
    pub dead_letter_topic: String,
    /// How often stored (fully acknowledged) offsets are committed (at-least-once).
    pub commit_interval: Duration,
    /// At-least-once, or exactly-once with Kafka transactions.
    pub delivery: Delivery,
    /// librdkafka properties for both clients.
    pub common_properties: BTreeMap<String, String>,
    /// librdkafka properties for the consumer only; they override `common_properties`.
    pub consumer_properties: BTreeMap<String, String>,
    /// librdkafka properties for the producer only; they override `common_properties`.
    pub producer_properties: BTreeMap<String, String>,
    /// A plugin directory (every `*.wasm`, each with an optional `X.json` config).
    pub plugins_dir: PathBuf,
    /// Linear memory one plugin instance may use, in bytes.
    pub memory_limit_bytes: usize,
    /// Wall-clock budget of one plugin call.
    pub call_deadline: Duration,
    /// Most destinations one event may have.
    pub max_destinations: usize,
    /// Largest record (key + value + headers) one destination may produce, in bytes.
    pub max_record_bytes: usize,
    /// Where precompiled plugins are cached; `None` leaves the choice to the host.
    pub cache_dir: Option<PathBuf>,
    /// Routing threads.
    pub workers: usize,
    /// Events consumed but not yet fully acknowledged, across partitions.
    pub max_in_flight: usize,
    /// Bound on draining and flushing at SIGTERM.
    pub shutdown_timeout: Duration,
    /// Which destination topics plugins may write, and how missing ones are created.
    pub topics: TopicsConfig,
    /// Hot reload of the plugin directory, and rollback of bad reloads.
    pub reload: ReloadConfig,
    /// Where the HTTP endpoint listens; `None` turns it off.
    pub http_listen: Option<std::net::SocketAddr>,
    /// What `/status` asks for before it shows this config; `None`: it never does.
    pub http_status_token: Option<StatusToken>,
    /// librdkafka properties whose values were read from files (already merged into
    /// `common_properties`, and always redacted).
    pub secret_files: BTreeMap<String, PathBuf>,
    /// librdkafka properties whose values were read from environment variables (likewise).
    pub secret_env: BTreeMap<String, String>,
}

/// Hot reload: whether and how the plugin directory is watched, and when a reload is rolled back.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadConfig {
    /// `None`: the plugins are loaded once, at start-up.
    pub watch: Option<crate::reload::WatchSettings>,
    pub rollback: crate::reload::RollbackPolicy,
}

/// The delivery guarantee.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// Offsets are committed once every write of an event and of the events before it is
    /// acknowledged; a crash can write an event twice, never lose it.
    AtLeastOnce,
    /// Writes and source offsets are committed together in Kafka transactions; a
    /// `read_committed` consumer sees each event's writes exactly once.
    ExactlyOnce(TransactionSettings),
}

/// Exactly-once: how transactions are identified and sized.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionSettings {
    /// librdkafka `transactional.id`: unique per replica, and the same after the replica
    /// restarts, so the restarted one aborts what its predecessor left open at once instead of
    /// making `read_committed` readers wait for the transaction timeout.
    pub transactional_id: String,
    /// A transaction is committed after this many events…
    pub max_events: usize,
    /// …or once it is this old, whichever comes first.
    pub max_duration: Duration,
}

impl Delivery {
    pub fn name(&self) -> &'static str {
        match self {
            Delivery::AtLeastOnce => "at-least-once",
            Delivery::ExactlyOnce(_) => "exactly-once",
        }
    }
}

impl Config {
    /// Whether a property's value must never be shown: a secret-looking key, or one whose value
    /// came from a secret file or variable.
    pub fn is_secret(&self, key: &str) -> bool {
        is_secret_property(key)
            || self.secret_files.contains_key(key)
            || self.secret_env.contains_key(key)
    }

    /// The consumer's librdkafka properties: the common ones, overridden by the consumer's own.
    pub fn merged_consumer_properties(&self) -> BTreeMap<String, String> {
        let mut merged = self.common_properties.clone();
        merged.extend(self.consumer_properties.clone());
        merged
    }

    /// The producer's librdkafka properties: the common ones, overridden by the producer's own.
    pub fn merged_producer_properties(&self) -> BTreeMap<String, String> {
        let mut merged = self.common_properties.clone();
        merged.extend(self.producer_properties.clone());
        merged
    }

    /// The effective configuration as TOML in the file's layout (it loads back as the same
    /// config), with the values of secret-looking properties replaced by `"<redacted>"`.
    pub fn redacted(&self) -> String {
        let props = |map: &'_ BTreeMap<String, String>| -> BTreeMap<String, String> {
            map.iter()
                // Values from secret files and variables print as their source, below.
                .filter(|(k, _)| {
                    !self.secret_files.contains_key(*k) && !self.secret_env.contains_key(*k)
                })
                .map(|(k, v)| {
                    let v = if self.is_secret(k) { REDACTED } else { v };
                    (k.clone(), v.to_owned())
                })
                .collect()
        };
        fn ms(d: Duration) -> u64 {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
        }
        fn globs(globs: &[Glob]) -> Vec<&str> {
            globs.iter().map(Glob::as_str).collect()
        }
        let out = OutFile {
            kafka: OutKafka {
                bootstrap_servers: &self.bootstrap_servers,
                source_topic: &self.source_topic,
                group_id: &self.group_id,
                dead_letter_topic: &self.dead_letter_topic,
                commit_interval_ms: ms(self.commit_interval),
                delivery: self.delivery.name(),
                transactional_id: match &self.delivery {
                    Delivery::ExactlyOnce(t) => Some(&t.transactional_id),
                    Delivery::AtLeastOnce => None,
                },
                transaction_max_events: match &self.delivery {
                    Delivery::ExactlyOnce(t) => Some(t.max_events as u64),
                    Delivery::AtLeastOnce => None,
                },
                transaction_max_ms: match &self.delivery {
                    Delivery::ExactlyOnce(t) => Some(ms(t.max_duration)),
                    Delivery::AtLeastOnce => None,
                },
                properties: props(&self.common_properties),
                consumer: props(&self.consumer_properties),
                producer: props(&self.producer_properties),
                secret_files: self
                    .secret_files
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string_lossy().into_owned()))
                    .collect(),
                secret_env: self.secret_env.clone(),
            },
            http: OutHttp {
                listen: self
                    .http_listen
                    .map_or_else(|| "none".to_owned(), |a| a.to_string()),
                status_token_file: self
                    .http_status_token
                    .as_ref()
                    .map(|t| t.file().to_string_lossy().into_owned()),
            },
            plugins: OutPlugins {
                dir: self.plugins_dir.to_string_lossy().into_owned(),
                memory_limit_mib: (self.memory_limit_bytes >> 20) as u64,
                deadline_ms: ms(self.call_deadline),
                max_destinations: self.max_destinations as u64,
                max_record_bytes: self.max_record_bytes as u64,
                cache_dir: self
                    .cache_dir
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
                watch: self.reload.watch.is_some(),
                reload_debounce_ms: ms(self.reload.watch.clone().unwrap_or_default().debounce),
                rescan_interval_ms: ms(self
                    .reload
                    .watch
                    .clone()
                    .unwrap_or_default()
                    .rescan_interval),
                rollback: self.reload.rollback.enabled,
                rollback_fault_percent: (self.reload.rollback.max_fault_ratio * 100.0).round()
                    as u64,
                rollback_window_events: self.reload.rollback.window_events,
                rollback_window_ms: ms(self.reload.rollback.window),
            },
            pipeline: OutPipeline {
                workers: self.workers as u64,
                max_in_flight: self.max_in_flight as u64,
                shutdown_timeout_ms: ms(self.shutdown_timeout),
            },
            topics: OutTopics {
                allow: globs(&self.topics.allow),
                deny: globs(&self.topics.deny),
                create_missing: self.topics.create_missing,
                partitions: self.topics.partitions,
                replication_factor: self.topics.replication_factor,
                configs: self
                    .topics
                    .configs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
            },
        };
        let body = toml::to_string(&out)
            .unwrap_or_else(|e| format!("# the configuration could not be printed: {e}\n"));
        let origin = match &self.file {
            Some(path) => format!("{} and the environment and flags", path.display()),
            None => "the environment and flags (no config file)".to_owned(),
        };
        format!(
            "# fanout's effective configuration, from {origin}; secret values are redacted\n{body}"
        )
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("file", &self.file)
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("source_topic", &self.source_topic)
            .field("group_id", &self.group_id)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("commit_interval", &self.commit_interval)
            .field("delivery", &self.delivery)
            .field(
                "common_properties",
                &RedactedProperties(self, &self.common_properties),
            )
            .field(
                "consumer_properties",
                &RedactedProperties(self, &self.consumer_properties),
            )
            .field(
                "producer_properties",
                &RedactedProperties(self, &self.producer_properties),
            )
            .field("plugins_dir", &self.plugins_dir)
            .field("memory_limit_bytes", &self.memory_limit_bytes)
            .field("call_deadline", &self.call_deadline)
            .field("max_destinations", &self.max_destinations)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("cache_dir", &self.cache_dir)
            .field("workers", &self.workers)
            .field("max_in_flight", &self.max_in_flight)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("topics", &self.topics)
            .field("reload", &self.reload)
            .field("http_listen", &self.http_listen)
            .field("http_status_token", &self.http_status_token)
            .field("secret_files", &self.secret_files)
            .field("secret_env", &self.secret_env)
            .finish()
    }
}

/// A property map whose `Debug` hides secret values.
struct RedactedProperties<'a>(&'a Config, &'a BTreeMap<String, String>);

impl fmt::Debug for RedactedProperties<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.1.iter().map(|(k, v)| {
                let v = if self.0.is_secret(k) { REDACTED } else { v };
                (k, v)
            }))
            .finish()
    }
}

#[derive(Serialize)]
struct OutFile<'a> {
    kafka: OutKafka<'a>,
    plugins: OutPlugins,
    pipeline: OutPipeline,
    http: OutHttp,
    topics: OutTopics<'a>,
}

#[derive(Serialize)]
struct OutHttp {
    listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_token_file: Option<String>,
}

#[derive(Serialize)]
struct OutKafka<'a> {
    bootstrap_servers: &'a str,
    source_topic: &'a str,
    group_id: &'a str,
    dead_letter_topic: &'a str,
    commit_interval_ms: u64,
    delivery: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    transactional_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_max_events: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_max_ms: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    properties: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    consumer: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    producer: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    secret_files: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    secret_env: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct OutPlugins {
    dir: String,
    memory_limit_mib: u64,
    deadline_ms: u64,
    max_destinations: u64,
    max_record_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_dir: Option<String>,
    watch: bool,
    reload_debounce_ms: u64,
    rescan_interval_ms: u64,
    rollback: bool,
    rollback_fault_percent: u64,
    rollback_window_events: u64,
    rollback_window_ms: u64,
}

#[derive(Serialize)]
struct OutPipeline {
    workers: u64,
    max_in_flight: u64,
    shutdown_timeout_ms: u64,
}

#[derive(Serialize)]
struct OutTopics<'a> {
    allow: Vec<&'a str>,
    deny: Vec<&'a str>,
    create_missing: bool,
    partitions: i32,
    replication_factor: i32,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    configs: BTreeMap<&'a str, &'a str>,
}

/// Which destination topics plugins may write, and how missing ones are created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicsConfig {
    /// A destination must match one of these.
    pub allow: Vec<Glob>,
    /// A destination must match none of these; deny wins over allow.
    pub deny: Vec<Glob>,
    /// Create missing destination topics through the Admin API.
    pub create_missing: bool,
    /// Partitions of a created topic.
    pub partitions: i32,
    /// Replication factor of a created topic; -1 is the broker's default.
    pub replication_factor: i32,
    /// Topic configs of a created topic, e.g. `retention.ms`.
    pub configs: BTreeMap<String, String>,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            allow: vec![Glob::any()],
            deny: Vec::new(),
            create_missing: false,
            partitions: DEFAULT_PARTITIONS as i32,
            replication_factor: DEFAULT_REPLICATION_FACTOR as i32,
            configs: BTreeMap::new(),
        }
    }
}

impl TopicsConfig {
    /// Whether a plugin may write `topic`; the reason names the deny pattern that refused it,
    /// or is "matches no allow pattern".
    pub fn permits(&self, topic: &str) -> Result<(), String> {
        if let Some(glob) = self.deny.iter().find(|g| g.matches(topic)) {
            return Err(format!("matches deny pattern `{glob}`"));
        }
        if self.allow.iter().any(|g| g.matches(topic)) {
            Ok(())
        } else {
            Err("matches no allow pattern".to_owned())
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Flags, errors
// ------------------------------------------------------------------------------------------------

/// The command-line layer: each `Some` (or listed property) beats every other layer.
///
/// `Debug` is written by hand: secret-looking `--kafka-property` values show as `<redacted>`.
#[derive(Clone, Default)]
pub struct Overrides {
    /// `--bootstrap-servers`
    pub bootstrap_servers: Option<String>,
    /// `--source-topic`
    pub source_topic: Option<String>,
    /// `--group-id`
    pub group_id: Option<String>,
    /// `--dead-letter-topic`
    pub dead_letter_topic: Option<String>,
    /// `--plugins`
    pub plugins: Option<PathBuf>,
    /// `--cache-dir`
    pub cache_dir: Option<PathBuf>,
    /// `--workers`
    pub workers: Option<u32>,
    /// `--memory-limit-mib`
    pub memory_limit_mib: Option<u32>,
    /// `--deadline-ms`
    pub deadline_ms: Option<u64>,
    /// `--max-destinations`
    pub max_destinations: Option<u32>,
    /// `--max-record-bytes`
    pub max_record_bytes: Option<u64>,
    /// `--kafka-property KEY=VALUE`, repeatable, for both clients; a later one wins.
    pub kafka_properties: Vec<String>,
    /// `--http-listen`
    pub http_listen: Option<String>,
    /// `--delivery`
    pub delivery: Option<String>,
    /// `--transactional-id`
    pub transactional_id: Option<String>,
}

impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: Vec<String> = self
            .kafka_properties
            .iter()
            .map(|arg| match arg.split_once('=') {
                Some((k, _)) if is_secret_property(k) => format!("{k}={REDACTED}"),
                None if is_secret_property(arg) => REDACTED.to_owned(),
                _ => arg.clone(),
            })
            .collect();
        f.debug_struct("Overrides")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("source_topic", &self.source_topic)
            .field("group_id", &self.group_id)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("plugins", &self.plugins)
            .field("cache_dir", &self.cache_dir)
            .field("workers", &self.workers)
            .field("memory_limit_mib", &self.memory_limit_mib)
            .field("deadline_ms", &self.deadline_ms)
            .field("max_destinations", &self.max_destinations)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("kafka_properties", &properties)
            .field("http_listen", &self.http_listen)
            .field("delivery", &self.delivery)
            .field("transactional_id", &self.transactional_id)
            .finish()
    }
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The config file; `line` and `col` (1-based) where the problem is, if it is at one place.
    File {
        path: PathBuf,
        line: Option<usize>,
        col: Option<usize>,
    },
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag, e.g. `--group-id`.
    Flag(&'static str),
    /// No layer: a built-in default, or a required setting that nothing set.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File {
                path,
                line: Some(line),
                col: Some(col),
            } => write!(f, "{}: line {line}, column {col}", path.display()),
            Source::File { path, .. } => write!(f, "{}", path.display()),
            Source::Env(name) | Source::Flag(name) => f.write_str(name),
            Source::Default => f.write_str("default"),
        }
    }
}

/// One problem with one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: Source,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            Source::Default => f.write_str(&self.message),
            _ => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

// Written by hand: thiserror would take the field named `source` for `Error::source`.
impl std::error::Error for ConfigError {}

/// Every problem found in the configuration; `Display` puts each on its own line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(.errors))]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

fn lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, source: Source, message: impl Into<String>) {
        self.0.push(ConfigError {
            source,
            message: message.into(),
        });
    }
}

// ------------------------------------------------------------------------------------------------
// Loading
// ------------------------------------------------------------------------------------------------

/// Resolves and validates the configuration. Precedence, highest first: `flags`, the `FANOUT_*`
/// environment variables, the old tool's `ENDPOINT` and `TOPIC`, the file, the defaults (see the
/// module docs for the table of names).
///
/// `file` is the config file (`--config`); when `None`, `FANOUT_CONFIG` may name one, and
/// without either no file is read. A file that is named but cannot be read is an error. `env`
/// looks up an environment variable: `&|k| std::env::var(k).ok()` in production.
///
/// All problems are returned together, each with its [`Source`].
pub fn load(
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    flags: &Overrides,
) -> Result<Config, ConfigErrors> {
    let mut errs = Errors::default();

    let path = match file {
        Some(path) => Some(path.to_path_buf()),
        None => match env(ENV_CONFIG) {
            Some(p) if p.is_empty() => {
                errs.push(Source::Env(ENV_CONFIG), "must not be empty");
                None
            }
            p => p.map(PathBuf::from),
        },
    };
    let f = match &path {
        Some(path) => FileLayer::read(path, &mut errs),
        None => FileLayer::default(),
    };

    let env_str = |name: &'static str| env(name).map(|v| (v, Source::Env(name)));
    let env_path = |name: &'static str| env(name).map(|v| (PathBuf::from(v), Source::Env(name)));
    let env_int = |name: &'static str| env(name).map(|v| (parse_whole(&v), Source::Env(name)));
    let flag_str =
        |v: &Option<String>, name: &'static str| v.clone().map(|v| (v, Source::Flag(name)));
    let flag_path =
        |v: &Option<PathBuf>, name: &'static str| v.clone().map(|v| (v, Source::Flag(name)));
    let flag_int =
        |v: Option<u64>, name: &'static str| v.map(|v| (Ok(i128::from(v)), Source::Flag(name)));
    let file_int = |(v, source): (i128, Source)| (Ok(v), source);

    // [kafka]
    let bootstrap_candidates = [
        flag_str(&flags.bootstrap_servers, FLAG_BOOTSTRAP_SERVERS),
        env_str(ENV_BOOTSTRAP_SERVERS),
        env_str(OLD_ENV_ENDPOINT),
        f.string(
            &f.kafka.bootstrap_servers,
            "kafka.bootstrap_servers",
            &mut errs,
        ),
    ];
    let bootstrap_given = bootstrap_candidates.iter().any(Option::is_some);
    let bootstrap_servers = resolve(
        "kafka.bootstrap_servers",
        bootstrap_candidates,
        check_bootstrap_servers,
        &mut errs,
    );
    // A file that could not be read whole may set them: then their absence is no news.
    if !bootstrap_given && f.complete {
        errs.push(
            Source::Default,
            format!(
                "kafka.bootstrap_servers is required: set it in the config file, or set \
                 {ENV_BOOTSTRAP_SERVERS} (or {OLD_ENV_ENDPOINT}), or pass {FLAG_BOOTSTRAP_SERVERS}"
            ),
        );
    }
    let source_topic = resolve(
        "kafka.source_topic",
        [
            flag_str(&flags.source_topic, FLAG_SOURCE_TOPIC),
            env_str(ENV_SOURCE_TOPIC),
            env_str(OLD_ENV_TOPIC),
            f.string(&f.kafka.source_topic, "kafka.source_topic", &mut errs),
        ],
        check_topic,
        &mut errs,
    )
    .unwrap_or_else(|| (DEFAULT_SOURCE_TOPIC.to_owned(), Source::Default));
    let group_id = resolve(
        "kafka.group_id",
        [
            flag_str(&flags.group_id, FLAG_GROUP_ID),
            env_str(ENV_GROUP_ID),
            f.string(&f.kafka.group_id, "kafka.group_id", &mut errs),
        ],
        non_empty,
        &mut errs,
    )
    .map_or_else(|| DEFAULT_GROUP_ID.to_owned(), |(v, _)| v);
    let dead_letter_topic = resolve(
        "kafka.dead_letter_topic",
        [
            flag_str(&flags.dead_letter_topic, FLAG_DEAD_LETTER_TOPIC),
            env_str(ENV_DEAD_LETTER_TOPIC),
            f.string(
                &f.kafka.dead_letter_topic,
                "kafka.dead_letter_topic",
                &mut errs,
            ),
        ],
        check_topic,
        &mut errs,
    )
    .unwrap_or_else(|| (DEFAULT_DEAD_LETTER_TOPIC.to_owned(), Source::Default));
    if dead_letter_topic.0 == source_topic.0 {
        // Blame the layer that set one of them, preferring the dead-letter topic.
        let (source, key) = match (&dead_letter_topic.1, &source_topic.1) {
            (Source::Default, other) => (other.clone(), "kafka.source_topic"),
            (dead, _) => (dead.clone(), "kafka.dead_letter_topic"),
        };
        let problem = format!(
            "the dead-letter topic and the source topic are both {:?}: dead-lettered events \
             would be consumed and routed again",
            source_topic.0
        );
        errs.push(source.clone(), with_key(&source, key, &problem));
    }
    let commit_interval_ms = int_setting(
        "kafka.commit_interval_ms",
        [f.integer(
            &f.kafka.commit_interval_ms,
            "kafka.commit_interval_ms",
            &mut errs,
        )
        .map(file_int)],
        COMMIT_INTERVAL_MS,
        DEFAULT_COMMIT_INTERVAL_MS,
        &mut errs,
    );
    let exactly_once = resolve(
        "kafka.delivery",
        [
            flag_str(&flags.delivery, FLAG_DELIVERY),
            env_str(ENV_DELIVERY),
            f.string(&f.kafka.delivery, "kafka.delivery", &mut errs),
        ],
        |v: String| match v.as_str() {
            "at-least-once" => Ok(false),
            "exactly-once" => Ok(true),
            _ => Err(format!(
                "{v:?} is not a delivery guarantee: \"at-least-once\" or \"exactly-once\""
            )),
        },
        &mut errs,
    )
    .is_some_and(|(v, _)| v);
    let transactional_id = resolve(
        "kafka.transactional_id",
        [
            flag_str(&flags.transactional_id, FLAG_TRANSACTIONAL_ID),
            env_str(ENV_TRANSACTIONAL_ID),
            f.string(
                &f.kafka.transactional_id,
                "kafka.transactional_id",
                &mut errs,
            ),
        ],
        non_empty,
        &mut errs,
    )
    .map(|(v, _)| v);
    let transaction_max_events = int_setting(
        "kafka.transaction_max_events",
        [f.integer(
            &f.kafka.transaction_max_events,
            "kafka.transaction_max_events",
            &mut errs,
        )
        .map(file_int)],
        TRANSACTION_MAX_EVENTS,
        DEFAULT_TRANSACTION_MAX_EVENTS,
        &mut errs,
    );
    let transaction_max_ms = int_setting(
        "kafka.transaction_max_ms",
        [f.integer(
            &f.kafka.transaction_max_ms,
            "kafka.transaction_max_ms",
            &mut errs,
        )
        .map(file_int)],
        TRANSACTION_MAX_MS,
        DEFAULT_TRANSACTION_MAX_MS,
        &mut errs,
    );
    let delivery = if exactly_once {
        Delivery::ExactlyOnce(TransactionSettings {
            transactional_id: transactional_id
                .unwrap_or_else(|| default_transactional_id(&group_id, env)),
            max_events: transaction_max_events as usize,
            max_duration: Duration::from_millis(transaction_max_ms as u64),
        })
    } else {
        Delivery::AtLeastOnce
    };
    let mut common_properties = f.properties(
        f.kafka.properties.as_ref(),
        "kafka.properties",
        true,
        &mut errs,
    );
    for (key, value) in flag_properties(&flags.kafka_properties, &mut errs) {
        common_properties.insert(key, value);
    }
    let consumer_properties =
        f.properties(f.kafka.consumer.as_ref(), "kafka.consumer", true, &mut errs);
    let producer_properties =
        f.properties(f.kafka.producer.as_ref(), "kafka.producer", true, &mut errs);
    let secret_files: BTreeMap<String, PathBuf> = f
        .properties(
            f.kafka.secret_files.as_ref(),
            "kafka.secret_files",
            true,
            &mut errs,
        )
        .into_iter()
        .map(|(k, v)| (k, PathBuf::from(v)))
        .collect();
    let secret_env = f.properties(
        f.kafka.secret_env.as_ref(),
        "kafka.secret_env",
        true,
        &mut errs,
    );
    for (key, path) in &secret_files {
        match std::fs::read_to_string(path) {
            // Secret files end with a newline more often than not; it is never part of a password.
            Ok(value) => {
                common_properties
                    .insert(key.clone(), value.trim_end_matches(['\n', '\r']).to_owned());
            }
            Err(e) => errs.push(
                f.at_key(f.kafka.secret_files.as_ref(), key),
                format!(
                    "kafka.secret_files.{key:?}: cannot read {}: {e}",
                    path.display()
                ),
            ),
        }
    }
    for (key, variable) in &secret_env {
        match env(variable) {
            Some(value) => {
                common_properties.insert(key.clone(), value);
            }
            None => errs.push(
                f.at_key(f.kafka.secret_env.as_ref(), key),
                format!("kafka.secret_env.{key:?}: the environment variable {variable} is not set"),
            ),
        }
    }

    // [plugins]
    let plugins_dir = resolve(
        "plugins.dir",
        [
            flag_path(&flags.plugins, FLAG_PLUGINS),
            env_path(ENV_PLUGINS),
            f.string(&f.plugins.dir, "plugins.dir", &mut errs)
                .map(|(v, s)| (PathBuf::from(v), s)),
        ],
        non_empty_path,
        &mut errs,
    )
    .map_or_else(|| PathBuf::from(DEFAULT_PLUGINS_DIR), |(v, _)| v);
    let cache_dir = resolve(
        "plugins.cache_dir",
        [
            flag_path(&flags.cache_dir, FLAG_CACHE_DIR),
            env_path(ENV_CACHE_DIR),
            f.string(&f.plugins.cache_dir, "plugins.cache_dir", &mut errs)
                .map(|(v, s)| (PathBuf::from(v), s)),
        ],
        non_empty_path,
        &mut errs,
    )
    .map(|(v, _)| v);
    let memory_limit_mib = int_setting(
        "plugins.memory_limit_mib",
        [
            flag_int(flags.memory_limit_mib.map(u64::from), FLAG_MEMORY_LIMIT_MIB),
            f.integer(
                &f.plugins.memory_limit_mib,
                "plugins.memory_limit_mib",
                &mut errs,
            )
            .map(file_int),
        ],
        MEMORY_LIMIT_MIB,
        DEFAULT_MEMORY_LIMIT_MIB,
        &mut errs,
    );
    let deadline_ms = int_setting(
        "plugins.deadline_ms",
        [
            flag_int(flags.deadline_ms, FLAG_DEADLINE_MS),
            f.integer(&f.plugins.deadline_ms, "plugins.deadline_ms", &mut errs)
                .map(file_int),
        ],
        DEADLINE_MS,
        DEFAULT_DEADLINE_MS,
        &mut errs,
    );
    let max_destinations = int_setting(
        "plugins.max_destinations",
        [
            flag_int(flags.max_destinations.map(u64::from), FLAG_MAX_DESTINATIONS),
            f.integer(
                &f.plugins.max_destinations,
                "plugins.max_destinations",
                &mut errs,
            )
            .map(file_int),
        ],
        MAX_DESTINATIONS,
        DEFAULT_MAX_DESTINATIONS,
        &mut errs,
    );
    let max_record_bytes = int_setting(
        "plugins.max_record_bytes",
        [
            flag_int(flags.max_record_bytes, FLAG_MAX_RECORD_BYTES),
            f.integer(
                &f.plugins.max_record_bytes,
                "plugins.max_record_bytes",
                &mut errs,
            )
            .map(file_int),
        ],
        MAX_RECORD_BYTES,
        DEFAULT_MAX_RECORD_BYTES,
        &mut errs,
    );

    let watch = f
        .boolean(&f.plugins.watch, "plugins.watch", &mut errs)
        .is_none_or(|(v, _)| v);
    let file_only_int =
        |key: &str, leaf: &Leaf, range: RangeInclusive<i128>, default, errs: &mut Errors| {
            int_setting(
                key,
                [f.integer(leaf, key, errs).map(file_int)],
                range,
                default,
                errs,
            )
        };
    let reload_debounce_ms = file_only_int(
        "plugins.reload_debounce_ms",
        &f.plugins.reload_debounce_ms,
        RELOAD_DEBOUNCE_MS,
        100,
        &mut errs,
    );
    let rescan_interval_ms = file_only_int(
        "plugins.rescan_interval_ms",
        &f.plugins.rescan_interval_ms,
        RESCAN_INTERVAL_MS,
        30_000,
        &mut errs,
    );
    let rollback = f
        .boolean(&f.plugins.rollback, "plugins.rollback", &mut errs)
        .is_none_or(|(v, _)| v);
    let rollback_fault_percent = file_only_int(
        "plugins.rollback_fault_percent",
        &f.plugins.rollback_fault_percent,
        ROLLBACK_FAULT_PERCENT,
        5,
        &mut errs,
    );
    let rollback_window_events = file_only_int(
        "plugins.rollback_window_events",
        &f.plugins.rollback_window_events,
        ROLLBACK_WINDOW_EVENTS,
        1_000,
        &mut errs,
    );
    let rollback_window_ms = file_only_int(
        "plugins.rollback_window_ms",
        &f.plugins.rollback_window_ms,
        ROLLBACK_WINDOW_MS,
        60_000,
        &mut errs,
    );

    // [pipeline]
    let default_workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = int_setting(
        "pipeline.workers",
        [
            flag_int(flags.workers.map(u64::from), FLAG_WORKERS),
            env_int(ENV_WORKERS),
            f.integer(&f.pipeline.workers, "pipeline.workers", &mut errs)
                .map(file_int),
        ],
        WORKERS,
        (default_workers as i128).clamp(*WORKERS.start(), *WORKERS.end()),
        &mut errs,
    );
    let max_in_flight = int_setting(
        "pipeline.max_in_flight",
        [f.integer(
            &f.pipeline.max_in_flight,
            "pipeline.max_in_flight",
            &mut errs,
        )
        .map(file_int)],
        MAX_IN_FLIGHT,
        DEFAULT_MAX_IN_FLIGHT,
        &mut errs,
    );
    let shutdown_timeout_ms = int_setting(
        "pipeline.shutdown_timeout_ms",
        [f.integer(
            &f.pipeline.shutdown_timeout_ms,
            "pipeline.shutdown_timeout_ms",
            &mut errs,
        )
        .map(file_int)],
        SHUTDOWN_TIMEOUT_MS,
        DEFAULT_SHUTDOWN_TIMEOUT_MS,
        &mut errs,
    );

    // [http]
    let http_listen = resolve(
        "http.listen",
        [
            flag_str(&flags.http_listen, FLAG_HTTP_LISTEN),
            env_str(ENV_HTTP_LISTEN),
            f.string(&f.http.listen, "http.listen", &mut errs),
        ],
        |v: String| {
            if v == "none" {
                return Ok(None);
            }
            v.parse::<std::net::SocketAddr>().map(Some).map_err(|_| {
                format!("{v:?} is not an address and port such as \"0.0.0.0:9090\", nor \"none\"")
            })
        },
        &mut errs,
    )
    .map_or_else(
        || {
            Some(
                DEFAULT_HTTP_LISTEN
                    .parse()
                    .expect("the default address parses"),
            )
        },
        |(v, _)| v,
    );

    let http_status_token = resolve(
        "http.status_token_file",
        [
            env_path(ENV_HTTP_STATUS_TOKEN_FILE),
            f.string(
                &f.http.status_token_file,
                "http.status_token_file",
                &mut errs,
            )
            .map(|(v, source)| (PathBuf::from(v), source)),
        ],
        |path: PathBuf| StatusToken::read(&path),
        &mut errs,
    )
    .map(|(token, _)| token);

    // [topics]
    let allow = f
        .globs(&f.topics.allow, "topics.allow", &mut errs)
        .unwrap_or_else(|| vec![Glob::any()]);
    // An empty list, not one whose every pattern was refused (that is reported already).
    if let Some(leaf) = &f.topics.allow
        && leaf.get_ref().as_array().is_some_and(Vec::is_empty)
    {
        let source = f.at(leaf.span());
        errs.push(
            source,
            "topics.allow: is empty, so every destination would be refused; use [\"*\"] to \
             allow all",
        );
    }
    let deny = f
        .globs(&f.topics.deny, "topics.deny", &mut errs)
        .unwrap_or_default();
    let create_missing = f
        .boolean(&f.topics.create_missing, "topics.create_missing", &mut errs)
        .is_some_and(|(v, _)| v);
    let partitions = int_setting(
        "topics.partitions",
        [
            f.integer(&f.topics.partitions, "topics.partitions", &mut errs)
                .map(file_int),
        ],
        PARTITIONS,
        DEFAULT_PARTITIONS,
        &mut errs,
    );
    let replication_factor = resolve(
        "topics.replication_factor",
        [f.integer(
            &f.topics.replication_factor,
            "topics.replication_factor",
            &mut errs,
        )],
        |v| {
            if v == -1 || REPLICATION_FACTOR.contains(&v) {
                Ok(v)
            } else {
                Err(format!(
                    "{v} is out of range {}..={}, or -1 for the broker's default",
                    REPLICATION_FACTOR.start(),
                    REPLICATION_FACTOR.end()
                ))
            }
        },
        &mut errs,
    )
    .map_or(DEFAULT_REPLICATION_FACTOR, |(v, _)| v);
    let configs = f.properties(
        f.topics.configs.as_ref(),
        "topics.configs",
        false,
        &mut errs,
    );

    if !errs.0.is_empty() {
        // The file's problems in reading order, then the environment's, then the flags'.
        let mut errors = errs.0;
        errors.sort_by_key(|e| match &e.source {
            Source::File { line, col, .. } => (0, *line, *col),
            Source::Env(_) => (1, None, None),
            Source::Flag(_) => (2, None, None),
            Source::Default => (3, None, None),
        });
        return Err(ConfigErrors { errors });
    }
    // Every integer below was range-checked, so the casts cannot truncate.
    Ok(Config {
        file: path,
        bootstrap_servers: bootstrap_servers.map(|(v, _)| v).unwrap_or_default(),
        source_topic: source_topic.0,
        group_id,
        dead_letter_topic: dead_letter_topic.0,
        commit_interval: Duration::from_millis(commit_interval_ms as u64),
        delivery,
        common_properties,
        consumer_properties,
        producer_properties,
        plugins_dir,
        memory_limit_bytes: (memory_limit_mib as usize) << 20,
        call_deadline: Duration::from_millis(deadline_ms as u64),
        max_destinations: max_destinations as usize,
        max_record_bytes: max_record_bytes as usize,
        cache_dir,
        workers: workers as usize,
        max_in_flight: max_in_flight as usize,
        shutdown_timeout: Duration::from_millis(shutdown_timeout_ms as u64),
        topics: TopicsConfig {
            allow,
            deny,
            create_missing,
            partitions: partitions as i32,
            replication_factor: replication_factor as i32,
            configs,
        },
        http_listen,
        http_status_token,
        secret_files,
        secret_env,
        reload: ReloadConfig {
            watch: watch.then(|| crate::reload::WatchSettings {
                debounce: Duration::from_millis(reload_debounce_ms as u64),
                rescan_interval: Duration::from_millis(rescan_interval_ms as u64),
            }),
            rollback: crate::reload::RollbackPolicy {
                enabled: rollback,
                max_fault_ratio: rollback_fault_percent as f64 / 100.0,
                window_events: rollback_window_events as u64,
                window: Duration::from_millis(rollback_window_ms as u64),
            },
        },
    })
}

/// `problem`, prefixed with the setting's key where the source does not already name it (an
/// environment variable or flag names one setting; a file position does not).
fn with_key(source: &Source, key: &str, problem: &str) -> String {
    match source {
        Source::File { .. } | Source::Default => format!("{key}: {problem}"),
        Source::Env(_) | Source::Flag(_) => problem.to_owned(),
    }
}

/// Checks every given value of one setting (highest layer first) and returns the highest, if
/// it is valid. An invalid value in any layer is an error, even an overridden one.
fn resolve<R, T>(
    key: &str,
    candidates: impl IntoIterator<Item = Option<(R, Source)>>,
    validate: impl Fn(R) -> Result<T, String>,
    errs: &mut Errors,
) -> Option<(T, Source)> {
    let mut chosen = None;
    for (i, (raw, source)) in candidates.into_iter().flatten().enumerate() {
        match validate(raw) {
            Ok(value) if i == 0 => chosen = Some((value, source)),
            Ok(_) => {}
            Err(problem) => {
                let message = with_key(&source, key, &problem);
                errs.push(source, message);
            }
        }
    }
    chosen
}

/// An integer setting with a range and a default; a candidate may already be unparseable.
fn int_setting<const N: usize>(
    key: &str,
    candidates: [Option<(Result<i128, String>, Source)>; N],
    range: RangeInclusive<i128>,
    default: i128,
    errs: &mut Errors,
) -> i128 {
    resolve(
        key,
        candidates,
        |raw| {
            let v = raw?;
            if range.contains(&v) {
                Ok(v)
            } else {
                Err(format!(
                    "{v} is out of range {}..={}",
                    range.start(),
                    range.end()
                ))
            }
        },
        errs,
    )
    .map_or(default, |(v, _)| v)
}

/// An environment variable's whole number (surrounding whitespace is ignored).
fn parse_whole(raw: &str) -> Result<i128, String> {
    let trimmed = raw.trim();
    trimmed.parse::<i128>().map_err(|_| {
        let digits = trimmed.strip_prefix('-').unwrap_or(trimmed);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            format!("{raw:?} is too large")
        } else {
            format!("{raw:?} is not a whole number")
        }
    })
}

/// `<group>-<host name>`: unique per pod (Kubernetes sets `HOSTNAME` to the pod's name) and
/// unchanged when its container restarts, which is when it matters.
fn default_transactional_id(group_id: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let host = env("HOSTNAME")
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{group_id}-{host}")
}

fn non_empty(v: String) -> Result<String, String> {
    if v.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(v)
    }
}

fn non_empty_path(v: PathBuf) -> Result<PathBuf, String> {
    if v.as_os_str().is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(v)
    }
}

fn check_topic(v: String) -> Result<String, String> {
    if v.is_empty() {
        return Err("must not be empty".to_owned());
    }
    match check_topic_name(&v) {
        Ok(()) => Ok(v),
        Err(problem) => Err(format!(
            "{v:?} {problem}; Kafka topic names are 1 to 249 characters from [a-zA-Z0-9._-]"
        )),
    }
}

fn check_bootstrap_servers(v: String) -> Result<String, String> {
    if v.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if v.split(',').any(|server| server.trim().is_empty()) {
        return Err(format!("{v:?} has an empty entry between commas"));
    }
    Ok(v)
}

/// Checks a librdkafka property or topic config key; `reserved` refuses the keys fanout sets.
fn check_property_key(key: &str, reserved: bool) -> Result<(), String> {
    if key.is_empty() {
        return Err("the name must not be empty".to_owned());
    }
    if key.chars().any(char::is_whitespace) {
        return Err("the name must not contain whitespace".to_owned());
    }
    if reserved
        && let Some((_, why)) = RESERVED_PROPERTIES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
    {
        return Err(format!("{why}; remove it"));
    }
    Ok(())
}

/// Parses `--kafka-property KEY=VALUE` arguments, in order.
fn flag_properties(args: &[String], errs: &mut Errors) -> Vec<(String, String)> {
    let source = Source::Flag(FLAG_KAFKA_PROPERTY);
    let mut properties = Vec::new();
    for arg in args {
        let Some((key, value)) = arg.split_once('=') else {
            let got = if is_secret_property(arg) {
                "an argument without `=` (not shown: it looks secret)".to_owned()
            } else {
                format!("{arg:?}")
            };
            errs.push(source.clone(), format!("expected KEY=VALUE, got {got}"));
            continue;
        };
        match check_property_key(key, true) {
            Ok(()) => properties.push((key.to_owned(), value.to_owned())),
            Err(problem) => errs.push(source.clone(), format!("{key:?}: {problem}")),
        }
    }
    properties
}

// ------------------------------------------------------------------------------------------------
// The file layer
// ------------------------------------------------------------------------------------------------

/// A value as the file wrote it, with its place; its type is checked after parsing, so that a
/// wrong type does not hide the file's other problems.
type Leaf = Option<Spanned<toml::Value>>;
/// A table of librdkafka properties or topic configs.
type RawProperties = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

const SECTIONS: [&str; 5] = ["kafka", "plugins", "pipeline", "http", "topics"];

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaFile {
    bootstrap_servers: Leaf,
    source_topic: Leaf,
    group_id: Leaf,
    dead_letter_topic: Leaf,
    commit_interval_ms: Leaf,
    delivery: Leaf,
    transactional_id: Leaf,
    transaction_max_events: Leaf,
    transaction_max_ms: Leaf,
    #[serde(default, deserialize_with = "property_table")]
    properties: Option<RawProperties>,
    #[serde(default, deserialize_with = "property_table")]
    consumer: Option<RawProperties>,
    #[serde(default, deserialize_with = "property_table")]
    producer: Option<RawProperties>,
    #[serde(default, deserialize_with = "property_table")]
    secret_files: Option<RawProperties>,
    #[serde(default, deserialize_with = "property_table")]
    secret_env: Option<RawProperties>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    listen: Leaf,
    status_token_file: Leaf,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginsFile {
    dir: Leaf,
    memory_limit_mib: Leaf,
    deadline_ms: Leaf,
    max_destinations: Leaf,
    max_record_bytes: Leaf,
    cache_dir: Leaf,
    watch: Leaf,
    reload_debounce_ms: Leaf,
    rescan_interval_ms: Leaf,
    rollback: Leaf,
    rollback_fault_percent: Leaf,
    rollback_window_events: Leaf,
    rollback_window_ms: Leaf,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    workers: Leaf,
    max_in_flight: Leaf,
    shutdown_timeout_ms: Leaf,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicsFile {
    allow: Leaf,
    deny: Leaf,
    create_missing: Leaf,
    partitions: Leaf,
    replication_factor: Leaf,
    #[serde(default, deserialize_with = "property_table")]
    configs: Option<RawProperties>,
}

/// A table of properties. If it is not a table, serde's message would quote the value, which
/// may be a secret: this one does not.
fn property_table<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<RawProperties>, D::Error> {
    RawProperties::deserialize(deserializer)
        .map(Some)
        .map_err(|_| serde::de::Error::custom("invalid type: expected a table"))
}

/// The config file's sections, each empty where the file has none (or no file is read).
struct FileLayer {
    /// The file and its text, for positions; `None` when no file was read.
    doc: Option<(PathBuf, String)>,
    /// Whether every section could be read (else a setting may look missing that is not).
    complete: bool,
    kafka: KafkaFile,
    plugins: PluginsFile,
    pipeline: PipelineFile,
    http: HttpFile,
    topics: TopicsFile,
}

impl Default for FileLayer {
    fn default() -> Self {
        Self {
            doc: None,
            complete: true,
            kafka: KafkaFile::default(),
            plugins: PluginsFile::default(),
            pipeline: PipelineFile::default(),
            http: HttpFile::default(),
            topics: TopicsFile::default(),
        }
    }
}

impl FileLayer {
    /// Reads and parses the file. Each section is deserialized on its own, so that an unknown
    /// key in one does not hide the problems of another.
    fn read(path: &Path, errs: &mut Errors) -> Self {
        let mut layer = Self::default();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                errs.push(
                    Source::File {
                        path: path.to_path_buf(),
                        line: None,
                        col: None,
                    },
                    format!("cannot read the config file: {e}"),
                );
                layer.complete = false;
                return layer;
            }
        };
        layer.doc = Some((path.to_path_buf(), text.clone()));
        let root = match toml::de::DeTable::parse(&text) {
            Ok(root) => root.into_inner(),
            Err(e) => {
                let source = layer.at_opt(e.span());
                errs.push(source, e.message().to_owned());
                layer.complete = false;
                return layer;
            }
        };
        for (key, value) in root {
            let name = key.get_ref().as_ref();
            let at = layer.at(value.span());
            if !SECTIONS.contains(&name) {
                let expected = SECTIONS.map(|s| format!("`{s}`")).join(", ");
                errs.push(
                    layer.at(key.span()),
                    format!("unknown field `{name}`, expected one of {expected}"),
                );
                continue;
            }
            if !value.get_ref().is_table() {
                errs.push(
                    at,
                    format!(
                        "invalid type: found {}, expected a table for key {name}",
                        a_type(value.get_ref().type_str())
                    ),
                );
                layer.complete = false;
                continue;
            }
            match name {
                "kafka" => layer.kafka = layer.section(name, value, errs),
                "plugins" => layer.plugins = layer.section(name, value, errs),
                "pipeline" => layer.pipeline = layer.section(name, value, errs),
                "http" => layer.http = layer.section(name, value, errs),
                _ => layer.topics = layer.section(name, value, errs),
            }
        }
        layer
    }

    /// Deserializes one section. An entry that fails (an unknown key, a sub-table that is not
    /// a table) is reported and left out, and the rest is read again, so that every such entry
    /// is reported and the section's valid keys still count.
    fn section<T: DeserializeOwned + Default>(
        &mut self,
        name: &str,
        mut value: Spanned<toml::de::DeValue<'_>>,
        errs: &mut Errors,
    ) -> T {
        loop {
            let e = match T::deserialize(toml::de::ValueDeserializer::from(value.clone())) {
                Ok(section) => return section,
                Err(e) => e,
            };
            let message = match error_keys(&e) {
                Some(keys) => format!("{} for key {name}.{keys}", e.message()),
                None => format!("{name}: {}", e.message()),
            };
            errs.push(self.at_opt(e.span()), message);
            let within = |span: Range<usize>, inner: &Range<usize>| {
                span.start <= inner.start && inner.end <= span.end
            };
            let dropped = match (e.span(), value.get_mut()) {
                (Some(at), toml::de::DeValue::Table(table)) => {
                    let culprit = table
                        .iter()
                        .find(|(k, v)| within(k.span(), &at) || within(v.span(), &at))
                        .map(|(k, _)| k.clone());
                    culprit.is_some_and(|k| table.remove(&k).is_some())
                }
                _ => false,
            };
            if !dropped {
                self.complete = false;
                return T::default();
            }
        }
    }

    fn at_opt(&self, span: Option<Range<usize>>) -> Source {
        let (path, text) = self
            .doc
            .as_ref()
            .map_or((PathBuf::new(), ""), |(p, t)| (p.clone(), t.as_str()));
        let (line, col) = match span {
            Some(span) => {
                let (line, col) = line_col(text, span.start);
                (Some(line), Some(col))
            }
            None => (None, None),
        };
        Source::File { path, line, col }
    }

    fn at(&self, span: Range<usize>) -> Source {
        self.at_opt(Some(span))
    }

    /// Where a key of a property table is written.
    fn at_key(&self, table: Option<&RawProperties>, key: &str) -> Source {
        let span = table
            .into_iter()
            .flatten()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(k, _)| k.span());
        self.at_opt(span)
    }

    /// Converts a leaf; a wrong type is an error naming the key and the type wanted.
    fn value<T>(
        &self,
        leaf: &Leaf,
        key: &str,
        expected: &str,
        convert: impl Fn(&toml::Value) -> Option<T>,
        errs: &mut Errors,
    ) -> Option<(T, Source)> {
        let leaf = leaf.as_ref()?;
        let source = self.at(leaf.span());
        match convert(leaf.get_ref()) {
            Some(v) => Some((v, source)),
            None => {
                let found = found(leaf.get_ref());
                errs.push(
                    source,
                    format!("invalid type: found {found}, expected {expected} for key {key}"),
                );
                None
            }
        }
    }

    fn string(&self, leaf: &Leaf, key: &str, errs: &mut Errors) -> Option<(String, Source)> {
        self.value(
            leaf,
            key,
            "a string",
            |v| v.as_str().map(str::to_owned),
            errs,
        )
    }

    fn integer(&self, leaf: &Leaf, key: &str, errs: &mut Errors) -> Option<(i128, Source)> {
        self.value(
            leaf,
            key,
            "an integer",
            |v| v.as_integer().map(i128::from),
            errs,
        )
    }

    fn boolean(&self, leaf: &Leaf, key: &str, errs: &mut Errors) -> Option<(bool, Source)> {
        self.value(leaf, key, "a boolean", toml::Value::as_bool, errs)
    }

    /// An array of glob patterns; `None` when absent or not an array.
    fn globs(&self, leaf: &Leaf, key: &str, errs: &mut Errors) -> Option<Vec<Glob>> {
        let (items, source) = self.value(
            leaf,
            key,
            "an array of strings",
            |v| v.as_array().cloned(),
            errs,
        )?;
        let mut globs = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(pattern) = item.as_str() else {
                errs.push(
                    source.clone(),
                    format!(
                        "invalid type: found {}, expected a string for key {key}[{i}]",
                        found(item)
                    ),
                );
                continue;
            };
            match Glob::new(pattern) {
                Ok(glob) => globs.push(glob),
                Err(problem) => errs.push(source.clone(), format!("{key}[{i}]: {problem}")),
            }
        }
        Some(globs)
    }

    /// A table of librdkafka properties (`reserved`: refuse the ones fanout sets) or of topic
    /// configs. Values are strings; integers, floats and booleans are stringified.
    fn properties(
        &self,
        table: Option<&RawProperties>,
        name: &str,
        reserved: bool,
        errs: &mut Errors,
    ) -> BTreeMap<String, String> {
        let mut properties = BTreeMap::new();
        for (key, value) in table.into_iter().flatten() {
            let key_name = format!("{name}.{:?}", key.get_ref());
            if let Err(problem) = check_property_key(key.get_ref(), reserved) {
                errs.push(self.at(key.span()), format!("{key_name}: {problem}"));
                continue;
            }
            let text = match value.get_ref() {
                toml::Value::String(s) => Some(s.clone()),
                toml::Value::Integer(i) => Some(i.to_string()),
                toml::Value::Boolean(b) => Some(b.to_string()),
                toml::Value::Float(x) if x.is_finite() => Some(x.to_string()),
                _ => None,
            };
            match text {
                Some(text) => {
                    properties.insert(key.get_ref().clone(), text);
                }
                // The value itself is not shown: it may be a secret.
                None => errs.push(
                    self.at(value.span()),
                    format!(
                        "invalid type: found {}, expected a string, integer or boolean for key \
                         {key_name}",
                        a_type(value.get_ref().type_str())
                    ),
                ),
            }
        }
        properties
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// A value's type, with an article: "an integer", "a string".
fn a_type(type_str: &str) -> String {
    let article = if type_str.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {type_str}")
}

/// A value for an error message: its type, and the value itself if it is a scalar.
fn found(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("string {s:?}"),
        toml::Value::Integer(i) => format!("integer {i}"),
        toml::Value::Float(x) => format!("float {x}"),
        toml::Value::Boolean(b) => format!("boolean {b}"),
        toml::Value::Datetime(d) => format!("datetime {d}"),
        toml::Value::Array(_) | toml::Value::Table(_) => a_type(v.type_str()),
    }
}

/// The dotted key path inside a section at which toml's deserializer failed, if it says. toml
/// keeps it private but prints it (`in `a.b``) when the error has no input attached.
fn error_keys(e: &toml::de::Error) -> Option<String> {
    let mut bare = e.clone();
    bare.set_input(None);
    let text = bare.to_string();
    let rest = text.strip_prefix(e.message())?.trim();
    let keys = rest.strip_prefix("in `")?.strip_suffix('`')?;
    (!keys.is_empty()).then(|| keys.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const MINIMAL: &str = "[kafka]\nbootstrap_servers = \"file:9092\"\n";

    struct Env(HashMap<String, String>);

    impl Env {
        fn of(pairs: &[(&str, &str)]) -> Self {
            Self(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        }
        fn get(&self, key: &str) -> Option<String> {
            self.0.get(key).cloned()
        }
    }

    /// A config file in a temporary directory, named `fanout.toml`.
    struct File {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn file(text: &str) -> File {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fanout.toml");
        std::fs::write(&path, text).unwrap();
        File { _dir: dir, path }
    }

    fn load_with(
        text: Option<&str>,
        env: &[(&str, &str)],
        flags: &Overrides,
    ) -> Result<Config, ConfigErrors> {
        let env = Env::of(env);
        let f = text.map(file);
        load(f.as_ref().map(|f| f.path.as_path()), &|k| env.get(k), flags)
    }

    fn ok(text: Option<&str>, env: &[(&str, &str)], flags: &Overrides) -> Config {
        load_with(text, env, flags).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
    }

    fn errors(text: Option<&str>, env: &[(&str, &str)], flags: &Overrides) -> Vec<ConfigError> {
        match load_with(text, env, flags) {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(e) => e.errors,
        }
    }

    /// The messages of errors, each as displayed but without the file's temporary directory.
    fn rendered(errors: &[ConfigError]) -> Vec<String> {
        errors
            .iter()
            .map(|e| match &e.source {
                Source::File { path, .. } => e
                    .to_string()
                    .replace(&path.display().to_string(), "fanout.toml"),
                _ => e.to_string(),
            })
            .collect()
    }

    fn file_pos(e: &ConfigError) -> (Option<usize>, Option<usize>) {
        match &e.source {
            Source::File { line, col, .. } => (*line, *col),
            other => panic!("expected a file source, got {other:?}"),
        }
    }

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply_when_only_bootstrap_servers_are_given() {
        let c = ok(
            None,
            &[(ENV_BOOTSTRAP_SERVERS, "b:9092")],
            &Overrides::default(),
        );
        assert_eq!(c.file, None);
        assert_eq!(c.bootstrap_servers, "b:9092");
        assert_eq!(c.source_topic, "cluster-events");
        assert_eq!(c.group_id, "fanout");
        assert_eq!(c.dead_letter_topic, "fanout-dead-letter");
        assert_eq!(c.commit_interval, Duration::from_millis(5000));
        assert!(c.common_properties.is_empty());
        assert!(c.consumer_properties.is_empty());
        assert!(c.producer_properties.is_empty());
        assert_eq!(c.plugins_dir, PathBuf::from("/etc/fanout/plugins"));
        assert_eq!(c.memory_limit_bytes, 64 << 20);
        assert_eq!(c.call_deadline, Duration::from_millis(100));
        assert_eq!(c.max_destinations, 64);
        assert_eq!(c.max_record_bytes, 1_000_000);
        assert_eq!(c.cache_dir, None);
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(c.workers, cores.clamp(1, 256));
        assert_eq!(c.max_in_flight, 10_000);
        assert_eq!(c.shutdown_timeout, Duration::from_millis(30_000));
        assert_eq!(c.topics, TopicsConfig::default());
        assert_eq!(c.topics.allow, vec![Glob::new("*").unwrap()]);
        assert_eq!(c.topics.partitions, 3);
        assert_eq!(c.topics.replication_factor, -1);
        assert!(!c.topics.create_missing);
    }

    #[test]
    fn reload_settings_are_read_and_checked() {
        let defaults = ok(Some(MINIMAL), &[], &Overrides::default()).reload;
        assert_eq!(
            defaults.watch,
            Some(crate::reload::WatchSettings::default())
        );
        assert_eq!(defaults.rollback, crate::reload::RollbackPolicy::default());

        let text = format!(
            "{MINIMAL}\n[plugins]\nwatch = false\nrollback = false\nrollback_fault_percent = 20\n\
             rollback_window_events = 50\nrollback_window_ms = 5000\n"
        );
        let c = ok(Some(&text), &[], &Overrides::default()).reload;
        assert_eq!(c.watch, None);
        assert!(!c.rollback.enabled);
        assert_eq!(c.rollback.max_fault_ratio, 0.2);
        assert_eq!(c.rollback.window_events, 50);
        assert_eq!(c.rollback.window, Duration::from_secs(5));
        // The effective config prints them, and loads back the same.
        let printed = ok(Some(&text), &[], &Overrides::default()).redacted();
        assert_eq!(ok(Some(&printed), &[], &Overrides::default()).reload, c);

        let bad = format!(
            "{MINIMAL}\n[plugins]\nrollback_fault_percent = 0\nrescan_interval_ms = 10\nwatch = \"yes\"\n"
        );
        let messages = rendered(&errors(Some(&bad), &[], &Overrides::default())).join("\n");
        for wanted in [
            "plugins.rollback_fault_percent: 0 is out of range 1..=100",
            "plugins.rescan_interval_ms: 10 is out of range 1000..=3600000",
            "plugins.watch",
        ] {
            assert!(messages.contains(wanted), "{wanted:?} not in:\n{messages}");
        }
    }

    #[test]
    fn every_file_setting_is_read() {
        let text = r#"
[kafka]
bootstrap_servers = "a:1,b:2"
source_topic = "events"
group_id = "g"
dead_letter_topic = "dlq"
commit_interval_ms = 1000
[kafka.properties]
"security.protocol" = "SASL_SSL"
[kafka.consumer]
"isolation.level" = "read_committed"
[kafka.producer]
"linger.ms" = 5
"compression.type" = "zstd"

[plugins]
dir = "/p"
memory_limit_mib = 128
deadline_ms = 250
max_destinations = 8
max_record_bytes = 5000
cache_dir = "/c"

[pipeline]
workers = 3
max_in_flight = 500
shutdown_timeout_ms = 2000

[topics]
allow = ["ns-*", "audit"]
deny = ["ns-secret*"]
create_missing = true
partitions = 6
replication_factor = 2
[topics.configs]
"retention.ms" = "604800000"
"#;
        let c = ok(Some(text), &[], &Overrides::default());
        assert!(c.file.as_ref().unwrap().ends_with("fanout.toml"));
        assert_eq!(c.bootstrap_servers, "a:1,b:2");
        assert_eq!(c.source_topic, "events");
        assert_eq!(c.group_id, "g");
        assert_eq!(c.dead_letter_topic, "dlq");
        assert_eq!(c.commit_interval, Duration::from_secs(1));
        assert_eq!(
            c.common_properties,
            props(&[("security.protocol", "SASL_SSL")])
        );
        assert_eq!(
            c.consumer_properties,
            props(&[("isolation.level", "read_committed")])
        );
        assert_eq!(
            c.producer_properties,
            props(&[("compression.type", "zstd"), ("linger.ms", "5")])
        );
        assert_eq!(c.plugins_dir, PathBuf::from("/p"));
        assert_eq!(c.memory_limit_bytes, 128 << 20);
        assert_eq!(c.call_deadline, Duration::from_millis(250));
        assert_eq!(c.max_destinations, 8);
        assert_eq!(c.max_record_bytes, 5000);
        assert_eq!(c.cache_dir, Some(PathBuf::from("/c")));
        assert_eq!(c.workers, 3);
        assert_eq!(c.max_in_flight, 500);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(2));
        assert_eq!(
            c.topics.allow,
            vec![Glob::new("ns-*").unwrap(), Glob::new("audit").unwrap()]
        );
        assert_eq!(c.topics.deny, vec![Glob::new("ns-secret*").unwrap()]);
        assert!(c.topics.create_missing);
        assert_eq!(c.topics.partitions, 6);
        assert_eq!(c.topics.replication_factor, 2);
        assert_eq!(c.topics.configs, props(&[("retention.ms", "604800000")]));
    }

    #[test]
    fn bootstrap_servers_precedence_flag_fanout_env_endpoint_file() {
        let text = Some(MINIMAL);
        let flag = Overrides {
            bootstrap_servers: Some("flag:9092".into()),
            ..Overrides::default()
        };
        let all = [
            (ENV_BOOTSTRAP_SERVERS, "fanout-env:9092"),
            ("ENDPOINT", "endpoint:9092"),
        ];
        assert_eq!(ok(text, &all, &flag).bootstrap_servers, "flag:9092");
        assert_eq!(
            ok(text, &all, &Overrides::default()).bootstrap_servers,
            "fanout-env:9092"
        );
        assert_eq!(
            ok(text, &all[1..], &Overrides::default()).bootstrap_servers,
            "endpoint:9092"
        );
        assert_eq!(
            ok(text, &[], &Overrides::default()).bootstrap_servers,
            "file:9092"
        );
    }

    #[test]
    fn source_topic_precedence_flag_fanout_env_topic_file_default() {
        let text = "[kafka]\nbootstrap_servers = \"b:1\"\nsource_topic = \"from-file\"\n";
        let flag = Overrides {
            source_topic: Some("from-flag".into()),
            ..Overrides::default()
        };
        let all = [
            (ENV_SOURCE_TOPIC, "from-fanout-env"),
            ("TOPIC", "from-topic"),
        ];
        let none = Overrides::default();
        assert_eq!(ok(Some(text), &all, &flag).source_topic, "from-flag");
        assert_eq!(ok(Some(text), &all, &none).source_topic, "from-fanout-env");
        assert_eq!(ok(Some(text), &all[1..], &none).source_topic, "from-topic");
        assert_eq!(ok(Some(text), &[], &none).source_topic, "from-file");
        assert_eq!(ok(Some(MINIMAL), &[], &none).source_topic, "cluster-events");
    }

    #[test]
    fn string_and_path_settings_precedence_flag_env_file_default() {
        let text = r#"
[kafka]
bootstrap_servers = "b:1"
group_id = "file-group"
dead_letter_topic = "file-dlq"
[plugins]
dir = "/file/plugins"
cache_dir = "/file/cache"
[pipeline]
workers = 3
"#;
        let env = [
            (ENV_GROUP_ID, "env-group"),
            (ENV_DEAD_LETTER_TOPIC, "env-dlq"),
            (ENV_PLUGINS, "/env/plugins"),
            (ENV_CACHE_DIR, "/env/cache"),
            (ENV_WORKERS, "5"),
        ];
        let flags = Overrides {
            group_id: Some("flag-group".into()),
            dead_letter_topic: Some("flag-dlq".into()),
            plugins: Some("/flag/plugins".into()),
            cache_dir: Some("/flag/cache".into()),
            workers: Some(7),
            ..Overrides::default()
        };
        let none = Overrides::default();

        let c = ok(Some(text), &env, &flags);
        assert_eq!(
            (c.group_id.as_str(), c.dead_letter_topic.as_str(), c.workers),
            ("flag-group", "flag-dlq", 7)
        );
        assert_eq!(c.plugins_dir, PathBuf::from("/flag/plugins"));
        assert_eq!(c.cache_dir, Some(PathBuf::from("/flag/cache")));

        let c = ok(Some(text), &env, &none);
        assert_eq!(
            (c.group_id.as_str(), c.dead_letter_topic.as_str(), c.workers),
            ("env-group", "env-dlq", 5)
        );
        assert_eq!(c.plugins_dir, PathBuf::from("/env/plugins"));
        assert_eq!(c.cache_dir, Some(PathBuf::from("/env/cache")));

        let c = ok(Some(text), &[], &none);
        assert_eq!(
            (c.group_id.as_str(), c.dead_letter_topic.as_str(), c.workers),
            ("file-group", "file-dlq", 3)
        );
        assert_eq!(c.plugins_dir, PathBuf::from("/file/plugins"));
        assert_eq!(c.cache_dir, Some(PathBuf::from("/file/cache")));

        let c = ok(Some(MINIMAL), &[], &none);
        assert_eq!(
            (c.group_id.as_str(), c.dead_letter_topic.as_str()),
            ("fanout", "fanout-dead-letter")
        );
        assert_eq!(c.plugins_dir, PathBuf::from(DEFAULT_PLUGINS_DIR));
        assert_eq!(c.cache_dir, None);
    }

    #[test]
    fn limit_flags_beat_the_file() {
        let text = "[kafka]\nbootstrap_servers = \"b:1\"\n[plugins]\nmemory_limit_mib = 8\n\
                    deadline_ms = 9\nmax_destinations = 10\nmax_record_bytes = 11\n";
        let c = ok(Some(text), &[], &Overrides::default());
        assert_eq!(
            (
                c.memory_limit_bytes,
                c.call_deadline,
                c.max_destinations,
                c.max_record_bytes
            ),
            (8 << 20, Duration::from_millis(9), 10, 11)
        );
        let flags = Overrides {
            memory_limit_mib: Some(16),
            deadline_ms: Some(20),
            max_destinations: Some(30),
            max_record_bytes: Some(40),
            ..Overrides::default()
        };
        let c = ok(Some(text), &[], &flags);
        assert_eq!(
            (
                c.memory_limit_bytes,
                c.call_deadline,
                c.max_destinations,
                c.max_record_bytes
            ),
            (16 << 20, Duration::from_millis(20), 30, 40)
        );
    }

    #[test]
    fn the_old_tools_environment_alone_is_enough() {
        let c = ok(
            None,
            &[("ENDPOINT", "kafka:9092"), ("TOPIC", "k8s-events")],
            &Overrides::default(),
        );
        assert_eq!(c.bootstrap_servers, "kafka:9092");
        assert_eq!(c.source_topic, "k8s-events");
        assert_eq!(c.group_id, "fanout");
        assert_eq!(c.dead_letter_topic, "fanout-dead-letter");
        assert_eq!(c.file, None);
    }

    #[test]
    fn missing_bootstrap_servers_is_an_error() {
        let errs = errors(
            Some("[kafka]\ngroup_id = \"g\"\n"),
            &[],
            &Overrides::default(),
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].source, Source::Default);
        assert_eq!(
            errs[0].to_string(),
            "kafka.bootstrap_servers is required: set it in the config file, or set \
             FANOUT_BOOTSTRAP_SERVERS (or ENDPOINT), or pass --bootstrap-servers"
        );
        // No file at all, and nothing else: the same.
        let errs = errors(None, &[("TOPIC", "t")], &Overrides::default());
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("is required"));
    }

    #[test]
    fn all_errors_are_reported_together_each_with_its_source() {
        let text = "[kafka]\n\
                    bootstrap_servers = \"b:1\"\n\
                    commit_interval_ms = \"x\"\n\
                    [plugins]\n\
                    memory_limit_mib = 0\n\
                    [kafka.properties]\n\
                    \"enable.auto.offset.store\" = \"true\"\n";
        let flags = Overrides {
            group_id: Some(String::new()),
            ..Overrides::default()
        };
        let errs = errors(Some(text), &[(ENV_WORKERS, "abc")], &flags);
        let shown = rendered(&errs);
        let want = [
            "--group-id: must not be empty",
            "fanout.toml: line 3, column 22: invalid type: found string \"x\", expected an \
             integer for key kafka.commit_interval_ms",
            "fanout.toml: line 7, column 1: kafka.properties.\"enable.auto.offset.store\": \
             fanout sets this itself (at-least-once depends on it); remove it",
            "fanout.toml: line 5, column 20: plugins.memory_limit_mib: 0 is out of range \
             1..=4096",
            "FANOUT_WORKERS: \"abc\" is not a whole number",
        ];
        for w in want {
            assert!(
                shown.contains(&w.to_string()),
                "missing {w:?} in {shown:#?}"
            );
        }
        assert_eq!(errs.len(), want.len(), "{shown:#?}");

        // Display: one line per error.
        let all = ConfigErrors { errors: errs };
        let text = all.to_string();
        assert_eq!(text.lines().count(), want.len(), "{text}");
        assert!(text.lines().any(|l| l == "--group-id: must not be empty"));
    }

    #[test]
    fn a_syntax_error_gives_line_and_column() {
        let text = "[kafka]\nbootstrap_servers = \"b:1\"\ngroup_id = fanout\n";
        let errs = errors(Some(text), &[], &Overrides::default());
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(file_pos(&errs[0]), (Some(3), Some(12)));
        assert!(
            rendered(&errs)[0].starts_with("fanout.toml: line 3, column 12: "),
            "{errs:?}"
        );
        // The file's syntax error does not hide the environment's problems.
        let errs = errors(Some(text), &[(ENV_WORKERS, "x")], &Overrides::default());
        // (and "bootstrap servers are required" is not claimed: the file may well set them).
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[1].source, Source::Env(ENV_WORKERS));
    }

    #[test]
    fn a_wrong_type_names_the_key_and_line() {
        let text = "[kafka]\nbootstrap_servers = \"b:1\"\n\n[pipeline]\nworkers = \"four\"\n\
                    [topics]\ncreate_missing = \"yes\"\nallow = \"*\"\n";
        let errs = errors(Some(text), &[], &Overrides::default());
        let shown = rendered(&errs);
        assert_eq!(
            shown,
            [
                "fanout.toml: line 5, column 11: invalid type: found string \"four\", expected \
                 an integer for key pipeline.workers",
                "fanout.toml: line 7, column 18: invalid type: found string \"yes\", expected a \
                 boolean for key topics.create_missing",
                "fanout.toml: line 8, column 9: invalid type: found string \"*\", expected an \
                 array of strings for key topics.allow",
            ]
        );
    }

    #[test]
    fn a_section_that_is_not_a_table_or_a_nested_wrong_type_is_reported() {
        let text = "plugins = 3\n[kafka]\nbootstrap_servers = \"b:1\"\nproperties = 5\n";
        let shown = rendered(&errors(Some(text), &[], &Overrides::default()));
        assert_eq!(
            shown,
            [
                "fanout.toml: line 1, column 11: invalid type: found an integer, expected a \
                 table for key plugins",
                "fanout.toml: line 4, column 14: invalid type: expected a table for key \
                 kafka.properties",
            ]
        );
        // The value of a property table that is not a table is not shown: it may be a secret.
        let text = format!("{MINIMAL}consumer = \"hunter2\"\n");
        let shown = rendered(&errors(Some(&text), &[], &Overrides::default()));
        assert_eq!(
            shown,
            [
                "fanout.toml: line 3, column 12: invalid type: expected a table for key \
              kafka.consumer"
            ]
        );
    }

    #[test]
    fn delivery_is_at_least_once_unless_exactly_once_is_asked_for() {
        let c = ok(Some(MINIMAL), &[], &Overrides::default());
        assert_eq!(c.delivery, Delivery::AtLeastOnce);

        let text = format!("{MINIMAL}delivery = \"exactly-once\"\ntransaction_max_events = 700\n");
        let c = ok(
            Some(&text),
            &[("HOSTNAME", "fanout-7d9f-x2")],
            &Overrides::default(),
        );
        assert_eq!(
            c.delivery,
            Delivery::ExactlyOnce(TransactionSettings {
                transactional_id: "fanout-fanout-7d9f-x2".into(),
                max_events: 700,
                max_duration: Duration::from_millis(100),
            }),
            "the id defaults to <group>-<pod name>: unique per replica, kept across restarts"
        );
        // The effective config prints it, and loads back the same.
        assert_eq!(
            ok(Some(&c.redacted()), &[], &Overrides::default()).delivery,
            c.delivery
        );

        // The flag wins over the environment, which wins over the file.
        let flags = Overrides {
            transactional_id: Some("from-flag".into()),
            ..Overrides::default()
        };
        let c = ok(
            Some(&text),
            &[("FANOUT_TRANSACTIONAL_ID", "from-env")],
            &flags,
        );
        let Delivery::ExactlyOnce(t) = c.delivery else {
            panic!("exactly-once")
        };
        assert_eq!(t.transactional_id, "from-flag");
        let env = [("FANOUT_DELIVERY", "at-least-once")];
        assert_eq!(
            ok(Some(&text), &env, &Overrides::default()).delivery,
            Delivery::AtLeastOnce
        );
    }

    #[test]
    fn delivery_settings_are_checked_where_they_are_written() {
        let text = format!(
            "{MINIMAL}delivery = \"exactly_once\"\ntransaction_max_ms = 5\n\
             [kafka.producer]\n\"transactional.id\" = \"mine\"\n"
        );
        let shown = rendered(&errors(Some(&text), &[], &Overrides::default()));
        assert_eq!(
            shown,
            [
                "fanout.toml: line 3, column 12: kafka.delivery: \"exactly_once\" is not a \
                 delivery guarantee: \"at-least-once\" or \"exactly-once\"",
                "fanout.toml: line 4, column 22: kafka.transaction_max_ms: 5 is out of range \
                 10..=60000",
                "fanout.toml: line 6, column 1: kafka.producer.\"transactional.id\": set \
                 kafka.transactional_id (FANOUT_TRANSACTIONAL_ID, --transactional-id) with \
                 kafka.delivery = \"exactly-once\" instead; remove it",
            ]
        );
    }

    #[test]
    fn unknown_keys_are_refused_naming_the_valid_ones() {
        let text = "[kafka]\nbootstrap_servers = \"b:1\"\ngroupid = \"g\"\nsoruce_topic = \"t\"\n\
                    [plugins]\ndri = \"/p\"\n[pipelin]\nworkers = 2\n";
        let errs = errors(Some(text), &[], &Overrides::default());
        let shown = rendered(&errs);
        assert_eq!(shown.len(), 4, "{shown:#?}");
        assert_eq!(
            shown[0],
            "fanout.toml: line 3, column 1: kafka: unknown field `groupid`, expected one of \
             `bootstrap_servers`, `source_topic`, `group_id`, `dead_letter_topic`, \
             `commit_interval_ms`, `delivery`, `transactional_id`, `transaction_max_events`, \
             `transaction_max_ms`, `properties`, `consumer`, `producer`, `secret_files`, \
             `secret_env`"
        );
        // Every unknown key of a section, not just the first.
        assert!(
            shown[1]
                .starts_with("fanout.toml: line 4, column 1: kafka: unknown field `soruce_topic`"),
            "{shown:#?}"
        );
        assert!(
            shown[2].starts_with(
                "fanout.toml: line 6, column 1: plugins: unknown field `dri`, expected one of \
                 `dir`, "
            ),
            "{shown:#?}"
        );
        assert_eq!(
            shown[3],
            "fanout.toml: line 7, column 2: unknown field `pipelin`, expected one of `kafka`, \
             `plugins`, `pipeline`, `http`, `topics`"
        );
        // The valid keys of a section with an unknown one still count (here: still checked).
        let text = "[kafka]\nbootstrap_servers = \"b:1\"\n[topics]\nallow = [\"a b\"]\nextra = 1\n";
        let shown = rendered(&errors(Some(text), &[], &Overrides::default()));
        assert_eq!(shown.len(), 2, "{shown:#?}");
        assert!(
            shown[0].contains("topics.allow[0]: \"a b\" has characters"),
            "{shown:#?}"
        );
        assert!(
            shown[1].contains("topics: unknown field `extra`"),
            "{shown:#?}"
        );
    }

    #[test]
    fn reserved_properties_are_refused_everywhere() {
        for table in ["properties", "consumer", "producer"] {
            for (key, _) in RESERVED_PROPERTIES {
                let text = format!("{MINIMAL}[kafka.{table}]\n\"{key}\" = \"x\"\n");
                let errs = errors(Some(&text), &[], &Overrides::default());
                assert_eq!(errs.len(), 1, "{table} {key}: {errs:?}");
                assert!(
                    errs[0]
                        .message
                        .starts_with(&format!("kafka.{table}.\"{key}\": ")),
                    "{errs:?}"
                );
                assert!(errs[0].message.ends_with("; remove it"), "{errs:?}");
                assert_eq!(file_pos(&errs[0]), (Some(4), Some(1)));
            }
        }
        let flags = Overrides {
            kafka_properties: vec!["group.id=x".into(), "ACKS=1".into()],
            ..Overrides::default()
        };
        let errs = errors(Some(MINIMAL), &[], &flags);
        assert_eq!(
            rendered(&errs),
            [
                "--kafka-property: \"group.id\": set kafka.group_id (FANOUT_GROUP_ID, \
                 --group-id) instead; remove it",
                "--kafka-property: \"ACKS\": fanout sets this itself (an offset is committed \
                 only once every write is fully replicated); remove it",
            ]
        );
        // Not reserved: isolation.level; nor are reserved names in topic configs.
        let text = format!(
            "{MINIMAL}[kafka.consumer]\n\"isolation.level\" = \"read_committed\"\n\
             [topics.configs]\n\"acks\" = \"x\"\n"
        );
        let c = ok(Some(&text), &[], &Overrides::default());
        assert_eq!(c.consumer_properties["isolation.level"], "read_committed");
    }

    #[test]
    fn kafka_property_flags_parse_key_value_and_override_the_file() {
        let text = format!(
            "{MINIMAL}[kafka.properties]\n\"client.id\" = \"file\"\n\"socket.timeout.ms\" = 1\n"
        );
        let flags = Overrides {
            kafka_properties: vec![
                "client.id=flag".into(),
                "sasl.jaas.config=a=b=c".into(),
                "debug=".into(),
                "client.id=last".into(),
            ],
            ..Overrides::default()
        };
        let c = ok(Some(&text), &[], &flags);
        assert_eq!(
            c.common_properties,
            props(&[
                ("client.id", "last"),
                ("debug", ""),
                ("sasl.jaas.config", "a=b=c"),
                ("socket.timeout.ms", "1"),
            ])
        );

        let flags = Overrides {
            kafka_properties: vec![
                "client.id".into(),
                "sasl.password:hunter2".into(),
                "=x".into(),
                "client id=x".into(),
            ],
            ..Overrides::default()
        };
        let errs = errors(Some(MINIMAL), &[], &flags);
        let shown = rendered(&errs);
        assert_eq!(
            shown,
            [
                "--kafka-property: expected KEY=VALUE, got \"client.id\"",
                "--kafka-property: expected KEY=VALUE, got an argument without `=` (not shown: \
                 it looks secret)",
                "--kafka-property: \"\": the name must not be empty",
                "--kafka-property: \"client id\": the name must not contain whitespace",
            ]
        );
        assert!(!format!("{shown:?}{errs:?}").contains("hunter2"));
    }

    #[test]
    fn consumer_and_producer_properties_override_the_common_ones() {
        let text = format!(
            "{MINIMAL}[kafka.properties]\n\"client.id\" = \"common\"\n\"debug\" = \"all\"\n\
             [kafka.consumer]\n\"client.id\" = \"consumer\"\n\
             [kafka.producer]\n\"linger.ms\" = 5\n"
        );
        let c = ok(Some(&text), &[], &Overrides::default());
        assert_eq!(
            c.merged_consumer_properties(),
            props(&[("client.id", "consumer"), ("debug", "all")])
        );
        assert_eq!(
            c.merged_producer_properties(),
            props(&[
                ("client.id", "common"),
                ("debug", "all"),
                ("linger.ms", "5")
            ])
        );
    }

    #[test]
    fn property_values_are_stringified_or_refused() {
        let text = format!(
            "{MINIMAL}[kafka.properties]\n\"a\" = 42\n\"b\" = true\n\"c\" = 0.5\n\"d\" = -7\n\
             [topics.configs]\n\"retention.ms\" = 604800000\n"
        );
        let c = ok(Some(&text), &[], &Overrides::default());
        assert_eq!(
            c.common_properties,
            props(&[("a", "42"), ("b", "true"), ("c", "0.5"), ("d", "-7")])
        );
        assert_eq!(c.topics.configs["retention.ms"], "604800000");

        let text = format!(
            "{MINIMAL}[kafka.producer]\n\"sasl.password\" = [\"hunter2\"]\n\"x\" = 1979-05-27\n\
             \"y\" = {{ z = 1 }}\n\"bad key\" = \"v\"\n\"\" = \"v\"\n"
        );
        let errs = errors(Some(&text), &[], &Overrides::default());
        let shown = rendered(&errs);
        assert_eq!(
            shown,
            [
                "fanout.toml: line 4, column 19: invalid type: found an array, expected a \
                 string, integer or boolean for key kafka.producer.\"sasl.password\"",
                "fanout.toml: line 5, column 7: invalid type: found a datetime, expected a \
                 string, integer or boolean for key kafka.producer.\"x\"",
                "fanout.toml: line 6, column 7: invalid type: found a table, expected a \
                 string, integer or boolean for key kafka.producer.\"y\"",
                "fanout.toml: line 7, column 1: kafka.producer.\"bad key\": the name must not \
                 contain whitespace",
                "fanout.toml: line 8, column 1: kafka.producer.\"\": the name must not be empty",
            ]
        );
        assert!(!shown.concat().contains("hunter2"));
    }

    #[test]
    fn secrets_never_appear_in_redacted_or_debug() {
        let text = format!(
            "{MINIMAL}[kafka.properties]\n\"sasl.password\" = \"hunter2\"\n\
             \"sasl.username\" = \"alice\"\n\"ssl.key.pem\" = \"PEMSECRET\"\n\
             [kafka.consumer]\n\"sasl.oauthbearer.client.secret\" = \"OAUTHSECRET\"\n\
             [kafka.producer]\n\"SASL.JAAS.CONFIG\" = \"JAASSECRET\"\n"
        );
        let flags = Overrides {
            kafka_properties: vec![
                "ssl.keystore.password=KEYSTORESECRET".into(),
                "my.token=TOKENSECRET".into(),
            ],
            ..Overrides::default()
        };
        let c = ok(Some(&text), &[], &flags);
        assert_eq!(c.common_properties["sasl.password"], "hunter2");
        let secrets = [
            "hunter2",
            "PEMSECRET",
            "OAUTHSECRET",
            "JAASSECRET",
            "KEYSTORESECRET",
            "TOKENSECRET",
        ];
        let redacted = c.redacted();
        let debug = format!("{c:?} {c:#?}");
        let overrides = format!("{flags:?}");
        for secret in secrets {
            assert!(!redacted.contains(secret), "{secret} in:\n{redacted}");
            assert!(!debug.contains(secret), "{secret} in:\n{debug}");
            assert!(!overrides.contains(secret), "{secret} in:\n{overrides}");
        }
        assert!(
            redacted.contains("\"sasl.password\" = \"<redacted>\""),
            "{redacted}"
        );
        assert!(
            redacted.contains("\"sasl.username\" = \"alice\""),
            "{redacted}"
        );
        assert!(debug.contains("\"sasl.username\": \"alice\""), "{debug}");
        assert!(
            debug.contains("\"sasl.password\": \"<redacted>\""),
            "{debug}"
        );
        assert!(overrides.contains("my.token=<redacted>"), "{overrides}");
    }

    #[test]
    fn redacted_is_the_file_layout_and_loads_back() {
        let text = r#"
[kafka]
bootstrap_servers = "a:1"
source_topic = "events"
commit_interval_ms = 700
[kafka.properties]
"security.protocol" = "SASL_SSL"
[kafka.producer]
"linger.ms" = "5"
[plugins]
dir = "/p"
memory_limit_mib = 32
cache_dir = "/c"
[pipeline]
workers = 4
[topics]
allow = ["ns-*"]
deny = ["ns-x"]
create_missing = true
replication_factor = 3
[topics.configs]
"retention.ms" = "1000"
"#;
        let c = ok(Some(text), &[], &Overrides::default());
        let out = c.redacted();
        assert!(
            out.starts_with("# fanout's effective configuration"),
            "{out}"
        );
        assert!(out.contains("[kafka]\n"), "{out}");
        assert!(out.contains("commit_interval_ms = 700\n"), "{out}");
        assert!(out.contains("memory_limit_mib = 32\n"), "{out}");
        let mut again = ok(Some(&out), &[], &Overrides::default());
        again.file.clone_from(&c.file);
        assert_eq!(again, c, "{out}");
        // And without a file or cache dir.
        let c = ok(None, &[("ENDPOINT", "e:1")], &Overrides::default());
        let again = ok(Some(&c.redacted()), &[], &Overrides::default());
        assert_eq!(again.cache_dir, None);
        assert_eq!(again.bootstrap_servers, "e:1");
        assert_eq!(again.workers, c.workers);
    }

    #[test]
    fn deny_wins_over_allow() {
        let g = |p: &str| Glob::new(p).unwrap();
        let topics = TopicsConfig {
            allow: vec![g("ns-*"), g("audit")],
            deny: vec![g("ns-kube-*"), g("*-secret")],
            ..TopicsConfig::default()
        };
        assert_eq!(topics.permits("ns-default"), Ok(()));
        assert_eq!(topics.permits("audit"), Ok(()));
        assert_eq!(
            topics.permits("ns-kube-system"),
            Err("matches deny pattern `ns-kube-*`".to_owned())
        );
        assert_eq!(
            topics.permits("ns-x-secret"),
            Err("matches deny pattern `*-secret`".to_owned())
        );
        assert_eq!(
            topics.permits("other"),
            Err("matches no allow pattern".to_owned())
        );
        assert_eq!(TopicsConfig::default().permits("anything"), Ok(()));
    }

    #[test]
    fn topic_patterns_in_the_file_are_checked() {
        let text = format!(
            "{MINIMAL}[topics]\nallow = [\"ok-*\", \"bad/x\", 3, \"\"]\ndeny = [\"a b\"]\n"
        );
        let shown = rendered(&errors(Some(&text), &[], &Overrides::default()));
        assert_eq!(
            shown,
            [
                "fanout.toml: line 4, column 9: topics.allow[1]: \"bad/x\" has characters \
                 outside [a-zA-Z0-9._*-]",
                "fanout.toml: line 4, column 9: invalid type: found integer 3, expected a \
                 string for key topics.allow[2]",
                "fanout.toml: line 4, column 9: topics.allow[3]: must not be empty",
                "fanout.toml: line 5, column 8: topics.deny[0]: \"a b\" has characters outside \
                 [a-zA-Z0-9._*-]",
            ]
        );
        let text = format!("{MINIMAL}[topics]\nallow = []\n");
        let shown = rendered(&errors(Some(&text), &[], &Overrides::default()));
        assert_eq!(
            shown,
            [
                "fanout.toml: line 4, column 9: topics.allow: is empty, so every destination \
              would be refused; use [\"*\"] to allow all"
            ]
        );
    }

    #[test]
    fn topic_names_and_ids_are_checked() {
        let flags = Overrides {
            source_topic: Some("bad topic".into()),
            ..Overrides::default()
        };
        let env = [(ENV_DEAD_LETTER_TOPIC, ".."), (ENV_GROUP_ID, " ")];
        let text = format!("{MINIMAL}dead_letter_topic = \"{}\"\n", "x".repeat(250));
        let shown = rendered(&errors(Some(&text), &env, &flags));
        assert_eq!(
            shown,
            [
                &format!(
                    "fanout.toml: line 3, column 21: kafka.dead_letter_topic: \"{}\" is longer \
                     than 249 characters; Kafka topic names are 1 to 249 characters from \
                     [a-zA-Z0-9._-]",
                    "x".repeat(250)
                ),
                "FANOUT_GROUP_ID: must not be empty",
                "FANOUT_DEAD_LETTER_TOPIC: \"..\" is `.` or `..`; Kafka topic names are 1 to \
                 249 characters from [a-zA-Z0-9._-]",
                "--source-topic: \"bad topic\" has characters outside [a-zA-Z0-9._-]; Kafka \
                 topic names are 1 to 249 characters from [a-zA-Z0-9._-]",
            ]
        );
        let shown = rendered(&errors(
            None,
            &[("ENDPOINT", "b:1,"), ("TOPIC", "")],
            &Overrides::default(),
        ));
        assert_eq!(
            shown,
            [
                "ENDPOINT: \"b:1,\" has an empty entry between commas",
                "TOPIC: must not be empty"
            ]
        );
    }

    #[test]
    fn the_dead_letter_topic_must_differ_from_the_source_topic() {
        let shown = rendered(&errors(
            Some(MINIMAL),
            &[("TOPIC", "events"), (ENV_DEAD_LETTER_TOPIC, "events")],
            &Overrides::default(),
        ));
        assert_eq!(
            shown,
            [
                "FANOUT_DEAD_LETTER_TOPIC: the dead-letter topic and the source topic are both \
              \"events\": dead-lettered events would be consumed and routed again"
            ]
        );
        // Blames the source topic when the dead-letter topic is the default.
        let errs = errors(
            Some(MINIMAL),
            &[("TOPIC", "fanout-dead-letter")],
            &Overrides::default(),
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].source, Source::Env("TOPIC"));
    }

    #[test]
    fn ranges_are_checked_at_both_ends() {
        let cases: &[(&str, &str, i64, i64)] = &[
            ("kafka", "commit_interval_ms", 100, 600_000),
            ("plugins", "memory_limit_mib", 1, 4096),
            ("plugins", "deadline_ms", 1, 60_000),
            ("plugins", "max_destinations", 1, 10_000),
            ("plugins", "max_record_bytes", 1, 100_000_000),
            ("pipeline", "workers", 1, 256),
            ("pipeline", "max_in_flight", 1, 1_000_000),
            ("pipeline", "shutdown_timeout_ms", 1, 600_000),
            ("topics", "partitions", 1, 10_000),
        ];
        let doc = |section: &str, key: &str, v: i64| {
            let kafka = "[kafka]\nbootstrap_servers = \"b:1\"\n";
            if section == "kafka" {
                format!("{kafka}{key} = {v}\n")
            } else {
                format!("{kafka}[{section}]\n{key} = {v}\n")
            }
        };
        for &(section, key, lo, hi) in cases {
            for v in [lo, hi] {
                ok(Some(&doc(section, key, v)), &[], &Overrides::default());
            }
            for v in [lo - 1, hi + 1] {
                let errs = errors(Some(&doc(section, key, v)), &[], &Overrides::default());
                assert_eq!(errs.len(), 1, "{section}.{key} = {v}: {errs:?}");
                assert_eq!(
                    errs[0].message,
                    format!("{section}.{key}: {v} is out of range {lo}..={hi}")
                );
            }
        }
        let rf = |v: i64| doc("topics", "replication_factor", v);
        for v in [-1, 1, 32] {
            let c = ok(Some(&rf(v)), &[], &Overrides::default());
            assert_eq!(c.topics.replication_factor, v as i32);
        }
        for v in [0, -2, 33] {
            let errs = errors(Some(&rf(v)), &[], &Overrides::default());
            assert_eq!(
                errs[0].message,
                format!(
                    "topics.replication_factor: {v} is out of range 1..=32, or -1 for the \
                     broker's default"
                )
            );
        }
        // Flags and the environment too.
        let flags = Overrides {
            workers: Some(0),
            memory_limit_mib: Some(4097),
            deadline_ms: Some(u64::MAX),
            ..Overrides::default()
        };
        let shown = rendered(&errors(Some(MINIMAL), &[(ENV_WORKERS, "257")], &flags));
        assert_eq!(
            shown,
            [
                "FANOUT_WORKERS: 257 is out of range 1..=256",
                "--memory-limit-mib: 4097 is out of range 1..=4096",
                "--deadline-ms: 18446744073709551615 is out of range 1..=60000",
                "--workers: 0 is out of range 1..=256",
            ]
        );
    }

    #[test]
    fn environment_numbers_are_parsed_strictly() {
        let none = Overrides::default();
        let w = |v: &str| load_with(Some(MINIMAL), &[(ENV_WORKERS, v)], &none);
        assert_eq!(w(" 12 ").unwrap().workers, 12);
        for (raw, problem) in [
            ("abc", "\"abc\" is not a whole number"),
            ("", "\"\" is not a whole number"),
            ("1.5", "\"1.5\" is not a whole number"),
            ("-1", "-1 is out of range 1..=256"),
            (
                "99999999999999999999999999999999999999999",
                "\"99999999999999999999999999999999999999999\" is too large",
            ),
        ] {
            let errs = w(raw).unwrap_err().errors;
            assert_eq!(errs.len(), 1, "{raw:?}: {errs:?}");
            assert_eq!(errs[0].source, Source::Env(ENV_WORKERS));
            assert_eq!(errs[0].message, problem);
        }
    }

    #[test]
    fn an_overridden_value_is_still_checked() {
        let text = format!("{MINIMAL}[pipeline]\nworkers = 0\n");
        let flags = Overrides {
            workers: Some(4),
            ..Overrides::default()
        };
        let errs = errors(Some(&text), &[(ENV_WORKERS, "x")], &flags);
        let shown = rendered(&errs);
        assert_eq!(
            shown,
            [
                "fanout.toml: line 4, column 11: pipeline.workers: 0 is out of range 1..=256",
                "FANOUT_WORKERS: \"x\" is not a whole number",
            ]
        );
    }

    #[test]
    fn a_named_file_must_exist_but_none_is_needed() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let env = Env::of(&[("ENDPOINT", "e:1")]);
        let errs = load(Some(&missing), &|k| env.get(k), &Overrides::default())
            .unwrap_err()
            .errors;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            errs[0].source,
            Source::File {
                path: missing.clone(),
                line: None,
                col: None
            }
        );
        assert!(
            errs[0].message.starts_with("cannot read the config file: "),
            "{errs:?}"
        );
        assert!(
            errs[0]
                .to_string()
                .starts_with(&missing.display().to_string())
        );

        // FANOUT_CONFIG names the file when no argument does, and must exist too.
        let f = file("[kafka]\ngroup_id = \"from-fanout-config\"\n");
        let env = Env::of(&[("ENDPOINT", "e:1"), (ENV_CONFIG, f.path.to_str().unwrap())]);
        let c = load(None, &|k| env.get(k), &Overrides::default()).unwrap();
        assert_eq!(c.group_id, "from-fanout-config");
        assert_eq!(c.file.as_deref(), Some(f.path.as_path()));
        let env = Env::of(&[("ENDPOINT", "e:1"), (ENV_CONFIG, missing.to_str().unwrap())]);
        assert!(load(None, &|k| env.get(k), &Overrides::default()).is_err());
        // The argument beats FANOUT_CONFIG.
        let other = file("[kafka]\ngroup_id = \"from-argument\"\n");
        let env = Env::of(&[("ENDPOINT", "e:1"), (ENV_CONFIG, missing.to_str().unwrap())]);
        let c = load(Some(&other.path), &|k| env.get(k), &Overrides::default()).unwrap();
        assert_eq!(c.group_id, "from-argument");
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("abc", 0), (1, 1));
        assert_eq!(line_col("abc\ndef", 4), (2, 1));
        assert_eq!(line_col("abc\ndef", 6), (2, 3));
        assert_eq!(line_col("é = x", 4), (1, 4));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn secret_keys_are_recognised() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "sasl.jaas.config",
            "ssl.key.pem",
            "ssl.keystore.location",
            "SASL.PASSWORD",
            "my.token",
        ] {
            assert!(is_secret_property(key), "{key}");
        }
        for key in [
            "sasl.username",
            "security.protocol",
            "ssl.ca.location",
            "acks",
        ] {
            assert!(!is_secret_property(key), "{key}");
        }
    }
}
