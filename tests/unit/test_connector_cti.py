"""The CTI connector: the documented schema, the mapping, and the timestamped HMAC."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.cti.app import CtiConnector, CtiSettings
from connectors.cti.events import to_raw_events
from connectors.errors import Rejected
from connectors.http import create_app
from connectors.publisher import InMemoryPublisher
from schemas.cti import CtiEventType
from schemas.events import Channel
from tests.connector_support import TOPIC, AsgiClient, metric, published

SECRET = "cti-signing-secret-0123"
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def cti(type_: str = "offered", event_id: str = "e-1", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": type_,
        "interaction_id": "call-1",
        "occurred_at": "2026-11-20T09:29:00+00:00",
        "customer": {"phone": "+14155550199", "crm_id": "crm-9"},
        **extra,
    }


def test_lifecycle_maps_to_contact_center_events() -> None:
    body = {
        "events": [
            cti("offered", "e-1", ivr_path=["main", "billing"]),
            cti("queued", "e-2", queue="billing"),
            cti("answered", "e-3", queue="billing", agent={"id": "agent-7", "name": "Sam"}),
            cti("transferred", "e-4", transfer={"kind": "warm", "to_queue": "retention"}),
            cti("ended", "e-5", disposition="resolved", talk_seconds=320.5),
            cti("abandoned", "e-6", queue="billing", wait_seconds=95),
        ]
    }
    events = to_raw_events(body, NOW)
    assert [(e.event_id, e.kind, e.name) for e in events] == [
        (f"cti:e-{i}", "contact_center", t.value)
        for i, t in zip(
            range(1, 7),
            [
                CtiEventType.OFFERED,
                CtiEventType.QUEUED,
                CtiEventType.ANSWERED,
                CtiEventType.TRANSFERRED,
                CtiEventType.ENDED,
                CtiEventType.ABANDONED,
            ],
            strict=True,
        )
    ]
    offered, queued, answered, transferred, ended, abandoned = events
    assert offered.channel is Channel.VOICE
    assert offered.properties["ivr_path"] == ["main", "billing"]
    assert [i.key for i in offered.identifiers] == ["crm_id:crm-9", "phone:+14155550199"]
    assert queued.properties["queue"] == "billing"
    assert answered.properties["agent_id"] == "agent-7"
    assert transferred.properties["transfer"] == {"kind": "warm", "to_queue": "retention"}
    assert ended.properties["disposition"] == "resolved"
    assert ended.properties["talk_seconds"] == 320.5
    assert abandoned.properties["wait_seconds"] == 95
    assert offered.occurred_at == datetime(2026, 11, 20, 9, 29, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**cti(), "type": "exploded"}, "type"),
        ({**cti(), "customer": {}}, "customer"),
        ({**cti(), "occurred_at": "2026-11-20T09:29:00"}, "occurred_at"),
        ({**cti(), "agnet": {"id": "a"}}, "agnet"),  # typos are refused, not dropped
        ({"events": [cti(), {**cti(), "interaction_id": ""}]}, "events.1.interaction_id"),
        ({"events": [cti(), {**cti(), "customer": {"name": "x"}}]}, "events.1.customer"),
        ({"events": []}, "events"),
    ],
)
def test_bad_events_are_400_naming_the_field(body: Any, field: str) -> None:
    with pytest.raises(Rejected) as info:
        to_raw_events(body, NOW)
    assert (info.value.status, info.value.field) == (400, field)


# --- HTTP ----------------------------------------------------------------------------------


def headers(body: bytes, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return {
        "Content-Type": "application/json",
        "X-Omnistitch-Timestamp": str(timestamp),
        "X-Omnistitch-Signature": "sha256=" + digest.hexdigest(),
    }


@pytest.fixture
def publisher() -> InMemoryPublisher:
    return InMemoryPublisher()


@pytest.fixture
def client(publisher: InMemoryPublisher) -> AsgiClient:
    settings = CtiSettings(signing_secret=SECRET, max_body_bytes=8192)
    return AsgiClient(create_app(CtiConnector(settings), TOPIC, publisher))


def test_signed_batch_is_published(client: AsgiClient, publisher: InMemoryPublisher) -> None:
    body = json.dumps({"events": [cti("offered", "e-1"), cti("answered", "e-2")]}).encode()
    response = client.post("/cti/events", content=body, headers=headers(body))
    assert (response.status_code, response.json()) == (200, {"success": True})
    assert [(k, e.name) for k, e in published(publisher)] == [
        ("crm_id:crm-9", "offered"),
        ("crm_id:crm-9", "answered"),
    ]


@pytest.mark.parametrize("forgery", ["wrong_secret", "tampered", "stale", "future", "no_headers"])
def test_forged_or_stale_requests_are_403(
    client: AsgiClient, publisher: InMemoryPublisher, forgery: str
) -> None:
    body = json.dumps(cti()).encode()
    sent = headers(body)
    if forgery == "wrong_secret":
        sent = headers(body, "an-old-rotated-secret")
    elif forgery == "tampered":
        body = body.replace(b"offered", b"ended")
    elif forgery == "stale":
        sent = headers(body, at=int(time.time()) - 400)
    elif forgery == "future":
        sent = headers(body, at=int(time.time()) + 400)
    elif forgery == "no_headers":
        sent = {"Content-Type": "application/json"}
    response = client.post("/cti/events", content=body, headers=sent)
    assert response.status_code == 403
    assert response.json()["error"] == "signature"
    assert publisher.records == []
    assert metric(client, "omnistitch_connector_signature_failures_total", connector="cti") == 1
