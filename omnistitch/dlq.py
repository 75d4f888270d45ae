"""Dead-letter records (``raw.events.dlq``) as data: decoding and choosing what to replay.

A dead-letter record is JSON written by :mod:`pipeline.dead_letter`: ``stage``,
``reason``, ``detail``, ``dead_lettered_at``, and the original record's key and value in
base64 (``original_key_b64``, ``original_value_b64``). :func:`encode` writes the same
record for processes without faust (the routing consumer's ``routing.hints.dlq``), with
the source ``topic``, ``partition`` and ``offset`` when known. Pure: the reading and
publishing are :mod:`omnistitch.dlq_replay`'s.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime


class InvalidDeadLetter(ValueError):
    """A record on the dead-letter topic that is not a dead-letter record."""


@dataclass(frozen=True)
class DeadLetter:
    """One decoded dead-letter record."""

    reason: str
    stage: str | None
    key: bytes | None
    value: bytes | None


def encode(
    *,
    stage: str,
    reason: str,
    detail: str,
    key: bytes | None,
    value: bytes | None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    now: datetime | None = None,
) -> bytes:
    """A dead-letter record's value, in :mod:`pipeline.dead_letter`'s format (``detail``
    cut to 4000 characters); :func:`decode` reads it back."""
    record: dict[str, object] = {
        "stage": stage,
        "reason": reason,
        "detail": detail[:4000],
        "dead_lettered_at": (now or datetime.now(UTC)).isoformat(),
        "original_key_b64": base64.b64encode(key).decode() if key is not None else None,
        "original_value_b64": base64.b64encode(value).decode() if value is not None else None,
    }
    if topic is not None:
        record.update(topic=topic, partition=partition, offset=offset)
    return json.dumps(record).encode()


def decode(raw: bytes | None) -> DeadLetter:
    """Decode a dead-letter record's value; raises :class:`InvalidDeadLetter`."""
    try:
        record = json.loads(raw or b"")
        if not isinstance(record, dict) or not isinstance(record.get("reason"), str):
            raise InvalidDeadLetter("not a dead-letter record (no reason)")
        return DeadLetter(
            reason=record["reason"],
            stage=record.get("stage"),
            key=_b64(record.get("original_key_b64")),
            value=_b64(record.get("original_value_b64")),
        )
    except (ValueError, binascii.Error) as exc:
        if isinstance(exc, InvalidDeadLetter):
            raise
        raise InvalidDeadLetter(f"not a dead-letter record: {exc}") from None


def _b64(text: object) -> bytes | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise InvalidDeadLetter("original key/value must be base64 text")
    return base64.b64decode(text, validate=True)


def event_id_of(value: bytes | None) -> str | None:
    """The ``event_id`` of an original value, when it is JSON that has one (for reports)."""
    try:
        body = json.loads(value or b"")
    except ValueError:
        return None
    event_id = body.get("event_id") if isinstance(body, dict) else None
    return event_id if isinstance(event_id, str) else None


@dataclass
class ReplayReport:
    """What one replay run saw and did."""

    dry_run: bool
    scanned: int = 0
    matched: int = 0
    replayed: int = 0
    invalid: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)

    def wants(self, letter: DeadLetter, reasons: Collection[str], limit: int | None) -> bool:
        """Whether to replay ``letter``: its reason is chosen (all if none) and the limit
        is not reached; a letter without an original value has nothing to replay."""
        if reasons and letter.reason not in reasons:
            return False
        if limit is not None and self.matched >= limit:
            return False
        return letter.value is not None

    def as_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "scanned": self.scanned,
            "matched": self.matched,
            "replayed": self.replayed,
            "invalid": self.invalid,
            "by_reason": dict(sorted(self.by_reason.items())),
        }
