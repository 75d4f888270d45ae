"""The ingest stage re-reads raw records faust skipped (its rebalance race, pipeline/README.md).

The race cannot be triggered on demand, so the test makes its outcome directly: while no
worker runs, the workers' consumer group (the app id) commits an offset past raw records
that were never processed. A restarted worker then starts after them, exactly as faust
does after skipping; the ingest stage must notice the gap, re-read the skipped records and
process them. Records that retention already deleted cannot come back: they are reported
(error log, dead letter, counter), never dropped silently.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from schemas.context import CustomerContext
from schemas.events import Identifier, RawEvent
from tests.processes import Process, http_json, wait_for

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
#: The partition whose skipped records are all still on the broker.
SKIPPED = 3
#: The partition whose skipped records are partly deleted by the time the worker looks.
TRIMMED = 5
PARTITIONS = 8


def event(name: str) -> RawEvent:
    return RawEvent.model_validate(
        {
            "event_id": name,
            "channel": "web",
            "source": "test",
            "kind": "page",
            "occurred_at": T0 + timedelta(minutes=1),
            "received_at": T0,
            "identifiers": [Identifier(type="anonymous_id", value=f"gap-{name}")],
        }
    )


def publish(env: dict[str, str], partition: int, names: list[str]) -> list[int]:
    """Publish one event per name to ``partition`` of raw.events; their offsets."""
    producer = Producer({"bootstrap.servers": env["OMNISTITCH_BOOTSTRAP_SERVERS"]})
    offsets: dict[bytes, int] = {}

    def delivered(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        offsets[msg.key() or b""] = msg.offset() or 0

    keys = [event(name).identifiers[0].key.encode() for name in names]
    for name, key in zip(names, keys, strict=True):
        body = event(name).model_dump_json().encode()
        producer.produce(
            raw_topic(env), key=key, value=body, partition=partition, on_delivery=delivered
        )
    assert producer.flush(15) == 0
    return [offsets[k] for k in keys]


def raw_topic(env: dict[str, str]) -> str:
    return env["OMNISTITCH_TOPIC_PREFIX"] + "raw.events"


def api(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['OMNISTITCH_API_PORT']}"


def metric(env: dict[str, str], name: str) -> float:
    body = httpx.get(f"{api(env)}/metrics", timeout=5).text
    found = re.search(rf"^{name} (\S+)$", body, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def wait_stitched(env: dict[str, str], names: list[str], proc: Process) -> None:
    """Every named event is on the timeline of its customer, read through the query API."""
    pending = list(names)

    def probe() -> bool | None:
        while pending:
            body = http_json(f"{api(env)}/v1/customers?identifier=anonymous_id:gap-{pending[0]}")
            if body is None:
                return None
            ctx = CustomerContext.model_validate(body)
            if pending[0] not in {e.event_id for e in ctx.timeline}:
                return None
            pending.pop(0)
        return True

    try:
        wait_for(f"events {names} in the customer contexts", probe, 90, proc)
    except AssertionError as exc:
        raise AssertionError(f"never stitched: {pending}\n{exc}") from None


def start(env: dict[str, str], log: Path) -> Process:
    worker = Process("worker", env, log).start()
    wait_for("the worker ready", lambda: http_json(f"{api(env)}/readyz"), 120, worker)
    return worker


def commit_past(env: dict[str, str], offsets: dict[int, int]) -> None:
    """Commit the workers' group offsets as faust does when it skips records (no worker
    runs: the group is empty, so a non-member commit is accepted)."""
    group = Consumer(
        {
            "bootstrap.servers": env["OMNISTITCH_BOOTSTRAP_SERVERS"],
            "group.id": env["OMNISTITCH_APP_ID"],  # faust's group id is the app id (version 1)
            "enable.auto.commit": False,
        }
    )
    wanted = [TopicPartition(raw_topic(env), p, o) for p, o in offsets.items()]
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                group.commit(offsets=wanted, asynchronous=False)
                break
            except KafkaException:
                # The stopped worker may still count as a member for a moment.
                assert time.monotonic() < deadline, "could not commit the group's offsets"
                time.sleep(1)
        got = group.committed([TopicPartition(raw_topic(env), p) for p in offsets], timeout=10)
        assert {tp.partition: tp.offset for tp in got} == offsets
    finally:
        group.close()


def dead_letters(env: dict[str, str], reason: str) -> list[dict[str, object]]:
    topic = env["OMNISTITCH_TOPIC_PREFIX"] + "raw.events.dlq"
    reader = Consumer(
        {
            "bootstrap.servers": env["OMNISTITCH_BOOTSTRAP_SERVERS"],
            "group.id": "gap-test-dlq-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    reader.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: list[dict[str, object]] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            msg = reader.poll(0.5)
            if msg is None:
                continue
            if (err := msg.error()) is not None:
                assert err.code() == KafkaError._PARTITION_EOF, err
                break
            record = json.loads(msg.value() or b"{}")
            if record["reason"] == reason:
                out.append(record)
    finally:
        reader.close()
    return out


def changelog_positions(env: dict[str, str]) -> dict[int, dict[str, int]]:
    """The ``ingest-positions`` changelog: per changelog partition, the last value of each key."""
    topic = f"{env['OMNISTITCH_APP_ID']}-ingest-positions-changelog"
    reader = Consumer(
        {
            "bootstrap.servers": env["OMNISTITCH_BOOTSTRAP_SERVERS"],
            "group.id": "gap-test-changelog-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    out: dict[int, dict[str, int]] = {}
    at_end: set[int] = set()
    deadline = time.monotonic() + 30
    try:
        while len(at_end) < PARTITIONS and time.monotonic() < deadline:
            msg = reader.poll(0.5)
            if msg is None:
                continue
            p = msg.partition()
            assert p is not None
            if (err := msg.error()) is not None:
                assert err.code() == KafkaError._PARTITION_EOF, err
                at_end.add(p)
                continue
            out.setdefault(p, {})[(msg.key() or b"").decode()] = json.loads(msg.value() or b"")
    finally:
        reader.close()
    assert len(at_end) == PARTITIONS, f"could not read {topic} to its end"
    return out


def test_skipped_raw_records_are_re_read_and_stitched(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    # 1. Two events on every raw partition, processed, then a graceful stop.
    first = [f"a{p}-{i}" for p in range(PARTITIONS) for i in range(2)]
    worker = start(worker_env, log)
    try:
        for p in range(PARTITIONS):
            assert publish(worker_env, p, [f"a{p}-0", f"a{p}-1"]) == [0, 1]
        wait_stitched(worker_env, first, worker)
        assert metric(worker_env, "omnistitch_ingest_recovered_records_total") == 0
    finally:
        assert worker.stop() == 0
    # Each raw partition's position lives in the same partition of the table's changelog.
    positions = changelog_positions(worker_env)
    assert positions == {p: {str(p): 1} for p in range(PARTITIONS)}

    # 2. While no worker runs: more events, then faust's skip, made by hand. On SKIPPED,
    # offsets 2..5 are skipped (6 and 7 will be delivered); on TRIMMED, offsets 2..5 are
    # skipped and retention has already deleted 2 and 3 (6 will be delivered).
    skipped = [f"s{i}" for i in range(2, 8)]
    trimmed = [f"t{i}" for i in range(2, 7)]
    others = [f"b{p}" for p in range(PARTITIONS) if p not in (SKIPPED, TRIMMED)]
    assert publish(worker_env, SKIPPED, skipped) == list(range(2, 8))
    assert publish(worker_env, TRIMMED, trimmed) == list(range(2, 7))
    for name in others:
        publish(worker_env, int(name[1:]), [name])
    admin = AdminClient({"bootstrap.servers": worker_env["OMNISTITCH_BOOTSTRAP_SERVERS"]})
    deleted = admin.delete_records([TopicPartition(raw_topic(worker_env), TRIMMED, 4)])
    for fut in deleted.values():
        assert fut.result().low_watermark == 4  # the new log start
    commit_past(worker_env, {SKIPPED: 6, TRIMMED: 6})

    # 3. A new worker starts after the skipped records, finds the gaps and closes them.
    worker = start(worker_env, log)
    try:
        wait_stitched(worker_env, [*skipped, "t4", "t5", "t6", *others, *first], worker)
        recovered = metric(worker_env, "omnistitch_ingest_recovered_records_total")
        assert recovered == 4 + 2  # SKIPPED 2..5, TRIMMED 4..5
        assert metric(worker_env, "omnistitch_ingest_unrecoverable_offsets_total") == 2
        lost = dead_letters(worker_env, "skipped_records_deleted")
        assert len(lost) == 1, lost
        assert f"raw.events[{TRIMMED}] offsets 2..3" in str(lost[0]["detail"])
        assert lost[0]["original_value_b64"] is None  # nothing to replay
        for gone in ("t2", "t3"):  # deleted by the broker before anyone read them
            body = http_json(f"{api(worker_env)}/v1/customers?identifier=anonymous_id:gap-{gone}")
            assert body is None
        text = log.read_text()
        assert f"raw.events[{SKIPPED}]: offsets 2..5 were never processed" in text
        assert f"raw.events[{TRIMMED}]: offsets 2..3 were deleted" in text
    finally:
        assert worker.stop() == 0
    # The positions moved on, each still in its own changelog partition.
    final = changelog_positions(worker_env)
    assert final[SKIPPED][str(SKIPPED)] == 7
    assert final[TRIMMED][str(TRIMMED)] == 6
    assert all(set(keys) == {str(p)} for p, keys in final.items())
