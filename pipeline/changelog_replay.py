"""Table partitions' databases brought up to their changelogs by a librdkafka consumer on
a thread of its own, off the event loop: a worker's standby copies and the partitions it
restores.

A standby copy is a table partition's RocksDB database kept close behind the partition's
changelog on a worker that does not own the partition, so that taking it over (a peer
worker stopped or crashed) replays seconds of changelog, not all of it; a partition a
worker starts to own with less in its database than its changelog holds (a fresh or wiped
state directory, a partition new to it) is restored from the changelog before the stages
use it. faust does both by fetching the changelogs with aiokafka on the event loop and
handing each record, one at a time, through its conductor and recovery loop: with two
workers, the standby replay was ~40% of the interpreter lock's samples of the worker that
does not hold the identity partition (docs/performance-history.md, sessions 21 and 22).
:class:`ChangelogReplay` does the same work off the loop: librdkafka fetches (in C, off
the lock), ``consume`` hands over a batch of records at once, and each partition's records
of the batch go to its database in one ``WriteBatch``, without the write-ahead log (the
changelog is the log), together with the offset faust resumes from (``__faust\\0offset__``,
what faust's own replay writes). Data and offset go in the same batch, so a database never
claims records it does not hold.

The order, for each batch:

1. ``consume`` up to ``batch`` records of the partitions followed;
2. under the lock: if :meth:`follow` changed the partitions since they were assigned,
   drop the batch (step 4 re-fetches what it dropped);
3. each record at or past the partition's next offset goes into its partition's
   ``WriteBatch`` (a tombstone deletes the key), with the last offset applied; each
   ``WriteBatch`` is written;
4. (at the next step) a changed set is assigned: a partition followed before into the same
   database from where the thread got to, any other from the offset it was given.

:meth:`follow` and :meth:`hold` take the same lock, so once they return no write is under
way and none follows to a partition outside the new set: the faust side
(``pipeline/table_recovery.py``) holds the thread at the start of a rebalance, before
faust closes the databases it no longer needs, and hands a partition it restored back to
faust's recovery the same way.

An unexpected error ends the worker (``stage_failed``): a standby that stopped silently
would turn the next failover into a full recovery nobody expects.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, cast

import rocksdict
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from pipeline import metrics as m
from pipeline.stage_failure import stage_failed
from pipeline.table_writer import NO_WAL

#: The key under which faust's RocksDB store keeps a partition's last applied changelog
#: offset (``faust.stores.rocksdb.Store.offset_key``); recovery resumes after it.
OFFSET_KEY: Final = b"__faust\0offset__"

#: Records taken from librdkafka at once.
BATCH_RECORDS: Final = 2_000
#: How long one ``consume`` waits for records when there are none.
POLL_S: Final = 0.2
#: How often the thread reads the partitions' high watermarks (for :attr:`remaining`).
WATERMARKS_EVERY_S: Final = 1.0

TP = tuple[str, int]


class Database(Protocol):
    """What the replay needs of a partition's database (a ``rocksdict.Rdict``)."""

    def write(self, write_batch: rocksdict.WriteBatch, write_opt: Any = ...) -> None: ...


@dataclass
class Follow:
    """One table partition to bring up to its changelog: its changelog partition, its
    database, the first changelog offset not yet in it (None: from the beginning), whether
    it is a standby copy or a partition the worker owns (``active``: restored), and the
    last offset to apply (None: all there are; a restore stops at the end faust read)."""

    topic: str
    partition: int
    db: Database
    next_offset: int | None
    kind: Literal["standby", "active"] = "standby"
    until: int | None = None

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)


@dataclass
class _Assigned:
    """The partitions the consumer was last assigned, with each one's next offset."""

    version: int = -1
    follows: dict[TP, Follow] = field(default_factory=dict)


