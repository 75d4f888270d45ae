"""The customer-context merge (pipeline/context.py, interactions.py, triggers.py and
context_policy.py), fed with events built by the connectors' own mappings, so the tests
prove that what the connectors publish and what the merge reads agree.

Pure logic: no Kafka, no HTTP.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.cti import events as cti
from connectors.email import message as email
from connectors.meta import messenger, whatsapp
from connectors.meta.notification import Notification
from connectors.tracking import segment
from connectors.twilio import sms, voice
from connectors.webchat import events as webchat
from connectors.webchat.identity import identifier_hash
from pipeline import context_state
from pipeline.context import (
    absorb,
    apply_event,
    consent_of,
    reconcile,
    restore,
    split_context,
)
from pipeline.context_policy import (
    ContextPolicy,
    ContextPolicyError,
    TraitPolicy,
    TriggerPolicy,
    load_context_policy,
)
from pipeline.context_state import CustomerContext, Interaction, TraitValue
from pipeline.triggers import due_triggers, next_due
from schemas.context import CustomerContext as PublicContext
from schemas.events import Channel, Identifier, RawEvent

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
PHONE = "+14155550100"
OUR_NUMBER = "+18005550199"
EMAIL = "ann@example.com"
ANON = "anon-1"
CHAT_SECRET = "chat-identity-secret-for-tests"
POLICY = ContextPolicy()


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def iso(minutes: float) -> str:
    return at(minutes).isoformat().replace("+00:00", "Z")


# -- events, as the connectors make them ---------------------------------------------------
def chat(
    eid: str, kind: str, minute: float, conversation: str = "conv-7", **fields: Any
) -> RawEvent:
    """A web chat event through connectors/webchat (a logged-in, proved visitor)."""
    body = {
        "site_id": "acme",
        "id": eid,
        "type": kind,
        "conversation_id": conversation,
        "occurred_at": iso(minute),
        "visitor": {
            "anonymous_id": ANON,
            "id": "user-42",
            "identifier_hash": identifier_hash(CHAT_SECRET, "user-42"),
            "email": EMAIL,
            "name": "Ann",
        },
        **fields,
    }
    return webchat.to_raw_event(body, lambda _site: CHAT_SECRET, at(minute))


def said(eid: str, minute: float, author: str, text: str, **fields: Any) -> RawEvent:
    """A chat message; an agent's names the agent."""
    message: dict[str, Any] = {"id": f"m-{eid}", "author": author, "text": text}
    if author == "agent":
        message["agent_id"] = fields.pop("agent_id", "agent-7")
    return chat(eid, "message", minute, message=message, **fields)


def cti_event(
    eid: str, kind: str, minute: float, interaction: str = "call-1", **fields: Any
) -> RawEvent:
    """A contact-center event through connectors/cti."""
    body = {
        "event_id": eid,
        "type": kind,
        "interaction_id": interaction,
        "occurred_at": iso(minute),
        "customer": {"phone": PHONE},
        **fields,
    }
    [event] = cti.to_raw_events(body, at(minute))
    return event


def texts(sid: str, minute: float, body: str, sender: str = PHONE) -> list[RawEvent]:
    """An inbound SMS (or WhatsApp via Twilio) through connectors/twilio: the message, and
    a consent event when it is a keyword."""
    params = [("MessageSid", sid), ("From", sender), ("To", OUR_NUMBER), ("Body", body)]
    return sms.inbound_events(params, at(minute))


def text(sid: str, minute: float, body: str, sender: str = PHONE) -> RawEvent:
    return texts(sid, minute, body, sender)[0]


def call_params(sid: str, minute: float, direction: str = "inbound") -> list[tuple[str, str]]:
    customer, ours = (PHONE, OUR_NUMBER) if direction == "inbound" else (OUR_NUMBER, PHONE)
    return [
        ("CallSid", sid),
        ("From", customer),
        ("To", ours),
        ("Direction", direction),
        ("Timestamp", format_datetime(at(minute))),
    ]


def twilio_call(sid: str, status: str, minute: float, direction: str = "inbound") -> RawEvent:
    """A Twilio Voice webhook / status callback (CallStatus as Twilio spells it)."""
    params = [*call_params(sid, minute, direction), ("CallStatus", status)]
    return voice.call_event(params, at(minute))


def gather(sid: str, minute: float, step: str, digits: str) -> RawEvent:
    """A <Gather> result posted to /twilio/voice/gather?step=<menu>."""
    params = [*call_params(sid, minute), ("CallStatus", "in-progress"), ("Digits", digits)]
    return voice.gather_event(params, at(minute), [("step", step)])


def transcription(sid: str, call_sid: str, minute: float, words: str) -> RawEvent:
    params = [
        *call_params(call_sid, minute),
        ("CallStatus", "completed"),
        ("TranscriptionSid", sid),
        ("TranscriptionText", words),
        ("TranscriptionStatus", "completed"),
        ("RecordingSid", f"RE{sid}"),
    ]
    return voice.transcription_event(params, at(minute))


def mail(
    message_id: str,
    minute: float,
    subject: str,
    body: str,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
) -> RawEvent:
    """An inbound mail, as RFC 5322 bytes through connectors/email's parser."""
    headers = [
        f"From: Ann Example <{EMAIL}>",
        "To: support@acme.example",
        f"Subject: {subject}",
        f"Date: {format_datetime(at(minute))}",
        f"Message-ID: <{message_id}>",
    ]
    if in_reply_to:
        headers.append(f"In-Reply-To: <{in_reply_to}>")
    if references:
        headers.append("References: " + " ".join(f"<{r}>" for r in references))
    raw = "\r\n".join([*headers, "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"])
    content = f"{raw}\r\n\r\n{body}\r\n".encode()
    return email.to_raw_event(content, EMAIL, ["support@acme.example"], at(minute))


def tracked(kind: str, mid: str, minute: float, **body: Any) -> RawEvent:
    """A Segment call (the body analytics-python sends) through connectors/tracking."""
    message = {"anonymousId": ANON, "messageId": mid, "timestamp": iso(minute), **body}
    [(parsed, raw)] = segment.parse_body(kind, message)
    return segment.to_raw_event(parsed, at(minute), raw)


def page(mid: str, minute: float, name: str, url: str, **body: Any) -> RawEvent:
    return tracked("page", mid, minute, name=name, properties={"url": url}, **body)


def track(mid: str, minute: float, name: str, /, **properties: Any) -> RawEvent:
    return tracked("track", mid, minute, event=name, properties=properties)


