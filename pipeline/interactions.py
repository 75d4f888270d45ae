"""Which interaction an event belongs to, and what it adds to it. Pure logic, no I/O.

Each connector's events are read by the documented shapes (connectors/README.md):

* web chat events group by conversation (``chat:<site>:<conversation>``);
* SMS, WhatsApp and Messenger messages group by the customer's address into threads, a new
  thread after ``conversation_gap_hours`` of silence (``sms:<phone>@<start>``);
* Twilio call webhooks, Gather results and transcriptions group by CallSid, contact-center
  (CTI) events by their interaction id (``call:<id>``);
* mail groups by thread (``email:<thread id>``: first References, else In-Reply-To);
* page and screen views, product activity and checkouts group into visits per visitor, a
  new visit after ``visit_gap_minutes`` (``visit:<visitor>@<start>``);
* help-center article views (a ``page`` in category ``help``, ``Article Viewed``) and IVR
  self-service flows (a CTI contact ending ``self_service:<flow>`` with no agent) are
  self-service attempts.

Events that are not part of an interaction (identify, consent, delivery receipts) stay on
the timeline only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pipeline.context_policy import ContextPolicy
from pipeline.context_state import Event, Message, PageView, ProductActivity
from schemas.context import Author, InteractionKind, InteractionStatus, ProductAction
from schemas.events import Channel

#: Segment e-commerce spec event names -> product action.
PRODUCT_EVENTS: dict[str, ProductAction] = {
    "Product Viewed": "viewed",
    "Product Clicked": "viewed",
    "Product Added": "added",
    "Product Removed": "removed",
    "Checkout Started": "checkout_started",
    "Order Completed": "order_completed",
}
SELF_SERVICE_DONE = "Self Service Completed"
ARTICLE_VIEWED = "Article Viewed"


@dataclass
class Contribution:
    """What one event adds to one interaction."""

    key: str  # an interaction id, or a thread/visit group when ``gap`` is set
    kind: InteractionKind
    channel: Channel
    source: str
    gap: timedelta | None = None  # group into ``key@<start>`` sessions split by this gap
    status: InteractionStatus | None = None
    direction: str | None = None  # "inbound" | "outbound"
    outcome: str | None = None
    agent_id: str | None = None
    agent_name: str | None = None
    queue: str | None = None
    ivr_step: list[str] = field(default_factory=list)
    ivr_path: list[str] = field(default_factory=list)
    subject: str | None = None
    transcript: str | None = None
    self_service: str | None = None
    messages: list[Message] = field(default_factory=list)
    page: PageView | None = None
    product: ProductActivity | None = None
    resolves_self_service: bool = False


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _clip(text: Any, limit: int) -> str | None:
    s = _str(text)
    return None if s is None else s[:limit]


def _at(value: Any, default: datetime) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return default
        return parsed if parsed.tzinfo is not None else default
    return default


def _visitor(event: Event) -> str:
    by_type = {i.type: i.key for i in event.identifiers}
    for kind in ("anonymous_id", "user_id", "email", "phone"):
        if kind in by_type:
            return by_type[kind]
    return event.identifiers[0].key if event.identifiers else event.event_id


def classify(event: Event, policy: ContextPolicy) -> Contribution | None:
    """The interaction ``event`` contributes to, or None for timeline-only events."""
    match event.source:
        case "webchat":
            return _webchat(event, policy)
        case "cti":
            return _cti(event)
        case "email":
            return _email(event, policy) if event.kind == "message" else None
        case "tracking":
            return _tracking(event, policy)
        case _ if event.kind == "message":
            return _thread_message(event, policy)
        case "twilio" if event.channel is Channel.VOICE:
            return _twilio_voice(event)
    return None


def _message(event: Event, author: Author, text: Any, policy: ContextPolicy) -> Message:
    p = event.properties
    return Message(
        event_id=event.event_id,
        at=event.occurred_at,
        author=author,
        text=_clip(text, policy.text_limit),
        agent_id=_str(p.get("agent_id")),
        agent_name=_str(p.get("agent_name")),
    )


_CHAT_AUTHORS: dict[str, Author] = {
    "visitor": "customer",
    "customer": "customer",
    "agent": "agent",
    "bot": "bot",
}


def _webchat(event: Event, policy: ContextPolicy) -> Contribution | None:
    p = event.properties
    conversation = _str(p.get("conversation_id"))
    if conversation is None:
        return None
    c = Contribution(
        key=f"chat:{p.get('site_id') or 'site'}:{conversation}",
        kind="conversation",
        channel=event.channel,
        source=event.source,
        agent_id=_str(p.get("agent_id")),
        agent_name=_str(p.get("agent_name")),
    )
    match event.kind:
        case "conversation_started" | "agent_joined":
            c.status = "open"
        case "message":
            author = _CHAT_AUTHORS.get(str(p.get("author")), "system")
            c.messages.append(_message(event, author, p.get("text"), policy))
            if author != "agent":
                c.agent_id = c.agent_name = None
        case "transferred":
            transfer = p.get("transfer") if isinstance(p.get("transfer"), dict) else {}
            assert isinstance(transfer, dict)
            c.queue = _str(transfer.get("to_queue"))
            c.agent_id, c.agent_name = _str(transfer.get("to_agent_id")), None
        case "conversation_ended":
            reason = (_str(p.get("reason")) or "ended").lower()
            abandoned = any(w in reason for w in ("abandon", "visitor_left", "timeout", "idle"))
            c.status, c.outcome = ("abandoned" if abandoned else "ended"), reason
        case "transcript":
            lines = p.get("transcript") if isinstance(p.get("transcript"), list) else []
            assert isinstance(lines, list)
            for i, line in enumerate(lines):
                if not isinstance(line, dict):
                    continue
                c.messages.append(
                    Message(
                        event_id=f"{event.event_id}#{i}",
                        at=_at(line.get("at"), event.occurred_at),
                        author=_CHAT_AUTHORS.get(str(line.get("author")), "system"),
                        text=_clip(line.get("text"), policy.text_limit),
                        agent_id=_str(line.get("agent_id")),
                    )
                )
    return c


def _thread_message(event: Event, policy: ContextPolicy) -> Contribution | None:
    """SMS, WhatsApp and Messenger messages: threads per customer address."""
    p = event.properties
    direction = str(p.get("direction") or "inbound").lower()
    inbound = direction == "inbound" and not p.get("is_echo")
    address = next(
        (i.key for i in event.identifiers if i.type in ("whatsapp", "messenger_psid")),
        _visitor(event),
    )
    medium = "sms" if event.channel is Channel.SMS else address.split(":", 1)[0]
    return Contribution(
        key=f"{medium}:{address.split(':', 1)[-1]}",
        kind="conversation",
        channel=event.channel,
        source=event.source,
        gap=timedelta(hours=policy.conversation_gap_hours),
        status="open",
        messages=[_message(event, "customer" if inbound else "agent", p.get("text"), policy)],
    )


#: Twilio call lifecycle -> interaction status (completed needs an answer first).
_TWILIO_CALL: dict[str, InteractionStatus] = {
    "queued": "open",
    "initiated": "open",
    "ringing": "open",
    "answered": "answered",
    "completed": "completed",
    "busy": "missed",
    "no-answer": "missed",
    "failed": "missed",
    "canceled": "missed",
}


def _twilio_voice(event: Event) -> Contribution | None:
    p = event.properties
    call_sid = _str(p.get("call_sid")) or _str(event.payload.get("CallSid"))
    if call_sid is None:
        return None
    c = Contribution(key=f"call:{call_sid}", kind="call", channel=event.channel, source="twilio")
    if direction := _str(p.get("direction")):
        c.direction = "outbound" if direction.lower().startswith("outbound") else "inbound"
    match event.kind:
        case "call":
            c.status = _TWILIO_CALL.get(event.name or "")
            if c.status in ("missed", "completed"):
                c.outcome = event.name
        case "ivr_input":
            step = _str(p.get("step")) or _str(p.get("digits")) or _str(p.get("speech"))
            c.ivr_step = [step] if step else []
        case "transcription":
            c.transcript = _str(p.get("text"))
        case _:
            pass
    return c


#: CTI event types -> interaction status.
_CTI: dict[str, InteractionStatus] = {
    "offered": "open",
    "queued": "open",
    "answered": "answered",
    "transferred": "answered",
    "abandoned": "abandoned",
    "ended": "completed",
}


def _cti(event: Event) -> Contribution | None:
    p = event.properties
    interaction = _str(p.get("interaction_id"))
    if interaction is None:
        return None
    voice = event.channel is Channel.VOICE
    c = Contribution(
        key=f"{'call' if voice else event.channel.value}:{interaction}",
        kind="call" if voice else "conversation",
        channel=event.channel,
        source=event.source,
        status=_CTI.get(event.name or ""),
        agent_id=_str(p.get("agent_id")),
        agent_name=_str(p.get("agent_name")),
        queue=_str(p.get("queue")),
        outcome=_str(p.get("disposition")),
    )
    if direction := _str(p.get("direction")):
        c.direction = "outbound" if direction.lower().startswith("outbound") else "inbound"
    path = p.get("ivr_path")
    if isinstance(path, list):
        c.ivr_path = [s for s in path if isinstance(s, str)]
    transfer = p.get("transfer")
    if isinstance(transfer, dict):
        c.queue = _str(transfer.get("to_queue")) or c.queue
        to_agent = _str(transfer.get("to_agent_id"))
        if to_agent is not None and to_agent != c.agent_id:
            c.agent_id, c.agent_name = to_agent, None  # the event's agent is the one leaving
    flow = (c.outcome or "").removeprefix("self_service:")
    if event.name == "ended" and c.outcome and c.outcome.startswith("self_service:"):
        c.self_service = flow or "ivr"
        if c.agent_id is None:  # the IVR handled it: a resolved self-service attempt
            c.kind, c.status = "self_service", "resolved"
    return c


def _email(event: Event, policy: ContextPolicy) -> Contribution:
    p = event.properties
    thread = _str(p.get("thread_id")) or event.event_id
    inbound = str(p.get("direction") or "inbound") == "inbound"
    message = _message(event, "customer" if inbound else "agent", p.get("text"), policy)
    message.subject = _clip(p.get("subject"), 998)
    return Contribution(
        key=f"email:{thread}",
        kind="email_thread",
        channel=event.channel,
        source=event.source,
        status="open",
        subject=_clip(p.get("subject"), 998),
        messages=[message],
    )


def _tracking(event: Event, policy: ContextPolicy) -> Contribution | None:
    p = event.properties
    visit = Contribution(
        key=f"visit:{_visitor(event).split(':', 1)[-1]}",
        kind="visit",
        channel=event.channel,
        source=event.source,
        gap=timedelta(minutes=policy.visit_gap_minutes),
    )
    help_page = event.kind in ("page", "screen") and (_category(event) or "").lower() == "help"
    if help_page or (event.kind == "track" and event.name == ARTICLE_VIEWED):
        what = _str(p.get("article_id")) or event.name or _str(p.get("title")) or "article"
        return Contribution(
            key=f"self_service:{event.event_id}",
            kind="self_service",
            channel=event.channel,
            source=event.source,
            status="resolved" if p.get("helpful") is True else "unresolved",
            self_service=what,
            page=_page(event),
        )
    if event.kind == "track" and event.name == SELF_SERVICE_DONE:
        return Contribution(
            key="self_service:*",  # resolves the latest open attempt; see context.py
            kind="self_service",
            channel=event.channel,
            source=event.source,
            status="resolved",
            resolves_self_service=True,
        )
    if event.kind in ("page", "screen"):
        visit.page = _page(event)
        return visit
    if event.kind == "track" and event.name in PRODUCT_EVENTS:
        product = p.get("products") if event.name in ("Checkout Started", "Order Completed") else p
        first = product[0] if isinstance(product, list) and product else p
        first = first if isinstance(first, dict) else p
        price = first.get("price")
        visit.product = ProductActivity(
            event_id=event.event_id,
            at=event.occurred_at,
            action=PRODUCT_EVENTS[event.name],
            product_id=_str(first.get("product_id")) or _str(first.get("sku")),
            name=_str(first.get("name")),
            price=float(price) if isinstance(price, int | float) else None,
        )
        return visit
    return None


def _category(event: Event) -> str | None:
    """A page's category: Segment sends it beside ``name`` (``analytics.page(category=...)``),
    not in ``properties``; some clients put it in ``properties``."""
    return _str(event.properties.get("category")) or _str(event.payload.get("category"))


def _page(event: Event) -> PageView:
    p = event.properties
    return PageView(
        event_id=event.event_id,
        at=event.occurred_at,
        name=event.name,
        url=_str(p.get("url")) or _str(p.get("path")),
        title=_str(p.get("title")),
        category=_category(event),
    )
