"""The customer context published on ``customer.context`` and served by the query API.

A context has four layers, each for a different reader:

* ``timeline``: every interaction event, newest first, deduplicated, placed by
  ``occurred_at`` (late events land in their place). Bounded by a window and a cap.
* ``interactions``: the same events grouped the way an agent thinks of them: a chat or SMS
  conversation with its messages, a call with its IVR path, queue, agent, outcome and
  transcript, an email thread, a web visit with its pages and products, a self-service
  attempt.
* ``traits`` (reconciled per trait, each with its provenance) and ``consent`` per channel.
* ``routing``: what a routing engine needs without reading the rest (open conversations,
  last agent, repeat contact, unresolved self-service, language, channels it may use).

What falls out of the window or past the caps is folded into ``archived``, so the record
stays small however long the customer's history.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

from schemas.events import Channel, Identifier

CONTEXT_SCHEMA_VERSION: Final = 1

TraitRule = Literal["most_recent", "source_priority", "most_frequent"]
InteractionKind = Literal["conversation", "call", "email_thread", "visit", "self_service", "notice"]
InteractionStatus = Literal[
    "open", "ended", "abandoned", "answered", "missed", "completed", "resolved", "unresolved"
]
ConsentStatus = Literal["opted_in", "opted_out"]
Author = Literal["customer", "agent", "bot", "system"]
ProductAction = Literal["viewed", "added", "removed", "checkout_started", "order_completed"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sighting(_Model):
    """One event's assertion of a trait value: the provenance of a ``most_frequent``
    candidate."""

    event_id: str
    channel: Channel
    source: str = ""
    observed_at: AwareDatetime


class TraitValue(_Model):
    """A trait's current value with its provenance: which event, channel and time set it."""

    value: JsonValue
    event_id: str
    channel: Channel
    source: str = Field(default="", description="Connector of the event that set it.")
    observed_at: AwareDatetime = Field(description="occurred_at of the event that set it.")
    rule: TraitRule = Field(default="most_recent", description="How the value was chosen.")
    sightings: int = Field(
        default=1, ge=1, description="Events that asserted this value (most_frequent)."
    )
    candidates: dict[str, int] = Field(
        default_factory=dict,
        description="most_frequent only: JSON of each value seen -> times asserted (top 8).",
    )
    latest: dict[str, Sighting] = Field(
        default_factory=dict,
        description="most_frequent only: JSON of each candidate -> its latest sighting, so "
        "the value chosen and its provenance do not depend on the order events arrive in.",
    )


class Consent(_Model):
    """A customer's latest consent decision for one channel (SMS STOP, email unsubscribe)."""

    channel: str = Field(description="sms, email, whatsapp, voice, messenger, ...")
    status: ConsentStatus
    event_id: str
    source: str
    observed_at: AwareDatetime


class TimelineEntry(_Model):
    """One interaction event on the customer's cross-channel timeline."""

    event_id: str
    channel: Channel
    source: str
    kind: str
    name: str | None = None
    occurred_at: AwareDatetime
    interaction_id: str | None = Field(
        default=None, description="The interaction (conversation, call, ...) it belongs to."
    )
    identifiers: list[str] = Field(
        default_factory=list, description="type:value keys the event carried (normalised)."
    )
    properties: dict[str, JsonValue] = Field(default_factory=dict)


class Message(_Model):
    """One message of a conversation or email thread."""

    event_id: str
    at: AwareDatetime
    author: Author
    text: str | None = None
    agent_id: str | None = None
    agent_name: str | None = None
    subject: str | None = None


class PageView(_Model):
    """A page (or app screen) seen during a visit."""

    event_id: str
    at: AwareDatetime
    name: str | None = None
    url: str | None = None
    title: str | None = None
    category: str | None = None


class ProductActivity(_Model):
    """A product viewed, added to the cart, or checked out during a visit."""

    event_id: str
    at: AwareDatetime
    action: ProductAction
    product_id: str | None = None
    name: str | None = None
    price: float | None = None


class Interaction(_Model):
    """A conversation, call, email thread, visit or self-service attempt."""

    interaction_id: str = Field(description="e.g. chat:<conversation>, call:<call id>.")
    kind: InteractionKind
    channel: Channel
    source: str
    started_at: AwareDatetime
    last_at: AwareDatetime
    status: InteractionStatus | None = None
    direction: Literal["inbound", "outbound"] | None = Field(
        default=None, description="Who started it: the customer, or the business (callback)."
    )
    outcome: str | None = Field(
        default=None, description="Why it ended: disposition, call status, end reason."
    )
    agent_id: str | None = None
    agent_name: str | None = None
    queue: str | None = None
    ivr_path: list[str] = Field(default_factory=list)
    subject: str | None = None
    transcript: str | None = Field(default=None, description="A call's transcription.")
    messages: list[Message] = Field(default_factory=list, description="Oldest first, capped.")
    pages: list[PageView] = Field(default_factory=list, description="Oldest first, capped.")
    products: list[ProductActivity] = Field(default_factory=list, description="Oldest first.")
    self_service: str | None = Field(
        default=None, description="The self-service flow or article, for self-service."
    )
    event_ids: list[str] = Field(default_factory=list, description="Events folded in.")
    identifiers: list[str] = Field(default_factory=list, description="type:value keys seen.")
    dropped_items: int = Field(
        default=0, ge=0, description="Messages/pages past the per-interaction cap."
    )


