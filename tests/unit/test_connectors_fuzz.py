"""Property-based fuzzing of every HTTP connector endpoint (hypothesis), in process.

Bodies are malformed, oversized, of the wrong content type, or plausible provider payloads
with random parts replaced; about half are correctly signed, so the parsers and mappings
are reached, not just the signature check. Whatever comes in, the answer is never a 5xx
(the in-memory publisher is healthy, so not even the deliberate 503), and the app never
raises (httpx's ASGI transport would re-raise it). What is accepted is valid RawEvents.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import DrawFn, composite

from connectors.base import HttpConnector
from connectors.cti import signature as cti_signature
from connectors.cti.app import CtiConnector, CtiSettings
from connectors.http import create_app
from connectors.meta import webhook
from connectors.meta.app import MetaConnector, MetaSettings
from connectors.publisher import InMemoryPublisher
from connectors.twilio import signature as twilio_signature
from connectors.twilio.app import TwilioConnector, TwilioSettings
from connectors.webchat.app import WebChatConnector, WebChatSettings
from connectors.webchat.identity import identifier_hash
from schemas.events import RawEvent

SECRET = "fuzz-secret-0123456789"
LIMIT = 4096
BASE = "http://fuzz"
CONTENT_TYPES = [
    "application/json",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=utf-8",
    "text/plain",
    "multipart/form-data; boundary=x",
    "application/json; charset=latin-1",
    "",
    "garbage/\x7f",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=25,
)


def mutate(template: Any, draw: DrawFn, level: int) -> Any:
    """``template`` with about one value in ``12 - 5 * level`` replaced or dropped."""
    if level == 0:
        return template
    odds = 12 - 5 * level
    if isinstance(template, dict):
        out = {}
        for key, value in template.items():
            choice = draw(st.integers(0, odds))
            if choice == 0:
                continue  # drop the field
            out[key] = draw(json_values) if choice == 1 else mutate(value, draw, level)
        if draw(st.integers(0, odds)) == 0:
            out.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
        return out
    if isinstance(template, list):
        return [mutate(item, draw, level) for item in template[: draw(st.integers(0, 3))]]
    return draw(json_values) if draw(st.integers(0, odds)) == 0 else template


def inject(template: Any, marker: str, draw: DrawFn) -> Any:
    """``template`` with ``marker`` added under a new key of one of its objects."""
    objects: list[dict[str, Any]] = []

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            copy = {k: walk(v) for k, v in value.items()}
            objects.append(copy)
            return copy
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    root = walk(template)
    if objects:
        draw(st.sampled_from(objects))["deep"] = marker
    return root


WEBCHAT = {
    "site_id": "default",
    "id": "e1",
    "type": "message",
    "conversation_id": "c1",
    "occurred_at": "2026-11-20T09:30:00Z",
    "visitor": {"id": "u1", "identifier_hash": identifier_hash(SECRET, "u1"), "anonymous_id": "a"},
    "message": {"id": "m1", "author": "visitor", "text": "hi"},
    "agent": {"id": "ag"},
    "transfer": {"to_queue": "q"},
    "transcript": [{"author": "agent", "text": "x"}],
}
CTI = {
    "event_id": "e1",
    "type": "answered",
    "interaction_id": "i1",
    "occurred_at": "2026-11-20T09:30:00+00:00",
    "customer": {"phone": "+14155550100", "email": "a@b.co"},
    "queue": "q",
    "agent": {"id": "a1"},
    "ivr_path": ["main"],
    "transfer": {"kind": "warm"},
}
WHATSAPP = {
    "object": "whatsapp_business_account",
    "entry": [
        {
            "id": "1",
            "changes": [
                {
                    "field": "messages",
                    "value": {
                        "metadata": {"phone_number_id": "9"},
                        "contacts": [{"wa_id": "15550100", "profile": {"name": "N"}}],
                        "messages": [
                            {
                                "from": "15550100",
                                "id": "w1",
                                "timestamp": "1763631000",
                                "type": "text",
                                "text": {"body": "x"},
                            }
                        ],
                        "statuses": [
                            {
                                "id": "w2",
                                "status": "read",
                                "timestamp": "1763631000",
                                "recipient_id": "1555",
                            }
                        ],
                    },
                }
            ],
        }
    ],
}
MESSENGER = {
    "object": "page",
    "entry": [
        {
            "id": "P",
            "messaging": [
                {
                    "sender": {"id": "S"},
                    "recipient": {"id": "P"},
                    "timestamp": 1763631000000,
                    "message": {"mid": "m", "text": "x"},
                },
                {"sender": {"id": "S"}, "recipient": {"id": "P"}, "read": {"watermark": 1}},
                {"sender": {"id": "S"}, "recipient": {"id": "P"}, "postback": {"title": "t"}},
            ],
        }
    ],
}
TWILIO_NAMES = [
    "MessageSid",
    "SmsSid",
    "From",
    "To",
    "Body",
    "NumMedia",
    "MediaUrl0",
    "OptOutType",
    "MessageStatus",
    "CallSid",
    "CallStatus",
    "Direction",
    "Timestamp",
    "SequenceNumber",
    "Digits",
    "SpeechResult",
    "Confidence",
    "RecordingSid",
    "TranscriptionSid",
    "TranscriptionText",
]
TWILIO_VALUES = st.sampled_from(
    [
        "+14155550100",
        "whatsapp:+14155550100",
        "client:x",
        "SM1",
        "CA1",
        "STOP",
        "ringing",
        "in-progress",
        "no-answer",
        "outbound-api",
        "Fri, 20 Nov 2026 09:29:58 +0000",
        "nan",
        "1e999",
        "99999999999",
        "",
    ]
) | st.text(max_size=40)


TWILIO_FORMS: list[Any] = [
    {
        "MessageSid": "SM1",
        "From": "+14155550100",
        "To": "+18005550000",
        "Body": "STOP",
        "NumMedia": "1",
        "MediaUrl0": "https://x/m",
    },
    {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "whatsapp:+14155550100"},
    {
        "CallSid": "CA1",
        "CallStatus": "no-answer",
        "From": "+14155550100",
        "To": "+18005550000",
        "Direction": "inbound",
        "Timestamp": "Fri, 20 Nov 2026 09:29:58 +0000",
        "SequenceNumber": "3",
        "Digits": "12",
        "SpeechResult": "yes",
        "Confidence": "0.5",
        "RecordingSid": "RE1",
        "TranscriptionSid": "TR1",
        "TranscriptionText": "hello",
    },
]


@composite
def form_body(draw: DrawFn) -> bytes:
    pairs = draw(
        st.lists(
            st.tuples(st.sampled_from(TWILIO_NAMES) | st.text(max_size=10), TWILIO_VALUES),
            max_size=12,
        )
    )
    return urlencode(pairs).encode()


@composite
def body(draw: DrawFn, templates: list[Any], form: bool) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=300))
    if kind == 1:
        return b"x" * draw(st.integers(LIMIT + 1, LIMIT * 3))
    if kind == 2:
        return json.dumps(draw(json_values)).encode()
    if kind == 3:
        return draw(form_body())
    if kind == 4:  # deep nesting, alone or inside a valid payload
        depth = draw(st.integers(50, 900))
        deep = ('{"a":' * depth) + "1" + ("}" * depth)
        if form or draw(st.booleans()):
            return deep.encode()
        marker = "__deep__"
        template = inject(draw(st.sampled_from(templates)), marker, draw)
        return json.dumps(template).replace(json.dumps(marker), deep).encode()
    level = draw(st.sampled_from([0, 0, 1, 2]))
    value = mutate(draw(st.sampled_from(templates)), draw, level)
    if form:
        pairs = value.items() if isinstance(value, dict) else []
        return urlencode(
            [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in pairs]
        ).encode()
    return json.dumps(value).encode()


Signer = Callable[[str, bytes], dict[str, str]]


def twilio_headers(url: str, data: bytes) -> dict[str, str]:
    try:
        params = parse_qsl(data.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        params = []
    return {"X-Twilio-Signature": twilio_signature.compute(SECRET, url, params)}


def meta_headers(_url: str, data: bytes) -> dict[str, str]:
    return {"X-Hub-Signature-256": webhook.sign(SECRET, data)}


def cti_headers(_url: str, data: bytes) -> dict[str, str]:
    now = int(time.time())
    return {
        "X-Omnistitch-Timestamp": str(now),
        "X-Omnistitch-Signature": cti_signature.sign(SECRET, now, data),
    }


def no_headers(_url: str, _data: bytes) -> dict[str, str]:
    return {}


CASES: dict[str, tuple[HttpConnector[Any], list[str], list[Any], Signer]] = {
    "twilio": (
        TwilioConnector(TwilioSettings(auth_token=SECRET, max_body_bytes=LIMIT)),
        [
            "/twilio/sms",
            "/twilio/sms/status",
            "/twilio/voice",
            "/twilio/voice/gather?step=menu",
            "/twilio/voice/recording?caller=%2B14155550100",
            "/twilio/voice/transcription",
        ],
        TWILIO_FORMS,
        twilio_headers,
    ),
    "webchat": (
        WebChatConnector(WebChatSettings(hmac_secret=SECRET, max_body_bytes=LIMIT)),
        ["/webchat/events"],
        [WEBCHAT, {**WEBCHAT, "type": "transcript"}, {**WEBCHAT, "type": "agent_joined"}],
        no_headers,
    ),
    "meta": (
        MetaConnector(MetaSettings(app_secret=SECRET, verify_token=SECRET, max_body_bytes=LIMIT)),
        ["/meta/webhook"],
        [WHATSAPP, MESSENGER],
        meta_headers,
    ),
    "cti": (
        CtiConnector(CtiSettings(signing_secret=SECRET, max_body_bytes=LIMIT)),
        ["/cti/events"],
        [CTI, {"events": [CTI, {**CTI, "type": "ended", "event_id": "e2"}]}],
        cti_headers,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_input_makes_a_connector_fail(name: str) -> None:
    connector, paths, templates, signer = CASES[name]
    form = name == "twilio"
    right_type = "application/x-www-form-urlencoded" if form else "application/json"
    publisher = InMemoryPublisher()
    app = create_app(connector, "fuzz.raw.events", publisher)
    statuses: set[int] = set()

    async def send(path: str, data: bytes, headers: dict[str, str]) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            return await client.post(path, content=data, headers=headers)

    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        path=st.sampled_from(paths),
        data=body(templates, form),
        content_type=st.sampled_from(CONTENT_TYPES) | st.just(right_type),
        signed=st.integers(0, 3).map(bool),
    )
    def check(path: str, data: bytes, content_type: str, signed: bool) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        if signed:
            headers |= signer(f"{BASE}{path}", data)
        before = len(publisher.records)
        response = asyncio.run(send(path, data, headers))
        statuses.add(response.status_code)
        assert response.status_code < 500, response.text
        if response.status_code == 200:
            for _, _, value in publisher.records[before:]:
                RawEvent.model_validate_json(value)
        else:
            assert len(publisher.records) == before
            assert response.json()["error"]

    # Always try these too, so every outcome is exercised whatever the random draw.
    valid = urlencode(templates[0]).encode() if form else json.dumps(templates[0]).encode()
    for data, content_type in (
        (valid, right_type),  # 200
        (b"x" * (LIMIT + 1), right_type),  # 413
        (valid, "text/plain"),  # 415
        (b"{" if not form else b"\xff=\xfe", right_type),  # 400
    ):
        check = example(path=paths[0], data=data, content_type=content_type, signed=True)(check)
    check()
    assert {200, 400, 413, 415} <= statuses, statuses
