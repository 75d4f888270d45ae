"""faust's recovery with the worker's standby copies kept by :class:`StandbyReplay`.

faust's assignor still decides which table partitions each worker keeps standby copies of
(``OMNISTITCH_STANDBY_REPLICAS``), and its recovery still restores the partitions a worker
owns. Only the standby copies change hands: at each rebalance :class:`StandbyRecovery`
takes the standby partitions faust assigned out of faust's recovery (so its consumer keeps
their changelogs paused, and its recovery loop never sees their records) and gives them,
with their databases and persisted offsets, to the replay thread
(``pipeline/standby_replay.py``). A partition that turns active is restored by faust from
the offset the copy persisted, as it would be from faust's own copy.

The order at a rebalance:

1. the partitions are revoked: the copies are held (no write under way or to come), before
   faust flushes and closes the databases it gives up;
2. faust's tables open the databases of the new assignment, and its recovery records which
   partitions are active and which standby;
3. the standby ones are taken out of faust's recovery and given to the replay thread, each
   from its database's persisted offset; faust's recovery of the active ones starts after.

``install`` is the hook: the app's table manager builds its recovery service on first use,
and the worker hands it this one before faust starts.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import faust
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

from pipeline.standby_replay import Follow, StandbyReplay


class StandbyRecovery(Recovery):
    """faust's recovery, its standby partitions kept by a :class:`StandbyReplay`."""

    def __init__(self, app: Any, tables: Any, *, replay: StandbyReplay, **kwargs: Any) -> None:
        super().__init__(app, tables, **kwargs)
        self.replay = replay

    async def on_start(self) -> None:
        await super().on_start()
        self.replay.start()

    async def on_stop(self) -> None:
        # before faust's tables stop (and flush their databases): the table manager stops
        # its recovery first
        await asyncio.to_thread(self.replay.stop)
        await super().on_stop()

    def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self.replay.hold()
        super().on_partitions_revoked(revoked)

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        self.replay.hold()
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        # faust's on_rebalance does not yield: its recovery task has not seen them yet
        self.replay.follow(self._take_standbys())

    def _take_standbys(self) -> list[Follow]:
        follows = []
        for tp in sorted(self.standby_tps):
            table = self.tp_to_table[tp]
            store = cast(Any, table).data
            persisted = table.persisted_offset(tp)
            follows.append(
                Follow(
                    tp.topic,
                    tp.partition,
                    store._db_for_partition(tp.partition),
                    None if persisted is None else persisted + 1,
                )
            )
            self.revoke(tp)  # faust's own offsets for it
        self.standby_tps.clear()
        for tps in self.standbys_for_table.values():
            tps.clear()
        return follows

    def standby_remaining_total(self) -> int:
        """Records the copies are behind their changelogs (faust's figure for its own)."""
        return self.replay.remaining


def install(app: faust.App, replay: StandbyReplay) -> None:
    """Make ``app``'s recovery a :class:`StandbyRecovery` keeping copies with ``replay``."""
    tables = cast(TableManager, app.tables)
    if tables._recovery is not None:
        raise RuntimeError("the table manager's recovery service was built already")
    tables._recovery = StandbyRecovery(
        app, tables, replay=replay, beacon=tables.beacon, loop=tables.loop
    )
