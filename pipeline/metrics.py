"""The worker's Prometheus metrics (served at ``/metrics`` by the query API)."""

from __future__ import annotations

import collections
import itertools
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from pipeline.context_state import Event
from pipeline.intake import WireEvent
from schemas.events import RawEvent

STAGE_EVENTS = Counter(
    "omnistitch_stage_messages_total", "Messages a pipeline stage processed.", ["stage"]
)
#: The stages' children, bound once: ``labels()`` costs a lock and a dict lookup per call.
INGEST_MESSAGES = STAGE_EVENTS.labels("ingest")
IDENTITY_MESSAGES = STAGE_EVENTS.labels("identity")
CONTEXT_MESSAGES = STAGE_EVENTS.labels("context")
#: Records a stage's consumer dropped to keep its partitions in offset order
#: (pipeline/offset_order.py): ``gap`` (records before it missing: read again from there),
#: ``seen`` (taken already). Anything but 0 means faust lost records on the way.
STAGE_RECORDS_DROPPED = Counter(
    "omnistitch_stage_records_dropped_total",
    "Stage records dropped to keep each partition in offset order (read again from the gap).",
    ["reason"],
)
#: Times a stage partition was read again from its first missing offset: ``gap`` (a
#: later record came first), ``stall`` (records fetched past it never reached the stage).
STAGE_REREADS = Counter(
    "omnistitch_stage_rereads_total",
    "Times a stage partition was read again from the first record its stage had not taken.",
    ["cause"],
)
STALL_REREADS = STAGE_REREADS.labels("stall")
GAP_REREADS = STAGE_REREADS.labels("gap")
GAP_DROPS = STAGE_RECORDS_DROPPED.labels("gap")
SEEN_DROPS = STAGE_RECORDS_DROPPED.labels("seen")
DEAD_LETTERS = Counter(
    "omnistitch_dead_letters_total", "Records sent to a dead-letter topic.", ["stage", "reason"]
)
CUSTOMERS_CREATED = Counter(
    "omnistitch_identity_customers_created_total", "New customers minted by the identity stage."
)
MERGES = Counter("omnistitch_identity_merges_total", "Customers merged into an older customer.")
SPLITS = Counter(
    "omnistitch_identity_splits_total",
    "Customers split: by an operator, or un-merged by quarantining a hub.",
    ["reason"],
)
TRIGGERS = Counter(
    "omnistitch_engagement_triggers_total",
    "Proactive-engagement triggers emitted to engagement.triggers.",
    ["rule"],
)
ERASURES = Counter("omnistitch_identity_erasures_total", "Customers erased on request.")
REJECTED_LINKS = Counter(
    "omnistitch_identity_rejected_links_total",
    "Identifiers the guard rails kept out of a match.",
    ["reason"],
)
QUARANTINES = Counter("omnistitch_identity_quarantines_total", "Identifiers quarantined as hubs.")
ORPHANED_OWNERS = Counter(
    "omnistitch_identity_orphaned_owners_total",
    "Identifiers found owned by a customer with no node, resolved as unowned: part of an "
    "identity batch's writes landed before a crash.",
)
SUPPRESSED = Counter(
    "omnistitch_identity_suppressed_identifiers_total",
    "Identifiers dropped because their person was erased.",
)
FAILED_REQUESTS = Counter(
    "omnistitch_identity_failed_requests_total",
    "Operator requests that named no such customer or link.",
    ["op"],
)
CONTEXT_CACHE_MISSES = Counter(
    "omnistitch_context_cache_misses_total",
    "Contexts the context stage read from RocksDB and parsed, not found in its cache.",
)
EVENTS_IN = Counter(
    "omnistitch_events_in_total",
    "Raw events the ingest stage decoded, by channel and source topic.",
    ["channel", "topic"],
)
EVENTS_OUT = Counter(
    "omnistitch_events_out_total",
    "Events published in a customer view, by channel and view topic.",
    ["channel", "topic"],
)
#: A bucket bound as prometheus_client writes it in ``le`` (untyped there).
_le: Callable[[float], str] = floatToGoString