def whatsapp_message(wamid: str, minute: float, body: str) -> RawEvent:
    """A WhatsApp Cloud API notification through connectors/meta."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Ann"}, "wa_id": PHONE.lstrip("+")}],
        "messages": [
            {
                "from": PHONE.lstrip("+"),
                "id": wamid,
                "timestamp": str(int(at(minute).timestamp())),
                "text": {"body": body},
                "type": "text",
            }
        ],
    }
    change = {"field": "messages", "value": value}
    notification = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [change]}],
    }
    [event] = whatsapp.to_raw_events(Notification.model_validate(notification), at(minute))
    return event


def messenger_message(mid: str, minute: float, body: str, echo: bool = False) -> RawEvent:
    """A Messenger message (or the page's echo of its own) through connectors/meta."""
    person, page_id = {"id": "PSID-77"}, {"id": "PAGE1"}
    item = {
        "sender": page_id if echo else person,
        "recipient": person if echo else page_id,
        "timestamp": int(at(minute).timestamp() * 1000),
        "message": {"mid": mid, "text": body, "is_echo": echo},
    }
    notification = {"object": "page", "entry": [{"id": "PAGE1", "messaging": [item]}]}
    [event] = messenger.to_raw_events(Notification.model_validate(notification), at(minute))
    return event


# -- folding ------------------------------------------------------------------------------
def fold(
    events: Iterable[RawEvent],
    policy: ContextPolicy = POLICY,
    cid: str = "cus_1",
    ctx: CustomerContext | None = None,
) -> CustomerContext:
    for event in events:
        ctx = apply_event(ctx, cid, event, event.identifiers, policy) or ctx
    assert ctx is not None
    return ctx


def one(ctx: CustomerContext, prefix: str) -> Interaction:
    [found] = [i for i in ctx.interactions if i.interaction_id.startswith(prefix)]
    return found


def lines(i: Interaction) -> list[tuple[str, str | None]]:
    return [(m.author, m.text) for m in i.messages]


def session_group(interaction_id: str) -> str:
    """``sms:+1...@20261120T090000Z`` -> ``sms:+1...``; other ids as they are."""
    return re.sub(r"@\d{8}T\d{6}Z$", "", interaction_id)


def ids(items: Iterable[Any]) -> list[str]:
    return [i.event_id for i in items]


def _trigger_rules(ctx: CustomerContext, minutes: float) -> list[str]:
    fired, _ = due_triggers(ctx, at(minutes), POLICY)
    return [t.rule for t in fired]


# == one timeline across channels ==========================================================
def test_one_timeline_across_every_channel_newest_first() -> None:
    events = [
        page("p1", 0, "Orders", "https://acme.example/orders"),
        said("c1", 2, "visitor", "Where is my order?"),
        text("SM1", 5, "Any news on my order?"),
        twilio_call("CA1", "ringing", 8),
        mail("m1@mail.example", 12, "Order 1234", "Still waiting."),
        whatsapp_message("wamid.1", 15, "Hello?"),
    ]
    ctx = fold(reversed(events))  # arrival order does not matter

    assert ids(ctx.timeline) == ids(reversed(events))
    assert [e.channel for e in ctx.timeline] == [
        Channel.SOCIAL,
        Channel.EMAIL,
        Channel.VOICE,
        Channel.SMS,
        Channel.CHAT,
        Channel.WEB,
    ]
    assert ctx.channel_counts == {
        "web": 1,
        "chat": 1,
        "sms": 1,
        "voice": 1,
        "email": 1,
        "social": 1,
    }
    assert {session_group(i.interaction_id): i.kind for i in ctx.interactions} == {
        f"visit:{ANON}": "visit",
        "chat:acme:conv-7": "conversation",
        f"sms:{PHONE}": "conversation",
        "call:CA1": "call",
        "email:m1@mail.example": "email_thread",
        f"whatsapp:{PHONE}": "conversation",
    }
    # every entry points at its interaction
    known = {i.interaction_id for i in ctx.interactions}
    assert all(e.interaction_id in known for e in ctx.timeline)
    assert (ctx.first_seen, ctx.last_seen) == (at(0), at(15))
    assert {i.key for i in ctx.identifiers} >= {
        f"phone:{PHONE}",
        f"email:{EMAIL}",
        f"anonymous_id:{ANON}",
        "user_id:user-42",
        f"whatsapp:{PHONE}",
    }


def test_a_folded_context_is_the_json_the_public_model_reads_and_writes() -> None:
    """The stage's struct (pipeline/context_state.py) against the public model, on a
    context that has every part: each channel's interactions, messages, pages, products,
    an IVR path, traits by each rule, consent, a pending trigger and derived routing."""
    ctx = fold(
        [
            page("p1", 0, "Orders", "https://acme.example/orders", category="help"),
            said("c1", 2, "visitor", "Where is my order?"),
            said("c2", 3, "agent", "Let me check.", agent_id="ag-1", agent_name="Dana"),
            *texts("SM1", 5, "Any news on my order?"),
            *texts("SM2", 6, "STOP"),
            twilio_call("CA1", "ringing", 8),
            gather("GA1", 8.5, "menu", "2"),
            twilio_call("CA1", "no-answer", 9),
            cti_event("x1", "answered", 10, customer={"phone": PHONE, "name": "Ann Example"}),
            mail("m1@mail.example", 12, "Order 1234", "Still waiting."),
            whatsapp_message("wamid.1", 15, "Hello?"),
            track("t1", 16, "Checkout Started", products=[{"product_id": "sku-1", "price": 9.5}]),
            identify("i1", 17, language="fr", city="Paris", vip=True),
        ]
    )
    assert ctx.routing.language == "fr"
    assert ctx.routing.vip
    assert ctx.pending_triggers
    assert ctx.consent["sms"].status == "opted_out"
    assert {i.kind for i in ctx.interactions} >= {"visit", "conversation", "call"}
    raw = context_state.encode(ctx)
    model = PublicContext.model_validate_json(raw)
    assert model.model_dump_json().encode() == raw
    assert context_state.decode(raw) == ctx


def test_chat_conversation_keeps_authors_text_and_agent() -> None:
    events = [
        chat("e1", "conversation_started", 0),
        said("e2", 1, "visitor", "Where is my order?"),
        said("e3", 1.5, "bot", "Let me find an agent."),
        chat("e4", "agent_joined", 2, agent={"id": "agent-7", "name": "Sam"}),
        said("e5", 3, "agent", "Hi Ann, checking now."),
        said("e6", 4, "visitor", "Thanks"),
    ]
    ctx = fold(events)
    conversation = one(ctx, "chat:acme:conv-7")

    assert (conversation.kind, conversation.channel, conversation.status) == (
        "conversation",
        Channel.CHAT,
        "open",
    )
    assert lines(conversation) == [
        ("customer", "Where is my order?"),
        ("bot", "Let me find an agent."),
        ("agent", "Hi Ann, checking now."),
        ("customer", "Thanks"),
    ]
    assert [m.agent_id for m in conversation.messages] == [None, None, "agent-7", None]
    # an agent's message names only the agent id: the name from agent_joined is kept
    assert (conversation.agent_id, conversation.agent_name) == ("agent-7", "Sam")
    assert ctx.routing.last_agent is not None
    assert (ctx.routing.last_agent.agent_id, ctx.routing.last_agent.agent_name) == (
        "agent-7",
        "Sam",
    )
    assert [o.interaction_id for o in ctx.routing.open_conversations] == ["chat:acme:conv-7"]

    ended = fold([chat("e7", "conversation_ended", 5, reason="resolved")], ctx=ctx)
    conversation = one(ended, "chat:acme:conv-7")
    assert (conversation.status, conversation.outcome) == ("ended", "resolved")
    assert ended.routing.open_conversations == []


def test_chat_transfer_moves_queue_and_agent() -> None:
    ctx = fold(
        [
            chat("e1", "agent_joined", 0, agent={"id": "agent-7", "name": "Sam"}),
            chat(
                "e2",
                "transferred",
                2,
                transfer={"from_agent_id": "agent-7", "to_agent_id": "agent-9", "to_queue": "tech"},
            ),
            said("e3", 3, "agent", "Tech support here.", agent_id="agent-9"),
        ]
    )
    conversation = one(ctx, "chat:")
    assert (conversation.queue, conversation.agent_id, conversation.agent_name) == (
        "tech",
        "agent-9",
        None,  # not Sam: Sam is the agent who left
    )


def test_sms_whatsapp_and_messenger_thread_by_address_with_a_gap() -> None:
    policy = ContextPolicy(conversation_gap_hours=24)
    day = 24 * 60
    ctx = fold(
        [
            text("SM1", 0, "Hi, is my order shipped?"),
            text("SM2", 60, "Order 1234"),
            text("SM3", 60 + day + 1, "Hello again"),  # more than the gap: a new thread
            text("SM4", 10, "Via WhatsApp", sender=f"whatsapp:{PHONE}"),  # Twilio WhatsApp
            whatsapp_message("wamid.1", 20, "And via the Cloud API"),
            messenger_message("mid.1", 30, "Hello page"),
            messenger_message("mid.2", 31, "Hello Ann, how can we help?", echo=True),
        ],
        policy,
    )
    threads = {i.interaction_id: lines(i) for i in ctx.interactions if i.kind == "conversation"}
    assert threads == {
        f"sms:{PHONE}@20261120T090000Z": [
            ("customer", "Hi, is my order shipped?"),
            ("customer", "Order 1234"),
        ],
        f"sms:{PHONE}@20261121T100100Z": [("customer", "Hello again")],
        f"whatsapp:{PHONE}@20261120T091000Z": [
            ("customer", "Via WhatsApp"),
            ("customer", "And via the Cloud API"),
        ],
        "messenger_psid:PSID-77@20261120T093000Z": [
            ("customer", "Hello page"),
            ("agent", "Hello Ann, how can we help?"),
        ],
    }
    by_id = {i.interaction_id: i for i in ctx.interactions}
    assert by_id["messenger_psid:PSID-77@20261120T093000Z"].channel is Channel.SOCIAL
    # the latest thread per address is the open one
    open_ids = {o.interaction_id for o in ctx.routing.open_conversations}
    assert f"sms:{PHONE}@20261121T100100Z" in open_ids
    assert f"sms:{PHONE}@20261120T090000Z" not in open_ids


def test_twilio_call_keeps_ivr_path_outcome_and_transcript() -> None:
    ctx = fold(
        [
            twilio_call("CA1", "ringing", 0),
            gather("CA1", 0.5, "main", "2"),
            gather("CA1", 1, "billing", "1"),
            twilio_call("CA1", "in-progress", 2),
            twilio_call("CA1", "completed", 9),
            transcription("TR1", "CA1", 10, "I would like a refund for order 1234."),
        ]
    )
    call = one(ctx, "call:CA1")
    assert (call.kind, call.channel, call.source, call.direction) == (
        "call",
        Channel.VOICE,
        "twilio",
        "inbound",
    )
    assert call.ivr_path == ["main", "billing"]
    assert (call.status, call.outcome) == ("completed", "completed")
    assert call.transcript == "I would like a refund for order 1234."
    assert (call.started_at, call.last_at) == (at(0), at(10))
    assert len(call.event_ids) == 6


def test_twilio_gather_retry_does_not_repeat_an_ivr_step() -> None:
    ctx = fold([twilio_call("CA1", "ringing", 0), gather("CA1", 1, "main", "2")])
    assert apply_event(ctx, "cus_1", gather("CA1", 1, "main", "2"), [], POLICY) is None


def test_cti_call_keeps_ivr_path_queue_agent_and_outcome() -> None:
    sam = {"id": "agent-7", "name": "Sam"}
    answered = fold(
        [
            cti_event("c1", "offered", 0, ivr_path=["main"]),
            cti_event("c2", "queued", 1, ivr_path=["main", "billing"], queue="billing"),
            cti_event("c3", "answered", 3, queue="billing", agent=sam),
        ]
    )
    call = one(answered, "call:call-1")
    assert (call.status, call.queue, call.agent_id, call.agent_name) == (
        "answered",
        "billing",
        "agent-7",
        "Sam",
    )
    transfer = {"kind": "warm", "to_queue": "refunds", "to_agent_id": "agent-9"}
    moved = fold([cti_event("c4", "transferred", 6, agent=sam, transfer=transfer)], ctx=answered)
    call = one(moved, "call:call-1")
    # the event's agent is Sam, who hands over: agent-9 is not named Sam
    assert (call.queue, call.agent_id, call.agent_name) == ("refunds", "agent-9", None)

    ended = cti_event("c5", "ended", 12, disposition="refund_issued", agent={"id": "agent-9"})
    ctx = fold([ended], ctx=moved)
    call = one(ctx, "call:call-1")
    assert call.ivr_path == ["main", "billing"]
    assert (call.queue, call.agent_id, call.agent_name) == ("refunds", "agent-9", None)
    assert (call.status, call.outcome) == ("completed", "refund_issued")
    assert ctx.routing.last_agent is not None
    assert ctx.routing.last_agent.agent_id == "agent-9"


def test_email_threads_by_references_and_in_reply_to() -> None:
    ctx = fold(
        [
            mail("root@mail.example", 0, "Order 1234", "Where is it?"),
            mail(
                "reply2@mail.example",
                90,
                "Re: Order 1234",
                "Any update?",
                in_reply_to="reply1@acme.example",
                references=["root@mail.example", "reply1@acme.example"],
            ),
            mail(
                "reply1@mail.example",
                30,
                "Re: Order 1234",
                "Adding the invoice.",
                in_reply_to="root@mail.example",
            ),
            mail("other@mail.example", 40, "Newsletter", "Unsubscribe me"),
        ]
    )
    thread = one(ctx, "email:root@mail.example")
    assert thread.kind == "email_thread"
    assert [(m.author, (m.text or "").strip()) for m in thread.messages] == [
        ("customer", "Where is it?"),
        ("customer", "Adding the invoice."),
        ("customer", "Any update?"),
    ]
    assert [m.subject for m in thread.messages] == [
        "Order 1234",
        "Re: Order 1234",
        "Re: Order 1234",
    ]
    assert thread.subject == "Re: Order 1234"
    assert (thread.started_at, thread.last_at) == (at(0), at(90))
    assert ids(one(ctx, "email:other@mail.example").messages) == ["email:other@mail.example"]


def test_visit_keeps_pages_and_products_and_a_new_visit_starts_after_the_gap() -> None:
    product = {"product_id": "sku-1", "name": "Blue mug", "price": 12.5}
    ctx = fold(
        [
            page("p1", 0, "Home", "https://acme.example/"),
            track("t1", 1, "Product Viewed", **product),
            track("t2", 2, "Product Added", **product),
            track("t3", 3, "Checkout Started", order_id="o-1", products=[product]),
            track("t4", 5, "Order Completed", order_id="o-1", products=[product]),
            page("p2", 4, "Checkout", "https://acme.example/checkout"),  # late
            page("p3", 5 + 31, "Home", "https://acme.example/"),  # past the 30 min gap
        ]
    )
    visits = sorted((i for i in ctx.interactions if i.kind == "visit"), key=lambda i: i.started_at)
    assert [v.interaction_id for v in visits] == [
        f"visit:{ANON}@20261120T090000Z",
        f"visit:{ANON}@20261120T093600Z",
    ]
    first, second = visits
    assert [(p.name, p.url) for p in first.pages] == [
        ("Home", "https://acme.example/"),
        ("Checkout", "https://acme.example/checkout"),
    ]
    assert [(p.action, p.product_id, p.name, p.price) for p in first.products] == [
        ("viewed", "sku-1", "Blue mug", 12.5),
        ("added", "sku-1", "Blue mug", 12.5),
        ("checkout_started", "sku-1", "Blue mug", 12.5),
        ("order_completed", "sku-1", "Blue mug", 12.5),
    ]
    assert ids(second.pages) == ["tracking:p3"]
    assert ctx.pending_triggers == []  # the order completed


def test_help_center_views_are_self_service_attempts_and_completion_resolves() -> None:
    # analytics.page(category="help", ...) sends category beside name, not in properties
    article = tracked(
        "page",
        "kb-1",
        0,
        category="help",
        name="How do I return an item?",
        properties={"article_id": "kb-112", "url": "https://help.acme.example/kb-112"},
    )
    assert "category" not in article.properties
    ctx = fold([article])
    attempt = one(ctx, "self_service:")
    assert (attempt.kind, attempt.status, attempt.self_service) == (
        "self_service",
        "unresolved",
        "kb-112",
    )
    assert attempt.pages[0].category == "help"
    assert ctx.routing.unresolved_self_service is not None

    viewed = track("kb-2", 5, "Article Viewed", article_id="kb-200", title="Refunds")
    ctx = fold([viewed], ctx=ctx)
    assert {i.self_service: i.status for i in ctx.interactions} == {
        "kb-112": "unresolved",
        "kb-200": "unresolved",
    }
    done = fold([track("ssc", 7, "Self Service Completed", flow="refund")], ctx=ctx)
    assert {i.self_service: i.status for i in done.interactions} == {
        "kb-112": "unresolved",
        "kb-200": "resolved",  # the latest open attempt before it
    }
    assert done.timeline[0].interaction_id == "self_service:tracking:kb-2"
    assert done.routing.unresolved_self_service is None


def test_ivr_self_service_through_cti_is_a_resolved_attempt_not_a_contact() -> None:
    events = [
        cti_event("s1", "offered", 0, "ivr-9", ivr_path=["main"]),
        cti_event(
            "s2",
            "ended",
            3,
            "ivr-9",
            ivr_path=["main", "order_status", "tracking_read_out"],
            disposition="self_service:order_status",
        ),
    ]
    for order in (events, events[::-1]):
        ctx = fold(order)
        attempt = one(ctx, "call:ivr-9")
        assert (attempt.kind, attempt.status, attempt.self_service) == (
            "self_service",
            "resolved",
            "order_status",
        )
        assert attempt.ivr_path == ["main", "order_status", "tracking_read_out"]
    # a chat right after it is not a repeat contact: nobody was contacted before
    ctx = fold([said("c1", 10, "visitor", "Hi")], ctx=ctx)
    assert ctx.routing.repeat_contact is None
    assert ctx.routing.unresolved_self_service is None


# == duplicates and late events ===========================================================
@pytest.mark.parametrize(
    "make",
    [
        lambda: said("e1", 0, "visitor", "Hi"),
        lambda: text("SM1", 0, "Hi"),
        lambda: twilio_call("CA1", "ringing", 0),
        lambda: cti_event("c1", "answered", 0, agent={"id": "agent-7"}),
        lambda: mail("m1@mail.example", 0, "Hi", "Hello"),
        lambda: page("p1", 0, "Home", "https://acme.example/"),
        lambda: whatsapp_message("wamid.1", 0, "Hi"),
        lambda: messenger_message("mid.1", 0, "Hi"),
    ],
    ids=["webchat", "sms", "twilio-call", "cti", "email", "tracking", "whatsapp", "messenger"],
)
def test_an_event_arriving_twice_appears_once(make: Any) -> None:
    first: RawEvent = make()
    ctx = fold([first, text("SM-other", 5, "later")])
    again: RawEvent = make()  # the provider's retry: the same id
    assert again.event_id == first.event_id
    assert apply_event(ctx, "cus_1", again, again.identifiers, POLICY) is None
    assert ids(ctx.timeline).count(first.event_id) == 1
    assert sum(ctx.channel_counts.values()) == 2


def test_twilio_sms_retry_with_a_later_receipt_time_is_still_one_event() -> None:
    ctx = fold([text("SM1", 0, "Hi")])
    retry = text("SM1", 3, "Hi")  # Twilio retried: received (and dated) later
    assert apply_event(ctx, "cus_1", retry, retry.identifiers, POLICY) is None


def test_events_both_customers_saw_appear_once_after_absorb() -> None:
    # a redelivery placed the same events on both customers before they were merged
    survivor = fold(
        [text("SM1", 0, "one"), text("SM2", 5, "two"), said("c1", 6, "visitor", "Hi")], cid="A"
    )
    other = fold(
        [text("SM2", 5, "two"), said("c1", 6, "visitor", "Hi"), said("c2", 7, "agent", "Hello")],
        cid="B",
    )
    merged = absorb(survivor, other, POLICY)
    assert merged is not None
    assert sorted(ids(merged.timeline)) == sorted(
        ["twilio:sms:SM1", "twilio:sms:SM2", "webchat:acme:c1", "webchat:acme:c2"]
    )
    assert merged.channel_counts == {"sms": 2, "chat": 2}
    [thread] = [i for i in merged.interactions if i.interaction_id.startswith("sms:")]
    assert ids(thread.messages) == ["twilio:sms:SM1", "twilio:sms:SM2"]
    assert lines(one(merged, "chat:")) == [("customer", "Hi"), ("agent", "Hello")]
    # every timeline entry points at an interaction that exists
    known = {i.interaction_id for i in merged.interactions}
    assert {e.interaction_id for e in merged.timeline} <= known
    assert absorb(merged, other, POLICY) is None  # absorbed once


def test_a_late_event_lands_in_its_place() -> None:
    events = [
        said("e1", 1, "visitor", "first"),
        said("e2", 2, "agent", "second"),
        said("e3", 3, "visitor", "third"),
        text("SM1", 4, "sms"),
    ]
    for order in itertools.permutations(events):
        ctx = fold(order)
        assert ids(ctx.timeline) == ids(reversed(events))
        assert lines(one(ctx, "chat:")) == [
            ("customer", "first"),
            ("agent", "second"),
            ("customer", "third"),
        ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(0, 40), min_size=1, max_size=60),
    st.randoms(use_true_random=False),
    st.sampled_from([200, 7]),
)
def test_a_long_timeline_in_any_order_with_redeliveries(
    minutes: list[int], rng: Any, cap: int
) -> None:
    # Pages at arbitrary (often equal) times, each delivered once or twice in any order:
    # the timeline is the newest ``cap`` events once each, newest first, ties by event id,
    # whatever the order (the fold places an entry by a binary search).
    policy = ContextPolicy(timeline_limit=cap)
    events = [
        page(f"p{n}", minute, f"P{n}", f"https://acme.example/{n}")
        for n, minute in enumerate(minutes)
    ]
    arrivals = events + [e for e in events if rng.random() < 0.3]
    rng.shuffle(arrivals)
    ctx = fold(arrivals, policy)
    expected = sorted(events, key=lambda e: (e.occurred_at, e.event_id), reverse=True)
    assert ids(ctx.timeline) == ids(expected[:cap])
    if cap >= len(events):  # nothing fell out, so nothing arrived too late to count
        assert sum(ctx.channel_counts.values()) == len(events)
    for again in arrivals:  # a redelivery of anything kept changes nothing
        if again.event_id in ids(ctx.timeline):
            assert apply_event(ctx, "cus_1", again, again.identifiers, policy) is None


