"""What the ingest stage does with one raw record: decode it, normalise its identifiers and
build the identity request, or say why the event cannot be resolved (its dead letter)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from pipeline.identity_state import Evidence
from pipeline.normalize import normalise
from pipeline.ops import ResolveRequest
from pipeline.rules import Rules
from schemas.events import RawEvent


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
) -> tuple[RawEvent, ResolveRequest] | Rejected:
    """One raw record: the decoded event and its resolve request, or why it is rejected."""
    try:
        event = RawEvent.model_validate_json(value or b"")
    except ValidationError as exc:
        return Rejected("invalid_event", str(exc))
    request = resolve_request(
        event, value or b"", rules, topic=topic, partition=partition, offset=offset
    )
    if isinstance(request, Unusable):
        return Rejected("no_usable_identifier", request.reasons)
    return event, request


def resolve_request(
    event: RawEvent, raw: bytes, rules: Rules, *, topic: str, partition: int, offset: int
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
