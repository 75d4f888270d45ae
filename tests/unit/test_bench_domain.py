"""The domain ceiling of ``omnistitch bench``: the pure stages, in-process, no Kafka."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from omnistitch.bench import to_records
from omnistitch.bench_domain import STAGES, drain_order, run_domain
from omnistitch.journeys import generate
from pipeline.app import key_partition
from pipeline.context_policy import load_context_policy
from pipeline.gc_policy import tune
from pipeline.rules import load_rules


@pytest.fixture
def gc_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_every_event_lands_on_exactly_one_customer(gc_thresholds: None) -> None:
    dataset = generate(customers=120, events=600, seed=3)
    records = to_records(dataset)
    figures = run_domain(
        records,
        load_rules(None),
        load_context_policy(None),
        partitions=8,
        batch=50,
        gc_gen0_threshold=50_000,
    )
    assert figures.events == 600
    assert set(figures.us_per_event) == set(STAGES)
    assert all(us > 0 for us in figures.us_per_event.values())
    assert figures.events_per_s > 0
    # Traps (shared phones, placeholders) keep some people apart and anonymous sessions
    # make extra customers, but never more customers than events, nor none.
    assert 0 < figures.customers <= 600
    # Each generated event is on one live timeline, or was dead-lettered (a placeholder
    # email alone, a quarantined hub alone).
    assert figures.placed + figures.unresolved == 600
    assert figures.unresolved < 10


def test_records_drain_a_fetch_per_partition_in_turn() -> None:
    records = [(f"k{i}".encode(), b"x" * 100) for i in range(400)]
    drained = drain_order(records, partitions=4, fetch_bytes=1_000)
    assert sorted(drained) == sorted(records)  # every record, once
    part = [key_partition(k.decode(), 4) for k, _ in drained]
    for p in range(4):  # each partition in the order produced
        assert [r for r, q in zip(drained, part, strict=True) if q == p] == [
            r for r in records if key_partition(r[0].decode(), 4) == p
        ]
    assert part[:10] == [0] * 10  # a fetch of 1,000 bytes: ten records of partition 0
    assert part[10] == 1  # then partition 1's first fetch


def test_gc_tuning_sets_only_the_youngest_threshold(gc_thresholds: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune(0)
    assert gc.get_threshold() == (700, 10, 10)
    tune(50_000)
    assert gc.get_threshold() == (50_000, 10, 10)
