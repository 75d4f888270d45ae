"""Where a consumer group stands on a topic, read from the broker (tests on a real one)."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition


def committed_to_end(bootstrap: str, group: str, topic: str) -> bool | None:
    """True once ``group`` committed, on every partition of ``topic``, its end offset
    (``None`` otherwise, for ``wait_for``)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
        commits = consumer.committed(tps, timeout=10)
        done = all(end == 0 or c.offset == end for end, c in zip(ends, commits, strict=True))
    finally:
        consumer.close()
    return done or None
