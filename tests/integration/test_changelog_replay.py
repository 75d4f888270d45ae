"""The changelog replay (pipeline/changelog_replay.py) on the real broker and real RocksDB
databases: each followed partition's database ends holding its changelog's last value of
every key (a tombstone removes it) and the offset faust resumes from; once held, nothing is
written; a new set is followed from the offsets it is given; a database it cannot write
ends the worker instead of stopping the copies silently. And the recovery's restore
(pipeline/table_recovery.py) on a worker's own tables: what it hands faust's recovery."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections import Counter as CounterT
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import rocksdict
from confluent_kafka import Producer
from faust.stores.rocksdb import Store
from faust.types import TP

from omnistitch.kafka_client import client_config
from omnistitch.settings import KafkaSettings, WorkerSettings
from omnistitch.topics import TopicSpec, ensure_topics
from pipeline import table_recovery
from pipeline.app import Pipeline
from pipeline.changelog_replay import OFFSET_KEY, ChangelogReplay, Follow
from pipeline.table_recovery import ReplayRecovery

Record = tuple[bytes | None, bytes | None]


@pytest.fixture
def kafka(worker_env: dict[str, str]) -> KafkaSettings:
    return KafkaSettings.model_validate(
        {
            "bootstrap_servers": worker_env["OMNISTITCH_BOOTSTRAP_SERVERS"],
            "topic_prefix": worker_env["OMNISTITCH_TOPIC_PREFIX"],
        }
    )


@pytest.fixture
def changelog(kafka: KafkaSettings) -> str:
    """A fresh compacted topic of two partitions, like a table's changelog."""
    name = f"standby-test-{uuid.uuid4().hex[:8]}-changelog"
    ensure_topics(kafka, extra=[TopicSpec(name, 2, {"cleanup.policy": "compact"})])
    return name


@pytest.fixture
def dbs(tmp_path: Path) -> Iterator[list[rocksdict.Rdict]]:
    """Two partitions' databases, opened as faust's store opens them (raw keys)."""
    opened = [
        rocksdict.Rdict(str(tmp_path / f"p{p}"), rocksdict.Options(raw_mode=True)) for p in (0, 1)
    ]
    yield opened
    for db in opened:
        db.close()


def produce(kafka: KafkaSettings, topic: str, partition: int, records: list[Record]) -> None:
    producer = Producer(client_config(kafka))
    for key, value in records:
        producer.produce(topic, value, key, partition=partition)
    assert producer.flush(30) == 0


def persisted_offset(db: rocksdict.Rdict) -> int | None:
    """The last changelog offset a database holds, as faust's store reads it."""
    raw = db.get(OFFSET_KEY)
    return None if raw is None else int(raw)


def contents(db: rocksdict.Rdict) -> dict[bytes, bytes]:
    return {cast(bytes, k): v for k, v in db.items() if k != OFFSET_KEY}


