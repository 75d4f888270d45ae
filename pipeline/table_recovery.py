"""faust's recovery, with the changelog replay done by :class:`ChangelogReplay`'s thread.

faust's assignor still decides which partitions each worker owns and which it keeps
standby copies of (``OMNISTITCH_STANDBY_REPLICAS``), and faust's recovery still decides
when a worker is ready. What moves is the replay itself, onto the thread of
``pipeline/changelog_replay.py``:

* **Standby copies.** At each rebalance :class:`ReplayRecovery` takes the standby
  partitions faust assigned out of faust's recovery (its consumer keeps their changelogs
  paused, and its recovery loop never sees their records) and gives them, with their
  databases and persisted offsets, to the thread.
* **Restores.** Once faust's recovery task has read the active partitions' changelog ends,
  the thread brings each active partition's database to its end (for at most
  :data:`RESTORE_BUDGET_S`), then hands it back; faust's recovery records the offset each
  database persisted and replays whatever is left (usually nothing) its own way, record by
  record. A partition that was a standby copy here starts from where the copy got to.

The order at a rebalance:

1. the partitions are revoked: the thread is held (no write under way or to come), before
   faust flushes and closes the databases it gives up;
2. faust's tables open the databases of the new assignment, and its recovery records which
   partitions are active and which standby;
3. the standby ones are taken out of faust's recovery and given to the thread, each from
   its database's persisted offset;
4. faust's recovery task reads the changelogs' ends; the thread restores the active ones
   (beside the copies); held again, they go back to faust, which reads their persisted
   offsets and goes on. A rebalance during step 4 holds the thread like any other.

``install`` is the hook: the app's table manager builds its recovery service on first use,
and the worker hands it this one before faust starts (``OMNISTITCH_CHANGELOG_REPLAY``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, Final, Literal, cast

import faust
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP
from faust.types.transports import ConsumerT

from pipeline.changelog_replay import ChangelogReplay, Follow

log = logging.getLogger(__name__)

#: The longest the replay thread restores a worker's active partitions before faust's own
#: recovery takes the rest. faust allows each step of its recovery ``broker_request_timeout``
#: (90 s by default) and stops recovering altogether past it.
RESTORE_BUDGET_S: Final = 60.0
#: How often the restore looks at the thread's progress.
RESTORE_POLL_S: Final = 0.05


class ReplayRecovery(Recovery):
    """faust's recovery, its standby copies kept and its restores done by a
    :class:`ChangelogReplay`."""

    def __init__(self, app: Any, tables: Any, *, replay: ChangelogReplay, **kwargs: Any) -> None:
        super().__init__(app, tables, **kwargs)
        self.replay = replay
        self._standbys: list[Follow] = []
        # each hold (a rebalance's start) moves it on: a restore cut short by a rebalance
        # must not hand the thread the set of the assignment that went
        self._epoch = 0

    async def on_start(self) -> None:
        await super().on_start()
        self.replay.start()

    async def on_stop(self) -> None:
        # before faust's tables stop (and flush their databases): the table manager stops
        # its recovery first
        await asyncio.to_thread(self.replay.stop)
        await super().on_stop()

    def _hold(self) -> None:
        self._epoch += 1
        self.replay.hold()

    def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self._hold()
        super().on_partitions_revoked(revoked)

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        self._hold()
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        # faust's on_rebalance does not yield: its recovery task has not seen them yet
        self._standbys = self._take_standbys()
        self.replay.follow(self._standbys)

    def _follow(
        self, tp: TP, kind: Literal["standby", "active"], until: int | None = None
    ) -> Follow:
        """A table partition for the thread: its database, from the offset after the one
        the database persisted (faust's store API, which its own recovery reads)."""
        table = self.tp_to_table[tp]
        persisted = table.persisted_offset(tp)
        db = cast(Any, table).data._db_for_partition(tp.partition)
        start = None if persisted is None else persisted + 1
        return Follow(tp.topic, tp.partition, db, start, kind, until)

    def _take_standbys(self) -> list[Follow]:
        follows = []
        for tp in sorted(self.standby_tps):
            follows.append(self._follow(tp, "standby"))
            self.revoke(tp)  # faust's own offsets for it
        self.standby_tps.clear()
        for tps in self.standbys_for_table.values():
            tps.clear()
        return follows

    async def _build_offsets(
        self, consumer: ConsumerT, tps: set[TP], destination: Counter[TP], title: str
    ) -> None:
        if title == "active":
            await self._restore(tps, destination)
        await super()._build_offsets(consumer, tps, destination, title)

    async def _restore(self, tps: set[TP], offsets: Counter[TP]) -> None:
        """Bring the active partitions' databases to their changelogs' last offsets (faust
        built ``active_highwaters`` just before) with the replay thread; then record what
        each database persisted in ``offsets``, where faust's recovery resumes."""
        epoch = self._epoch
        ends = self.active_highwaters
        restoring: dict[TP, Follow] = {}
        for tp in sorted(tps):
            end = ends.get(tp)
            if end is None or end < 0:
                continue
            # not past the end faust read: its consistency check refuses a database ahead
            follow = self._follow(tp, "active", until=end)
            if follow.next_offset is None or follow.next_offset <= end:
                restoring[tp] = follow
        if not restoring:
            return
        started = time.monotonic()
        self.replay.follow([*self._standbys, *restoring.values()])
        try:
            while time.monotonic() - started < RESTORE_BUDGET_S:
                behind = False
                for tp in restoring:
                    position = self.replay.position(tp.topic, tp.partition)
                    if position is not None:
                        offsets[tp] = position - 1  # progress, for the remaining-records gauge
                    behind = behind or position is None or position <= ends[tp]
                if not behind:
                    break
                await asyncio.sleep(RESTORE_POLL_S)
        finally:
            if self._epoch == epoch:  # else a rebalance holds the thread already
                self.replay.follow(self._standbys)
        for tp in restoring:  # the thread writes none of them now
            persisted = self.tp_to_table[tp].persisted_offset(tp)
            offsets[tp] = -1 if persisted is None else persisted
        log.info(
            "restored %d active changelog partitions in %.1fs with the replay thread; "
            "%d records left for faust's recovery",
            len(restoring),
            time.monotonic() - started,
            sum(max(0, ends[tp] - offsets[tp]) for tp in restoring),
        )

    def standby_remaining_total(self) -> int:
        """Records the copies are behind their changelogs (faust's figure for its own)."""
        return self.replay.remaining


def install(app: faust.App, replay: ChangelogReplay) -> None:
    """Make ``app``'s recovery a :class:`ReplayRecovery` replaying with ``replay``."""
    tables = cast(TableManager, app.tables)
    if tables._recovery is not None:
        raise RuntimeError("the table manager's recovery service was built already")
    tables._recovery = ReplayRecovery(
        app, tables, replay=replay, beacon=tables.beacon, loop=tables.loop
    )
