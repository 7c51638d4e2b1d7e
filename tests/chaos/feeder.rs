//! Feeds the workload to the source topic, keyed and partitioned as EventRouter does, never
//! further ahead of what the group has committed than the mock's retention allows.
//!
//! The feeder's producer is idempotent with a long delivery timeout: the faults hit it too
//! (broker outages, injected Produce errors), and it must still write every event. (At least
//! once: the mock does not de-duplicate an idempotent producer's retries, which is why the
//! reconciliation reads the source topic instead of trusting delivery reports.)

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;

use crate::group::Committed;
use crate::settings::Settings;
use crate::workload::{SOURCE_PARTITIONS, SOURCE_TOPIC, Workload};

/// Unfinished events allowed per source partition: about 1 MB, far below the 5 MiB the mock
/// keeps, so nothing fanout has yet to read (even after a restart from the last commit) is
/// ever deleted.
const BACKLOG_PER_PARTITION: u64 = 1_000;

/// What the feeder has done so far; shared with the driver.
#[derive(Debug)]
pub struct FeedProgress {
    pub sent: AtomicU64,
    pub sent_per_partition: Vec<AtomicU64>,
    pub delivered: AtomicU64,
    /// The source offset each event's delivery report gave; -1 before (the source topic
    /// itself is the reference, see `reconcile`; this is for diagnosis).
    pub offsets: Vec<AtomicI64>,
    /// Deliveries that failed for good, which the run cannot account for.
    pub failures: Mutex<Vec<String>>,
    pub done: AtomicBool,
}

/// The feeding thread.
pub struct Feeder {
    pub progress: Arc<FeedProgress>,
    thread: JoinHandle<anyhow::Result<()>>,
}

impl Feeder {
    pub fn start(
        settings: &Settings,
        bootstrap: &str,
        committed: Arc<Committed>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let events = settings.events as usize;
        let progress = Arc::new(FeedProgress {
            sent: AtomicU64::new(0),
            sent_per_partition: (0..SOURCE_PARTITIONS).map(|_| AtomicU64::new(0)).collect(),
            delivered: AtomicU64::new(0),
            offsets: (0..events).map(|_| AtomicI64::new(-1)).collect(),
            failures: Mutex::new(Vec::new()),
            done: AtomicBool::new(false),
        });
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "600000");
        // On the mock, one request at a time: see `replica::ONE_REQUEST_IN_FLIGHT`.
        for (key, value) in settings.kafka.producer_workarounds() {
            config.set(*key, *value);
        }
        let producer: ThreadedProducer<DeliveryLog> = config
            .create_with_context(DeliveryLog {
                progress: progress.clone(),
            })
            .context("creating the feeder's producer")?;
        let workload = Workload::new(settings);
        let thread = std::thread::Builder::new()
            .name("chaos-feeder".into())
            .spawn({
                let progress = progress.clone();
                let rate = settings.feed_rate;
                move || {
                    let pace = Pace {
                        rate,
                        committed: &committed,
                        stop: &stop,
                    };
                    feed(&producer, workload.take(events), &progress, &pace)
                }
            })?;
        Ok(Self { progress, thread })
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    pub fn join(self) -> anyhow::Result<()> {
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the feeder panicked"))?
    }
}

/// How fast the feeder may go: at `rate` events per second, and never more than
/// [`BACKLOG_PER_PARTITION`] ahead of what the group has committed.
struct Pace<'a> {
    rate: u64,
    committed: &'a Committed,
    stop: &'a AtomicBool,
}

fn feed(
    producer: &ThreadedProducer<DeliveryLog>,
    workload: impl Iterator<Item = crate::workload::SourceEvent>,
    progress: &FeedProgress,
    pace: &Pace<'_>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    for (index, event) in workload.enumerate() {
        let partition = event.partition as usize;
        let due = started + Duration::from_secs_f64(index as f64 / pace.rate as f64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        while progress.sent_per_partition[partition].load(Ordering::Relaxed)
            >= pace.committed.of(partition) + BACKLOG_PER_PARTITION
        {
            if pace.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        loop {
            let record = BaseRecord::with_opaque_to(SOURCE_TOPIC, index)
                .partition(event.partition)
                .key(&event.key[..])
                .payload(&event.value[..]);
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e).context("producing a source event"),
            }
        }
        progress.sent_per_partition[partition].fetch_add(1, Ordering::Relaxed);
        progress.sent.fetch_add(1, Ordering::Relaxed);
    }
    producer
        .flush(Duration::from_secs(600))
        .context("flushing the source events")?;
    progress.done.store(true, Ordering::Relaxed);
    Ok(())
}

/// Records each event's source offset as its delivery report comes in.
struct DeliveryLog {
    progress: Arc<FeedProgress>,
}

impl ClientContext for DeliveryLog {}

impl ProducerContext for DeliveryLog {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        match result {
            Ok(message) => {
                self.progress.offsets[index].store(message.offset(), Ordering::Relaxed);
                self.progress.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => crate::lock(&self.progress.failures)
                .push(format!("source event {index} was not delivered: {error}")),
        }
    }
}
