//! Handing consumed records to the routing threads, so that one slow thread never stops the
//! consumer from feeding the others.
//!
//! Each source partition belongs to one thread (its events stay in order). When a thread's
//! queue is full, the record for it is held here and that thread's partitions are paused; the
//! consumer goes on polling the rest. Once the thread has room, the held record goes first and
//! its partitions resume, where librdkafka left them: pausing drops what it had prefetched for
//! them, which it fetches again.
//!
//! Exactly-once never holds a record: a transaction ends only when every record it admitted
//! has been routed, so there the consumer waits for the thread instead.

use std::collections::BTreeSet;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer as _;

use super::worker::WorkItem;
use crate::kafka::consumer::SourceConsumer;

/// How long the consumer waits for a full thread before it holds the record and pauses the
/// thread's partitions. A thread routing at its usual pace (microseconds an event) has room
/// long before; pausing costs a refetch of what librdkafka had prefetched for its partitions,
/// which a busy pipeline should not pay for a queue that is full for a moment.
const PATIENCE: Duration = Duration::from_millis(20);

/// The routing threads' queues, and what is held back from them.
pub struct Feed {
    threads: Vec<SyncSender<WorkItem>>,
    /// Per thread, the record its full queue had no room for.
    held: Vec<Option<WorkItem>>,
    /// Whether a full thread's record may be held (at-least-once) or must be waited for.
    may_hold: bool,
    /// Whether every partition is paused (the whole pipeline is full for long).
    all_paused: bool,
    /// The partitions this has paused.
    paused: BTreeSet<i32>,
    topic: String,
}

impl Feed {
    pub fn new(threads: Vec<SyncSender<WorkItem>>, may_hold: bool, topic: &str) -> Self {
        Self {
            held: threads.iter().map(|_| None).collect(),
            threads,
            may_hold,
            all_paused: false,
            paused: BTreeSet::new(),
            topic: topic.to_owned(),
        }
    }

    fn thread_of(&self, partition: i32) -> usize {
        partition.rem_euclid(self.threads.len() as i32) as usize
    }

    /// Hands `item` to its partition's thread; if that thread's queue is full, holds it and
    /// pauses the thread's partitions (or, for exactly-once, waits for room).
    pub fn offer(&mut self, item: WorkItem, consumer: &SourceConsumer) -> anyhow::Result<()> {
        let thread = self.thread_of(item.partition);
        if let Some(held) = self.held[thread].take() {
            // A record of a paused partition, polled before the pause took effect: order comes
            // first, so both wait for room.
            self.send(thread, held)?;
            self.send(thread, item)?;
            self.set_paused(consumer);
            return Ok(());
        }
        if !self.may_hold {
            return self.send(thread, item);
        }
        match self.send_within(thread, item, PATIENCE) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(item)) => {
                tracing::debug!(thread, "routing thread full; pausing its partitions");
                self.held[thread] = Some(item);
                self.set_paused(consumer);
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(stopped()),
        }
    }

    /// Hands held records to the threads that have room again, and resumes their partitions.
    pub fn retry_held(&mut self, consumer: &SourceConsumer) -> anyhow::Result<()> {
        let mut resumed = false;
        for thread in 0..self.threads.len() {
            let Some(item) = self.held[thread].take() else {
                continue;
            };
            match self.threads[thread].try_send(item) {
                Ok(()) => resumed = true,
                Err(TrySendError::Full(item)) => self.held[thread] = Some(item),
                Err(TrySendError::Disconnected(_)) => return Err(stopped()),
            }
        }
        if resumed {
            self.set_paused(consumer);
        }
        Ok(())
    }

    /// Whether a record is held for a full thread.
    pub fn holding(&self) -> bool {
        self.held.iter().any(Option::is_some)
    }

    /// Pauses every partition (`true`), or resumes those whose thread is not full.
    pub fn pause_all(&mut self, consumer: &SourceConsumer, pause: bool) {
        self.all_paused = pause;
        self.set_paused(consumer);
    }

    /// Waits until every held record is handed over, then closes the queues: a held record is
    /// tracked as in flight, and the drain counts on each being routed or abandoned.
    pub fn close(mut self) -> anyhow::Result<()> {
        for thread in 0..self.threads.len() {
            if let Some(item) = self.held[thread].take() {
                self.send(thread, item)?;
            }
        }
        Ok(())
    }

    /// Sends `item` if the thread has room within `patience`.
    fn send_within(
        &self,
        thread: usize,
        mut item: WorkItem,
        patience: Duration,
    ) -> Result<(), TrySendError<WorkItem>> {
        let until = Instant::now() + patience;
        loop {
            match self.threads[thread].try_send(item) {
                Err(TrySendError::Full(returned)) if Instant::now() < until => {
                    item = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
                other => return other,
            }
        }
    }

    fn send(&self, thread: usize, item: WorkItem) -> anyhow::Result<()> {
        self.threads[thread].send(item).map_err(|_| stopped())
    }

    /// Pauses the assigned partitions that should be (all of them, or those of a full
    /// thread), and resumes those this paused that should not be. Only what changes is asked
    /// of librdkafka: resuming a partition restarts its fetch. A failure is logged: the
    /// consumer goes on, waiting for a full thread when a record for it comes.
    fn set_paused(&mut self, consumer: &SourceConsumer) {
        let assignment = match consumer.assignment() {
            Ok(assignment) => assignment,
            Err(e) => return tracing::warn!("reading the assignment to pause or resume: {e}"),
        };
        let assigned: BTreeSet<i32> = assignment
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let wanted: BTreeSet<i32> = assigned
            .iter()
            .copied()
            .filter(|&p| self.all_paused || self.held[self.thread_of(p)].is_some())
            .collect();
        let list = |partitions: &mut dyn Iterator<Item = &i32>| {
            let mut list = TopicPartitionList::new();
            for &partition in partitions {
                list.add_partition(&self.topic, partition);
            }
            list
        };
        let pause = list(&mut wanted.difference(&self.paused));
        let resume = list(
            &mut self
                .paused
                .difference(&wanted)
                .filter(|p| assigned.contains(p)),
        );
        if pause.count() > 0
            && let Err(e) = consumer.pause(&pause)
        {
            return tracing::warn!("pausing partitions: {e}");
        }
        if resume.count() > 0
            && let Err(e) = consumer.resume(&resume)
        {
            return tracing::warn!("resuming partitions: {e}");
        }
        tracing::debug!(paused = ?wanted, "partitions paused");
        self.paused = wanted;
    }
}

fn stopped() -> anyhow::Error {
    anyhow::anyhow!("a routing thread stopped unexpectedly")
}
