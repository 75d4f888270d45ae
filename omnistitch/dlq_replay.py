"""``omnistitch dlq replay``: republish dead-lettered records to ``raw.events``.

Reads ``raw.events.dlq`` from its first offset up to its end *as of the start* (records
dead-lettered again during the run are not re-read), decodes each record's original key
and value, and, unless ``dry_run``, produces them unchanged to ``raw.events`` with the
same partitioner as the connectors (murmur2), idempotently and with ``acks=all``. It
commits nothing: a second run replays the same records again, which the pipeline absorbs
(events are deduplicated by ``event_id``), so a replay is safe to repeat.

Each chosen record is reported as one JSON line (partition, offset, reason, event id;
never the original key or value, which carry personal data), then a summary line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from omnistitch.dlq import InvalidDeadLetter, ReplayReport, decode, event_id_of
from omnistitch.kafka_client import client_config
from omnistitch.settings import KafkaSettings
from omnistitch.topics import RAW_EVENTS, RAW_EVENTS_DLQ


class ReplayError(RuntimeError):
    """The replay could not read the dead letters or publish them."""


def replay(
    settings: KafkaSettings,
    *,
    reasons: Collection[str] = (),
    limit: int | None = None,
    dry_run: bool = False,
    timeout_s: float = 30.0,
    emit: Callable[[str], None] = print,
) -> ReplayReport:
    """Replay the dead letters whose reason is in ``reasons`` (all if empty), at most
    ``limit`` of them; ``emit`` receives one JSON line per chosen record."""
    source, target = settings.topic(RAW_EVENTS_DLQ), settings.topic(RAW_EVENTS)
    report = ReplayReport(dry_run=dry_run)
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": "omnistitch-dlq-replay",  # assign() only: never joins nor commits
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
            },
        )
    )
    producer = None if dry_run else _producer(settings)
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            report.replayed += 1
        else:
            failures.append(err.str())

    try:
        ends = _end_offsets(consumer, source, timeout_s)
        consumer.assign([TopicPartition(source, p, start) for p, (start, _) in ends.items()])
        remaining = {p for p, (start, end) in ends.items() if end > start}
        deadline = time.monotonic() + timeout_s
        while remaining and (limit is None or report.matched < limit):
            if time.monotonic() > deadline:
                raise ReplayError(f"timed out reading {source} after {timeout_s}s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            partition = msg.partition() or 0
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(partition)
                    continue
                raise ReplayError(f"reading {source}: {err.str()}")
            offset = msg.offset() or 0
            if offset >= ends[partition][1]:
                remaining.discard(partition)
                continue
            if offset + 1 >= ends[partition][1]:
                remaining.discard(partition)
            report.scanned += 1
            try:
                letter = decode(msg.value())
            except InvalidDeadLetter as exc:
                report.invalid += 1
                emit(json.dumps({"partition": partition, "offset": offset, "invalid": str(exc)}))
                continue
            if not report.wants(letter, reasons, limit):
                continue
            report.matched += 1
            report.by_reason[letter.reason] += 1
            line = {
                "partition": partition,
                "offset": offset,
                "reason": letter.reason,
                "event_id": event_id_of(letter.value),
                "action": "would_replay" if dry_run else "replay",
            }
            emit(json.dumps(line))
            if producer is not None:
                producer.produce(target, key=letter.key, value=letter.value, on_delivery=delivered)
                producer.poll(0)
        if producer is not None:
            left = producer.flush(timeout_s)
            if left or failures:
                raise ReplayError(
                    f"{left} records not acknowledged, {len(failures)} failed: {failures[:3]}"
                )
    finally:
        consumer.close()
    emit(json.dumps(report.as_dict()))
    return report


def _producer(settings: KafkaSettings) -> Producer:
    config: dict[str, Any] = client_config(
        settings,
        **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # The connectors' partitioner: a key lands on the partition it came from.
            "partitioner": "murmur2_random",
        },
    )
    return Producer(config)


def _end_offsets(consumer: Consumer, topic: str, timeout_s: float) -> dict[int, tuple[int, int]]:
    """``{partition: (first offset, end offset)}`` of ``topic`` now."""
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            raise ReplayError(f"no topic {topic}: {None if info is None else info.error}")
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            for p in info.partitions
        }
    except KafkaException as exc:
        raise ReplayError(f"reading offsets of {topic}: {exc}") from exc
