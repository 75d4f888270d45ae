"""``omnistitch connector run NAME``: validate the configuration, then serve until stopped."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.base import Connector, load_connector
from connectors.publisher import KafkaPublisher
from omnistitch.kafka_client import client_config
from omnistitch.logs import setup_logging
from omnistitch.settings import KafkaSettings, load
from omnistitch.topics import RAW_EVENTS, ensure_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A connector with its validated settings, not yet started."""

    connector: Connector[Any]
    kafka: KafkaSettings


def prepare(name: str, env_file: Path | None = None) -> Prepared:
    """Find the connector and validate every setting it needs.

    Raises ``UnknownConnector`` or ``SettingsError`` (the caller exits with status 2).
    """
    cls = load_connector(name)
    settings = load(cls.settings_class, env_file)
    kafka = load(KafkaSettings, env_file)
    return Prepared(cls(settings), kafka)


def run(prepared: Prepared) -> None:
    """Create the topics, then serve until SIGINT/SIGTERM; close the producer on the way out."""
    connector, kafka = prepared.connector, prepared.kafka
    setup_logging(kafka.log_level)
    ensure_topics(kafka)
    publisher = KafkaPublisher(
        kafka.bootstrap_servers,
        connector.settings.ack_timeout_s,
        extra_config=client_config(kafka),
    )
    exit_cleanly_on_sigterm()
    log.info("connector %s starting", connector.name)
    try:
        asyncio.run(connector.serve(kafka.topic(RAW_EVENTS), publisher))
    finally:
        publisher.close()


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit(0)``, so ``finally`` blocks (closing the producer) run.

    uvicorn re-raises a SIGTERM it handled once it has shut down; without this the process
    would die by the signal and skip flushing what is still in flight.
    """
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)
