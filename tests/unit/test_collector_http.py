"""The collector's HTTP contract, with an in-memory publisher instead of Kafka.

Requests go through httpx's ASGI transport (no sockets); it re-raises any server error, so a
500 would fail the test rather than pass as a status code.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from connectors.publisher import InMemoryPublisher
from connectors.tracking.app import create_app
from omnistitch.settings import CollectorSettings
from tests.connector_support import AsgiClient as Client
from tests.connector_support import metric, published

KEY = "wk_live_1"


def basic(username: str, password: str = "") -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


AUTH = basic(KEY)


def make_settings() -> CollectorSettings:
    return CollectorSettings(
        write_keys=["other-key", KEY], topic_prefix="test.", max_body_bytes=4096
    )


@pytest.fixture
def publisher() -> InMemoryPublisher:
    return InMemoryPublisher()


@pytest.fixture
def client(publisher: InMemoryPublisher) -> Client:
    return Client(create_app(make_settings(), publisher))


def test_track_is_published_then_acknowledged(client: Client, publisher: InMemoryPublisher) -> None:
    body = {"userId": "u1", "event": "Signed Up", "messageId": "m1"}
    response = client.post("/v1/track", json=body, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"success": True}
    [(key, event)] = published(publisher)
    assert key == "user_id:u1"
    assert (event.event_id, event.kind, event.name) == ("tracking:m1", "track", "Signed Up")
    assert event.payload == {**body, "type": "track"}


def test_response_waits_for_the_publish_to_finish() -> None:
    class GatedPublisher(InMemoryPublisher):
        def __init__(self) -> None:
            super().__init__()
            self.entered = asyncio.Event()
            self.release = asyncio.Event()

        async def publish(self, topic: str, records: Sequence[tuple[str, bytes]]) -> None:
            self.entered.set()
            await self.release.wait()
            await super().publish(topic, records)

    async def scenario() -> None:
        gated = GatedPublisher()
        transport = httpx.ASGITransport(app=create_app(make_settings(), gated))
        async with httpx.AsyncClient(transport=transport, base_url="http://collector") as http:
            request = asyncio.create_task(
                http.post("/v1/identify", json={"userId": "u1"}, headers=AUTH)
            )
            await asyncio.wait_for(gated.entered.wait(), 5)
            await asyncio.sleep(0.05)
            assert not request.done()
            assert gated.records == []
            gated.release.set()
            response = await asyncio.wait_for(request, 5)
        assert response.status_code == 200
        assert len(gated.records) == 1

    asyncio.run(scenario())


def test_batch_publishes_every_event_with_its_key(
    client: Client, publisher: InMemoryPublisher
) -> None:
    batch: list[dict[str, Any]] = [
        {"type": "identify", "anonymousId": "a1", "traits": {"email": "x@example.com"}},
        {"type": "page", "anonymousId": "a1", "name": "Home"},
        {"type": "alias", "userId": "u1", "previousId": "a1"},
        {"type": "screen", "userId": "u1", "name": "Cart"},
        {"type": "group", "anonymousId": "a1", "groupId": "g1"},
        {"type": "track", "anonymousId": "a1", "event": "Added"},
    ]
    response = client.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    assert response.status_code == 200
    events = published(publisher)
    assert [e.kind for _, e in events] == [m["type"] for m in batch]
    assert [k for k, _ in events] == [
        "email:x@example.com",
        "anonymous_id:a1",
        "user_id:u1",
        "user_id:u1",
        "anonymous_id:a1",
        "anonymous_id:a1",
    ]
    assert metric(client, "omnistitch_collector_events_accepted_total", kind="page") == 1


def test_import_is_an_alias_of_batch(client: Client, publisher: InMemoryPublisher) -> None:
    body = {"batch": [{"type": "track", "userId": "u1", "event": "x"}]}
    assert client.post("/v1/import", json=body, headers=AUTH).status_code == 200
    assert len(publisher.records) == 1


def test_write_key_in_the_body_is_accepted(client: Client, publisher: InMemoryPublisher) -> None:
    body = {"writeKey": KEY, "batch": [{"type": "track", "userId": "u1", "event": "x"}]}
    assert client.post("/v1/batch", json=body).status_code == 200
    [(_, event)] = published(publisher)
    assert "writeKey" not in event.payload


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("wrong-key"),
        {"Authorization": "Bearer " + KEY},
        {"Authorization": "Basic !!!not-base64"},
    ],
)
def test_missing_or_wrong_write_key_is_401(
    client: Client, publisher: InMemoryPublisher, headers: dict[str, str]
) -> None:
    response = client.post(
        "/v1/track", json={"userId": "u1", "event": "x", "writeKey": "nope"}, headers=headers
    )
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.json()["message"]
    assert response.headers["WWW-Authenticate"] == 'Basic realm="omnistitch"'
    assert publisher.records == []
    assert metric(client, "omnistitch_collector_requests_rejected_total", reason="unauthorized")


def test_unauthenticated_garbage_is_401_not_400(client: Client) -> None:
    assert client.post("/v1/track", content=b"{nope").status_code == 401


def test_invalid_batch_item_is_400_naming_the_field(
    client: Client, publisher: InMemoryPublisher
) -> None:
    batch = [
        {"type": "track", "userId": "u1", "event": "ok"},
        {"type": "track", "event": "no identity"},
    ]
    response = client.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_request"
    assert [e["field"] for e in body["errors"]] == ["batch.1.userId"]
    assert "anonymousId" in body["errors"][0]["message"]
    assert publisher.records == []  # all or nothing
    rejected = metric(
        client, "omnistitch_collector_requests_rejected_total", reason="invalid_request"
    )
    assert rejected == 1


@pytest.mark.parametrize(
    "content", [b"{not json", b"", b"[1, 2", b'{"userId": NaN}', b"\xff\xfe{}", b"[" * 100_000]
)
def test_malformed_json_is_400(client: Client, content: bytes) -> None:
    settings = make_settings().model_copy(update={"max_body_bytes": 200_000})
    client = Client(create_app(settings, InMemoryPublisher()))
    response = client.post(
        "/v1/track", content=content, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.json()["errors"][0]["field"] == "body"


def test_non_object_body_and_wrong_type_are_400(client: Client) -> None:
    response = client.post("/v1/track", json=[{"userId": "u"}], headers=AUTH)
    assert (response.status_code, response.json()["errors"][0]["field"]) == (400, "body")
    response = client.post("/v1/track", json={"type": "page", "userId": "u"}, headers=AUTH)
    assert (response.status_code, response.json()["errors"][0]["field"]) == (400, "type")


def test_deeply_nested_properties_are_400_not_500(client: Client) -> None:
    nested: dict[str, Any] = {}
    for _ in range(300):
        nested = {"a": nested}
    body = {"batch": [{"type": "track", "userId": "u", "event": "x", "properties": nested}]}
    response = client.post("/v1/batch", json=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "batch.0"


def test_gzip_body_is_accepted(client: Client, publisher: InMemoryPublisher) -> None:
    body = {"batch": [{"type": "track", "userId": "u1", "event": "zipped"}]}
    response = client.post(
        "/v1/batch",
        content=gzip.compress(json.dumps(body).encode()),
        headers={**AUTH, "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    [(_, event)] = published(publisher)
    assert event.name == "zipped"


@pytest.mark.parametrize(
    ("content", "encoding"),
    [(b"not gzip at all", "gzip"), (gzip.compress(b'{"a": 1}')[:-12], "gzip"), (b"{}", "br")],
)
def test_bad_encoding_is_400(client: Client, content: bytes, encoding: str) -> None:
    response = client.post(
        "/v1/track", content=content, headers={**AUTH, "Content-Encoding": encoding}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_body_over_the_limit_is_413(client: Client, publisher: InMemoryPublisher) -> None:
    big = {"userId": "u1", "event": "x", "properties": {"pad": "x" * 5000}}
    response = client.post("/v1/track", json=big, headers=AUTH)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    # A small gzip body that inflates past the limit is refused too.
    bomb = gzip.compress(json.dumps(big).encode())
    assert len(bomb) < 4096
    response = client.post("/v1/track", content=bomb, headers={**AUTH, "Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert publisher.records == []
    assert metric(client, "omnistitch_collector_requests_rejected_total", reason="too_large") == 2


def test_streamed_body_over_the_limit_is_413(client: Client) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    response = client.post("/v1/track", content=chunks(), headers=AUTH)
    assert response.status_code == 413


def test_publish_failure_is_503_with_retry_after(
    client: Client, publisher: InMemoryPublisher
) -> None:
    publisher.fail_reason = "ack_timeout"
    response = client.post("/v1/track", json={"userId": "u1", "event": "x"}, headers=AUTH)
    assert response.status_code == 503
    assert response.json() == {"error": "unavailable", "reason": "ack_timeout"}
    assert response.headers["Retry-After"] == "5"
    assert metric(client, "omnistitch_collector_requests_rejected_total", reason="unavailable") == 1
    assert metric(client, "omnistitch_collector_events_accepted_total", kind="track") == 0


def test_metrics_count_accepted_events_and_publish_time(client: Client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert metric(client, "omnistitch_collector_events_accepted_total", kind="track") == 0
    for _ in range(3):
        client.post("/v1/track", json={"userId": "u1", "event": "x"}, headers=AUTH)
    client.post("/v1/identify", json={"userId": "u1"}, headers=AUTH)
    assert metric(client, "omnistitch_collector_events_accepted_total", kind="track") == 3
    assert metric(client, "omnistitch_collector_events_accepted_total", kind="identify") == 1
    assert metric(client, "omnistitch_collector_publish_seconds_count") == 4


def test_each_app_has_its_own_registry(publisher: InMemoryPublisher) -> None:
    first = Client(create_app(make_settings(), publisher))
    second = Client(create_app(make_settings(), publisher))
    first.post("/v1/track", json={"userId": "u1", "event": "x"}, headers=AUTH)
    assert metric(first, "omnistitch_collector_events_accepted_total", kind="track") == 1
    assert metric(second, "omnistitch_collector_events_accepted_total", kind="track") == 0


def test_health_and_readiness(client: Client, publisher: InMemoryPublisher) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    publisher.is_healthy = False
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_validation_handler_answers_400_not_422() -> None:
    app: FastAPI = create_app(make_settings(), InMemoryPublisher())

    @app.get("/typed")
    async def typed(n: int) -> dict[str, int]:
        return {"n": n}

    response = Client(app).get("/typed", params={"n": "abc"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "query.n"
