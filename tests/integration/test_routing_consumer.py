"""``omnistitch routing-consumer`` against the real broker, as a real process: contexts in,
exact routing hints, a tombstone and a dead letter out, offsets committed, and it lives on.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, Producer
from prometheus_client.parser import text_string_to_metric_families

from omnistitch import dlq
from omnistitch.settings import KafkaSettings
from schemas.context import Routing, RoutingHint
from tests.conftest import free_port
from tests.context_samples import context, repeat_caller, vip_spanish_speaker
from tests.offsets import committed_to_end
from tests.processes import Process, wait_for

pytestmark = pytest.mark.kafka

Record = tuple[str | None, bytes | None]


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(15) == 0


def read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 60) -> list[Record]:
    """Every record of ``topic`` from the beginning once ``expected`` arrived (then 2 s more
    for extras); each key's records in their order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Record] = []
    deadline = time.monotonic() + timeout_s
    quiet_until: float | None = None
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                key = msg.key()
                out.append((None if key is None else key.decode(), msg.value()))
                quiet_until = None
            if len(out) >= expected:
                quiet_until = quiet_until or time.monotonic() + 2.0
                if time.monotonic() > quiet_until:
                    break
    finally:
        consumer.close()
    return out


def hints(records: list[Record]) -> dict[str, list[dict[str, object] | None]]:
    by_key: dict[str, list[dict[str, object] | None]] = {}
    for key, value in records:
        assert key is not None
        body = None if value is None else RoutingHint.model_validate_json(value).model_dump()
        by_key.setdefault(key, []).append(body)
    return by_key


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return None
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def own_errors(process: Process) -> list[dict[str, str]]:
    """The ERROR lines the consumer itself logged (not librdkafka's transient ones)."""
    lines = [json.loads(line) for line in process.log_path.read_text().splitlines()]
    return [
        line
        for line in lines
        if line["level"] == "ERROR" and line["logger"] == "omnistitch.routing_consumer"
    ]


def test_routing_consumer_publishes_hints_tombstones_and_dead_letters(
    worker_env: dict[str, str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=worker_env["OMNISTITCH_TOPIC_PREFIX"]
    )
    source = settings.topic("customer.context")
    group = f"{settings.topic_prefix}routing"
    port = free_port()
    env = {
        **worker_env,
        "OMNISTITCH_ROUTING_GROUP_ID": group,
        "OMNISTITCH_ROUTING_LANGUAGE_QUEUES": "es=support-es,fr=support-fr",
        "OMNISTITCH_ROUTING_DEFAULT_QUEUE": "general",
        "OMNISTITCH_ROUTING_METRICS_PORT": str(port),
    }
    repeat = repeat_caller("cus_repeat")
    merged = context("cus_merged", version=2)
    produce(
        kafka_bootstrap,
        source,
        [
            (b"cus_repeat", repeat.model_dump_json().encode()),
            (b"cus_vip", vip_spanish_speaker("cus_vip").model_dump_json().encode()),
            (b"cus_merged", merged.model_dump_json().encode()),
            (b"cus_merged", None),  # merged away: the survivor lists it in merged_from
            (b"cus_garbage", b'{"customer_id": "cus_garbage", "version": '),
            # A new version of the repeat caller that changes nothing a router reads.
            (b"cus_repeat", repeat.model_copy(update={"version": 8}).model_dump_json().encode()),
        ],
    )

    consumer = Process("routing-consumer", env, tmp_path / "routing.log").start()
    try:
        out = hints(read_all(kafka_bootstrap, settings.topic("routing.hints"), expected=4))
        assert out == {
            "cus_repeat": [
                {
                    "schema_version": 1,
                    "customer_id": "cus_repeat",
                    "priority": "high",
                    "reasons": ["repeat_contact"],
                    "preferred_agent_id": "agent-dana",
                    "language": None,
                    "suggested_queue": "billing",
                    "open_conversation_channels": ["chat"],
                    "context_version": 7,
                }
            ],
            "cus_vip": [
                {
                    "schema_version": 1,
                    "customer_id": "cus_vip",
                    "priority": "high",
                    "reasons": ["vip", "unresolved_self_service"],
                    "preferred_agent_id": None,
                    "language": "es",
                    "suggested_queue": "support-es",
                    "open_conversation_channels": [],
                    "context_version": 12,
                }
            ],
            "cus_merged": [
                {
                    "schema_version": 1,
                    "customer_id": "cus_merged",
                    "priority": "normal",
                    "reasons": [],
                    "preferred_agent_id": None,
                    "language": None,
                    "suggested_queue": "general",
                    "open_conversation_channels": [],
                    "context_version": 2,
                },
                None,  # the tombstone
            ],
        }, consumer.log_tail()

        letters = read_all(kafka_bootstrap, settings.topic("routing.hints.dlq"), expected=1)
        assert [key for key, _ in letters] == ["cus_garbage"]
        letter = dlq.decode(letters[0][1])
        assert letter == dlq.DeadLetter(
            reason="invalid_json",
            stage="routing",
            key=b"cus_garbage",
            value=b'{"customer_id": "cus_garbage", "version": ',
        )
        record = json.loads(letters[0][1] or b"")
        assert record["topic"] == source
        assert "EOF while parsing" in record["detail"]

        assert consumer.alive(), consumer.log_tail()
        errors = own_errors(consumer)
        assert len(errors) == 1, errors
        assert errors[0]["customer_id"] == "cus_garbage"
        assert "invalid_json" in errors[0]["message"]

        # Counted once acknowledged, and the offsets committed after that.
        def counted() -> dict[str, float] | None:
            samples = metrics(port) or {}
            by_outcome = {
                dict(labels)["outcome"]: value
                for (name, labels), value in samples.items()
                if name == "omnistitch_routing_records_total"
            }
            return by_outcome if sum(by_outcome.values()) >= 6 else None

        assert wait_for("metrics", counted, 30, consumer) == {
            "published": 3.0,
            "tombstone": 1.0,
            "unchanged": 1.0,
            "dead_lettered": 1.0,
        }
        dead = (metrics(port) or {}).get(
            ("omnistitch_dead_letters_total", (("reason", "invalid_json"), ("stage", "routing")))
        )
        assert dead == 1.0
        wait_for("committed offsets", lambda: committed_to_end(kafka_bootstrap, group, source), 30)

        # SIGTERM: a clean exit.
        assert consumer.stop(signal.SIGTERM) == 0, consumer.log_tail()
        assert "routing consumer stopped" in consumer.log_tail()

        # A restart resumes after the committed offsets: only the new record is handled.
        calmer = vip_spanish_speaker("cus_vip").model_copy(
            update={"version": 13, "routing": Routing(language="es")}
        )
        produce(kafka_bootstrap, source, [(b"cus_vip", calmer.model_dump_json().encode())])
        consumer = Process("routing-consumer", env, tmp_path / "routing-2.log").start()
        out = hints(read_all(kafka_bootstrap, settings.topic("routing.hints"), expected=5))
        assert {k: len(v) for k, v in out.items()} == {
            "cus_repeat": 1,
            "cus_merged": 2,
            "cus_vip": 2,
        }, out
        assert out["cus_vip"][-1] == {
            "schema_version": 1,
            "customer_id": "cus_vip",
            "priority": "normal",
            "reasons": [],
            "preferred_agent_id": None,
            "language": "es",
            "suggested_queue": "support-es",
            "open_conversation_channels": [],
            "context_version": 13,
        }
        assert consumer.alive(), consumer.log_tail()
        assert own_errors(consumer) == []
    finally:
        consumer.stop()
