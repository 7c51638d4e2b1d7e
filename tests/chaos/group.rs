//! The consumer group's committed source offsets, polled all run long by a client that only
//! asks (OffsetFetch) and never joins. They pace the feeder and tell when fanout has drained.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};

use crate::replica::GROUP;
use crate::workload::{SOURCE_PARTITIONS, SOURCE_TOPIC};

/// What the group has committed, per source partition.
#[derive(Debug)]
pub struct Committed {
    offsets: Vec<AtomicI64>,
    /// Times a partition's committed offset was seen lower than before: each sends the group
    /// back over events it had already finished.
    pub regressions: AtomicU64,
}

impl Committed {
    /// The committed offset of `partition`: the number of its events fanout has finished
    /// (0 before the first commit).
    pub fn of(&self, partition: usize) -> u64 {
        self.offsets[partition].load(Ordering::Relaxed).max(0) as u64
    }

    pub fn total(&self) -> u64 {
        (0..self.offsets.len()).map(|p| self.of(p)).sum()
    }
}

/// The polling thread; stops when dropped.
pub struct GroupMonitor {
    pub committed: Arc<Committed>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl GroupMonitor {
    pub fn start(bootstrap: &str) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", GROUP)
            .set("enable.auto.commit", "false")
            .create()?;
        let committed = Arc::new(Committed {
            offsets: (0..SOURCE_PARTITIONS).map(|_| AtomicI64::new(-1)).collect(),
            regressions: AtomicU64::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("chaos-group".into())
            .spawn({
                let (committed, stop) = (committed.clone(), stop.clone());
                move || {
                    let mut partitions = TopicPartitionList::new();
                    for p in 0..SOURCE_PARTITIONS {
                        partitions.add_partition(SOURCE_TOPIC, p);
                    }
                    while !stop.load(Ordering::Relaxed) {
                        // Fails while the coordinator is down: the last answer stands.
                        if let Ok(answer) =
                            consumer.committed_offsets(partitions.clone(), Duration::from_secs(2))
                        {
                            for element in answer.elements() {
                                let Offset::Offset(offset) = element.offset() else {
                                    continue;
                                };
                                let slot = &committed.offsets[element.partition() as usize];
                                let before = slot.swap(offset, Ordering::Relaxed);
                                if offset < before {
                                    committed.regressions.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            })?;
        Ok(Self {
            committed,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for GroupMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
