"""Twilio Messaging webhooks to raw events: inbound messages, status callbacks, consent. Pure.

* An inbound message (``/twilio/sms``) is a ``message`` event from the sender (``From``),
  id ``twilio:sms:<MessageSid>``. A WhatsApp sender (``whatsapp:+1...``) comes through
  Twilio the same way and is mapped to the ``social`` channel.
* An opt-out, opt-in or help keyword (Twilio's defaults: STOP, STOPALL, UNSUBSCRIBE,
  CANCEL, END, QUIT, REVOKE, OPTOUT / START, YES, UNSTOP / HELP, INFO; or the
  ``OptOutType`` parameter of Advanced Opt-Out) adds a ``consent`` event, id
  ``twilio:sms:<MessageSid>:consent``, with ``properties.channel = "sms"``,
  ``properties.status`` = ``opted_out`` / ``opted_in`` / ``help_requested`` and the trait
  ``sms_opted_out`` (true/false), so every consumer of the customer context can tell
  whether the customer may be texted.
* A status callback (``/twilio/sms/status``) is a ``message_status`` event about the
  recipient (``To``), id ``twilio:sms:<MessageSid>:<MessageStatus>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from connectors.mapping import event_id, identifiers, make_event, utc
from connectors.twilio.params import SOURCE, Params, address_identifiers, is_whatsapp
from schemas.events import Channel, RawEvent

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN = frozenset({"START", "YES", "UNSTOP"})
HELP = frozenset({"HELP", "INFO"})
_STATUS = {"STOP": "opted_out", "START": "opted_in", "HELP": "help_requested"}
_MAX_MEDIA = 10


def keyword(body: str | None, opt_out_type: str | None = None) -> str | None:
    """``STOP``, ``START`` or ``HELP`` when the message is such a keyword, else None."""
    if opt_out_type and opt_out_type.strip().upper() in _STATUS:
        return opt_out_type.strip().upper()
    word = (body or "").strip().rstrip(".!").strip().upper()
    if word in OPT_OUT:
        return "STOP"
    if word in OPT_IN:
        return "START"
    if word in HELP:
        return "HELP"
    return None


def inbound_events(pairs: Sequence[tuple[str, str]], received_at: datetime) -> list[RawEvent]:
    """An incoming message, and a consent event when it is a keyword."""
    p = Params(pairs)
    sid = p.get("MessageSid") or p.require("SmsSid")
    sender = p.require("From")
    recipient = p.require("To")
    received = utc(received_at)
    text = p.get("Body")
    channel = Channel.SOCIAL if is_whatsapp(sender) else Channel.SMS
    ids = identifiers(address_identifiers(sender))
    properties: dict[str, Any] = {
        "direction": "inbound",
        "text": p.raw("Body"),
        "from": sender,
        "to": recipient,
        "message_sid": sid,
        "num_media": _int(p.get("NumMedia")),
        "media": _media(p),
    }
    for name, key in (
        ("MessagingServiceSid", "messaging_service_sid"),
        ("FromCountry", "from_country"),
    ):
        if (value := p.get(name)) is not None:
            properties[key] = value
    payload = p.payload()
    events = [
        make_event(
            event_id=event_id(SOURCE, "sms", sid),
            channel=channel,
            source=SOURCE,
            kind="message",
            occurred_at=received,
            received_at=received,
            identifiers=ids,
            properties=properties,
            payload=payload,
        )
    ]
    found = keyword(text, p.get("OptOutType"))
    if found is not None:
        status = _STATUS[found]
        traits: dict[str, Any] = {}
        if found != "HELP":
            traits["sms_opted_out"] = found == "STOP"
        events.append(
            make_event(
                event_id=event_id(SOURCE, "sms", sid, "consent"),
                channel=channel,
                source=SOURCE,
                kind="consent",
                name=status,
                occurred_at=received,
                received_at=received,
                identifiers=ids,
                traits=traits,
                properties={
                    "channel": "whatsapp" if channel is Channel.SOCIAL else "sms",
                    "status": status,
                    "keyword": (text or found).strip()[:64],
                    "sender_number": recipient,
                    "messaging_service_sid": p.get("MessagingServiceSid"),
                    "message_sid": sid,
                },
                payload=payload,
            )
        )
    return events


def status_event(pairs: Sequence[tuple[str, str]], received_at: datetime) -> RawEvent:
    """A delivery status callback of a message sent to the customer (``To``)."""
    p = Params(pairs)
    sid = p.get("MessageSid") or p.require("SmsSid")
    status = p.get("MessageStatus") or p.require("SmsStatus")
    recipient = p.require("To")
    received = utc(received_at)
    properties: dict[str, Any] = {
        "direction": "outbound",
        "status": status,
        "message_sid": sid,
        "from": p.get("From"),
        "to": recipient,
    }
    if (code := p.get("ErrorCode")) is not None:
        properties["error_code"] = code
    return make_event(
        event_id=event_id(SOURCE, "sms", sid, status),
        channel=Channel.SOCIAL if is_whatsapp(recipient) else Channel.SMS,
        source=SOURCE,
        kind="message_status",
        name=status,
        occurred_at=received,
        received_at=received,
        identifiers=identifiers(address_identifiers(recipient)),
        properties=properties,
        payload=p.payload(),
    )


def _media(p: Params) -> list[dict[str, str | None]]:
    count = min(_int(p.get("NumMedia")) or 0, _MAX_MEDIA)
    return [
        {"url": p.get(f"MediaUrl{i}"), "content_type": p.get(f"MediaContentType{i}")}
        for i in range(count)
        if p.get(f"MediaUrl{i}") is not None
    ]


def _int(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 9:
        return None
    return int(value)
