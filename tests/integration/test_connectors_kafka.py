"""Every connector family against the real broker: provider-shaped requests in over real
sockets, the raw topic consumed back, and exactly what was acknowledged is on it."""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from connectors.base import HttpConnector
from connectors.cti import signature as cti_signature
from connectors.cti.app import CtiConnector, CtiSettings
from connectors.delivery import ConnectorMetrics, Delivery
from connectors.email.smtp import MailHandler
from connectors.http import create_app
from connectors.meta import webhook
from connectors.meta.app import MetaConnector, MetaSettings
from connectors.publisher import KafkaPublisher
from connectors.twilio.app import TwilioConnector, TwilioSettings
from connectors.webchat.app import WebChatConnector, WebChatSettings
from connectors.webchat.identity import identifier_hash
from omnistitch.settings import KafkaSettings
from omnistitch.topics import RAW_EVENTS, ensure_topics
from tests.connector_support import Record, consume, serve, smtp_server, twilio_post

pytestmark = pytest.mark.kafka

SECRET = "integration-secret-0123"
PHONE = "+14155550142"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def kafka(kafka_bootstrap: str, unique_prefix: str) -> KafkaSettings:
    settings = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=unique_prefix, raw_partitions=3
    )
    ensure_topics(settings)
    return settings


@pytest.fixture
def publisher(kafka: KafkaSettings) -> Iterator[KafkaPublisher]:
    publisher = KafkaPublisher(kafka.bootstrap_servers, ack_timeout_s=15)
    yield publisher
    publisher.close()


def read_back(kafka: KafkaSettings, count: int) -> dict[str, Record]:
    records = consume(kafka.bootstrap_servers, kafka.topic(RAW_EVENTS), count)
    return {r.event.event_id: r for r in records}


def signed(base: str, path: str, params: dict[str, str]) -> httpx.Response:
    return twilio_post(base, path, params, SECRET)


def test_twilio_sms_and_voice(kafka: KafkaSettings, publisher: KafkaPublisher) -> None:
    connector = TwilioConnector(TwilioSettings(auth_token=SECRET))
    sms = {"MessageSid": "SMa1", "From": PHONE, "To": "+18005550000", "Body": "STOP"}
    call = {"CallSid": "CAa1", "From": PHONE, "To": "+18005550000", "Direction": "inbound"}
    with serve(create_app(connector, kafka.topic(RAW_EVENTS), publisher)) as base:
        assert httpx.get(f"{base}/readyz").status_code == 200
        answers = [
            signed(base, "/twilio/sms", sms),
            signed(base, "/twilio/sms", sms),  # Twilio's retry: same event ids
            signed(base, "/twilio/voice", {**call, "CallStatus": "ringing"}),
            signed(
                base,
                "/twilio/voice/gather?step=menu",
                {**call, "CallStatus": "in-progress", "Digits": "2"},
            ),
            signed(
                base,
                "/twilio/voice",
                {
                    **call,
                    "CallStatus": "no-answer",
                    "SequenceNumber": "1",
                    "CallbackSource": "call-progress-events",
                },
            ),
        ]
        forged = httpx.post(
            f"{base}/twilio/sms",
            content=urlencode(sms),
            headers={**FORM, "X-Twilio-Signature": "x"},
        )
    assert [a.status_code for a in answers] == [200] * 5
    assert all(a.text == '<?xml version="1.0" encoding="UTF-8"?><Response/>' for a in answers)
    assert forged.status_code == 403
    records = consume(kafka.bootstrap_servers, kafka.topic(RAW_EVENTS), 7)
    ids = [r.event.event_id for r in records]
    assert sorted(set(ids)) == sorted(
        {
            "twilio:sms:SMa1",
            "twilio:sms:SMa1:consent",
            "twilio:call:CAa1:ringing",
            "twilio:call:CAa1:no-answer:1",
            next(i for i in ids if i.startswith("twilio:call:CAa1:gather:")),
        }
    )
    assert ids.count("twilio:sms:SMa1") == 2  # the retry carries the same id: the pipeline dedupes
    by_id = {r.event.event_id: r for r in records}
    consent = by_id["twilio:sms:SMa1:consent"].event
    assert (consent.kind, consent.properties["status"]) == ("consent", "opted_out")
    assert {r.key for r in records} == {f"phone:{PHONE}"}
    assert by_id["twilio:call:CAa1:no-answer:1"].event.name == "no-answer"


