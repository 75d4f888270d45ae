"""``omnistitch routing-consumer``: a downstream service working from the view alone.

It reads the compacted ``customer.context`` topic and publishes, keyed by the same
customer id, a :class:`~schemas.context.RoutingHint` on the compacted ``routing.hints``
topic (the decision is :func:`omnistitch.routing_hints.hint_for`; this module is only its
Kafka wiring). It is the fuller version of the consumer example in README.md.

Per record of ``customer.context``:

* a **context** -> its hint, unless the hint is the one last published for that customer
  (an LRU of the last hint per key; ``context_version`` is left out of the comparison,
  so a hint carries the context version it was first derived from);
* a **tombstone** (merged away, or erased) -> a tombstone for the same key, so that
  compaction removes the customer's hint too;
* anything else -> a **dead letter** on ``routing.hints.dlq`` (a null or non-UTF-8 key,
  invalid JSON, a value that is not a ``CustomerContext``, or one whose ``customer_id`` is
  not its key), in the format of :mod:`pipeline.dead_letter` (read back by
  :func:`omnistitch.dlq.decode`), logged at ERROR with its reason and counted. Bad input
  never stops the consumer.

**Commit order (at-least-once).** For each batch polled, in this order:

1. produce every hint, tombstone and dead letter of the batch (idempotent producer,
   ``acks=all``, the murmur2 partitioner of the Java clients, so a key's tombstone lands on
   its hint's partition);
2. ``flush``: wait until the broker acknowledged every one of them. If any delivery fails
   or times out, the process exits with status 70 **without committing**, and the batch is
   read again after a restart;
3. commit the batch's offsets (synchronously, offsets auto-commit off).

A crash between 2 and 3 republishes the batch's hints on restart; the topic is compacted
and the hints are idempotent, so a reader sees at most a repeated value. A failed commit
(the group rebalanced meanwhile) is logged and has the same effect for whoever owns the
partition next. The LRU is cleared when partitions are revoked or lost, since another
instance may publish for their keys in between.

SIGTERM and SIGINT stop it between batches: the batch in hand is produced, flushed and
committed, then the consumer leaves the group and the producer is flushed. (The
connectors turn SIGTERM into ``SystemExit`` with
:func:`connectors.runner.exit_cleanly_on_sigterm` because uvicorn owns their loop; here
the loop is ours, so a flag lets it finish the batch instead of unwinding mid-batch.)

Metrics, on ``OMNISTITCH_ROUTING_METRICS_PORT`` (``/metrics``):
``omnistitch_routing_records_total{outcome}`` (``published``, ``unchanged``,
``tombstone``, ``dead_lettered``) and ``omnistitch_dead_letters_total{stage="routing",
reason}``, counted once the broker acknowledged.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cachetools import LRUCache
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import (
    CollectorRegistry,
    Counter,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from pydantic import ValidationError

from omnistitch import dlq
from omnistitch.kafka_client import client_config
from omnistitch.logs import setup_logging
from omnistitch.routing_hints import RoutingPolicy, hint_for
from omnistitch.settings import RoutingConsumerSettings
from omnistitch.topics import (
    CUSTOMER_CONTEXT,
    ROUTING_HINTS,
    ROUTING_HINTS_DLQ,
    TopicSpec,
    ensure_topics,
)
from schemas.context import CustomerContext

log = logging.getLogger(__name__)

#: Exit status after a failed delivery: nothing of the batch was committed (EX_SOFTWARE).
EXIT_DELIVERY_FAILED: Final = 70
#: ``stage`` of this consumer's dead letters.
STAGE: Final = "routing"
BATCH_SIZE: Final = 500
FLUSH_TIMEOUT_S: Final = 30.0

# Its own registry: this process's metrics only (the worker's use the default registry, and
# both define omnistitch_dead_letters_total, which one registry would refuse twice).
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
RECORDS = Counter(
    "omnistitch_routing_records_total",
    "customer.context records the routing consumer handled, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "omnistitch_dead_letters_total",
    "Records sent to a dead-letter topic.",
    ["stage", "reason"],
    registry=REGISTRY,
)


@dataclass(frozen=True)
class Publish:
    """Produce ``value`` (None: a tombstone) under ``key`` on ``routing.hints``."""

    key: bytes
    value: bytes | None


@dataclass(frozen=True)
class Unchanged:
    """The hint equals the one last published for this key: produce nothing."""


@dataclass(frozen=True)
class Reject:
    """Dead-letter the record.

    ``reason`` is a short code; ``summary`` says what is wrong without quoting the value
    (for the log); ``detail``, the parser's full message, may quote it and goes to the dead
    letter only.
    """

    reason: str
    summary: str
    detail: str


Action = Publish | Unchanged | Reject
_TOMBSTONE: Final = b""  # the LRU's mark of a published tombstone (no hint is empty)


class HintMaker:
    """The per-record decision (no Kafka): the hint to publish, a tombstone, or a reject."""

    def __init__(self, policy: RoutingPolicy, cache_size: int) -> None:
        self.policy = policy
        self._last: LRUCache[bytes, bytes] = LRUCache(maxsize=cache_size)

    def decide(self, key: bytes | None, value: bytes | None) -> Action:
        if key is None:
            return Reject("no_key", "the record has no key", "")
        try:
            customer_id = key.decode()
        except UnicodeDecodeError as exc:
            return Reject("invalid_key", "the key is not UTF-8", str(exc))
        if value is None:
            return self._unless_unchanged(key, _TOMBSTONE, Publish(key, None))
        try:
            ctx = CustomerContext.model_validate_json(value)
        except ValidationError as exc:
            return _rejected(exc)
        if ctx.customer_id != customer_id:
            mismatch = f"the value's customer_id is {ctx.customer_id!r}, not the key"
            return Reject("key_mismatch", mismatch, mismatch)
        hint = hint_for(ctx, self.policy)
        fingerprint = hint.model_copy(update={"context_version": 0}).model_dump_json().encode()
        publish = Publish(key, hint.model_dump_json().encode())
        return self._unless_unchanged(key, fingerprint, publish)

    def _unless_unchanged(self, key: bytes, fingerprint: bytes, action: Publish) -> Action:
        if self._last.get(key) == fingerprint:
            return Unchanged()
        # Remembered before delivery: a failed delivery ends the process, and the LRU with it.
        self._last[key] = fingerprint
        return action

    def forget(self) -> None:
        """Drop every remembered hint (partitions revoked: others may publish for them)."""
        self._last.clear()


def _rejected(exc: ValidationError) -> Reject:
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return Reject("invalid_json", first["msg"], str(exc))
    where = ".".join(str(part) for part in first["loc"]) or "the value"
    summary = f"{len(errors)} schema error(s), first at {where}: {first['msg']}"
    return Reject("invalid_context", summary, str(exc))


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge every record of a batch."""


