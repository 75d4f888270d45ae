"""The table writer (pipeline/table_writer.py) on a worker's own tables and the real broker:
rows land in the partition's RocksDB and, with the same bytes, in the changelog partition;
the persisted offset is set once acknowledged; a removal is a tombstone; a batch whose
records are not acknowledged raises before any offset is set; the ops a stage batch sends
on are acknowledged by the same commit; and a batch's changelog records follow its outputs:
never on the broker while one is unacknowledged, never when one failed, batches in order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import rocksdict
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from faust.types import TP

from omnistitch.settings import WorkerSettings
from omnistitch.topics import ensure_topics
from pipeline.app import Outbox, Pipeline, key_partition
from pipeline.ops import TickOp, customer_ops
from pipeline.table_writer import NO_WAL, NOT_STAGED, TableWriteError, TableWriter


@pytest.fixture
def pipeline(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Pipeline]:
    """A worker's pipeline, not run: its tables and writers, on the test broker. Its
    producers are closed after the test (an open one logs connection errors once the
    session's broker stops)."""
    settings = WorkerSettings.model_validate(
        {
            "bootstrap_servers": worker_env["OMNISTITCH_BOOTSTRAP_SERVERS"],
            "topic_prefix": worker_env["OMNISTITCH_TOPIC_PREFIX"],
            "app_id": worker_env["OMNISTITCH_APP_ID"],
            "state_dir": tmp_path / "state",
        }
    )
    p = Pipeline(settings)
    ensure_topics(settings, extra=p.internal_topics())
    yield p
    for writer in (p.identity_writer, p.context_writer):
        writer.close()


async def faust_flush(p: Pipeline) -> None:
    """What faust awaits before it commits input offsets."""
    p.identity_writer.put(p.redirects, 5, "cus_z", "cus_a 1")
    p.identity_writer.write(5)
    p.identity_writer.seal()
    await p.app.producer.flush()
    view = p.redirects.changelog_topic.get_topic_name()
    assert p.redirects.data.persisted_offset(TP(view, 5)) == 0  # type: ignore[attr-defined]


def changelog(env: dict[str, str], topic: str, partition: int) -> list[tuple[bytes, bytes | None]]:
    """Every (key, value) record of one changelog partition, in order."""
    reader = Consumer(
        {
            "bootstrap.servers": env["OMNISTITCH_BOOTSTRAP_SERVERS"],
            "group.id": "table-writer-test",
            "enable.partition.eof": True,
        }
    )
    reader.assign([TopicPartition(topic, partition, 0)])
    out: list[tuple[bytes, bytes | None]] = []
    try:
        while True:
            msg = reader.poll(10)
            assert msg is not None, f"{topic}[{partition}] not read to its end"
            if (err := msg.error()) is not None:
                assert err.code() == KafkaError._PARTITION_EOF, err
                return out
            out.append((msg.key() or b"", msg.value()))
    finally:
        reader.close()


def test_rows_reach_rocksdb_and_the_changelog_with_the_persisted_offset(
    worker_env: dict[str, str], pipeline: Pipeline
) -> None:
    p = pipeline
    writer, contexts, redirects = p.context_writer, p.contexts, p.redirects
    writer.put(contexts, 3, "cus_a", b'{"v":1}')
    writer.put(contexts, 3, "cus_a", b'{"v":2}')  # the batch's last value wins
    writer.put(contexts, 3, "cus_gone", None)
    writer.put(redirects, 3, "cus_b", "cus_a 7")  # a str-valued table: faust's bytes
    # Staged rows are visible to the batch before they are written (a removal as None).
    assert writer.staged(contexts, 3, "cus_a") == b'{"v":2}'
    assert writer.staged(contexts, 3, "cus_gone") is None
    assert writer.staged(contexts, 2, "cus_a") is NOT_STAGED
    assert writer.write(3) == 3
    assert writer.staged(contexts, 3, "cus_a") is NOT_STAGED
    writer.seal()
    asyncio.run(writer.commit())

    db = contexts.data._db_for_partition(3)  # type: ignore[attr-defined]
    assert db.get(b"cus_a") == b'{"v":2}'
    assert db.get(b"cus_gone") is None
    assert redirects.data._db_for_partition(3).get(b"cus_b") == b"cus_a 7"  # type: ignore[attr-defined]
    view = contexts.changelog_topic.get_topic_name()
    assert view == worker_env["OMNISTITCH_TOPIC_PREFIX"] + "customer.context"
    assert sorted(changelog(worker_env, view, 3)) == [(b"cus_a", b'{"v":2}'), (b"cus_gone", None)]
    assert contexts.data.persisted_offset(TP(view, 3)) == 1  # type: ignore[attr-defined]
    moved = redirects.changelog_topic.get_topic_name()
    assert changelog(worker_env, moved, 3) == [(b"cus_b", b"cus_a 7")]
    assert redirects.data.persisted_offset(TP(moved, 3)) == 0  # type: ignore[attr-defined]


def test_unacknowledged_records_raise_and_set_no_offset(pipeline: Pipeline) -> None:
    p = pipeline
    unreachable = TableWriter(
        lambda: Producer(
            {"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 500, "acks": "all"}
        )
    )
    unreachable.put(p.contexts, 1, "cus_a", b"{}")
    unreachable.write(1)
    unreachable.seal()
    with pytest.raises(TableWriteError, match=r"delivery errors: \[.\S"):
        asyncio.run(unreachable.commit())
    view = p.contexts.changelog_topic.get_topic_name()
    assert p.contexts.data.persisted_offset(TP(view, 1)) is None  # type: ignore[attr-defined]
    unreachable.close(0)


def test_a_commit_leaves_rows_of_the_batch_in_hand_for_the_next(pipeline: Pipeline) -> None:
    """faust commits on its own schedule, in the middle of a stage batch: what is staged,
    or written and not yet sealed, belongs to a batch not yet acked, and waits for a later
    commit."""
    p = pipeline
    writer, view = p.context_writer, p.contexts.changelog_topic.get_topic_name()
    writer.put(p.contexts, 0, "cus_a", b"{}")
    asyncio.run(writer.commit())
    assert p.contexts.data.persisted_offset(TP(view, 0)) is None  # type: ignore[attr-defined]
    assert writer.staged(p.contexts, 0, "cus_a") == b"{}"
    writer.write(0)
    assert writer.unfinished
    asyncio.run(writer.commit())
    assert p.contexts.data.persisted_offset(TP(view, 0)) is None  # type: ignore[attr-defined]
    writer.seal()
    asyncio.run(writer.commit())
    assert not writer.unfinished
    assert p.contexts.data.persisted_offset(TP(view, 0)) == 0
    asyncio.run(faust_flush(p))  # the hook faust's commit calls flushes the writers too


def test_a_stage_batchs_ops_are_acknowledged_by_its_commit(
    worker_env: dict[str, str], pipeline: Pipeline
) -> None:
    """The ops a batch sends on (``Outbox``) go out with its rows, one batch record per ops
    partition, and are on the broker once the commit that precedes its offsets returns."""
    p = pipeline
    out = Outbox(p.settings.raw_partitions)
    ops = [TickOp(customer_id=f"cus_{i}") for i in range(6)]
    for op in ops:
        out.add(op)
    topic = p.ops_topic.get_topic_name()
    out.send(p.identity_writer, topic)
    assert out.ops == {}
    p.identity_writer.seal()
    asyncio.run(p.identity_writer.commit())
    n = p.settings.raw_partitions
    for partition in range(n):
        records = changelog(worker_env, topic, partition)
        read = [o.customer_id for _, v in records for o in customer_ops(v or b"")]
        expect = [o.customer_id for o in ops if key_partition(o.customer_id, n) == partition]
        assert read == expect
        assert len(records) == (1 if expect else 0)  # one batch record per partition


def test_an_unacknowledged_op_raises_at_commit() -> None:
    unreachable = TableWriter(
        lambda: Producer(
            {"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 500, "acks": "all"}
        )
    )
    unreachable.send("ops", 0, b"[]")
    with pytest.raises(TableWriteError, match=r"delivery errors: \[.\S"):
        asyncio.run(unreachable.commit())
    unreachable.close(0)


def broker_writer(env: dict[str, str], **config: Any) -> TableWriter:
    """A table writer whose producer reaches the test broker, configured as the worker's."""
    return TableWriter(
        lambda: Producer(
            {
                "bootstrap.servers": env["OMNISTITCH_BOOTSTRAP_SERVERS"],
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 1,
                **config,
            }
        )
    )


def test_a_batchs_rows_never_reach_the_changelog_while_or_when_its_output_fails(
    worker_env: dict[str, str], pipeline: Pipeline
) -> None:
    """A batch that decided a merge writes the merged-away customer's ``parents`` row and
    sends the merge op. Had the row's changelog record landed and the op not (a kill -9 in
    between), the re-delivered batch would find the merge decided and never send it again.
    Here the op goes to a topic the broker does not have (nor creates): unacknowledged for
    two seconds, then failed. The row never reaches its changelog, and the commit raises."""
    p = pipeline
    writer = broker_writer(worker_env, **{"message.timeout.ms": 2000})
    moved = p.redirects.changelog_topic.get_topic_name()
    writer.put(p.redirects, 6, "cus_b", "cus_a 1")
    writer.write(6)
    writer.send(worker_env["OMNISTITCH_TOPIC_PREFIX"] + "no-such-topic", 0, b"[]")

    async def seal_then_commit() -> None:
        writer.seal()
        await asyncio.sleep(1.0)  # the writer looks for acknowledgements meanwhile
        assert changelog(worker_env, moved, 6) == []
        with pytest.raises(TableWriteError, match=r"delivery errors: \[.\S"):
            await writer.commit()

    asyncio.run(seal_then_commit())
    assert changelog(worker_env, moved, 6) == []
    assert p.redirects.data.persisted_offset(TP(moved, 6)) is None  # type: ignore[attr-defined]
    # Local state has the row (a worker that stops uncleanly discards it) and says so.
    assert p.redirects.data._db_for_partition(6).get(b"cus_b") == b"cus_a 1"  # type: ignore[attr-defined]
    assert writer.unfinished
    writer.close(0)
    assert changelog(worker_env, moved, 6) == []


def test_sealed_batches_reach_the_changelog_in_order_once_their_outputs_are_acknowledged(
    worker_env: dict[str, str], pipeline: Pipeline
) -> None:
    """A batch whose merge (sent through faust's producer, a future here) is pending holds
    its rows back, and the next batch's rows wait behind it, so a partition's changelog
    keeps the stages' order; once acknowledged, both are produced within milliseconds,
    without waiting for a commit. A batch cut short at a stop stays off the changelog."""
    p = pipeline
    writer = broker_writer(worker_env)
    moved = p.redirects.changelog_topic.get_topic_name()

    async def scenario() -> None:
        merge: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        writer.put(p.redirects, 7, "cus_b", "cus_a 1")
        writer.write(7)
        writer.send(p.ops_topic.get_topic_name(), 7, b"[]")
        writer.after(merge)
        writer.seal()
        writer.put(p.redirects, 7, "cus_c", "cus_a 2")  # the next batch: no outputs
        writer.write(7)
        writer.seal()
        await asyncio.sleep(0.5)
        writer.producer.flush(5)
        assert changelog(worker_env, moved, 7) == []
        assert writer.unfinished
        merge.set_result(None)
        await asyncio.sleep(0.2)
        assert not writer.unfinished  # released by the writer's own look, not a commit
        writer.producer.flush(5)
        assert changelog(worker_env, moved, 7) == [
            (b"cus_b", b"cus_a 1"),
            (b"cus_c", b"cus_a 2"),
        ]
        await writer.commit()

    asyncio.run(scenario())
    assert p.redirects.data.persisted_offset(TP(moved, 7)) == 1  # type: ignore[attr-defined]
    writer.put(p.redirects, 7, "cus_d", "cus_a 3")
    writer.write(7)  # a batch in hand when the worker stops
    writer.close()
    assert writer.unfinished
    assert [k for k, _ in changelog(worker_env, moved, 7)] == [b"cus_b", b"cus_c"]


def test_a_commit_releases_the_batches_sealed_by_its_mark(
    worker_env: dict[str, str], pipeline: Pipeline
) -> None:
    """faust chooses the offsets it commits, then flushes: the stages' loop may seal another
    batch meanwhile, whose output through faust's producer was sent after faust's flush
    began. The commit requires the batches sealed by the mark taken before that flush, and
    leaves the later one waiting; a commit that requires it raises while it waits."""
    p = pipeline
    writer = broker_writer(worker_env)
    moved = p.redirects.changelog_topic.get_topic_name()

    async def scenario() -> None:
        writer.put(p.redirects, 5, "cus_b", "cus_a 1")
        writer.write(5)
        writer.seal()
        mark = writer.mark()
        late: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        writer.put(p.redirects, 5, "cus_c", "cus_a 2")
        writer.write(5)
        writer.after(late)
        writer.seal()
        await writer.commit(mark)
        assert changelog(worker_env, moved, 5) == [(b"cus_b", b"cus_a 1")]
        with pytest.raises(TableWriteError, match=r"1 sealed batch\(es\) with outputs"):
            await writer.commit()
        late.set_result(None)
        await writer.commit()
        assert [k for k, _ in changelog(worker_env, moved, 5)] == [b"cus_b", b"cus_c"]

    asyncio.run(scenario())
    writer.close()


def on_disk(store: Any, partition: int, key: bytes) -> bytes | None:
    """``key`` as a second reader of the partition's database finds it in its files (the
    memtables of the writer's own handle are not in them)."""
    path = str(store.partition_path(partition))
    reader = rocksdict.Rdict(
        path,
        rocksdict.Options(raw_mode=True),
        access_type=rocksdict.AccessType.read_only(False),
    )
    try:
        return cast(bytes | None, reader.get(key))
    finally:
        reader.close()


def test_rows_written_without_the_write_ahead_log_are_on_disk_after_a_clean_stop(
    pipeline: Pipeline,
) -> None:
    """The writer skips RocksDB's write-ahead log (the changelog is the log); a crash
    discards local state (pipeline/state_dir.py), and a clean stop flushes the memtables,
    so a state directory trusted after a clean stop holds every row written."""
    assert NO_WAL.disable_wal is True  # type: ignore[comparison-overlap]  # stub: a method
    p = pipeline
    p.context_writer.put(p.contexts, 2, "cus_a", b'{"v":1}')
    p.context_writer.write(2)
    p.context_writer.seal()
    asyncio.run(p.context_writer.commit())
    store = p.contexts.data
    assert store._db_for_partition(2).get(b"cus_a") == b'{"v":1}'
    assert on_disk(store, 2, b"cus_a") is None  # in the memtable only, no log to replay
    asyncio.run(store.stop())
    assert on_disk(store, 2, b"cus_a") == b'{"v":1}'
