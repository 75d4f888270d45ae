"""The table rows a stage batch changed, written the way faust writes a row, once per batch.

faust writes a table row in three steps: a RocksDB put, a changelog record sent through its
producer buffer and aiokafka, and, when the broker acknowledges that record, a second
RocksDB put of the changelog offset (``set_persisted_offset``, from which a restarted worker
resumes recovery). Per row that cost ~100 µs of Python in a busy worker, and a batch writes
about two rows per event. :class:`TableWriter` does the same three steps per stage batch:

1. :meth:`put` stages a row (a value, or ``None`` to remove it) for one table partition;
2. :meth:`write` (at the end of each partition's part of the batch) writes its staged rows to
   that partition's RocksDB in one ``WriteBatch`` (without RocksDB's write-ahead log: the
   changelog is the log) and produces their changelog records
   with confluent-kafka (idempotent, ``acks=all``), the same key and value bytes faust
   would have stored and sent;
3. :meth:`commit` (where faust flushes its own producer, right before it commits the
   stages' input offsets) flushes the producer, raises if any record was not
   acknowledged, and then sets each partition's persisted changelog offset once.

A crash before 3 leaves RocksDB ahead of the changelogs, exactly as faust can; the worker
then wipes local state on its next start (an unclean stop, ``pipeline/state_dir.py``) and
recovers the tables from the changelogs, and the stage re-runs the batch (at-least-once,
every handler idempotent). Only the stage that owns a table partition writes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, cast

import faust
import rocksdict
from confluent_kafka import KafkaError, Message, Producer
from faust.stores.rocksdb import Store
from faust.streams import current_event
from faust.types import TP

#: How long one commit may wait for the broker's acknowledgements.
FLUSH_TIMEOUT_S = 60.0


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
    """Changelog records were not acknowledged: the batch must not be acked."""


class _NotStaged:
    def __repr__(self) -> str:
        return "NOT_STAGED"


NOT_STAGED: Final = _NotStaged()

Table = faust.types.TableT[Any, Any]


def _store(table: Table) -> Store:
    """The RocksDB store under a faust table (every worker table is one)."""
    return cast(Store, table.data)


class TableWriter:
    """Rows staged per table partition, written and changelogged once per batch.

    One per stage, with its own producer: a commit flushes and accounts for its own
    stage's records only, its rows and the customer ops it sends on (:meth:`send`).
    """

    def __init__(self, producer: Callable[[], Producer]) -> None:
        self._producer_factory = producer
        self._producer: Producer | None = None
        self._staged: dict[tuple[Table, int], dict[bytes, bytes | None]] = {}
        # Filled by delivery reports (on whichever thread serves them), never replaced: a
        # report that comes late still lands. A delivery error is fatal to the worker.
        self._ends: dict[tuple[Table, int], int] = {}
        self._errors: list[str] = []
        self._persisted: dict[tuple[Table, int], int] = {}

    @property
    def producer(self) -> Producer:
        if self._producer is None:  # lazily: a Pipeline built only to be inspected (tests)
            self._producer = self._producer_factory()  # never connects
        return self._producer

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is in flight (bounded) and release the producer and its connections."""
        if self._producer is not None:
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
        """Write the rows staged for ``partition`` to RocksDB and produce their changelog
        records (not yet flushed); returns how many."""
        written = 0
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
            for key, value in rows.items():
                self._produce(topic, partition, key, value, self._delivered(slot))
            written += len(rows)
        return written

    async def commit(self) -> None:
        """Every record produced so far acknowledged (or raise), then the persisted
        changelog offset of each partition they reached set, as faust sets it per row.

        Called where faust flushes its own producer, right before it commits the input
        offsets (``Pipeline`` hooks it there), not per batch: rows of a batch still in
        hand may be staged meanwhile, and are flushed by a later commit, before their
        batch's offsets are."""
        if self._producer is None:
            return
        unsent = await asyncio.to_thread(self._producer.flush, FLUSH_TIMEOUT_S)
        if unsent or self._errors:
            raise TableWriteError(
                f"{unsent} changelog record(s) unacknowledged after {FLUSH_TIMEOUT_S:.0f}s; "
                f"delivery errors: {self._errors[:3]}"
            )
        for slot, offset in list(self._ends.items()):
            if self._persisted.get(slot) != offset:
                table, partition = slot
                topic = table.changelog_topic.get_topic_name()
                _store(table).set_persisted_offset(TP(topic, partition), offset)
                self._persisted[slot] = offset

    def send(self, topic: str, partition: int, value: bytes) -> None:
        """Produce a record of the stage's own output (its customer ops, not a row), to be
        acknowledged by the next :meth:`commit` with the rows: the stage's input offsets
        are committed only after it."""
        self._produce(topic, partition, None, value, self._sent)

    def _sent(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._errors.append(str(err))

    # -- producing ---------------------------------------------------------------------------
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
