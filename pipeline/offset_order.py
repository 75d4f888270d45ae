"""Each stage partition's records taken in offset order, none skipped, and its commits held
to what the stage has done: what faust's own bookkeeping does not promise across a
rebalance.

Seen in the kill -9 test (docs/performance-history.md, session 19): after the killed
worker came back, its identity stage took records 30 and 32 of the identity log in one
batch and never record 31; faust counted the gap as acknowledged (it fills offset gaps,
which it expects of compacted topics) and committed past it, so 43 events were never
resolved. faust drops fetched records around a rebalance in several places (a fetch
abandoned when the generation changes, records fetched before the seek to the committed
offsets, a record behind its read offset dropped) and acknowledges those its streams skip.
The stages' topics are neither compacted nor transactional: their offsets have no gaps,
so any gap a stage sees is a record lost on the way.

:class:`OffsetOrder` keeps, per partition, the next offset the stage must take
(``expected``) and the offset below which everything is done (``done``):

* a record at ``expected`` is taken (:attr:`Verdict.TAKE`);
* below it, it was taken already in this assignment (:attr:`Verdict.SEEN`): dropped;
* above it, records are missing (:attr:`Verdict.GAP`): dropped, and the partition must be
  read again from ``expected`` (the wiring seeks there);
* records handed on past ``expected``, with no record taken anywhere between two looks a
  few seconds apart (:meth:`OffsetOrder.stalled`), were lost with no later record to show
  the gap: read again too (the stall CI's kill -9 test met in sessions 15 and 18, 9 records
  of an identity-log partition left unread behind an idle worker, fits this).

Commits are capped at ``done``, and a partition the stage has not started in this
assignment commits nothing. It starts at the group's committed offset, read from the
broker, not from faust's copy. The stages are idempotent, so reading again is safe; a
skipped record is not.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from enum import Enum
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Verdict(Enum):
    TAKE = "take"
    SEEN = "seen"
    GAP = "gap"


class OffsetOrder(Generic[K]):
    """The next offset each partition's stage must take, and the offset its commits may
    reach (everything below it done)."""

    def __init__(self) -> None:
        self._expected: dict[K, int] = {}
        self._done: dict[K, int] = {}
        self._watched: dict[K, int] = {}  # expected at the last look (stalled)
        self._taken = self._taken_at_look = 0  # records taken, in all, and at the last look

    def started(self, tp: K) -> bool:
        return tp in self._expected

    def start(self, tp: K, committed: int) -> None:
        """Start ``tp`` at the group's committed offset: every record from it on is taken.
        A partition started already is left as it is (two callers may race to start it)."""
        if tp not in self._expected:
            self._expected[tp] = self._done[tp] = committed

    def judge(self, tp: K, offset: int) -> Verdict:
        """Take the record at ``offset`` or say why not; taking it moves ``expected`` on."""
        expected = self._expected[tp]
        if offset == expected:
            self._expected[tp] = offset + 1
            self._taken += 1
            return Verdict.TAKE
        return Verdict.SEEN if offset < expected else Verdict.GAP

    def expected(self, tp: K) -> int:
        return self._expected[tp]

    def done(self, tp: K, offset: int) -> None:
        """The taken record at ``offset`` is done (its outputs flushed before any commit)."""
        if tp in self._done and offset >= self._done[tp]:
            self._done[tp] = offset + 1

    def cap(self, tp: K, offset: int | None) -> int | None:
        """The offset faust may commit for ``tp``: at most ``done``; nothing before start."""
        if offset is None or tp not in self._done:
            return None
        return min(offset, self._done[tp])

    def stalled(self, positions: Mapping[K, int]) -> list[K]:
        """Started partitions whose consumer has handed on records past ``expected``
        (``positions``: where each one's fetching has got to) while no record at all was
        taken since the last look: those records were lost on the way and no later
        record will show the gap. Called every few seconds. While records are taken
        anywhere, a partition's own may still be queued behind them, so nothing is a
        stall until the stages are quiet: a stall found late loses nothing, a false one
        reads records again for nothing."""
        quiet = self._taken == self._taken_at_look
        self._taken_at_look = self._taken
        stalled = []
        for tp, position in positions.items():
            expected = self._expected.get(tp)
            if expected is None or position <= expected:
                self._watched.pop(tp, None)
            elif quiet and self._watched.get(tp) == expected:
                stalled.append(tp)
                del self._watched[tp]
            else:
                self._watched[tp] = expected
        return stalled

    def forget(self, tps: Iterable[K]) -> None:
        """``tps`` were revoked: the next assignment starts them again."""
        for tp in tps:
            self._expected.pop(tp, None)
            self._done.pop(tp, None)
            self._watched.pop(tp, None)
