"""Web chat events (the JSON a chat widget or platform posts) to raw events. Pure.

One request is one event::

    {
      "site_id": "acme-shop",                    # picks the identity secret; default "default"
      "id": "evt-81",                            # unique per site: the event id
      "type": "message",                         # conversation_started | message | agent_joined
                                                 # | transferred | conversation_ended | transcript
      "conversation_id": "conv-7",
      "occurred_at": "2026-11-20T09:30:00Z",     # optional; the connector's clock otherwise
      "visitor": {
        "anonymous_id": "a-123",                 # the widget's visitor id (share the analytics one)
        "id": "user-42",                         # a logged-in visitor's user id ...
        "identifier_hash": "9f2c...",            # ... proved by hex HMAC-SHA256(site secret, id)
        "email": "ann@example.com",              # given in the chat: kept, unverified
        "phone": "+1 415 555 0100",
        "name": "Ann"
      },
      "message": {"id": "m-1", "author": "visitor", "text": "Hi", "agent_id": null},
      "agent": {"id": "agent-7", "name": "Sam"},                     # agent_joined
      "transfer": {"from_agent_id": "agent-7", "to_agent_id": "agent-9", "to_queue": "billing"},
      "transcript": [{"author": "visitor", "text": "Hi", "at": "..."}],  # transcript
      "reason": "resolved",                                          # conversation_ended
      "page_url": "https://acme.example/orders"
    }

**Identity.** Only a proved ``visitor.id`` becomes an identifier, ``user_id`` with
``verified: true``. A ``visitor.id`` without a matching ``identifier_hash`` is
**rejected** (403): the identity rules trust ``user_id`` by type, so keeping a claimed id
even as "unverified" would let any visitor attach themselves to someone else's customer.
``anonymous_id``, ``email`` and ``phone`` are kept as unverified identifiers. Every event
needs at least one visitor identifier, so it can be placed on a customer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from connectors.errors import Rejected, SignatureInvalid, invalid
from connectors.mapping import event_id, identifiers, make_event, parse_model, utc
from connectors.webchat.identity import is_proved
from schemas.events import Channel, RawEvent

SOURCE = "webchat"
EVENT_TYPES = (
    "conversation_started",
    "message",
    "agent_joined",
    "transferred",
    "conversation_ended",
    "transcript",
)

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=20_000)]
Author = Literal["visitor", "agent", "bot", "system"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Visitor(_Model):
    id: Id | None = None
    identifier_hash: Annotated[str, StringConstraints(max_length=128)] | None = None
    anonymous_id: Id | None = None
    email: Annotated[str, StringConstraints(max_length=320)] | None = None
    phone: Annotated[str, StringConstraints(max_length=64)] | None = None
    name: Annotated[str, StringConstraints(max_length=200)] | None = None


class Message(_Model):
    id: Id | None = None
    author: Author
    text: Text
    agent_id: Id | None = None


class Agent(_Model):
    id: Id
    name: Annotated[str, StringConstraints(max_length=200)] | None = None


class Transfer(_Model):
    from_agent_id: Id | None = None
    to_agent_id: Id | None = None
    to_queue: Id | None = None
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


class TranscriptLine(_Model):
    author: Author
    text: Text
    at: AwareDatetime | None = None
    agent_id: Id | None = None


class ChatEvent(_Model):
    site_id: Id = "default"
    id: Id
    type: Literal[
        "conversation_started",
        "message",
        "agent_joined",
        "transferred",
        "conversation_ended",
        "transcript",
    ]
    conversation_id: Id
    occurred_at: AwareDatetime | None = None
    visitor: Visitor
    message: Message | None = None
    agent: Agent | None = None
    transfer: Transfer | None = None
    transcript: Annotated[list[TranscriptLine], Field(max_length=2000)] | None = None
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None
    page_url: Annotated[str, StringConstraints(max_length=2048)] | None = None


_REQUIRED = {
    "message": "message",
    "agent_joined": "agent",
    "transferred": "transfer",
    "transcript": "transcript",
}

SecretFor = Callable[[str], str]


def to_raw_event(body: object, secret_for: SecretFor, received_at: datetime) -> RawEvent:
    """Validate one chat event and map it; ``secret_for(site_id)`` is the identity secret.

    Raises :class:`Rejected`: 400 for bad input, 403 for an unproved visitor id.
    """
    chat = parse_model(ChatEvent, body)
    needed = _REQUIRED.get(chat.type)
    if needed is not None and getattr(chat, needed) is None:
        raise invalid(needed, f"Field required for type {chat.type!r}")
    visitor = chat.visitor
    candidates: list[tuple[str, object, bool]] = []
    if visitor.id is not None:
        if visitor.identifier_hash is None:
            raise Rejected(
                403,
                "forbidden",
                "visitor.id needs visitor.identifier_hash (HMAC-SHA256 of the id, hex)",
                "visitor.identifier_hash",
            )
        if not is_proved(secret_for(chat.site_id), visitor.id, visitor.identifier_hash):
            raise SignatureInvalid(
                "identifier_hash does not prove visitor.id", "visitor.identifier_hash"
            )
        candidates.append(("user_id", visitor.id, True))
    candidates += [
        ("anonymous_id", visitor.anonymous_id, False),
        ("email", visitor.email, False),
        ("phone", visitor.phone, False),
    ]
    ids = identifiers(candidates)
    if not ids:
        raise Rejected(
            400, "invalid_request", "needs visitor.anonymous_id or a proved visitor.id", "visitor"
        )
    received = utc(received_at)
    traits = {k: v for k, v in (("name", visitor.name), ("email", visitor.email)) if v}
    if visitor.phone:
        traits["phone"] = visitor.phone
    return make_event(
        event_id=event_id(SOURCE, chat.site_id, chat.id),
        channel=Channel.CHAT,
        source=SOURCE,
        kind=chat.type,
        occurred_at=chat.occurred_at or received,
        received_at=received,
        identifiers=ids,
        traits=traits,
        properties=_properties(chat),
        payload=_payload(body),
    )


def _properties(chat: ChatEvent) -> dict[str, Any]:
    properties: dict[str, Any] = {"conversation_id": chat.conversation_id, "site_id": chat.site_id}
    if chat.message is not None:
        properties |= {
            "message_id": chat.message.id,
            "author": chat.message.author,
            "text": chat.message.text,
            "agent_id": chat.message.agent_id,
        }
    if chat.agent is not None:
        properties["agent_id"] = chat.agent.id
        properties["agent_name"] = chat.agent.name
    if chat.transfer is not None:
        properties["transfer"] = chat.transfer.model_dump(mode="json", exclude_none=True)
    if chat.transcript is not None:
        properties["transcript"] = [
            line.model_dump(mode="json", exclude_none=True) for line in chat.transcript
        ]
    for name in ("reason", "page_url"):
        if (value := getattr(chat, name)) is not None:
            properties[name] = value
    return properties


def _payload(body: object) -> dict[str, Any]:
    """The request as sent, minus the identity hash (a credential, not content)."""
    assert isinstance(body, Mapping)  # parse_model accepted it as an object
    visitor = body.get("visitor")
    payload = dict(body)
    if isinstance(visitor, Mapping):
        payload["visitor"] = {k: v for k, v in visitor.items() if k != "identifier_hash"}
    return payload