def test_an_absorbed_customers_events_are_not_folded_again() -> None:
    # the survivor's timeline now holds the other's events: a redelivery is no new event
    survivor = fold([text("SM1", 0, "one")], cid="A")
    other = fold([said("c1", 6, "visitor", "Hi")], cid="B")
    merged = absorb(survivor, other, POLICY)
    assert merged is not None
    again = said("c1", 6, "visitor", "Hi")
    assert apply_event(merged, "A", again, again.identifiers, POLICY) is None


def test_a_late_message_that_fills_the_gap_joins_two_threads() -> None:
    hour = 60
    events = [text("SM1", 0, "a"), text("SM2", 30 * hour, "c"), text("SM3", 15 * hour, "b")]
    for order in itertools.permutations(events):
        ctx = fold(order)
        [thread] = ctx.interactions
        assert thread.interaction_id.startswith(f"sms:{PHONE}@")
        assert lines(thread) == [("customer", "a"), ("customer", "b"), ("customer", "c")]
        assert {e.interaction_id for e in ctx.timeline} == {thread.interaction_id}


def test_a_late_abandon_still_marks_the_call_dropped() -> None:
    events = [
        cti_event("c1", "offered", 0),
        cti_event("c2", "abandoned", 2),
        cti_event("c3", "ended", 3),
    ]
    for order in itertools.permutations(events):
        assert one(fold(order), "call:").status == "abandoned"


