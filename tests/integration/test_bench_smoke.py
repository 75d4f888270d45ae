"""A short ``omnistitch bench`` run: the harness works end to end and reports sane figures.

It asserts shape and sanity, not speed: speed is what the full run is for. One run covers
every phase: the baselines, one worker, two workers (scaling) and two growth sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from omnistitch.bench import (
    COUNT_ONLY_CACHE,
    BenchConfig,
    parse_growth,
    remove_scratch,
    run_bench,
    to_json,
)


def bench_topics(bootstrap: str) -> set[str]:
    """The broker's topics that a bench run makes (``bench<hex>.`` and ``bench<hex>-app-``)."""
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics
    return {t for t in topics if t.startswith("bench")}


def test_bench_reports_every_figure(kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg = BenchConfig(
        events=1_500,
        customers=300,
        latency_rate=100,
        latency_seconds=4,
        latency_warmup_s=2,
        bootstrap=kafka_bootstrap,
        workdir=tmp_path,
        kafka_records=20_000,
        timeout_s=300,
        workers=2,
        scaling_rounds=2,
        growth=[200, 400],
        chat_history=40,
        chat_messages=40,
        chat_visits=2,
    )
    before = bench_topics(kafka_bootstrap)
    report = run_bench(cfg)
    # Its eleven runs' topics (baselines; two rounds of 1 worker, 2 workers with standby
    # replicas and without; two growth sizes; two chat histories) and state are gone; the
    # logs stay.
    assert bench_topics(kafka_bootstrap) - before == set()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []
    assert len(list(tmp_path.glob("bench*.worker-*.log"))) == 1 + 2 + 2 + (1 + 2 + 2) + 2 + 2
    p = report.pipeline
    assert report.kafka_producer_per_s is not None
    assert report.kafka_producer_per_s > 0
    assert report.kafka_consumer_per_s is not None
    assert report.kafka_consumer_per_s > 0
    assert report.python_passthrough_per_s > 0
    assert p.events == 1_500
    assert (p.customers, p.workers) == (300, 1)
    assert p.events_per_s > 0
    assert set(p.stage_events_per_s) == {"ingest", "identity", "context"}
    assert p.stage_events_per_s["ingest"] >= p.stage_events_per_s["context"]
    assert 0 < p.cpu_us_per_event < 1e6
    assert 0 <= p.gc_us_per_event < p.cpu_us_per_event
    assert 20 < p.peak_rss_mb < 4_000
    assert p.rocksdb_mb > 0
    assert p.rocksdb_mb_per_million_customers == pytest.approx(p.rocksdb_mb / 300 * 1e6)
    assert p.recovery_s is not None
    assert p.recovery_s > 0
    assert p.latency_ms["p50"] <= p.latency_ms["p95"] <= p.latency_ms["p99"]
    assert p.latency_ms["delivered_pct"] > 50
    # The warm-up's events (the worker was just restarted) are timed apart.
    w = p.latency_warmup_ms
    assert 0 < w["p50"] <= w["p95"] <= w["p99"]
    assert w["delivered_pct"] > 50
    # Where it went: each hop's delay, read back from the records' timestamps. A hop is
    # part of the end-to-end delay of the same event, so none can exceed it.
    assert list(p.latency_hops_ms) == ["ingest", "identity", "context"]
    for hop in p.latency_hops_ms.values():
        assert 0 <= hop["p50"] <= hop["p95"] <= hop["p99"]
        assert hop["p50"] <= p.latency_ms["p99"]
    # Where the CPU went meanwhile: the worker and the bench worked, and the test's broker
    # (on this machine) was found listening on the bootstrap port.
    c = p.latency_cpu
    assert c is not None
    assert c.seconds >= 3.5
    worker, broker, bench = (c.processes[r] for r in ("worker", "broker", "bench"))
    assert worker is not None
    assert 0 < worker <= c.cpus
    assert broker is not None
    assert 0 < broker <= c.cpus
    assert bench is not None
    assert 0 < bench <= c.cpus
    assert worker + broker + bench <= c.machine_busy * 1.05 + 0.05  # each is part of it
    assert 0 < c.machine_busy <= c.cpus
    assert c.worker_us_per_event == pytest.approx(worker * c.seconds / 400 * 1e6)
    # The broker's JVM seen by its threads: its JIT and GC a part of its own share, and
    # what it hosted counted (the run's own topics at least: raw events and the app's).
    assert c.jvm is not None
    assert set(c.jvm) == {"jit", "gc"}
    assert all(cores >= 0 for cores in c.jvm.values())
    assert c.jvm_housekeeping <= broker * 1.05 + 0.02
    assert p.broker_partitions is not None
    assert p.broker_partitions >= 8
    assert 0 < report.ratios["pipeline_vs_passthrough"] < 10
    d = report.domain
    assert d is not None
    assert d.events == 1_500
    assert all(us > 0 for us in d.us_per_event.values())
    # No framework can make the pipeline faster than its own code run in-process.
    assert 0 < report.ratios["pipeline_vs_domain"] < 1

    # Scaling: the same events drained by two workers, their counters summed.
    s = report.scaled
    assert s is not None
    assert (s.events, s.workers) == (1_500, 2)
    assert s.events_per_s > 0
    assert set(s.stage_events_per_s) == {"ingest", "identity", "context"}
    assert all(v > 0 for v in s.stage_events_per_s.values())
    assert 0 < s.cpu_us_per_event < 1e6
    assert 20 < s.peak_rss_mb < 4_000
    assert s.rocksdb_mb > 0
    assert s.recovery_s is None
    assert not s.latency_ms
    assert not s.latency_hops_ms
    # Two rounds of the scaling drains: the first is the drains above, and the ratios
    # reported are the rounds' medians.
    first, second = report.scaling_rounds
    assert first.one_worker_per_s == p.events_per_s
    assert first.scaled_per_s == s.events_per_s
    assert first.scaling == pytest.approx(s.events_per_s / p.events_per_s)
    assert second.scaling == pytest.approx(second.scaled_per_s / second.one_worker_per_s)
    assert all(r.one_worker_per_s > 0 and r.scaled_per_s > 0 for r in report.scaling_rounds)
    assert report.ratios["scaling"] == pytest.approx((first.scaling + second.scaling) / 2)
    assert 0 < report.ratios["scaling"] < 10
    # Each drain's CPU is sampled too, for the room the machine left for a second worker:
    # the workers (two processes in the scaled drain), the broker and the bench.
    for drain in (p, s):
        dc = drain.drain_cpu
        assert dc is not None
        assert abs(dc.seconds - drain.seconds) < 0.5  # the window the rate was taken over
        cores = [dc.processes[r] for r in ("worker", "broker", "bench")]
        assert all(c is not None and 0 < c <= dc.cpus for c in cores)
        assert sum(c or 0 for c in cores) <= dc.machine_busy * 1.05 + 0.05
        assert 0 < dc.machine_busy <= dc.cpus
        # The workers' CPU over the events drained (all of them, both workers' in the
        # scaled drain).
        assert dc.worker_us_per_event == pytest.approx(
            (dc.processes["worker"] or 0) * dc.seconds / drain.events * 1e6
        )
        # Each worker's share, over the same window: together, the workers' role.
        assert len(drain.worker_cores) == drain.workers
        assert all(w > 0 for w in drain.worker_cores)
        assert sum(drain.worker_cores) == pytest.approx(dc.processes["worker"], rel=0.1, abs=0.05)
    # The same two workers keeping no standby replicas: what the replay costs, apart.
    s0 = report.scaled_without_standbys
    assert s0 is not None
    assert (s0.events, s0.workers, s0.settings) == (1_500, 2, {"OMNISTITCH_STANDBY_REPLICAS": "0"})
    assert set(s0.stage_events_per_s) == {"ingest", "identity", "context"}
    assert 0 < s0.cpu_us_per_event < 1e6
    assert len(s0.worker_cores) == 2
    assert first.scaled_without_standbys_per_s == s0.events_per_s
    assert report.ratios["scaling_without_standbys"] == pytest.approx(
        (s0.events_per_s / p.events_per_s + second.scaling_without_standbys) / 2
    )
    assert p.drain_cpu is not None
    assert report.ratios["machine_room"] == pytest.approx(
        (p.drain_cpu.cpus - p.drain_cpu.steal) / p.drain_cpu.machine_busy
    )

    # Growth: one 1-worker drain per size, 2 events per customer, no latency phase.
    assert [(g.customers, g.events, g.workers) for g in report.growth] == [
        (200, 400, 1),
        (400, 800, 1),
    ]
    for g in report.growth:
        assert g.events_per_s > 0
        assert 0 < g.cpu_us_per_event < 1e6
        assert 20 < g.peak_rss_mb < 4_000
        assert g.rocksdb_mb > 0
        assert g.rocksdb_mb_per_million_customers > 0
        assert g.recovery_s is not None
        assert g.recovery_s > 0
        assert not g.latency_ms

    # Chat history: the same long-history customers with the defaults, then with the
    # context cache bounded by count only; what the caches held at the end is read back.
    assert [(h.customers, h.events, h.settings) for h in report.history] == [
        (40, 1_600, {}),
        (40, 1_600, COUNT_ONLY_CACHE),
    ]
    for h in report.history:
        assert h.events_per_s > 0
        assert 20 < h.peak_rss_mb < 4_000
        # 40 contexts of 40 messages (~40 KB encoded each): all held, under the 32 MB bound
        assert 0.5 < h.context_cache_mb < 32
        assert h.rebalances or h.context_cache_misses == 0  # a rebalance empties the cache
        assert h.recovery_s is None
        assert not h.latency_ms

    table = report.table()
    assert "chat history" in table
    assert "40 x 40 messages in 2 visits" in table
    assert "OMNISTITCH_CONTEXT_CACHE_MB=65536" in table
    assert "Python passthrough" in table
    assert "e2e latency p99" in table
    assert "warm-up p50 / p95 / p99, first 2s" in table
    assert "CPU while offered: worker / broker / bench" in table
    assert "CPU per event offered (worker)" in table
    assert "broker's JIT / GC" in table
    assert "partitions on the broker" in table
    assert "RocksDB per million customers" in table
    assert "omnistitch, 2 workers, sustained" in table
    assert "scaling (2 workers / 1)" in table
    assert "CPU while draining: worker / broker / bench" in table
    assert "CPU while 2 workers drain: worker / broker / bench" in table
    assert "room on the machine, same CPU per event" in table
    assert "  each worker" in table
    assert "omnistitch, 2 workers, no standby replicas" in table
    assert "scaling without standbys (2 workers / 1)" in table
    assert table.count("  median of 2 rounds, each") == 2  # with standbys and without
    assert "MB/M cust." in table
    assert "domain code in-process, no Kafka (ceiling)" in table
    assert "omnistitch / domain ceiling" in table
    data = json.loads(to_json(report))
    assert data["pipeline"]["events"] == 1_500
    assert data["domain"]["events_per_s"] > 0
    assert data["pipeline"]["rocksdb_mb_per_million_customers"] > 0
    assert data["pipeline"]["latency_cpu"]["processes"]["worker"] > 0
    assert set(data["pipeline"]["latency_cpu"]["jvm"]) == {"jit", "gc"}
    assert data["pipeline"]["broker_partitions"] >= 8
    assert (
        data["pipeline"]["latency_warmup_ms"]["p99"] >= data["pipeline"]["latency_warmup_ms"]["p50"]
    )
    assert data["scaled"]["workers"] == 2
    assert data["ratios"]["scaling"] > 0
    assert data["ratios"]["machine_room"] > 0
    assert data["scaled"]["drain_cpu"]["processes"]["worker"] > 0
    assert data["scaled_without_standbys"]["settings"] == {"OMNISTITCH_STANDBY_REPLICAS": "0"}
    assert [r["scaled_per_s"] > 0 for r in data["scaling_rounds"]] == [True, True]
    assert [g["customers"] for g in data["growth"]] == [200, 400]
    assert {"events_per_s", "cpu_us_per_event", "peak_rss_mb", "rocksdb_mb"} <= set(
        data["growth"][0]
    )
    assert {"rocksdb_mb_per_million_customers", "recovery_s"} <= set(data["growth"][0])


def test_bench_with_ingest_as_a_process_counts_both_processes(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    cfg = BenchConfig(
        events=600,
        customers=120,
        latency_rate=100,
        latency_seconds=3,
        latency_warmup_s=0,  # none: the measured window starts with the load
        bootstrap=kafka_bootstrap,
        workdir=tmp_path,
        java_baseline=False,
        timeout_s=300,
        ingest_process=True,
        keep_scratch=True,
    )
    before = bench_topics(kafka_bootstrap)
    report = run_bench(cfg)
    kept = bench_topics(kafka_bootstrap) - before
    stems = {t.split(".")[0].split("-app-")[0] for t in kept}
    assert len(stems) == 2  # the baselines' topics, and the worker's (public and internal)
    assert any("-app-" in t and t.endswith("-changelog") for t in kept)
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == sorted(
        s for s in stems if any(t.startswith(s + "-app-") for t in kept)
    )
    for stem in stems:
        assert remove_scratch(kafka_bootstrap, stem + ".") == sorted(
            t for t in kept if t.startswith(stem)
        )
    assert bench_topics(kafka_bootstrap) - before == set()
    p = report.pipeline
    assert p.events_per_s > 0
    assert set(p.stage_events_per_s) == {"ingest", "identity", "context"}  # both served
    assert 0 < p.cpu_us_per_event < 1e6
    assert p.ingest_peak_rss_mb is not None
    assert 20 < p.ingest_peak_rss_mb < p.peak_rss_mb  # no tables, no faust stages
    assert p.recovery_s is not None
    assert p.latency_ms["delivered_pct"] > 50
    assert p.latency_cpu is not None
    assert p.latency_cpu.worker_us_per_event > 0  # the worker's and its ingest process's
    worker = p.latency_cpu.processes["worker"]
    assert worker is not None
    # per event of the measured window alone (3 s at 100 ev/s)
    assert p.latency_cpu.worker_us_per_event == pytest.approx(
        worker * p.latency_cpu.seconds / 300 * 1e6
    )
    assert p.latency_warmup_ms == {}
    table = report.table()
    assert "warm-up" not in table
    assert "CPU per event (worker + ingest)" in table
    assert "CPU per event offered (worker + ingest)" in table
    assert "peak RSS (ingest process)" in table
    assert json.loads(to_json(report))["config"]["ingest_process"] == "True"


def test_growth_sizes_parse() -> None:
    assert parse_growth("10000,100000") == [10_000, 100_000]
    assert parse_growth(" 200, 400 ,") == [200, 400]
    for bad in ("", "ten", "200,10"):
        with pytest.raises(ValueError, match="--growth"):
            parse_growth(bad)
