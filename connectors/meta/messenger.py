"""Messenger Platform notifications (``object: page``) to raw events. Pure.

Each ``entry[].messaging[]`` item is one event between a person (their page-scoped id,
PSID) and the page:

* ``message``: a ``message`` event, id ``meta:messenger:<mid>``; from the sender, or, for
  an echo of the page's own message (``is_echo``), about the recipient;
* ``postback`` (a button tap): a ``postback`` event, id ``meta:messenger:postback:<mid>``
  (or a hash of the item when Meta gives no ``mid``);
* ``delivery`` and ``read``: ``message_status`` events named ``delivered`` / ``read``, id
  ``meta:messenger:<delivered|read>:<psid>:<watermark>``.

The person becomes a ``messenger_psid`` identifier. Other items (reactions, referrals,
opt-ins) are skipped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from connectors.mapping import (
    content_hash,
    event_id,
    from_epoch,
    identifiers,
    make_event,
    parse_model,
    utc,
)
from connectors.meta.notification import Id, Model, Notification
from schemas.events import Channel, RawEvent

SOURCE = "meta"
OBJECT = "page"


class Party(Model):
    id: Id


class Message(Model):
    mid: Id
    text: str | None = None
    is_echo: bool = False


class Postback(Model):
    mid: Id | None = None
    title: str | None = None
    payload: str | None = None


class Watermark(Model):
    watermark: int


class Messaging(Model):
    sender: Party
    recipient: Party
    timestamp: int | None = None
    message: Message | None = None
    postback: Postback | None = None
    delivery: Watermark | None = None
    read: Watermark | None = None


def to_raw_events(notification: Notification, received_at: datetime) -> list[RawEvent]:
    """Every message, postback, delivery and read of a Messenger notification."""
    events: list[RawEvent] = []
    for e, entry in enumerate(notification.entry):
        for i, item in enumerate(entry.messaging):
            where = f"entry.{e}.messaging.{i}"
            event = _event(parse_model(Messaging, item, where), item, entry.id, where, received_at)
            if event is not None:
                events.append(event)
    return events


def _event(
    item: Messaging, raw: dict[str, Any], page_id: str, where: str, received_at: datetime
) -> RawEvent | None:
    received = utc(received_at)
    occurred = from_epoch(item.timestamp, f"{where}.timestamp") if item.timestamp else received
    person = item.sender.id
    properties: dict[str, Any] = {"page_id": page_id}
    name: str | None = None
    if item.message is not None:
        echo = item.message.is_echo
        person = item.recipient.id if echo else item.sender.id
        kind = "message"
        eid = event_id(SOURCE, "messenger", item.message.mid)
        properties |= {
            "direction": "outbound" if echo else "inbound",
            "message_id": item.message.mid,
            "text": item.message.text,
        }
    elif item.postback is not None:
        kind = "postback"
        eid = event_id(SOURCE, "messenger", "postback", item.postback.mid or content_hash(raw))
        properties |= {"title": item.postback.title, "payload": item.postback.payload}
        name = item.postback.title
    elif item.delivery is not None or item.read is not None:
        kind = "message_status"
        name = "delivered" if item.delivery is not None else "read"
        mark = item.delivery or item.read
        assert mark is not None
        eid = event_id(SOURCE, "messenger", name, person, str(mark.watermark))
        properties |= {"status": name, "watermark": mark.watermark}
    else:
        return None
    return make_event(
        event_id=eid,
        channel=Channel.SOCIAL,
        source=SOURCE,
        kind=kind,
        name=name,
        occurred_at=occurred,
        received_at=received,
        identifiers=identifiers([("messenger_psid", person)]),
        properties=properties,
        payload={"page_id": page_id, **raw},
    )
