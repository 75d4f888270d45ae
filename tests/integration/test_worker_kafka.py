"""The worker against the real broker: stitching, dead letters, and restarts."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from rocksdict import AccessType, Options, Rdict

from schemas.context import CustomerContext
from schemas.events import Identifier, RawEvent
from tests.processes import Process, http_json, wait_for

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def raw(eid: str, minute: int, *ids: tuple[str, str], **kw: object) -> RawEvent:
    return RawEvent.model_validate(
        {
            "event_id": eid,
            "channel": "web",
            "source": "test",
            "kind": "page",
            "occurred_at": T0 + timedelta(minutes=minute),
            "received_at": T0,
            "identifiers": [Identifier(type=t, value=v) for t, v in ids],
            **kw,
        }
    )


def publish(env: dict[str, str], records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": env["OMNISTITCH_BOOTSTRAP_SERVERS"]})
    for key, value in records:
        producer.produce(env["OMNISTITCH_TOPIC_PREFIX"] + "raw.events", key=key, value=value)
    assert producer.flush(15) == 0


def publish_events(env: dict[str, str], events: list[RawEvent]) -> None:
    publish(env, [(e.identifiers[0].key.encode(), e.model_dump_json().encode()) for e in events])


def api(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['OMNISTITCH_API_PORT']}"


def metrics(env: dict[str, str]) -> str:
    return httpx.get(f"{api(env)}/metrics", timeout=5).text


def customer_by(
    env: dict[str, str], identifier: str, proc: Process, events: int
) -> CustomerContext:
    """Wait until the customer holding ``identifier`` has ``events`` timeline entries."""

    def probe() -> CustomerContext | None:
        body = http_json(f"{api(env)}/v1/customers?identifier={identifier}")
        if body is None:
            return None
        ctx = CustomerContext.model_validate(body)
        return ctx if len(ctx.timeline) >= events else None

    return wait_for(f"customer {identifier} with {events} events", probe, 90, proc)


Records = list[tuple[bytes | None, bytes | None]]


def consume_until(env: dict[str, str], topic: str, done: Callable[[Records], bool]) -> Records:
    """Read ``topic`` from the start until ``done(records so far)`` holds."""
    consumer = Consumer(
        {
            "bootstrap.servers": env["OMNISTITCH_BOOTSTRAP_SERVERS"],
            "group.id": env["OMNISTITCH_APP_ID"] + "-reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([env["OMNISTITCH_TOPIC_PREFIX"] + topic])
    out: Records = []

    def probe() -> Records | None:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            out.append((msg.key(), msg.value()))
        return out if done(out) else None

    try:
        return wait_for(f"the expected records on {topic}", probe, 60)
    finally:
        consumer.close()


def test_worker_stitches_joins_and_dead_letters(worker_env: dict[str, str], tmp_path: Path) -> None:
    worker = Process("worker", worker_env, tmp_path / "worker.log").start()
    try:
        publish_events(
            worker_env,
            [
                raw("e1", 0, ("anonymous_id", "laptop"), name="Shoes"),
                raw("e2", 1, ("anonymous_id", "phone")),
                raw("e3", 2, ("anonymous_id", "phone"), ("email", "Bo@Example.com")),
            ],
        )
        young = customer_by(worker_env, "email:bo@example.com", worker, 2)
        laptop = customer_by(worker_env, "anonymous_id:laptop", worker, 1)
        assert young.customer_id != laptop.customer_id
        # A later event joins the two customers: the older one survives.
        publish_events(
            worker_env, [raw("e4", 3, ("email", "bo@example.com"), ("anonymous_id", "laptop"))]
        )
        joined = customer_by(worker_env, "anonymous_id:phone", worker, 4)
        assert joined.customer_id == laptop.customer_id
        assert joined.merged_from == [young.customer_id]
        assert [e.event_id for e in joined.timeline] == ["e4", "e3", "e2", "e1"]
        assert http_json(f"{api(worker_env)}/readyz") == {"status": "ready"}
        assert "omnistitch_identity_merges_total 1.0" in metrics(worker_env)
        # The merged-away id still answers, with the survivor.
        by_old = http_json(f"{api(worker_env)}/v1/customers/{young.customer_id}")
        assert by_old is not None
        assert by_old["customer_id"] == laptop.customer_id
        # Bad input is dead-lettered with its reason, and the worker keeps going.
        publish(
            worker_env,
            [
                (b"k", b"{not json"),
                (b"k", raw("e5", 4, ("email", "null")).model_dump_json().encode()),
            ],
        )
        dlq = consume_until(worker_env, "raw.events.dlq", lambda r: len(r) >= 2)
        reasons = sorted(json.loads(v or b"{}")["reason"] for _, v in dlq)
        assert reasons == ["invalid_event", "no_usable_identifier"]
        assert json.loads(dlq[0][1] or b"{}")["original_value_b64"]
        assert (
            'omnistitch_dead_letters_total{reason="no_usable_identifier",stage="ingest"} 1.0'
            in metrics(worker_env)
        )
        # The compacted view carries the survivor and a tombstone for the merged-away id.
        survivor, merged_away = laptop.customer_id.encode(), young.customer_id.encode()
        view = consume_until(
            worker_env,
            "customer.context",
            lambda r: (merged_away, None) in r and any(k == survivor and v for k, v in r),
        )
        last = {k: v for k, v in view}
        assert last[merged_away] is None
        final = CustomerContext.model_validate_json(last[survivor] or b"")
        assert final.customer_id == laptop.customer_id
        assert worker.alive()
    finally:
        worker.stop()


def persisted_offsets(state: Path) -> dict[tuple[str, int], int]:
    """(table, partition) -> the changelog offset faust's store says it holds, for every
    table partition with one (read from the stopped worker's RocksDB)."""
    found = {}
    for path in sorted((state / "v1" / "tables").glob("*.db")):
        table, _, partition = path.name.removesuffix(".db").rpartition("-")
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            offset = db.get(b"__faust\0offset__")
        finally:
            db.close()
        if offset is not None:
            found[(table, int(partition))] = int(offset)
    return found


def changelog_ends(
    env: dict[str, str], slots: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """(table, partition) -> the end offset of that partition of the table's changelog."""
    reader = Consumer({"bootstrap.servers": env["OMNISTITCH_BOOTSTRAP_SERVERS"], "group.id": "e"})
    app, prefix = env["OMNISTITCH_APP_ID"], env["OMNISTITCH_TOPIC_PREFIX"]
    try:
        ends = {}
        for table, partition in slots:
            # customer.context is the contexts table's changelog (pipeline/app.py)
            topic = (
                f"{prefix}customer.context"
                if table == "customer-contexts"
                else f"{app}-{table}-changelog"
            )
            _, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            ends[(table, partition)] = high
        return ends
    finally:
        reader.close()


def test_view_survives_restart_and_state_loss(worker_env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    worker = Process("worker", worker_env, log).start()
    try:
        publish_events(
            worker_env,
            [
                raw("r1", 0, ("anonymous_id", "a1"), traits={"name": "Rae"}),
                raw("r2", 1, ("anonymous_id", "a1"), ("email", "rae@example.com")),
            ],
        )
        before = customer_by(worker_env, "email:rae@example.com", worker, 2)
        assert worker.stop() == 0
        # Every table partition written remembers the last changelog offset it holds (where
        # recovery resumes): the table writer sets it once per batch, as faust does per row.
        persisted = persisted_offsets(Path(worker_env["OMNISTITCH_STATE_DIR"]))
        ends = changelog_ends(worker_env, persisted)
        assert ends, "no table partition was written"
        assert persisted == {slot: end - 1 for slot, end in ends.items()}
        # 1. Restart on the same RocksDB state.
        worker = Process("worker", worker_env, log).start()
        same = customer_by(worker_env, "anonymous_id:a1", worker, 2)
        assert same == before
        assert worker.stop() == 0
        # 2. Restart with the local state gone: tables recover from their changelogs.
        shutil.rmtree(worker_env["OMNISTITCH_STATE_DIR"])
        worker = Process("worker", worker_env, log).start()
        recovered = customer_by(worker_env, "email:rae@example.com", worker, 2)
        assert recovered == before
        # restored by the replay thread (pipeline/table_recovery.py), not record by record
        restored = re.search(
            r'^omnistitch_changelog_replay_records_total\{kind="active"\} (\S+)$',
            metrics(worker_env),
            re.MULTILINE,
        )
        assert restored is not None
        assert float(restored.group(1)) >= len(persisted)
        # The recovered identity table still stitches new events to the same customer.
        publish_events(worker_env, [raw("r3", 2, ("email", "RAE@example.com"))])
        after = customer_by(worker_env, "anonymous_id:a1", worker, 3)
        assert after.customer_id == before.customer_id
        assert after.traits["name"].value == "Rae"
    finally:
        worker.stop()


def test_a_worker_creates_its_topics_on_an_empty_cluster(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """No topic of the prefix exists yet (no collector ran first): the worker creates its
    public and internal topics itself. customer.context is both, and naming it twice in
    one CreateTopics request crashed librdkafka (SIGSEGV, an empty log: issue 2's demo)."""
    import subprocess
    import sys

    from confluent_kafka.admin import AdminClient

    env = {
        "OMNISTITCH_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "OMNISTITCH_TOPIC_PREFIX": unique_prefix,
        "OMNISTITCH_APP_ID": unique_prefix.rstrip(".") + "-app",
        "OMNISTITCH_STATE_DIR": str(tmp_path / "state"),
    }
    script = (
        "from omnistitch.settings import WorkerSettings\n"
        "from omnistitch.topics import ensure_topics\n"
        "from pipeline.app import Pipeline\n"
        "s = WorkerSettings()\n"
        "ensure_topics(s, extra=Pipeline(s).internal_topics())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    ours = {t for t in topics if t.startswith(unique_prefix)}
    assert unique_prefix + "customer.context" in ours
    assert unique_prefix + env["OMNISTITCH_APP_ID"] + "-customer-ops" in ours


def test_every_table_partition_shares_one_rocksdb_budget(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    """Read from each database's own RocksDB LOG: one cache and one write-buffer manager."""
    env = {
        **worker_env,
        "OMNISTITCH_ROCKSDB_CACHE_MB": "24",
        "OMNISTITCH_ROCKSDB_WRITE_BUFFER_MB": "8",
    }
    worker = Process("worker", env, tmp_path / "worker.log").start()
    try:
        wait_for("ready", lambda: http_json(f"{api(env)}/readyz"), 90, worker)
        logs = [p.read_text() for p in Path(env["OMNISTITCH_STATE_DIR"]).rglob("*.db/LOG")]
        # Every table's partitions this one worker owns (9 tables x 8 raw partitions).
        assert len(logs) >= 9 * 8
        caches = {m for log in logs for m in re.findall(r"^\s+block_cache: (0x\w+)$", log, re.M)}
        managers = {m for log in logs for m in re.findall(r"write_buffer_manager: (0x\w+)", log)}
        capacities = {int(c) for log in logs for c in re.findall(r"capacity : (\d+)", log)}
        assert len(caches) == 1, caches
        assert len(managers) == 1, managers
        assert capacities == {32 * 1024 * 1024}
    finally:
        worker.stop()


@pytest.mark.parametrize("consumer_thread", ["false", "true"], ids=["on_the_loop", "on_a_thread"])
def test_the_consumer_fetches_only_the_partitions_faust_reads(
    worker_env: dict[str, str], tmp_path: Path, consumer_thread: str
) -> None:
    """faust pauses the tables' changelogs once they are recovered; aiokafka's fetcher must
    stop asking for them too (pipeline/fetch_pauses.py): each fetch request named every
    assigned partition, 89 of them, and the stages read 17. On the stages' loop (the
    default, pipeline/consumer_loop.py) as on faust's own consumer thread."""
    worker_env = {**worker_env, "OMNISTITCH_CONSUMER_THREAD": consumer_thread}
    worker = Process("worker", worker_env, tmp_path / "worker.log").start()
    try:
        wait_for("ready", lambda: http_json(f"{api(worker_env)}/readyz"), 90, worker)
        publish_events(worker_env, [raw("e1", 1, ("email", "pause@example.com"))])
        customer_by(worker_env, "email:pause@example.com", worker, 1)

        def gauge(name: str) -> float:
            found = re.search(rf"^{name} ([0-9.e+]+)$", metrics(worker_env), re.M)
            assert found, name
            return float(found.group(1))

        partitions = 8  # OMNISTITCH_RAW_PARTITIONS' default
        # the identity requests, the customer ops, faust's leader topic; then changelogs
        stages = 2 * partitions + 1
        assert gauge("omnistitch_assigned_partitions") >= stages + 9 * partitions
        wait_for(
            "only the stages' partitions fetched",
            lambda: gauge("omnistitch_fetched_partitions") == stages or None,
            30,
            worker,
        )
        # Its changelog writes since then are not fetched back, and the stages still read.
        publish_events(worker_env, [raw("e2", 2, ("email", "pause@example.com"))])
        customer_by(worker_env, "email:pause@example.com", worker, 2)
        assert gauge("omnistitch_fetched_partitions") == stages
        # faust reads every one of them, and aiokafka pauses none that faust reads.
        states = {
            s: float(v)
            for s, v in re.findall(
                r'^omnistitch_stage_partitions\{state="(\w+)"\} ([0-9.e+]+)$',
                metrics(worker_env),
                re.M,
            )
        }
        assert states == {"reading": stages, "paused": 0, "buffer_full": 0, "fetch_paused": 0}
    finally:
        worker.stop()


FAULTS = Path(__file__).parent / "faults"  # sitecustomize: faust loses given records


def test_records_faust_loses_on_the_way_are_read_again_not_skipped(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    """faust drops fetched records around a rebalance and counts the gap as acked; the kill
    -9 test once lost 43 events that way (pipeline/offset_order.py). Here a fault makes
    faust's consumer lose identity-log records 1 and 3 on their way to the identity stage:
    record 1 is the last one for a while (a stall: found by two looks 10 s apart), record
    3 is followed by record 4 (a gap: found at once). Both are read again; no event is
    lost, and the rereads are counted."""
    env = {
        **worker_env,
        "PYTHONPATH": os.pathsep.join(p for p in (str(FAULTS), os.environ.get("PYTHONPATH")) if p),
        "OMNISTITCH_TEST_LOSE_RECORDS": "-identity-requests:1,3",
    }
    worker = Process("worker", env, tmp_path / "worker.log").start()
    try:
        wait_for("ready", lambda: http_json(f"{api(env)}/readyz"), 90, worker)
        # One event, one identity-log record (each waits for the one before).
        publish_events(env, [raw("a", 1, ("email", "a@lost.example"))])  # record 0
        customer_by(env, "email:a@lost.example", worker, 1)
        publish_events(env, [raw("b", 2, ("email", "b@lost.example"))])  # 1: lost, a stall
        customer_by(env, "email:b@lost.example", worker, 1)
        publish_events(env, [raw("c", 3, ("email", "c@lost.example"))])  # record 2
        customer_by(env, "email:c@lost.example", worker, 1)
        publish_events(env, [raw("d", 4, ("email", "d@lost.example"))])  # 3: lost, a gap
        time.sleep(1.0)  # its own record, not a batch with the next
        publish_events(env, [raw("e", 5, ("email", "e@lost.example"))])  # record 4
        customer_by(env, "email:e@lost.example", worker, 1)
        customer_by(env, "email:d@lost.example", worker, 1)

        def counter(name: str, label: str, value: str) -> float:
            found = re.search(rf'^{name}\{{{label}="{value}"\}} ([0-9.e+]+)$', metrics(env), re.M)
            return float(found.group(1)) if found else 0.0

        assert counter("omnistitch_stage_rereads_total", "cause", "stall") == 1
        assert counter("omnistitch_stage_rereads_total", "cause", "gap") == 1
        assert counter("omnistitch_stage_records_dropped_total", "reason", "gap") == 1
        log = (tmp_path / "worker.log").read_text()
        assert "none taken from 1; reading again from 1" in log
        assert "record 4 came before 3; reading again from 3" in log
    finally:
        worker.stop()
