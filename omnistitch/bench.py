"""``omnistitch bench``: an honest benchmark, with its baselines measured in the same run.

Every figure is reported next to the ceilings measured on the same machine, minutes apart,
so that a noisy, shared 2-core machine still yields meaningful ratios:

1. Kafka's own ProducerPerformance and ConsumerPerformance (the broker's ceiling);
2. a bare Python confluent-kafka consume -> produce passthrough of the same events (the
   ceiling of any Python processor);
3. the domain ceiling: the same records through the pipeline's own pure code in-process,
   with dicts for tables (``omnistitch/bench_domain.py``): what one process could stitch
   with today's domain code whatever the framework around it;
4. omnistitch's pipeline: one worker process, from the raw topic to ``customer.context``.

The omnistitch run reports sustained throughput, per-stage rates, CPU per event, peak RSS,
RocksDB size (also per million customers), the time to recover state from changelogs, and
end-to-end latency percentiles at a fixed offered load below saturation.

Two optional figures reuse the same drain (``run_pipeline``), each on a fresh topic prefix
and app id, so with a fresh consumer group and empty state:

5. scaling (``workers > 1``): N worker processes of one app drain the same records, and
   ``scaling`` is their rate over the 1-worker rate of the same run. CPU per event is summed
   over the workers, the stage counters are summed over their ``/metrics``. **The identity
   stage is serialised per tenant by design** (all of a tenant's identity requests are on
   one partition, so one worker owns it; see pipeline/README.md): it bounds the scaling,
   and the per-stage rates show whether it is the stage that does. With the default
   ``OMNISTITCH_STANDBY_REPLICAS=1`` each worker also keeps standby copies of the other's
   tables, so N workers' RocksDB holds the state more than once and costs replay CPU: that
   is what a deployment of N workers pays too.
   Each drain's CPU is sampled (``omnistitch/bench_load.py``): the workers', each
   worker's, the broker's, the bench's and the machine's. The issue's floor (1.6x) holds
   "where the broker leaves CPU for it", so the room the one-worker drain left
   (``machine_room``: the cores over the cores busy) is reported too, and
   :func:`scaling_note` says which it was when the ratio falls short: no room, or the
   workers' own costs. The same N workers drain the records once more keeping no standby
   replicas (``NO_STANDBYS``), so that the replay's cost and the identity stage's bound
   are told apart in the same run.
6. growth (``growth``: customer counts): one worker drains ``events_per_customer`` events
   per customer for each size, to show how throughput, memory, RocksDB per customer and
   recovery time change as the population grows. No latency phase: those runs stay short.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from connectors.publisher import producer_config as connector_producer_config
from omnistitch.bench_domain import DomainFigures, run_domain
from omnistitch.bench_hops import first_stamps, hop_delays, percentiles
from omnistitch.bench_load import (
    CpuProbe,
    CpuShares,
    MainThread,
    broker_pids,
    machine_room,
    process_cpu_s,
    this_process,
)
from omnistitch.cli import KAFKA_LAUNCHER
from omnistitch.journeys import MIN_CUSTOMERS, Dataset, generate
from omnistitch.kafka_client import client_config
from omnistitch.settings import KafkaSettings, WorkerSettings
from omnistitch.topics import (
    CUSTOMER_CONTEXT,
    RAW_EVENTS,
    TopicSpec,
    ensure_topics,
    internal_topic,
)
from pipeline.context_policy import load_context_policy
from pipeline.rules import load_rules
from schemas.events import Channel, Identifier, RawEvent

#: The broker's JIT and GC cores over which the bench says the tail is partly the broker's
#: (a warm broker of a few hundred partitions: 0.00-0.02 in session 20's runs).
JVM_HOUSEKEEPING_WARN_CORES = 0.1
#: Issue 7's scaling floor: two workers reach this many times one worker's rate, "where
#: the broker leaves CPU for it" (the bench says when the machine did not).
SCALING_FLOOR = 1.6
#: A worker's event loop waiting this share of a drain for a CPU (runnable, not running)
#: is reported as contention (one worker alone on this machine: ~0.05; two: ~0.25).
CONTENDED_LOOP_WAIT = 0.1

_STAGE = re.compile(r'^omnistitch_stage_messages_total\{stage="(\w+)"\} ([0-9.e+]+)$', re.M)
_DEAD = re.compile(r"^omnistitch_dead_letters_total\{[^}]*\} ([0-9.e+]+)$", re.M)
_REBALANCES = re.compile(r"^omnistitch_rebalances_total ([0-9.e+]+)$", re.M)
_GC = re.compile(r'^omnistitch_gc_seconds_total\{generation="\d"\} ([0-9.e+-]+)$', re.M)
_CACHE = re.compile(r"^omnistitch_context_cache_bytes ([0-9.e+]+)$", re.M)
_MISSES = re.compile(r"^omnistitch_context_cache_misses_total ([0-9.e+]+)$", re.M)
#: The count-only bound the context cache had before OMNISTITCH_CONTEXT_CACHE_MB: the
#: baseline of the chat-history runs.
COUNT_ONLY_CACHE = {"OMNISTITCH_CONTEXT_CACHE_MB": "65536"}
#: The second scaled drain's settings: the same workers keeping no standby copies of each
#: other's tables, to tell the replay's cost from the rest in the same run.
NO_STANDBYS = {"OMNISTITCH_STANDBY_REPLICAS": "0"}
#: What ``_counts`` reads besides the stages' messages (not shown as drain progress).
_NOT_PROGRESS = frozenset({"rebalances", "gc_s", "context_cache_bytes", "context_cache_misses"})


@dataclass
class BenchConfig:
    events: int = 50_000
    customers: int = 10_000
    seed: int = 7
    latency_rate: int = 2_000
    latency_seconds: float = 20.0
    #: Seconds the load is offered before the measured window: the worker has just been
    #: restarted (the recovery run), and its first seconds (its cold start) are reported apart.
    latency_warmup_s: float = 3.0
    bootstrap: str = ""
    workdir: Path = Path("var/bench")
    java_baseline: bool = True
    kafka_records: int = 200_000  # the JVM tools need volume to reach steady state
    timeout_s: float = 1_800.0
    profile: Path | None = None  # py-spy of the worker while it drains (.svg or stacks)
    workers: int = 1  # > 1: also drain the same records with this many workers (scaling)
    #: Rounds of the scaling drains (a 1-worker drain, then ``workers`` with standby
    #: replicas and without), one after another: the ratios reported are their medians.
    scaling_rounds: int = 1
    growth: list[int] = field(default_factory=list)  # customer counts of the growth runs
    events_per_customer: int = 2  # events of each growth run, per customer
    #: Ingest as a process beside each worker (``omnistitch ingest``), not a worker thread.
    ingest_process: bool = False
    #: Keep each run's topics and state directories (deleted by default: a run makes ~40
    #: topics of 8 partitions, and a broker reused for many runs ran out of file handles).
    keep_scratch: bool = False
    #: Customers of the chat-history runs (0: none), each with ``chat_messages`` messages.
    chat_history: int = 0
    chat_messages: int = 120
    #: Visits each chat-history customer's messages come in, round-robin (1: all at once).
    chat_visits: int = 1


@dataclass
class PipelineFigures:
    """One drain of a preloaded raw topic by ``workers`` processes of one app."""

    events: int
    customers: int
    workers: int
    seconds: float
    events_per_s: float
    stage_events_per_s: dict[str, float]
    cpu_us_per_event: float  # CPU of every worker (and ingest process), summed, per event
    gc_us_per_event: float  # of which in CPython's cyclic garbage collector
    peak_rss_mb: float  # the largest worker's
    rocksdb_mb: float  # every worker's state directory, summed (standby copies included)
    rocksdb_mb_per_million_customers: float
    #: Rebalances during the drain, summed over workers: not 0 means its time includes one.
    rebalances: int = 0
    recovery_s: float | None = None  # None: not measured (scaling runs)
    latency_ms: dict[str, float] = field(default_factory=dict)
    #: The warm-up's events (the first ``latency_warmup_s`` after the worker's restart).
    latency_warmup_ms: dict[str, float] = field(default_factory=dict)
    #: The same events' delay per hop (``omnistitch/bench_hops.py``): hop -> percentiles.
    latency_hops_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The largest ingest process's peak RSS; None: ingest ran on the workers' threads.
    ingest_peak_rss_mb: float | None = None
    #: What the workers' context caches held when the drain ended (encoded MB, summed),
    #: and the contexts they had to read from RocksDB and parse during it.
    context_cache_mb: float = 0.0
    context_cache_misses: int = 0
    #: Settings the run's workers had on top of the defaults.
    settings: dict[str, str] = field(default_factory=dict)
    #: Where the machine's CPU went while the latency was measured (None: not measured).
    latency_cpu: CpuShares | None = None
    #: Where it went during the drain, from the preload's start until the context stage
    #: had every event: how much room the machine left for more workers (``machine_room``).
    drain_cpu: CpuShares | None = None
    #: Each worker's cores over the same window (its ingest process's too): with several,
    #: whether one of them was the bound (a full core) while the other had work to spare.
    worker_cores: list[float] = field(default_factory=list)
    #: Each worker's main thread over the drain (its event loop: the stages): cores on a
    #: CPU, and runnable but waiting for one (None where schedstat was not readable).
    worker_loops: list[MainThread | None] = field(default_factory=list)
    #: Partitions the broker hosted (every topic's, the run's own too) when the latency
    #: was measured: a broker holding thousands spends a core marking its heap now and
    #: then (docs/performance-history.md, session 20). None: not measured.
    broker_partitions: int | None = None

    @property
    def loops_seen(self) -> list[MainThread] | None:
        """Every worker's event loop, when each one was read; None otherwise."""
        loops = [loop for loop in self.worker_loops if loop is not None]
        return loops if loops and len(loops) == len(self.worker_loops) else None


