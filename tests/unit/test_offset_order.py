"""The offset-order rules a stage's partitions follow (pipeline/offset_order.py)."""

from __future__ import annotations

from pipeline.offset_order import OffsetOrder, Verdict

TP = ("identity-requests", 3)


def started(at: int) -> OffsetOrder[tuple[str, int]]:
    order: OffsetOrder[tuple[str, int]] = OffsetOrder()
    order.start(TP, at)
    return order


def test_records_from_the_committed_offset_are_taken_in_order() -> None:
    order = started(30)
    assert [order.judge(TP, o) for o in (30, 31, 32)] == [Verdict.TAKE] * 3
    assert order.expected(TP) == 33


def test_a_missing_record_is_a_gap_until_it_comes_again() -> None:
    # session 19's kill -9 failure: 30 and 32 in one batch, never 31
    order = started(30)
    assert order.judge(TP, 30) is Verdict.TAKE
    assert order.judge(TP, 32) is Verdict.GAP
    assert order.judge(TP, 33) is Verdict.GAP
    assert order.expected(TP) == 31  # read again from here
    # after the seek back: 31 first, then what was dropped
    assert [order.judge(TP, o) for o in (31, 32, 33)] == [Verdict.TAKE] * 3


def test_a_record_taken_already_is_seen_not_taken_twice() -> None:
    order = started(30)
    order.judge(TP, 30)
    order.judge(TP, 31)
    assert order.judge(TP, 30) is Verdict.SEEN
    assert order.judge(TP, 29) is Verdict.SEEN
    assert order.expected(TP) == 32


def test_commits_never_pass_what_is_done() -> None:
    order = started(30)
    for offset in (30, 31, 32):
        order.judge(TP, offset)
    # faust counted a gap as acked (34): taken is not done, and done caps it
    assert order.cap(TP, 34) == 30
    order.done(TP, 30)
    order.done(TP, 31)
    assert order.cap(TP, 34) == 32
    assert order.cap(TP, 31) == 31  # faust's own offset when lower
    assert order.cap(TP, None) is None
    order.done(TP, 29)  # a record below done moves nothing back
    assert order.cap(TP, 34) == 32


def test_a_partition_not_started_commits_nothing() -> None:
    order: OffsetOrder[tuple[str, int]] = OffsetOrder()
    assert not order.started(TP)
    assert order.cap(TP, 40) is None
    order.done(TP, 5)  # no effect before start
    assert order.cap(TP, 40) is None


def test_a_revoked_partition_starts_again() -> None:
    order = started(30)
    order.judge(TP, 30)
    order.done(TP, 30)
    order.forget([TP])
    assert not order.started(TP)
    assert order.cap(TP, 31) is None
    order.start(TP, 45)  # where the other worker's commits left it
    assert order.judge(TP, 31) is Verdict.SEEN
    assert order.judge(TP, 45) is Verdict.TAKE


def test_records_handed_on_and_never_taken_are_a_stall_at_the_second_look() -> None:
    order = started(30)
    order.judge(TP, 30)
    # fetching got to 40; the stage has 31 next: records may still be on their way
    assert order.stalled({TP: 40}) == []
    # a look later the stage took 31 to 34: busy, not stalled
    for offset in (31, 32, 33, 34):
        order.judge(TP, offset)
    assert order.stalled({TP: 40}) == []
    # another look, nothing taken since: 35 to 39 were lost on the way
    assert order.stalled({TP: 40}) == [TP]
    # read again: the next look starts over
    assert order.stalled({TP: 40}) == []


def test_a_caught_up_or_unstarted_partition_is_never_stalled() -> None:
    order = started(30)
    order.judge(TP, 30)
    assert order.stalled({TP: 31}) == []
    assert order.stalled({TP: 31}) == []  # idle and caught up
    other = ("customer-ops", 1)
    assert order.stalled({other: 90}) == []  # not started: nothing taken to compare
    assert order.stalled({other: 90}) == []


def test_a_started_partition_is_not_started_again() -> None:
    # the stall check and a batch may both start a partition: the first one counts
    order = started(30)
    order.judge(TP, 30)
    order.start(TP, 30)
    assert order.expected(TP) == 31


def test_no_stall_while_records_are_taken_on_other_partitions() -> None:
    # this partition's records may be queued behind the others' in faust's stream
    order = started(30)
    other = ("customer-ops", 1)
    order.start(other, 0)
    assert order.stalled({TP: 40}) == []
    order.judge(other, 0)
    assert order.stalled({TP: 40}) == []  # the stage is busy: not yet
    order.judge(other, 1)
    assert order.stalled({TP: 40}) == []
    assert order.stalled({TP: 40}) == [TP]  # quiet, and 30 to 39 never came
