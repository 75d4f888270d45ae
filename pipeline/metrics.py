"""The worker's Prometheus metrics (served at ``/metrics`` by the query API)."""

from __future__ import annotations

import collections
import functools
from collections.abc import Iterable
from datetime import UTC, datetime

from prometheus_client import Counter, Histogram

from schemas.events import RawEvent

STAGE_EVENTS = Counter(
    "omnistitch_stage_messages_total", "Messages a pipeline stage processed.", ["stage"]
)
#: The stages' children, bound once: ``labels()`` costs a lock and a dict lookup per call.
INGEST_MESSAGES = STAGE_EVENTS.labels("ingest")
IDENTITY_MESSAGES = STAGE_EVENTS.labels("identity")
CONTEXT_MESSAGES = STAGE_EVENTS.labels("context")
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
SUPPRESSED = Counter(
    "omnistitch_identity_suppressed_identifiers_total",
    "Identifiers dropped because their person was erased.",
)
FAILED_REQUESTS = Counter(
    "omnistitch_identity_failed_requests_total",
    "Operator requests that named no such customer or link.",
    ["op"],
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
END_TO_END_SECONDS = Histogram(
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


def events_in(events: Iterable[tuple[str, RawEvent]]) -> None:
    """Count decoded raw events (source topic, event): one increment per label set."""
    counts = collections.Counter((event.channel.value, topic) for topic, event in events)
    for labels, n in counts.items():
        EVENTS_IN.labels(*labels).inc(n)


def events_out(topic: str, events: Iterable[RawEvent], now: datetime | None = None) -> None:
    """Count events whose customer view was published, and observe each one's end-to-end
    latency (a connector clock ahead of the worker's counts as 0)."""
    now = now or datetime.now(UTC)
    counts: collections.Counter[str] = collections.Counter()
    for event in events:
        channel = event.channel.value
        counts[channel] += 1
        _latency(channel).observe(max(0.0, (now - event.received_at).total_seconds()))
    for channel, n in counts.items():
        EVENTS_OUT.labels(channel, topic).inc(n)


@functools.cache
def _latency(channel: str) -> Histogram:
    return END_TO_END_SECONDS.labels(channel)  # a labelled child: looked up once, not per event
