"""A broker outage: senders get 503 while it is down, and nothing acknowledged is lost.

Runs its own broker (not the suite's shared one) so it can stop and restart it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer

from connectors.publisher import KafkaPublisher
from connectors.tracking.app import create_app
from omnistitch.settings import CollectorSettings
from omnistitch.topics import RAW_EVENTS, ensure_topics
from schemas.events import RawEvent
from tests.conftest import LAUNCHER
from tests.connector_support import serve

KEY = "wk_outage"


def _two_free_ports() -> int:
    """A port whose successor is free too (the launcher puts the controller on port + 1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no pair of free ports")


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "OMNISTITCH_KAFKA_PORT": str(_two_free_ports()),
        "OMNISTITCH_KAFKA_HOME": str(tmp_path / "kafka"),
        "OMNISTITCH_KAFKA_HEAP": "384m",
    }
    yield env
    subprocess.run([str(LAUNCHER), "stop"], env=env, capture_output=True, timeout=120)


def launcher(env: dict[str, str], action: str) -> str:
    proc = subprocess.run(
        [str(LAUNCHER), action], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


def batch(tag: str, n: int) -> list[dict[str, object]]:
    return [
        {
            "type": "track",
            "anonymousId": f"a-{tag}-{i}",
            "event": "Viewed",
            "messageId": f"{tag}-{i}",
        }
        for i in range(n)
    ]


def test_acknowledged_events_survive_a_broker_outage(own_broker: dict[str, str]) -> None:
    bootstrap = launcher(own_broker, "start")
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = CollectorSettings(
        bootstrap_servers=bootstrap, topic_prefix=prefix, write_keys=[KEY], ack_timeout_s=3
    )
    ensure_topics(settings)
    publisher = KafkaPublisher(bootstrap, settings.ack_timeout_s)
    acknowledged: set[str] = set()
    try:
        with serve(create_app(settings, publisher)) as base:
            url, auth = f"{base}/v1/batch", (KEY, "")
            before = httpx.post(url, json={"batch": batch("before", 5)}, auth=auth, timeout=30)
            assert before.status_code == 200
            acknowledged |= {f"tracking:before-{i}" for i in range(5)}

            launcher(own_broker, "stop")
            during = httpx.post(url, json={"batch": batch("during", 3)}, auth=auth, timeout=30)
            assert during.status_code == 503
            assert during.headers["Retry-After"]
            assert during.json()["error"] == "unavailable"

            launcher(own_broker, "start")
            # A client retries after Retry-After; the broker is back within a few tries.
            deadline = time.monotonic() + 90
            while True:
                after = httpx.post(url, json={"batch": batch("after", 5)}, auth=auth, timeout=30)
                if after.status_code == 200 or time.monotonic() > deadline:
                    break
                assert after.status_code == 503
                time.sleep(1)
            assert after.status_code == 200
            acknowledged |= {f"tracking:after-{i}" for i in range(5)}
    finally:
        publisher.close()

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"r-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([prefix + RAW_EVENTS])
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    try:
        while not acknowledged <= seen and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                seen.add(RawEvent.model_validate_json(msg.value() or b"").event_id)
    finally:
        consumer.close()
    assert acknowledged - seen == set(), "acknowledged events were lost"
    # What was refused with 503 may or may not have landed; it was never promised.
    assert seen - acknowledged <= {f"tracking:during-{i}" for i in range(3)}
