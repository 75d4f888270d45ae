"""The worker's process-level metrics: readiness, rebalances, state on disk, table recovery,
and its own consumer group's lag (read from the broker by :mod:`omnistitch.lag_monitor`).

Stage counters live in :mod:`pipeline.metrics`; everything here is computed when
Prometheus scrapes ``/metrics``, from the faust app's state, so it costs nothing between
scrapes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from faust.tables.manager import TableManager
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from omnistitch.kafka_client import client_config
from omnistitch.lag_monitor import LagMonitor, LagProbe, LagTarget
from omnistitch.settings import WorkerSettings
from omnistitch.topics import pipeline_groups
from pipeline.app import Pipeline
from pipeline.fetch_pauses import PausingConsumer

REBALANCES = Counter(
    "omnistitch_rebalances_total", "Consumer group rebalances this worker took part in."
)

READY = "omnistitch_worker_ready"
STATE_BYTES = "omnistitch_state_size_bytes"
RECOVERY_REMAINING = "omnistitch_table_recovery_remaining_records"
RECOVERING = "omnistitch_table_recovery_in_progress"
ASSIGNED = "omnistitch_assigned_partitions"
FETCHED = "omnistitch_fetched_partitions"
STAGE_PARTITIONS = "omnistitch_stage_partitions"
OWNED_PARTITIONS = "omnistitch_owned_partitions"
IDENTITY_OWNER = "omnistitch_tenant_identity_owner"
CONTEXT_CACHE_BYTES = "omnistitch_context_cache_bytes"
CONTEXT_CACHE_ENTRIES = "omnistitch_context_cache_entries"


def own_lag_monitor(settings: WorkerSettings) -> LagMonitor:
    """A monitor of the worker's own consumer groups (ingest's and faust's), each reading
    its input topics."""
    probe = LagProbe(client_config(settings), timeout_s=max(settings.lag_interval_s, 5.0))
    groups = pipeline_groups(settings, settings.app_id)
    targets = [LagTarget(group, tuple(topics)) for group, topics in groups.items()]
    return LagMonitor(probe, targets, settings.lag_interval_s)


def directory_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (0 if it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # RocksDB compaction removed it meanwhile
                continue
    return total


class WorkerCollector(Collector):
    """Readiness, state size, recovery progress and assignment, read on scrape."""

    #: Walking a large RocksDB directory on every scrape is not free (2% of a busy
    #: worker's time when scraped every second): its size is re-read at most this often.
    STATE_SIZE_TTL_S = 10.0

    def __init__(self, pipeline: Pipeline, monitor: LagMonitor) -> None:
        self._p = pipeline
        self._monitor = monitor
        self.assigned = 0
        self._state_size: tuple[float, int] = (float("-inf"), 0)

    def state_bytes(self) -> int:
        read_at, size = self._state_size
        if time.monotonic() - read_at >= self.STATE_SIZE_TTL_S:
            size = directory_size(self._p.settings.state_dir)
            self._state_size = (time.monotonic(), size)
        return size

    def ready(self) -> bool:
        """What ``/readyz`` answers: tables recovered, not rebalancing, broker reachable."""
        return self._p.ready and self._monitor.healthy()

    def collect(self) -> Iterator[Metric]:
        recovery = cast(TableManager, self._p.app.tables).recovery
        ready = GaugeMetricFamily(
            READY, "1 when partitions are assigned, tables recovered and the broker answers."
        )
        ready.add_metric([], 1.0 if self.ready() else 0.0)
        state = GaugeMetricFamily(
            STATE_BYTES, "Bytes on disk under the worker's state directory (RocksDB tables)."
        )
        state.add_metric([], self.state_bytes())
        remaining = GaugeMetricFamily(
            RECOVERY_REMAINING,
            "Changelog records left to replay into this worker's tables.",
            labels=["kind"],
        )
        remaining.add_metric(["active"], max(0, recovery.active_remaining_total()))
        remaining.add_metric(["standby"], max(0, recovery.standby_remaining_total()))
        recovering = GaugeMetricFamily(RECOVERING, "1 while active tables are being recovered.")
        recovering.add_metric([], 1.0 if recovery.in_recovery else 0.0)
        assigned = GaugeMetricFamily(
            ASSIGNED, "Partitions assigned to this worker (inputs, changelogs and standbys)."
        )
        assigned.add_metric([], self.assigned)
        fetched = GaugeMetricFamily(
            FETCHED,
            "Assigned partitions the worker's consumer fetches (not paused): its stages' inputs, "
            "and changelogs while they are recovered or kept as standbys.",
        )
        stages = GaugeMetricFamily(
            STAGE_PARTITIONS,
            "Assigned partitions the stages read, by state: reading; paused (a rebalance or "
            "recovery); buffer_full (their stream's buffer is full until it drains); "
            "fetch_paused (read by faust but paused in aiokafka: never fetched, should be 0).",
            labels=["state"],
        )
        consumer = self._p.app.consumer
        if isinstance(consumer, PausingConsumer):
            fetched.add_metric([], consumer.fetched_partitions())
            for name, count in consumer.stage_partition_states().items():
                stages.add_metric([name], count)
        owned = GaugeMetricFamily(
            OWNED_PARTITIONS,
            "Partitions of each stage's input this worker owns (faust's assignment, the "
            "tenant's identity index weighted by OMNISTITCH_IDENTITY_PARTITION_WEIGHT).",
            labels=["stage"],
        )
        actives = self._p.app.assignor.assigned_actives()
        for stage, topic in self._p.stage_inputs().items():
            owned.add_metric([stage], sum(tp.topic == topic for tp in actives))
        identity_owner = GaugeMetricFamily(
            IDENTITY_OWNER,
            "1 on the worker that owns the tenant's identity partition (it runs every "
            "identity decision: the worker to watch first when the pipeline lags).",
        )
        identity_owner.add_metric([], 1.0 if self._p.tenant_identity_tp in actives else 0.0)
        cache = self._p.context_cache
        cache_bytes = GaugeMetricFamily(
            CONTEXT_CACHE_BYTES,
            "Encoded size of the parsed contexts the worker caches (OMNISTITCH_CONTEXT_CACHE_MB "
            "bounds it; their memory is ~1.4-1.9x that).",
        )
        cache_bytes.add_metric([], cache.weight)
        cache_entries = GaugeMetricFamily(
            CONTEXT_CACHE_ENTRIES,
            "Parsed contexts the worker caches (OMNISTITCH_CONTEXT_CACHE_SIZE bounds it).",
        )
        cache_entries.add_metric([], len(cache))
        yield from (ready, state, remaining, recovering, assigned, fetched, stages)
        yield from (owned, identity_owner)
        yield from (cache_bytes, cache_entries)

    def describe(self) -> Iterator[Metric]:
        return iter(
            [
                GaugeMetricFamily(READY, ""),
                GaugeMetricFamily(STATE_BYTES, ""),
                GaugeMetricFamily(RECOVERY_REMAINING, "", labels=["kind"]),
                GaugeMetricFamily(RECOVERING, ""),
                GaugeMetricFamily(ASSIGNED, ""),
                GaugeMetricFamily(FETCHED, ""),
                GaugeMetricFamily(STAGE_PARTITIONS, "", labels=["state"]),
                GaugeMetricFamily(CONTEXT_CACHE_BYTES, ""),
                GaugeMetricFamily(CONTEXT_CACHE_ENTRIES, ""),
            ]
        )


def instrument(
    pipeline: Pipeline, monitor: LagMonitor, registry: CollectorRegistry = REGISTRY
) -> WorkerCollector:
    """Register the worker's collectors and count rebalances through faust's signals."""
    collector = WorkerCollector(pipeline, monitor)

    async def on_assigned(_sender: Any, *args: Any, **_kw: Any) -> None:
        REBALANCES.inc()
        collector.assigned = len(args[0]) if args else 0

    pipeline.app.on_partitions_assigned.connect(cast(Any, on_assigned))  # mode: loose types
    registry.register(collector)
    registry.register(monitor.collector())
    return collector