def test_webchat(kafka: KafkaSettings, publisher: KafkaPublisher) -> None:
    connector = WebChatConnector(WebChatSettings(hmac_secret=SECRET))
    visitor = {
        "id": "u-7",
        "identifier_hash": identifier_hash(SECRET, "u-7"),
        "anonymous_id": "an-7",
    }
    events: list[dict[str, Any]] = [
        {
            "id": "c1",
            "type": "conversation_started",
            "conversation_id": "conv-7",
            "visitor": visitor,
        },
        {
            "id": "c2",
            "type": "message",
            "conversation_id": "conv-7",
            "visitor": {**visitor, "email": "kai@example.com"},
            "message": {"id": "m1", "author": "visitor", "text": "My order?"},
        },
        {
            "id": "c3",
            "type": "agent_joined",
            "conversation_id": "conv-7",
            "visitor": visitor,
            "agent": {"id": "ag-1"},
        },
        {
            "id": "c4",
            "type": "conversation_ended",
            "conversation_id": "conv-7",
            "visitor": visitor,
            "reason": "solved",
        },
    ]
    with serve(create_app(connector, kafka.topic(RAW_EVENTS), publisher)) as base:
        statuses = [httpx.post(f"{base}/webchat/events", json=e).status_code for e in events]
        forged = httpx.post(
            f"{base}/webchat/events",
            json={**events[0], "id": "c9", "visitor": {"id": "u-1", "identifier_hash": "00"}},
        )
    assert statuses == [200] * 4
    assert forged.status_code == 403
    records = read_back(kafka, 4)
    assert sorted(records) == [
        "webchat:default:c1",
        "webchat:default:c2",
        "webchat:default:c3",
        "webchat:default:c4",
    ]
    message = records["webchat:default:c2"]
    assert message.key == "user_id:u-7"
    assert [(i.key, i.verified) for i in message.event.identifiers] == [
        ("user_id:u-7", True),
        ("anonymous_id:an-7", False),
        ("email:kai@example.com", False),
    ]
    assert records["webchat:default:c3"].event.properties["agent_id"] == "ag-1"


