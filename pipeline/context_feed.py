"""A worker's live tail of ``customer.context``, fanned out to subscribers by customer id.

The query API's Server-Sent Events (``GET /v1/customers/{id}/stream``) must work on any
worker, but a worker's tables hold only its own partitions. So each worker runs **one**
plain consumer (aiokafka, no consumer group) assigned to *every* partition of the
compacted topic, starting at the latest offsets, and hands each record to the
subscribers of its key through bounded asyncio queues:

* a record for a subscribed key: :class:`Update` (a null value: :class:`Tombstone`);
* a record whose ``merged_from`` lists a subscribed id: that subscriber is re-targeted to
  the record's key *inside the feed* (so it misses none of the survivor's later records)
  and gets :class:`Merged`;
* a subscriber whose queue is full gets its queue replaced by one :class:`Resync` (only
  the latest context of a compacted key matters: the reader fetches it afresh);
* the feed stops or fails: every subscriber gets :class:`Closed` and is dropped. A failure
  is logged with its traceback and counted (``omnistitch_context_feed_failures_total``);
  the next subscriber starts a new consumer.

The consumer starts with the first subscriber (``subscribe`` returns once it is
positioned, so a reader that subscribes *then* fetches the current context misses
nothing) and stops after ``idle_s`` without subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import (  # type: ignore[import-untyped]  # aiokafka ships no type hints
    AIOKafkaConsumer,
    ConsumerRecord,
)
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

SUBSCRIBERS = Gauge(
    "omnistitch_context_feed_subscribers", "Live context streams (SSE) served by this worker."
)
DELIVERED = Counter(
    "omnistitch_context_feed_deliveries_total",
    "Context records handed to stream subscribers.",
    ["kind"],
)
FAILURES = Counter(
    "omnistitch_context_feed_failures_total",
    "Times the worker's customer.context tail failed (the streams it served were closed).",
)

#: The top-level ``"merged_from":[...]`` of a context as pydantic serialises it. Only a
#: pre-filter: a match is confirmed on the parsed record (a property could be named so).
_MERGED_FROM = re.compile(rb'"merged_from":\[([^\]]*)\]')
_QUOTED = re.compile(rb'"([^"\\]*)"')


@dataclass(frozen=True)
class Update:
    customer_id: str
    value: bytes


@dataclass(frozen=True)
class Tombstone:
    customer_id: str


@dataclass(frozen=True)
class Merged:
    """``from_id`` was merged into ``into_id``; ``value`` is the survivor's context."""

    from_id: str
    into_id: str
    value: bytes


@dataclass(frozen=True)
class Resync:
    """Records were dropped for this slow subscriber: fetch the current context again."""


@dataclass(frozen=True)
class Closed:
    reason: str


FeedItem = Update | Tombstone | Merged | Resync | Closed


@dataclass(eq=False)
class Subscription:
    """One reader's view of the feed: the customer id it follows and its queue."""

    customer_id: str
    queue: asyncio.Queue[FeedItem]
    sub_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def offer(self, item: FeedItem) -> bool:
        """Queue ``item``; on overflow replace the backlog by a single :class:`Resync`."""
        try:
            self.queue.put_nowait(item)
            return True
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(Closed(item.reason) if isinstance(item, Closed) else Resync())
            return False


ConsumerFactory = Callable[[], AIOKafkaConsumer]


