"""What the ingest stage does with one raw record: decode it, normalise its identifiers and
build the identity request, or say why the event cannot be resolved (its dead letter).

The public model (``schemas.events.RawEvent``) decides what a raw event is. Validating
with it costs ~7 µs a record of the bench mix, 3x msgspec's decoding of the same records
into :class:`WireEvent`, a struct under the same constraints (4.3 µs with the looks
below). So a record is decoded with msgspec first, and the public model is asked only
when msgspec refuses it (its verdict, and its error naming the field, are the dead
letter's) or when msgspec could read it differently:

* nested deeper than the public model's parser allows (~200 levels): a record with more
  than :data:`FAST_MAX_OPENINGS` brackets, which bounds its depth, is not tried;
* a time with a fraction finer than a microsecond, which msgspec rounds and the public
  model truncates (:data:`_SUB_MICROSECOND`, a cheap look at the bytes).

Everything msgspec's decoder accepts, the public model accepts as the same event
(``tests/unit/test_intake.py`` compares the two on edge cases and on generated records,
down to the identity request each gives); the public model accepts more (an ``"1"`` for
a boolean, a ``NaN`` in a payload, a repeated key), and those records take the slow path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec
from pydantic import ValidationError

from pipeline.identity_state import Evidence
from pipeline.normalize import normalise
from pipeline.ops import ResolveRequest
from pipeline.rules import Rules
from schemas.events import IDENTIFIER_TYPE_PATTERN, Channel, RawEvent

#: Brackets (``[`` and ``{``, strings' included) a record may hold and be decoded by
#: msgspec: they bound its nesting, which must stay under the public model's limit (its
#: parser refuses 200 levels; msgspec reads them).
FAST_MAX_OPENINGS: Final = 128
#: A time with more than six fractional digits (``:SS.fffffff``), anywhere in the record.
_SUB_MICROSECOND: Final = re.compile(rb":\d\d\.\d{7}")

if not IDENTIFIER_TYPE_PATTERN.endswith("$"):
    raise RuntimeError("schemas.events.IDENTIFIER_TYPE_PATTERN no longer ends in $")
#: ``$`` in Python's ``re`` (msgspec's) also matches before a final newline; the public
#: model's regex does not: ``\Z`` does not either.
_TYPE_PATTERN: Final = IDENTIFIER_TYPE_PATTERN[:-1] + r"\Z"
_Aware = Annotated[datetime, msgspec.Meta(tz=True)]


class WireIdentifier(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """``schemas.events.Identifier`` as :class:`WireEvent` holds it."""

    type: Annotated[str, msgspec.Meta(pattern=_TYPE_PATTERN)]
    value: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    verified: bool = False


class WireEvent(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    """``schemas.events.RawEvent`` decoded by msgspec, under the same constraints (the
    fast path of :func:`decode_event`)."""

    schema_version: Literal[1] = 1
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    channel: Channel
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    kind: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    name: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    occurred_at: _Aware
    received_at: _Aware
    identifiers: Annotated[list[WireIdentifier], msgspec.Meta(max_length=64)] = msgspec.field(
        default_factory=list
    )
    traits: dict[str, Any] = msgspec.field(default_factory=dict)
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    payload: dict[str, Any] = msgspec.field(default_factory=dict)


_WIRE: Final = msgspec.json.Decoder(WireEvent)


def decode_event(value: bytes) -> RawEvent | WireEvent:
    """The raw event in ``value``: msgspec's reading where it is sure to be the public
    model's, else the public model's (which raises ``ValidationError``)."""
    if (
        value.count(b"{") + value.count(b"[") <= FAST_MAX_OPENINGS
        and _SUB_MICROSECOND.search(value) is None
    ):
        try:
            return _WIRE.decode(value)
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass  # the public model decides, and names the field
    return RawEvent.model_validate_json(value)


@dataclass(frozen=True)
class Unusable:
    """No usable identifier is left: the event is dead-lettered with ``reasons``."""

    reasons: str


@dataclass(frozen=True)
class Rejected:
    """A raw record the pipeline cannot use: dead-lettered with ``reason`` and ``detail``."""

    reason: str  # invalid_event | no_usable_identifier
    detail: str


def intake(
    value: bytes | None, rules: Rules, *, topic: str, partition: int, offset: int
) -> tuple[RawEvent | WireEvent, ResolveRequest] | Rejected:
    """One raw record: the decoded event and its resolve request, or why it is rejected."""
    try:
        event = decode_event(value or b"")
    except ValidationError as exc:
        return Rejected("invalid_event", str(exc))
    request = resolve_request(
        event, value or b"", rules, topic=topic, partition=partition, offset=offset
    )
    if isinstance(request, Unusable):
        return Rejected("no_usable_identifier", request.reasons)
    return event, request


def resolve_request(
    event: RawEvent | WireEvent,
    raw: bytes,
    rules: Rules,
    *,
    topic: str,
    partition: int,
    offset: int,
) -> ResolveRequest | Unusable:
    """The event's identifiers in canonical form, where it was read from, and ``raw`` (the
    record ``event`` was decoded from), passed on verbatim."""
    result = normalise(event.identifiers, rules)
    if not result.identifiers:
        return Unusable("; ".join(str(r) for r in result.rejected) or "no identifiers")
    return ResolveRequest(
        identifiers=result.identifiers,
        event=raw,
        evidence=Evidence(
            event_id=event.event_id,
            channel=event.channel,
            source=event.source,
            occurred_at=event.occurred_at,
            topic=topic,
            partition=partition,
            offset=offset,
            rule_version=rules.version,
        ),
    )
