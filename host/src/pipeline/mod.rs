//! The service's data flow: consume → decode → route → produce → acknowledge → commit.
//!
//! Threads: the calling thread consumes (polls, tracks offsets, pauses when too much is in
//! flight, stores and commits); N routing threads own the plugin instances; librdkafka's
//! producer thread delivers and reports; a retry thread re-sends failed writes. Channels join
//! them: bounded ones forward (backpressure), and one carries acknowledgements back.
//!
//! Exactly-once keeps that shape; the calling thread also drives the transactions
//! ([`transaction`]), and commits offsets through them.
//!
//! Before anything starts, and all along, [`topics`] checks that the source and dead-letter
//! topics exist: while one is missing the consumer takes no more events, and if it stays
//! missing the pipeline stops with an error.

pub mod acks;
pub mod commit;
pub mod delivery;
pub mod feed;
pub mod inflight;
pub mod offsets;
pub mod topics;
pub mod transaction;
pub mod watchdog;
pub mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::message::{Headers as _, Message as _};

use crate::bindings::Header;
use crate::config::Delivery;
use crate::kafka::consumer::{self, ConsumerSettings, SourceConsumer};
use crate::lock;
use crate::plugin::{PluginEngine, RouteEvent};
use crate::reload::{LiveRouter, LiveSet};
use crate::stats::Stats;
use acks::{AckState, Revoke};
use commit::{AutoCommit, Committer, TransactionalCommit};
use delivery::{Producer, Transactional};
use feed::Feed;
use topics::TopicGuard;
use transaction::{TransactionFaults, Transactions};
use worker::{WorkItem, WorkerShared};

/// How events are routed: the plugin runtime, or (for comparison) a native function.
pub enum Routing {
    /// The plugin set in service, which a reloader may swap at any time.
    Plugins {
        engine: PluginEngine,
        live: Arc<LiveSet>,
        /// Where plugin call latency is recorded, if anywhere.
        latency: Option<crate::ops::metrics::PluginLatency>,
    },
    Native(crate::native::NativeRouter),
}

impl Routing {
    /// Plugins that stay as they are: no reloader swaps them.
    pub fn fixed(engine: PluginEngine, set: crate::plugin::PluginSet) -> Self {
        Routing::Plugins {
            engine,
            live: LiveSet::new(set, crate::reload::RollbackPolicy::default()),
            latency: None,
        }
    }

    /// A router for one routing thread.
    fn router(&self) -> Box<dyn RouteEvent> {
        match self {
            Routing::Plugins {
                engine,
                live,
                latency,
            } => Box::new(LiveRouter::observed(
                engine.clone(),
                live.clone(),
                latency.clone(),
            )),
            Routing::Native(native) => Box::new(native.clone()),
        }
    }
}

impl std::fmt::Display for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Routing::Plugins { live, .. } => write!(f, "plugin set {}", live.version()),
            Routing::Native(_) => f.write_str("native by-namespace"),
        }
    }
}

/// Everything the pipeline needs to know, resolved and validated.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub bootstrap_servers: String,
    pub source_topic: String,
    pub group_id: String,
    pub dead_letter_topic: String,
    pub consumer_properties: Vec<(String, String)>,
    pub producer_properties: Vec<(String, String)>,
    pub workers: usize,
    pub max_in_flight: usize,
    pub commit_interval: Duration,
    pub delivery: Delivery,
    pub shutdown_timeout: Duration,
    /// Create missing destination topics with these settings; `None` leaves it to the broker.
    pub create_topics: Option<crate::kafka::admin::NewTopicSettings>,
}

impl PipelineSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            bootstrap_servers: config.bootstrap_servers.clone(),
            source_topic: config.source_topic.clone(),
            group_id: config.group_id.clone(),
            dead_letter_topic: config.dead_letter_topic.clone(),
            consumer_properties: config.merged_consumer_properties().into_iter().collect(),
            producer_properties: config.merged_producer_properties().into_iter().collect(),
            workers: config.workers,
            max_in_flight: config.max_in_flight,
            commit_interval: config.commit_interval,
            delivery: config.delivery.clone(),
            shutdown_timeout: config.shutdown_timeout,
            create_topics: config.topics.create_missing.then(|| {
                crate::kafka::admin::NewTopicSettings {
                    partitions: config.topics.partitions,
                    replication_factor: config.topics.replication_factor,
                    configs: config.topics.configs.clone().into_iter().collect(),
                }
            }),
        }
    }
}

