"""The per-hop latency arithmetic of ``omnistitch bench`` (``omnistitch/bench_hops.py``).

Reading the stamps back from Kafka is covered by the bench smoke test against the broker."""

from __future__ import annotations

import pytest

from omnistitch.bench import _TIMELINE_IDS
from omnistitch.bench_hops import HOPS, hop_delays, percentiles
from schemas.context import TimelineEntry
from schemas.events import Channel
from tests import context_samples as samples


def test_percentiles_of_a_hundred_values() -> None:
    q = percentiles(float(v) for v in range(100, 0, -1))  # any order
    assert q == {"p50": 50.5, "p95": 96.0, "p99": 100.0}


def test_percentiles_of_nothing_is_empty() -> None:
    assert percentiles([]) == {}


def test_hops_add_up_to_the_end_to_end_delay_event_by_event() -> None:
    # seconds since the epoch at each point: produced, on the identity log, op sent, published
    sent = {"a": 100.000, "b": 100.010}
    requested = {"a": 100.015, "b": 100.020}
    forwarded = {"a": 100.115, "b": 100.030}
    published = {"a": 100.215, "b": 100.530}
    hops = hop_delays(sent, requested, forwarded, published)
    assert list(hops) == list(HOPS)
    assert hops["ingest"]["p50"] == pytest.approx(12.5)  # 15 and 10 ms
    assert hops["identity"]["p50"] == pytest.approx(55.0)  # 100 and 10 ms
    assert hops["context"]["p99"] == pytest.approx(500.0)  # 100 and 500 ms: the larger
    e2e = {e: (published[e] - sent[e]) * 1000 for e in sent}
    assert e2e["b"] == pytest.approx(10 + 10 + 500)


def test_an_event_missing_at_any_hop_is_left_out_of_every_hop() -> None:
    sent = {"a": 1.0, "lost": 1.0}
    requested = {"a": 1.001, "lost": 1.001}
    forwarded = {"a": 1.002}  # "lost" never got past the identity stage
    published = {"a": 1.003}
    hops = hop_delays(sent, requested, forwarded, published)
    assert hops["ingest"] == {
        "p50": pytest.approx(1.0),
        "p95": pytest.approx(1.0),
        "p99": pytest.approx(1.0),
    }


def test_no_event_through_every_hop_gives_empty_hops() -> None:
    assert hop_delays({"a": 1.0}, {}, {}, {}) == {hop: {} for hop in HOPS}


def test_the_latency_reader_takes_a_published_contexts_timeline_ids_in_order() -> None:
    # The bench reads only the event ids of each customer.context record's timeline
    # (newest first), skipping the rest of the document; an empty one carries none.
    entries = [
        TimelineEntry(
            event_id=f"lat-{i}-x",
            channel=Channel.WEB,
            source="bench",
            kind="track",
            occurred_at=samples.at(10 - i),
            properties={"nested": {"event_id": "not this one"}},
        )
        for i in range(3)
    ]
    published = samples.context(timeline=entries).model_dump_json().encode()
    ids = [entry.event_id for entry in _TIMELINE_IDS.decode(published).timeline]
    assert ids == ["lat-0-x", "lat-1-x", "lat-2-x"]
    assert _TIMELINE_IDS.decode(b"{}").timeline == []
