"""The ingest stage (pipeline/ingest.py) against the real broker.

It reads the raw topic with its own consumer group (``<app id>-ingest``), dead-letters bad
input with the reason and the original bytes, and commits a batch's offsets only once the
identity log has acknowledged the batch: a stopped worker resumes where it left off, and
a batch whose requests cannot be acknowledged is never committed.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from omnistitch.settings import WorkerSettings
from omnistitch.topics import TopicSpec, ensure_topics
from pipeline.app import key_partition
from pipeline.ingest import Ingest, IngestError
from pipeline.ops import ResolveRequest, identity_requests
from pipeline.rules import load_rules
from schemas.context import CustomerContext
from schemas.events import Identifier, RawEvent
from tests.processes import Process, http_json, wait_for

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
PARTITIONS = 8
RULES = load_rules(None)


def event(name: str, *identifiers: Identifier) -> RawEvent:
    return RawEvent.model_validate(
        {
            "event_id": name,
            "channel": "web",
            "source": "test",
            "kind": "page",
            "occurred_at": T0 + timedelta(minutes=1),
            "received_at": T0,
            "identifiers": identifiers or [Identifier(type="anonymous_id", value=f"in-{name}")],
        }
    )


def raw_topic(env: dict[str, str]) -> str:
    return env["OMNISTITCH_TOPIC_PREFIX"] + "raw.events"


def publish(env: dict[str, str], partition: int, bodies: list[bytes]) -> list[int]:
    """Publish ``bodies`` to one raw partition (key: the partition); their offsets."""
    producer = Producer({"bootstrap.servers": env["OMNISTITCH_BOOTSTRAP_SERVERS"]})
    offsets: list[int] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        offsets.append(msg.offset() or 0)

    for body in bodies:
        producer.produce(
            raw_topic(env), key=b"k", value=body, partition=partition, on_delivery=delivered
        )
        producer.flush(15)  # one at a time: the offsets come back in order
    assert len(offsets) == len(bodies)
    return offsets


def good(name: str) -> bytes:
    return event(name).model_dump_json().encode()


def api(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['OMNISTITCH_API_PORT']}"


def wait_stitched(env: dict[str, str], names: list[str], proc: Process) -> None:
    """Every named event is on the timeline of its customer, read through the query API."""
    pending = list(names)

    def probe() -> bool | None:
        while pending:
            body = http_json(f"{api(env)}/v1/customers?identifier=anonymous_id:in-{pending[0]}")
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


def committed(env: dict[str, str], group: str) -> dict[int, int]:
    """The group's committed offsets on the raw topic, per partition (absent: none)."""
    reader = Consumer({"bootstrap.servers": env["OMNISTITCH_BOOTSTRAP_SERVERS"], "group.id": group})
    try:
        tps = [TopicPartition(raw_topic(env), p) for p in range(PARTITIONS)]
        return {
            tp.partition: tp.offset for tp in reader.committed(tps, timeout=10) if tp.offset >= 0
        }
    finally:
        reader.close()


def partition_values(bootstrap: str, topic: str, partition: int) -> list[bytes]:
    """Every value on one partition, from its start to its end (which it must reach)."""
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "ingest-test-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    reader.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            msg = reader.poll(0.5)
            if msg is None:
                continue
            if (err := msg.error()) is not None:
                assert err.code() == KafkaError._PARTITION_EOF, err
                return values
            values.append(msg.value() or b"")
    finally:
        reader.close()
    raise AssertionError(f"{topic}[{partition}]: its end not reached in 30 s")


def dead_letters(env: dict[str, str]) -> list[dict[str, object]]:
    topic = env["OMNISTITCH_TOPIC_PREFIX"] + "raw.events.dlq"
    values = partition_values(env["OMNISTITCH_BOOTSTRAP_SERVERS"], topic, 0)
    return [json.loads(value or b"{}") for value in values]


def env_topic(env: dict[str, str], name: str) -> str:
    return env["OMNISTITCH_TOPIC_PREFIX"] + name


def partitions_holding_records(env: dict[str, str], topic: str) -> list[int]:
    """The partitions of ``topic`` with at least one record."""
    reader = Consumer({"bootstrap.servers": env["OMNISTITCH_BOOTSTRAP_SERVERS"], "group.id": "w"})
    try:
        meta = reader.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in meta}
        return sorted(p for p, (low, high) in ends.items() if high > low)
    finally:
        reader.close()


