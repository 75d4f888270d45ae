"""The Twilio connector: pure mappings, and the HTTP contract with requests signed by
Twilio's own ``RequestValidator`` (the ``twilio`` package), through an in-memory publisher."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from connectors.errors import Rejected
from connectors.http import create_app
from connectors.publisher import InMemoryPublisher
from connectors.twilio import signature, sms, voice
from connectors.twilio.app import TwilioConnector, TwilioSettings
from schemas.events import Channel, RawEvent
from tests.connector_support import TOPIC, AsgiClient, metric, published

TOKEN = "twilio-auth-token-for-tests"
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
BASE = "http://testserver"
CUSTOMER = "+14155550199"
OUR_NUMBER = "+18005550000"


def inbound(body: str, sid: str = "SM0001", **extra: str) -> list[tuple[str, str]]:
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": "AC123",
        "From": CUSTOMER,
        "To": OUR_NUMBER,
        "Body": body,
        "NumMedia": "0",
        **extra,
    }
    return list(params.items())


def call(status: str, sid: str = "CA0001", **extra: str) -> list[tuple[str, str]]:
    params = {
        "CallSid": sid,
        "AccountSid": "AC123",
        "From": CUSTOMER,
        "To": OUR_NUMBER,
        "Direction": "inbound",
        "CallStatus": status,
        **extra,
    }
    return list(params.items())


# --- signature ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/twilio/sms?x=1", "http://testserver:8091/twilio/voice"]
)
def test_signature_matches_twilio_request_validator(url: str) -> None:
    params = inbound("Hello, world & more")
    expected = RequestValidator(TOKEN).compute_signature(url, dict(params))
    assert signature.compute(TOKEN, url, params) == expected
    assert signature.is_valid(TOKEN, url, params, expected)
    sha256 = RequestValidator(TOKEN).compute_signature(url, dict(params), "HMAC_SHA256")
    assert signature.is_valid(TOKEN, url, params, sha256, signature.HMAC_SHA256)
    assert not signature.is_valid(TOKEN, url, params, expected, signature.HMAC_SHA256)


def test_signature_with_or_without_the_default_port() -> None:
    params = inbound("hi")
    signed_with_port = RequestValidator(TOKEN).compute_signature(
        "https://hooks.example.com:443/twilio/sms", dict(params)
    )
    assert signature.is_valid(
        TOKEN, "https://hooks.example.com/twilio/sms", params, signed_with_port
    )


def test_signature_rejects_forgeries() -> None:
    url = "https://hooks.example.com/twilio/sms"
    params = inbound("hi")
    good = signature.compute(TOKEN, url, params)
    assert not signature.is_valid("another-token", url, params, good)
    assert not signature.is_valid(TOKEN, url, inbound("hi!"), good)
    assert not signature.is_valid(TOKEN, url + "?a=1", params, good)
    assert not signature.is_valid(TOKEN, url, params, None)
    assert not signature.is_valid(TOKEN, url, params, good, "HMAC_MD5")
    assert signature.algorithm("key=abc,algorithm=HMAC_SHA256") == "HMAC_SHA256"
    assert signature.algorithm(None) == signature.HMAC_SHA1


# --- SMS mapping -------------------------------------------------------------------------


def test_inbound_sms_is_a_message_from_the_sender() -> None:
    [event] = sms.inbound_events(inbound(" Where is my order? "), NOW)
    assert event.event_id == "twilio:sms:SM0001"
    assert (event.channel, event.source, event.kind) == (Channel.SMS, "twilio", "message")
    assert [i.key for i in event.identifiers] == [f"phone:{CUSTOMER}"]
    assert event.properties["text"] == " Where is my order? "
    assert event.properties["to"] == OUR_NUMBER
    assert event.payload["MessageSid"] == "SM0001"
    assert event.occurred_at == NOW


@pytest.mark.parametrize(
    ("body", "status", "opted_out"),
    [
        ("STOP", "opted_out", True),
        ("  stop. ", "opted_out", True),
        ("Unsubscribe", "opted_out", True),
        ("START", "opted_in", False),
        ("unstop", "opted_in", False),
        ("HELP", "help_requested", None),
    ],
)
def test_keywords_become_consent_events(body: str, status: str, opted_out: bool | None) -> None:
    message, consent = sms.inbound_events(inbound(body), NOW)
    assert message.kind == "message"
    assert consent.event_id == "twilio:sms:SM0001:consent"
    assert (consent.kind, consent.name) == ("consent", status)
    assert consent.properties["channel"] == "sms"
    assert consent.properties["status"] == status
    assert consent.properties["sender_number"] == OUR_NUMBER
    assert consent.identifiers == message.identifiers
    assert consent.traits.get("sms_opted_out") == opted_out


def test_advanced_opt_out_type_wins_and_ordinary_text_is_no_keyword() -> None:
    events = sms.inbound_events(inbound("please stop texting me", OptOutType="STOP"), NOW)
    assert events[1].properties["status"] == "opted_out"
    assert len(sms.inbound_events(inbound("please stop texting me"), NOW)) == 1


def test_whatsapp_through_twilio_is_social_with_a_whatsapp_identifier() -> None:
    params = inbound("hi", From=f"whatsapp:{CUSTOMER}")
    [event] = sms.inbound_events(params, NOW)
    assert event.channel is Channel.SOCIAL
    assert {i.key for i in event.identifiers} == {f"whatsapp:{CUSTOMER}", f"phone:{CUSTOMER}"}


def test_media_is_listed() -> None:
    params = inbound(
        "", NumMedia="1", MediaUrl0="https://api.twilio.com/m/1", MediaContentType0="image/jpeg"
    )
    [event] = sms.inbound_events(params, NOW)
    assert event.properties["media"] == [
        {"url": "https://api.twilio.com/m/1", "content_type": "image/jpeg"}
    ]


def test_status_callback_is_about_the_recipient() -> None:
    params = [
        ("MessageSid", "SM9"),
        ("MessageStatus", "undelivered"),
        ("From", OUR_NUMBER),
        ("To", CUSTOMER),
        ("ErrorCode", "30003"),
    ]
    event = sms.status_event(params, NOW)
    assert event.event_id == "twilio:sms:SM9:undelivered"
    assert (event.kind, event.name) == ("message_status", "undelivered")
    assert [i.key for i in event.identifiers] == [f"phone:{CUSTOMER}"]
    assert event.properties["error_code"] == "30003"


def test_missing_fields_are_named() -> None:
    with pytest.raises(Rejected) as info:
        sms.inbound_events([("From", CUSTOMER), ("To", OUR_NUMBER)], NOW)
    assert (info.value.status, info.value.field) == (400, "SmsSid")
    with pytest.raises(Rejected) as info:
        sms.inbound_events([("MessageSid", "SM1"), ("To", OUR_NUMBER)], NOW)
    assert info.value.field == "From"


# --- voice mapping -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "lifecycle"),
    [
        ("ringing", "ringing"),
        ("in-progress", "answered"),
        ("completed", "completed"),
        ("no-answer", "no-answer"),
        ("busy", "busy"),
        ("failed", "failed"),
    ],
)
def test_call_lifecycle(status: str, lifecycle: str) -> None:
    event = voice.call_event(call(status, SequenceNumber="2"), NOW)
    assert event.event_id == f"twilio:call:CA0001:{status}:2"
    assert (event.channel, event.kind, event.name) == (Channel.VOICE, "call", lifecycle)
    assert event.properties["status"] == status
    assert [i.key for i in event.identifiers] == [f"phone:{CUSTOMER}"]


def test_outbound_call_customer_is_the_callee_and_timestamp_is_used() -> None:
    params = call(
        "no-answer",
        From=OUR_NUMBER,
        To=CUSTOMER,
        Direction="outbound-api",
        Timestamp="Fri, 20 Nov 2026 09:29:58 +0000",
    )
    event = voice.call_event(params, NOW)
    assert event.event_id == "twilio:call:CA0001:no-answer"
    assert [i.key for i in event.identifiers] == [f"phone:{CUSTOMER}"]
    assert event.occurred_at == datetime(2026, 11, 20, 9, 29, 58, tzinfo=UTC)


def test_unknown_call_status_and_client_callers_are_400() -> None:
    with pytest.raises(Rejected) as info:
        voice.call_event(call("exploded"), NOW)
    assert info.value.field == "CallStatus"
    with pytest.raises(Rejected) as info:
        voice.call_event(call("ringing", From="client:alice"), NOW)
    assert info.value.field == "From"


def test_gather_digits_and_speech() -> None:
    digits = voice.gather_event(call("in-progress", Digits="2"), NOW, [("step", "menu")])
    assert (digits.kind, digits.name) == ("ivr_input", "menu")
    assert digits.properties["digits"] == "2"
    assert digits.properties["input"] == "dtmf"
    again = voice.gather_event(call("in-progress", Digits="2"), NOW, [("step", "menu")])
    assert again.event_id == digits.event_id  # Twilio's retry dedupes
    speech = voice.gather_event(
        call("in-progress", SpeechResult="billing question", Confidence="0.93"), NOW
    )
    assert speech.properties["speech"] == "billing question"
    assert speech.properties["confidence"] == 0.93
    assert speech.event_id != digits.event_id
    assert speech.event_id.startswith("twilio:call:CA0001:gather:")


def test_recording_without_numbers_uses_the_caller_query_parameter() -> None:
    params = [
        ("CallSid", "CA1"),
        ("RecordingSid", "RE1"),
        ("RecordingStatus", "completed"),
        ("RecordingUrl", "https://api.twilio.com/rec/RE1"),
        ("RecordingDuration", "42"),
    ]
    event = voice.recording_event(params, NOW, [("caller", CUSTOMER)])
    assert event.event_id == "twilio:recording:RE1:completed"
    assert [i.key for i in event.identifiers] == [f"phone:{CUSTOMER}"]
    with pytest.raises(Rejected):
        voice.recording_event(params, NOW)


def test_transcription() -> None:
    params = [
        *call("completed"),
        ("TranscriptionSid", "TR1"),
        ("TranscriptionText", "Please call me back"),
        ("TranscriptionStatus", "completed"),
        ("RecordingSid", "RE1"),
    ]
    event = voice.transcription_event(params, NOW)
    assert event.event_id == "twilio:transcription:TR1"
    assert event.properties["text"] == "Please call me back"


# --- HTTP ----------------------------------------------------------------------------------


def settings(**overrides: object) -> TwilioSettings:
    return TwilioSettings(auth_token=TOKEN, max_body_bytes=4096, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def publisher() -> InMemoryPublisher:
    return InMemoryPublisher()


@pytest.fixture
def client(publisher: InMemoryPublisher) -> AsgiClient:
    return AsgiClient(create_app(TwilioConnector(settings()), TOPIC, publisher))


def post_signed(
    client: AsgiClient,
    path: str,
    params: list[tuple[str, str]],
    token: str = TOKEN,
    signed_url: str | None = None,
) -> tuple[int, str, str]:
    url = f"{BASE}{path}"
    sig = RequestValidator(token).compute_signature(signed_url or url, dict(params))
    response = client.post(
        path,
        content=urlencode(params),
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": sig},
    )
    return response.status_code, response.headers.get("content-type", ""), response.text


def test_signed_sms_is_published_then_answered_with_twiml(
    client: AsgiClient, publisher: InMemoryPublisher
) -> None:
    status, content_type, body = post_signed(client, "/twilio/sms", inbound("STOP"))
    assert (status, content_type) == (200, "text/xml; charset=utf-8")
    assert body == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    events = published(publisher)
    assert [e.kind for _, e in events] == ["message", "consent"]
    assert {k for k, _ in events} == {f"phone:{CUSTOMER}"}
    assert (
        metric(
            client, "omnistitch_connector_events_accepted_total", connector="twilio", kind="consent"
        )
        == 1
    )


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (
            "/twilio/sms/status",
            [("MessageSid", "SM1"), ("MessageStatus", "delivered"), ("To", CUSTOMER)],
        ),
        ("/twilio/voice", call("no-answer")),
        ("/twilio/voice/gather?step=menu", call("in-progress", Digits="1")),
        (
            "/twilio/voice/recording?caller=%2B14155550199",
            [("CallSid", "CA1"), ("RecordingSid", "RE1")],
        ),
        ("/twilio/voice/transcription", [*call("completed"), ("TranscriptionSid", "TR1")]),
    ],
)
def test_every_twilio_endpoint_accepts_signed_requests(
    client: AsgiClient, publisher: InMemoryPublisher, path: str, params: list[tuple[str, str]]
) -> None:
    status, content_type, _ = post_signed(client, path, params)
    assert status == 200
    assert content_type.startswith("text/xml")
    assert len(publisher.records) == 1


@pytest.mark.parametrize(
    "forge",
    ["wrong_token", "tampered_body", "no_header", "other_url"],
)
def test_forged_requests_are_403(
    client: AsgiClient, publisher: InMemoryPublisher, forge: str
) -> None:
    params = inbound("hello")
    sig = RequestValidator("wrong" if forge == "wrong_token" else TOKEN).compute_signature(
        f"{BASE}/twilio/sms" if forge != "other_url" else f"{BASE}/twilio/voice", dict(params)
    )
    if forge == "tampered_body":
        params = inbound("hello, changed")
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if forge != "no_header":
        headers["X-Twilio-Signature"] = sig
    response = client.post("/twilio/sms", content=urlencode(params), headers=headers)
    assert response.status_code == 403
    assert response.json()["error"] == "signature"
    assert response.json()["errors"][0]["field"] == "X-Twilio-Signature"
    assert publisher.records == []
    assert metric(client, "omnistitch_connector_signature_failures_total", connector="twilio") == 1


def test_public_url_is_what_twilio_signed(publisher: InMemoryPublisher) -> None:
    app = create_app(
        TwilioConnector(settings(public_url="https://hooks.example.com")), TOPIC, publisher
    )
    client = AsgiClient(app)
    signed = "https://hooks.example.com/twilio/sms"
    assert post_signed(client, "/twilio/sms", inbound("hi"), signed_url=signed)[0] == 200
    assert post_signed(client, "/twilio/sms", inbound("hi"))[0] == 403


def test_gather_redirects_to_the_ivr_when_configured(publisher: InMemoryPublisher) -> None:
    app = create_app(
        TwilioConnector(settings(gather_redirect_url="https://ivr.example.com/next?a=1")),
        TOPIC,
        publisher,
    )
    status, _, body = post_signed(
        AsgiClient(app), "/twilio/voice/gather", call("in-progress", Digits="3")
    )
    assert status == 200
    assert (
        '<Redirect method="POST">https://ivr.example.com/next?a=1&amp;digits=3</Redirect>' in body
    )


def test_bad_input_is_400_naming_the_field(client: AsgiClient) -> None:
    status, _, body = post_signed(client, "/twilio/voice", call("teleported"))
    assert status == 400
    assert '"field":"CallStatus"' in body


def test_json_body_is_415_and_oversized_is_413(client: AsgiClient) -> None:
    response = client.post("/twilio/sms", json={"Body": "hi"})
    assert response.status_code == 415
    assert response.json()["errors"][0]["field"] == "Content-Type"
    response = client.post(
        "/twilio/sms",
        content=urlencode(inbound("x" * 5000)),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413


def test_publish_failure_is_503_with_retry_after(
    client: AsgiClient, publisher: InMemoryPublisher
) -> None:
    publisher.fail_reason = "ack_timeout"
    params = inbound("hi")
    sig = RequestValidator(TOKEN).compute_signature(f"{BASE}/twilio/sms", dict(params))
    response = client.post(
        "/twilio/sms",
        content=urlencode(params),
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": sig},
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json() == {"error": "unavailable", "reason": "ack_timeout"}


def test_events_round_trip_as_raw_events(publisher: InMemoryPublisher, client: AsgiClient) -> None:
    post_signed(client, "/twilio/voice", call("completed", CallDuration="61"))
    [(_, event)] = published(publisher)
    assert RawEvent.model_validate_json(event.model_dump_json()) == event
    assert event.properties["duration_s"] == "61"
