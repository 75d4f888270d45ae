"""CTI events (``schemas.cti``) to raw events. Pure.

Every CTI event becomes a ``contact_center`` event named by its type (``offered``,
``queued``, ``answered``, ``transferred``, ``abandoned``, ``ended``), id
``cti:<event_id>``, on the channel the platform names (voice by default), with the
customer's identifiers (phone, email, user_id, account_id, crm_id) and the queue, agent,
IVR path, disposition and transfer in ``properties``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from connectors.errors import invalid
from connectors.mapping import event_id, identifiers, make_event, parse_model, utc
from schemas.cti import CtiBatch, CtiEvent
from schemas.events import Channel, RawEvent

SOURCE = "cti"
KIND = "contact_center"
_CHANNELS = {
    "voice": Channel.VOICE,
    "chat": Channel.CHAT,
    "email": Channel.EMAIL,
    "sms": Channel.SMS,
    "social": Channel.SOCIAL,
}


def parse(body: object) -> list[CtiEvent]:
    """One event, or a batch (``{"events": [...]}``); 400 naming the field otherwise."""
    if isinstance(body, dict) and "events" in body:
        return parse_model(CtiBatch, body).events
    return [parse_model(CtiEvent, body)]


def to_raw_event(cti: CtiEvent, received_at: datetime, where: str = "") -> RawEvent:
    """Map one validated CTI event."""
    customer = cti.customer
    ids = identifiers(
        [
            ("user_id", customer.user_id),
            ("account_id", customer.account_id),
            ("crm_id", customer.crm_id),
            ("email", customer.email),
            ("phone", customer.phone),
        ]
    )
    if not ids:
        raise invalid(f"{where}customer", "needs at least one of phone, email, user_id, ...")
    properties: dict[str, Any] = {
        "interaction_id": cti.interaction_id,
        "type": cti.type.value,
        "direction": cti.direction,
        "queue": cti.queue,
        "ivr_path": list(cti.ivr_path),
        "disposition": cti.disposition,
    }
    if cti.agent is not None:
        properties |= {"agent_id": cti.agent.id, "agent_name": cti.agent.name}
        properties["agent_team"] = cti.agent.team
    if cti.transfer is not None:
        properties["transfer"] = cti.transfer.model_dump(mode="json", exclude_none=True)
    for name in ("wait_seconds", "talk_seconds"):
        if (value := getattr(cti, name)) is not None:
            properties[name] = value
    if cti.attributes:
        properties["attributes"] = cti.attributes
    traits: dict[str, Any] = {"name": customer.name} if customer.name else {}
    return make_event(
        event_id=event_id(SOURCE, cti.event_id),
        channel=_CHANNELS[cti.channel],
        source=SOURCE,
        kind=KIND,
        name=cti.type.value,
        occurred_at=cti.occurred_at,
        received_at=utc(received_at),
        identifiers=ids,
        traits=traits,
        properties=properties,
        payload=cti.model_dump(mode="json", exclude_none=True),
    )


def to_raw_events(body: object, received_at: datetime) -> list[RawEvent]:
    """Validate a request body and map every event in it."""
    events = parse(body)
    batch = isinstance(body, dict) and "events" in body
    return [
        to_raw_event(cti, received_at, f"events.{i}." if batch else "")
        for i, cti in enumerate(events)
    ]
