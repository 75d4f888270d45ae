"""The table rows a stage batch changed, written the way faust writes a row, once per batch,
and changelogged only after the outputs the batch sent are acknowledged.

faust writes a table row in three steps: a RocksDB put, a changelog record sent through its
producer buffer and aiokafka, and, when the broker acknowledges that record, a second
RocksDB put of the changelog offset (``set_persisted_offset``, from which a restarted worker
resumes recovery). Per row that cost ~100 µs of Python in a busy worker, and a batch writes
about two rows per event. :class:`TableWriter` does the same steps per stage batch:

1. :meth:`put` stages a row (a value, or ``None`` to remove it) for one table partition;
2. :meth:`write` (at the end of each partition's part of the batch) writes its staged rows to
   that partition's RocksDB in one ``WriteBatch`` (without RocksDB's write-ahead log: the
   changelog is the log) and keeps their changelog records, the same key and value bytes
   faust would have stored and sent, with the batch;
3. :meth:`send` produces the batch's own outputs (its customer ops) with confluent-kafka
   (idempotent, ``acks=all``), and :meth:`after` adds one sent through faust's producer;
4. :meth:`seal` (when the batch has sent every output) queues the batch: its changelog
   records are produced once every output it sent is acknowledged, batches in order;
5. :meth:`commit` (where faust flushes its own producer, right before it commits the
   stages' input offsets) flushes the producer, produces the changelog records of every
   batch sealed before it, flushes again, raises if any record was not acknowledged, and
   then sets each partition's persisted changelog offset once.

**Outputs before state.** A changelog is what another worker recovers the table from, and
a stage resolves a re-delivered input against it: an identity merge already in
``identity-parents`` is not decided again, a merged-away context already removed is not
handed over again. Records to different partitions land independently, so a kill -9 could
land a batch's changelog records and lose the ops it decided (the merge op, the absorb
carrying a context): re-delivery would then send nothing, and the op was lost for good.
Held back until its outputs are acknowledged, a batch's state never reaches its
changelog without them; a crash before that leaves the old state in the changelog, and the
re-delivered batch decides and sends the same outputs again (every handler is idempotent).

A crash before 5 leaves RocksDB ahead of the changelogs, exactly as faust can; the worker
then wipes local state on its next start (an unclean stop, ``pipeline/state_dir.py``) and
recovers the tables from the changelogs, and the stage re-runs the batch (at-least-once).
Only the stage that owns a table partition writes it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, cast

import faust
import rocksdict
from confluent_kafka import KafkaError, Message, Producer
from faust.stores.rocksdb import Store
from faust.streams import current_event
from faust.types import TP

#: How long one commit may wait for the broker's acknowledgements.
FLUSH_TIMEOUT_S = 60.0

#: While sealed batches wait for their outputs' acknowledgements, how often the writer
#: serves delivery reports and releases what they acknowledged (nothing else polls its
#: producer between commits). A context batch that forwarded ops holds the view's records
#: of every batch after it until then: one linger and a broker round trip, ~2 ms here.
RELEASE_POLL_S = 0.001


def _without_wal() -> rocksdict.WriteOptions:
    options = rocksdict.WriteOptions()
    # A property at run time; rocksdict's stub declares it a method.
    options.disable_wal = True  # type: ignore[method-assign, assignment]
    return options


#: Rows are written without RocksDB's write-ahead log: the changelogs are the log. A
#: worker that stops uncleanly discards its local state (``pipeline/state_dir.py``), and a
#: clean stop flushes the memtables (``pipeline.rocksdb_memory.Store.stop``). Half the cost
#: of a batch's write (60 rows of 5 KB: 281-408 against 532-766 µs).
NO_WAL: Final = _without_wal()


def read_row(table: Table, key: str) -> Any:
    """``table.get(key)`` with fewer layers: in a stage (a current event), straight from the
    RocksDB of the event's partition, which is where faust's own read goes; elsewhere (the
    API) through the table. faust's path costs ~10 µs a read in sensors, managed-dict
    hooks and a ``key_may_exist`` check before the get."""
    event = current_event()
    if event is None:
        return table.get(key)
    store = _store(table)
    raw = store._db_for_partition(event.message.partition).get(store._encode_key(key))
    return None if raw is None else store._decode_value(raw)


class TableWriteError(RuntimeError):
    """Records (outputs or changelog) were not acknowledged: the batch must not be acked."""


class _NotStaged:
    def __repr__(self) -> str:
        return "NOT_STAGED"


NOT_STAGED: Final = _NotStaged()

Table = faust.types.TableT[Any, Any]


def _store(table: Table) -> Store:
    """The RocksDB store under a faust table (every worker table is one)."""
    return cast(Store, table.data)


#: A changelog record kept with its batch: topic, partition, key, value, delivery report.
_Record = tuple[str, int, bytes, bytes | None, Callable[[KafkaError | None, Message], None]]


@dataclass(eq=False)
class _Batch:
    """One stage batch: the changelog records of the rows it wrote, held until every output
    it sent is acknowledged."""

    records: list[_Record] = field(default_factory=list)
    sent: int = 0
    #: One entry per delivery report of an output (appended on whichever thread serves
    #: reports: an append is atomic, a counter's ``+=`` is not).
    reported: list[bool] = field(default_factory=list)
    #: Outputs sent through faust's producer (its futures resolve when acknowledged).
    waits: list[asyncio.Future[Any]] = field(default_factory=list)

    def acknowledged(self) -> bool:
        return len(self.reported) >= self.sent and all(
            w.done() and not w.cancelled() and w.exception() is None for w in self.waits
        )

    def empty(self) -> bool:
        return not (self.records or self.sent or self.waits)


#: Where a writer's sealed batches stood when a commit began (see :meth:`TableWriter.mark`).
Mark = int


class TableWriter:
    """Rows staged per table partition, written and changelogged once per batch, after
    the outputs the batch sent.

    One per stage, with its own producer: a commit flushes and accounts for its own
    stage's records only, its rows and the customer ops it sends on (:meth:`send`).
    """

    def __init__(self, producer: Callable[[], Producer]) -> None:
        self._producer_factory = producer
        self._producer: Producer | None = None
        self._staged: dict[tuple[Table, int], dict[bytes, bytes | None]] = {}
        self._batch = _Batch()  # the batch in hand: written, not sealed
        self._sealed: deque[_Batch] = deque()  # sealed, changelog records not produced yet
        self._seals = 0  # batches sealed since the start
        self._released = 0  # of which released, oldest first
        # Filled by delivery reports (on whichever thread serves them), never replaced: a
        # report that comes late still lands. A delivery error is fatal to the worker.
        self._ends: dict[tuple[Table, int], int] = {}
        self._errors: list[str] = []
        self._persisted: dict[tuple[Table, int], int] = {}
        self._watcher: asyncio.TimerHandle | None = None

    @property
    def producer(self) -> Producer:
        if self._producer is None:  # lazily: a Pipeline built only to be inspected (tests)
            self._producer = self._producer_factory()  # never connects
        return self._producer

    @property
    def unfinished(self) -> bool:
        """Rows written to RocksDB whose changelog records are not produced yet: a batch in
        hand, or one whose outputs are not acknowledged. Local state is then ahead of
        the changelogs (a stop now is not a clean one)."""
        return not self._batch.empty() or any(b.records for b in self._sealed)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is in flight (bounded), produce the changelog records of the sealed
        batches whose outputs it acknowledged, flush those, and release the producer."""
        if self._producer is not None:
            self._producer.flush(timeout_s)
            if self._release():
                self._producer.flush(timeout_s)
            self._producer = None

    def put(self, table: Table, partition: int, key: str, value: bytes | str | None) -> None:
        """Stage ``key`` of ``table`` (on ``partition``) to be ``value``, or removed (None)."""
        store = _store(table)
        encoded = None if value is None else store._encode_value(value)
        self._staged.setdefault((table, partition), {})[store._encode_key(key)] = encoded

    def staged(self, table: Table, partition: int, key: str) -> bytes | _NotStaged | None:
        """The value staged for ``key`` and not yet written (None: removed), else NOT_STAGED."""
        rows = self._staged.get((table, partition))
        if rows is None:
            return NOT_STAGED
        return rows.get(_store(table)._encode_key(key), NOT_STAGED)

    def write(self, partition: int) -> int:
        """Write the rows staged for ``partition`` to RocksDB and keep their changelog
        records with the batch in hand (produced after it is sealed and its outputs are
        acknowledged); returns how many."""
        written = 0
        records = self._batch.records
        for slot in [slot for slot in self._staged if slot[1] == partition]:
            table, _ = slot
            rows = self._staged.pop(slot)
            batch = rocksdict.WriteBatch(raw_mode=True)
            for key, value in rows.items():
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            # faust's own store API for a partition's database (what its recovery writes to).
            _store(table)._db_for_partition(partition).write(batch, NO_WAL)
            topic = table.changelog_topic.get_topic_name()
            delivered = self._delivered(slot)
            records.extend((topic, partition, key, value, delivered) for key, value in rows.items())
            written += len(rows)
        return written

    def send(self, topic: str, partition: int, value: bytes) -> None:
        """Produce a record of the stage's own output (its customer ops, not a row) now; the
        batch's changelog records wait for its acknowledgement, and the stage's input
        offsets are committed only after both."""
        batch = self._batch
        batch.sent += 1
        reported = batch.reported

        def sent(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self._errors.append(str(err))
            reported.append(err is None)

        self._produce(topic, partition, None, value, sent)

    def after(self, output: asyncio.Future[Any]) -> None:
        """The batch in hand also sent ``output`` (through faust's producer): its changelog
        records wait for that to be acknowledged too."""
        self._batch.waits.append(output)

    def seal(self) -> None:
        """The batch in hand has sent every output: queue it, and produce the changelog
        records of the sealed batches whose outputs are acknowledged, in order."""
        if not self._batch.empty():
            self._sealed.append(self._batch)
            self._seals += 1
            self._batch = _Batch()
        if not self._sealed:
            return
        if self._producer is not None:
            self._producer.poll(0)  # serve the delivery reports that have come in
        self._release()
        self._watch()

    def mark(self) -> Mark:
        """The batches sealed so far: a commit must release them. Taken before faust's
        producer is flushed, so that their outputs sent through it are flushed too; a batch
        sealed later (the loop runs stage batches while a commit waits) may still wait."""
        return self._seals

    async def commit(self, mark: Mark | None = None) -> None:
        """Every batch sealed by ``mark`` (default: now) released: its outputs acknowledged,
        then its changelog records produced and acknowledged (or raise); then the persisted
        changelog offset of each partition they reached set, as faust sets it per row.

        Called where faust flushes its own producer (so outputs sent through it are
        acknowledged already), right before it commits the input offsets (``Pipeline``
        hooks it there), not per batch: a batch still in hand may be written meanwhile, and
        is released by a later commit, before its offsets are committed."""
        upto = self.mark() if mark is None else mark
        if self._producer is None and not self._sealed:
            return
        await self._flush()
        self._release()
        if self._released < upto:
            raise TableWriteError(
                f"{upto - self._released} sealed batch(es) with outputs unacknowledged after "
                "the flush (sent through faust's producer, failed or pending)"
            )
        await self._flush()
        for slot, offset in list(self._ends.items()):
            if self._persisted.get(slot) != offset:
                table, partition = slot
                topic = table.changelog_topic.get_topic_name()
                _store(table).set_persisted_offset(TP(topic, partition), offset)
                self._persisted[slot] = offset

    # -- producing ---------------------------------------------------------------------------
    async def _flush(self) -> None:
        unsent = await asyncio.to_thread(self.producer.flush, FLUSH_TIMEOUT_S)
        if unsent or self._errors:
            raise TableWriteError(
                f"{unsent} record(s) unacknowledged after {FLUSH_TIMEOUT_S:.0f}s; "
                f"delivery errors: {self._errors[:3]}"
            )

    def _release(self) -> int:
        """Produce the changelog records of the sealed batches, oldest first, up to the first
        whose outputs are not all acknowledged; none once any record failed (the worker
        exits without committing). Returns how many records."""
        produced = 0
        sealed = self._sealed
        while sealed and not self._errors and sealed[0].acknowledged():
            self._released += 1
            for record in sealed.popleft().records:
                self._produce(*record)
                produced += 1
        return produced

    def _watch(self) -> None:
        """While sealed batches wait, look again in :data:`RELEASE_POLL_S` (on the running
        event loop; without one, the next seal or commit releases them)."""
        if not self._sealed or self._watcher is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._watcher = loop.call_later(RELEASE_POLL_S, self._look_again)

    def _look_again(self) -> None:
        self._watcher = None
        try:
            self.producer.poll(0)
            self._release()
        except Exception as exc:  # a timer's error would only be logged: the commit raises it
            self._errors.append(f"releasing changelog records: {exc!r}")
            raise
        self._watch()

    def _delivered(self, slot: tuple[Table, int]) -> Callable[[KafkaError | None, Message], None]:
        ends, errors = self._ends, self._errors

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                ends[slot] = max(ends.get(slot, -1), msg.offset() or 0)

        return delivered

    def _produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> None:
        producer = self.producer
        while True:
            try:
                producer.produce(topic, value, key, partition=partition, on_delivery=on_delivery)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
