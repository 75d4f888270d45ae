"""Consumer lag: the pure computation, the monitor's staleness, the exporter's endpoints."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from pydantic import ValidationError
from typer.testing import CliRunner

from omnistitch.cli import cli
from omnistitch.lag import (
    GroupOffsets,
    LagSnapshot,
    Partition,
    PartitionLag,
    compute_lag,
    lag_families,
    sample_plan,
    watched_topics,
    with_seconds,
)
from omnistitch.lag_exporter import create_app, targets
from omnistitch.lag_monitor import LagMonitor, LagTarget
from omnistitch.settings import LagExporterSettings
from tests.connector_support import AsgiClient

A0, A1, B0 = Partition("a", 0), Partition("a", 1), Partition("b", 0)


def lag(p: Partition, records: int, position: int = 10, group: str = "g") -> PartitionLag:
    return PartitionLag(group, p, position, position, position + records, records)


def test_lag_is_log_end_minus_committed_offset() -> None:
    rows = compute_lag(
        GroupOffsets("g", committed={A0: 7, A1: 30}, start={A0: 0, A1: 0}, end={A0: 10, A1: 30})
    )
    assert [(r.partition, r.committed, r.position, r.records) for r in rows] == [
        (A0, 7, 7, 3),
        (A1, 30, 30, 0),
    ]


def test_uncommitted_partitions_count_from_the_log_start() -> None:
    # Never committed: a worker would start at the log start (auto.offset.reset=earliest).
    (row,) = compute_lag(GroupOffsets("g", committed={}, start={B0: 4}, end={B0: 9}))
    assert (row.committed, row.position, row.records) == (None, 4, 5)


def test_offsets_outside_the_log_are_clamped() -> None:
    rows = compute_lag(
        GroupOffsets("g", committed={A0: 2, A1: 50}, start={A0: 5, A1: 0}, end={A0: 8, A1: 40})
    )
    # Committed below the log start (deleted by retention): only what is left counts.
    assert (rows[0].position, rows[0].records) == (5, 3)
    # Committed beyond the end (the topic was recreated): no negative lag.
    assert (rows[1].position, rows[1].records) == (40, 0)


def test_watched_topics_are_committed_and_expected_ones() -> None:
    assert watched_topics([A0, A1, B0], ["c"]) == ["a", "b", "c"]
    assert watched_topics([], []) == []


def test_sample_plan_takes_the_most_lagging_distinct_positions() -> None:
    lags = [lag(A0, 5), lag(A1, 0), lag(B0, 50), lag(A0, 5, group="other")]
    assert sample_plan(lags, 10) == [(B0, 10), (A0, 10)]
    assert sample_plan(lags, 1) == [(B0, 10)]
    assert sample_plan(lags, 0) == []


def test_lag_seconds_from_the_oldest_unconsumed_record() -> None:
    lags = [lag(A0, 5), lag(A1, 0), lag(B0, 2)]
    out = with_seconds(lags, {(A0, 10): 100.0, (B0, 99): 1.0}, now=160.0)
    assert [r.seconds for r in out] == [60.0, 0.0, None]
    # A record stamped in the future (skewed producer clock) is not negative lag.
    assert with_seconds([lag(A0, 1)], {(A0, 10): 200.0}, now=160.0)[0].seconds == 0.0


Samples = dict[str, list[tuple[dict[str, str], float]]]


def render(snapshot: LagSnapshot | None, errors: int = 0) -> Samples:
    class One(Collector):
        def collect(self) -> Iterator[Metric]:
            return lag_families(snapshot, errors)

    registry = CollectorRegistry()
    registry.register(One())
    out: Samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_families_carry_group_topic_and_partition() -> None:
    snap = LagSnapshot(
        taken_at=1000.0,
        lags=(PartitionLag("g", A0, 7, 7, 10, 3, 42.0), lag(B0, 0)),
        duration_s=0.5,
    )
    m = render(snap, errors=2)
    labels = {"group": "g", "topic": "a", "partition": "0"}
    assert (labels, 3.0) in m["omnistitch_consumer_lag_records"]
    assert (labels, 42.0) in m["omnistitch_consumer_lag_seconds"]
    assert (labels, 7.0) in m["omnistitch_consumer_committed_offset"]
    assert (labels, 10.0) in m["omnistitch_consumer_end_offset"]
    assert len(m["omnistitch_consumer_lag_records"]) == 2
    assert m["omnistitch_lag_poll_errors_total"] == [({}, 2.0)]
    assert m["omnistitch_lag_last_poll_timestamp_seconds"] == [({}, 1000.0)]


def test_no_snapshot_exports_only_the_error_count() -> None:
    assert set(render(None, errors=1)) == {"omnistitch_lag_poll_errors_total"}


class FakeReader:
    def __init__(self) -> None:
        self.fail = False
        self.reads = 0
        self.closed = False

    def read(self, targets: Sequence[LagTarget]) -> LagSnapshot:
        self.reads += 1
        if self.fail:
            raise RuntimeError("broker down")
        return LagSnapshot(taken_at=1.0, lags=tuple(lag(A0, 1, group=t.group) for t in targets))

    def close(self) -> None:
        self.closed = True


def test_monitor_keeps_a_reading_until_it_is_stale() -> None:
    reader = FakeReader()
    monitor = LagMonitor(reader, [LagTarget("g")], interval_s=1.0, stale_after_s=60.0)
    assert not monitor.healthy()
    assert monitor.snapshot is None
    assert monitor.poll_once() is not None
    assert monitor.healthy()
    assert monitor.snapshot is not None
    assert monitor.snapshot.lags[0].group == "g"
    reader.fail = True
    assert monitor.poll_once() is None
    assert monitor.errors == 1
    assert monitor.healthy()  # the previous reading is still recent
    monitor.stale_after_s = 0.0
    assert not monitor.healthy()
    assert monitor.snapshot is None
    monitor.stop()
    assert reader.closed


def test_exporter_serves_metrics_health_and_readiness() -> None:
    reader = FakeReader()
    monitor = LagMonitor(reader, [LagTarget("g")], interval_s=1.0)
    client = AsgiClient(create_app(monitor))
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 503  # no reading yet: broker not known
    monitor.poll_once()
    assert client.get("/readyz").json() == {"status": "ready"}
    body = client.get("/metrics").text
    assert 'omnistitch_consumer_lag_records{group="g",partition="0",topic="a"} 1.0' in body
    assert "process_cpu_seconds_total" in body


def test_exporter_watches_the_workers_groups_and_their_input_topics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMNISTITCH_TOPIC_PREFIX", "prod.")
    monkeypatch.setenv("OMNISTITCH_APP_ID", "stitch")
    assert targets(LagExporterSettings()) == [
        LagTarget("stitch-ingest", ("prod.raw.events",)),
        LagTarget("stitch", ("prod.stitch-identity-requests", "prod.stitch-customer-ops")),
    ]
    monkeypatch.setenv("OMNISTITCH_LAG_GROUPS", "stitch, agent-desktop")
    assert [t.group for t in targets(LagExporterSettings())] == ["stitch", "agent-desktop"]
    assert targets(LagExporterSettings())[0].topics == (
        "prod.stitch-identity-requests",
        "prod.stitch-customer-ops",
    )
    assert targets(LagExporterSettings())[1].topics == ()
    # A group of its own, with the topics it reads named: read before its first commit, and
    # without the whole cluster's metadata (tests/integration/test_lag_probe.py).
    monkeypatch.setenv("OMNISTITCH_LAG_TOPICS", '{"agent-desktop": ["prod.customer.context"]}')
    assert targets(LagExporterSettings())[1] == LagTarget(
        "agent-desktop", ("prod.customer.context",)
    )
    monkeypatch.setenv("OMNISTITCH_LAG_TOPICS", '{"stitch": ["prod.raw.events"]}')
    assert targets(LagExporterSettings())[0].topics == (
        "prod.stitch-identity-requests",
        "prod.stitch-customer-ops",
        "prod.raw.events",
    )


@pytest.mark.parametrize(
    ("topics", "error"),
    [
        ('{"billing": ["prod.customer.context"]}', r"not watched: \['billing'\]"),
        ('{"agent-desktop": []}', r"no topic for \['agent-desktop'\]"),
        ('{"agent-desktop": "prod.customer.context"}', "lag_topics"),
    ],
)
def test_exporter_refuses_topics_for_groups_it_does_not_watch(
    monkeypatch: pytest.MonkeyPatch, topics: str, error: str
) -> None:
    monkeypatch.setenv("OMNISTITCH_LAG_GROUPS", "stitch,agent-desktop")
    monkeypatch.setenv("OMNISTITCH_LAG_TOPICS", topics)
    with pytest.raises(ValidationError, match=error):
        LagExporterSettings()


def test_the_exporter_command_refuses_them_before_starting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMNISTITCH_LAG_TOPICS", '{"billing": ["prod.customer.context"]}')
    result = CliRunner().invoke(cli, ["lag-exporter"])
    assert result.exit_code == 2
    assert "billing" in result.output
    assert "OMNISTITCH_LAG_GROUPS" in result.output
