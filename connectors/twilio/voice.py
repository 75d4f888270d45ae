"""Twilio Voice webhooks to raw events: call lifecycle, IVR input, recordings. Pure.

* Call webhook and status callbacks (``/twilio/voice``): a ``call`` event named by its
  lifecycle (``ringing``, ``answered``, ``completed``, ``no-answer``, ``busy``,
  ``failed``, ``canceled``; Twilio says ``in-progress`` for answered, kept in
  ``properties.status``); id ``twilio:call:<CallSid>:<CallStatus>[:<SequenceNumber>]``.
* Gather results (``/twilio/voice/gather``): an ``ivr_input`` event with ``digits`` or
  ``speech`` (and ``confidence``); id ``twilio:call:<CallSid>:gather:<hash>`` over the
  request's parameters and query, so Twilio's retries of the same request dedupe.
* Recording and transcription callbacks: ``recording`` (id
  ``twilio:recording:<RecordingSid>:<RecordingStatus>``) and ``transcription`` (id
  ``twilio:transcription:<TranscriptionSid>``).

The customer is the caller (``From``) of an inbound call and the callee (``To``) of an
outbound one. Recording status callbacks carry no numbers: the callback URL may name the
customer as ``?caller=+1...`` (the URL is signed, so it cannot be forged); a callback that
names no customer at all is refused (400), since the pipeline could not place it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from connectors.errors import invalid
from connectors.mapping import content_hash, event_id, identifiers, make_event, utc
from connectors.twilio.params import SOURCE, Params, address_identifiers
from schemas.events import Channel, Identifier, RawEvent

#: Twilio's CallStatus -> the lifecycle name used for the event.
LIFECYCLE = {
    "queued": "queued",
    "initiated": "initiated",
    "ringing": "ringing",
    "in-progress": "answered",
    "answered": "answered",
    "completed": "completed",
    "busy": "busy",
    "no-answer": "no-answer",
    "failed": "failed",
    "canceled": "canceled",
}
_CALL_FIELDS = {
    "Direction": "direction",
    "From": "from",
    "To": "to",
    "CallDuration": "duration_s",
    "AnsweredBy": "answered_by",
    "CallerName": "caller_name",
    "ForwardedFrom": "forwarded_from",
    "ParentCallSid": "parent_call_sid",
    "SequenceNumber": "sequence",
}


def call_event(
    pairs: Sequence[tuple[str, str]], received_at: datetime, query: Sequence[tuple[str, str]] = ()
) -> RawEvent:
    """A call webhook or status callback."""
    p = Params(pairs)
    call_sid = p.require("CallSid")
    status = p.require("CallStatus").lower()
    if status not in LIFECYCLE:
        raise invalid("CallStatus", f"unknown call status {status!r}")
    properties: dict[str, Any] = {"status": status, "lifecycle": LIFECYCLE[status]}
    properties |= _copy(p, _CALL_FIELDS)
    parts = [SOURCE, "call", call_sid, status]
    if (sequence := p.get("SequenceNumber")) is not None:
        parts.append(sequence[:16])
    return _event(p, query, event_id(*parts), "call", LIFECYCLE[status], properties, received_at)


def gather_event(
    pairs: Sequence[tuple[str, str]], received_at: datetime, query: Sequence[tuple[str, str]] = ()
) -> RawEvent:
    """The caller's answer to an IVR ``<Gather>``: digits, speech, or nothing (timeout)."""
    p = Params(pairs)
    call_sid = p.require("CallSid")
    properties: dict[str, Any] = {"call_sid": call_sid}
    if (digits := p.get("Digits")) is not None:
        properties["digits"] = digits[:64]
    if (speech := p.get("SpeechResult")) is not None:
        properties["speech"] = speech[:2000]
        properties["confidence"] = _float(p.get("Confidence"))
    step = dict(query).get("step")
    if step:
        properties["step"] = step[:128]
    properties["input"] = "dtmf" if digits else "speech" if speech else "none"
    digest = content_hash([sorted(p.pairs), sorted(query)])
    eid = event_id(SOURCE, "call", call_sid, "gather", digest)
    return _event(p, query, eid, "ivr_input", step or None, properties, received_at)


def recording_event(
    pairs: Sequence[tuple[str, str]], received_at: datetime, query: Sequence[tuple[str, str]] = ()
) -> RawEvent:
    """A recording status callback, or a ``<Record action>`` request."""
    p = Params(pairs)
    recording_sid = p.require("RecordingSid")
    status = (p.get("RecordingStatus") or "completed").lower()
    properties: dict[str, Any] = {
        "call_sid": p.get("CallSid"),
        "recording_sid": recording_sid,
        "status": status,
        "url": p.get("RecordingUrl"),
        "duration_s": p.get("RecordingDuration"),
    }
    eid = event_id(SOURCE, "recording", recording_sid, status)
    return _event(p, query, eid, "recording", status, properties, received_at)


def transcription_event(
    pairs: Sequence[tuple[str, str]], received_at: datetime, query: Sequence[tuple[str, str]] = ()
) -> RawEvent:
    """A ``<Record transcribeCallback>`` request with the transcription text."""
    p = Params(pairs)
    transcription_sid = p.require("TranscriptionSid")
    properties: dict[str, Any] = {
        "call_sid": p.get("CallSid"),
        "recording_sid": p.get("RecordingSid"),
        "transcription_sid": transcription_sid,
        "status": p.get("TranscriptionStatus"),
        "text": (p.raw("TranscriptionText") or "")[:20_000],
    }
    eid = event_id(SOURCE, "transcription", transcription_sid)
    return _event(p, query, eid, "transcription", None, properties, received_at)


def customer_identifiers(p: Params, query: Sequence[tuple[str, str]]) -> list[Identifier]:
    """The customer's number: caller of an inbound call, callee of an outbound one."""
    direction = (p.get("Direction") or "inbound").lower()
    address = p.get("To") if direction.startswith("outbound") else p.get("From")
    found = identifiers(address_identifiers(address))
    if not found:
        found = identifiers(address_identifiers(dict(query).get("caller")))
    return found


def _event(
    p: Params,
    query: Sequence[tuple[str, str]],
    eid: str,
    kind: str,
    name: str | None,
    properties: dict[str, Any],
    received_at: datetime,
) -> RawEvent:
    ids = customer_identifiers(p, query)
    if not ids:
        raise invalid("From", "no customer phone number (From/To, or ?caller= on the URL)")
    received = utc(received_at)
    return make_event(
        event_id=eid,
        channel=Channel.VOICE,
        source=SOURCE,
        kind=kind,
        name=name,
        occurred_at=_timestamp(p.get("Timestamp")) or received,
        received_at=received,
        identifiers=ids,
        properties=properties,
        payload=p.payload(),
    )


def _copy(p: Params, fields: dict[str, str]) -> dict[str, str]:
    return {key: value for name, key in fields.items() if (value := p.get(name)) is not None}


def _timestamp(value: str | None) -> datetime | None:
    """Twilio's status-callback ``Timestamp`` (RFC 2822); None when absent or unreadable."""
    if value is None:
        return None
    try:
        return utc(parsedate_to_datetime(value))
    except (TypeError, ValueError, IndexError):
        return None


def _float(value: str | None) -> float | None:
    try:
        number = None if value is None else float(value)
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None