def start(env: dict[str, str], log: Path) -> Process:
    worker = Process("worker", env, log).start()
    wait_for("the worker ready", lambda: http_json(f"{api(env)}/readyz"), 120, worker)
    return worker


def test_ingest_commits_what_it_handed_on_and_a_restart_resumes_there(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    group = worker_env["OMNISTITCH_APP_ID"] + "-ingest"
    first = [f"a{p}" for p in range(PARTITIONS)]
    invalid = b'{"event_id": "broken", "channel": "web"'
    blocked = event("blocked", Identifier(type="email", value="test@test.com"))
    worker = start(worker_env, log)
    try:
        for p, name in enumerate(first):
            assert publish(worker_env, p, [good(name)]) == [0]
        assert publish(worker_env, 0, [invalid, blocked.model_dump_json().encode()]) == [1, 2]
        wait_stitched(worker_env, first, worker)
        wait_for(
            "every raw offset committed by the ingest group",
            lambda: committed(worker_env, group) == {0: 3, **{p: 1 for p in range(1, 8)}} or None,
            30,
            worker,
        )
    finally:
        assert worker.stop() == 0
    # faust's own group no longer reads the raw topic at all.
    assert committed(worker_env, worker_env["OMNISTITCH_APP_ID"]) == {}
    # The requests are on the partition faust's router names for the tenant (murmur2, as
    # aiokafka partitions): the identity tables live there, and the API looks them up there.
    requests = env_topic(worker_env, worker_env["OMNISTITCH_APP_ID"] + "-identity-requests")
    assert set(partitions_holding_records(worker_env, requests)) == {
        key_partition("default", PARTITIONS)
    }
    letters = {str(d["reason"]): d for d in dead_letters(worker_env)}
    assert set(letters) == {"invalid_event", "no_usable_identifier"}
    assert base64.b64decode(str(letters["invalid_event"]["original_value_b64"])) == invalid
    assert letters["invalid_event"]["stage"] == "ingest"
    assert (letters["invalid_event"]["partition"], letters["invalid_event"]["offset"]) == (0, 1)
    assert "test@test.com" in str(letters["no_usable_identifier"]["detail"])

    # While no worker runs, more events arrive; the next worker starts at the commits.
    later = [f"b{p}" for p in range(PARTITIONS)]
    for p, name in enumerate(later):
        publish(worker_env, p, [good(name)])
    worker = start(worker_env, log)
    try:
        wait_stitched(worker_env, [*later, *first], worker)
        wait_for(
            "the new offsets committed",
            lambda: committed(worker_env, group) == {0: 4, **{p: 2 for p in range(1, 8)}} or None,
            30,
            worker,
        )
    finally:
        assert worker.stop() == 0
    # Nothing was read twice: the first events' requests were not appended again.
    assert len(dead_letters(worker_env)) == 2


def test_a_batch_the_broker_does_not_acknowledge_raises_before_any_commit(
    worker_env: dict[str, str],
) -> None:
    """Steps 3-4 of the ingest order with a real producer that cannot reach a broker: the
    batch raises (so the stage's thread ends the worker before its commit)."""
    settings = stage_settings(worker_env)
    publish(worker_env, 0, [good("unacked")])
    stage = Ingest(settings, RULES)
    consumer = Consumer(stage.consumer_config())
    consumer.subscribe([stage.raw_topic])
    try:
        batch: list[Message] = []
        deadline = time.monotonic() + 30
        while not batch and time.monotonic() < deadline:
            batch = stage.next_batch(consumer)
        assert [m.value() for m in batch] == [good("unacked")]
        dead = Producer(
            {"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 500, "acks": "all"}
        )
        with pytest.raises(IngestError, match=r"delivery errors: \[.\S"):
            stage.process(batch, dead)
    finally:
        consumer.close()
    assert committed(worker_env, stage.group) == {}


def stage_settings(env: dict[str, str], **extra: object) -> WorkerSettings:
    settings = WorkerSettings.model_validate(
        {
            "bootstrap_servers": env["OMNISTITCH_BOOTSTRAP_SERVERS"],
            "topic_prefix": env["OMNISTITCH_TOPIC_PREFIX"],
            "app_id": env["OMNISTITCH_APP_ID"],
            **extra,
        }
    )
    ensure_topics(settings, extra=[TopicSpec(Ingest(settings, RULES).requests_topic, PARTITIONS)])
    return settings


def handed_on(settings: WorkerSettings) -> list[str]:
    """The event ids of every resolve request in the identity log, in log order."""
    topic = Ingest(settings, RULES).requests_topic
    partition = key_partition(settings.tenant, PARTITIONS)
    return [
        request.event_id
        for value in partition_values(settings.bootstrap_servers, topic, partition)
        for request in identity_requests(value)
        if isinstance(request, ResolveRequest)
    ]


def test_offsets_are_committed_on_the_interval_and_when_the_stage_stops(
    worker_env: dict[str, str],
) -> None:
    settings = stage_settings(worker_env, ingest_commit_interval_s=60)
    stage = Ingest(settings, RULES)
    names = [f"s{p}" for p in range(PARTITIONS)]
    for p, name in enumerate(names):
        publish(worker_env, p, [good(name)])
    stage.start()
    try:
        wait_for("every event handed on", lambda: sorted(handed_on(settings)) == names or None, 60)
        time.sleep(1.0)  # several idle polls: none of them commits within the interval
        assert committed(worker_env, stage.group) == {}
    finally:
        stage.stop()
    assert committed(worker_env, stage.group) == {p: 1 for p in range(PARTITIONS)}


def test_a_partition_that_moves_to_another_worker_is_committed_first(
    worker_env: dict[str, str],
) -> None:
    """Two ingest stages of one group: the second's arrival revokes the first's partitions,
    whose handed-on offsets are committed then (not a minute later), so the second starts
    after them and appends no request twice."""
    settings = stage_settings(worker_env, ingest_commit_interval_s=60)
    first, second = Ingest(settings, RULES), Ingest(settings, RULES)
    names = [f"m{p}" for p in range(PARTITIONS)]
    for p, name in enumerate(names):
        publish(worker_env, p, [good(name)])
    first.start()
    try:
        wait_for(
            "the first stage's requests", lambda: sorted(handed_on(settings)) == names or None, 60
        )
        assert committed(worker_env, first.group) == {}
        second.start()
        wait_for(
            "the revoked partitions committed",
            lambda: committed(worker_env, first.group) == {p: 1 for p in range(PARTITIONS)} or None,
            30,  # the interval is 60 s: only the revocation commits this soon
        )
        later = [f"n{p}" for p in range(PARTITIONS)]
        for p, name in enumerate(later):
            publish(worker_env, p, [good(name)])
        wait_for(
            "the later events handed on",
            lambda: len(handed_on(settings)) >= 2 * PARTITIONS or None,
            60,
        )
        time.sleep(1.0)  # a duplicate would be appended by now
        assert sorted(handed_on(settings)) == sorted(names + later)  # each exactly once
    finally:
        second.stop()
        first.stop()


def test_a_batch_is_what_the_fetch_brought_without_waiting_again(
    worker_env: dict[str, str],
) -> None:
    """The broker holds ingest's fetch for 64 KB or ``batch_wait_s``; once it answers, the
    stage takes what it brought at once. It used to wait ``batch_wait_s`` more for a full
    batch, which added that to every record's hop below ``batch_max`` records a fetch."""
    settings = stage_settings(worker_env, batch_wait_s=1.0)  # the most the setting allows
    stage = Ingest(settings, RULES)
    consumer = Consumer(stage.consumer_config())
    consumer.subscribe([stage.raw_topic])
    try:
        publish(worker_env, 0, [good("warm")])
        batch: list[Message] = []
        deadline = time.monotonic() + 60
        while not batch and time.monotonic() < deadline:  # joined, positioned, fetching
            batch = stage.next_batch(consumer)
        assert [m.value() for m in batch] == [good("warm")]
        bodies = [good(f"f{i:03}") for i in range(400)]  # ~100 KB: past the 64 KB a fetch waits for
        assert sum(map(len, bodies)) > 65_536
        producer = Producer({"bootstrap.servers": worker_env["OMNISTITCH_BOOTSTRAP_SERVERS"]})
        for body in bodies:
            producer.produce(raw_topic(worker_env), value=body, partition=0)
        assert producer.flush(15) == 0
        started = time.monotonic()
        batch = []
        while not batch and time.monotonic() - started < 30:  # an idle poll returns nothing
            batch = stage.next_batch(consumer)
        elapsed = time.monotonic() - started
        assert 0 < len(batch) < settings.batch_max  # a fetch's worth, not a full batch
        assert [m.value() for m in batch] == bodies[: len(batch)]
        # waiting for a full batch took batch_wait_s (1 s) on top; a fetch's worth takes ms
        assert elapsed < 0.8, f"took {elapsed:.2f}s: waited for a full batch"
    finally:
        consumer.close()
