"""Pure helpers every provider mapping shares: ids, identifiers, times, validation. No I/O.

Mapping modules (``connectors/<provider>/<thing>.py``) turn a provider's payload into
:class:`RawEvent` s with these, and raise :class:`connectors.errors.Rejected` (400 naming
the field) for input that does not fit.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from connectors.errors import Rejected, invalid
from schemas.events import IDENTIFIER_TYPE_PATTERN, Identifier, RawEvent

_MAX_ID = 256
#: Deepest nesting of objects and lists an event may carry (providers use a handful).
MAX_DEPTH = 64
_M = TypeVar("_M", bound=BaseModel)
_TYPE_OK = re.compile(IDENTIFIER_TYPE_PATTERN)


def utc(value: datetime) -> datetime:
    """Naive times are read as UTC; aware ones converted to UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def from_epoch(value: object, field: str) -> datetime:
    """Unix time in seconds, or milliseconds when it is that large (Meta uses both)."""
    try:
        number = float(str(value))
    except ValueError:
        raise invalid(field, "expected a Unix timestamp") from None
    if number > 1e11:
        number /= 1000
    if not 0 <= number < 1e11:
        raise invalid(field, "timestamp out of range")
    return datetime.fromtimestamp(number, UTC)


def event_id(*parts: str) -> str:
    """``part:part:...``; hashed (sha256) when longer than the envelope allows."""
    joined = ":".join(parts)
    if len(joined) <= _MAX_ID:
        return joined
    return f"{parts[0]}:sha256:{hashlib.sha256(joined.encode()).hexdigest()}"


def content_hash(value: object) -> str:
    """A short, stable hash of JSON-able content (for providers without an id)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def identifiers(
    candidates: Iterable[tuple[str, object] | tuple[str, object, bool]],
) -> list[Identifier]:
    """Typed identifiers from ``(type, value[, verified])``: trimmed, non-empty, no repeats.

    A repeat keeps the verified flag if any occurrence was verified.
    """
    found: dict[tuple[str, str], Identifier] = {}
    for candidate in candidates:
        kind, value = candidate[0], candidate[1]
        verified = bool(candidate[2]) if len(candidate) == 3 else False
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not _TYPE_OK.match(kind):
            continue
        value = value.strip()
        if not 0 < len(value) <= 512:
            continue
        prior = found.get((kind, value))
        if prior is None or (verified and not prior.verified):
            found[(kind, value)] = Identifier(type=kind, value=value, verified=verified)
    return list(found.values())


def make_event(**fields: Any) -> RawEvent:
    """A :class:`RawEvent`, or 400 when the content cannot be represented (too deep, too long).

    Content nested deeper than :data:`MAX_DEPTH` is refused: JSON parsers downstream
    (pydantic's among them) give up on deep nesting, so such an event would be poison.
    """
    for name in ("payload", "properties", "traits"):
        if deeper_than(fields.get(name), MAX_DEPTH):
            raise invalid("body", f"nested deeper than {MAX_DEPTH} levels")
    try:
        return RawEvent(**fields)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise invalid("body", f"cannot be represented as an event: {exc}"[:500]) from None


def deeper_than(value: object, limit: int) -> bool:
    """True when ``value`` nests dicts/lists more than ``limit`` levels (iterative)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_model(model: type[_M], data: object, root: str = "") -> _M:
    """Validate ``data`` as ``model``; 400 naming the first bad field as a dotted path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise field_error(exc, root) from None


def field_error(exc: ValidationError, root: str = "") -> Rejected:
    """The first error of a pydantic validation as a 400 naming the dotted field path."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    path = ".".join(str(p) for p in (root, *first["loc"]) if p != "")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return invalid(path or "body", f"{first['msg']}{more}"[:500])


def require_object(value: object, field: str) -> Mapping[str, Any]:
    """``value`` if it is a JSON object; 400 naming ``field`` otherwise."""
    if not isinstance(value, dict):
        raise invalid(field, "expected a JSON object")
    return value