@dataclass
class ScalingRound:
    """One round of the scaling drains, the same events one after another: one worker,
    then N workers with the default standby replicas, then N without."""

    one_worker_per_s: float
    scaled_per_s: float
    scaled_without_standbys_per_s: float
    scaling: float  # scaled over one worker, in this round
    scaling_without_standbys: float

    @staticmethod
    def median(rounds: Sequence[ScalingRound], key: str) -> float:
        """The median over ``rounds`` of one ratio (``scaling``, ``scaling_without_standbys``)."""
        return float(statistics.median(getattr(r, key) for r in rounds))

    @classmethod
    def of(
        cls, one: PipelineFigures, scaled: PipelineFigures, unreplicated: PipelineFigures
    ) -> ScalingRound:
        return cls(
            one_worker_per_s=one.events_per_s,
            scaled_per_s=scaled.events_per_s,
            scaled_without_standbys_per_s=unreplicated.events_per_s,
            scaling=scaled.events_per_s / one.events_per_s,
            scaling_without_standbys=unreplicated.events_per_s / one.events_per_s,
        )


@dataclass
class BenchReport:
    machine: dict[str, Any]
    config: dict[str, Any]
    kafka_producer_per_s: float | None
    kafka_consumer_per_s: float | None
    python_passthrough_per_s: float
    python_passthrough_cpu_us: float
    pipeline: PipelineFigures
    ratios: dict[str, float]
    scaled: PipelineFigures | None = None  # the same records drained by ``workers`` workers
    #: ... and by as many without standby replicas (``NO_STANDBYS``).
    scaled_without_standbys: PipelineFigures | None = None
    growth: list[PipelineFigures] = field(default_factory=list)
    domain: DomainFigures | None = None  # the same records through the pure code, no Kafka
    #: Chat-heavy customers drained with the defaults, then with the count-only cache.
    history: list[PipelineFigures] = field(default_factory=list)
    #: Each round of the scaling drains (the first's drains are ``pipeline``, ``scaled``
    #: and ``scaled_without_standbys``); ``ratios`` holds the medians of their ratios.
    scaling_rounds: list[ScalingRound] = field(default_factory=list)

    def table(self) -> str:
        p = self.pipeline
        recovery = "n/a" if p.recovery_s is None else f"{p.recovery_s:.1f} s"
        rows = [
            ("Kafka ProducerPerformance", _fmt(self.kafka_producer_per_s, "ev/s")),
            ("Kafka ConsumerPerformance", _fmt(self.kafka_consumer_per_s, "ev/s")),
            ("Python passthrough (confluent-kafka)", _fmt(self.python_passthrough_per_s, "ev/s")),
            *self._domain_rows(),
            ("omnistitch, 1 worker, sustained", _fmt(p.events_per_s, "ev/s")),
            *[(f"  stage {s}", _fmt(v, "ev/s")) for s, v in p.stage_events_per_s.items()],
            ("omnistitch / passthrough", f"{self.ratios['pipeline_vs_passthrough']:.1%}"),
            *(
                [("omnistitch / domain ceiling", f"{self.ratios['pipeline_vs_domain']:.1%}")]
                if "pipeline_vs_domain" in self.ratios
                else []
            ),
            (f"CPU per event ({self._processes})", f"{p.cpu_us_per_event:,.0f} µs"),
            ("  of which garbage collection", f"{p.gc_us_per_event:,.0f} µs"),
            ("CPU per event (passthrough)", f"{self.python_passthrough_cpu_us:,.0f} µs"),
            *self._drain_rows(p, "draining"),
            ("peak RSS (worker)", f"{p.peak_rss_mb:,.0f} MB"),
            *(
                [("peak RSS (ingest process)", f"{p.ingest_peak_rss_mb:,.0f} MB")]
                if p.ingest_peak_rss_mb is not None
                else []
            ),
            ("RocksDB on disk", f"{p.rocksdb_mb:,.1f} MB"),
            ("RocksDB per million customers", f"{p.rocksdb_mb_per_million_customers:,.0f} MB"),
            ("recovery from changelogs", recovery),
            *[
                (f"e2e latency {k} @ {self.config['latency_rate']}/s", f"{v:,.0f} ms")
                for k, v in p.latency_ms.items()
                if k.startswith("p")
            ],
        ]
        if "delivered_pct" in p.latency_ms:
            rows.append(
                ("delivered within the latency window", f"{p.latency_ms['delivered_pct']:.0f}%")
            )
        if "p50" in (w := p.latency_warmup_ms):
            rows.append(
                (
                    f"  warm-up p50 / p95 / p99, first {float(self.config['latency_warmup_s']):g}s",
                    f"{w['p50']:,.0f} / {w['p95']:,.0f} / {w['p99']:,.0f} ms",
                )
            )
        rows += [
            (f"  hop {hop} p50 / p95 / p99", " / ".join(f"{v:,.0f}" for v in q.values()) + " ms")
            for hop, q in p.latency_hops_ms.items()
        ]
        rows += self._load_rows()
        if (s := self.scaled) is not None:
            rows += self._scaled_rows(s, standbys=True)
        if (s := self.scaled_without_standbys) is not None:
            rows += self._scaled_rows(s, standbys=False)
        width = max(len(r[0]) for r in rows)
        text = "\n".join(f"{name:<{width}}  {value:>16}" for name, value in rows)
        if self.growth:
            text += "\n\n" + growth_table(self.growth)
        if self.history:
            visits = int(self.config.get("chat_visits", "1"))
            text += "\n\n" + history_table(self.history, visits)
        return text

    def _load_rows(self) -> list[tuple[str, str]]:
        """Where the CPU went while latency was measured: was the load below saturation?"""
        if (c := self.pipeline.latency_cpu) is None:
            return []
        return [
            *_shares_rows("offered", c),
            (f"  CPU per event offered ({self._processes})", f"{c.worker_us_per_event:,.0f} µs"),
            *self._broker_rows(c),
        ]

    def _scaled_rows(self, s: PipelineFigures, standbys: bool) -> list[tuple[str, str]]:
        """One scaled drain's rows: with the default standby replicas, or with none."""
        n = s.workers
        kind, key, cpu = (
            ("sustained", "scaling", "summed")
            if standbys
            else ("no standby replicas", "scaling_without_standbys", "no standbys")
        )
        drain = f"{n} workers drain" + ("" if standbys else ", no standbys")
        return [
            (f"omnistitch, {n} workers, {kind}", _fmt(s.events_per_s, "ev/s")),
            *[(f"  stage {k}", _fmt(v, "ev/s")) for k, v in s.stage_events_per_s.items()],
            (f"{key.replace('_', ' ')} ({n} workers / 1)", f"{self.ratios[key]:.2f}x"),
            *self._round_rows(key),
            *self._drain_rows(s, drain),
            (f"CPU per event ({n} workers, {cpu})", f"{s.cpu_us_per_event:,.0f} µs"),
            (f"peak RSS (largest of {n})", f"{s.peak_rss_mb:,.0f} MB"),
            (f"RocksDB on disk ({n} workers)", f"{s.rocksdb_mb:,.1f} MB"),
        ]

    def _round_rows(self, key: str) -> list[tuple[str, str]]:
        """Each round's ratio, when there were several (the ratio above is their median)."""
        if len(rounds := self.scaling_rounds) < 2:
            return []
        each = " / ".join(f"{getattr(r, key):.2f}" for r in rounds)
        return [(f"  median of {len(rounds)} rounds, each", f"{each}x")]

    @staticmethod
    def _drain_rows(p: PipelineFigures, while_: str) -> list[tuple[str, str]]:
        """Where the CPU went during a drain, and the room it left for more workers."""
        if (c := p.drain_cpu) is None:
            return []
        room = f"{machine_room(c):.2f}x the rate"
        rows = _shares_rows(while_, c)
        if len(p.worker_cores) > 1:
            rows.append(
                ("  each worker", " / ".join(f"{w:.2f}" for w in p.worker_cores) + " cores")
            )
        if (loops := p.loops_seen) is not None:
            rows.append(
                (
                    "  each worker's event loop: on a CPU / waiting for one",
                    _loops(loops) + " of the time",
                )
            )
        return [*rows, ("  room on the machine, same CPU per event", room)]

    def _broker_rows(self, c: CpuShares) -> list[tuple[str, str]]:
        """The broker's own housekeeping while the load was offered, and what it hosted."""
        rows = []
        if c.jvm is not None:
            kinds = " / ".join(k.upper() for k in c.jvm)
            rows.append(
                (f"  broker's {kinds}", f"{' / '.join(f'{v:.2f}' for v in c.jvm.values())} cores")
            )
        if (hosted := self.pipeline.broker_partitions) is not None:
            rows.append(("  partitions on the broker", f"{hosted:,}"))
        return rows

    @property
    def _processes(self) -> str:
        return "worker + ingest" if self.pipeline.ingest_peak_rss_mb is not None else "worker"

    def _domain_rows(self) -> list[tuple[str, str]]:
        if (d := self.domain) is None:
            return []
        return [
            ("domain code in-process, no Kafka (ceiling)", _fmt(d.events_per_s, "ev/s")),
            *[(f"  {stage}", f"{us:,.1f} µs/event") for stage, us in d.us_per_event.items()],
        ]