class Archived(_Model):
    """Counters of what fell out of the timeline's window or cap."""

    events: int = 0
    interactions: int = 0
    by_channel: dict[str, int] = Field(default_factory=dict)
    oldest_at: AwareDatetime | None = None
    newest_at: AwareDatetime | None = None


class OpenConversation(_Model):
    interaction_id: str
    channel: Channel
    since: AwareDatetime
    last_at: AwareDatetime
    agent_id: str | None = None


class AgentRef(_Model):
    agent_id: str
    agent_name: str | None = None
    channel: Channel
    interaction_id: str
    at: AwareDatetime


class RepeatContact(_Model):
    """The customer came back within the repeat window after an earlier contact."""

    interaction_id: str = Field(description="The new contact.")
    previous_interaction_id: str
    previous_channel: Channel
    previous_status: InteractionStatus | None = None
    hours_since_previous: float
    at: AwareDatetime


class SelfServiceAttempt(_Model):
    """A self-service attempt that did not resolve, just before an agent contact."""

    interaction_id: str
    channel: Channel
    what: str = Field(description="Article or IVR flow.")
    at: AwareDatetime
    before_interaction_id: str | None = Field(
        default=None, description="The agent contact that followed, if one did."
    )


class Routing(_Model):
    """Derived context a routing engine uses without reading the rest of the record."""

    open_conversations: list[OpenConversation] = Field(default_factory=list)
    last_agent: AgentRef | None = None
    repeat_contact: RepeatContact | None = None
    unresolved_self_service: SelfServiceAttempt | None = None
    language: str | None = Field(default=None, description="ISO 639-1, from traits.")
    vip: bool = False
    contactable_channels: list[str] = Field(
        default_factory=list,
        description="Channels with an address on file that the customer has not opted out of.",
    )


class PendingTrigger(_Model):
    """A delayed engagement rule waiting for its deadline (checkout, dropped call)."""

    rule: str
    interaction_id: str
    due_at: AwareDatetime


class CustomerContext(_Model):
    """Everything known about one canonical customer, merged across channels.

    Keyed by ``customer_id`` on the compacted ``customer.context`` topic; a merged-away
    customer's key is tombstoned (a null value) when it is merged into another, and an
    erased customer's key likewise.
    """

    schema_version: Literal[1] = CONTEXT_SCHEMA_VERSION
    customer_id: str = Field(description="Canonical, stable, sortable customer id.")
    identifiers: list[Identifier] = Field(
        default_factory=list, description="Every identifier stitched to this customer."
    )
    traits: dict[str, TraitValue] = Field(
        default_factory=dict, description="Each trait reconciled by its configured rule."
    )
    consent: dict[str, Consent] = Field(
        default_factory=dict, description="Latest consent decision per channel."
    )
    timeline: list[TimelineEntry] = Field(
        default_factory=list, description="Interaction events, newest first, bounded."
    )
    interactions: list[Interaction] = Field(
        default_factory=list, description="Conversations, calls, visits..., newest first."
    )
    routing: Routing = Field(default_factory=Routing)
    channel_counts: dict[str, int] = Field(
        default_factory=dict, description="Lifetime interaction events per channel."
    )
    archived: Archived = Field(
        default_factory=Archived, description="What fell out of the window or caps."
    )
    pending_triggers: list[PendingTrigger] = Field(default_factory=list)
    fired_triggers: list[str] = Field(
        default_factory=list, description="Ids of engagement triggers already emitted (recent)."
    )
    merged_from: list[str] = Field(
        default_factory=list, description="Customer ids merged into this one."
    )
    first_seen: AwareDatetime | None = None
    last_seen: AwareDatetime | None = None
    updated_at: AwareDatetime | None = Field(
        default=None, description="Worker clock when this version was written."
    )
    version: int = Field(default=0, description="Increments with every change.")


class EngagementTrigger(_Model):
    """A proactive-engagement suggestion on ``engagement.triggers``, keyed by customer id.

    ``channels`` lists where the customer may be reached, in preference order; it never
    contains a channel the customer opted out of (a trigger with none is not emitted).
    """

    schema_version: Literal[1] = 1
    trigger_id: str = Field(description="Deterministic: rule + interaction; dedupe on it.")
    rule: Literal["checkout_abandoned", "dropped_call_no_callback", "repeat_contact"]
    customer_id: str
    interaction_id: str
    channels: list[str] = Field(min_length=1)
    reason: str
    occurred_at: AwareDatetime = Field(description="When the rule's condition became true.")
    context_version: int


class RoutingHint(_Model):
    """What the example routing consumer publishes on ``routing.hints``, keyed by customer."""

    schema_version: Literal[1] = 1
    customer_id: str
    priority: Literal["normal", "high"]
    reasons: list[str] = Field(default_factory=list, description="Why the priority.")
    preferred_agent_id: str | None = None
    language: str | None = None
    suggested_queue: str | None = None
    open_conversation_channels: list[str] = Field(default_factory=list)
    context_version: int
