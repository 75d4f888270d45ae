"""Shared fixtures. The broker is real: started once per session by deploy/local/kafka.sh.

The suite never skips for a missing broker: if it will not start, every Kafka test errors.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "deploy" / "local" / "kafka.sh"
#: The suite's broker listens apart from a developer's demo broker (9092).
TEST_KAFKA_PORT = int(os.environ.get("OMNISTITCH_TEST_KAFKA_PORT", "19092"))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Start (or reuse) the local KRaft broker for the test session; yield host:port."""
    env = {**os.environ, "OMNISTITCH_KAFKA_PORT": str(TEST_KAFKA_PORT)}
    proc = subprocess.run(
        [str(LAUNCHER), "start"], env=env, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        pytest.fail(
            f"the local Kafka broker did not start (exit {proc.returncode}):\n{proc.stderr}",
            pytrace=False,
        )
    yield proc.stdout.strip().splitlines()[-1]
    if os.environ.get("OMNISTITCH_KEEP_BROKER") != "1":
        subprocess.run([str(LAUNCHER), "stop"], env=env, capture_output=True, timeout=120)


@pytest.fixture
def unique_prefix() -> str:
    """A topic prefix (and app id seed) no other test shares."""
    return f"t{uuid.uuid4().hex[:10]}."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def worker_env(kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a worker of its own: own topics, consumer group, state dir and port."""
    from omnistitch.settings import KafkaSettings
    from omnistitch.topics import ensure_topics

    env = {
        "OMNISTITCH_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "OMNISTITCH_TOPIC_PREFIX": unique_prefix,
        "OMNISTITCH_APP_ID": unique_prefix.rstrip(".") + "-app",
        "OMNISTITCH_STATE_DIR": str(tmp_path / "state"),
        "OMNISTITCH_API_PORT": str(free_port()),
    }
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique_prefix))
    return env
