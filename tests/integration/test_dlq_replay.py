"""``omnistitch dlq replay`` against the real broker: dry run, reason filter, limit."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

from confluent_kafka import Consumer, Producer

from omnistitch.settings import KafkaSettings
from omnistitch.topics import ensure_topics
from tests.processes import REPO


def dead_letter(reason: str, key: bytes | None, value: bytes) -> bytes:
    return json.dumps(
        {
            "stage": "ingest",
            "reason": reason,
            "detail": "...",
            "dead_lettered_at": "2026-03-01T12:00:00+00:00",
            "original_key_b64": None if key is None else base64.b64encode(key).decode(),
            "original_value_b64": base64.b64encode(value).decode(),
        }
    ).encode()


def replay(env: dict[str, str], *args: str) -> list[dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-m", "omnistitch", "dlq", "replay", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def read_all(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes | None, bytes | None]]:
    """Every record on ``topic`` once ``expected`` of them arrived (then 1 s for extras)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    out: list[tuple[bytes | None, bytes | None]] = []
    idle = 0
    try:
        for _ in range(120):
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                idle += 1
                if len(out) >= expected and idle >= 2:
                    break
                continue
            idle = 0
            out.append((msg.key(), msg.value()))
    finally:
        consumer.close()
    return out


def test_replay_republishes_the_chosen_dead_letters(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique_prefix)
    ensure_topics(settings)
    env = {
        "OMNISTITCH_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "OMNISTITCH_TOPIC_PREFIX": unique_prefix,
    }
    letters = [
        (b"k1", dead_letter("invalid_event", b"email:a@x.io", b'{"event_id": "e1"}')),
        (b"k2", dead_letter("no_usable_identifier", b"phone:null", b'{"event_id": "e2"}')),
        (None, b"{not a dead letter"),
        (b"k3", dead_letter("invalid_event", None, b'{"event_id": "e3"}')),
    ]
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for key, value in letters:
        producer.produce(settings.topic("raw.events.dlq"), key=key, value=value)
    assert producer.flush(15) == 0

    # A dry run lists, publishes nothing.
    lines = replay(env, "--dry-run")
    assert [line.get("event_id") for line in lines if "reason" in line] == ["e1", "e2", "e3"]
    assert lines[-1] == {
        "dry_run": True,
        "scanned": 4,
        "matched": 3,
        "replayed": 0,
        "invalid": 1,
        "by_reason": {"invalid_event": 2, "no_usable_identifier": 1},
    }
    assert "a@x.io" not in json.dumps(lines)  # the originals carry personal data

    # One reason, at most one record.
    lines = replay(env, "--reason", "invalid_event", "--limit", "1")
    assert lines[-1]["replayed"] == 1
    assert lines[-1]["by_reason"] == {"invalid_event": 1}
    # Then every invalid event (a replay commits nothing, so e1 is replayed again).
    lines = replay(env, "--reason", "invalid_event")
    assert lines[-1]["replayed"] == 2

    raw = read_all(kafka_bootstrap, settings.topic("raw.events"), expected=3)
    assert sorted(raw, key=lambda r: r[1] or b"") == [
        (b"email:a@x.io", b'{"event_id": "e1"}'),
        (b"email:a@x.io", b'{"event_id": "e1"}'),
        (None, b'{"event_id": "e3"}'),
    ]
