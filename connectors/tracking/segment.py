"""Segment HTTP Tracking API messages and their mapping to :class:`RawEvent`. No I/O.

The models follow the Segment spec (identify, track, page, screen, alias, group and the
batch envelope) and keep unknown fields, since clients send ``context``, ``integrations``,
``_metadata`` and more. Channel rule: ``app`` for ``screen`` calls and when
``context.device.type`` or ``context.os.name`` names a mobile OS (iOS, iPadOS, Android);
``web`` otherwise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas.events import Channel, Identifier, RawEvent

SOURCE = "tracking"
MESSAGE_TYPES = ("identify", "track", "page", "screen", "alias", "group")
#: Partition-key preference: the most stable identifier of the sender first.
KEY_PRIORITY = ("user_id", "email", "phone", "anonymous_id")
#: Envelope fields left out of the content hash: they change when a client retries.
_VOLATILE = frozenset({"sentAt", "writeKey"})
_MOBILE_OS = frozenset({"ios", "ipados", "android"})
_PAGE_FIELDS = ("url", "path", "title", "referrer")
_MAX_ERRORS = 100


def _coerce_id(value: object) -> object:
    """Ids may come as numbers; blank strings count as absent."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        return value.strip() or None
    return value


def _require_present(value: object) -> object:
    if value is None:
        raise PydanticCustomError("missing", "Field required")
    return value


def _utc(value: datetime) -> datetime:
    """Naive timestamps are read as UTC; aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _blank_to_none(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _none_to_empty(value: object) -> object:
    return {} if value is None else value


_Id = Annotated[str, StringConstraints(max_length=512)]
OptionalId = Annotated[_Id | None, BeforeValidator(_coerce_id)]
RequiredId = Annotated[_Id, BeforeValidator(_require_present), BeforeValidator(_coerce_id)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=512)]
OptionalName = Annotated[Name | None, BeforeValidator(_blank_to_none)]
Timestamp = Annotated[datetime, AfterValidator(_utc)]
JsonObject = Annotated[dict[str, Any], BeforeValidator(_none_to_empty)]


class _Message(BaseModel):
    """Fields every Segment message may carry."""

    model_config = ConfigDict(extra="allow")

    anonymous_id: OptionalId = Field(default=None, alias="anonymousId")
    message_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, alias="messageId"
    )
    timestamp: Timestamp | None = None
    original_timestamp: Timestamp | None = Field(default=None, alias="originalTimestamp")
    context: JsonObject = Field(default_factory=dict)
    integrations: JsonObject = Field(default_factory=dict)


class _Identified(_Message):
    """A message about one user: needs ``userId`` or ``anonymousId``."""

    user_id: OptionalId = Field(default=None, alias="userId")

    @model_validator(mode="after")
    def _needs_identity(self) -> _Identified:
        if self.user_id is None and self.anonymous_id is None:
            raise PydanticCustomError(
                "identity_required", "userId or anonymousId is required", {"field": "userId"}
            )
        return self


class Identify(_Identified):
    type: Literal["identify"]
    traits: JsonObject = Field(default_factory=dict)


class Track(_Identified):
    type: Literal["track"]
    event: Name
    properties: JsonObject = Field(default_factory=dict)


class Page(_Identified):
    type: Literal["page"]
    name: OptionalName = None
    properties: JsonObject = Field(default_factory=dict)


class Screen(_Identified):
    type: Literal["screen"]
    name: OptionalName = None
    properties: JsonObject = Field(default_factory=dict)


class Group(_Identified):
    type: Literal["group"]
    group_id: RequiredId = Field(alias="groupId")
    traits: JsonObject = Field(default_factory=dict)


class Alias(_Message):
    type: Literal["alias"]
    user_id: RequiredId = Field(alias="userId")
    previous_id: RequiredId = Field(alias="previousId")


SegmentMessage = Annotated[
    Identify | Track | Page | Screen | Alias | Group, Field(discriminator="type")
]
_MESSAGE: TypeAdapter[SegmentMessage] = TypeAdapter(SegmentMessage)


class Batch(BaseModel):
    """The ``/v1/batch`` envelope; its ``context`` and ``integrations`` apply to every call."""

    model_config = ConfigDict(extra="allow")

    batch: list[SegmentMessage]
    context: JsonObject = Field(default_factory=dict)
    integrations: JsonObject = Field(default_factory=dict)
    sent_at: Timestamp | None = Field(default=None, alias="sentAt")


@dataclass(frozen=True)
class FieldError:
    """One problem in a request, ``field`` being a dotted path such as ``batch.1.userId``."""

    field: str
    message: str


class InvalidMessage(ValueError):
    """A request body that is not a valid Segment call or batch."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


ParsedMessage = tuple[SegmentMessage, dict[str, Any]]


def parse_body(kind: str, body: object) -> list[ParsedMessage]:
    """Validate a decoded request body for endpoint ``kind`` (a message type or ``batch``).

    Returns ``(message, raw)`` pairs; ``raw`` is the message as sent, without ``writeKey``,
    with a batch's ``context``/``integrations`` filled in (the message's own keys win) and
    ``type`` set from the endpoint when absent. Raises :class:`InvalidMessage`.
    """
    if not isinstance(body, dict):
        raise InvalidMessage([FieldError("body", "expected a JSON object")])
    body = {k: v for k, v in body.items() if k != "writeKey"}
    if kind == "batch":
        return _parse_batch(body)
    if kind not in MESSAGE_TYPES:
        raise ValueError(f"unknown Segment message type {kind!r}")
    if body.setdefault("type", kind) != kind:
        raise InvalidMessage([FieldError("type", f"expected {kind!r} on this endpoint")])
    try:
        message = _MESSAGE.validate_python(body)
    except ValidationError as exc:
        raise InvalidMessage(_field_errors(exc)) from None
    return [(message, body)]