def _shares_rows(while_: str, c: CpuShares) -> list[tuple[str, str]]:
    cores = c.cores()
    return [
        (f"CPU while {while_}: {' / '.join(cores)}", f"{' / '.join(cores.values())} cores"),
        ("  machine busy / stolen", f"{c.busy_pct:.0f}% / {c.steal_pct:.0f}% of {c.cpus} cores"),
    ]


def growth_table(rows: Sequence[PipelineFigures]) -> str:
    """One line per growth run: how one worker's figures change with the population."""
    head = (
        "customers",
        "events",
        "ev/s",
        "CPU µs/ev",
        "peak RSS MB",
        "RocksDB MB",
        "MB/M cust.",
        "recovery s",
    )
    body = [
        (
            f"{g.customers:,}",
            f"{g.events:,}",
            f"{g.events_per_s:,.0f}",
            f"{g.cpu_us_per_event:,.0f}",
            f"{g.peak_rss_mb:,.0f}",
            f"{g.rocksdb_mb:,.1f}",
            f"{g.rocksdb_mb_per_million_customers:,.0f}",
            "n/a" if g.recovery_s is None else f"{g.recovery_s:,.1f}",
        )
        for g in rows
    ]
    return _columns(head, body)


def _columns(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """Rows of cells, right-aligned in columns."""
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *body]
    )


def history_table(rows: Sequence[PipelineFigures], visits: int = 1) -> str:
    """The chat-history runs: the same long-history customers, each line one setting."""
    head = ("chat history", "settings", "ev/s", "peak RSS MB", "context cache MB", "misses")
    body = [
        (
            f"{h.customers:,} x {h.events // max(h.customers, 1):,} messages"
            + (f" in {visits} visits" if visits > 1 else ""),
            " ".join(f"{k}={v}" for k, v in h.settings.items()) or "defaults",
            f"{h.events_per_s:,.0f}",
            f"{h.peak_rss_mb:,.0f}",
            f"{h.context_cache_mb:,.1f}",
            f"{h.context_cache_misses:,}",
        )
        for h in rows
    ]
    return _columns(head, body)


def parse_growth(text: str) -> list[int]:
    """``"10000,100000"`` -> ``[10000, 100000]``; ``ValueError`` on anything else."""
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--growth: not a comma list of customer counts: {text!r}") from None
    if not sizes:
        raise ValueError("--growth: give customer counts, e.g. 10000,100000")
    if (small := min(sizes)) < MIN_CUSTOMERS:
        raise ValueError(f"--growth: need at least {MIN_CUSTOMERS} customers, got {small}")
    return sizes


def _fmt(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:,.0f} {unit}"


def _say(text: str) -> None:
    print(f"[bench] {text}", flush=True)