def test_a_transcript_does_not_repeat_messages_received_live() -> None:
    live = [
        said("e1", 1, "visitor", "Where is my order?"),
        said("e2", 2, "agent", "Checking now."),
    ]
    transcript = chat(
        "t1",
        "transcript",
        10,
        transcript=[
            {"author": "visitor", "text": "Where is my order?", "at": iso(1)},
            {"author": "agent", "text": "Checking now.", "at": iso(2), "agent_id": "agent-7"},
            {"author": "agent", "text": "It ships today.", "at": iso(3), "agent_id": "agent-7"},
            {"author": "visitor", "text": "Thanks", "at": iso(4)},
        ],
    )
    expected = [
        ("customer", "Where is my order?"),
        ("agent", "Checking now."),
        ("agent", "It ships today."),
        ("customer", "Thanks"),
    ]
    for order in itertools.permutations([*live, transcript]):
        conversation = one(fold(order), "chat:")
        assert lines(conversation) == expected
        assert [m.at for m in conversation.messages] == [at(1), at(2), at(3), at(4)]


# == traits ==============================================================================
def identify(mid: str, minute: float, **traits: Any) -> RawEvent:
    return tracked("identify", mid, minute, traits=traits)


def test_traits_follow_their_rule_with_provenance() -> None:
    ctx = fold(
        [
            # name: source_priority cti > tracking > webchat > email
            cti_event("c1", "answered", 0, customer={"phone": PHONE, "name": "Ann Example"}),
            chat("w1", "conversation_started", 5),  # webchat visitor name "Ann"
            mail("m1@mail.example", 10, "Hi", "Hello"),  # From: "Ann Example" display name
            # language: most_recent
            identify("i1", 1, language="fr"),
            identify("i2", 3, language="en"),
            # city: most_frequent
            identify("i3", 2, city="Paris"),
            identify("i4", 4, city="Lyon"),
            identify("i5", 6, city="Paris"),
            identify("i6", 8, city="Lyon"),
            identify("i7", 9, city="Lyon"),
            # plan: the default rule, most_recent
            identify("i8", 7, plan="pro"),
        ]
    )
    name = ctx.traits["name"]
    assert (name.value, name.event_id, name.channel, name.source, name.rule) == (
        "Ann Example",
        "cti:c1",
        Channel.VOICE,
        "cti",
        "source_priority",
    )
    assert name.observed_at == at(0)
    language = ctx.traits["language"]
    assert (language.value, language.event_id, language.source, language.observed_at) == (
        "en",
        "tracking:i2",
        "tracking",
        at(3),
    )
    city = ctx.traits["city"]
    assert (city.value, city.rule, city.sightings, city.event_id, city.observed_at) == (
        "Lyon",
        "most_frequent",
        3,
        "tracking:i7",  # the latest event that asserted it
        at(9),
    )
    assert city.candidates == {'"Lyon"': 3, '"Paris"': 2}
    assert ctx.traits["plan"].value == "pro"
    assert ctx.routing.language == "en"


