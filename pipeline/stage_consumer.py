"""The stages' faust consumer: each partition's records admitted in offset order, and
faust's commits held to what the stages have done (the rules: pipeline/offset_order.py).

The stages call :meth:`StageConsumer.admit` on every batch faust's stream hands them and
:meth:`StageConsumer.done` once the batch's outputs are sent; faust's own commit path
(``_new_offset``) is capped there. A partition is started at the group's committed offset
read from the broker (not faust's copy, which a rebalance clears and a skipped record can
move on), or at the log's start when nothing is committed. A gap is read again: the
partition is sought back to the first missing offset, on the consumer's own loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import TopicPartition  # type: ignore[import-untyped]  # no type hints
from faust.types import TP, EventT
from mode import Service
from prometheus_client import Counter

from pipeline import metrics as m
from pipeline.fetch_pauses import PausingConsumer
from pipeline.offset_order import OffsetOrder, Verdict

log = logging.getLogger(__name__)

#: How often a stage partition's progress is looked at for a stall (two looks apart).
STALL_CHECK_S = 10.0


class StageConsumer(PausingConsumer):
    """faust's consumer (fetch pauses passed on) with the stages' partitions kept in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.order: OffsetOrder[TP] = OffsetOrder()
        #: The topics the stages read and admit through :meth:`admit`; others pass as faust's.
        self.ordered_topics: frozenset[str] = frozenset()
        super().__init__(*args, **kwargs)

    async def admit(self, events: Sequence[EventT[Any]]) -> list[EventT[Any]]:
        """The events of a batch the stage must process, in order; a gap is read again."""
        taken: list[EventT[Any]] = []
        rewind: dict[TP, tuple[int, int]] = {}
        for event in events:
            message = event.message
            tp, offset = message.tp, message.offset
            await self._ensure_started(tp)
            verdict = self.order.judge(tp, offset)
            if verdict is Verdict.TAKE:
                taken.append(event)
            elif verdict is Verdict.SEEN:
                m.SEEN_DROPS.inc()
            else:
                m.GAP_DROPS.inc()
                rewind.setdefault(tp, (self.order.expected(tp), offset))
        for tp, (expected, got) in rewind.items():
            log.warning(
                "%s[%d]: record %d came before %d; reading again from %d",
                tp.topic,
                tp.partition,
                got,
                expected,
                expected,
            )
            await self._seek_back(tp, expected, m.GAP_REREADS)
        return taken

    def done(self, events: Iterable[EventT[Any]]) -> None:
        """The events' outputs are sent: their offsets may be committed (after the flush)."""
        for event in events:
            self.order.done(event.message.tp, event.message.offset)

    def _new_offset(self, tp: TP) -> int | None:
        offset = super()._new_offset(tp)
        if tp.topic not in self.ordered_topics:
            return offset
        return self.order.cap(tp, offset)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        await super().on_partitions_revoked(revoked)  # commits what is done first
        self.order.forget(revoked)

    async def _ensure_started(self, tp: TP) -> None:
        if not self.order.started(tp):
            self.order.start(tp, await self._start_offset(tp))

    async def _start_offset(self, tp: TP) -> int:
        """The group's committed offset for ``tp``, or the log's start if none (or older)."""
        consumer = self._aiokafka()
        part = TopicPartition(tp.topic, tp.partition)
        committed = await self._thread.call_thread(consumer.committed, part)
        starts = await self._thread.call_thread(consumer.beginning_offsets, [part])
        start = int(starts[part])
        return start if committed is None else max(int(committed), start)

    @Service.timer(STALL_CHECK_S)
    async def _reread_stalled(self) -> None:
        """A stage partition whose records aiokafka handed on past what its stage took,
        none taken since the last look, is read again (outside rebalances). A partition
        the stage has not started yet (nothing reached it since the assignment) is
        started here, so that its first records count too."""
        consumer = self._aiokafka()
        if consumer is None or self.app.rebalancing or not self.flow_active:
            return
        subscription = consumer._subscription.subscription
        assignment = None if subscription is None else subscription.assignment
        if assignment is None:
            return
        positions = {}
        for part in assignment.tps:
            if part.topic not in self.ordered_topics:
                continue
            state = assignment.state_value(part)
            if state is None or not state.has_valid_position:
                continue
            tp = TP(part.topic, part.partition)
            await self._ensure_started(tp)
            positions[tp] = state.position
        for tp in self.order.stalled(positions):
            expected = self.order.expected(tp)
            log.warning(
                "%s[%d]: records up to %d were handed on and none taken from %d; reading "
                "again from %d",
                tp.topic,
                tp.partition,
                positions[tp] - 1,
                expected,
                expected,
            )
            await self._seek_back(tp, expected, m.STALL_REREADS)

    async def _seek_back(self, tp: TP, offset: int, counter: Counter) -> None:
        """Fetch ``tp`` again from ``offset`` (aiokafka drops what it had fetched of it)."""
        counter.inc()
        thread = self._thread

        async def seek() -> None:  # on aiokafka's loop: its fetcher's futures live there
            thread.seek(tp, offset)

        await thread.call_thread(seek)
        self._read_offset[tp] = offset
