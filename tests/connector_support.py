"""Helpers for the connector tests: in-process ASGI client, uvicorn thread, Kafka read-back."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple
from urllib.parse import urlencode

import httpx
import uvicorn
from confluent_kafka import Consumer
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

from connectors.publisher import InMemoryPublisher
from schemas.events import RawEvent
from tests.conftest import free_port

TOPIC = "test.raw.events"


class AsgiClient:
    """A synchronous facade over ``httpx.AsyncClient`` + ``ASGITransport`` (no sockets).

    The transport re-raises any exception of the app, so a crash fails the test instead
    of passing as a 500.
    """

    def __init__(self, app: FastAPI, base_url: str = "http://testserver") -> None:
        self.app = app
        self.base_url = base_url

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=self.base_url) as c:
                return await c.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


def sample_value(exposition: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly ``labels`` in a ``/metrics`` text
    (None: not there)."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def metric(client: AsgiClient, name: str, **labels: str) -> float:
    """The value of one sample of the app's ``/metrics``."""
    value = sample_value(client.get("/metrics").text, name, **labels)
    if value is None:
        raise AssertionError(f"no sample {name}{labels}")
    return value


def published(publisher: InMemoryPublisher, topic: str = TOPIC) -> list[tuple[str, RawEvent]]:
    """``(key, event)`` of every record the publisher received (all on ``topic``)."""
    assert {t for t, _, _ in publisher.records} <= {topic}
    return [(key, RawEvent.model_validate_json(value)) for _, key, value in publisher.records]


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free port in a background thread; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="connector", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped while starting"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class Record(NamedTuple):
    key: str
    event: RawEvent
    partition: int


def consume(bootstrap: str, topic: str, count: int, timeout_s: float = 30) -> list[Record]:
    """Read exactly ``count`` records of ``topic`` from the beginning (fails on fewer)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            key, value, partition = msg.key(), msg.value(), msg.partition()
            assert key is not None
            assert value is not None
            assert partition is not None
            records.append(Record(key.decode(), RawEvent.model_validate_json(value), partition))
        # Nothing more than promised: poll briefly for extras.
        extra = consumer.poll(1.0)
        assert extra is None or extra.error() is not None, "more records than expected"
    finally:
        consumer.close()
    assert len(records) == count, f"expected {count} records, got {len(records)}"
    return records


def twilio_post(base: str, path: str, params: dict[str, str], token: str) -> httpx.Response:
    """POST a webhook as Twilio sends it: form-encoded, signed with the account's token
    by the twilio package's own ``RequestValidator``."""
    url = f"{base}{path}"
    signature = RequestValidator(token).compute_signature(url, params)
    return httpx.post(
        url,
        content=urlencode(params),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        },
        timeout=30,
    )


@contextmanager
def smtp_server(handler: Any, max_bytes: int = 64 * 1024) -> Iterator[int]:
    """Run the email connector's SMTP server with ``handler`` in a thread; yield its port."""
    from connectors.email.smtp import start_smtp

    port = free_port()
    ready = threading.Event()
    stops: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
    errors: list[BaseException] = []

    async def main() -> None:
        stop = asyncio.Event()
        stops.append((asyncio.get_running_loop(), stop))
        server = await start_smtp(handler, "127.0.0.1", port, max_bytes, "test.local")
        ready.set()
        try:
            await stop.wait()
        finally:
            server.close()
            await server.wait_closed()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="smtp", daemon=True)
    thread.start()
    assert ready.wait(10), "SMTP server did not start"
    assert not errors, errors
    try:
        yield port
    finally:
        loop, stop = stops[0]
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        assert not errors, errors