def _parse_batch(body: dict[str, Any]) -> list[ParsedMessage]:
    items = body.get("batch")
    if isinstance(items, list):
        shared = {k: body[k] for k in ("context", "integrations") if isinstance(body.get(k), dict)}
        items = [_with_shared(item, shared) for item in items]
        body = {**body, "batch": items}
    try:
        envelope = Batch.model_validate(body)
    except ValidationError as exc:
        raise InvalidMessage(_field_errors(exc)) from None
    assert isinstance(items, list)
    return list(zip(envelope.batch, items, strict=True))


def _with_shared(item: object, shared: dict[str, dict[str, Any]]) -> object:
    if not isinstance(item, dict):
        return item
    item = {k: v for k, v in item.items() if k != "writeKey"}
    for key, values in shared.items():
        own = item.get(key)
        if own is None or isinstance(own, dict):
            item[key] = {**values, **(own or {})}
    return item


def _field_errors(exc: ValidationError) -> list[FieldError]:
    """Pydantic errors as dotted field paths, without the union's tag in them."""
    errors = []
    for err in exc.errors(include_url=False)[:_MAX_ERRORS]:
        loc = list(err["loc"])
        path = [
            p
            for i, p in enumerate(loc)
            if not (p in MESSAGE_TYPES and (i == 0 or isinstance(loc[i - 1], int)))
        ]
        message = err["msg"]
        ctx = err.get("ctx") or {}
        if "field" in ctx:
            path.append(ctx["field"])
        elif err["type"] == "union_tag_not_found":
            path.append("type")
            message = "Field required"
        elif err["type"] == "union_tag_invalid":
            path.append("type")
            message = f"expected one of {', '.join(MESSAGE_TYPES)}"
        errors.append(FieldError(".".join(str(p) for p in path) or "body", message))
    return errors


def to_raw_event(message: SegmentMessage, received_at: datetime, raw: dict[str, Any]) -> RawEvent:
    """Map one validated Segment message to the raw-event envelope; ``raw`` is its payload."""
    received = _utc(received_at)
    context_traits = _object(message.context.get("traits"))
    traits: dict[str, Any] = dict(context_traits)
    properties: dict[str, Any] = {}
    name: str | None = None
    ids: list[tuple[str, object]] = [
        ("user_id", message.user_id),
        ("anonymous_id", message.anonymous_id),
    ]
    match message:
        case Identify():
            traits.update(message.traits)
        case Track():
            name = message.event
            properties = dict(message.properties)
        case Page():
            name = message.name
            properties = _page_properties(message)
        case Screen():
            name = message.name
            properties = dict(message.properties)
        case Group():
            properties = {"group_id": message.group_id, "group_traits": message.traits}
        case Alias():
            ids.insert(1, ("anonymous_id", message.previous_id))
    ids += [("email", traits.get("email")), ("phone", traits.get("phone"))]
    return RawEvent(
        event_id=event_id(message, raw),
        channel=channel(message),
        source=SOURCE,
        kind=message.type,
        name=name,
        occurred_at=message.timestamp or message.original_timestamp or received,
        received_at=received,
        identifiers=_identifiers(ids),
        traits=traits,
        properties=properties,
        payload=raw,
    )


def event_id(message: SegmentMessage, raw: dict[str, Any]) -> str:
    """``tracking:<messageId>``, else ``tracking:sha256:<hash of the message's content>``."""
    if message.message_id is not None:
        return f"{SOURCE}:{message.message_id}"
    content = {k: v for k, v in raw.items() if k not in _VOLATILE}
    canonical = json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return f"{SOURCE}:sha256:{hashlib.sha256(canonical.encode()).hexdigest()}"


def channel(message: SegmentMessage) -> Channel:
    """``app`` for screen calls and mobile devices/OSes, otherwise ``web``."""
    if message.type == "screen":
        return Channel.APP
    device = _object(message.context.get("device")).get("type")
    os_name = _object(message.context.get("os")).get("name")
    for value in (device, os_name):
        if isinstance(value, str) and value.strip().lower() in _MOBILE_OS:
            return Channel.APP
    return Channel.WEB


def partition_key(event: RawEvent) -> str:
    """The sender's best identifier as ``type:value`` (user_id > email > phone > anonymous_id).

    Falls back to the event id for an event without any of those.
    """
    by_type = {i.type: i for i in reversed(event.identifiers)}
    for kind in KEY_PRIORITY:
        if kind in by_type:
            return by_type[kind].key
    return event.event_id


def _page_properties(message: Page) -> dict[str, Any]:
    properties = dict(message.properties)
    page = _object(message.context.get("page"))
    for key in _PAGE_FIELDS:
        if properties.get(key) in (None, "") and page.get(key) not in (None, ""):
            properties[key] = page[key]
    return properties


def _identifiers(candidates: list[tuple[str, object]]) -> list[Identifier]:
    """Typed identifiers from ``(type, value)`` pairs: trimmed, non-empty strings, no repeats."""
    found: list[Identifier] = []
    seen: set[tuple[str, str]] = set()
    for kind, value in candidates:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            continue
        value = value.strip()
        if not 0 < len(value) <= 512 or (kind, value) in seen:
            continue
        seen.add((kind, value))
        found.append(Identifier(type=kind, value=value))
    return found


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