# -- baselines ----------------------------------------------------------------------------
def kafka_perf(bootstrap: str, topic: str, records: int, size: int) -> tuple[float, float]:
    """Kafka's own producer and consumer perf tools against the same broker (records/s)."""
    lib = subprocess.run(
        [str(KAFKA_LAUNCHER), "lib"], capture_output=True, text=True, check=True
    ).stdout.strip()
    java = ["java", "-Xmx512m", "-cp", f"{lib}/*"]
    prod = subprocess.run(
        [
            *java,
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
            "--num-records",
            str(records),
            "--record-size",
            str(size),
            "--throughput",
            "-1",
            "--producer-props",
            f"bootstrap.servers={bootstrap}",
            "acks=all",
            "linger.ms=5",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    produced = float(re.findall(r"([0-9.]+) records/sec", prod)[-1])
    cons = subprocess.run(
        [
            *java,
            "org.apache.kafka.tools.ConsumerPerformance",
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--messages",
            str(records),
            "--group",
            f"bench-{uuid.uuid4().hex[:8]}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    header, values = [line for line in cons.splitlines() if line.strip()][-2:]
    stats = dict(zip([h.strip() for h in header.split(",")], values.split(","), strict=False))
    return produced, float(stats["nMsg.sec"])


def preload(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "partitioner": "murmur2_random"}
    )
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("preload: records left undelivered")


def python_passthrough(bootstrap: str, source: str, sink: str, n: int) -> tuple[float, float]:
    """consume -> produce of the same records in one Python process: (events/s, µs CPU/ev)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-pass-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    consumer.subscribe([source])
    seen, started, cpu0 = 0, 0.0, 0.0
    deadline = time.monotonic() + 600
    while seen < n and time.monotonic() < deadline:
        batch = consumer.consume(num_messages=500, timeout=1.0)
        for msg in batch:
            if msg.error():
                continue
            if seen == 0:
                started, cpu0 = time.monotonic(), time.process_time()
            # What any processor does at least: decode the event once, then write it on.
            RawEvent.model_validate_json(msg.value() or b"")
            while True:
                try:
                    producer.produce(sink, key=msg.key(), value=msg.value())
                    break
                except BufferError:
                    producer.poll(0.05)
            seen += 1
        producer.poll(0)
    producer.flush(60)
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu0
    consumer.close()
    if seen < n:
        raise RuntimeError(f"passthrough consumed only {seen} of {n}")
    return n / elapsed, cpu / n * 1e6


# -- the pipeline -------------------------------------------------------------------------
def _spawn(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "omnistitch", command],
        env={**os.environ, **env},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _counts(api: str) -> dict[str, float]:
    """Messages per stage a process served at ``api``/metrics, plus ``dead``: records
    dead-lettered (not resolved), ``rebalances``: the rebalances it took part in, and
    ``gc_s``: its time in the garbage collector."""
    try:
        text = httpx.get(f"{api}/metrics", timeout=5).text
    except httpx.TransportError:
        return {}
    counts = {m[0]: float(m[1]) for m in _STAGE.findall(text)}
    counts["dead"] = sum(float(v) for v in _DEAD.findall(text))
    counts["rebalances"] = sum(float(v) for v in _REBALANCES.findall(text))
    counts["gc_s"] = sum(float(v) for v in _GC.findall(text))
    counts["context_cache_bytes"] = sum(float(v) for v in _CACHE.findall(text))
    counts["context_cache_misses"] = sum(float(v) for v in _MISSES.findall(text))
    return counts


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class _Worker:
    """A worker process, and the ingest process beside it when ``ingest_env`` is given
    (the worker's env then turns its own ingest thread off)."""

    def __init__(
        self, env: dict[str, str], log: Path, ingest_env: dict[str, str] | None = None
    ) -> None:
        self.env, self.log = env, log
        self.ingest: subprocess.Popen[bytes] | None = None
        self.ingest_api: str | None = None
        if ingest_env is not None:
            self.ingest = _spawn("ingest", ingest_env, log.with_suffix(".ingest.log"))
            self.ingest_api = f"http://127.0.0.1:{ingest_env['OMNISTITCH_API_PORT']}"
            env = {**env, "OMNISTITCH_INGEST_IN_WORKER": "false"}
        self.proc = _spawn("worker", env, log)
        self.api = f"http://127.0.0.1:{env['OMNISTITCH_API_PORT']}"

    @property
    def procs(self) -> list[subprocess.Popen[bytes]]:
        return [self.proc] if self.ingest is None else [self.proc, self.ingest]

    def stages(self) -> dict[str, float]:
        """Messages per stage so far (the ingest process's too), ``dead``, ``rebalances``
        and ``gc_s`` (:func:`_counts`)."""
        counts = _counts(self.api)
        if self.ingest_api is not None:
            for key, value in _counts(self.ingest_api).items():
                counts[key] = counts.get(key, 0.0) + value
        return counts

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.api}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def cpu_s(self) -> float:
        return process_cpu_s(p.pid for p in self.procs)

    def peak_rss_mb(self) -> float:
        return _peak_rss_mb(self.proc.pid)

    def ingest_peak_rss_mb(self) -> float | None:
        return None if self.ingest is None else _peak_rss_mb(self.ingest.pid)


def _wait(
    what: str,
    probe: Callable[[], bool],
    timeout: float,
    workers: Sequence[_Worker],
    progress: Callable[[], object] | None = None,
) -> None:
    """Until ``probe()``; fails when a worker exits, or after ``timeout`` seconds, counted
    from the last change of ``progress()`` when given (a long drain that keeps moving
    never times out; one that stalls fails as soon as a short one would)."""
    deadline = time.monotonic() + timeout
    logs = ", ".join(str(w.log) for w in workers)
    seen = None if progress is None else progress()
    while not probe():
        if any(p.poll() is not None for w in workers for p in w.procs):
            raise RuntimeError(f"a worker exited while waiting for {what}; see {logs}")
        if progress is not None and (now := progress()) != seen:
            seen, deadline = now, time.monotonic() + timeout
        if time.monotonic() > deadline:
            idle = " without progress" if progress is not None else ""
            raise RuntimeError(f"timed out ({timeout:.0f}s{idle}) waiting for {what}; see {logs}")
        time.sleep(0.2)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(_free_port())
    return sorted(ports)


class _Fleet:
    """``len(envs)`` worker processes of one app (one consumer group), read as one."""

    def __init__(
        self,
        envs: Sequence[dict[str, str]],
        logs: Sequence[Path],
        ingest_envs: Sequence[dict[str, str] | None] | None = None,
    ) -> None:
        self.envs, self.logs = list(envs), list(logs)
        self.ingest_envs = list(ingest_envs or [None] * len(self.envs))
        self.workers: list[_Worker] = []

    def start(self) -> None:
        self.workers = [
            _Worker(env, log, ingest_env)
            for env, log, ingest_env in zip(self.envs, self.logs, self.ingest_envs, strict=True)
        ]

    def stages(self) -> dict[str, float]:
        """Every worker's stage counters, summed."""
        total: dict[str, float] = {}
        for w in self.workers:
            for stage, count in w.stages().items():
                total[stage] = total.get(stage, 0.0) + count
        return total

    def ready(self) -> bool:
        return all(w.ready() for w in self.workers)

    def settled(self) -> bool:
        """Every worker ready, twice a second apart: a worker that turns ready before the
        others join is rebalanced again as they do, and is not ready in between."""
        if not self.ready():
            return False
        time.sleep(1.0)
        return self.ready()

    def cpu_s(self) -> float:
        return sum(w.cpu_s() for w in self.workers)

    def pids(self) -> list[int]:
        """Every worker's process, and its ingest process's."""
        return [p.pid for w in self.workers for p in w.procs]

    def peak_rss_mb(self) -> float:
        return max(w.peak_rss_mb() for w in self.workers)

    def ingest_peak_rss_mb(self) -> float | None:
        apart = [r for w in self.workers if (r := w.ingest_peak_rss_mb()) is not None]
        return max(apart) if apart else None

    def stop(self) -> None:
        """SIGTERM every process at once (one by one, each would rebalance the rest)."""
        procs = [p for w in self.workers for p in w.procs]
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(60)


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


#: Timeline entries of each published context the latency reader looks at.
LATENCY_SCAN = 50


class _Entry(msgspec.Struct):
    event_id: str


class _TimelineIds(msgspec.Struct):
    """Of a published context, only its timeline's event ids (the rest is skipped)."""

    timeline: list[_Entry] = msgspec.field(default_factory=list)


_TIMELINE_IDS = msgspec.json.Decoder(_TimelineIds)

#: The latency events' ids (``_latency`` makes them) as they appear in a record's JSON.
_LATENCY_EVENT_ID = re.compile(rb'"event_id":"(lat-[^"]+)"')


@dataclass
class Latency:
    """The measured window's events; the warm-up's apart (its percentiles only)."""

    percentiles_ms: dict[str, float]  # p50, p95, p99, delivered_pct
    hops_ms: dict[str, dict[str, float]]  # hop -> p50, p95, p99 (bench_hops.py)
    cpu: CpuShares  # where the machine's CPU went while the events were offered
    warmup_ms: dict[str, float] = field(default_factory=dict)  # p50, p95, p99, delivered_pct
    broker_partitions: int | None = None  # every topic's, when the load was offered


def measure_latency(
    bootstrap: str,
    env: dict[str, str],
    rate: int,
    seconds: float,
    make: Callable[[int], RawEvent],
    worker_pids: list[int],
    warmup_s: float = 0.0,
) -> Latency:
    """Offer ``rate`` events/s for ``warmup_s`` and then ``seconds``; time each event of
    the second window until its context is published, and each hop it took on the way
    (``omnistitch/bench_hops.py``), and sample the CPU of the workers (``worker_pids``),
    the broker, this process and the machine meanwhile (``omnistitch/bench_load.py``).
    The warm-up's events are timed too, and reported apart: the bench offers the load
    right after restarting the worker (the recovery run), and a restarted worker's first
    seconds are slower (its in-memory tiers start empty; recovery's aftermath): in 3 of 4
    runs of 20 s, the first 1-2.5 s set the whole window's p99 (session 18,
    docs/performance-history.md)."""
    prefix = env["OMNISTITCH_TOPIC_PREFIX"]
    settings = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix)
    app_id = env["OMNISTITCH_APP_ID"]
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    stop = threading.Event()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-lat-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "latest",
            # A sample is stamped by the worker's producer (below), not when this reader
            # gets it, so the reader may fetch seldom: up to 1 MB or 100 ms a fetch, not
            # one fetch per record (the reader's load on the shared broker was the tail's).
            "fetch.min.bytes": 1 << 20,
            "fetch.wait.max.ms": 100,
        }
    )
    consumer.subscribe([prefix + CUSTOMER_CONTEXT])

    def read() -> None:
        # poll(), not consume(num_messages=...): a batch consume waits out its whole timeout
        # unless the batch fills, which at a low offered rate adds that timeout to every
        # sample (the figures before this fix carried ~200 ms of it).
        while not stop.is_set():
            msg = consumer.poll(0.05)
            if msg is None or msg.error() or not msg.value():
                continue
            # When the worker published it: the record's CreateTime, stamped by the worker's
            # producer. Not when this reader got to it: parsing every published context in
            # this process (with the offering loop beside it) falls behind at 1,000 ev/s and
            # would add its own queue to every sample (p50 3 s where the worker had
            # published within a few hundred ms).
            kind, stamp = msg.timestamp()
            now = stamp / 1000.0 if kind == TIMESTAMP_CREATE_TIME else time.time()
            # The offered events are the newest of their customer's timeline, and one
            # published context can carry several of them (the context stage writes a
            # customer once per batch): every one not seen before arrived now.
            for entry in _TIMELINE_IDS.decode(msg.value() or b"{}").timeline[:LATENCY_SCAN]:
                eid = entry.event_id
                if not eid.startswith("lat-"):
                    break
                seen.setdefault(eid, now)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # Offered as a connector offers it (connectors/publisher.py: linger 5 ms, LZ4, keys on
    # the Java clients' partitions); with 1 ms and no compression the offering alone took
    # 0.42-0.45 of the shared broker's cores at 2,000 ev/s (0.24-0.33 so). Connected, with
    # the topic's metadata and its idempotent producer id, before the clock starts: its
    # first second's events otherwise waited up to 580 ms for them, 924 over 100 ms.
    producer = Producer(connector_producer_config(bootstrap))
    producer.list_topics(prefix + RAW_EVENTS, timeout=10)
    hosted = sum(len(t.partitions) for t in producer.list_topics(timeout=10).topics.values())
    time.sleep(3.0)  # let the reader join its group (and the producer get its id)
    warm = int(rate * warmup_s)
    total = warm + int(rate * seconds)
    since_ms = int(time.time() * 1000)
    probe = CpuProbe(
        {"worker": worker_pids, "broker": broker_pids(bootstrap), "bench": this_process()}
    )
    warming: dict[str, float] = {}
    start = time.monotonic()
    for i in range(total):
        if i == warm:  # the measured window begins
            warming, sent = sent, {}
            probe.start()
        due = start + i / rate
        if (pause := due - time.monotonic()) > 0:
            time.sleep(pause)
        event = make(i)
        key = event.identifiers[0].key.encode()
        producer.produce(prefix + RAW_EVENTS, key=key, value=event.model_dump_json().encode())
        sent[event.event_id] = time.time()  # wall clock, as the published records' stamps
        producer.poll(0)
    producer.flush(30)
    cpu = probe.stop(total - warm)
    deadline = time.monotonic() + 30
    while len(seen.keys() & sent.keys()) < total - warm and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    reader.join(5)
    consumer.close()
    lat = [(seen[e] - t) * 1000 for e, t in sent.items() if e in seen]
    if not lat:
        raise RuntimeError("no latency samples: nothing reached customer.context")
    cold = [(seen[e] - t) * 1000 for e, t in warming.items() if e in seen]
    requested, forwarded = (
        first_stamps(bootstrap, internal_topic(settings, app_id, name), since_ms, _LATENCY_EVENT_ID)
        for name in ("identity-requests", "customer-ops")
    )
    return Latency(
        _delivered(lat, total - warm),
        hop_delays(sent, requested, forwarded, seen),
        cpu,
        _delivered(cold, warm) if warm else {},
        hosted,
    )


