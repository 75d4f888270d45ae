"""The ingest stage: raw records consumed in batches with confluent-kafka, each batch's
resolve requests appended to the identity log, then its offsets committed.

Raw events are the only per-event hop of the pipeline; every later hop carries batches.
Through a faust stream each record costs ~110 µs of framework before any work is done
(measured alone: 7,000 records/s on one core, ``take_events`` doing nothing), which caps a
worker far below the issue's floor. librdkafka hands a batch of records over in one call
(~2 µs a record), so the stage runs on a thread of the worker with its own consumer group,
``<app id>-ingest`` (faust's group uses faust's own assignor, which a second client kind
cannot join).

The order for each batch, and why nothing a connector was told is accepted is lost:

1. take up to ``batch_max`` records: the first as soon as it comes, and those fetched with
   it (the broker holds each fetch until it has 64 KB or ``batch_wait_s`` has passed, so
   a fetch is a batch; the stage itself does not wait again);
2. decode and normalise each one (:func:`pipeline.intake.intake`, pure); a record that
   cannot be used becomes a dead letter carrying the reason and its original bytes;
3. produce the dead letters to ``raw.events.dlq`` and the resolve requests, as batch
   records, to ``<app id>-identity-requests`` (key: the tenant);
4. flush the producer (idempotent, ``acks=all``): every record of step 3 acknowledged, or
   the stage fails;
5. the batch's offsets become committable; they are committed at most every
   ``ingest_commit_interval_s`` (1 s), and at once when their partition is revoked
   (it moves to another worker) or the stage stops.

A crash anywhere before a commit re-delivers the batches since the last one to whichever
worker owns their partitions next; the requests they appended twice are resolved
idempotently (by event id). A failure of steps 1-5 ends the worker at once (exit status
70), without committing: it restarts and resumes from the last commit, and a crash loop
shows as lag on the group.

What it asks of the broker: the consumer waits for ``FETCH_MIN_BYTES`` or ``batch_wait_s``
per fetch (with librdkafka's defaults it fetched ~630 times a second at 2,000 ev/s, a few
records each; ~170 now), and the offsets are committed once a second, not per batch (~70
commits a second at that rate): the shared broker's CPU fell from 0.50-0.52 to 0.42 of a
core (docs/performance-history.md, session 14).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from omnistitch.kafka_client import client_config, durable_producer_config
from omnistitch.settings import WorkerSettings
from omnistitch.topics import RAW_EVENTS, RAW_EVENTS_DLQ, ingest_group, internal_topic
from pipeline import metrics as m
from pipeline.dead_letter import letter
from pipeline.intake import Rejected, WireEvent, intake
from pipeline.ops import batch_records
from pipeline.rules import Rules
from pipeline.stage_failure import stage_failed
from schemas.events import RawEvent

log = logging.getLogger(__name__)

#: How long one flush may wait for the broker's acknowledgements before the stage fails.
FLUSH_TIMEOUT_S = 60.0
#: Most raw records, in KB, the consumer fetches ahead of the stage.
PREFETCH_KB = 8192
#: How long an idle stage waits for a first record before checking whether to stop.
IDLE_POLL_S = 0.5
#: Bytes the broker gathers for a fetch before answering it (or ``batch_wait_s`` passes):
#: a batch's worth, where the default (1) answers each fetch with the few records that
#: arrived since the last one.
FETCH_MIN_BYTES = 65_536

Offsets = dict[tuple[str, int], TopicPartition]


class IngestError(RuntimeError):
    """A batch's outputs were not all acknowledged: its offsets must not be committed."""