def wait_until(what: str, ok: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_offset_key_is_fausts() -> None:
    assert Store.offset_key == OFFSET_KEY


def test_copies_hold_the_last_value_of_each_key_and_the_offset_faust_resumes_from(
    kafka: KafkaSettings, changelog: str, dbs: list[rocksdict.Rdict]
) -> None:
    produce(kafka, changelog, 0, [(b"a", b"1"), (b"b", b"1"), (b"a", b"2"), (b"b", None)])
    produce(kafka, changelog, 1, [(b"x", b"9")])
    failures: list[str] = []
    replay = ChangelogReplay(client_config(kafka), batch=3, on_failure=failures.append)
    replay.start()
    try:
        replay.follow([Follow(changelog, p, dbs[p], None) for p in (0, 1)])
        wait_until("both copies", lambda: replay.applied == 5)
        assert contents(dbs[0]) == {b"a": b"2"}  # b's tombstone removed it
        assert contents(dbs[1]) == {b"x": b"9"}
        assert [persisted_offset(db) for db in dbs] == [3, 0]  # the last offsets applied
        wait_until("the watermarks read", lambda: replay.remaining == 0)

        # Held: records keep coming, no copy changes.
        replay.hold()
        assert replay.position(changelog, 0) is None
        assert replay.position(changelog, 1) is None
        produce(kafka, changelog, 0, [(b"c", b"3")])
        produce(kafka, changelog, 1, [(b"x", b"10")])
        time.sleep(1.5)
        assert contents(dbs[0]) == {b"a": b"2"}
        assert persisted_offset(dbs[0]) == 3
        assert contents(dbs[1]) == {b"x": b"9"}
        assert persisted_offset(dbs[1]) == 0

        # Following partition 0 again, from the offset its copy persisted.
        replay.follow([Follow(changelog, 0, dbs[0], 4)])
        wait_until("partition 0 caught up", lambda: persisted_offset(dbs[0]) == 4)
        assert contents(dbs[0]) == {b"a": b"2", b"c": b"3"}
        time.sleep(0.5)
        assert contents(dbs[1]) == {b"x": b"9"}, "a partition no longer followed was written"
        assert replay.applied == 6
    finally:
        replay.stop()
    assert failures == []


def test_a_copy_it_cannot_write_ends_the_worker(
    kafka: KafkaSettings, changelog: str, tmp_path: Path
) -> None:
    """A database that refuses the write (here: closed under it, what :meth:`hold` keeps
    from happening at a rebalance) stops the worker, not only its copies."""
    produce(kafka, changelog, 0, [(b"a", b"1")])
    db = rocksdict.Rdict(str(tmp_path / "closed"), rocksdict.Options(raw_mode=True))
    db.close()
    failures: list[str] = []
    replay = ChangelogReplay(client_config(kafka), on_failure=failures.append)
    replay.start()
    try:
        replay.follow([Follow(changelog, 0, db, None)])
        wait_until("the failure", lambda: bool(failures))
    finally:
        replay.stop()
    assert failures == ["changelog-replay"]
    assert replay.applied == 0


def pipeline_in(env: dict[str, str], state: Path) -> Pipeline:
    """A worker's pipeline, not run, with its own state directory."""
    settings = WorkerSettings.model_validate(
        {
            "bootstrap_servers": env["OMNISTITCH_BOOTSTRAP_SERVERS"],
            "topic_prefix": env["OMNISTITCH_TOPIC_PREFIX"],
            "app_id": env["OMNISTITCH_APP_ID"],
            "state_dir": state,
        }
    )
    p = Pipeline(settings)
    ensure_topics(settings, extra=p.internal_topics())
    return p


@pytest.mark.parametrize("budget_s", [60.0, 0.0])
def test_a_restore_hands_faust_the_offset_its_database_holds(
    worker_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget_s: float
) -> None:
    """The recovery's restore (pipeline/table_recovery.py) brings an active partition's
    database to the changelog's end faust read (records written since are faust's to
    replay) and records, where faust's recovery resumes, the offset the database persisted;
    cut short (no budget), it records what the database holds and the thread writes to it
    no more."""
    writer_side = pipeline_in(worker_env, tmp_path / "writer")
    for i in range(45):  # 45 batches, a changelog record each
        writer_side.context_writer.put(writer_side.redirects, 2, f"cus_{i}", f"cus_x {i}")
        writer_side.context_writer.write(2)
        writer_side.context_writer.seal()
    asyncio.run(writer_side.context_writer.commit())
    writer_side.context_writer.close()
    writer_side.identity_writer.close()

    monkeypatch.setattr(table_recovery, "RESTORE_BUDGET_S", budget_s)
    p = pipeline_in(worker_env, tmp_path / "restoring")
    recovery = cast(ReplayRecovery, cast(Any, p.app.tables).recovery)
    table = p.redirects
    tp = TP(table.changelog_topic.get_topic_name(), 2)
    recovery.tp_to_table[tp] = table
    # faust's "highwater", the last offset when it looked: the restore stops there
    recovery.active_highwaters[tp] = 39
    offsets: CounterT[TP] = Counter()
    recovery.replay.start()
    try:
        asyncio.run(recovery._restore({tp}, offsets))
        db = cast(Any, table).data._db_for_partition(2)
        held = persisted_offset(db)
        assert offsets[tp] == (-1 if held is None else held)
        if budget_s:
            assert held == 39
        time.sleep(1.0)  # handed back: the thread no longer writes it
        assert persisted_offset(db) == held
        rows = contents(db)
        assert rows == {f"cus_{i}".encode(): f"cus_x {i}".encode() for i in range(len(rows))}
        assert len(rows) == (0 if held is None else held + 1)
    finally:
        recovery.replay.stop()
        p.context_writer.close()
        p.identity_writer.close()


def test_a_copy_restored_as_the_workers_own_starts_afresh(
    kafka: KafkaSettings, changelog: str, dbs: list[rocksdict.Rdict]
) -> None:
    """A partition kept as a standby copy and then restored as the worker's own (same
    database, the set changed before the thread looked again) is restored as given: to
    the end offset the restore names, counted as a restore."""
    produce(kafka, changelog, 0, [(b"k", str(i).encode()) for i in range(5)])
    replay = ChangelogReplay(client_config(kafka), batch=1)
    consumer = replay.new_consumer()
    try:
        replay.follow([Follow(changelog, 0, dbs[0], None)])
        deadline = time.monotonic() + 30
        while replay.applied < 2:  # one record a step
            assert time.monotonic() < deadline
            replay.step(consumer)
        assert persisted_offset(dbs[0]) == 1
        replay.hold()
        replay.follow([Follow(changelog, 0, dbs[0], 2, "active", until=3)])
        while replay.position(changelog, 0) != 4:
            assert time.monotonic() < deadline
            replay.step(consumer)
        for _ in range(5):
            replay.step(consumer)
        assert persisted_offset(dbs[0]) == 3
        assert contents(dbs[0]) == {b"k": b"3"}
    finally:
        consumer.close()