def _delivered(latencies_ms: list[float], offered: int) -> dict[str, float]:
    """p50, p95 and p99 of the events that arrived, and the share of ``offered`` they are."""
    return {**percentiles(latencies_ms), "delivered_pct": 100.0 * len(latencies_ms) / offered}


def _profile(worker: _Worker, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the worker: a flame graph (``.svg``) or collapsed stacks (other)."""
    return subprocess.Popen(
        py_spy_command(worker.proc.pid, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def py_spy_command(pid: int, out: Path) -> list[str]:
    """The py-spy command ``--profile`` runs against a worker."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    fmt = "flamegraph" if out.suffix == ".svg" else "raw"
    return [
        spy,
        "record",
        *("--pid", str(pid), "--output", str(out), "--rate", "200", "--format", fmt),
        # a sample does not pause the worker (paused at each of 200 samples a second, it
        # drained at a quarter of its speed, and the profile showed a slower worker)
        "--nonblocking",
        # only the thread holding the interpreter lock: the worker's threads (ingest,
        # librdkafka's, RocksDB's) wait for it most of the time, and without this their
        # waiting stacks fill the profile (docs/performance-history.md, session 21)
        "--gil",
    ]


def to_records(dataset: Dataset) -> list[tuple[bytes, bytes]]:
    """The dataset's events as raw-topic records (key: the event's first identifier)."""
    now = datetime.now(UTC)
    records = []
    for e in dataset.events:
        raw = RawEvent(
            event_id=e.event_id,
            channel=e.channel,
            source="bench",
            kind=e.kind,
            occurred_at=e.occurred_at,
            received_at=now,
            identifiers=e.identifiers,
        )
        records.append((e.identifiers[0].key.encode(), raw.model_dump_json().encode()))
    return records


#: Words of the chat-history messages (their content matters only by its size).
_WORDS = "the order shoes size return refund tracking parcel delivery late please help thanks"


def chat_history_records(
    customers: int, messages: int, seed: int, visits: int = 1
) -> list[tuple[bytes, bytes]]:
    """Customers with long chat histories, as raw-topic records: each sends ``messages``
    web-chat messages of ~300 characters (20 to a conversation). The journeys' customers
    have a few events without text, so their contexts stay small (a few KB); a contact
    centre's busiest customers weigh ~100x that, which is what a context cache bounded by
    count alone could not hold (docs/performance-history.md, session 15).

    ``visits`` 1: one customer after the other. More: each customer's messages come in
    that many visits, every customer's first visit before anyone's second (round-robin),
    so a customer comes back after all the others did: with more customers than the
    context cache holds, every visit after the first reads its context back from RocksDB
    (``omnistitch_context_cache_misses_total``). The messages are the same either way."""
    rnd, words = random.Random(seed), _WORDS.split()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    per_customer: list[list[tuple[bytes, bytes]]] = []
    for c in range(customers):
        email = f"chat{c}@example.com"
        key = f"email:{email}".encode()
        records: list[tuple[bytes, bytes]] = []
        per_customer.append(records)
        for i in range(messages):
            event = RawEvent(
                event_id=f"chat{c}-m{i}",
                channel=Channel.CHAT,
                source="bench",
                kind="message",
                occurred_at=start + timedelta(minutes=i),
                received_at=now,
                identifiers=[Identifier(type="email", value=email)],
                properties={
                    "conversation_id": f"chat{c}-{i // 20}",
                    "text": " ".join(rnd.choice(words) for _ in range(50))[:300],
                    "author": "customer" if i % 2 else "agent",
                },
            )
            records.append((key, event.model_dump_json().encode()))
    visits = max(1, min(visits, messages))
    return [
        record
        for v in range(visits)
        for records in per_customer
        for record in records[messages * v // visits : messages * (v + 1) // visits]
    ]


def run_pipeline(
    cfg: BenchConfig,
    records: list[tuple[bytes, bytes]],
    *,
    customers: int,
    workers: int = 1,
    recovery: bool = True,
    latency: bool = True,
    profile: Path | None = None,
    settings: dict[str, str] | None = None,
) -> PipelineFigures:
    """``workers`` processes of a fresh app (fresh topics, group and state) drain ``records``.

    The workers start first and the records are preloaded once every one of them is ready,
    so that all of them drain from the start (a worker joining later would find most of the
    topic consumed by the others). The drain is timed from the start of the preload until
    the context stage idles with every event through. Then, optionally: ``recovery`` wipes
    every worker's state and times their restart until all are ready again; ``latency``
    offers ``cfg.latency_rate`` events/s and times each to its published context.
    ``settings``: environment the workers get on top of the defaults.
    """
    settings = settings or {}
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    root = cfg.workdir / prefix.rstrip(".")
    ports = _free_ports(workers * 2)  # a worker's API, and its ingest process's metrics
    envs = [
        {
            "OMNISTITCH_BOOTSTRAP_SERVERS": cfg.bootstrap,
            "OMNISTITCH_TOPIC_PREFIX": prefix,
            "OMNISTITCH_APP_ID": prefix.rstrip(".") + "-app",
            "OMNISTITCH_STATE_DIR": str(root / f"state-{i}"),
            "OMNISTITCH_API_PORT": str(port),
            "OMNISTITCH_LOG_LEVEL": "WARNING",
            **settings,
        }
        for i, port in enumerate(ports[:workers])
    ]
    ingest_envs: list[dict[str, str] | None] = [
        {**env, "OMNISTITCH_API_PORT": str(port)} if cfg.ingest_process else None
        for env, port in zip(envs, ports[workers:], strict=True)
    ]
    states = [Path(env["OMNISTITCH_STATE_DIR"]) for env in envs]
    logs = [cfg.workdir / f"{prefix}worker-{i}.log" for i in range(workers)]
    ensure_topics(KafkaSettings(bootstrap_servers=cfg.bootstrap, topic_prefix=prefix))
    fleet = _Fleet(envs, logs, ingest_envs)
    try:
        fleet.start()
        _say(f"{workers} worker(s) starting on {prefix}; waiting until every one is ready")
        _wait("every worker ready", fleet.settled, cfg.timeout_s, fleet.workers)
        # The clock starts before the first record is written: the workers consume while
        # the preload runs (it is much faster than they are).
        probe = CpuProbe(
            {"worker": fleet.pids(), "broker": broker_pids(cfg.bootstrap), "bench": this_process()}
        )
        each = CpuProbe({str(i): [p.pid for p in w.procs] for i, w in enumerate(fleet.workers)})
        t0, cpu0, before = time.monotonic(), fleet.cpu_s(), fleet.stages()
        probe.start()
        each.start()
        spy = _profile(fleet.workers[0], profile) if profile is not None else None
        _say(f"preloading {len(records):,} events into {prefix}{RAW_EVENTS}")
        preload(cfg.bootstrap, prefix + RAW_EVENTS, records)
        _wait("first events", lambda: fleet.stages().get("ingest", 0) > 0, 120, fleet.workers)
        n = len(records)
        done_at: dict[str, float] = {}
        last_report = t0

        moved: list[float] = []  # the stages' counts at the last look: progress, or not
        #: The CPU up to the last time the drain looked done: the machine's, each worker's.
        shares: list[CpuShares] = []

        def drained() -> bool:
            nonlocal last_report
            stages = fleet.stages()
            moved[:] = [stages.get(k, 0.0) for k in ("ingest", "identity", "context", "dead")]
            now = time.monotonic()
            # Dead-lettered events leave at ingest; the identity stage resolves the rest.
            expect = {"ingest": n, "identity": n - stages.get("dead", 0)}
            for stage, count in expect.items():
                if stage not in done_at and stages.get(stage, 0) >= count:
                    done_at[stage] = now
            if now - last_report > 5:
                last_report = now
                counts = ", ".join(
                    f"{k} {v:,.0f}" for k, v in stages.items() if k not in _NOT_PROGRESS
                )
                _say(f"  {counts} of {n:,}")
            # The context stage sees each event once plus merge traffic: done once it idles.
            ctx = stages.get("context", 0)
            if "identity" in done_at and ctx >= expect["identity"]:
                shares[:] = [probe.stop(n), each.stop(n)]  # before the second confirming it
                time.sleep(1.0)
                if fleet.stages().get("context", 0) == ctx:
                    done_at["context"] = now
                    return True
            return False

        _wait(
            "the pipeline to drain",
            drained,
            cfg.timeout_s,
            fleet.workers,
            progress=lambda: tuple(moved),
        )
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            spy.wait(120)
            _say(f"profile: {profile}")
        seconds = done_at["context"] - t0
        cpu = fleet.cpu_s() - cpu0
        rocksdb_mb = sum(_dir_mb(state) for state in states)
        after = fleet.stages()
        rebalances = int(after.get("rebalances", 0) - before.get("rebalances", 0))
        if rebalances:
            _say(f"warning: {rebalances} rebalance(s) during the drain; its time includes them")
        figures = PipelineFigures(
            events=n,
            customers=customers,
            workers=workers,
            seconds=seconds,
            events_per_s=n / seconds,
            stage_events_per_s={s: n / (t - t0) for s, t in done_at.items()},
            cpu_us_per_event=cpu / n * 1e6,
            gc_us_per_event=(after.get("gc_s", 0) - before.get("gc_s", 0)) / n * 1e6,
            peak_rss_mb=fleet.peak_rss_mb(),
            ingest_peak_rss_mb=fleet.ingest_peak_rss_mb(),
            rocksdb_mb=rocksdb_mb,
            rocksdb_mb_per_million_customers=rocksdb_mb / customers * 1e6,
            rebalances=rebalances,
            context_cache_mb=after.get("context_cache_bytes", 0.0) / 2**20,
            context_cache_misses=int(
                after.get("context_cache_misses", 0) - before.get("context_cache_misses", 0)
            ),
            settings=settings,
            drain_cpu=shares[0],
            worker_cores=[c or 0.0 for c in shares[1].processes.values()],
            worker_loops=list(shares[1].main_threads.values()),
        )
        _say(f"drained: {figures.events_per_s:,.0f} ev/s with {workers} worker(s)")
        _say(f"drained: meanwhile {shares[0].summary()}")
        if recovery:
            fleet.stop()
            _say("recovery: wiping local state, restarting, timing until ready")
            for state in states:
                shutil.rmtree(state, ignore_errors=True)
            started = time.monotonic()
            fleet.start()
            _wait("recovery", fleet.ready, cfg.timeout_s, fleet.workers)
            figures.recovery_s = time.monotonic() - started
        if latency:
            measured = _latency(cfg, envs[0], records, fleet.pids())
            figures.latency_ms = measured.percentiles_ms
            figures.latency_warmup_ms = measured.warmup_ms
            figures.latency_hops_ms = measured.hops_ms
            figures.latency_cpu = measured.cpu
            figures.broker_partitions = measured.broker_partitions
        return figures
    finally:
        fleet.stop()
        if not cfg.keep_scratch:
            remove_scratch(cfg.bootstrap, prefix)
            shutil.rmtree(root, ignore_errors=True)


def _latency(
    cfg: BenchConfig, env: dict[str, str], records: list[tuple[bytes, bytes]], pids: list[int]
) -> Latency:
    _say(
        f"latency: offering {cfg.latency_rate}/s for {cfg.latency_warmup_s:g}s of warm-up, "
        f"then {cfg.latency_seconds:g}s measured"
    )
    base = [RawEvent.model_validate_json(v) for _, v in records[: min(len(records), 5000)]]

    def make(i: int) -> RawEvent:
        proto = base[i % len(base)]
        now = datetime.now(UTC)
        # Happening now, so it is the newest entry of its customer's timeline.
        return proto.model_copy(
            update={
                "event_id": f"lat-{i}-{proto.event_id}",
                "occurred_at": now,
                "received_at": now,
            }
        )

    measured = measure_latency(
        cfg.bootstrap,
        env,
        cfg.latency_rate,
        cfg.latency_seconds,
        make,
        pids,
        cfg.latency_warmup_s,
    )
    _say(f"latency: while offered, {measured.cpu.summary()}")
    if (note := broker_note(measured.cpu, measured.broker_partitions)) is not None:
        _say(f"latency: {note}")
    return measured


def scaling_note(
    one: PipelineFigures,
    scaled: PipelineFigures,
    without_standbys: PipelineFigures | None = None,
    rounds: Sequence[ScalingRound] = (),
) -> str | None:
    """Why ``scaled`` (N workers) fell short of the scaling floor over ``one`` (a worker):
    the machine had no room while one worker drained, or it had and the workers' own
    costs did, shown with and ``without_standbys`` (the same workers keeping no standby
    replicas, when drained). With several ``rounds`` the ratios are their medians, and
    the drains shown are the first round's. None: they reached it, or the drains' CPU was
    not seen."""
    ratio = (
        ScalingRound.median(rounds, "scaling") if rounds else scaled.events_per_s / one.events_per_s
    )
    if ratio >= SCALING_FLOOR or (c := one.drain_cpu) is None:
        return None
    room = machine_room(c)
    said = f"{ratio:.2f}x, under the floor's {SCALING_FLOOR}x"
    if room < SCALING_FLOOR:
        return (
            f"{said}: while one worker drained ({c.summary()}), "
            f"at the same CPU per event the machine's {c.cpus} cores carry at most "
            f"{room:.2f}x one worker's rate: the floor's condition, CPU the broker leaves "
            "for a second worker, does not hold here"
        )
    contended = _contention(one, scaled)
    ceiling = _ceiling(one, scaled)
    if ceiling is not None and ceiling < SCALING_FLOOR:
        assert scaled.drain_cpu is not None
        bound = (
            f"but not at the {scaled.workers} workers' cost per event: their drain kept the "
            f"machine {scaled.drain_cpu.busy_pct:.0f}% busy at "
            f"{scaled.events_per_s / one.events_per_s:.2f}x one worker's rate, so its cores "
            f"carry at most {ceiling:.2f}x (every process's CPU per event as in that drain: "
            "the workers', the broker's, the bench's), and the floor's condition does not "
            "hold here"
        )
        if contended is not None:
            bound += f"; {contended}: its cores were contended"
    elif contended is not None:
        assert scaled.drain_cpu is not None
        bound = (
            f"yet {contended}, the machine {scaled.drain_cpu.busy_pct:.0f}% busy: its cores "
            "were contended, and the workers' costs are what they used of them"
        )
    else:
        bound = "the workers' own costs bound it"
    text = (
        f"{said}, with room on the machine ({room:.2f}x one worker's rate at its CPU per "
        f"event; {c.busy_pct:.0f}% busy while it drained): {bound}. CPU per event "
        f"{one.cpu_us_per_event:,.0f} µs with one worker, {_costs(scaled)}"
    )
    if (w := without_standbys) is not None:
        bare = (
            ScalingRound.median(rounds, "scaling_without_standbys")
            if rounds
            else w.events_per_s / one.events_per_s
        )
        text += f"; without standby replicas {bare:.2f}x, {_costs(w)}"
    if len(rounds) > 1:
        text += f" (ratios: medians of {len(rounds)} rounds; CPU: the first round's)"
    return text + " (README, Performance)"


def _costs(drain: PipelineFigures) -> str:
    """``295 µs summed over 2; the 2 workers used 0.71 and 0.75 cores``, and their event
    loops' time on a CPU and waiting for one when seen (``; their event loops on a CPU /
    waiting for one 0.68 / 0.24 and 0.45 / 0.25 of the drain``)."""
    each = " and ".join(f"{w:.2f}" for w in drain.worker_cores) or "n/a"
    n = drain.workers
    text = f"{drain.cpu_us_per_event:,.0f} µs summed over {n}; the {n} workers used {each} cores"
    if (loops := drain.loops_seen) is not None:
        text += f"; their event loops on a CPU / waiting for one {_loops(loops)} of the drain"
    return text


def _ceiling(one: PipelineFigures, scaled: PipelineFigures) -> float | None:
    """The most the machine's cores carry, in multiples of one worker's rate, with every
    process spending on an event what it did while ``scaled`` drained (the N workers'
    room, times the rate they reached): None when that drain's CPU was not seen."""
    if scaled.drain_cpu is None:
        return None
    return scaled.events_per_s / one.events_per_s * machine_room(scaled.drain_cpu)


def _contention(one: PipelineFigures, scaled: PipelineFigures) -> str | None:
    """What the busiest worker's event loop waited for a CPU, against one worker's, when it
    waited a tenth of the drain or more: the cores were contended, busy or not (threads of
    the workers, the broker and the bench wake in bursts on few cores)."""
    loops, alone = scaled.loops_seen, one.loops_seen
    if loops is None or alone is None or scaled.drain_cpu is None:
        return None
    busiest = max(loops, key=lambda loop: loop.running + loop.waiting)
    if busiest.waiting < CONTENDED_LOOP_WAIT:
        return None
    return (
        f"the busiest worker's event loop waited for a CPU {busiest.waiting:.2f} of the "
        f"{scaled.workers} workers' drain (one worker's, {alone[0].waiting:.2f})"
    )


def _loops(loops: Sequence[MainThread]) -> str:
    """``0.68 / 0.24 and 0.45 / 0.25``"""
    return " and ".join(f"{loop.running:.2f} / {loop.waiting:.2f}" for loop in loops)


def broker_note(cpu: CpuShares, partitions: int | None) -> str | None:
    """What to say when the broker's JVM took more than ``JVM_HOUSEKEEPING_WARN_CORES``
    compiling and collecting while the load was offered (None: it did not)."""
    if cpu.jvm_housekeeping <= JVM_HOUSEKEEPING_WARN_CORES:
        return None
    hosted = "an unknown number of" if partitions is None else f"{partitions:,}"
    return (
        f"the broker's JVM spent {cpu.jvm_housekeeping:.2f} cores compiling and collecting: "
        "on this machine's cores the tail is partly the broker's (a broker just started "
        f"compiles for minutes; it hosts {hosted} partitions; README, Performance)"
    )


def run_bench(cfg: BenchConfig) -> BenchReport:
    """Run the baselines and the pipeline on the same broker, one after the other."""
    if not cfg.bootstrap:
        started = subprocess.run(
            [str(KAFKA_LAUNCHER), "start"], capture_output=True, text=True, check=True
        )
        cfg.bootstrap = started.stdout.strip().splitlines()[-1]
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    _say(f"generating {cfg.events:,} events for {cfg.customers:,} people (seed {cfg.seed})")
    records = to_records(generate(cfg.customers, cfg.events, cfg.seed))
    size = int(statistics.mean(len(v) for _, v in records))
    scratch = f"bench{uuid.uuid4().hex[:6]}."
    try:
        return _run_bench(cfg, records, size, scratch)
    finally:
        if not cfg.keep_scratch:
            remove_scratch(cfg.bootstrap, scratch)


def remove_scratch(bootstrap: str, prefix: str, timeout_s: float = 60.0) -> list[str]:
    """Delete the topics of one bench run (``prefix``: its public topics ``<prefix>...``
    and its app's internal ``<prefix minus the dot>-app-...``); returns their names. A
    topic the broker will not delete is reported, not raised: the figures are still good.
    """
    stem = prefix.rstrip(".")
    admin = AdminClient(client_config(KafkaSettings(bootstrap_servers=bootstrap)))
    try:
        listed = admin.list_topics(timeout=timeout_s).topics
        names = sorted(t for t in listed if t.startswith(stem))
        if not names:
            return []
        futures = admin.delete_topics(names, operation_timeout=timeout_s, request_timeout=timeout_s)
        for name, fut in futures.items():
            try:
                fut.result()
            except KafkaException as exc:
                _say(f"warning: scratch topic {name} not deleted: {exc}")
        deadline = time.monotonic() + timeout_s  # gone from the metadata, not only asked
        while set(names) & set(admin.list_topics(timeout=timeout_s).topics):
            if time.monotonic() > deadline:
                _say(f"warning: scratch topics of {stem} still listed after {timeout_s:.0f}s")
                break
            time.sleep(0.2)
    except KafkaException as exc:  # e.g. the broker went away: what failed the run says why
        _say(f"warning: scratch topics of {stem} not removed: {exc}")
        return []
    _say(f"removed {len(names)} scratch topics of {stem}")
    return names


def _run_bench(
    cfg: BenchConfig, records: list[tuple[bytes, bytes]], size: int, scratch: str
) -> BenchReport:
    settings = KafkaSettings(bootstrap_servers=cfg.bootstrap, topic_prefix=scratch)
    ensure_topics(settings, extra=[TopicSpec(scratch + "sink", settings.raw_partitions)])
    producer_rate = consumer_rate = None
    if cfg.java_baseline:
        _say(f"baseline 1: Kafka producer/consumer perf tools, {len(records):,} x {size} B")
        producer_rate, consumer_rate = kafka_perf(
            cfg.bootstrap, scratch + "sink", max(len(records), cfg.kafka_records), size
        )
    _say("baseline 2: Python confluent-kafka passthrough")
    preload(cfg.bootstrap, scratch + RAW_EVENTS, records)
    pass_rate, pass_cpu = python_passthrough(
        cfg.bootstrap, scratch + RAW_EVENTS, scratch + "sink", len(records)
    )
    _say("baseline 3: the domain code in-process (no Kafka, dicts for tables)")
    defaults = WorkerSettings.model_fields
    domain = run_domain(
        records,
        load_rules(None),
        load_context_policy(None, timeline_limit=defaults["timeline_limit"].default),
        partitions=settings.raw_partitions,
        batch=defaults["batch_max"].default,
        gc_gen0_threshold=defaults["gc_gen0_threshold"].default,
    )
    _say("omnistitch: one worker")
    figures = run_pipeline(cfg, records, customers=cfg.customers, profile=cfg.profile)
    ratios = {
        "pipeline_vs_passthrough": figures.events_per_s / pass_rate,
        "pipeline_vs_domain": figures.events_per_s / domain.events_per_s,
    }
    scaled = unreplicated = None
    rounds: list[ScalingRound] = []
    if cfg.workers > 1:
        scaled, unreplicated = _scaled_drains(cfg, records)
        rounds.append(ScalingRound.of(figures, scaled, unreplicated))
        for k in range(2, cfg.scaling_rounds + 1):
            _say(f"scaling round {k}/{cfg.scaling_rounds}: omnistitch, one worker")
            one = run_pipeline(cfg, records, customers=cfg.customers, recovery=False, latency=False)
            rounds.append(ScalingRound.of(one, *_scaled_drains(cfg, records)))
        for key in ("scaling", "scaling_without_standbys"):
            ratios[key] = ScalingRound.median(rounds, key)
        if len(rounds) > 1:
            each = ", ".join(f"{r.scaling:.2f}x" for r in rounds)
            _say(f"scaling: median {ratios['scaling']:.2f}x of {len(rounds)} rounds ({each})")
        if figures.drain_cpu is not None:
            ratios["machine_room"] = machine_room(figures.drain_cpu)
        if (note := scaling_note(figures, scaled, unreplicated, rounds)) is not None:
            _say(f"scaling: {note}")
    growth = []
    for i, customers in enumerate(cfg.growth, 1):
        events = customers * cfg.events_per_customer
        _say(f"growth {i}/{len(cfg.growth)}: {customers:,} customers, {events:,} events")
        grown = to_records(generate(customers, events, cfg.seed))
        growth.append(run_pipeline(cfg, grown, customers=customers, latency=False))
    history = []
    if (n := cfg.chat_history) > 0:
        chats = chat_history_records(n, cfg.chat_messages, cfg.seed, cfg.chat_visits)
        for extra in ({}, COUNT_ONLY_CACHE):
            _say(
                f"chat history: {n:,} customers x {cfg.chat_messages} messages "
                f"in {cfg.chat_visits} visit(s), {_named(extra)}"
            )
            history.append(
                run_pipeline(cfg, chats, customers=n, recovery=False, latency=False, settings=extra)
            )
    return BenchReport(
        machine={"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        config={k: str(v) for k, v in asdict(cfg).items()},
        kafka_producer_per_s=producer_rate,
        kafka_consumer_per_s=consumer_rate,
        python_passthrough_per_s=pass_rate,
        python_passthrough_cpu_us=pass_cpu,
        pipeline=figures,
        ratios=ratios,
        scaled=scaled,
        scaled_without_standbys=unreplicated,
        growth=growth,
        domain=domain,
        history=history,
        scaling_rounds=rounds,
    )


def _scaled_drains(
    cfg: BenchConfig, records: list[tuple[bytes, bytes]]
) -> tuple[PipelineFigures, PipelineFigures]:
    """``cfg.workers`` workers drain ``records``: with the default standby replicas, then
    with none (``NO_STANDBYS``)."""
    drains = []
    for extra in ({}, NO_STANDBYS):
        _say(f"omnistitch: {cfg.workers} workers, the same events, {_named(extra)}")
        drains.append(
            run_pipeline(
                cfg,
                records,
                customers=cfg.customers,
                workers=cfg.workers,
                recovery=False,
                latency=False,
                settings=extra,
            )
        )
    return drains[0], drains[1]


def _named(settings: dict[str, str]) -> str:
    """Settings on top of the defaults, as said in progress lines."""
    return " ".join(f"{k}={v}" for k, v in settings.items()) or "the defaults"


def to_json(report: BenchReport) -> str:
    return json.dumps(asdict(report), indent=2, default=str)