/// Runs until `stop` is set, then drains: stops fetching, finishes the event each routing thread
/// holds (queued ones are left for the partition's next owner), flushes the producer, commits
/// what was fully written, and returns. Everything is bounded by
/// `shutdown_timeout`; what does not finish in time is simply not committed, and is consumed
/// again by the next owner of its partition. Exactly-once commits its last transaction instead
/// (or aborts it, past the timeout). `Err` when the pipeline can't go on, such as a fenced
/// transactional producer or a missing dead-letter topic ([`topics::MissingTopic`]): the
/// process should exit non-zero and be restarted. Stopped before the topics are found, it
/// returns `Ok` at once.
pub fn run(
    settings: &PipelineSettings,
    routing: &Routing,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let (ack_tx, ack_rx) = channel();
    let epoch = Arc::new(AtomicU64::new(0));
    let handled = Arc::new(AtomicU64::new(0));
    let abandoned = Arc::new(AtomicU64::new(0));
    let mut acks = AckState::new(ack_rx, epoch.clone(), stats.clone());
    if matches!(settings.delivery, Delivery::ExactlyOnce(_)) {
        acks.count_at_commit();
    }
    let state = Arc::new(Mutex::new(acks));
    // With creation on, fanout creates what is missing with its own settings, not the
    // broker's defaults.
    let admin = Arc::new(crate::kafka::admin::Admin::new(
        &settings.bootstrap_servers,
        &settings.producer_properties,
        settings.create_topics.is_none(),
    )?);
    let faults = match &settings.delivery {
        Delivery::ExactlyOnce(_) => Some(Arc::new(
            TransactionFaults::new(epoch.clone())
                .with_lookups(admin.clone(), compresses(&settings.producer_properties)),
        )),
        Delivery::AtLeastOnce => None,
    };
    // The producer exists before the topics are checked: its error callback is what says why
    // the cluster does not answer (a refused password, an unknown CA), once
    // ([`crate::kafka::ClientErrors`]); the admin client's errors reach no callback.
    let (producer, retry_thread) = Producer::new(
        &settings.bootstrap_servers,
        &settings.producer_properties,
        &settings.dead_letter_topic,
        stats.clone(),
        match (&settings.delivery, &faults) {
            (Delivery::ExactlyOnce(t), Some(faults)) => Some(Transactional {
                id: t.transactional_id.clone(),
                faults: faults.clone(),
            }),
            _ => None,
        },
    )?;
    let guard = TopicGuard::new(
        admin.clone(),
        &settings.source_topic,
        &settings.dead_letter_topic,
        settings.create_topics.clone(),
        stats.clone(),
    );
    if !guard.wait_at_start(&stop)? {
        return Ok(());
    }
    let _watcher = guard.watch()?;
    // A dead letter must fit its topic, or its offset is held for ever. Looked up beside the
    // pipeline, not before it: a cluster that does not answer DescribeConfigs (librdkafka's
    // mock) must not hold up the start; until the answer, a dead letter the broker refuses as
    // too large is sent again without the value.
    std::thread::Builder::new()
        .name("fanout-describe".into())
        .spawn({
            let (admin, producer) = (admin.clone(), producer.clone());
            let topic = settings.dead_letter_topic.clone();
            move || match admin.max_message_bytes(&topic, DESCRIBE_TIMEOUT) {
                Ok(max_bytes) => producer.fit_dead_letters_to(max_bytes),
                Err(e) => tracing::debug!("reading the dead-letter topic's max.message.bytes: {e}"),
            }
        })
        .context("starting the dead-letter topic's lookup")?;
    let transactions = match (&settings.delivery, &faults) {
        (Delivery::ExactlyOnce(t), Some(faults)) => {
            let transactions = Arc::new(Transactions::new(
                producer.clone(),
                &settings.source_topic,
                t.clone(),
                stats.clone(),
                faults.clone(),
                epoch.clone(),
                handled.clone(),
                guard.clone(),
            ));
            transactions.init(&stop)?;
            Some(transactions)
        }
        _ => None,
    };
    let consumer = consumer::create(
        &ConsumerSettings {
            bootstrap_servers: &settings.bootstrap_servers,
            group_id: &settings.group_id,
            topic: &settings.source_topic,
            commit_interval: settings.commit_interval,
            properties: &settings.consumer_properties,
            transactional: transactions.is_some(),
        },
        Arc::new(Revoke {
            state: state.clone(),
            topic: settings.source_topic.clone(),
            drain: settings.shutdown_timeout.min(Duration::from_secs(10)),
            transactions: transactions.clone(),
        }),
        stats.clone(),
    )?;

    let topics = settings.create_topics.as_ref().map(|new_topics| {
        Arc::new(crate::kafka::admin::TopicCreator::new(
            admin.clone(),
            new_topics.clone(),
        ))
    });
    let shared = WorkerShared {
        stop: match &transactions {
            // Never set: the last transaction's events are all routed, then committed.
            Some(_) => Arc::new(AtomicBool::new(false)),
            None => stop.clone(),
        },
        epoch,
        handled,
        abandoned: abandoned.clone(),
        faults,
        topics,
        source_topic: settings.source_topic.as_str().into(),
        dead_letter_topic: settings.dead_letter_topic.as_str().into(),
        producer: producer.clone(),
        acks: ack_tx,
        stats: stats.clone(),
    };
    let depth = (settings.max_in_flight / settings.workers).max(1);
    let mut senders = Vec::with_capacity(settings.workers);
    let mut workers = Vec::with_capacity(settings.workers);
    for index in 0..settings.workers {
        let (tx, rx) = sync_channel(depth);
        let router = routing.router();
        let shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("fanout-route-{index}"))
            .spawn(move || worker::run(router, shared, rx))
            .context("starting a routing thread")?;
        senders.push(tx);
        workers.push(handle);
    }
    drop(shared);
    let mut feed = Feed::new(senders, transactions.is_none(), &settings.source_topic);
    tracing::info!(
        source = %settings.source_topic,
        group = %settings.group_id,
        workers = settings.workers,
        routing = %routing,
        delivery = settings.delivery.name(),
        "pipeline running"
    );

    let mut committer: Box<dyn Committer + '_> = match &transactions {
        Some(transactions) => Box::new(TransactionalCommit::new(
            transactions,
            &settings.source_topic,
            settings.max_in_flight,
        )),
        None => Box::new(AutoCommit::new(
            &settings.source_topic,
            settings.max_in_flight,
            &stats,
        )),
    };
    let result = consume(
        &consumer,
        &producer,
        committer.as_mut(),
        &state,
        &mut feed,
        &stats,
        &stop,
        &guard,
        settings.shutdown_timeout,
    );
    drop(committer);

    // Drain, in data-flow order. After a failure, briefly: routing threads leave what is
    // queued, and writes that can't land are not waited for.
    let deadline = Instant::now()
        + match &result {
            Ok(()) => settings.shutdown_timeout,
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                settings.shutdown_timeout.min(FAILED_DRAIN)
            }
        };
    if let Err(e) = feed.close() {
        tracing::warn!("{e:#}");
    }
    for handle in workers {
        if handle.join().is_err() {
            tracing::error!("a routing thread panicked");
        }
    }
    if let Err(e) = producer.flush(deadline.saturating_duration_since(Instant::now())) {
        tracing::warn!("{e:#}; unflushed writes stay uncommitted");
    }
    if transactions.is_none() {
        let mut state = lock(&state);
        // Events the routing threads left unrouted will never be acknowledged: wait only for
        // those whose writes are out.
        let abandoned = abandoned.load(Ordering::Acquire) as usize;
        while state.tracker.in_flight() > abandoned && Instant::now() < deadline {
            state.wait(Duration::from_millis(10));
        }
        state.drain();
        let unfinished = state.tracker.in_flight();
        state.store(&consumer, &settings.source_topic);
        match consumer::commit_sync(&consumer) {
            Ok(()) => tracing::info!(unfinished, abandoned, "final commit done"),
            Err(e) => tracing::warn!("final commit failed: {e}"),
        }
        // Closing the consumer revokes its partitions; what is left would only make that wait
        // for acknowledgements that are not coming.
        state.tracker.forget_all();
    }
    producer.stop_retries();
    retry_thread.join();
    drop(producer);
    drop(consumer);
    result
}

