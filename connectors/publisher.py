"""Publishing keyed records to Kafka and awaiting the broker's acknowledgement.

A connector answers its caller only after :meth:`Publisher.publish` returned, so an
accepted request is durably on the broker (``acks=all``, idempotent producer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

log = logging.getLogger(__name__)

#: After a broker outage, how often the poll thread asks for metadata to notice recovery.
_PROBE_INTERVAL_S = 1.0


class PublishUnavailable(Exception):
    """The records could not be acknowledged; the caller should retry later."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Publisher(Protocol):
    """Something that durably publishes ``(key, value)`` records to a topic."""

    async def publish(self, topic: str, records: Sequence[tuple[str, bytes]]) -> None:
        """Return once every record is acknowledged; raise :class:`PublishUnavailable`."""
        ...

    def healthy(self) -> bool:
        """True while records can be expected to be acknowledged."""
        ...

    def close(self) -> None:
        """Flush what is in flight (bounded) and release resources."""
        ...


def producer_config(bootstrap_servers: str, ack_timeout_s: float = 10.0) -> dict[str, Any]:
    """How every connector produces raw events (also how the benchmark offers its load)."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        # Partition keys the way the Java clients, aiokafka and faust do, so a key lands
        # on the same partition whoever produces it (librdkafka's default is CRC32).
        "partitioner": "murmur2_random",
        # Give up on a record a little after the caller stopped waiting for it.
        "message.timeout.ms": int(ack_timeout_s * 1000) + 5000,
    }


class KafkaPublisher:
    """A confluent-kafka producer driven by a daemon poll thread, awaited from asyncio."""

    def __init__(
        self,
        bootstrap_servers: str,
        ack_timeout_s: float = 10.0,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self._ack_timeout_s = ack_timeout_s
        self._fatal: str | None = None
        self._brokers_down = False
        config: dict[str, Any] = {
            **producer_config(bootstrap_servers, ack_timeout_s),
            "error_cb": self._on_error,
            "logger": logging.getLogger("connectors.publisher.librdkafka"),
            **(extra_config or {}),
        }
        self._producer = Producer(config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-publisher", daemon=True)
        self._thread.start()

    async def publish(self, topic: str, records: Sequence[tuple[str, bytes]]) -> None:
        """Produce every record and wait until the broker acknowledged all of them."""
        if self._stop.is_set():
            raise PublishUnavailable("closed")
        if self._fatal is not None:
            raise PublishUnavailable(f"broker_error: {self._fatal}")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[KafkaError | None]] = []
        for key, value in records:
            future: asyncio.Future[KafkaError | None] = loop.create_future()
            try:
                self._producer.produce(
                    topic, value=value, key=key, on_delivery=_resolver(loop, future)
                )
            except BufferError as exc:
                raise PublishUnavailable("queue_full") from exc
            except KafkaException as exc:
                raise PublishUnavailable(f"broker_error: {exc.args[0]}") from exc
            futures.append(future)
        try:
            errors = await asyncio.wait_for(asyncio.gather(*futures), self._ack_timeout_s)
        except TimeoutError as exc:
            raise PublishUnavailable("ack_timeout") from exc
        for err in errors:
            if err is not None:
                raise PublishUnavailable(f"broker_error: {err.str()}")
        self._brokers_down = False

    def healthy(self) -> bool:
        """False after a fatal producer error, while all brokers are down, or once closed."""
        return self._fatal is None and not self._brokers_down and self._thread.is_alive()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the poll thread, flush for at most ``timeout_s``, then drop what is left."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        remaining = self._producer.flush(timeout_s)
        if remaining:
            log.warning("closing with %d records not acknowledged; dropping them", remaining)
            self._producer.purge()
            self._producer.poll(0)
        self._producer.close()

    def _poll_loop(self) -> None:
        last_probe = 0.0
        while not self._stop.is_set():
            self._producer.poll(0.1)
            if self._brokers_down and time.monotonic() - last_probe >= _PROBE_INTERVAL_S:
                last_probe = time.monotonic()
                self._probe()

    def _probe(self) -> None:
        try:
            self._producer.list_topics(timeout=_PROBE_INTERVAL_S)
        except KafkaException:
            return
        self._brokers_down = False

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err.str()
            log.error("fatal producer error: %s", err.str())
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._brokers_down = True
            log.warning("all brokers down: %s", err.str())
        else:
            log.info("producer error: %s", err.str())


def _resolver(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[KafkaError | None]
) -> Callable[[KafkaError | None, Message], None]:
    """A delivery callback (called on the poll thread) that resolves ``future`` on ``loop``."""

    def set_result(err: KafkaError | None) -> None:
        if not future.done():
            future.set_result(err)

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        # RuntimeError: the loop is closed, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(set_result, err)

    return on_delivery


class InMemoryPublisher:
    """A :class:`Publisher` for tests: keeps records, or fails with a given reason."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, bytes]] = []
        self.fail_reason: str | None = None
        self.is_healthy = True
        self.closed = False

    async def publish(self, topic: str, records: Sequence[tuple[str, bytes]]) -> None:
        """Store ``(topic, key, value)`` for every record, or raise the configured failure."""
        if self.fail_reason is not None:
            raise PublishUnavailable(self.fail_reason)
        self.records.extend((topic, key, value) for key, value in records)

    def healthy(self) -> bool:
        """Whatever ``is_healthy`` says."""
        return self.is_healthy

    def close(self) -> None:
        """Mark the publisher closed."""
        self.closed = True
