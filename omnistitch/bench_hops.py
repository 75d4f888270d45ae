"""Where an event's end-to-end latency goes: the delay of each hop, from record timestamps.

Every hop of the pipeline is a Kafka record stamped by its producer when it is produced
(``CreateTime``, the producing process's wall clock; every process of the bench runs on
one machine, so the clocks are the same one):

============  =================================================  ===========================
hop           from                                               to
============  =================================================  ===========================
``ingest``    the bench produces the raw event                   ingest appends its request
                                                                 to the identity log
``identity``  the request on the identity log                    the identity stage sends
                                                                 the event op
``context``   the event op on the ops topic                      the context stage publishes
                                                                 the customer's context
============  =================================================  ===========================

Each hop is the time its stage took to be handed the record (the consumer's fetch, the
stream's buffer, the stage busy with earlier batches) plus the time to handle it. The
three add up, event by event, to the end-to-end figure. The records are read back after
the offered load, from the offsets the topics had when it began, and an event is found in
a record by its id (the latency events' ids are unique, and each record carries its
event's JSON verbatim), so nothing in the pipeline is instrumented for it.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping

from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, TopicPartition

#: The hops, in the order an event takes them.
HOPS = ("ingest", "identity", "context")
#: How long a read waits for records before it counts a topic as read to its end.
READ_IDLE_S = 5.0


def percentiles(values_ms: Iterable[float]) -> dict[str, float]:
    """p50 (the median), p95 and p99 of ``values_ms``; empty for no values."""
    ordered = sorted(values_ms)
    if not ordered:
        return {}

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": statistics.median(ordered), "p95": pct(0.95), "p99": pct(0.99)}


def hop_delays(
    sent: Mapping[str, float],
    requested: Mapping[str, float],
    forwarded: Mapping[str, float],
    published: Mapping[str, float],
) -> dict[str, dict[str, float]]:
    """Per-hop delay percentiles (ms) of the events seen at every hop; each argument maps
    an event id to when (seconds since the epoch) it was produced at that point."""
    through = [e for e in sent if e in requested and e in forwarded and e in published]
    stamps = [sent, requested, forwarded, published]
    return {
        hop: percentiles((stamps[i + 1][e] - stamps[i][e]) * 1000 for e in through)
        for i, hop in enumerate(HOPS)
    }


def first_stamps(
    bootstrap: str, topic: str, since_ms: int, event_id: re.Pattern[bytes]
) -> dict[str, float]:
    """When (CreateTime, seconds) each event id matched by ``event_id`` (one capturing
    group) first appears in ``topic``, reading every partition from its first record at or
    after ``since_ms`` to the end it has now."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-hops", "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for p in partitions], timeout=10
        )
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in starts}
        # A partition with nothing at or after the time has offset -1 (its end): skip it.
        todo = {tp.partition for tp in starts if 0 <= tp.offset < ends[tp.partition]}
        consumer.assign([tp for tp in starts if tp.partition in todo])
        first: dict[str, float] = {}
        while todo:
            batch = consumer.consume(1000, READ_IDLE_S)
            if not batch:
                raise TimeoutError(f"{topic}: partitions {sorted(todo)} not read to their end")
            for msg in batch:
                if msg.error() is not None:
                    continue
                kind, stamp = msg.timestamp()
                if kind == TIMESTAMP_CREATE_TIME:
                    for eid in event_id.findall(msg.value() or b""):
                        first.setdefault(eid.decode(), stamp / 1000.0)
                partition, offset = msg.partition(), msg.offset()
                if partition is not None and offset is not None and offset + 1 >= ends[partition]:
                    todo.discard(partition)
        return first
    finally:
        consumer.close()