def test_meta_whatsapp_and_messenger(kafka: KafkaSettings, publisher: KafkaPublisher) -> None:
    connector = MetaConnector(MetaSettings(app_secret=SECRET, verify_token="vt-1"))
    whatsapp = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "WABA",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "metadata": {
                                "phone_number_id": "PN1",
                                "display_phone_number": "18005550000",
                            },
                            "contacts": [{"wa_id": "14155550142", "profile": {"name": "Kai"}}],
                            "messages": [
                                {
                                    "from": "14155550142",
                                    "id": "wamid.IN1",
                                    "timestamp": "1763631000",
                                    "type": "text",
                                    "text": {"body": "hola"},
                                }
                            ],
                            "statuses": [
                                {
                                    "id": "wamid.OUT1",
                                    "status": "delivered",
                                    "timestamp": "1763631001",
                                    "recipient_id": "14155550142",
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    messenger = {
        "object": "page",
        "entry": [
            {
                "id": "PAGE",
                "time": 1763631000000,
                "messaging": [
                    {
                        "sender": {"id": "PSID1"},
                        "recipient": {"id": "PAGE"},
                        "timestamp": 1763631000000,
                        "message": {"mid": "m_1", "text": "hi"},
                    }
                ],
            }
        ],
    }
    with serve(create_app(connector, kafka.topic(RAW_EVENTS), publisher)) as base:
        challenge = httpx.get(
            f"{base}/meta/webhook",
            params={"hub.mode": "subscribe", "hub.verify_token": "vt-1", "hub.challenge": "42"},
        )
        answers = []
        for notification in (whatsapp, messenger):
            body = json.dumps(notification).encode()
            answers.append(
                httpx.post(
                    f"{base}/meta/webhook",
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        "X-Hub-Signature-256": webhook.sign(SECRET, body),
                    },
                ).status_code
            )
    assert (challenge.status_code, challenge.text) == (200, "42")
    assert answers == [200, 200]
    records = read_back(kafka, 3)
    assert sorted(records) == [
        "meta:messenger:m_1",
        "meta:whatsapp:wamid.IN1",
        "meta:whatsapp:wamid.OUT1:delivered",
    ]
    assert {i.key for i in records["meta:whatsapp:wamid.IN1"].event.identifiers} == {
        f"whatsapp:{PHONE}",
        f"phone:{PHONE}",
    }
    assert records["meta:messenger:m_1"].key == "messenger_psid:PSID1"


def test_cti(kafka: KafkaSettings, publisher: KafkaPublisher) -> None:
    connector = CtiConnector(CtiSettings(signing_secret=SECRET))
    base_event = {"interaction_id": "int-1", "customer": {"phone": PHONE}, "queue": "billing"}
    batch = {
        "events": [
            {
                **base_event,
                "event_id": "x1",
                "type": "offered",
                "occurred_at": "2026-11-20T09:00:00Z",
                "ivr_path": ["main", "billing"],
            },
            {
                **base_event,
                "event_id": "x2",
                "type": "queued",
                "occurred_at": "2026-11-20T09:00:05Z",
            },
            {
                **base_event,
                "event_id": "x3",
                "type": "abandoned",
                "occurred_at": "2026-11-20T09:02:05Z",
                "wait_seconds": 120,
            },
        ]
    }
    body = json.dumps(batch).encode()
    now = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "X-Omnistitch-Timestamp": str(now),
        "X-Omnistitch-Signature": cti_signature.sign(SECRET, now, body),
    }
    with serve(create_app(connector, kafka.topic(RAW_EVENTS), publisher)) as base:
        assert httpx.post(f"{base}/cti/events", content=body, headers=headers).status_code == 200
    records = read_back(kafka, 3)
    assert sorted(records) == ["cti:x1", "cti:x2", "cti:x3"]
    assert [records[f"cti:x{i}"].event.name for i in (1, 2, 3)] == [
        "offered",
        "queued",
        "abandoned",
    ]
    assert records["cti:x1"].event.properties["ivr_path"] == ["main", "billing"]
    assert {r.key for r in records.values()} == {f"phone:{PHONE}"}


def test_email_over_smtp(kafka: KafkaSettings, publisher: KafkaPublisher) -> None:
    handler = MailHandler(Delivery(kafka.topic(RAW_EVENTS), publisher, ConnectorMetrics("email")))
    first = EmailMessage()
    first["From"] = "Kai <kai@example.com>"
    first["To"] = "support@shop.example"
    first["Subject"] = "Refund"
    first["Message-ID"] = "<q1@example.com>"
    first.set_content("Where is my refund?")
    reply = EmailMessage()
    reply["From"] = "kai@example.com"
    reply["To"] = "support@shop.example"
    reply["Subject"] = "Re: Refund"
    reply["Message-ID"] = "<q2@example.com>"
    reply["In-Reply-To"] = "<a1@shop.example>"
    reply["References"] = "<q1@example.com> <a1@shop.example>"
    reply.set_content("Still nothing.")
    with smtp_server(handler) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        assert smtp.send_message(first) == {}
        assert smtp.send_message(reply) == {}
    records = read_back(kafka, 2)
    assert sorted(records) == ["email:q1@example.com", "email:q2@example.com"]
    assert records["email:q2@example.com"].event.properties["thread_id"] == "q1@example.com"
    assert {r.key for r in records.values()} == {"email:kai@example.com"}