class RoutingConsumer:
    """The consume -> produce -> flush -> commit loop around a :class:`HintMaker`."""

    def __init__(
        self, settings: RoutingConsumerSettings, consumer: Consumer, producer: Producer
    ) -> None:
        self.source = settings.topic(CUSTOMER_CONTEXT)
        self.target = settings.topic(ROUTING_HINTS)
        self.dead_letters = settings.topic(ROUTING_HINTS_DLQ)
        self.maker = HintMaker(settings.routing_policy(), settings.routing_cache_size)
        self.consumer = consumer
        self.producer = producer
        self.stopping = threading.Event()

    def run(self) -> None:
        """Process batches until :attr:`stopping` is set; raises :class:`DeliveryFailed`."""
        self.consumer.subscribe([self.source], on_revoke=self._revoked, on_lost=self._revoked)
        log.info("routing consumer reading %s, publishing %s", self.source, self.target)
        while not self.stopping.is_set():
            batch = self.consumer.consume(num_messages=BATCH_SIZE, timeout=1.0)
            if batch:
                self.process(batch)

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked: %d; forgetting the last hints", len(partitions))
        self.maker.forget()

    def process(self, batch: list[Message]) -> None:
        """Produce the batch's records, wait for every ack, then commit its offsets."""
        failures: list[str] = []
        outcomes: Tally[str] = Tally()
        rejected: Tally[str] = Tally()
        offsets: dict[tuple[str, int], int] = {}

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(err.str())

        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer error: %s", err.str())
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if topic is None or partition is None or offset is None:  # error events only
                continue
            action = self.maker.decide(msg.key(), msg.value())
            if isinstance(action, Publish):
                self._produce(self.target, action.key, action.value, delivered)
                outcomes["published" if action.value is not None else "tombstone"] += 1
            elif isinstance(action, Unchanged):
                outcomes["unchanged"] += 1
            else:
                customer_id = (msg.key() or b"").decode(errors="replace")
                log.error(
                    "dead-lettered %s[%d]@%d: %s (%s)",
                    topic,
                    partition,
                    offset,
                    action.reason,
                    action.summary,
                    extra={"customer_id": customer_id or None},
                )
                letter = dlq.encode(
                    stage=STAGE,
                    reason=action.reason,
                    detail=action.detail,
                    key=msg.key(),
                    value=msg.value(),
                    topic=topic,
                    partition=partition,
                    offset=offset,
                )
                self._produce(self.dead_letters, msg.key(), letter, delivered)
                outcomes["dead_lettered"] += 1
                rejected[action.reason] += 1
            offsets[(topic, partition)] = offset + 1

        left = self.producer.flush(FLUSH_TIMEOUT_S)
        if left or failures:
            raise DeliveryFailed(
                f"{left} record(s) unacknowledged after {FLUSH_TIMEOUT_S}s, "
                f"{len(failures)} failed: {failures[:3]}"
            )
        for outcome, n in outcomes.items():
            RECORDS.labels(outcome).inc(n)
        for reason, n in rejected.items():
            DEAD_LETTERS.labels(STAGE, reason).inc(n)
        if offsets:
            self._commit([TopicPartition(t, p, o) for (t, p), o in offsets.items()])

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.5)
        self.producer.poll(0)

    def _commit(self, offsets: list[TopicPartition]) -> None:
        try:
            results = self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("offset commit failed (the batch may be re-read): %s", exc)
            return
        for tp in results:
            if tp.error is not None:
                log.warning("offset commit failed for %s[%d]: %s", tp.topic, tp.partition, tp.error)


