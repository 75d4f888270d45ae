"""One RocksDB memory budget for every table partition a worker opens.

faust opens a RocksDB database per table partition (9 tables x 8 partitions = 72), and
gives each its own block cache and write buffers, so a worker's worst case grew with the
number of partitions it holds. Here all of them share one block cache and one write-buffer
manager whose memtables are charged to that cache: blocks (data, index and filter) and
memtables together stay within ``OMNISTITCH_ROCKSDB_CACHE_MB +
OMNISTITCH_ROCKSDB_WRITE_BUFFER_MB``, whatever the partition count.

The hook is a faust store driver: :class:`Store` is faust's RocksDB store with its
per-database options (:class:`SharedMemoryOptions`) applying the shared cache and
write-buffer manager. It is registered with faust through the ``faust.stores`` entry
point in pyproject.toml, under the URL scheme :data:`STORE_URL`, so nothing in faust is
patched (its one override: no full garbage collection on a rebalance that closes no
database, :meth:`Store.revoke_partitions`). The :class:`RocksDBMemory` a worker builds from
its settings reaches every store in the table's ``options``
(:meth:`RocksDBMemory.table_options`): faust hands those to each store it builds for a
table.
"""

from __future__ import annotations

from typing import Any

import rocksdict
from faust.exceptions import ImproperlyConfigured
from faust.stores import rocksdb as faust_rocksdb

from omnistitch.settings import WorkerSettings

#: The worker's ``store=`` URL (the ``faust.stores`` entry point in pyproject.toml).
STORE_URL = "omnistitch-rocksdb://"
#: The key of a table's ``options`` that carries the shared :class:`RocksDBMemory`.
MEMORY_OPTION = "omnistitch_rocksdb_memory"
MIB = 1024 * 1024


class RocksDBMemory:
    """The block cache and write-buffer budget shared by all of a worker's databases.

    The write-buffer manager charges memtables to the cache, so the cache holds both: its
    capacity is the two budgets added up, and memtables in use leave that much less room
    for blocks. Writes never stall on the budget (``allow_stall=False``): past it, the
    manager makes the database being written flush its memtables.
    """

    def __init__(self, *, cache_mb: int, write_buffer_mb: int) -> None:
        self.cache_bytes = cache_mb * MIB
        self.write_buffer_bytes = write_buffer_mb * MIB
        self.capacity = self.cache_bytes + self.write_buffer_bytes
        self.cache = rocksdict.Cache(self.capacity)
        self.write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            self.write_buffer_bytes, False, self.cache
        )

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> RocksDBMemory:
        return cls(
            cache_mb=settings.rocksdb_cache_mb, write_buffer_mb=settings.rocksdb_write_buffer_mb
        )

    def table_options(self, **per_database: Any) -> dict[str, Any]:
        """A table's ``options=``: faust's per-database options, plus this budget."""
        return {**per_database, MEMORY_OPTION: self}

    def apply(self, options: rocksdict.Options, *, bloom_bits: int) -> None:
        """Point ``options`` at the shared cache and write-buffer manager.

        The table format is faust's (a bloom filter, a binary-search index), with index
        and filter blocks kept in the cache so that they are bounded too (L0's pinned: the
        newest files are read most).
        """
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(bloom_bits, True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        table.set_block_cache(self.cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        options.set_block_based_table_factory(table)
        options.set_write_buffer_manager(self.write_buffers)


class SharedMemoryOptions(faust_rocksdb.RocksDBOptions):
    """faust's options for one database, with the worker's shared memory budget."""

    def __init__(self, memory: RocksDBMemory, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.memory = memory

    def as_options(self) -> rocksdict.Options:
        options: rocksdict.Options = super().as_options()
        self.memory.apply(options, bloom_bits=self.bloom_filter_size)
        return options


class Store(faust_rocksdb.Store):
    """faust's RocksDB table store, its databases sharing one :class:`RocksDBMemory`."""

    rocksdb_options: SharedMemoryOptions

    def __init__(
        self, url: Any, app: Any, table: Any, *, options: Any = None, **kwargs: Any
    ) -> None:
        # A copy: faust pops keys from the dict it keeps, and builds a second store from the
        # same table options (faust.tables.objects), which must find the budget there too.
        own = dict(options or {})
        memory = own.pop(MEMORY_OPTION, None)
        if not isinstance(memory, RocksDBMemory):
            raise ImproperlyConfigured(
                f"a {STORE_URL} table needs options=RocksDBMemory.table_options(...)"
            )
        super().__init__(url, app, table, options=own, **kwargs)
        if not self.use_rocksdict:
            raise ImproperlyConfigured(f"{STORE_URL} needs the rocksdict driver")
        self.rocksdb_options = SharedMemoryOptions(
            memory, **(self.options or {}), use_rocksdict=True
        )

    async def stop(self) -> None:
        """Flush every database's memtables, then faust's stop (which drops them).

        The table writer writes rows without the write-ahead log (``NO_WAL`` in
        pipeline/table_writer.py), so until a flush they are only in memory; a clean stop
        must leave them on disk, since the state directory is then trusted as it is."""
        for db in self._dbs.values():
            db.flush(True)
        await super().stop()

    def revoke_partitions(self, table: Any, tps: Any) -> None:
        """faust's, without its full garbage collection when no database is closed.

        faust runs ``gc.collect()`` here on every rebalance, for every table, so that the
        databases it dropped are released. A rebalance that only adds partitions (a peer
        worker left, this one takes its share) closes nothing, yet stalled the worker ten
        times, once per table: 150 to 290 ms each over a drained worker's heap (~190,000
        objects, measured in ``omnistitch bench``), at the moment it has the most to catch
        up. A rebalance that takes a partition away still closes its database faust's way.
        """
        topics = table.changelog_topic.topics
        closing = [tp.partition for tp in tps if tp.topic in topics and tp.partition in self._dbs]
        for partition in closing:  # rows written without the write-ahead log, on disk first
            self._dbs[partition].flush(True)
        if closing:
            super().revoke_partitions(table, tps)
