//! Where partitions begin and end, for readers that must read every partition to its high
//! watermark: one ListOffsets round for all partitions at once. Asking partition by partition
//! (`fetch_watermarks`) costs about 0.1 s a partition on the mock cluster, longer than a whole
//! read-back when topics have 16 partitions. Shared by the integration tests and the chaos run.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};

/// (topic, partition) → offset.
pub type Offsets = HashMap<(String, i32), i64>;

/// The offset of every partition in `partitions` at `at`: [`Offset::Beginning`] (the low
/// watermark) or [`Offset::End`] (the high watermark, or, for a `read_committed` client, the
/// last stable offset).
pub fn offsets_at(
    consumer: &BaseConsumer,
    partitions: &[(String, i32)],
    at: Offset,
) -> anyhow::Result<Offsets> {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        list.add_partition_offset(topic, *partition, at)?;
    }
    let answer = consumer
        .offsets_for_times(list, Duration::from_secs(30))
        .with_context(|| format!("{at:?} offsets of {} partitions", partitions.len()))?;
    let mut offsets = Offsets::new();
    for e in answer.elements() {
        let Offset::Offset(offset) = e.offset() else {
            bail!(
                "{at:?} offset of {}/{}: {:?}",
                e.topic(),
                e.partition(),
                e.offset()
            );
        };
        offsets.insert((e.topic().to_owned(), e.partition()), offset);
    }
    Ok(offsets)
}

/// The high watermark of every partition that holds records (an empty partition has no
/// position to reach).
pub fn ends_of_nonempty(
    consumer: &BaseConsumer,
    partitions: &[(String, i32)],
) -> anyhow::Result<Offsets> {
    let low = offsets_at(consumer, partitions, Offset::Beginning)?;
    let mut high = offsets_at(consumer, partitions, Offset::End)?;
    high.retain(|key, high| low.get(key).is_some_and(|low| *high > *low));
    Ok(high)
}
