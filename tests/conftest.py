"""Shared fixtures. The broker is real: started once per session by deploy/local/kafka.sh.

The suite never skips for a missing broker: if it will not start, every Kafka test errors.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from omnistitch.bench import remove_scratch

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "deploy" / "local" / "kafka.sh"
#: The suite's broker listens apart from a developer's demo broker (9092).
TEST_KAFKA_PORT = int(os.environ.get("OMNISTITCH_TEST_KAFKA_PORT", "19092"))


#: The launcher's settings of the session's broker (port, controller port, home), so a
#: test that runs the launcher itself (the demo) finds that broker running.
BROKER_ENV: dict[str, str] = {}
#: The kept broker's bootstrap (``OMNISTITCH_KEEP_BROKER=1``), once started; empty otherwise.
KEPT_BROKER: list[str] = []


@pytest.fixture
def broker_env(kafka_bootstrap: str) -> dict[str, str]:
    """``OMNISTITCH_KAFKA_*`` variables under which the launcher sees the session's broker."""
    return dict(BROKER_ENV)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start the local KRaft broker for the test session; yield host:port.

    By default the broker gets a fresh, empty home for this session and is stopped (and its
    data removed) at the end, so no state from an earlier run can slow or skew it: a broker
    re-opening thousands of left-over partitions takes minutes to answer. A developer who
    sets ``OMNISTITCH_KEEP_BROKER=1`` reuses one long-lived broker (and its data) between
    runs instead; ``deploy/local/kafka.sh reset`` empties it.
    """
    keep = os.environ.get("OMNISTITCH_KEEP_BROKER") == "1"
    env = {**os.environ, "OMNISTITCH_KAFKA_PORT": str(TEST_KAFKA_PORT)}
    home: Path | None = None
    if not keep:
        home = tmp_path_factory.mktemp("kafka-broker")
        env["OMNISTITCH_KAFKA_HOME"] = str(home)
        if "OMNISTITCH_TEST_KAFKA_PORT" not in os.environ and not _ports_free(
            TEST_KAFKA_PORT, TEST_KAFKA_PORT + 1
        ):
            # Another broker (a developer's kept one, say) holds the default ports.
            env["OMNISTITCH_KAFKA_PORT"] = str(free_port())
            env["OMNISTITCH_KAFKA_CONTROLLER_PORT"] = str(free_port())
    proc = subprocess.run(
        [str(LAUNCHER), "start"], env=env, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        pytest.fail(
            f"the local Kafka broker did not start (exit {proc.returncode}):\n{proc.stderr}",
            pytrace=False,
        )
    bootstrap = proc.stdout.strip().splitlines()[-1]
    KEPT_BROKER[:] = [bootstrap] if keep else []
    BROKER_ENV.clear()
    BROKER_ENV.update({k: v for k, v in env.items() if k.startswith("OMNISTITCH_KAFKA_")})
    _wait_for_group_coordinator(bootstrap)
    yield bootstrap
    if home is not None:
        subprocess.run([str(LAUNCHER), "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(home / "data", ignore_errors=True)


@pytest.fixture
def unique_prefix() -> Iterator[str]:
    """A topic prefix (and app id seed) no other test shares.

    On a kept broker (``OMNISTITCH_KEEP_BROKER=1``) the test's topics (``<prefix>*`` and
    its apps' ``<prefix without the dot>-app-*``) are deleted after it. Left there, they
    piled up on one developer's broker to 12,804 partitions and 460 MB of live heap, whose
    G1 marking then took most of a core for ~0.6 s, twice in a 20 s window, and every
    latency measured on that broker with it (docs/performance-history.md, session 20)."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    yield prefix
    if KEPT_BROKER:  # the bench's own cleanup: same names; a failure is said, not raised
        remove_scratch(KEPT_BROKER[0], prefix)


def _wait_for_group_coordinator(bootstrap: str, within_s: float = 90.0) -> None:
    """Block until consumer-group requests succeed, as on any broker that has been up a while.

    A fresh broker creates ``__consumer_offsets`` on the first group request and answers
    group requests only once its partitions are loaded; the first test must not pay that.
    (A consumer's ``committed()``, not the admin client's ``list_consumer_group_offsets``,
    which segfaults on ``NOT_COORDINATOR``: see omnistitch/lag_monitor.py.)
    """
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "omnistitch-test-warmup"})
    deadline = time.monotonic() + within_s
    try:
        while True:
            try:
                reader.committed([TopicPartition("omnistitch-test-warmup", 0)], timeout=5)
                return
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    pytest.fail(f"the group coordinator never answered: {exc}", pytrace=False)
                time.sleep(0.5)
    finally:
        reader.close()


def _ports_free(*ports: int) -> bool:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


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
