"""Reading consumer lag from the broker, periodically, for Prometheus.

* :class:`LagProbe` does the I/O of one reading: the groups' committed offsets (a
  consumer's ``committed()`` per group, which never joins the group), the partitions'
  log-start and log-end offsets
  (``list_offsets`` with ``OffsetSpec.earliest()``/``latest()``), and, for lag in seconds,
  the timestamp of the record at each lagging partition's committed offset.
* :class:`LagMonitor` repeats it on a daemon thread every ``interval_s`` and keeps the
  latest :class:`~omnistitch.lag.LagSnapshot`;
* :class:`LagCollector` exposes that snapshot to a Prometheus registry.

The cost of one reading is bounded: three admin requests whatever the number of groups
(the partitions of the named topics only, unless a group is watched without topics; then
the cluster's whole metadata), one ``committed()`` per group, and at most ``sample_limit``
record fetches through one long-lived consumer that never joins a group nor commits
(``assign`` at the committed offset, one small fetch per partition:
``queued.min.messages=1``, 64 KiB per partition, ``sample_timeout_s`` in total).
Partitions beyond the limit, or whose record did not arrive in time, have no lag-seconds
sample in that reading.

The lag itself is computed by :mod:`omnistitch.lag`; this module only reads offsets.

Why not the admin client's ``list_consumer_group_offsets``: librdkafka dereferences a
missing consumer group handle when that request meets ``NOT_COORDINATOR`` (a coordinator
moving or still loading), and the whole process segfaults (librdkafka#5040,
confluent-kafka-python#1982; seen here on a freshly started broker). A consumer's
``committed()`` takes the consumer-group code path, which retries instead. A group
watched without expected topics is read on every topic of the cluster (not internal ones).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from omnistitch.lag import (
    GroupOffsets,
    LagSnapshot,
    Partition,
    PartitionLag,
    compute_lag,
    describe_families,
    lag_families,
    sample_plan,
    watched_topics,
    with_seconds,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LagTarget:
    """A consumer group to watch, and topics to report even before it commits on them."""

    group: str
    topics: tuple[str, ...] = ()


class LagReader(Protocol):
    """Takes one reading of the targets' lag (:class:`LagProbe`, or a fake in tests)."""

    def read(self, targets: Sequence[LagTarget]) -> LagSnapshot: ...

    def close(self) -> None: ...


class LagProbe:
    """One admin client and one sampling consumer; :meth:`read` takes one reading."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        timeout_s: float = 10.0,
        sample_limit: int = 64,
        sample_timeout_s: float = 2.0,
    ) -> None:
        self._config = config
        self._timeout_s = timeout_s
        self._sample_limit = sample_limit
        self._sample_timeout_s = sample_timeout_s
        self._admin = AdminClient(config)
        self._consumer: Consumer | None = None
        self._readers: dict[str, Consumer] = {}

    def read(self, targets: Sequence[LagTarget]) -> LagSnapshot:
        """Read the lag of every target group; raises :class:`KafkaException` on failure."""
        started = time.monotonic()
        layout = self._layout(targets)
        committed = {t.group: self._committed(t.group, t.topics, layout) for t in targets}
        topics = {t.group: watched_topics(committed[t.group], t.topics) for t in targets}
        partitions = _partitions({name for names in topics.values() for name in names}, layout)
        start = self._offsets(partitions, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
        end = self._offsets(partitions, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        lags: list[PartitionLag] = []
        for target in targets:
            wanted = set(topics[target.group])
            mine = [p for p in end if p.topic in wanted]
            offsets = GroupOffsets(
                group=target.group,
                committed=committed[target.group],
                start={p: start[p] for p in mine if p in start},
                end={p: end[p] for p in mine},
            )
            lags.extend(compute_lag(offsets))
        plan = sample_plan(lags, self._sample_limit)
        oldest = self._timestamps(plan) if plan else {}
        now = time.time()
        return LagSnapshot(
            taken_at=now,
            lags=tuple(with_seconds(lags, oldest, now)),
            duration_s=time.monotonic() - started,
        )

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _layout(self, targets: Sequence[LagTarget]) -> dict[str, int]:
        """Partitions per topic, for the topics the targets name, from one request for
        those topics only; every topic of the cluster only when a target names none. A
        cluster's whole metadata is a Python object per topic and partition: with 1,500
        topics each reading cost ~22 ms of CPU per metadata request, taken from the
        worker's stages, and a reading made three."""
        names = {name for target in targets for name in target.topics}
        if not names or any(not target.topics for target in targets):
            metadata = self._admin.list_topics(timeout=self._timeout_s)
            return {
                name: len(topic.partitions)
                for name, topic in metadata.topics.items()
                if topic.error is None
            }
        layout = {}
        described = self._admin.describe_topics(
            TopicCollection(sorted(names)), request_timeout=self._timeout_s
        )
        for name, future in described.items():
            try:
                layout[name] = len(future.result().partitions)
            except KafkaException as exc:
                # A topic not created yet has no lag to report; it is watched once it is.
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
        return layout

    def _committed(
        self, group: str, topics: Sequence[str], layout: dict[str, int]
    ) -> dict[Partition, int]:
        names = set(topics) or {n for n in layout if not n.startswith("__")}
        wanted = [
            TopicPartition(name, p)
            for name, count in layout.items()
            if name in names
            for p in range(count)
        ]
        if not wanted:
            return {}
        found = self._group_reader(group).committed(wanted, timeout=self._timeout_s)
        return {
            Partition(tp.topic, tp.partition): tp.offset
            for tp in found
            if tp.error is None and tp.offset >= 0
        }

    def _group_reader(self, group: str) -> Consumer:
        """A consumer with the group's id that only ever asks for its committed offsets:
        it never subscribes (so never joins the group) and never commits."""
        reader = self._readers.get(group)
        if reader is None:
            reader = self._readers[group] = Consumer(
                {**self._config, "group.id": group, "enable.auto.commit": False}
            )
        return reader

    def _offsets(self, partitions: Sequence[Partition], spec: Any) -> dict[Partition, int]:
        if not partitions:
            return {}
        request = {TopicPartition(p.topic, p.partition): spec for p in partitions}
        futures = self._admin.list_offsets(request, request_timeout=self._timeout_s)
        out, failed = {}, []
        for tp, future in futures.items():
            try:
                out[Partition(tp.topic, tp.partition)] = future.result().offset
            except KafkaException as exc:
                # One unavailable partition must not hide the lag of all the others.
                failed.append(f"{tp.topic}[{tp.partition}]: {exc.args[0].name()}")
        if failed:
            log.warning("no offsets for %d partitions, e.g. %s", len(failed), failed[0])
        return out

    def _timestamps(
        self, plan: Sequence[tuple[Partition, int]]
    ) -> dict[tuple[Partition, int], float]:
        """The timestamp (UNIX seconds) of the record at each (partition, offset)."""
        consumer = self._sampler()
        found: dict[tuple[Partition, int], float] = {}
        deadline = time.monotonic() + self._sample_timeout_s
        pending = list(plan)
        while pending and time.monotonic() < deadline:
            # A partition can be assigned once at a time: one offset per partition per round.
            batch: dict[Partition, int] = {}
            rest = []
            for partition, offset in pending:
                if partition in batch:
                    rest.append((partition, offset))
                else:
                    batch[partition] = offset
            pending = rest
            consumer.assign([TopicPartition(p.topic, p.partition, o) for p, o in batch.items()])
            try:
                while batch and (left := deadline - time.monotonic()) > 0:
                    for msg in consumer.consume(num_messages=len(batch), timeout=min(left, 0.5)):
                        partition = Partition(str(msg.topic()), int(msg.partition() or 0))
                        if msg.error() is not None or partition not in batch:
                            continue
                        offset = batch.pop(partition)
                        kind, ms = msg.timestamp()
                        if kind != TIMESTAMP_NOT_AVAILABLE and ms >= 0:
                            found[(partition, offset)] = ms / 1000.0
            finally:
                consumer.unassign()
        return found

    def _sampler(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    **self._config,
                    # Never subscribes nor commits, so the group is never created.
                    "group.id": "omnistitch-lag-probe",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "earliest",
                    "queued.min.messages": 1,
                    "max.partition.fetch.bytes": 65536,
                    "fetch.max.bytes": 1048576,
                    "fetch.wait.max.ms": 100,
                }
            )
        return self._consumer


