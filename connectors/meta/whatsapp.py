"""WhatsApp Cloud API notifications (``object: whatsapp_business_account``) to raw events. Pure.

Each ``entry[].changes[]`` with ``field: messages`` carries ``value.messages`` (from
customers) and ``value.statuses`` (of messages sent to them):

* a message is a ``message`` event, id ``meta:whatsapp:<wamid>``, from ``messages[].from``;
* a status is a ``message_status`` event named by the status (sent, delivered, read,
  failed), id ``meta:whatsapp:<wamid>:<status>``, about ``statuses[].recipient_id``.

A WhatsApp id (``wa_id``) is the customer's phone number without ``+``: the events carry
it as ``whatsapp:+<wa_id>`` and as ``phone:+<wa_id>``, so WhatsApp stitches with SMS and
calls from the same number. Other ``field`` values (account updates, templates) are not
customer interactions and are skipped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from connectors.mapping import event_id, from_epoch, identifiers, make_event, parse_model, utc
from connectors.meta.notification import Id, Model, Notification, wa_number
from schemas.events import Channel, RawEvent

SOURCE = "meta"
OBJECT = "whatsapp_business_account"


class Profile(Model):
    name: str | None = None


class Contact(Model):
    wa_id: Id
    profile: Profile | None = None


class Message(Model):
    id: Id
    from_: Id = Field(alias="from")
    timestamp: Id
    type: Id = "text"


class Status(Model):
    id: Id
    status: Id
    timestamp: Id
    recipient_id: Id


class Metadata(Model):
    phone_number_id: Id
    display_phone_number: str | None = None


class Value(Model):
    metadata: Metadata | None = None
    contacts: list[Contact] = Field(default_factory=list, max_length=1000)
    messages: list[Message] = Field(default_factory=list, max_length=1000)
    statuses: list[Status] = Field(default_factory=list, max_length=1000)


def to_raw_events(notification: Notification, received_at: datetime) -> list[RawEvent]:
    """Every message and status of a WhatsApp notification."""
    events: list[RawEvent] = []
    for e, entry in enumerate(notification.entry):
        for c, change in enumerate(entry.changes):
            if change.field != "messages":
                continue
            root = f"entry.{e}.changes.{c}.value"
            value = parse_model(Value, change.value, root)
            raw = {k: v for k, v in change.value.items() if k not in ("messages", "statuses")}
            names = {contact.wa_id: contact for contact in value.contacts}
            for m, message in enumerate(value.messages):
                where = f"{root}.messages.{m}"
                events.append(
                    _message(message, names.get(message.from_), value, raw, where, received_at)
                )
            for s, status in enumerate(value.statuses):
                events.append(_status(status, value, raw, f"{root}.statuses.{s}", received_at))
    return events


def _message(
    message: Message,
    contact: Contact | None,
    value: Value,
    raw: dict[str, Any],
    where: str,
    received_at: datetime,
) -> RawEvent:
    number = wa_number(message.from_)
    extra = message.model_extra or {}
    properties: dict[str, Any] = {
        "direction": "inbound",
        "message_id": message.id,
        "type": message.type,
        "text": _text(message.type, extra),
        **_business(value),
    }
    context = extra.get("context")
    if isinstance(context, dict) and isinstance(context.get("id"), str):
        properties["in_reply_to"] = context["id"]
    traits: dict[str, Any] = {}
    if contact is not None and contact.profile is not None and contact.profile.name:
        traits["name"] = contact.profile.name
    received = utc(received_at)
    return make_event(
        event_id=event_id(SOURCE, "whatsapp", message.id),
        channel=Channel.SOCIAL,
        source=SOURCE,
        kind="message",
        occurred_at=from_epoch(message.timestamp, f"{where}.timestamp"),
        received_at=received,
        identifiers=identifiers([("whatsapp", number), ("phone", number)]),
        traits=traits,
        properties=properties,
        payload={**raw, "message": message.model_dump(mode="json", by_alias=True)},
    )


def _status(
    status: Status, value: Value, raw: dict[str, Any], where: str, received_at: datetime
) -> RawEvent:
    number = wa_number(status.recipient_id)
    properties: dict[str, Any] = {
        "direction": "outbound",
        "message_id": status.id,
        "status": status.status,
        **_business(value),
    }
    errors = (status.model_extra or {}).get("errors")
    if isinstance(errors, list) and errors:
        properties["errors"] = errors[:5]
    return make_event(
        event_id=event_id(SOURCE, "whatsapp", status.id, status.status),
        channel=Channel.SOCIAL,
        source=SOURCE,
        kind="message_status",
        name=status.status,
        occurred_at=from_epoch(status.timestamp, f"{where}.timestamp"),
        received_at=utc(received_at),
        identifiers=identifiers([("whatsapp", number), ("phone", number)]),
        properties=properties,
        payload={**raw, "status": status.model_dump(mode="json", by_alias=True)},
    )


def _business(value: Value) -> dict[str, Any]:
    if value.metadata is None:
        return {}
    return {
        "phone_number_id": value.metadata.phone_number_id,
        "business_number": value.metadata.display_phone_number,
    }


def _text(kind: str, extra: dict[str, Any]) -> str | None:
    """The readable text of a message: body, caption, button or list reply title."""
    content = extra.get(kind)
    if not isinstance(content, dict):
        return None
    if kind == "interactive":
        for reply in ("button_reply", "list_reply"):
            chosen = content.get(reply)
            if isinstance(chosen, dict) and isinstance(chosen.get("title"), str):
                return str(chosen["title"])
        return None
    for key in ("body", "caption", "text"):
        if isinstance(content.get(key), str):
            return str(content[key])
    return None