class Ingest:
    """The ingest stage of one worker, on a thread of its own."""

    def __init__(self, settings: WorkerSettings, rules: Rules) -> None:
        s = self.settings = settings
        self.rules = rules
        self.raw_topic = s.topic(RAW_EVENTS)
        self.dlq_topic = s.topic(RAW_EVENTS_DLQ)
        self.requests_topic = internal_topic(s, s.app_id, "identity-requests")
        self.group = ingest_group(s.app_id)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the batch in hand (flushed and committed), leave the group."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            consumer = Consumer(self.consumer_config())
            producer = Producer(self.producer_config())
            handed_on: Offsets = {}  # acknowledged downstream, not yet committed

            def on_revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
                commit_handed_on(consumer, handed_on, partitions)

            consumer.subscribe([self.raw_topic], on_revoke=on_revoke)
            interval = self.settings.ingest_commit_interval_s
            committed_at = time.monotonic()
            try:
                while not self._stopping.is_set():
                    batch = self.next_batch(consumer)
                    if batch:
                        self.process(batch, producer)
                        handed_on.update(next_offsets(batch))
                    if handed_on and time.monotonic() - committed_at >= interval:
                        consumer.commit(offsets=list(handed_on.values()), asynchronous=True)
                        handed_on.clear()
                        committed_at = time.monotonic()
                # Stopping: every batch handed on is acknowledged; commit them all now.
                commit_handed_on(consumer, handed_on, consumer.assignment())
            finally:
                consumer.close()  # leaves the group at once: its partitions move now
        except Exception:
            stage_failed("ingest")

    # -- the batch --------------------------------------------------------------------------
    def consumer_config(self) -> dict[str, Any]:
        return client_config(
            self.settings,
            **{
                "group.id": self.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # librdkafka prefetches up to 64 MB by default: RSS a worker need not hold
                # (8 MB is seconds of raw events at the rates one worker stitches).
                "queued.max.messages.kbytes": PREFETCH_KB,
                "fetch.min.bytes": FETCH_MIN_BYTES,
                "fetch.wait.max.ms": max(1, round(self.settings.batch_wait_s * 1000)),
                # The same failover time as faust's group (librdkafka's default is 45 s).
                "session.timeout.ms": round(self.settings.session_timeout_s * 1000),
                "on_commit": _on_commit,
            },
        )

    def producer_config(self) -> dict[str, Any]:
        # Kafka's Java-client partitioner, as faust (aiokafka) uses: the tenant's requests
        # must land on the partition whose identity tables the router names as the
        # tenant's (librdkafka's default, CRC32, picks another one).
        return durable_producer_config(self.settings, partitioner="murmur2_random")

    def next_batch(self, consumer: Consumer) -> list[Message]:
        """Up to ``batch_max`` records: the first one as soon as it comes, then those already
        fetched. Waiting ``batch_wait_s`` more for others (as it did) added that to every
        record's ingest hop at moderate load: the broker had already gathered them for that
        long (``fetch.wait.max.ms``). A fatal client error is raised."""
        first = consumer.poll(IDLE_POLL_S)
        if first is None:
            return []
        batch = []
        for msg in (first, *consumer.consume(self.settings.batch_max - 1, 0)):
            error = msg.error()
            if error is None:
                batch.append(msg)
            elif error.fatal():
                raise KafkaException(error)
            else:  # informational (librdkafka retries by itself): no record to process
                log.warning("ingest consumer: %s", error)
        return batch

    def process(self, batch: Sequence[Message], producer: Producer) -> None:
        """Steps 2-4 of the module's order: decode, produce, flush (raises on any failure)."""
        requests: list[bytes] = []
        decoded: list[tuple[str, RawEvent | WireEvent]] = []
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        for msg in batch:
            topic, partition, offset = str(msg.topic()), msg.partition() or 0, msg.offset() or 0
            value = msg.value()
            outcome = intake(value, self.rules, topic=topic, partition=partition, offset=offset)
            if isinstance(outcome, Rejected):
                key, reason = msg.key(), outcome.reason
                parked = letter(
                    "ingest",
                    reason,
                    outcome.detail,
                    key,
                    value,
                    topic=topic,
                    partition=partition,
                    offset=offset,
                )
                producer.produce(self.dlq_topic, parked, key, on_delivery=delivered)
                continue
            event, request = outcome
            decoded.append((topic, event))
            requests.append(request.encode())
        m.events_in(decoded)
        m.INGEST_MESSAGES.inc(len(batch))
        tenant = self.settings.tenant.encode()
        for record in batch_records(requests, "requests"):
            producer.produce(self.requests_topic, record, tenant, on_delivery=delivered)
        unsent = producer.flush(FLUSH_TIMEOUT_S)
        if unsent or failures:
            raise IngestError(
                f"{unsent} record(s) unacknowledged after {FLUSH_TIMEOUT_S:.0f}s; "
                f"delivery errors: {failures[:3]}"
            )


def next_offsets(batch: Sequence[Message]) -> Offsets:
    """The offsets to commit after ``batch``: one past its last record, per partition."""
    ends: dict[tuple[str, int], int] = {}
    for msg in batch:
        key = (str(msg.topic()), msg.partition() or 0)
        ends[key] = max(ends.get(key, -1), (msg.offset() or 0) + 1)
    return {key: TopicPartition(key[0], key[1], end) for key, end in ends.items()}


def commit_handed_on(
    consumer: Consumer, handed_on: Offsets, partitions: Sequence[TopicPartition]
) -> None:
    """Commit (and forget) at once what was handed on from ``partitions``: when they move
    to another worker, which starts at these commits (else it would re-read up to
    ``ingest_commit_interval_s`` of their events), and when the stage stops. A commit that
    fails is not lost work (the records are re-read and resolved idempotently): it is
    logged, not raised."""
    offsets = [tp for tp in (handed_on.pop((p.topic, p.partition), None) for p in partitions) if tp]
    if not offsets:
        return
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        log.warning("ingest offsets not committed (they will be re-read): %s", exc)


def _on_commit(err: KafkaError | None, partitions: list[TopicPartition]) -> None:
    # A commit that failed is not lost work: the records are re-delivered and resolved
    # idempotently. It is logged, since repeated failures show a group in trouble.
    if err is not None:
        log.warning("ingest offsets not committed (they will be re-read): %s", err)
