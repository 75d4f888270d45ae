"""The context stage's records, as msgspec structs: a customer's context and its parts.

The context stage decodes a customer's row when its parsed copy has gone, copies it with a
change for every event it folds (a new timeline, an interaction, a trait), derives its
routing once a batch and encodes it once a batch (the row and its changelog record are the
``customer.context`` view). With the pydantic models of ``schemas/context.py`` a context of
a bench drain took 20.8 µs to decode, 14.0 to encode and 2.0 to copy with a change, and
15.3 KiB parsed; as structs 5.1 µs, 2.0, 0.1 and 6.6 KiB.

``schemas/context.py`` stays the public contract: what subscribers of ``customer.context``
and the query API's clients read, its JSON Schema exported for them. These structs write
the same JSON (the same fields in the same order, the same defaults, the same timestamp
and string escapes; the same bytes but for one spelling, a float of 1e16 or more written
``1e22`` where pydantic writes ``1e+22``), so rows stored by either read back with the
other and a subscriber sees no difference; ``tests/unit/test_context_state.py`` holds
each struct to its model. The public models validate what comes in from outside; these
hold only what the pipeline wrote itself, so they carry no validation beyond their types.

None of them is tracked by the cycle collector (``gc=False``): a context is a tree of
records, lists and dicts that never refers back to itself, and the collector need not walk
the thousands of parsed contexts the stage caches, nor count each copy the fold makes
towards its next pass. The domain bench's fold went from 27.9 to 20.0 µs an event (three
pairs, worktrees alternating). ``tests/unit/test_context_state.py`` pins it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from pipeline import identity_state
from pipeline.identity_state import Identifier
from schemas import context as public
from schemas.context import (
    Author,
    ConsentStatus,
    InteractionKind,
    InteractionStatus,
    ProductAction,
    TraitRule,
)
from schemas.events import Channel, RawEvent

replace = msgspec.structs.replace


class Event(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    """``schemas.events.RawEvent`` as the context stage folds it: decoded from the bytes the
    connector sent, which ingest validated with the public model (``ops.customer_ops``)."""

    schema_version: Literal[1] = 1
    event_id: str
    channel: Channel
    source: str
    kind: str
    name: str | None = None
    occurred_at: datetime
    received_at: datetime
    identifiers: list[Identifier] = msgspec.field(default_factory=list)
    traits: dict[str, Any] = msgspec.field(default_factory=dict)
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    payload: dict[str, Any] = msgspec.field(default_factory=dict)

    @classmethod
    def of(cls, event: RawEvent | Event) -> Event:
        """``event`` as the stage folds it (the public model converted: tests, tools)."""
        if isinstance(event, Event):
            return event
        return _EVENT.decode(event.model_dump_json())


class Sighting(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    event_id: str
    channel: Channel
    source: str = ""
    observed_at: datetime


class TraitValue(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    value: Any
    event_id: str
    channel: Channel
    source: str = ""
    observed_at: datetime
    rule: TraitRule = "most_recent"
    sightings: int = 1
    candidates: dict[str, int] = msgspec.field(default_factory=dict)
    latest: dict[str, Sighting] = msgspec.field(default_factory=dict)


class Consent(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    channel: str
    status: ConsentStatus
    event_id: str
    source: str
    observed_at: datetime


class TimelineEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    event_id: str
    channel: Channel
    source: str
    kind: str
    name: str | None = None
    occurred_at: datetime
    interaction_id: str | None = None
    identifiers: list[str] = msgspec.field(default_factory=list)
    properties: dict[str, Any] = msgspec.field(default_factory=dict)


class Message(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    event_id: str
    at: datetime
    author: Author
    text: str | None = None
    agent_id: str | None = None
    agent_name: str | None = None
    subject: str | None = None


class PageView(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    event_id: str
    at: datetime
    name: str | None = None
    url: str | None = None
    title: str | None = None
    category: str | None = None


class ProductActivity(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    event_id: str
    at: datetime
    action: ProductAction
    product_id: str | None = None
    name: str | None = None
    price: float | None = None


class Interaction(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    interaction_id: str
    kind: InteractionKind
    channel: Channel
    source: str
    started_at: datetime
    last_at: datetime
    status: InteractionStatus | None = None
    direction: Literal["inbound", "outbound"] | None = None
    outcome: str | None = None
    agent_id: str | None = None
    agent_name: str | None = None
    queue: str | None = None
    ivr_path: list[str] = msgspec.field(default_factory=list)
    subject: str | None = None
    transcript: str | None = None
    messages: list[Message] = msgspec.field(default_factory=list)
    pages: list[PageView] = msgspec.field(default_factory=list)
    products: list[ProductActivity] = msgspec.field(default_factory=list)
    self_service: str | None = None
    event_ids: list[str] = msgspec.field(default_factory=list)
    identifiers: list[str] = msgspec.field(default_factory=list)
    dropped_items: int = 0


class Archived(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    events: int = 0
    interactions: int = 0
    by_channel: dict[str, int] = msgspec.field(default_factory=dict)
    oldest_at: datetime | None = None
    newest_at: datetime | None = None


class OpenConversation(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    interaction_id: str
    channel: Channel
    since: datetime
    last_at: datetime
    agent_id: str | None = None


class AgentRef(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    agent_id: str
    agent_name: str | None = None
    channel: Channel
    interaction_id: str
    at: datetime


class RepeatContact(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    interaction_id: str
    previous_interaction_id: str
    previous_channel: Channel
    previous_status: InteractionStatus | None = None
    hours_since_previous: float
    at: datetime


class SelfServiceAttempt(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    interaction_id: str
    channel: Channel
    what: str
    at: datetime
    before_interaction_id: str | None = None


class Routing(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    open_conversations: list[OpenConversation] = msgspec.field(default_factory=list)
    last_agent: AgentRef | None = None
    repeat_contact: RepeatContact | None = None
    unresolved_self_service: SelfServiceAttempt | None = None
    language: str | None = None
    vip: bool = False
    contactable_channels: list[str] = msgspec.field(default_factory=list)


class PendingTrigger(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    rule: str
    interaction_id: str
    due_at: datetime


class CustomerContext(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    """``schemas.context.CustomerContext``: a customer's context, as stored and published."""

    schema_version: Literal[1] = public.CONTEXT_SCHEMA_VERSION
    customer_id: str
    identifiers: list[Identifier] = msgspec.field(default_factory=list)
    traits: dict[str, TraitValue] = msgspec.field(default_factory=dict)
    consent: dict[str, Consent] = msgspec.field(default_factory=dict)
    timeline: list[TimelineEntry] = msgspec.field(default_factory=list)
    interactions: list[Interaction] = msgspec.field(default_factory=list)
    routing: Routing = msgspec.field(default_factory=Routing)
    channel_counts: dict[str, int] = msgspec.field(default_factory=dict)
    archived: Archived = msgspec.field(default_factory=Archived)
    pending_triggers: list[PendingTrigger] = msgspec.field(default_factory=list)
    fired_triggers: list[str] = msgspec.field(default_factory=list)
    merged_from: list[str] = msgspec.field(default_factory=list)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    updated_at: datetime | None = None
    version: int = 0


_DECODER = msgspec.json.Decoder(CustomerContext)
_EVENT = msgspec.json.Decoder(Event)


def decode(raw: bytes) -> CustomerContext:
    """A stored context row (or a ``customer.context`` record's value)."""
    return _DECODER.decode(raw)


def encode(ctx: CustomerContext) -> bytes:
    """A context as stored and published: the JSON ``schemas.context.CustomerContext`` reads."""
    return identity_state.encode(ctx)


def to_builtins(ctx: CustomerContext) -> dict[str, Any]:
    """A context as JSON-ready data (the query API's body)."""
    data: dict[str, Any] = msgspec.to_builtins(ctx)
    return data


def from_public(ctx: public.CustomerContext) -> CustomerContext:
    """The public model's context as the stage keeps it (tests, tools: rare)."""
    return decode(ctx.model_dump_json().encode())


def to_public(ctx: CustomerContext) -> public.CustomerContext:
    """A context as the public model (validated: what a subscriber would read)."""
    return public.CustomerContext.model_validate_json(encode(ctx))