# --- the broker unreachable ----------------------------------------------------------------


def http_cases() -> list[tuple[HttpConnector[Any], str, bytes, dict[str, str]]]:
    now = int(time.time())
    cti_body = json.dumps(
        {
            "event_id": "d1",
            "type": "offered",
            "interaction_id": "i",
            "occurred_at": "2026-11-20T09:00:00Z",
            "customer": {"phone": PHONE},
        }
    ).encode()
    chat_body = json.dumps(
        {
            "id": "d1",
            "type": "conversation_started",
            "conversation_id": "c",
            "visitor": {"anonymous_id": "a"},
        }
    ).encode()
    meta_body = json.dumps(
        {
            "object": "page",
            "entry": [
                {
                    "id": "P",
                    "messaging": [
                        {"sender": {"id": "S"}, "recipient": {"id": "P"}, "message": {"mid": "m"}}
                    ],
                }
            ],
        }
    ).encode()
    sms = {"MessageSid": "SMd1", "From": PHONE, "To": "+18005550000", "Body": "hi"}
    return [
        (
            TwilioConnector(TwilioSettings(auth_token=SECRET, ack_timeout_s=1)),
            "/twilio/sms",
            urlencode(sms).encode(),
            {
                **FORM,
                "X-Twilio-Signature": RequestValidator(SECRET).compute_signature(
                    "http://c/twilio/sms", sms
                ),
            },
        ),
        (
            WebChatConnector(WebChatSettings(hmac_secret=SECRET, ack_timeout_s=1)),
            "/webchat/events",
            chat_body,
            {"Content-Type": "application/json"},
        ),
        (
            MetaConnector(MetaSettings(app_secret=SECRET, verify_token="v", ack_timeout_s=1)),
            "/meta/webhook",
            meta_body,
            {
                "Content-Type": "application/json",
                "X-Hub-Signature-256": webhook.sign(SECRET, meta_body),
            },
        ),
        (
            CtiConnector(CtiSettings(signing_secret=SECRET, ack_timeout_s=1)),
            "/cti/events",
            cti_body,
            {
                "Content-Type": "application/json",
                "X-Omnistitch-Timestamp": str(now),
                "X-Omnistitch-Signature": cti_signature.sign(SECRET, now, cti_body),
            },
        ),
    ]


def test_unreachable_broker_is_503_for_every_http_connector() -> None:
    publisher = KafkaPublisher("127.0.0.1:1", ack_timeout_s=1)

    async def scenario() -> list[httpx.Response]:
        answers = []
        for connector, path, body, headers in http_cases():
            transport = httpx.ASGITransport(app=create_app(connector, "dead.raw.events", publisher))
            async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
                answers.append(await client.post(path, content=body, headers=headers))
                for _ in range(300):  # readiness follows once librdkafka gives up on the broker
                    if (await client.get("/readyz")).status_code == 503:
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError(f"{connector.name}: /readyz stayed 200")
        return answers

    try:
        answers = asyncio.run(scenario())
    finally:
        publisher.close(timeout_s=1)
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "5"
        assert answer.json()["error"] == "unavailable"


def test_unreachable_broker_is_smtp_451() -> None:
    publisher = KafkaPublisher("127.0.0.1:1", ack_timeout_s=1)
    handler = MailHandler(Delivery("dead.raw.events", publisher, ConnectorMetrics("email")))
    msg = EmailMessage()
    msg["From"] = "kai@example.com"
    msg["To"] = "support@shop.example"
    msg["Message-ID"] = "<dead@example.com>"
    msg.set_content("hello")
    try:
        with smtp_server(handler) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.ehlo()
            smtp.mail("kai@example.com")
            smtp.rcpt("support@shop.example")
            code, reply = smtp.data(msg.as_bytes(policy=SMTP))
            assert smtp.noop()[0] == 250  # the server lives on
    finally:
        publisher.close(timeout_s=1)
    assert code == 451
    assert reply.startswith(b"4.3.0")
