"""The web chat connector: visitor identity proved by HMAC-SHA256 (standard library here),
event mapping, and the HTTP contract through an in-memory publisher."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.errors import Rejected
from connectors.http import create_app
from connectors.publisher import InMemoryPublisher
from connectors.webchat.app import WebChatConnector, WebChatSettings
from connectors.webchat.events import to_raw_event
from schemas.events import Channel
from tests.connector_support import TOPIC, AsgiClient, metric, published

SECRET = "site-secret-0123456789"
ACME_SECRET = "acme-secret-0123456789"
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def proof(visitor_id: str, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), visitor_id.encode(), hashlib.sha256).hexdigest()


def chat(type_: str = "message", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "evt-1",
        "type": type_,
        "conversation_id": "conv-1",
        "visitor": {"anonymous_id": "anon-1"},
    }
    if type_ == "message":
        body["message"] = {"id": "m-1", "author": "visitor", "text": "Where is my order?"}
    return {**body, **fields}


def secret_for(site: str) -> str:
    return ACME_SECRET if site == "acme" else SECRET


def test_proved_visitor_is_a_verified_user_id() -> None:
    visitor = {
        "id": "user-42",
        "identifier_hash": proof("user-42"),
        "anonymous_id": "anon-1",
        "email": "Ann@Example.com",
        "phone": "+1 415 555 0199",
        "name": "Ann",
    }
    event = to_raw_event(chat(visitor=visitor), secret_for, NOW)
    assert event.event_id == "webchat:default:evt-1"
    assert (event.channel, event.source, event.kind) == (Channel.CHAT, "webchat", "message")
    assert [(i.key, i.verified) for i in event.identifiers] == [
        ("user_id:user-42", True),
        ("anonymous_id:anon-1", False),
        ("email:Ann@Example.com", False),
        ("phone:+1 415 555 0199", False),
    ]
    assert event.properties["conversation_id"] == "conv-1"
    assert event.properties["text"] == "Where is my order?"
    assert event.properties["author"] == "visitor"
    assert event.traits == {"name": "Ann", "email": "Ann@Example.com", "phone": "+1 415 555 0199"}
    assert "identifier_hash" not in event.payload["visitor"]
    assert event.occurred_at == NOW


def test_site_secret_is_per_site() -> None:
    visitor = {"id": "u-1", "identifier_hash": proof("u-1", ACME_SECRET)}
    event = to_raw_event(chat(site_id="acme", visitor=visitor), secret_for, NOW)
    assert event.identifiers[0].verified
    assert event.event_id == "webchat:acme:evt-1"
    with pytest.raises(Rejected) as info:
        to_raw_event(chat(visitor=visitor), secret_for, NOW)  # default site's secret
    assert info.value.status == 403


@pytest.mark.parametrize(
    ("visitor", "status", "reason"),
    [
        ({"id": "user-42"}, 403, "forbidden"),  # claimed, no proof
        ({"id": "user-42", "identifier_hash": proof("user-43")}, 403, "signature"),  # another id's
        ({"id": "user-42", "identifier_hash": proof("user-42", "old-secret")}, 403, "signature"),
        ({"id": "user-42", "identifier_hash": "zz" * 32}, 403, "signature"),
        ({}, 400, "invalid_request"),  # nobody to place the event on
    ],
)
def test_unproved_identity_is_rejected(visitor: dict[str, Any], status: int, reason: str) -> None:
    with pytest.raises(Rejected) as info:
        to_raw_event(chat(visitor=visitor), secret_for, NOW)
    assert (info.value.status, info.value.reason) == (status, reason)


def test_hash_is_case_insensitive_hex() -> None:
    visitor = {"id": "u-9", "identifier_hash": proof("u-9").upper()}
    assert to_raw_event(chat(visitor=visitor), secret_for, NOW).identifiers[0].verified


@pytest.mark.parametrize(
    ("type_", "extra", "expected"),
    [
        (
            "conversation_started",
            {"page_url": "https://x.io/help"},
            {"page_url": "https://x.io/help"},
        ),
        ("agent_joined", {"agent": {"id": "agent-7", "name": "Sam"}}, {"agent_id": "agent-7"}),
        (
            "transferred",
            {"transfer": {"from_agent_id": "agent-7", "to_queue": "billing"}},
            {"transfer": {"from_agent_id": "agent-7", "to_queue": "billing"}},
        ),
        ("conversation_ended", {"reason": "resolved"}, {"reason": "resolved"}),
        (
            "transcript",
            {
                "transcript": [
                    {"author": "visitor", "text": "hi"},
                    {"author": "agent", "text": "hello", "agent_id": "a"},
                ]
            },
            {
                "transcript": [
                    {"author": "visitor", "text": "hi"},
                    {"author": "agent", "text": "hello", "agent_id": "a"},
                ]
            },
        ),
    ],
)
def test_every_event_type(type_: str, extra: dict[str, Any], expected: dict[str, Any]) -> None:
    event = to_raw_event(chat(type_, **extra), secret_for, NOW)
    assert event.kind == type_
    for key, value in expected.items():
        assert event.properties[key] == value


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (chat("message", message=None), "message"),
        (chat("agent_joined"), "agent"),
        (chat("transferred"), "transfer"),
        (chat("transcript"), "transcript"),
        (chat("teleported"), "type"),
        ({**chat(), "conversation_id": ""}, "conversation_id"),
        ({**chat(), "message": {"author": "robot", "text": "x"}}, "message.author"),
        ({**chat(), "occurred_at": "2026-11-20T09:30:00"}, "occurred_at"),  # naive: ambiguous
        ([chat()], "body"),
    ],
)
def test_bad_events_are_400_naming_the_field(body: Any, field: str) -> None:
    with pytest.raises(Rejected) as info:
        to_raw_event(body, secret_for, NOW)
    assert (info.value.status, info.value.field) == (400, field)


# --- HTTP ----------------------------------------------------------------------------------


@pytest.fixture
def publisher() -> InMemoryPublisher:
    return InMemoryPublisher()


@pytest.fixture
def client(publisher: InMemoryPublisher) -> AsgiClient:
    settings = WebChatSettings(
        hmac_secret=SECRET,
        site_secrets={"acme": ACME_SECRET},
        max_body_bytes=4096,
    )
    return AsgiClient(create_app(WebChatConnector(settings), TOPIC, publisher))


def test_chat_event_is_published_keyed_by_the_proved_user(
    client: AsgiClient, publisher: InMemoryPublisher
) -> None:
    visitor = {"id": "u-1", "identifier_hash": proof("u-1"), "anonymous_id": "anon-1"}
    response = client.post("/webchat/events", json=chat(visitor=visitor))
    assert (response.status_code, response.json()) == (200, {"success": True})
    [(key, event)] = published(publisher)
    assert key == "user_id:u-1"
    assert event.kind == "message"


def test_forged_identity_is_403_and_counted(
    client: AsgiClient, publisher: InMemoryPublisher
) -> None:
    visitor = {"id": "u-1", "identifier_hash": proof("u-2")}
    response = client.post("/webchat/events", json=chat(visitor=visitor))
    assert response.status_code == 403
    assert response.json()["errors"][0]["field"] == "visitor.identifier_hash"
    assert publisher.records == []
    assert metric(client, "omnistitch_connector_signature_failures_total", connector="webchat") == 1


def test_http_errors(client: AsgiClient, publisher: InMemoryPublisher) -> None:
    response = client.post(
        "/webchat/events", content=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"
    response = client.post(
        "/webchat/events", content=b"id=1", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    big = chat(message={"author": "visitor", "text": "x" * 5000})
    assert client.post("/webchat/events", json=big).status_code == 413
    publisher.fail_reason = "queue_full"
    response = client.post("/webchat/events", json=chat())
    assert (response.status_code, response.headers["Retry-After"]) == (503, "5")
    assert (
        metric(
            client,
            "omnistitch_connector_requests_rejected_total",
            connector="webchat",
            reason="unavailable",
        )
        == 1
    )


def test_missing_or_short_secret_fails_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from omnistitch.settings import SettingsError, load

    monkeypatch.delenv("OMNISTITCH_CHAT_HMAC_SECRET", raising=False)
    with pytest.raises(SettingsError, match="OMNISTITCH_CHAT_HMAC_SECRET: Field required"):
        load(WebChatSettings)
    monkeypatch.setenv("OMNISTITCH_CHAT_HMAC_SECRET", "short")
    with pytest.raises(SettingsError) as info:
        load(WebChatSettings)
    assert "OMNISTITCH_CHAT_HMAC_SECRET" in str(info.value)
    assert "short" not in str(info.value).replace("shorter", "")


@pytest.mark.parametrize(("depth", "status"), [(40, 200), (70, 400), (300, 400), (900, 400)])
def test_deeply_nested_extras_are_400_not_poison(depth: int, status: int) -> None:
    settings = WebChatSettings(hmac_secret=SECRET, max_body_bytes=64 * 1024)
    client = AsgiClient(create_app(WebChatConnector(settings), TOPIC, InMemoryPublisher()))
    nested = "1"
    for _ in range(depth):
        nested = '{"a":' + nested + "}"
    body = json.dumps(chat()).replace('"visitor": {', '"visitor": {"deep": ' + nested + ", ", 1)
    response = client.post(
        "/webchat/events", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status
    if status == 400:
        assert response.json()["errors"][0]["field"] == "body"
