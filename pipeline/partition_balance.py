"""Which worker owns which partition index, when one index carries more work than the rest.

Every stage topic and table of the worker has the same number of partitions and faust
places them together: index *i* of each goes to one worker (its copartitioned group). faust
spreads the indices evenly, which suits the context stage (customers hash evenly over them)
but not the identity stage: all of a tenant's identity requests land on one index. The
worker that owns that index runs the tenant's identity decisions *and* an even share of
everything else, and with two workers it bounds the pair (README, Performance).

:func:`balance` moves indices, after faust has placed them, from the worker with the most
weight to the one with the least, for as long as that lowers the heavier of the two: the
identity index counts as several ordinary ones. A moved index's standby copy, where the
receiving worker kept one, goes back the other way, so each index keeps its owner and its
number of copies, and no worker holds an index both ways. Plain data in, plain data out:
the faust side is ``pipeline/weighted_assignor.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class Placement:
    """One worker's share of a copartitioned group: the indices it owns and copies."""

    actives: set[int] = field(default_factory=set)
    standbys: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class Move:
    """Index ``partition`` changed owner from ``source`` to ``target``; ``swapped`` when
    ``target`` held its standby copy, which ``source`` now holds instead."""

    partition: int
    source: str
    target: str
    swapped: bool


def load(placement: Placement, weights: Mapping[int, float]) -> float:
    """The work a worker's owned indices carry, an ordinary index counting 1."""
    return sum(weights.get(p, 1.0) for p in placement.actives)


def balance(placements: Mapping[str, Placement], weights: Mapping[int, float]) -> list[Move]:
    """Move owned indices between workers, in place, until no move from the heaviest worker
    to the lightest makes the heavier of the two lighter; return the moves made.

    Each move strictly lowers the sum of the squared loads, so this ends. Among moves that
    lower the pair's maximum as much, one the receiving worker already copies is preferred
    (its database is warm), then the lower index (the outcome is a function of the input).
    """
    for partition, weight in weights.items():
        if weight <= 0:
            raise ValueError(f"partition {partition}: weight must be positive, not {weight}")
    moves: list[Move] = []
    if len(placements) < 2:
        return moves
    names = sorted(placements)
    while True:
        loads = {name: load(placements[name], weights) for name in names}
        heavy = max(names, key=lambda name: (loads[name], name))
        light = min(names, key=lambda name: (loads[name], name))
        source, target = placements[heavy], placements[light]
        best: tuple[float, bool, int] | None = None
        for partition in source.actives:
            weight = weights.get(partition, 1.0)
            peak = max(loads[heavy] - weight, loads[light] + weight)
            if peak >= loads[heavy]:
                continue
            key = (peak, partition not in target.standbys, partition)
            if best is None or key < best:
                best = key
        if best is None:
            return moves
        partition = best[2]
        swapped = partition in target.standbys
        source.actives.remove(partition)
        target.actives.add(partition)
        if swapped:
            target.standbys.remove(partition)
            source.standbys.add(partition)
        moves.append(Move(partition, heavy, light, swapped))
