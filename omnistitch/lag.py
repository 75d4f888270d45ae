"""Consumer lag, computed from offsets read on the broker (pure: no I/O here).

Lag is a fact about the broker, not about a worker: for each partition a group reads,

    lag (records) = log-end offset - the group's committed offset

so it stays visible, and keeps growing, while every worker of the group is stuck or dead.
Partitions the group has never committed count from the log-start offset, where a worker
with ``auto.offset.reset=earliest`` would begin; a committed offset already deleted by
retention counts from the log start too (those records can no longer be read).

Lag in seconds is estimated from the oldest unconsumed record: ``now`` minus the
timestamp of the record at the committed offset (its producer's ``CreateTime``; for
``raw.events`` the connector's publish time). It is 0 for a partition without lag, and
unknown (not exported) when the record could not be fetched in time.

:mod:`omnistitch.lag_probe` reads the offsets and timestamps through the admin API and a
consumer; this module turns them into :class:`PartitionLag` rows and Prometheus metric
families.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

LAG_RECORDS = "omnistitch_consumer_lag_records"
LAG_SECONDS = "omnistitch_consumer_lag_seconds"
COMMITTED_OFFSET = "omnistitch_consumer_committed_offset"
END_OFFSET = "omnistitch_consumer_end_offset"
POLL_ERRORS = "omnistitch_lag_poll_errors"  # a counter: exposed with the _total suffix
LAST_POLL = "omnistitch_lag_last_poll_timestamp_seconds"
POLL_DURATION = "omnistitch_lag_poll_duration_seconds"

_PARTITION_LABELS = ["group", "topic", "partition"]


@dataclass(frozen=True, order=True)
class Partition:
    """A topic partition."""

    topic: str
    partition: int


@dataclass(frozen=True)
class GroupOffsets:
    """What the broker said about one consumer group's partitions at one moment."""

    group: str
    committed: Mapping[Partition, int]  # only partitions the group committed
    start: Mapping[Partition, int]  # log-start offsets
    end: Mapping[Partition, int]  # log-end offsets (the next offset to be written)


@dataclass(frozen=True)
class PartitionLag:
    """One partition's lag for one group."""

    group: str
    partition: Partition
    committed: int | None
    position: int  # where the group resumes: the committed offset, or the log start
    end: int
    records: int
    seconds: float | None = None


@dataclass(frozen=True)
class LagSnapshot:
    """The lag of every watched group, as of ``taken_at`` (UNIX seconds)."""

    taken_at: float
    lags: tuple[PartitionLag, ...]
    duration_s: float = 0.0


def compute_lag(offsets: GroupOffsets) -> list[PartitionLag]:
    """The lag of every partition with a known log end, ordered by topic and partition."""
    rows = []
    for tp in sorted(offsets.end):
        end = offsets.end[tp]
        start = min(offsets.start.get(tp, 0), end)
        committed = offsets.committed.get(tp)
        position = start if committed is None else min(max(committed, start), end)
        rows.append(
            PartitionLag(
                group=offsets.group,
                partition=tp,
                committed=committed,
                position=position,
                end=end,
                records=end - position,
            )
        )
    return rows


def watched_topics(committed: Iterable[Partition], expected: Iterable[str]) -> list[str]:
    """The topics to report for a group: those it committed on, and those it should read."""
    return sorted({tp.topic for tp in committed} | set(expected))


def sample_plan(lags: Iterable[PartitionLag], limit: int) -> list[tuple[Partition, int]]:
    """The records to fetch for lag in seconds: each lagging (partition, position) once,
    most lagging first, at most ``limit`` of them."""
    plan: dict[tuple[Partition, int], None] = {}
    for lag in sorted((lag for lag in lags if lag.records > 0), key=lambda lag: -lag.records):
        if len(plan) >= limit:
            break
        plan[(lag.partition, lag.position)] = None
    return list(plan)


def with_seconds(
    lags: Sequence[PartitionLag], oldest: Mapping[tuple[Partition, int], float], now: float
) -> list[PartitionLag]:
    """Fill in ``seconds``: 0 without lag; else ``now`` minus the timestamp of the record at
    the group's position (``oldest[(partition, position)]``, UNIX seconds), if it is known."""
    out = []
    for lag in lags:
        seconds: float | None = 0.0
        if lag.records > 0:
            ts = oldest.get((lag.partition, lag.position))
            seconds = None if ts is None else max(0.0, now - ts)
        out.append(replace(lag, seconds=seconds))
    return out


def describe_families() -> list[Metric]:
    """Empty families naming every metric :func:`lag_families` can yield (for registries)."""
    return [
        GaugeMetricFamily(LAG_RECORDS, "", labels=_PARTITION_LABELS),
        GaugeMetricFamily(LAG_SECONDS, "", labels=_PARTITION_LABELS),
        GaugeMetricFamily(COMMITTED_OFFSET, "", labels=_PARTITION_LABELS),
        GaugeMetricFamily(END_OFFSET, "", labels=_PARTITION_LABELS),
        CounterMetricFamily(POLL_ERRORS, "", labels=[]),
        GaugeMetricFamily(LAST_POLL, ""),
        GaugeMetricFamily(POLL_DURATION, ""),
    ]


def lag_families(snapshot: LagSnapshot | None, errors: int) -> Iterator[Metric]:
    """Prometheus metric families for a snapshot (None: nothing read yet, or too old)."""
    errors_family = CounterMetricFamily(
        POLL_ERRORS, "Failed reads of consumer group offsets from the broker."
    )
    errors_family.add_metric([], errors)
    yield errors_family
    if snapshot is None:
        return
    records = GaugeMetricFamily(
        LAG_RECORDS,
        "Records behind: log-end offset minus the group's committed offset (from the broker).",
        labels=_PARTITION_LABELS,
    )
    seconds = GaugeMetricFamily(
        LAG_SECONDS,
        "Age of the oldest unconsumed record (0 without lag).",
        labels=_PARTITION_LABELS,
    )
    committed = GaugeMetricFamily(
        COMMITTED_OFFSET,
        "Where the group resumes: its committed offset, or the log start if it has none.",
        labels=_PARTITION_LABELS,
    )
    end = GaugeMetricFamily(
        END_OFFSET, "Log-end offset of a partition the group reads.", labels=_PARTITION_LABELS
    )
    for lag in snapshot.lags:
        labels = [lag.group, lag.partition.topic, str(lag.partition.partition)]
        records.add_metric(labels, lag.records)
        committed.add_metric(labels, lag.position)
        end.add_metric(labels, lag.end)
        if lag.seconds is not None:
            seconds.add_metric(labels, lag.seconds)
    last = GaugeMetricFamily(LAST_POLL, "When the offsets were last read (UNIX time).")
    last.add_metric([], snapshot.taken_at)
    duration = GaugeMetricFamily(POLL_DURATION, "How long the last read of the offsets took.")
    duration.add_metric([], snapshot.duration_s)
    yield from (records, seconds, committed, end, last, duration)
