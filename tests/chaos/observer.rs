//! Reads every topic of the run (the source, every destination and the dead-letter topic)
//! from the beginning, all run long, and books each record into the [`Ledger`]. Reading while
//! they are written is what makes a million events checkable at all: the mock keeps only 5 MiB
//! per partition, far less than the run writes, so whatever is read late may already be gone.
//! At the end it reads every partition to its high watermark, taken once fanout has stopped;
//! it never stops at a quiet spell. Exactly-once it reads `read_committed`: aborted writes are
//! never delivered, and librdkafka moves the position past them and past transaction markers,
//! so the high watermark is reached once no transaction is open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};

use crate::reconcile::{Ledger, Read, Role};
use crate::settings::{Delivery, Kafka};
use crate::workload::{DEAD_LETTER_TOPIC, Plan, SOURCE_TOPIC};

/// Where the reader must get to before it stops: (topic, partition) → offset.
pub type Ends = HashMap<(String, i32), i64>;

/// The reading thread.
pub struct Observer {
    /// Records read so far.
    pub records: Arc<AtomicU64>,
    /// Source events with at least one record read: how far fanout has got, as seen from
    /// outside. The run's clock for faults.
    pub events: Arc<AtomicU64>,
    ends: Arc<Mutex<Option<Ends>>>,
    thread: JoinHandle<anyhow::Result<Ledger>>,
}

impl Observer {
    /// Starts reading `topics` (name, partitions) from the beginning. `clock` is the run's
    /// start, from which every record's read time is taken.
    pub fn start(
        bootstrap: &str,
        topics: &[(String, i32)],
        plan: Arc<Plan>,
        (kafka, delivery): (Kafka, Delivery),
        clock: Instant,
    ) -> anyhow::Result<Self> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "chaos-observer")
            .set("enable.auto.commit", "false")
            .set("isolation.level", delivery.isolation_level());
        for (key, value) in kafka.consumer_workarounds() {
            config.set(*key, *value);
        }
        let consumer: BaseConsumer = config.create().context("creating the output reader")?;
        let mut assignment = TopicPartitionList::new();
        for (topic, partitions) in topics {
            for p in 0..*partitions {
                assignment.add_partition_offset(topic, p, Offset::Beginning)?;
            }
        }
        consumer.assign(&assignment)?;
        let roles: HashMap<String, Role> = plan
            .topics
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), Role::Routed(i as u16)))
            .chain([
                (DEAD_LETTER_TOPIC.to_owned(), Role::DeadLetter),
                (SOURCE_TOPIC.to_owned(), Role::Source),
            ])
            .collect();
        let records = Arc::new(AtomicU64::new(0));
        let events = Arc::new(AtomicU64::new(0));
        let ends = Arc::new(Mutex::new(None));
        let thread = std::thread::Builder::new()
            .name("chaos-observer".into())
            .spawn({
                let counters = Counters {
                    records: records.clone(),
                    events: events.clone(),
                };
                let ends = ends.clone();
                move || {
                    let mut ledger = Ledger::new(plan, delivery);
                    read(&consumer, &roles, &mut ledger, &counters, &ends, clock);
                    Ok(ledger)
                }
            })?;
        Ok(Self {
            records,
            events,
            ends,
            thread,
        })
    }

    /// Reads on until every partition is read up to `ends` (its high watermark once fanout has
    /// stopped), then returns what was read.
    pub fn finish(self, ends: Ends) -> anyhow::Result<Ledger> {
        *crate::lock(&self.ends) = Some(ends);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the output reader panicked"))?
    }
}

/// What the reading thread counts for the driver.
struct Counters {
    records: Arc<AtomicU64>,
    events: Arc<AtomicU64>,
}

/// How long the reader may take to reach the ends once they are known; partitions still
/// short of theirs then are reported as not checked, which fails the run.
const FINISH_TIMEOUT: Duration = Duration::from_secs(120);

fn read(
    consumer: &BaseConsumer,
    roles: &HashMap<String, Role>,
    ledger: &mut Ledger,
    counters: &Counters,
    ends: &Mutex<Option<Ends>>,
    clock: Instant,
) {
    let mut finishing_since: Option<Instant> = None;
    let mut last_check = Instant::now();
    loop {
        // Errors (broker outages show as transport errors) need nothing: librdkafka recovers.
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) {
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            let value = h.value.map(String::from_utf8_lossy);
                            (h.key.to_owned(), value.unwrap_or_default().into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let Some(role) = roles.get(message.topic()).copied() else {
                continue;
            };
            let first = ledger.book(Read {
                topic: message.topic(),
                role,
                partition: message.partition(),
                offset: message.offset(),
                key: message.key(),
                value: message.payload().unwrap_or_default(),
                headers,
                at_ms: clock.elapsed().as_millis() as u32,
            });
            counters.records.fetch_add(1, Ordering::Relaxed);
            if first {
                counters.events.fetch_add(1, Ordering::Relaxed);
            }
        }
        if last_check.elapsed() < Duration::from_millis(200) {
            continue;
        }
        last_check = Instant::now();
        let Some(ends) = crate::lock(ends).clone() else {
            continue;
        };
        let since = *finishing_since.get_or_insert_with(Instant::now);
        let short = short_of(consumer, &ends);
        if short.is_empty() {
            return;
        }
        if since.elapsed() > FINISH_TIMEOUT {
            ledger.note_unread(short);
            return;
        }
    }
}

/// The partitions whose position is still short of their end, as `topic/partition at X of Y`.
fn short_of(consumer: &BaseConsumer, ends: &Ends) -> Vec<String> {
    let Ok(positions) = consumer.position() else {
        return vec!["positions unknown".into()];
    };
    let position: HashMap<(String, i32), i64> = positions
        .elements()
        .iter()
        .map(|e| {
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            ((e.topic().to_owned(), e.partition()), at)
        })
        .collect();
    let mut short: Vec<String> = ends
        .iter()
        .filter(|(_, end)| **end > 0)
        .filter_map(|(tp, end)| {
            let at = position.get(tp).copied().unwrap_or(0);
            (at < *end).then(|| format!("{}/{} at {at} of {end}", tp.0, tp.1))
        })
        .collect();
    short.sort();
    short
}