def run(settings: RoutingConsumerSettings) -> int:
    """Create the topics, serve the metrics, consume until SIGTERM/SIGINT; the exit status."""
    setup_logging(settings.log_level)
    dead_letters = TopicSpec(
        settings.topic(ROUTING_HINTS_DLQ), 1, {"retention.ms": str(30 * 86_400_000)}
    )
    ensure_topics(settings, extra=[dead_letters])
    if settings.routing_metrics_port:
        start_http_server(
            settings.routing_metrics_port, settings.routing_metrics_host, registry=REGISTRY
        )
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": settings.routing_group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",  # a new group reads the whole view first
                "logger": logging.getLogger(f"{__name__}.librdkafka"),
            },
        )
    )
    producer = Producer(
        client_config(
            settings,
            **{
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "partitioner": "murmur2_random",
                # A record not acknowledged by then fails its delivery within the flush.
                "message.timeout.ms": int(FLUSH_TIMEOUT_S * 1000) - 5000,
                "logger": logging.getLogger(f"{__name__}.librdkafka"),
            },
        )
    )
    loop = RoutingConsumer(settings, consumer, producer)

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping after the current batch", signum)
        loop.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        loop.run()
    except (DeliveryFailed, KafkaException):
        log.critical("routing consumer failed; exiting without committing", exc_info=True)
        return EXIT_DELIVERY_FAILED
    finally:
        consumer.close()  # leaves the group at once; commits nothing (auto-commit is off)
        producer.flush(10)
    log.info("routing consumer stopped")
    return 0
