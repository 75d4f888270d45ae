"""Table recovery and standby replay that take changelog records in bulk.

faust applies changelog records (a recovering table's, and every standby copy's, all the
time) in one loop over its changelog queue, one record per turn: an ``asyncio.wait_for``
(a task and a timer) to take it, then, for every record, "is recovery done?" and "are the
standbys ready?", each a dictionary built over every assigned table partition (72 here: 9
tables x 8 partitions). With records of a few hundred bytes that bookkeeping is most of
the cost of replaying one; a standby worker paid about as much CPU per event replaying
the other worker's changelogs as that worker paid processing the event
(docs/performance-history.md, session 16).

:class:`BulkRecovery` runs the same loop over what the queue holds, up to
``BULK_RECORDS`` records a turn: each record is buffered and written to RocksDB exactly
as faust does (``apply_changelog_batch`` per table once its buffer is full, the offsets
kept per partition), and the checks run once per turn. Two of faust's own behaviours are
not kept: a record of a partition that is neither active nor standby here (the
assignment changed while it was queued) is dropped and logged, where faust applied it to
the previous record's table (its source says so, "XXX bug"); and an error is not logged
and ignored (faust's ``except Exception`` around the loop) but ends the worker, which
then recovers from the changelogs again on restart instead of running on a table that
missed a write.

:class:`BulkRecoveryTableManager` is faust's table manager with this recovery, for the
app's ``TableManager`` setting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from time import monotonic
from typing import Any

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP, EventT
from faust.types.enums import ProcessingGuarantee
from faust.utils.tracing import finish_span
from mode import Service

log = logging.getLogger(__name__)

#: The most changelog records one turn of the loop takes from the queue.
BULK_RECORDS = 1_000
#: How long the loop waits for a record before it checks whether recovery is done.
IDLE_CHECK_S = 5.0


class BulkRecovery(Recovery):
    """faust's recovery service, its changelog loop taking records in bulk."""

    def __init__(self, app: Any, tables: Any, **kwargs: Any) -> None:
        if app.conf.processing_guarantee == ProcessingGuarantee.EXACTLY_ONCE:
            # faust's loop also skips aborted transactions' records; this one does not.
            raise ValueError("BulkRecovery replays at-least-once changelogs only")
        super().__init__(app, tables, **kwargs)

    @Service.task
    async def _slurp_changelogs(self) -> None:
        queue = self.tables.changelog_queue
        while not self.should_stop:
            self.signal_recovery_end.clear()
            try:
                first = await asyncio.wait_for(queue.get(), timeout=IDLE_CHECK_S)
            except TimeoutError:
                if self.should_stop:
                    return
                self._end_recovery_if_done()
                continue
            events = [first]
            while len(events) < BULK_RECORDS and not queue.empty():
                events.append(queue.get_nowait())
            await self.apply_changelog_events(events)
            self._end_recovery_if_done()
            self._standbys_ready_if_done()

    async def apply_changelog_events(self, events: Sequence[EventT[Any]]) -> None:
        """Buffer each record for its table (a record older than one already seen for its
        partition is skipped, as faust skips it), writing a table's buffer to RocksDB once
        it is full; then note how long the active records took, for faust's estimate of the
        recovery time left."""
        started = monotonic()
        actives = 0
        for event in events:
            tp: TP = event.message.tp
            offset = event.message.offset
            if tp in self.active_tps:
                offsets, sizes = self.active_offsets, "recovery_buffer_size"
                self._active_events_received_at[tp] = started
                actives += 1
            elif tp in self.standby_tps:
                offsets, sizes = self.standby_offsets, "standby_buffer_size"
                self._standby_events_received_at.setdefault(tp, started)
            else:
                log.warning(
                    "changelog record of %s (offset %d) not assigned here: dropped", tp, offset
                )
                continue
            seen = offsets.get(tp)
            if seen is not None and offset <= seen:
                continue
            offsets[tp] = offset
            table = self.tp_to_table[tp]
            size = self.buffer_sizes.get(tp)
            if size is None:
                size = self.buffer_sizes[tp] = getattr(table, sizes)
            buffer = self.buffers[table]
            buffer.append(event)
            await table.on_changelog_event(event)
            if len(buffer) >= size:
                table.apply_changelog_batch(buffer)
                buffer.clear()
                self._last_flush_at = monotonic()
        if actives:
            self._note_processing(actives, started)

    def _note_processing(self, actives: int, started: float) -> None:
        now = monotonic()
        times = self._processing_times
        times.extend([(now - started) / actives] * min(actives, 100))
        while len(times) > self.num_samples_required_for_estimate:
            times.popleft()
        self._last_active_event_processed_at = now

    def _end_recovery_if_done(self) -> None:
        """faust's end of recovery: every active partition caught up to its highwater."""
        if self.in_recovery and not self.need_recovery():
            self.flush_buffers()  # apply anything still buffered
            self._set_recovery_ended()
            if self._actives_span is not None:
                self._actives_span.set_tag("Actives-Ready", True)
            self.signal_recovery_end.set()

    def _standbys_ready_if_done(self) -> None:
        standby_ready = self._standbys_span is None and self.tables.standbys_ready
        if not standby_ready and not self.standby_remaining_total():
            if self._standbys_span is not None:
                finish_span(self._standbys_span)
                self._standbys_span = None
            self.tables.on_standbys_ready()


class BulkRecoveryTableManager(TableManager):
    """faust's table manager, recovering and replaying standbys with :class:`BulkRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = BulkRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
