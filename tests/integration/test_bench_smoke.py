"""A short ``omnistitch bench`` run: the harness works end to end and reports sane figures.

It asserts shape and sanity, not speed: speed is what the full run is for.
"""

from __future__ import annotations

import json
from pathlib import Path

from omnistitch.bench import BenchConfig, run_bench, to_json


def test_bench_reports_every_figure(kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg = BenchConfig(
        events=1_500,
        customers=300,
        latency_rate=100,
        latency_seconds=4,
        bootstrap=kafka_bootstrap,
        workdir=tmp_path,
        kafka_records=20_000,
        timeout_s=300,
    )
    report = run_bench(cfg)
    p = report.pipeline
    assert report.kafka_producer_per_s is not None
    assert report.kafka_producer_per_s > 0
    assert report.kafka_consumer_per_s is not None
    assert report.kafka_consumer_per_s > 0
    assert report.python_passthrough_per_s > 0
    assert p.events == 1_500
    assert p.events_per_s > 0
    assert set(p.stage_events_per_s) == {"ingest", "identity", "context"}
    assert p.stage_events_per_s["ingest"] >= p.stage_events_per_s["context"]
    assert 0 < p.cpu_us_per_event < 1e6
    assert 20 < p.peak_rss_mb < 4_000
    assert p.rocksdb_mb > 0
    assert p.recovery_s > 0
    assert p.latency_ms["p50"] <= p.latency_ms["p95"] <= p.latency_ms["p99"]
    assert p.latency_ms["delivered_pct"] > 50
    assert 0 < report.ratios["pipeline_vs_passthrough"] < 10
    table = report.table()
    assert "Python passthrough" in table
    assert "e2e latency p99" in table
    assert json.loads(to_json(report))["pipeline"]["events"] == 1_500