def test_source_priority_prefers_the_trusted_source_even_when_older() -> None:
    ctx = fold(
        [
            cti_event("c1", "answered", 0, customer={"phone": PHONE, "name": "Ann Example"}),
            chat("w1", "conversation_started", 60),
        ]
    )
    assert ctx.traits["name"].source == "cti"
    unlisted = fold([chat("w1", "conversation_started", 0), mail("m@x", 1, "s", "b")])
    assert unlisted.traits["name"].source == "webchat"  # webchat ranks above email


def test_most_frequent_ties_go_to_the_latest_sighting_whatever_the_order() -> None:
    events = [
        identify("x1", 1, city="Paris"),
        identify("y2", 2, city="Lyon"),
        identify("y3", 3, city="Lyon"),
        identify("x4", 4, city="Paris"),
    ]
    outcomes = [fold(order).traits["city"] for order in itertools.permutations(events)]
    city = outcomes[0]
    assert all(o == city for o in outcomes)
    assert (city.value, city.event_id, city.sightings) == ("Paris", "tracking:x4", 2)


def test_most_frequent_across_absorb_counts_every_customer() -> None:
    a = fold([identify(f"a{i}", i, city=c) for i, c in enumerate("XXXZZ")], cid="A")
    b = fold([identify(f"b{i}", i, city=c) for i, c in enumerate("YYYZZ")], cid="B")
    merged = absorb(a, b, POLICY)
    assert merged is not None
    city = merged.traits["city"]
    assert (city.value, city.sightings, city.event_id) == ("Z", 4, "tracking:b4")
    assert city.candidates == {'"Z"': 4, '"X"': 3, '"Y"': 3}


SOURCES = {
    "cti": Channel.VOICE,
    "tracking": Channel.WEB,
    "webchat": Channel.CHAT,
    "email": Channel.EMAIL,
    "meta": Channel.SOCIAL,
}
TRAIT_POLICY = ContextPolicy(
    traits={
        "name": TraitPolicy(rule="source_priority", source_priority=["cti", "tracking", "webchat"]),
        "language": TraitPolicy(rule="most_recent"),
        "city": TraitPolicy(rule="most_frequent"),
    }
)
assertions = st.lists(
    st.tuples(
        st.integers(0, 5),  # minute: ties happen
        st.sampled_from(sorted(SOURCES)),
        st.sampled_from(["name", "language", "city"]),
        st.sampled_from(["a", "b", "c", "d"]),
    ),
    min_size=1,
    max_size=9,
)


