#!/usr/bin/python3
"""The Python fanout a user would write instead of fanout: the benchmark's contender (d).

It does what the old Go events-fanout did, with confluent-kafka (Debian's
python3-confluent-kafka, on librdkafka): consume the EventRouter topic, parse each envelope's
JSON, and produce the bytes unchanged, with the same key, to the topic named after
`event.metadata.namespace`. Envelopes that are not JSON or have no namespace are skipped and
counted, as the old tool did (fanout dead-letters them instead).

It is written to be fair, not slow: it consumes in batches, keeps many writes in flight (never
waits for one), serves delivery reports with poll(), flushes before exiting, and keeps the source
record's timestamp on each write, as fanout does, so the benchmark measures latency the same way
for both. Like the typical script it commits offsets automatically, which is at-most-once on a
crash; fanout commits only what has been delivered.

Usage: python_fanout.py BOOTSTRAP SOURCE_TOPIC GROUP_ID [FETCH_WAIT_MS]
Runs until SIGTERM or SIGINT, then flushes and prints its counts to stderr.
"""

import json
import signal
import sys

from confluent_kafka import Consumer, KafkaException, Producer


def main():
    bootstrap, source_topic, group_id = sys.argv[1:4]
    settings = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "auto.offset.reset": "earliest",
    }
    if len(sys.argv) > 4:
        settings["fetch.wait.max.ms"] = int(sys.argv[4])
    consumer = Consumer(settings)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    failed = []

    def delivered(err, _msg):
        if err is not None:
            failed.append(err)

    running = True

    def stop(_signum, _frame):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    consumer.subscribe([source_topic])
    forwarded = skipped = 0
    while running:
        for msg in consumer.consume(num_messages=1000, timeout=0.1):
            if msg.error():
                raise KafkaException(msg.error())
            value = msg.value()
            try:
                namespace = json.loads(value)["event"]["metadata"]["namespace"]
            except (ValueError, KeyError, TypeError):
                namespace = None
            if not namespace:
                skipped += 1
                continue
            while True:
                try:
                    producer.produce(
                        namespace,
                        value,
                        key=msg.key(),
                        timestamp=msg.timestamp()[1],
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    producer.poll(0.01)  # librdkafka's queue is full: serve deliveries
            forwarded += 1
        producer.poll(0)
    remaining = producer.flush(30)
    consumer.close()
    print(
        f"forwarded {forwarded}, skipped {skipped}, failed {len(failed)}, "
        f"undelivered after flush {remaining}",
        file=sys.stderr,
    )
    return 1 if failed or remaining else 0


if __name__ == "__main__":
    sys.exit(main())
