"""Customer contexts as the pipeline publishes them on ``customer.context``, for tests of
its readers (the routing consumer, kcat, the README's example)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.context import (
    AgentRef,
    CustomerContext,
    Interaction,
    OpenConversation,
    RepeatContact,
    Routing,
    SelfServiceAttempt,
    TraitValue,
)
from schemas.events import Channel, Identifier

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def interaction(iid: str, minutes: float, queue: str | None = None, **kw: Any) -> Interaction:
    fields: dict[str, Any] = {
        "interaction_id": iid,
        "kind": "call",
        "channel": Channel.VOICE,
        "source": "cti",
        "started_at": at(minutes),
        "last_at": at(minutes + 5),
        "queue": queue,
        **kw,
    }
    return Interaction.model_validate(fields)


def context(customer_id: str = "cus_plain", version: int = 3, **kw: Any) -> CustomerContext:
    """A customer with one identifier and whatever ``kw`` sets (``routing=Routing(...)``)."""
    fields: dict[str, Any] = {
        "customer_id": customer_id,
        "identifiers": [Identifier(type="email", value=f"{customer_id}@example.com")],
        "first_seen": at(0),
        "last_seen": at(60),
        "updated_at": at(61),
        "version": version,
        **kw,
    }
    return CustomerContext.model_validate(fields)


def repeat_caller(customer_id: str = "cus_repeat") -> CustomerContext:
    """Called twice within hours; Dana took the first call in the billing queue."""
    return context(
        customer_id,
        version=7,
        interactions=[
            interaction("call:2", 120, status="answered"),
            interaction("call:1", 0, queue="billing", status="ended", agent_id="agent-dana"),
        ],
        routing=Routing(
            last_agent=AgentRef(
                agent_id="agent-dana",
                agent_name="Dana",
                channel=Channel.VOICE,
                interaction_id="call:1",
                at=at(5),
            ),
            repeat_contact=RepeatContact(
                interaction_id="call:2",
                previous_interaction_id="call:1",
                previous_channel=Channel.VOICE,
                previous_status="ended",
                hours_since_previous=2.0,
                at=at(120),
            ),
            open_conversations=[
                OpenConversation(
                    interaction_id="chat:9",
                    channel=Channel.CHAT,
                    since=at(118),
                    last_at=at(119),
                )
            ],
        ),
    )


def vip_spanish_speaker(customer_id: str = "cus_vip") -> CustomerContext:
    """A VIP whose language is Spanish, after a self-service attempt that did not help."""
    return context(
        customer_id,
        version=12,
        traits={
            "language": TraitValue(
                value="es", event_id="ev-1", channel=Channel.WEB, observed_at=at(1)
            )
        },
        interactions=[interaction("call:5", 30, queue="billing")],
        routing=Routing(
            language="es",
            vip=True,
            unresolved_self_service=SelfServiceAttempt(
                interaction_id="ivr:4", channel=Channel.VOICE, what="ivr:billing", at=at(29)
            ),
        ),
    )
