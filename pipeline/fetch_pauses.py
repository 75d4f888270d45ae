"""faust's paused partitions, paused in aiokafka's fetcher too: no fetching what no one reads.

faust pauses a partition in its own bookkeeping only: it stops *taking* the partition's
records (``getmany`` asks aiokafka for the active partitions alone), but aiokafka's fetcher
still names every assigned partition in every fetch request. A worker is assigned the
changelog partitions of each of its tables, and faust keeps them paused once recovery
is done, so each fetch request named ~65 partitions of which the stages read 17 (the
identity requests, the customer ops and faust's leader topic), each encoded into the
request and decoded from the response in Python on the consumer's thread; the stages' own
changelog writes answered the long poll with records no one would take, which then sat
in the fetcher's buffer.

:class:`PausingConsumer` is faust's aiokafka consumer that passes each pause and resume
on to aiokafka (``AIOKafkaConsumer.pause`` / ``resume``, run on the consumer's own thread,
whose event loop owns the fetcher's futures), so the fetcher asks only for what faust
reads: the stages' partitions, and the changelogs while they are being recovered or kept
as standbys. faust's check that every assigned partition is fetched ("Aiokafka has not
sent fetch request for ...", after ``stream_processing_timeout``) skips the paused ones,
which are not fetched on purpose.

Measured (docs/performance-history.md, session 17), same-run pairs against the same code
without it: at 2,000 ev/s offered, the faust hops' median 13-15 ms against 19-31 (three
pairs); a 50,000-event drain 1.10x in the median of six pairs (0.85-1.21, this machine's
noise); the worker's CPU at a fixed offered load unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import faust
from aiokafka import TopicPartition  # type: ignore[import-untyped]  # no type hints
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

#: The states :meth:`PausingConsumer.stage_partition_states` counts.
STAGE_STATES = ("reading", "paused", "buffer_full", "fetch_paused")


class PausingConsumer(driver.Consumer):
    """faust's aiokafka consumer, its pauses and resumes passed on to aiokafka's fetcher."""

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        tps = list(tps)
        super().pause_partitions(tps)
        self._pass_on(tps, paused=True)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        tps = list(tps)
        super().resume_partitions(tps)
        self._pass_on(tps, paused=False)

    def verify_event_path(self, now: float, tp: TP) -> None:
        if tp in self._paused_partitions:  # not fetched on purpose
            return None
        return super().verify_event_path(now, tp)

    def _aiokafka(self) -> Any:
        """aiokafka's consumer, or None before the consumer starts."""
        return cast(Any, self._thread)._consumer

    def fetched_partitions(self) -> int:
        """Assigned partitions aiokafka's fetcher asks for (not paused); read on scrape, from
        any thread (an assignment's partitions are a frozenset, its states fixed)."""
        if (consumer := self._aiokafka()) is None:
            return 0
        subscription = consumer._subscription
        return len(subscription.assigned_partitions() - subscription.paused_partitions())

    def stage_partition_states(self) -> dict[str, int]:
        """How many of the assigned partitions the stages read (every one but the tables'
        changelogs) are, in faust's bookkeeping, ``reading``, ``paused`` (a rebalance or
        recovery) or ``buffer_full`` (their stream's buffer is full: not taken until it
        drains), and how many faust reads but aiokafka has paused (``fetch_paused``: never
        fetched, a stall; should stay 0). Read on scrape, from any thread: each set is
        copied in one step. (aiokafka's partitions and faust's are equal tuples.)"""
        if (consumer := self._aiokafka()) is None:
            return dict.fromkeys(STAGE_STATES, 0)
        subscription = consumer._subscription
        assigned = subscription.assigned_partitions()
        stages = {tp for tp in assigned if not self._is_changelog_tp(tp)}
        paused = stages & set(self._paused_partitions)
        buffered = stages & set(self._buffered_partitions)
        fetch_paused = subscription.paused_partitions()
        return {
            "reading": len(stages - paused - buffered),
            "paused": len(paused),
            "buffer_full": len(buffered - paused),
            "fetch_paused": len((stages - paused) & fetch_paused),
        }

    def _pass_on(self, tps: list[TP], *, paused: bool) -> None:
        consumer = self._aiokafka()
        if consumer is None or not tps:  # not started: nothing is assigned, nothing fetched
            return
        parts = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        cast(Any, self._thread).thread_loop.call_soon_threadsafe(_apply, consumer, parts, paused)


def _apply(consumer: Any, parts: list[TopicPartition], paused: bool) -> None:
    """On the consumer's thread: pause or resume those of ``parts`` still assigned (a
    rebalance may have moved some since faust asked)."""
    subscription = consumer._subscription
    assigned = [tp for tp in parts if subscription.is_assigned(tp)]
    if assigned:
        (consumer.pause if paused else consumer.resume)(*assigned)


def install(app: faust.App, consumer: type[PausingConsumer] = PausingConsumer) -> None:
    """Make ``app`` build ``consumer``, a :class:`PausingConsumer` (before its consumer is
    first used)."""
    transport = cast(Any, app.transport)
    if not issubclass(transport.Consumer, driver.Consumer):
        raise TypeError(f"the app's transport is not faust's aiokafka one: {transport!r}")
    transport.Consumer = consumer
