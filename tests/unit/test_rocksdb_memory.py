"""Every RocksDB database a worker opens shares one block cache and write-buffer budget."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from faust.exceptions import ImproperlyConfigured
from faust.stores import by_url
from faust.tables.base import Collection
from faust.types import TP
from pydantic import ValidationError

from omnistitch.settings import SettingsError, WorkerSettings, load
from pipeline.app import ROCKSDB_OPTIONS, Pipeline
from pipeline.rocksdb_memory import (
    MIB,
    STORE_URL,
    RocksDBMemory,
    SharedMemoryOptions,
    Store,
)

CAPACITY = "rocksdb.block-cache-capacity"
USAGE = "rocksdb.block-cache-usage"


def test_databases_share_one_cache_charged_with_their_memtables(tmp_path: Path) -> None:
    memory = RocksDBMemory(cache_mb=16, write_buffer_mb=8)
    options = SharedMemoryOptions(memory, **ROCKSDB_OPTIONS, use_rocksdict=True)
    a, b = options.open(tmp_path / "a"), options.open(tmp_path / "b")
    try:
        assert a.property_int_value(CAPACITY) == b.property_int_value(CAPACITY) == 24 * MIB
        assert memory.write_buffers.get_buffer_size() == 8 * MIB
        before = b.property_int_value(USAGE)
        for i in range(5_000):  # writes to `a` only: its memtable is charged to the cache
            a[f"k{i}".encode()] = b"x" * 200
        assert memory.write_buffers.get_usage() > 0
        # `b` sees what `a` put in: the two report the one cache, not two equal ones.
        assert b.property_int_value(USAGE) > before
        assert a.property_int_value(USAGE) == b.property_int_value(USAGE)
        assert memory.cache.get_usage() == b.property_int_value(USAGE)
        a.flush()
        assert a[b"k42"] == b"x" * 200
    finally:
        a.close()
        b.close()


def test_every_table_partition_of_a_worker_uses_the_shared_memory(tmp_path: Path) -> None:
    settings = WorkerSettings(
        bootstrap_servers="127.0.0.1:1",
        state_dir=tmp_path,
        rocksdb_cache_mb=32,
        rocksdb_write_buffer_mb=16,
    )
    p = Pipeline(settings)
    assert p.rocksdb_memory.capacity == 48 * MIB
    dbs = []
    try:
        for table in p.tables:
            store = table.data
            assert isinstance(store, Store)
            assert isinstance(store.rocksdb_options, SharedMemoryOptions)
            assert store.rocksdb_options.memory is p.rocksdb_memory
            assert store.rocksdb_options.write_buffer_size == ROCKSDB_OPTIONS["write_buffer_size"]
            for partition in (0, 1):
                dbs.append(store._db_for_partition(partition))
        assert len(dbs) == 2 * len(p.tables)
        assert {db.property_int_value(CAPACITY) for db in dbs} == {48 * MIB}
        # The table keeps the budget in its options for any further store faust builds.
        again = cast(Collection, p.contexts)._new_store_by_url(STORE_URL)
        assert isinstance(again, Store)
        assert again.rocksdb_options.memory is p.rocksdb_memory
    finally:
        for db in dbs:
            db.close()


def test_a_rebalance_that_closes_no_database_collects_no_garbage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = Pipeline(WorkerSettings(bootstrap_servers="127.0.0.1:1", state_dir=tmp_path))
    store = cast(Store, p.contexts.data)
    collections: list[int] = []
    monkeypatch.setattr("faust.stores.rocksdb.gc.collect", lambda: collections.append(1))
    topic = p.contexts.changelog_topic.get_topic_name()
    store._db_for_partition(1)
    store.revoke_partitions(p.contexts, {TP(topic, 0), TP("other", 1)})  # none of ours open
    assert collections == []
    assert set(store._dbs) == {1}
    store.revoke_partitions(p.contexts, {TP(topic, 1)})  # closed faust's way
    assert collections == [1]
    assert store._dbs == {}


def test_the_store_is_registered_with_faust() -> None:
    assert by_url(STORE_URL) is Store


def test_a_table_without_the_budget_fails_loudly(tmp_path: Path) -> None:
    p = Pipeline(WorkerSettings(bootstrap_servers="127.0.0.1:1", state_dir=tmp_path))
    with pytest.raises(ImproperlyConfigured, match="table_options"):
        Store(STORE_URL, p.app, p.contexts, options=dict(ROCKSDB_OPTIONS))


def test_the_defaults_bound_rocksdb_memory_to_64_mib() -> None:
    memory = RocksDBMemory.from_settings(WorkerSettings())
    assert (memory.cache_bytes, memory.write_buffer_bytes) == (32 * MIB, 32 * MIB)
    assert memory.capacity == 64 * MIB


@pytest.mark.parametrize(
    ("field", "value"),
    [("rocksdb_cache_mb", 0), ("rocksdb_cache_mb", 7), ("rocksdb_write_buffer_mb", 100_000)],
)
def test_bad_budgets_are_refused(field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        WorkerSettings.model_validate({field: value})


def test_a_bad_budget_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNISTITCH_ROCKSDB_WRITE_BUFFER_MB", "lots")
    with pytest.raises(SettingsError, match="OMNISTITCH_ROCKSDB_WRITE_BUFFER_MB"):
        load(WorkerSettings)