def _partitions(topics: Iterable[str], layout: dict[str, int]) -> list[Partition]:
    wanted = set(topics)
    return sorted(
        Partition(name, p) for name, count in layout.items() if name in wanted for p in range(count)
    )


class LagMonitor:
    """Takes a reading every ``interval_s`` on a daemon thread; keeps the latest one.

    A reading older than ``stale_after_s`` (default: three intervals, at least 5 s) is not
    exported: a lag that can no longer be read is absent rather than frozen, and
    :meth:`healthy` turns false (the broker is unreachable).
    """

    def __init__(
        self,
        probe: LagReader,
        targets: Sequence[LagTarget],
        interval_s: float,
        stale_after_s: float | None = None,
    ) -> None:
        self.probe = probe
        self.targets = list(targets)
        self.interval_s = interval_s
        self.stale_after_s = stale_after_s or max(3 * interval_s, 5.0)
        self.errors = 0
        self._latest: LagSnapshot | None = None
        self._read_at = float("-inf")  # time.monotonic() of the latest reading
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-monitor", daemon=True)

    def start(self) -> LagMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 15)
        self.probe.close()

    def poll_once(self) -> LagSnapshot | None:
        """Take one reading now; None (and one more error counted) if it failed."""
        try:
            snapshot = self.probe.read(self.targets)
        except Exception as exc:  # any failure of a reading is counted, never fatal
            self.errors += 1
            log.warning("reading consumer lag failed: %s", exc)
            return None
        self._latest, self._read_at = snapshot, time.monotonic()
        return snapshot

    @property
    def snapshot(self) -> LagSnapshot | None:
        """The latest reading, unless it is stale."""
        return self._latest if self.healthy() else None

    def healthy(self) -> bool:
        """True while the latest successful reading is recent (the broker answers)."""
        return time.monotonic() - self._read_at <= self.stale_after_s

    def collector(self) -> LagCollector:
        return LagCollector(self)

    def _run(self) -> None:
        while not self._stop.is_set():
            ok = self.poll_once() is not None
            # After a failure (a broker still loading its group coordinator, say) try again
            # soon rather than a whole interval later.
            self._stop.wait(self.interval_s if ok else min(self.interval_s, 1.0))


class LagCollector(Collector):
    """Exposes a :class:`LagMonitor`'s latest reading to a Prometheus registry."""

    def __init__(self, monitor: LagMonitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        return lag_families(self._monitor.snapshot, self._monitor.errors)

    def describe(self) -> Iterator[Metric]:
        return iter(describe_families())