def asserting(n: int, minute: int, source: str, trait: str, value: str) -> RawEvent:
    """An event asserting one trait, as any connector would publish it."""
    return RawEvent(
        event_id=f"{source}:{n}",
        channel=SOURCES[source],
        source=source,
        kind="identify",
        occurred_at=at(minute),
        received_at=at(minute),
        identifiers=[Identifier(type="email", value=EMAIL)],
        traits={trait: value},
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(assertions, st.randoms(use_true_random=False), st.integers(0, 9))
def test_traits_do_not_depend_on_event_order_or_on_absorb(
    found: list[tuple[int, str, str, str]], rng: Any, cut: int
) -> None:
    events = [asserting(n, *a) for n, a in enumerate(found)]
    expected = fold(events, TRAIT_POLICY).traits
    shuffled = list(events)
    rng.shuffle(shuffled)
    assert fold(shuffled, TRAIT_POLICY).traits == expected
    # the same assertions split between two customers who are then merged
    left, right = shuffled[:cut], shuffled[cut:]
    if left and right:
        merged = absorb(fold(left, TRAIT_POLICY, "A"), fold(right, TRAIT_POLICY, "B"), TRAIT_POLICY)
        assert merged is not None
        assert merged.traits == expected
        mirrored = absorb(
            fold(right, TRAIT_POLICY, "B"), fold(left, TRAIT_POLICY, "A"), TRAIT_POLICY
        )
        assert mirrored is not None
        assert mirrored.traits == expected


def test_reconcile_keeps_provenance_of_the_chosen_value() -> None:
    def seen(value: str, eid: str, minute: int, source: str) -> TraitValue:
        return TraitValue(
            value=value,
            event_id=eid,
            channel=SOURCES[source],
            source=source,
            observed_at=at(minute),
        )

    rule = TraitPolicy(rule="source_priority", source_priority=["cti"])
    kept = reconcile(seen("A", "e1", 0, "cti"), seen("B", "e2", 5, "webchat"), rule)
    assert (kept.value, kept.event_id, kept.source, kept.rule) == (
        "A",
        "e1",
        "cti",
        "source_priority",
    )
    by_channel = TraitPolicy(rule="source_priority", source_priority=["voice"])
    kept = reconcile(seen("B", "e2", 5, "webchat"), seen("A", "e1", 0, "cti"), by_channel)
    assert kept.event_id == "e1"  # a channel name ranks too


# == derived context =======================================================================
def test_repeat_contact_after_a_dropped_call() -> None:
    ctx = fold([cti_event("c1", "offered", 0), cti_event("c2", "abandoned", 2)])
    assert ctx.routing.repeat_contact is None
    back = fold([said("e1", 120, "visitor", "I got cut off")], ctx=ctx)
    repeat = back.routing.repeat_contact
    assert repeat is not None
    assert (repeat.interaction_id, repeat.previous_interaction_id) == (
        "chat:acme:conv-7",
        "call:call-1",
    )
    assert (repeat.previous_channel, repeat.previous_status) == (Channel.VOICE, "abandoned")
    assert repeat.hours_since_previous == pytest.approx(118 / 60, abs=1e-3)
    assert repeat.at == at(120)


def test_repeat_contact_after_an_abandoned_chat() -> None:
    ctx = fold(
        [
            said("e1", 0, "visitor", "Hello?"),
            chat("e2", "conversation_ended", 5, reason="visitor_left"),
            twilio_call("CA1", "ringing", 60),
        ]
    )
    assert one(ctx, "chat:").status == "abandoned"
    repeat = ctx.routing.repeat_contact
    assert repeat is not None
    assert (repeat.interaction_id, repeat.previous_status) == ("call:CA1", "abandoned")


def test_no_repeat_contact_outside_the_window_or_for_a_callback() -> None:
    dropped = [cti_event("c1", "offered", 0), cti_event("c2", "abandoned", 1)]
    late = fold([*dropped, said("e1", 49 * 60, "visitor", "Hi")])
    assert late.routing.repeat_contact is None  # 48 h window
    callback = fold([*dropped, twilio_call("CA9", "ringing", 10, direction="outbound-api")])
    assert one(callback, "call:CA9").direction == "outbound"
    assert callback.routing.repeat_contact is None


def test_unresolved_self_service_before_an_agent_contact() -> None:
    article = tracked("page", "kb-1", 0, category="help", name="Returns", properties={})
    ctx = fold([article, cti_event("c1", "answered", 10, agent={"id": "agent-7"})])
    attempt = ctx.routing.unresolved_self_service
    assert attempt is not None
    assert (attempt.interaction_id, attempt.what, attempt.before_interaction_id) == (
        "self_service:tracking:kb-1",
        "Returns",
        "call:call-1",
    )
    much_later = fold([article, cti_event("c1", "answered", 61 + 10)])
    assert much_later.routing.unresolved_self_service is None  # 60 minutes
    helpful = tracked(
        "page", "kb-2", 0, category="help", name="Returns", properties={"helpful": True}
    )
    assert fold([helpful, cti_event("c1", "answered", 10)]).routing.unresolved_self_service is None


def test_consent_per_channel_and_contactable_channels() -> None:
    ctx = fold([text("SM1", 0, "Hi"), mail("m1@x", 1, "Hi", "Hello")])
    assert ctx.routing.contactable_channels == ["email", "sms", "voice"]

    stop = texts("SM2", 5, "STOP")
    assert [e.kind for e in stop] == ["message", "consent"]
    ctx = fold(stop, ctx=ctx)
    sms_consent = ctx.consent["sms"]
    assert (sms_consent.status, sms_consent.event_id, sms_consent.source) == (
        "opted_out",
        "twilio:sms:SM2:consent",
        "twilio",
    )
    assert ctx.traits["sms_opted_out"].value is True
    assert "sms" not in ctx.routing.contactable_channels
    assert ctx.routing.contactable_channels == ["email", "voice"]

    unsubscribe = track("u1", 6, "Unsubscribed", list="newsletter")
    assert consent_of(unsubscribe) is not None
    ctx = fold([unsubscribe], ctx=ctx)
    assert ctx.consent["email"].status == "opted_out"
    assert ctx.routing.contactable_channels == ["voice"]

    # a START later opts back in; an older one arriving late does not
    assert fold(texts("SM0", 4, "START"), ctx=ctx).consent["sms"].status == "opted_out"
    again = fold(texts("SM3", 10, "START"), ctx=ctx)
    assert again.consent["sms"].status == "opted_in"
    assert "sms" in again.routing.contactable_channels


def test_whatsapp_stop_through_twilio_opts_out_of_whatsapp_only() -> None:
    ctx = fold(texts("SM1", 0, "STOP", sender=f"whatsapp:{PHONE}"))
    assert ctx.consent["whatsapp"].status == "opted_out"
    assert "whatsapp" not in ctx.routing.contactable_channels
    assert {"sms", "voice"} <= set(ctx.routing.contactable_channels)


def test_language_vip_and_lifetime_counts() -> None:
    ctx = fold([identify("i1", 0, locale="pt-BR", tier="Gold"), text("SM1", 1, "Oi")])
    assert (ctx.routing.language, ctx.routing.vip) == ("pt", True)
    ctx = fold([identify("i2", 2, language="es")], ctx=ctx)
    assert ctx.routing.language == "es"  # language wins over locale
    assert fold([identify("i3", 0, tier="bronze")]).routing.vip is False
    assert fold([identify("i4", 0, vip=True)]).routing.vip is True
    assert ctx.channel_counts == {"web": 2, "sms": 1}


# == triggers ==============================================================================
def test_checkout_abandoned_fires_after_the_delay_only_without_an_order() -> None:
    checkout = [
        page("p1", 0, "Cart", "https://acme.example/cart"),
        track("t1", 1, "Checkout Started", order_id="o-1", products=[{"product_id": "sku-1"}]),
    ]
    ctx = fold([*checkout, text("SM1", 0, "hi")])
    [pending] = ctx.pending_triggers
    assert (pending.rule, pending.due_at) == ("checkout_abandoned", at(31))
    assert next_due(ctx) == at(31)
    assert due_triggers(ctx, at(30), POLICY) == ([], None)

    fired, recorded = due_triggers(ctx, at(31), POLICY)
    assert [(t.rule, t.interaction_id, t.occurred_at) for t in fired] == [
        ("checkout_abandoned", f"visit:{ANON}@20261120T090000Z", at(31))
    ]
    assert fired[0].trigger_id == f"checkout_abandoned:visit:{ANON}@20261120T090000Z"
    assert fired[0].channels == ["sms", "voice"]
    assert fired[0].context_version == ctx.version
    assert recorded is not None
    assert recorded.fired_triggers == [fired[0].trigger_id]
    assert recorded.pending_triggers == []
    assert due_triggers(recorded, at(40), POLICY) == ([], None)  # once

    completed = fold([track("t2", 20, "Order Completed", order_id="o-1")], ctx=ctx)
    assert completed.pending_triggers == []
    assert _trigger_rules(completed, 31) == []


def test_dropped_call_no_callback_fires_only_without_a_later_answered_call() -> None:
    dropped = fold([twilio_call("CA1", "ringing", 0), twilio_call("CA1", "no-answer", 1)])
    assert one(dropped, "call:CA1").status == "missed"
    [pending] = dropped.pending_triggers
    assert (pending.rule, pending.interaction_id, pending.due_at) == (
        "dropped_call_no_callback",
        "call:CA1",
        at(16),
    )
    assert _trigger_rules(dropped, 15) == []
    assert _trigger_rules(dropped, 16) == ["dropped_call_no_callback"]

    called_back = fold(
        [
            twilio_call("CA2", "initiated", 5, direction="outbound-api"),
            twilio_call("CA2", "in-progress", 6, direction="outbound-api"),
        ],
        ctx=dropped,
    )
    assert called_back.pending_triggers == []
    assert _trigger_rules(called_back, 16) == []

    unanswered = fold([twilio_call("CA3", "no-answer", 5, direction="outbound-api")], ctx=dropped)
    assert [p.rule for p in unanswered.pending_triggers] == ["dropped_call_no_callback"]


def test_repeat_contact_fires_immediately_and_once() -> None:
    ctx = fold([cti_event("c1", "abandoned", 0), cti_event("c2", "offered", 6, "call-2")])
    assert ctx.routing.repeat_contact is not None
    fired, recorded = due_triggers(ctx, at(6), POLICY)
    assert [(t.rule, t.interaction_id, t.occurred_at) for t in fired] == [
        ("repeat_contact", "call:call-2", at(6))
    ]
    assert fired[0].reason == "contacted again 0.1 h after the previous contact"
    assert recorded is not None
    assert due_triggers(recorded, at(7), POLICY) == ([], None)
    # the dropped call's own trigger comes at its deadline (call-2 was not answered), once
    fired, recorded = due_triggers(recorded, at(15), POLICY)
    assert [t.rule for t in fired] == ["dropped_call_no_callback"]
    assert recorded is not None
    assert due_triggers(recorded, at(16), POLICY) == ([], None)


def test_a_trigger_past_max_delay_is_dropped_not_fired() -> None:
    ctx = fold([cti_event("c1", "abandoned", 0)])
    late = at(15 + 24 * 60 + 1)
    fired, recorded = due_triggers(ctx, late, POLICY)
    assert fired == []
    assert recorded is not None  # decided: never fires later either
    assert recorded.fired_triggers == ["dropped_call_no_callback:call:call-1"]
    assert recorded.pending_triggers == []


def test_triggers_never_go_to_an_opted_out_channel() -> None:
    ctx = fold(
        [
            whatsapp_message("wamid.1", 0, "hi"),
            cti_event("c1", "abandoned", 1),
            *texts("SM1", 5, "STOP"),
            mail("m1@mail.example", 6, "Hi", "Hello"),
            track("u1", 7, "Unsubscribed", channel="whatsapp"),
        ]
    )
    assert {c: d.status for c, d in ctx.consent.items()} == {
        "sms": "opted_out",
        "whatsapp": "opted_out",
    }
    fired, _ = due_triggers(ctx, at(16), POLICY)
    assert [(t.rule, t.channels) for t in fired] == [
        ("repeat_contact", ["email", "voice"]),  # the mail came soon after the dropped call
        ("dropped_call_no_callback", ["email", "voice"]),  # most recently used first
    ]


def test_no_trigger_at_all_when_every_channel_is_opted_out() -> None:
    ctx = fold(
        [
            cti_event("c1", "abandoned", 0),
            *texts("SM1", 1, "STOP"),
            tracked(
                "track",
                "u1",
                2,
                event="Unsubscribed",
                properties={"channel": "voice"},
                context={"traits": {"phone": PHONE}},
            ),
        ]
    )
    assert ctx.routing.contactable_channels == []
    fired, recorded = due_triggers(ctx, at(16), POLICY)
    assert fired == []
    assert recorded is not None
    assert "dropped_call_no_callback:call:call-1" in recorded.fired_triggers  # decided, not sent


def test_a_zero_delay_turns_a_rule_off() -> None:
    off = ContextPolicy(
        triggers=TriggerPolicy(checkout_abandoned_minutes=0, dropped_call_minutes=0)
    )
    ctx = fold(
        [
            track("t1", 0, "Checkout Started", products=[{"product_id": "sku-1"}]),
            cti_event("c1", "abandoned", 1),
        ],
        off,
    )
    assert ctx.pending_triggers == []
    assert next_due(ctx) is None
    assert due_triggers(ctx, at(60), off) == ([], None)
    no_repeat = ContextPolicy(triggers=TriggerPolicy(repeat_contact=False))
    repeat = fold([cti_event("c1", "abandoned", 0), cti_event("c2", "offered", 5, "c-2")])
    assert repeat.routing.repeat_contact is not None
    assert due_triggers(repeat, at(5), no_repeat) == ([], None)


# == bounded state =========================================================================
BULK = 20_000
CITIES = ["Paris", "Lyon", "Nice"]


def bulk_event(n: int) -> RawEvent:
    """One of a long, mixed history: a web visit that never ends, one SMS thread, chats of
    150 messages, calls of 10 events, email threads of 20 mails, identify calls."""
    t = T0 + timedelta(minutes=n)
    ids_ = [Identifier(type="phone", value=PHONE), Identifier(type="anonymous_id", value=ANON)]
    common: dict[str, Any] = {
        "event_id": f"bulk:{n}",
        "occurred_at": t,
        "received_at": t,
        "identifiers": ids_,
    }
    match n % 6:
        case 0:
            return RawEvent(
                channel=Channel.WEB,
                source="tracking",
                kind="page",
                name="Product",
                properties={"url": f"https://acme.example/p/{n}", "title": "A product"},
                **common,
            )
        case 1:
            return RawEvent(
                channel=Channel.SMS,
                source="twilio",
                kind="message",
                properties={"direction": "inbound", "text": f"message number {n}"},
                **common,
            )
        case 2:
            return RawEvent(
                channel=Channel.CHAT,
                source="webchat",
                kind="message",
                properties={
                    "conversation_id": f"conv-{n // 900}",
                    "site_id": "acme",
                    "author": "visitor" if n % 12 else "agent",
                    "agent_id": "agent-7",
                    "text": f"chat line {n}",
                },
                **common,
            )
        case 3:
            return RawEvent(
                channel=Channel.VOICE,
                source="cti",
                kind="contact_center",
                name="answered",
                properties={
                    "interaction_id": f"call-{n // 60}",
                    "queue": "billing",
                    "agent_id": "agent-7",
                    "ivr_path": ["main", "billing"],
                },
                **common,
            )
        case 4:
            return RawEvent(
                channel=Channel.EMAIL,
                source="email",
                kind="message",
                properties={
                    "direction": "inbound",
                    "thread_id": f"thread-{n // 120}",
                    "subject": "Order",
                    "text": "Please see below. " * 4,
                },
                **common,
            )
        case _:
            return RawEvent(
                channel=Channel.WEB,
                source="tracking",
                kind="identify",
                traits={"city": CITIES[(n // 6) % 3], "plan": f"p{n % 7}"},
                **common,
            )


def test_a_long_history_stays_bounded_and_every_event_is_counted() -> None:
    policy = POLICY
    ctx: CustomerContext | None = None
    per_channel: Counter[str] = Counter()
    for n in range(BULK):
        event = bulk_event(n)
        per_channel[event.channel.value] += 1
        ctx = apply_event(ctx, "cus_1", event, event.identifiers, policy) or ctx
    assert ctx is not None

    size = len(context_state.encode(ctx))
    assert size < 300_000, size
    assert len(ctx.timeline) == policy.timeline_limit
    assert len(ctx.interactions) <= policy.interaction_limit
    for i in ctx.interactions:
        for items in (i.messages, i.pages, i.products, i.event_ids, i.ivr_path):
            assert len(items) <= policy.items_per_interaction, i.interaction_id
    visit = one(ctx, "visit:")
    assert len(visit.pages) == policy.items_per_interaction
    assert visit.dropped_items == BULK // 6 + 1 - policy.items_per_interaction
    # lifetime counts are exact, and what is not itemised is archived
    assert ctx.channel_counts == dict(per_channel)
    assert ctx.archived.events + len(ctx.timeline) == BULK
    itemised = Counter(e.channel.value for e in ctx.timeline)
    for channel, count in per_channel.items():
        assert ctx.archived.by_channel.get(channel, 0) + itemised[channel] == count
    assert ctx.archived.interactions > 0
    assert ctx.archived.oldest_at == at(0)
    assert ctx.archived.newest_at == at(BULK - policy.timeline_limit - 1)
    assert (ctx.first_seen, ctx.last_seen) == (at(0), at(BULK - 1))
    assert ctx.version == BULK
    # the newest entries are the ones kept, newest first
    assert ids(ctx.timeline)[:2] == [f"bulk:{BULK - 1}", f"bulk:{BULK - 2}"]
    # an old event redelivered is not counted twice
    assert apply_event(ctx, "cus_1", bulk_event(5), [], policy) is None
    # the most_frequent trait still counts every sighting
    cities = Counter(CITIES[(n // 6) % 3] for n in range(5, BULK, 6))
    city = ctx.traits["city"]
    assert city.candidates == {json.dumps(c): k for c, k in cities.items()}
    assert city.sightings == cities[str(city.value)] == max(cities.values())


def test_the_window_archives_what_is_older_than_window_days() -> None:
    policy = ContextPolicy(window_days=1)
    ctx = fold(
        [
            text("SM1", 0, "old"),
            page("p1", 10, "Home", "https://a/"),
            text("SM2", 2 * 24 * 60, "new"),
        ],
        policy,
    )
    assert ids(ctx.timeline) == ["twilio:sms:SM2"]
    assert (ctx.archived.events, ctx.archived.by_channel) == (2, {"sms": 1, "web": 1})
    assert ctx.archived.interactions == 2
    assert ctx.channel_counts == {"sms": 2, "web": 1}
    # an event older than the window, arriving now, may be one that already fell out
    assert apply_event(ctx, "cus_1", text("SM0", 5, "x"), [], policy) is None


def test_a_timeline_entry_does_not_carry_a_whole_mail_or_transcript() -> None:
    policy = ContextPolicy(text_limit=500)
    body = "x" * 60_000
    transcript = [{"author": "visitor", "text": "y" * 5_000, "at": iso(0)}] * 400
    ctx = fold(
        [
            mail("big@mail.example", 0, "Big", body),
            chat("t1", "transcript", 1, transcript=transcript),
        ],
        policy,
    )
    entry = {e.event_id: e for e in ctx.timeline}
    assert entry["email:big@mail.example"].properties["text"] == "x" * 500
    trimmed = entry["webchat:acme:t1"].properties["transcript"]
    assert isinstance(trimmed, list)
    assert len(trimmed) <= 50
    assert len(json.dumps(trimmed)) < 50 * 600
    assert one(ctx, "email:").messages[0].text == "x" * 500
    assert len(context_state.encode(ctx)) < 150_000


# == split and restore =====================================================================
PIECES = {
    "cus_1": [f"phone:{PHONE}"],
    "cus_2": [f"email:{EMAIL}", f"anonymous_id:{ANON}", "user_id:user-42"],
}


def history() -> list[RawEvent]:
    return [
        *texts("SM1", 0, "STOP"),
        cti_event("c1", "answered", 5, customer={"phone": PHONE, "name": "Ann Phone"}),
        said("e1", 10, "visitor", "Hi"),
        mail("m1@mail.example", 15, "Hello", "Body"),
        track("u1", 20, "Unsubscribed"),  # anonymous_id only
        identify("i1", 25, language="de"),
    ]


def test_split_divides_interactions_consent_and_traits_by_identifiers() -> None:
    ctx = fold(history())
    parts = split_context(ctx, PIECES, {}, POLICY)
    phone, web = parts["cus_1"], parts["cus_2"]
    assert {i.interaction_id for i in phone.interactions} == {
        f"sms:{PHONE}@20261120T090000Z",
        "call:call-1",
    }
    assert {i.interaction_id for i in web.interactions} == {
        "chat:acme:conv-7",
        "email:m1@mail.example",
    }
    assert set(phone.consent) == {"sms"}
    assert set(web.consent) == {"email"}
    assert phone.traits["name"].value == "Ann Phone"
    assert web.traits["language"].value == "de"
    assert "language" not in phone.traits
    assert phone.routing.contactable_channels == ["voice"]  # still opted out of SMS
    assert web.routing.contactable_channels == []  # email unsubscribed
    assert sum(p.channel_counts.get(c, 0) for p in parts.values() for c in ["sms", "voice"]) == 3
    assert sorted(ids(phone.timeline) + ids(web.timeline)) == sorted(ids(ctx.timeline))


def test_restore_after_a_split_gives_back_the_whole_context() -> None:
    policy = ContextPolicy(timeline_limit=4)  # the STOP falls out of the timeline
    ctx = fold(history(), policy)
    assert "twilio:sms:SM1:consent" not in ids(ctx.timeline)
    assert ctx.archived.events == 3

    parts = split_context(ctx, PIECES, {}, policy)
    # a consent decision the timeline no longer itemises is kept by every piece
    assert all(p.consent["sms"].status == "opted_out" for p in parts.values())
    assert "sms" not in parts["cus_1"].routing.contactable_channels
    # the counts and archive the timeline no longer itemises stay with the split customer
    assert parts["cus_1"].archived == ctx.archived
    assert parts["cus_1"].first_seen == ctx.first_seen

    back = restore(parts["cus_1"], parts["cus_2"], policy)
    for field in (
        "timeline",
        "traits",
        "consent",
        "channel_counts",
        "archived",
        "identifiers",
        "routing",
        "pending_triggers",
        "first_seen",
        "last_seen",
    ):
        assert getattr(back, field) == getattr(ctx, field), field
    assert sorted(back.interactions, key=lambda i: i.interaction_id) == sorted(
        ctx.interactions, key=lambda i: i.interaction_id
    )


# == policy =================================================================================
def test_the_example_policy_file_is_the_defaults() -> None:
    assert load_context_policy(ROOT / "deploy" / "context-policy.example.toml") == ContextPolicy()
    assert load_context_policy(None) == ContextPolicy()
    assert load_context_policy(None, timeline_limit=7, window_days=None).timeline_limit == 7


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("timeline_limt = 10", "timeline_limt"),
        ("timeline_limit = 0", "timeline_limit"),
        ('window_days = "ninety"', "window_days"),
        ('[traits.city]\nrule = "most_common"', "traits.city.rule"),
        ('[traits.city]\nrul = "most_recent"', "traits.city.rul"),
        ("[triggers]\ncheckout_abandoned_minutes = -5", "triggers.checkout_abandoned_minutes"),
        ("[triggers]\nmax_delay_minutes = 0", "triggers.max_delay_minutes"),
        ("[triggers]\nbogus = true", "triggers.bogus"),
    ],
)
def test_a_bad_policy_names_the_field(tmp_path: Path, toml: str, field: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ContextPolicyError) as info:
        load_context_policy(path)
    assert f"{field}:" in str(info.value)
    assert str(path) in str(info.value)


def test_an_unreadable_policy_is_a_policy_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("timeline_limit = \n")
    with pytest.raises(ContextPolicyError, match=r"broken\.toml"):
        load_context_policy(broken)
    with pytest.raises(ContextPolicyError, match=r"missing\.toml"):
        load_context_policy(tmp_path / "missing.toml")