/// How long the dead-letter topic's configuration is waited for at start.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the drain may take after the pipeline failed.
const FAILED_DRAIN: Duration = Duration::from_secs(5);

/// How long the consume loop waits between looks while a topic is missing.
const HOLD_POLL: Duration = Duration::from_millis(100);

/// The consume loop, the same in both delivery modes: acknowledgements in, then (unless a
/// topic is missing or the committer says wait) one poll, and the record to its routing thread.
/// The committer ([`commit`]) decides what commits offsets, when the consumer may take more,
/// and what an abort gave back.
#[allow(clippy::too_many_arguments)]
fn consume(
    consumer: &SourceConsumer,
    producer: &Producer,
    committer: &mut dyn Committer,
    state: &Arc<Mutex<AckState>>,
    feed: &mut Feed,
    stats: &Stats,
    stop: &AtomicBool,
    guard: &TopicGuard,
    shutdown_timeout: Duration,
) -> anyhow::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        let in_flight = {
            let mut state = lock(state);
            state.drain();
            committer.acknowledged(consumer, &mut state);
            state.tracker.in_flight()
        };
        stats.in_flight.store(in_flight as u64, Ordering::Relaxed);
        if let Some(e) = producer.fatal_error() {
            return Err(e);
        }
        // A missing topic: take no more events, until it appears or the guard gives up.
        if guard.hold()? {
            committer.hold(consumer, &mut lock(state))?;
            lock(state).wait(HOLD_POLL);
            continue;
        }
        if !committer.may_take(consumer, &mut lock(state), in_flight, feed)? {
            continue;
        }
        // A routing thread that was full may have room again.
        if feed.holding() {
            feed.retry_held(consumer)?;
        }
        let message = consumer.poll(committer.poll_timeout());
        let rewinds = committer.polled(consumer)?;
        let message = match message {
            None => continue,
            Some(Err(e)) => {
                // The error callback has logged it, with its reason (kafka::ClientErrors).
                tracing::debug!("consumer error: {e}");
                continue;
            }
            Some(Ok(message)) if rewinds.contains_key(&message.partition()) => continue,
            Some(Ok(message)) => message,
        };
        let epoch = committer.admit(message.partition(), message.offset())?;
        dispatch(work_item(&message, epoch), state, feed, consumer, stats)?;
    }
    let deadline = Instant::now() + shutdown_timeout;
    committer.close(consumer, &mut lock(state), deadline)
}

