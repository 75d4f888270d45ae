"""The faust wiring's own decisions, checked without a broker (the integration tests run it)."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from aiokafka.partitioner import DefaultPartitioner  # type: ignore[import-untyped]
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from prometheus_client import Counter
from pydantic import ValidationError

from omnistitch.settings import WorkerSettings
from pipeline.app import ROCKSDB_OPTIONS, Pipeline, key_partition
from pipeline.consumer_loop import LoopConsumerThread, LoopStageConsumer
from pipeline.ingest import Ingest
from pipeline.ops import (
    BATCH_RECORD_BYTES,
    MAX_REQUESTS_PER_RECORD,
    OpBatch,
    TickOp,
    batch_records,
    customer_ops,
    encode_op,
)
from pipeline.rules import load_rules
from pipeline.stage_consumer import StageConsumer


def pipeline(**settings: object) -> Pipeline:
    return Pipeline(WorkerSettings(bootstrap_servers="127.0.0.1:1", **settings))  # type: ignore[arg-type]


def test_customer_context_is_the_contexts_changelog_without_acks() -> None:
    p = pipeline(topic_prefix="t.")
    changelog = p.contexts.changelog_topic
    assert changelog.get_topic_name() == "t.customer.context"
    # Acked topics get offset-gap tracking, quadratic on a compacted topic's recovery.
    assert changelog.acks is False


def test_a_stage_stream_buffers_a_few_batches_of_records_not_faust_s_4096() -> None:
    # each record is a batch record of up to batch_max messages (~250 KB at 500)
    assert pipeline(batch_records=8).app.conf.stream_buffer_maxsize == 32
    assert pipeline(batch_records=1).app.conf.stream_buffer_maxsize == 4


def test_both_consumer_groups_wait_the_session_timeout_for_a_silent_worker() -> None:
    settings = WorkerSettings(bootstrap_servers="127.0.0.1:1", session_timeout_s=10)
    assert Pipeline(settings).app.conf.broker_session_timeout == 10
    assert Ingest(settings, load_rules(None)).consumer_config()["session.timeout.ms"] == 10_000
    # the broker's bounds (group.min/max.session.timeout.ms), refused at start-up
    for bad in (5.9, 1801):
        with pytest.raises(ValidationError, match="session_timeout_s"):
            WorkerSettings(bootstrap_servers="127.0.0.1:1", session_timeout_s=bad)


def test_the_producer_buffer_holds_a_batch_of_table_writes() -> None:
    assert pipeline(batch_max=500).app.producer.buffer.max_messages == 10_000
    assert pipeline(batch_max=1).app.producer.buffer.max_messages == 100


def test_batch_records_go_where_kafka_would_send_each_key() -> None:
    kafka = DefaultPartitioner()
    for i in range(200):
        key = f"cus_{i:04d}"
        assert key_partition(key, 8) == kafka(key.encode(), list(range(8)), list(range(8)))


def test_batch_records_keep_order_and_stay_under_the_record_limit() -> None:
    ops = [TickOp(customer_id=f"c{i}-" + "x" * 1000) for i in range(800)]
    parts = [encode_op(op) for op in ops]
    records = list(batch_records(parts, "ops"))
    assert len(records) > 1
    assert all(len(r) <= BATCH_RECORD_BYTES + 2_000 for r in records)
    assert [op for r in records for op in customer_ops(r)] == ops
    assert msgspec.json.decode(records[0], type=OpBatch).ops[0] == ops[0]


def test_every_table_bounds_its_rocksdb_memory() -> None:
    p = pipeline()
    for table in p.tables:
        # faust's per-database options, plus the budget every database shares (the stores
        # and the databases are checked in tests/unit/test_rocksdb_memory.py).
        assert table.options == p.rocksdb_memory.table_options(**ROCKSDB_OPTIONS)
        assert table.options is not ROCKSDB_OPTIONS  # faust pops keys from the dict it gets


def test_a_batch_record_never_holds_more_parts_than_decision_positions_reserve() -> None:
    parts = [b"{}"] * (MAX_REQUESTS_PER_RECORD + 1)
    counts = [json.loads(r)["requests"].__len__() for r in batch_records(parts, "requests")]
    assert counts == [MAX_REQUESTS_PER_RECORD, 1]


def test_aiokafka_runs_on_the_stages_loop_unless_consumer_thread() -> None:
    consumer = pipeline().app.consumer
    assert isinstance(consumer, LoopStageConsumer)
    on_loop = consumer._thread
    assert isinstance(on_loop, LoopConsumerThread)
    assert on_loop.thread_loop is on_loop.parent_loop is consumer.loop

    async def coroutine(x: int) -> tuple[int, int]:
        return x, threading.get_ident()

    # faust's calls are run in place, on the caller's thread: plain and coroutine functions
    loop = consumer.loop
    assert loop.run_until_complete(on_loop.call_thread(coroutine, 1)) == (1, threading.get_ident())
    assert loop.run_until_complete(on_loop.call_thread(lambda: 2)) == 2

    threaded = pipeline(consumer_thread=True).app.consumer
    assert type(threaded) is StageConsumer
    assert type(threaded._thread) is AIOKafkaConsumerThread
    assert threaded._thread.thread_loop is not threaded.loop


def test_the_stages_consumer_reads_a_gap_again_and_commits_only_what_is_done() -> None:
    """Wired into faust's own commit path (``_new_offset``); the broker part (the committed
    offset read, the seek) is stubbed here and run by the kill -9 broker test."""
    p = pipeline()
    consumer = p.app.consumer
    assert isinstance(consumer, StageConsumer)
    requests = p.requests_topic.get_topic_name()
    assert consumer.ordered_topics == {requests, p.ops_topic.get_topic_name()}
    tp = TP(requests, 0)
    seeks: list[tuple[TP, int]] = []

    async def committed(tp: TP) -> int:
        return 30

    async def seek_back(tp: TP, offset: int, counter: Counter) -> None:
        seeks.append((tp, offset))

    consumer._start_offset = committed  # type: ignore[method-assign]
    consumer._seek_back = seek_back  # type: ignore[method-assign]

    def events(*offsets: int) -> list[Any]:
        return [SimpleNamespace(message=SimpleNamespace(tp=tp, offset=o)) for o in offsets]

    admit = consumer.admit
    run = consumer.loop.run_until_complete
    # faust's stream handed over 30 and 32 (31 lost on the way): 32 waits for 31
    taken = run(admit(events(29, 30, 32)))
    assert [e.message.offset for e in taken] == [30]
    assert seeks == [(tp, 31)]
    consumer.done(taken)
    # faust acked 30 and 32, and filled the gap: its own offset would be 33
    consumer._acked[tp] = [30, 32]
    consumer._acked_index[tp] = {30, 32}
    consumer._gap[tp].addi(31, 32)
    assert consumer._new_offset(tp) == 31  # 31 not done: it is not committed
    taken = run(admit(events(31, 32)))
    assert [e.message.offset for e in taken] == [31, 32]
    consumer.done(taken)
    consumer._acked[tp] = [31, 32]
    consumer._acked_index[tp] = {31, 32}
    assert consumer._new_offset(tp) == 33
    # a topic the stages do not admit (faust's leader topic) is committed as faust does
    other = TP("leader", 0)
    consumer._acked[other] = [0, 1]
    assert consumer._new_offset(other) == 2
