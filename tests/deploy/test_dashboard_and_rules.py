"""The Grafana dashboard and the alert rules only query metrics the code exports.

The exported names come from the registries themselves: the worker's (the default
registry with the stage metrics, and the collectors the worker registers at start), the
lag exporter's, the collector's ``/metrics`` and the webhook connectors'.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from connectors.delivery import ConnectorMetrics
from connectors.publisher import InMemoryPublisher
from connectors.tracking.app import create_app as create_collector
from omnistitch.lag import LagSnapshot, Partition, PartitionLag
from omnistitch.lag_exporter import registry_for
from omnistitch.lag_monitor import LagMonitor, LagTarget
from omnistitch.settings import CollectorSettings, WorkerSettings
from pipeline.app import Pipeline
from pipeline.instrumentation import instrument
from tests.connector_support import AsgiClient
from tests.promql import metric_names

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "omnistitch.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
RUNBOOK = DEPLOY / "RUNBOOK.md"

#: The series names a metric family of each type exposes.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}


def series_names(registry: CollectorRegistry) -> set[str]:
    return {f.name + sfx for f in registry.collect() for sfx in _SUFFIXES.get(f.type, ("",))}


class OneReading:
    def read(self, targets: Sequence[LagTarget]) -> LagSnapshot:
        lag = PartitionLag("g", Partition("t", 0), 1, 1, 3, 2, 5.0)
        return LagSnapshot(taken_at=1.0, lags=(lag,))

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    monitor = LagMonitor(OneReading(), [LagTarget("g")], interval_s=1.0)
    monitor.poll_once()
    # The worker: module-level metrics, plus what pipeline.worker.run registers.
    worker = CollectorRegistry()
    state = tmp_path_factory.mktemp("state")
    instrument(Pipeline(WorkerSettings(state_dir=state)), monitor, registry=worker)
    names = series_names(REGISTRY) | series_names(worker) | series_names(registry_for(monitor))
    # The collector, through its endpoint.
    collector = create_collector(CollectorSettings(write_keys=["k"]), InMemoryPublisher())
    text = AsgiClient(collector).get("/metrics").text
    names |= {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    # The webhook connectors (one registry each, the same metric names).
    names |= series_names(ConnectorMetrics("any").registry)
    return names


def dashboard_targets(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield from panel.get("targets", [])
        yield from dashboard_targets(panel.get("panels", []))


def test_the_dashboard_queries_only_exported_metrics(exported: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name: target["expr"]
        for target in dashboard_targets(dashboard["panels"])
        for name in metric_names(target["expr"])
    }
    unknown = {name: expr for name, expr in queried.items() if name not in exported}
    assert unknown == {}, "the dashboard queries metrics no registry exports"
    # It covers what operators look at first.
    for wanted in (
        "omnistitch_consumer_lag_records",  # lag
        "omnistitch_consumer_lag_seconds",
        "omnistitch_events_in_total",  # throughput per channel
        "omnistitch_end_to_end_latency_seconds_bucket",
        "omnistitch_identity_merges_total",
        "omnistitch_dead_letters_total",
        "process_resident_memory_bytes",  # memory, and the cache sized in RUNBOOK.md
        "omnistitch_context_cache_bytes",
        "omnistitch_context_cache_misses_total",
    ):
        assert wanted in queried


def test_the_dashboard_uses_the_provisioned_data_source() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uids = {d["uid"] for d in provisioned["datasources"]}
    used = {t["datasource"]["uid"] for t in dashboard_targets(dashboard["panels"])}
    assert used == uids
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_rules_query_only_exported_metrics(exported: set[str]) -> None:
    rules = alert_rules()
    recorded = {r["record"] for r in rules if "record" in r}
    known = exported | recorded | {"up"}
    unknown = {
        name: rule.get("alert") or rule.get("record")
        for rule in rules
        for name in metric_names(rule["expr"])
        if name not in known
    }
    assert unknown == {}


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_a_runbook_section() -> None:
    anchors = {
        _anchor(line.lstrip("#"))
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("#")
    }
    alerts = [r for r in alert_rules() if "alert" in r]
    assert {
        "OmnistitchConsumerLagHigh",
        "OmnistitchConsumerLagSecondsHigh",
        "OmnistitchDeadLetterRate",
        "OmnistitchChannelSilent",
        "OmnistitchEndToEndLatencyHigh",
        "OmnistitchWorkerNotReady",
    } <= {r["alert"] for r in alerts}
    for rule in alerts:
        url = rule["annotations"]["runbook_url"]
        assert url == f"deploy/RUNBOOK.md#{rule['alert'].lower()}"
        assert url.split("#")[1] in anchors, f"RUNBOOK.md has no section {rule['alert']}"
