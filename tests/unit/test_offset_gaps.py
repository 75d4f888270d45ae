"""Per-partition offset gaps: which raw records the ingest stage must re-read."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.offset_gaps import GapPlan, advance, describe, plan, skipped


def test_nothing_is_skipped_without_a_gap() -> None:
    assert not skipped(None, 0)
    assert not skipped(None, 1234)  # the partition's first record: nothing to compare with
    assert not skipped(4, 5)  # the next one
    assert not skipped(4, 4)  # a redelivery
    assert not skipped(9, 3)  # a redelivery after a crash before the commit


def test_a_gap_is_the_offsets_in_between() -> None:
    assert skipped(4, 6) == range(5, 6)
    assert skipped(4, 10) == range(5, 10)
    assert list(skipped(-1, 2)) == [0, 1]


def test_a_redelivery_never_moves_the_position_back() -> None:
    assert advance(None, 7) == 7
    assert advance(7, 8) == 8
    assert advance(9, 3) == 9


def test_the_plan_divides_a_gap_at_the_log_start() -> None:
    gap = range(5, 10)
    assert plan(gap, 0) == GapPlan(lost=range(5, 5), readable=range(5, 10))
    assert plan(gap, 5) == GapPlan(lost=range(5, 5), readable=range(5, 10))
    assert plan(gap, 7) == GapPlan(lost=range(5, 7), readable=range(7, 10))
    assert plan(gap, 10) == GapPlan(lost=range(5, 10), readable=range(10, 10))
    assert plan(gap, 500) == GapPlan(lost=range(5, 10), readable=range(10, 10))


def test_describe_is_inclusive() -> None:
    assert describe(range(5, 6)) == "5"
    assert describe(range(5, 10)) == "5..9"


@given(
    st.lists(st.tuples(st.integers(0, 80), st.integers(0, 3)), max_size=60),
)
def test_every_offset_up_to_the_last_delivered_is_processed_or_reported(
    deliveries: list[tuple[int, int]],
) -> None:
    """Whatever faust delivers (skips, redeliveries) while retention deletes the head of the
    log, every offset from the first delivered one to the highest is either processed or
    reported lost, never both; only deleted offsets are reported lost; the position is the
    highest offset seen."""
    log_start, last = 0, None
    seen: list[int] = []
    processed: set[int] = set()
    lost: set[int] = set()
    for offset, deleted in deliveries:
        log_start += deleted
        if offset < log_start:
            continue  # a consumer cannot be handed a deleted record
        seen.append(offset)
        split = plan(skipped(last, offset), log_start)
        assert all(o < log_start for o in split.lost)
        assert not (set(split.lost) | set(split.readable)) & processed
        lost.update(split.lost)
        processed.update(split.readable)
        processed.add(offset)
        last = advance(last, offset)
        assert last == max(seen)
    if last is not None:
        assert set(range(seen[0], last + 1)) <= processed | lost
        assert not processed & lost
