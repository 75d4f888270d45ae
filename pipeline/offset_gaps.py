"""Which raw records the ingest stage never saw: per-partition offset gaps (no Kafka here).

The ingest stage remembers, per raw partition, the offset of the last record it processed
(the ``ingest-positions`` table). Offsets of a partition are consecutive, so a record that
arrives further on than the next one means faust skipped the records in between (its
rebalance race, pipeline/README.md): those are re-read and processed before the arrival.

Offsets that hold no data record (transaction markers) also look like a gap; re-reading
them finds nothing, which is harmless. What the re-read cannot get back is what the broker
already deleted: the part of a gap below the partition's log start.
"""

from __future__ import annotations

from dataclasses import dataclass

NO_GAP = range(0)


def skipped(last_processed: int | None, offset: int) -> range:
    """The offsets between the last processed record and the one arriving at ``offset``.

    Empty when nothing was skipped: the partition's first record (nothing processed yet,
    so nothing to compare with), the next record, or a redelivery (at or below the last
    processed offset, as after a crash before the commit).
    """
    if last_processed is None or offset <= last_processed + 1:
        return NO_GAP
    return range(last_processed + 1, offset)


def advance(last_processed: int | None, offset: int) -> int:
    """The position to record after processing ``offset``: a redelivery never moves it back."""
    return offset if last_processed is None else max(last_processed, offset)


@dataclass(frozen=True)
class GapPlan:
    """How to close a gap, given the partition's first offset still on the broker."""

    #: Deleted by retention before they could be re-read: to be reported, not processed.
    lost: range
    #: Still on the broker: to be re-read and processed, in order.
    readable: range


def plan(gap: range, log_start: int) -> GapPlan:
    """Divide ``gap`` at the partition's log start offset."""
    cut = min(max(gap.start, log_start), gap.stop)
    return GapPlan(lost=range(gap.start, cut), readable=range(cut, gap.stop))


def describe(offsets: range) -> str:
    """``"12..15"`` (inclusive), or ``"12"`` for one offset."""
    if len(offsets) == 1:
        return str(offsets.start)
    return f"{offsets.start}..{offsets.stop - 1}"