class ContextFeed:
    """The shared tail of one compacted topic, keyed by customer id (see the module doc)."""

    def __init__(
        self,
        topic: str,
        consumer_factory: ConsumerFactory,
        *,
        queue_size: int = 64,
        idle_s: float = 60.0,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.topic = topic
        self._factory = consumer_factory
        self._queue_size = queue_size
        self._idle_s = idle_s
        self.start_timeout_s = start_timeout_s
        self._by_key: dict[str, set[Subscription]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    # -- subscribers ------------------------------------------------------------------
    @property
    def subscribers(self) -> int:
        return sum(len(subs) for subs in self._by_key.values())

    async def subscribe(self, customer_id: str) -> Subscription:
        """Follow ``customer_id`` from now on; returns once the consumer is positioned."""
        if self._closed:
            raise RuntimeError("the context feed is shut down")
        sub = Subscription(customer_id, asyncio.Queue(self._queue_size))
        self._by_key.setdefault(customer_id, set()).add(sub)
        SUBSCRIBERS.set(self.subscribers)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            await self._ensure_running()
        except BaseException:
            self.unsubscribe(sub)
            raise
        return sub

    def retarget(self, sub: Subscription, customer_id: str) -> None:
        """Make ``sub`` follow ``customer_id`` instead (a merge the reader found itself)."""
        if sub.customer_id == customer_id:
            return
        self._remove(sub)
        sub.customer_id = customer_id
        self._by_key.setdefault(customer_id, set()).add(sub)

    def unsubscribe(self, sub: Subscription) -> None:
        self._remove(sub)
        SUBSCRIBERS.set(self.subscribers)
        if not self._by_key and self._task is not None and self._idle is None:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_later(self._idle_s, self._stop_when_idle)

    def _remove(self, sub: Subscription) -> None:
        subs = self._by_key.get(sub.customer_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_key[sub.customer_id]

    # -- the consumer -----------------------------------------------------------------
    async def _ensure_running(self) -> None:
        async with self._lock:
            if self._task is not None and not self._task.done():
                return
            consumer = self._factory()
            await consumer.start()
            try:
                # Without a group, aiokafka assigns every partition of a subscribed topic
                # (and any added later) to this consumer, as soon as it has the metadata.
                consumer.subscribe(topics=[self.topic])
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.start_timeout_s
                while not (tps := sorted(consumer.assignment())):
                    if loop.time() > deadline:
                        raise RuntimeError(f"no partitions of {self.topic!r} within the timeout")
                    await asyncio.sleep(0.05)
                await consumer.seek_to_end(*tps)
                for tp in tps:  # resolve the positions now: "latest" means latest *now*
                    await consumer.position(tp)
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer
            self._task = asyncio.create_task(self._run(consumer), name="context-feed")
            log.info("context feed started on %s (%d partitions)", self.topic, len(tps))

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        """Dispatch records until cancelled. A failure is not retried here: it is logged
        with its traceback, counted, and surfaced to every subscriber as :class:`Closed`
        (their streams end and the clients reconnect, which starts a new consumer)."""
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=500)
                for records in batches.values():
                    for record in records:
                        self._dispatch(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            FAILURES.inc()
            log.exception("context feed on %s failed; closing its streams", self.topic)
            if self._task is asyncio.current_task():
                self._task = None  # the next subscriber starts a new consumer
            self._close_all(f"context feed failed: {type(exc).__name__}: {exc}")
        finally:
            await consumer.stop()

    def _dispatch(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.key is None:
            return
        key = record.key.decode(errors="replace")
        value = record.value
        for sub in list(self._by_key.get(key, ())):
            item: FeedItem = Tombstone(key) if value is None else Update(key, value)
            sub.offer(item)
            DELIVERED.labels("tombstone" if value is None else "context").inc()
        if value is None or not self._by_key:
            return
        for merged in self._merged_subscribed(key, value):
            for sub in list(self._by_key.get(merged, ())):
                self.retarget(sub, key)
                sub.offer(Merged(merged, key, value))
                DELIVERED.labels("merged").inc()

    def _merged_subscribed(self, key: str, value: bytes) -> list[str]:
        """Subscribed ids (other than ``key``) that this context says it merged in."""
        found = _MERGED_FROM.findall(value)
        if not found:
            return []
        maybe = {m.decode() for ids in found for m in _QUOTED.findall(ids)}
        maybe = {m for m in maybe if m != key and m in self._by_key}
        if not maybe:
            return []
        merged_from = json.loads(value).get("merged_from") or []
        return sorted(maybe.intersection(merged_from))

    def _close_all(self, reason: str) -> None:
        for subs in list(self._by_key.values()):
            for sub in subs:
                sub.offer(Closed(reason))
        self._by_key.clear()
        SUBSCRIBERS.set(0)

    def _stop_when_idle(self) -> None:
        self._idle = None
        if not self._by_key and self._task is not None:
            self._task.cancel()
            self._task = None
            log.info("context feed on %s stopped (no subscribers)", self.topic)

    async def close(self, reason: str = "worker is shutting down") -> None:
        """Close every stream and stop the consumer (the worker is stopping)."""
        self._closed = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._close_all(reason)
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def aiokafka_consumer_factory(
    bootstrap_servers: str, auth: Mapping[str, Any], client_id: str
) -> ConsumerFactory:
    """A factory of group-less consumers (no commits) with the deployment's security."""

    def make() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers.split(","),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            client_id=client_id,
            **auth,
        )

    return make
