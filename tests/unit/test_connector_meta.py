"""The Meta connector: handshake, X-Hub-Signature-256 (signed here with the standard
library's hmac), WhatsApp Cloud API and Messenger mappings, and the HTTP contract."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.errors import Rejected
from connectors.http import create_app
from connectors.mapping import parse_model
from connectors.meta import messenger, whatsapp
from connectors.meta.app import MetaConnector, MetaSettings
from connectors.meta.notification import Notification
from connectors.publisher import InMemoryPublisher
from schemas.events import Channel
from tests.connector_support import TOPIC, AsgiClient, metric, published

APP_SECRET = "meta-app-secret"
VERIFY_TOKEN = "meta-verify-token"
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def whatsapp_message(
    wamid: str = "wamid.HBgL1", text: str = "Is my parcel shipped?"
) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": "106540352242922",
                            },
                            "contacts": [
                                {"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}
                            ],
                            "messages": [
                                {
                                    "from": "16505551234",
                                    "id": wamid,
                                    "timestamp": "1763631000",
                                    "text": {"body": text},
                                    "type": "text",
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }


def whatsapp_status(status: str = "delivered") -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": "1065",
                            },
                            "statuses": [
                                {
                                    "id": "wamid.OUT1",
                                    "status": status,
                                    "timestamp": "1763631005",
                                    "recipient_id": "16505551234",
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }


def messenger_notification(*items: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "page",
        "entry": [{"id": "PAGE1", "time": 1763631000000, "messaging": list(items)}],
    }


MESSENGER_MESSAGE = {
    "sender": {"id": "PSID-77"},
    "recipient": {"id": "PAGE1"},
    "timestamp": 1763631000123,
    "message": {"mid": "m_abc", "text": "hello page"},
}


def notification(body: dict[str, Any]) -> Notification:
    return parse_model(Notification, body)


# --- mappings ----------------------------------------------------------------------------


def test_whatsapp_message_maps_wa_id_to_whatsapp_and_phone() -> None:
    [event] = whatsapp.to_raw_events(notification(whatsapp_message()), NOW)
    assert event.event_id == "meta:whatsapp:wamid.HBgL1"
    assert (event.channel, event.source, event.kind) == (Channel.SOCIAL, "meta", "message")
    assert [i.key for i in event.identifiers] == ["whatsapp:+16505551234", "phone:+16505551234"]
    assert event.properties["text"] == "Is my parcel shipped?"
    assert event.properties["phone_number_id"] == "106540352242922"
    assert event.traits == {"name": "Sheena Nelson"}
    assert event.occurred_at == datetime.fromtimestamp(1763631000, UTC)
    assert event.payload["message"]["from"] == "16505551234"


def test_whatsapp_status() -> None:
    [event] = whatsapp.to_raw_events(notification(whatsapp_status("read")), NOW)
    assert event.event_id == "meta:whatsapp:wamid.OUT1:read"
    assert (event.kind, event.name) == ("message_status", "read")
    assert event.identifiers[0].key == "whatsapp:+16505551234"


def test_whatsapp_interactive_reply_text_and_other_fields_skipped() -> None:
    body = whatsapp_message()
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    message.pop("text")
    message["type"] = "interactive"
    message["interactive"] = {"type": "button_reply", "button_reply": {"id": "b1", "title": "Yes"}}
    body["entry"][0]["changes"].append({"field": "account_update", "value": {"event": "x"}})
    [event] = whatsapp.to_raw_events(notification(body), NOW)
    assert event.properties["text"] == "Yes"


def test_whatsapp_bad_message_names_the_field() -> None:
    body = whatsapp_message()
    del body["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    with pytest.raises(Rejected) as info:
        whatsapp.to_raw_events(notification(body), NOW)
    assert info.value.field == "entry.0.changes.0.value.messages.0.id"


def test_messenger_message_echo_delivery_read_postback() -> None:
    echo = {
        "sender": {"id": "PAGE1"},
        "recipient": {"id": "PSID-77"},
        "timestamp": 1763631001000,
        "message": {"mid": "m_echo", "text": "hi back", "is_echo": True},
    }
    delivery = {
        "sender": {"id": "PSID-77"},
        "recipient": {"id": "PAGE1"},
        "delivery": {"mids": ["m_echo"], "watermark": 1763631002000},
    }
    read = {
        "sender": {"id": "PSID-77"},
        "recipient": {"id": "PAGE1"},
        "timestamp": 1763631003000,
        "read": {"watermark": 1763631002000},
    }
    postback = {
        "sender": {"id": "PSID-77"},
        "recipient": {"id": "PAGE1"},
        "timestamp": 1763631004000,
        "postback": {"mid": "m_pb", "title": "Talk to agent", "payload": "AGENT"},
    }
    reaction = {
        "sender": {"id": "PSID-77"},
        "recipient": {"id": "PAGE1"},
        "reaction": {"emoji": "x"},
    }
    events = messenger.to_raw_events(
        notification(
            messenger_notification(MESSENGER_MESSAGE, echo, delivery, read, postback, reaction)
        ),
        NOW,
    )
    assert [(e.event_id, e.kind, e.name) for e in events] == [
        ("meta:messenger:m_abc", "message", None),
        ("meta:messenger:m_echo", "message", None),
        ("meta:messenger:delivered:PSID-77:1763631002000", "message_status", "delivered"),
        ("meta:messenger:read:PSID-77:1763631002000", "message_status", "read"),
        ("meta:messenger:postback:m_pb", "postback", "Talk to agent"),
    ]
    assert {i.key for e in events for i in e.identifiers} == {"messenger_psid:PSID-77"}
    assert events[0].properties["direction"] == "inbound"
    assert events[1].properties["direction"] == "outbound"
    assert events[0].occurred_at == datetime.fromtimestamp(1763631000.123, UTC)


# --- HTTP ----------------------------------------------------------------------------------


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def publisher() -> InMemoryPublisher:
    return InMemoryPublisher()


@pytest.fixture
def client(publisher: InMemoryPublisher) -> AsgiClient:
    settings = MetaSettings(
        app_secret=APP_SECRET,
        verify_token=VERIFY_TOKEN,
        max_body_bytes=8192,
    )
    return AsgiClient(create_app(MetaConnector(settings), TOPIC, publisher))


def post(client: AsgiClient, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    response = client.post("/meta/webhook", content=body, headers=headers)
    return response.status_code, response.json()


def test_handshake_echoes_the_challenge(client: AsgiClient) -> None:
    params = {
        "hub.mode": "subscribe",
        "hub.verify_token": VERIFY_TOKEN,
        "hub.challenge": "1158201444",
    }
    response = client.get("/meta/webhook", params=params)
    assert (response.status_code, response.text) == (200, "1158201444")
    assert response.headers["content-type"].startswith("text/plain")
    wrong = client.get("/meta/webhook", params={**params, "hub.verify_token": "guess"})
    assert wrong.status_code == 403
    assert wrong.json()["errors"][0]["field"] == "hub.verify_token"
    missing = client.get("/meta/webhook", params={"hub.mode": "subscribe"})
    assert missing.status_code == 400


def test_signed_notification_is_published(client: AsgiClient, publisher: InMemoryPublisher) -> None:
    # Meta sends non-ASCII escaped; the signature is over these exact bytes.
    body = json.dumps(whatsapp_message(text="Grüße")).encode()
    assert b"\\u00fc" in body
    assert post(client, body, sign(body)) == (200, {"success": True})
    [(key, event)] = published(publisher)
    assert key == "phone:+16505551234"
    assert event.properties["text"] == "Grüße"


@pytest.mark.parametrize("forgery", ["wrong_secret", "tampered", "missing", "sha1", "stale"])
def test_forged_or_stale_signatures_are_403(
    client: AsgiClient, publisher: InMemoryPublisher, forgery: str
) -> None:
    body = json.dumps(whatsapp_message()).encode()
    signature: str | None = sign(body)
    if forgery == "wrong_secret":
        signature = sign(body, "rotated-out-secret")
    elif forgery == "tampered":
        body = body.replace(b"Is my parcel", b"Is your parcel")
    elif forgery == "missing":
        signature = None
    elif forgery == "sha1":
        signature = "sha1=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha1).hexdigest()
    elif forgery == "stale":  # a signature captured from an earlier notification
        signature = sign(json.dumps(whatsapp_message("wamid.OLD")).encode())
    status, answer = post(client, body, signature)
    assert status == 403
    assert answer["errors"][0]["field"] == "X-Hub-Signature-256"
    assert publisher.records == []
    assert metric(client, "omnistitch_connector_signature_failures_total", connector="meta") == 1


def test_messenger_and_unknown_objects(client: AsgiClient, publisher: InMemoryPublisher) -> None:
    body = json.dumps(messenger_notification(MESSENGER_MESSAGE)).encode()
    assert post(client, body, sign(body))[0] == 200
    instagram = json.dumps(
        {"object": "instagram", "entry": [{"id": "1", "messaging": []}]}
    ).encode()
    assert post(client, instagram, sign(instagram))[0] == 200
    assert [k for k, _ in published(publisher)] == ["messenger_psid:PSID-77"]


def test_signed_but_malformed_is_400(client: AsgiClient) -> None:
    body = b'{"object": "page"}'
    status, answer = post(client, body, sign(body))
    assert (status, answer["errors"][0]["field"]) == (400, "entry")
