"""The weighted placement of partition indices (pipeline/partition_balance.py)."""

from __future__ import annotations

import copy
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.partition_balance import Move, Placement, balance, load


def even(workers: int, partitions: int, replicas: int) -> dict[str, Placement]:
    """faust's kind of placement: indices dealt round-robin, copies on the next workers."""
    names = [f"w{i}" for i in range(workers)]
    placements = {name: Placement() for name in names}
    for p in range(partitions):
        placements[names[p % workers]].actives.add(p)
        for r in range(1, min(replicas, workers - 1) + 1):
            placements[names[(p + r) % workers]].standbys.add(p)
    return placements


def test_two_workers_the_identity_index_keeps_its_worker_nearly_to_itself() -> None:
    placements = even(2, 8, 1)  # w0 owns 0, 2, 4, 6; identity on 2
    moves = balance(placements, {2: 5.0})
    # 5 + 3 against 4: two ordinary indices move, each to the copy w1 kept
    assert placements["w0"].actives == {2, 6}
    assert placements["w1"].actives == {0, 1, 3, 4, 5, 7}
    assert moves == [Move(0, "w0", "w1", True), Move(4, "w0", "w1", True)]
    # the copies went the other way: each index still has one owner and one copy
    assert placements["w0"].standbys == {0, 1, 3, 4, 5, 7}
    assert placements["w1"].standbys == {2, 6}


def test_a_weight_above_the_rest_leaves_the_identity_index_alone_on_its_worker() -> None:
    placements = even(2, 8, 1)
    balance(placements, {3: 9.0})
    assert placements["w1"].actives == {3}
    assert load(placements["w0"], {3: 9.0}) == 7


def test_even_weights_and_a_balanced_placement_move_nothing() -> None:
    placements = even(3, 8, 1)
    before = copy.deepcopy(placements)
    assert balance(placements, {}) == []
    assert balance(placements, {0: 1.0}) == []
    assert placements == before


def test_one_worker_keeps_everything() -> None:
    placements = even(1, 8, 1)
    assert balance(placements, {0: 6.0}) == []
    assert placements["w0"].actives == set(range(8))


def test_a_weight_must_be_positive() -> None:
    with pytest.raises(ValueError, match="partition 1: weight must be positive"):
        balance(even(2, 4, 0), {1: 0.0})


def test_without_copies_the_receiving_worker_gets_no_copy_back() -> None:
    placements = even(2, 8, 0)
    moves = balance(placements, {0: 6.0})
    assert moves
    assert not any(m.swapped for m in moves)
    assert placements["w0"].standbys == placements["w1"].standbys == set()


def test_the_outcome_is_a_function_of_the_input() -> None:
    a, b = even(3, 12, 2), even(3, 12, 2)
    assert balance(a, {5: 4.0, 7: 2.5}) == balance(b, {5: 4.0, 7: 2.5})
    assert a == b


@st.composite
def placements_and_weights(draw: st.DrawFn) -> tuple[dict[str, Placement], dict[int, float]]:
    workers = draw(st.integers(1, 5))
    partitions = draw(st.integers(1, 16))
    replicas = draw(st.integers(0, 2))
    placements = even(workers, partitions, replicas)
    # faust's sticky placement need not be round-robin: shuffle owners, keeping copies apart
    for p in range(partitions):
        owner = next(n for n, pl in placements.items() if p in pl.actives)
        other = draw(st.sampled_from(sorted(placements)))
        if other != owner and p not in placements[other].standbys:
            placements[owner].actives.remove(p)
            placements[other].actives.add(p)
    weights = draw(
        st.dictionaries(
            st.integers(0, partitions - 1), st.floats(0.25, 20.0, allow_nan=False), max_size=3
        )
    )
    return placements, weights


def owners(placements: dict[str, Placement], partition: int) -> list[str]:
    return [n for n, pl in placements.items() if partition in pl.actives]


def copies(placements: dict[str, Placement], partition: int) -> int:
    return sum(partition in pl.standbys for pl in placements.values())


@given(placements_and_weights())
def test_balance_keeps_owners_and_copies_and_never_raises_the_peak(
    case: tuple[dict[str, Placement], dict[int, float]],
) -> None:
    placements, weights = case
    before = copy.deepcopy(placements)
    peak_before = max(load(pl, weights) for pl in placements.values())
    moves = balance(placements, weights)
    partitions = set().union(*(pl.actives for pl in before.values()))
    for p in partitions:
        assert len(owners(placements, p)) == 1
        assert copies(placements, p) == copies(before, p)
    for pl in placements.values():
        assert pl.actives.isdisjoint(pl.standbys)
    loads = [load(pl, weights) for pl in placements.values()]
    assert max(loads) <= peak_before
    # no single move from the heaviest worker to the lightest would lower the peak further
    heavy = max(placements.values(), key=lambda pl: load(pl, weights))
    lightest = min(loads)
    assert all(
        max(max(loads) - weights.get(p, 1.0), lightest + weights.get(p, 1.0)) >= max(loads)
        for p in heavy.actives
    )
    # replaying the moves on the input gives the output
    replay = copy.deepcopy(before)
    for move in moves:
        replay[move.source].actives.remove(move.partition)
        replay[move.target].actives.add(move.partition)
        if move.swapped:
            replay[move.target].standbys.remove(move.partition)
            replay[move.source].standbys.add(move.partition)
    assert replay == placements


def test_two_workers_reach_the_best_peak_for_every_identity_index_and_weight() -> None:
    for identity, weight in itertools.product(range(8), (1.0, 1.5, 2.0, 5.0, 6.0, 8.0, 20.0)):
        placements = even(2, 8, 1)
        balance(placements, {identity: weight})
        # the holder keeps k ordinary indices besides the identity one, the other 7 - k
        best = min(max(weight + k, 7 - k) for k in range(8))
        peak = max(load(pl, {identity: weight}) for pl in placements.values())
        assert peak == best, (identity, weight)