/// Whether the producer compresses its batches (`compression.type`, alias `compression.codec`,
/// other than `none`).
fn compresses(producer_properties: &[(String, String)]) -> bool {
    producer_properties.iter().any(|(key, value)| {
        matches!(key.as_str(), "compression.type" | "compression.codec") && value != "none"
    })
}

/// A consumed record, copied out of librdkafka's buffer for a routing thread.
fn work_item(message: &rdkafka::message::BorrowedMessage<'_>, epoch: u64) -> WorkItem {
    WorkItem {
        partition: message.partition(),
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis(),
        key: message.key().map(<[u8]>::to_vec),
        // A tombstone (null value) is decoded as empty input and dead-lettered.
        value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| Header {
                        key: h.key.to_owned(),
                        value: h.value.map(<[u8]>::to_vec),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        epoch,
    }
}

/// Tracks an item and hands it to its partition's routing thread ([`Feed::offer`]).
fn dispatch(
    item: WorkItem,
    state: &Mutex<AckState>,
    feed: &mut Feed,
    consumer: &SourceConsumer,
    stats: &Stats,
) -> anyhow::Result<()> {
    lock(state).tracker.track(item.partition, item.offset);
    stats.consumed.fetch_add(1, Ordering::Relaxed);
    feed.offer(item, consumer)
}
