"""The collector against the real local broker: HTTP in, acknowledged records on raw.events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from segment.analytics.client import Client as SegmentClient

from connectors.publisher import KafkaPublisher
from connectors.tracking.app import create_app
from omnistitch.settings import CollectorSettings
from omnistitch.topics import RAW_EVENTS, ensure_topics
from schemas.events import RawEvent
from tests.connector_support import Record, serve
from tests.connector_support import consume as consume_topic

pytestmark = pytest.mark.kafka

KEY = "wk_integration"
AUTH = (KEY, "")


@pytest.fixture
def settings(kafka_bootstrap: str, unique_prefix: str) -> CollectorSettings:
    settings = CollectorSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=unique_prefix,
        raw_partitions=3,
        write_keys=[KEY],
        ack_timeout_s=15,
    )
    ensure_topics(settings)
    return settings


@pytest.fixture
def publisher(settings: CollectorSettings) -> Iterator[KafkaPublisher]:
    publisher = KafkaPublisher(settings.bootstrap_servers, settings.ack_timeout_s)
    yield publisher
    publisher.close()


def consume(settings: CollectorSettings, count: int) -> list[Record]:
    """Read ``count`` records from the raw topic, from the beginning; values must be RawEvents."""
    return consume_topic(settings.bootstrap_servers, settings.topic(RAW_EVENTS), count)


def test_batch_lands_on_the_raw_topic_keyed_by_sender(
    settings: CollectorSettings, publisher: KafkaPublisher
) -> None:
    batch = [
        {"type": "identify", "userId": "u-1", "traits": {"email": "ann@example.com"}},
        {"type": "track", "anonymousId": "a-1", "event": "Viewed", "messageId": "m-2"},
        {"type": "page", "anonymousId": "a-1", "context": {"page": {"url": "https://x.io/"}}},
        {"type": "alias", "userId": "u-1", "previousId": "a-1"},
        {"type": "identify", "anonymousId": "a-2", "traits": {"phone": "+15550100"}},
    ]
    with serve(create_app(settings, publisher)) as base:
        assert httpx.get(f"{base}/readyz").status_code == 200
        response = httpx.post(f"{base}/v1/batch", json={"batch": batch}, auth=AUTH, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json() == {"success": True}
        metrics = httpx.get(f"{base}/metrics").text
        assert 'omnistitch_collector_events_accepted_total{kind="identify"} 2.0' in metrics

    records = consume(settings, len(batch))
    by_kind: dict[str, list[tuple[str, RawEvent]]] = {}
    for record in records:
        by_kind.setdefault(record.event.kind, []).append((record.key, record.event))
    assert sorted(by_kind) == ["alias", "identify", "page", "track"]
    assert sorted(k for k, _ in by_kind["identify"]) == ["phone:+15550100", "user_id:u-1"]
    assert by_kind["track"] == [("anonymous_id:a-1", by_kind["track"][0][1])]
    assert by_kind["track"][0][1].event_id == "tracking:m-2"
    assert by_kind["page"][0][0] == "anonymous_id:a-1"
    assert by_kind["page"][0][1].properties["url"] == "https://x.io/"
    assert by_kind["alias"][0][0] == "user_id:u-1"
    # The same sender always lands on the same partition.
    partitions = {r.partition for r in records if r.key == "anonymous_id:a-1"}
    assert len(partitions) == 1


def test_segment_python_library_is_accepted(
    settings: CollectorSettings, publisher: KafkaPublisher
) -> None:
    with serve(create_app(settings, publisher)) as base:
        client = SegmentClient(KEY, host=base, sync_mode=True, gzip=True, max_retries=0)
        _, identify = client.identify("u-7", {"email": "zoe@example.com", "name": "Zoe"})
        _, track = client.track("u-7", "Order Completed", {"total": 30})
        _, page = client.page(anonymous_id="anon-7", name="Checkout", properties={"path": "/c"})

    records = {r.event.event_id: r for r in consume(settings, 3)}
    sent = {"identify": identify, "track": track, "page": page}
    for kind, msg in sent.items():
        event = records[f"tracking:{msg['messageId']}"].event
        assert event.kind == kind
        assert event.payload["context"]["library"]["name"] == "analytics-python"
    assert records[f"tracking:{identify['messageId']}"].key == "user_id:u-7"
    assert records[f"tracking:{track['messageId']}"].key == "user_id:u-7"
    assert records[f"tracking:{page['messageId']}"].key == "anonymous_id:anon-7"


def test_unreachable_broker_answers_503_without_crashing() -> None:
    settings = CollectorSettings(bootstrap_servers="127.0.0.1:1", write_keys=[KEY], ack_timeout_s=2)
    publisher = KafkaPublisher(settings.bootstrap_servers, settings.ack_timeout_s)

    async def scenario() -> tuple[httpx.Response, int]:
        transport = httpx.ASGITransport(app=create_app(settings, publisher))
        async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
            started = time.monotonic()
            response = await client.post(
                "/v1/track", json={"userId": "u1", "event": "x"}, auth=AUTH
            )
            assert time.monotonic() - started < 10
            ready = (await client.get("/readyz")).status_code
            for _ in range(50):
                if ready == 503:
                    break
                await asyncio.sleep(0.2)
                ready = (await client.get("/readyz")).status_code
            return response, ready

    try:
        response, ready = asyncio.run(scenario())
    finally:
        publisher.close(timeout_s=1)
    assert response.status_code == 503
    assert response.json() == {"error": "unavailable", "reason": "ack_timeout"}
    assert response.headers["Retry-After"] == "5"
    assert ready == 503
