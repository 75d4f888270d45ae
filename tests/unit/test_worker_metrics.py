"""The worker's metrics and its faust configuration, without a broker."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import faust
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest

from omnistitch.lag import LagSnapshot
from omnistitch.lag_monitor import LagMonitor, LagTarget
from omnistitch.settings import WorkerSettings
from omnistitch.topics import ingest_group, pipeline_groups
from pipeline import context_state
from pipeline import metrics as m
from pipeline.app import Pipeline
from pipeline.fetch_pauses import PausingConsumer
from pipeline.gc_policy import time_collections
from pipeline.instrumentation import directory_size, instrument
from schemas.events import RawEvent

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def event(channel: str = "chat") -> RawEvent:
    return RawEvent.model_validate(
        {
            "event_id": "e1",
            "channel": channel,
            "source": "test",
            "kind": "message",
            "occurred_at": T0,
            "received_at": T0,
        }
    )


def count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_events_in_and_out_are_counted_per_channel_and_topic() -> None:
    before_in = count("omnistitch_events_in_total", channel="chat", topic="raw.events")
    before_out = count("omnistitch_events_out_total", channel="chat", topic="customer.context")
    m.events_in([("raw.events", event())])
    m.events_out("customer.context", [event()], now=T0 + timedelta(seconds=2))
    assert count("omnistitch_events_in_total", channel="chat", topic="raw.events") == before_in + 1
    after_out = count("omnistitch_events_out_total", channel="chat", topic="customer.context")
    assert after_out == before_out + 1


def latency_buckets(channel: str) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(m.END_TO_END_SECONDS)
    return {
        s.labels["le"]: s.value
        for f in registry.collect()
        for s in f.samples
        if s.name.endswith("_bucket") and s.labels["channel"] == channel
    }


def test_end_to_end_latency_is_receipt_to_published_view() -> None:
    m.events_out("t", [event("sms")], now=T0 + timedelta(seconds=2))
    buckets = latency_buckets("sms")
    assert buckets["1.0"] == 0
    assert buckets["2.5"] == 1
    # A connector clock ahead of the worker's is not a negative latency.
    m.events_out("t", [event("voice")], now=T0 - timedelta(seconds=5))
    assert latency_buckets("voice")["0.05"] == 1


def test_a_batch_histogram_is_exposed_exactly_as_a_histogram() -> None:
    buckets = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    values = {"web": [0.0, 0.05, 0.051, 0.3, 1.0, 7.5, 11.0, 99.0], "sms": [2.5, 0.2]}
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("x_seconds", "Help.", ["channel"], buckets=buckets, registry=theirs)
    batched = m.BatchHistogram("x_seconds", "Help.", ["channel"], buckets, registry=ours)
    for channel, seen in values.items():
        for v in seen:
            reference.labels(channel).observe(v)
        batched.observe((channel,), seen[:3])  # in two batches
        batched.observe((channel,), seen[3:])

    def exposed(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return sorted(line for line in text.splitlines() if "_created" not in line)

    assert exposed(ours) == exposed(theirs)
    assert 'x_seconds_bucket{channel="web",le="0.05"} 2.0' in exposed(ours)


def settings(tmp_path: Path, **kw: object) -> WorkerSettings:
    return WorkerSettings.model_validate(
        {"state_dir": tmp_path, "topic_prefix": "p.", "app_id": "stitch", **kw}
    )


def test_the_lag_topics_are_the_stages_inputs(tmp_path: Path) -> None:
    s = settings(tmp_path)
    p = Pipeline(s)
    faust_inputs = [t.get_topic_name() for t in (p.requests_topic, p.ops_topic)]
    assert sorted(p.app.agents[name].channel.get_topic_name() for name in p.app.agents) == sorted(
        faust_inputs
    )
    assert pipeline_groups(s, s.app_id) == {
        "stitch-ingest": ["p.raw.events"],  # the ingest stage: confluent-kafka, its own group
        "stitch": faust_inputs,
    }
    assert ingest_group(s.app_id) == "stitch-ingest"


def test_standby_replicas_and_credentials_reach_faust(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        standby_replicas=2,
        security_protocol="SASL_PLAINTEXT",
        sasl_username="u",
        sasl_password="p",
    )
    conf = Pipeline(s).app.conf
    assert conf.table_standby_replicas == 2
    assert isinstance(conf.broker_credentials, faust.SASLCredentials)
    assert Pipeline(settings(tmp_path)).app.conf.broker_credentials is None


def test_directory_size_counts_files_below(tmp_path: Path) -> None:
    assert directory_size(tmp_path / "missing") == 0
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.sst").write_bytes(b"x" * 1000)
    (tmp_path / "y.log").write_bytes(b"y" * 24)
    assert directory_size(tmp_path) == 1024


class NoLag:
    def read(self, targets: Sequence[LagTarget]) -> LagSnapshot:
        return LagSnapshot(taken_at=1.0, lags=())

    def close(self) -> None:
        pass


def test_worker_collector_reads_readiness_state_and_rebalances(tmp_path: Path) -> None:
    (tmp_path / "table.sst").write_bytes(b"z" * 300)
    p = Pipeline(settings(tmp_path))
    monitor = LagMonitor(NoLag(), [LagTarget("stitch")], interval_s=1.0)
    registry = CollectorRegistry()
    collector = instrument(p, monitor, registry=registry)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("omnistitch_worker_ready") == 0  # nothing assigned nor recovered yet
    assert value("omnistitch_state_size_bytes") == 300
    assert value("omnistitch_table_recovery_remaining_records", kind="active") == 0
    assert value("omnistitch_table_recovery_in_progress") == 0
    before = count("omnistitch_rebalances_total")
    assigned = {faust.types.TP("t", 0), faust.types.TP("t", 1)}
    asyncio.run(p.app.on_partitions_assigned.send(assigned))
    assert count("omnistitch_rebalances_total") == before + 1
    assert value("omnistitch_assigned_partitions") == 2
    assert isinstance(p.app.consumer, PausingConsumer)
    assert value("omnistitch_fetched_partitions") == 0  # the consumer has not started
    for state in ("reading", "paused", "buffer_full", "fetch_paused"):
        assert value("omnistitch_stage_partitions", state=state) == 0
    assert value("omnistitch_context_cache_entries") == 0
    p.context_cache.put("cus_a", context_state.CustomerContext(customer_id="cus_a"), 1234)
    assert value("omnistitch_context_cache_bytes") == 1234
    assert value("omnistitch_context_cache_entries") == 1
    asyncio.run(p.app.on_partitions_revoked.send(assigned))  # another worker may change them
    assert value("omnistitch_context_cache_bytes") == 0
    assert not collector.ready()
    monitor.poll_once()  # the broker answered; the tables are still not recovered
    assert not collector.ready()


def test_collections_are_timed_by_generation() -> None:
    before = count("omnistitch_gc_seconds_total", generation="2")
    callback = time_collections(m.gc_spent)
    try:
        gc.collect()  # a full collection: generation 2
    finally:
        gc.callbacks.remove(callback)
    assert count("omnistitch_gc_seconds_total", generation="2") > before