class BatchHistogram(Collector):
    """A labelled histogram observed a batch of values at a time, exposed exactly as a
    ``prometheus_client.Histogram`` is (``_bucket``, ``_count``, ``_sum``).

    ``Histogram.observe`` takes two locks and walks the buckets for every value: 4 to 8 µs
    an event at the end of the context stage, measured. This places a batch's values with
    ``bisect`` and adds them under one lock."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self._bounds = sorted(float(b) for b in buckets)
        self._les = [*(_le(b) for b in self._bounds), "+Inf"]
        self._counts: dict[tuple[str, ...], list[int]] = {}
        self._sums: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe(self, labels: tuple[str, ...], values: Iterable[float]) -> None:
        bounds = self._bounds
        counts = [0] * (len(bounds) + 1)
        total = 0.0
        for value in values:
            counts[bisect_left(bounds, value)] += 1  # the first bucket with value <= le
            total += value
        with self._lock:
            mine = self._counts.setdefault(labels, [0] * len(counts))
            for i, n in enumerate(counts):
                mine[i] += n
            self._sums[labels] = self._sums.get(labels, 0.0) + total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            rows = [(k, list(v), self._sums[k]) for k, v in self._counts.items()]
        for labels, counts, total in rows:
            cumulative = itertools.accumulate(counts)
            family.add_metric(list(labels), list(zip(self._les, cumulative, strict=True)), total)
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


END_TO_END_SECONDS = BatchHistogram(
    "omnistitch_end_to_end_latency_seconds",
    "From the connector's receipt of an event (received_at) to its customer view published.",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600),
)


GC_SECONDS = Counter(
    "omnistitch_gc_seconds_total",
    "Time in CPython's cyclic garbage collector, by generation (0 youngest, 2 full).",
    ["generation"],
)


def gc_spent(generation: int, seconds: float) -> None:
    GC_SECONDS.labels(str(generation)).inc(seconds)


HEAP_TRIM_SECONDS = Counter(
    "omnistitch_heap_trim_seconds_total",
    "Time spent returning the freed heap to the OS (glibc's malloc_trim).",
)
HEAP_TRIM_RELEASED = Counter(
    "omnistitch_heap_trim_released_bytes_total",
    "Resident memory the heap trims gave back to the OS.",
)


def heap_trimmed(seconds: float, released: int) -> None:
    HEAP_TRIM_SECONDS.inc(seconds)
    HEAP_TRIM_RELEASED.inc(released)


def events_in(events: Iterable[tuple[str, RawEvent | WireEvent]]) -> None:
    """Count decoded raw events (source topic, event): one increment per label set."""
    counts = collections.Counter((event.channel.value, topic) for topic, event in events)
    for labels, n in counts.items():
        EVENTS_IN.labels(*labels).inc(n)


def events_out(topic: str, events: Iterable[RawEvent | Event], now: datetime | None = None) -> None:
    """Count events whose customer view was published, and observe each one's end-to-end
    latency (a connector clock ahead of the worker's counts as 0)."""
    at = (now or datetime.now(UTC)).timestamp()
    latencies: dict[str, list[float]] = {}
    for event in events:
        seconds = at - event.received_at.timestamp()
        latencies.setdefault(event.channel.value, []).append(seconds if seconds > 0 else 0.0)
    for channel, values in latencies.items():
        EVENTS_OUT.labels(channel, topic).inc(len(values))
        END_TO_END_SECONDS.observe((channel,), values)


REPLAYED_RECORDS = Counter(
    "omnistitch_changelog_replay_records_total",
    "Changelog records the replay thread applied to table partitions' databases "
    "(pipeline/changelog_replay.py): standby copies of peers' partitions, and partitions "
    "this worker owns restored before its stages use them.",
    ["kind"],
)