class ChangelogReplay:
    """Keeps the databases of the partitions given to :meth:`follow` behind their changelogs."""

    def __init__(
        self,
        consumer_config: dict[str, Any],
        *,
        batch: int = BATCH_RECORDS,
        poll_s: float = POLL_S,
        on_failure: Callable[[str], object] = stage_failed,
    ) -> None:
        self._config = {
            # a group id librdkafka asks for; the consumer never joins it (assign only)
            "group.id": f"omnistitch-changelog-replay-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # bounded prefetch: a worker keeps copies of most of its peers' partitions
            "queued.max.messages.kbytes": 8_192,
            **consumer_config,
        }
        self._batch = batch
        self._poll_s = poll_s
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._wanted: dict[TP, Follow] = {}
        self._version = 0
        self._assigned = _Assigned()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._watermarks_at = 0.0
        #: Records the followed partitions' changelogs hold past their copies (as of the
        #: last watermark read, at most a second old).
        self.remaining = 0
        #: Records applied since the start.
        self.applied = 0

    # -- called from the event loop ---------------------------------------------------------
    def follow(self, follows: Iterable[Follow]) -> None:
        """Follow exactly these partitions from now on. Once it returns, nothing is
        written to a partition outside them."""
        wanted = {f.tp: f for f in follows}
        with self._lock:
            self._wanted = wanted
            self._version += 1

    def hold(self) -> None:
        """Write nothing until the next :meth:`follow` (a rebalance is under way)."""
        self.follow(())

    def position(self, topic: str, partition: int) -> int | None:
        """The next offset the thread will apply to a partition of the current set; None
        until the thread has taken the set (or for a partition outside it)."""
        with self._lock:
            if self._assigned.version != self._version:
                return None
            follow = self._assigned.follows.get((topic, partition))
            return None if follow is None else follow.next_offset

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="changelog-replay", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the batch under way is written (a clean stop then flushes the
        databases: ``pipeline.rocksdb_memory.Store.stop``)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise RuntimeError(f"the changelog replay did not stop within {timeout_s}s")

    # -- the thread -------------------------------------------------------------------------
    def new_consumer(self) -> Consumer:
        """The thread's consumer: assigned partitions only, never a group member."""
        return Consumer(self._config)

    def _run(self) -> None:
        try:
            consumer = self.new_consumer()
            try:
                while not self._stopping.is_set():
                    self.step(consumer)
            finally:
                consumer.close()
        except Exception:
            self._on_failure("changelog-replay")

    def step(self, consumer: Consumer) -> int:
        """One round of the module's order; returns the records applied."""
        self._reassign(consumer)
        if not self._assigned.follows:
            self._stopping.wait(self._poll_s)
            return 0
        records = consumer.consume(self._batch, self._poll_s)
        applied = self._apply(records)
        self._read_watermarks(consumer)
        return applied

    def _reassign(self, consumer: Consumer) -> None:
        with self._lock:
            if self._assigned.version == self._version:
                return
            # A partition followed before, the same way into the same database, goes on
            # from where the thread got to; any other (a standby copy now restored as the
            # worker's own, say) from the offset given. (Copies: the thread moves their
            # offsets, the caller's stay as given.)
            before = self._assigned.follows
            follows: dict[TP, Follow] = {}
            for tp, f in self._wanted.items():
                kept = before.get(tp)
                if kept is None or (kept.db, kept.kind, kept.until) != (f.db, f.kind, f.until):
                    kept = Follow(f.topic, f.partition, f.db, f.next_offset, f.kind, f.until)
                follows[tp] = kept
            self._assigned = _Assigned(self._version, follows)
            consumer.assign(
                [
                    TopicPartition(
                        f.topic,
                        f.partition,
                        OFFSET_BEGINNING if f.next_offset is None else f.next_offset,
                    )
                    for f in follows.values()
                ]
            )
            self._watermarks_at = 0.0

    def _apply(self, records: list[Any]) -> int:
        batches: dict[TP, tuple[Follow, rocksdict.WriteBatch]] = {}
        counts: dict[TP, int] = {}
        with self._lock:
            if self._assigned.version != self._version:
                return 0  # the set changed while these were fetched
            follows = self._assigned.follows
            for record in records:
                error = record.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                tp = (record.topic(), record.partition())
                follow = follows.get(tp)
                offset = record.offset()
                if follow is None or (
                    follow.next_offset is not None and offset < follow.next_offset
                ):
                    continue  # fetched for an earlier assignment, or applied already
                if follow.until is not None and offset > follow.until:
                    continue
                entry = batches.get(tp)
                if entry is None:
                    entry = batches[tp] = (follow, rocksdict.WriteBatch(raw_mode=True))
                    counts[tp] = 0
                value = record.value()
                if value is None:
                    entry[1].delete(record.key())
                else:
                    entry[1].put(record.key(), value)
                follow.next_offset = offset + 1
                counts[tp] += 1
            for follow, write_batch in batches.values():
                last = cast(int, follow.next_offset) - 1
                write_batch.put(OFFSET_KEY, str(last).encode())
                follow.db.write(write_batch, NO_WAL)
        applied = 0
        for tp, n in counts.items():
            m.REPLAYED_RECORDS.labels(batches[tp][0].kind).inc(n)
            applied += n
        self.applied += applied
        return applied

    def _read_watermarks(self, consumer: Consumer) -> None:
        now = time.monotonic()
        if now - self._watermarks_at < WATERMARKS_EVERY_S:
            return
        self._watermarks_at = now
        remaining = 0
        for follow in list(self._assigned.follows.values()):
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(follow.topic, follow.partition), cached=True
            )
            if high >= 0:
                remaining += max(0, high - (follow.next_offset or 0))
        self.remaining = remaining
