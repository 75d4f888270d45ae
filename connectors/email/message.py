"""An inbound mail (RFC 5322 bytes) to a raw event. Pure: the standard library's parser.

A ``message`` event on the ``email`` channel from the ``From`` address, id
``email:<Message-ID without brackets>`` (a hash of the content when the mail has none),
with ``subject``, ``to``, ``cc``, ``message_id``, ``in_reply_to``, ``references`` and
``thread_id`` (the first of References, else In-Reply-To, else its own id) and the text
body (the ``text/plain`` part, else the HTML part stripped of tags; at most 64 KiB).
Attachments are listed (name, type, size), not kept. What is not mail (no header block,
no parseable ``From``) raises :class:`NotMail`.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Sequence
from datetime import datetime
from email import policy
from email.errors import HeaderParseError, MessageError
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr
from typing import Any

from connectors.mapping import event_id, identifiers, make_event, utc
from schemas.events import Channel, RawEvent

SOURCE = "email"
MAX_TEXT = 64 * 1024
_MAX_HEADERS = 200
_MSG_ID = re.compile(r"<([^<>\s]{1,250})>")
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


class NotMail(ValueError):
    """The data is not an internet message we can place on a customer."""


def to_raw_event(
    content: bytes, mail_from: str | None, rcpt_tos: Sequence[str], received_at: datetime
) -> RawEvent:
    """Parse ``content`` (the DATA of an SMTP transaction) and map it."""
    try:
        msg = BytesParser(policy=policy.default).parsebytes(content)
        assert isinstance(msg, EmailMessage)  # policy.default builds EmailMessage
        return _map(msg, content, mail_from, rcpt_tos, received_at)
    except (HeaderParseError, MessageError, UnicodeError, LookupError) as exc:
        raise NotMail(f"unreadable message: {exc}"[:200]) from None


def _map(
    msg: EmailMessage,
    content: bytes,
    mail_from: str | None,
    rcpt_tos: Sequence[str],
    received_at: datetime,
) -> RawEvent:
    sender = _address(msg.get("From"))
    if sender is None:
        raise NotMail("no From header with an address: not an RFC 5322 message")
    message_id = _first_id(msg.get("Message-ID"))
    in_reply_to = _first_id(msg.get("In-Reply-To"))
    references = _MSG_ID.findall(str(msg.get("References") or ""))[:100]
    received = utc(received_at)
    eid = (
        event_id(SOURCE, message_id)
        if message_id
        else event_id(SOURCE, "sha256", hashlib.sha256(content).hexdigest())
    )
    text, attachments = _body(msg)
    name, _ = parseaddr(str(msg.get("From")))
    properties: dict[str, Any] = {
        "direction": "inbound",
        "subject": str(msg.get("Subject") or "")[:998],
        "from": sender,
        "to": _addresses(msg.get_all("To")),
        "cc": _addresses(msg.get_all("Cc")),
        "message_id": message_id,
        "in_reply_to": in_reply_to,
        "references": references,
        "thread_id": (references[0] if references else in_reply_to) or message_id,
        "text": text,
        "attachments": attachments,
    }
    return make_event(
        event_id=eid,
        channel=Channel.EMAIL,
        source=SOURCE,
        kind="message",
        occurred_at=_date(msg.get("Date")) or received,
        received_at=received,
        identifiers=identifiers([("email", sender)]),
        traits={"name": name} if name else {},
        properties=properties,
        payload={
            "mail_from": mail_from,
            "rcpt_tos": list(rcpt_tos),
            "headers": [[k, str(v)[:2000]] for k, v in list(msg.items())[:_MAX_HEADERS]],
        },
    )


def _address(header: object) -> str | None:
    if header is None:
        return None
    for _name, address in getaddresses([str(header)]):
        if "@" in address and len(address) <= 320:
            return address
    return None


def _addresses(headers: Sequence[object] | None) -> list[str]:
    found = getaddresses([str(h) for h in headers or []])
    return [address for _, address in found if "@" in address][:100]


def _first_id(header: object) -> str | None:
    if header is None:
        return None
    match = _MSG_ID.search(str(header))
    if match:
        return match.group(1)
    bare = str(header).strip()
    return bare if 0 < len(bare) <= 250 and " " not in bare else None


def _date(header: object) -> datetime | None:
    stamp = getattr(header, "datetime", None)
    return utc(stamp) if isinstance(stamp, datetime) else None


def _body(msg: EmailMessage) -> tuple[str, list[dict[str, Any]]]:
    part = msg.get_body(preferencelist=("plain", "html"))
    text = ""
    if part is not None:
        try:
            raw = part.get_content()
        except (LookupError, UnicodeError):  # unknown or lying charset: decode leniently
            raw = part.get_payload(decode=True) or b""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        if part.get_content_subtype() == "html":
            text = _SPACE.sub(" ", html.unescape(_TAG.sub(" ", text))).strip()
    attachments = [
        {
            "filename": a.get_filename(),
            "content_type": a.get_content_type(),
            "size": len(a.get_payload(decode=True) or b""),
        }
        for a in list(msg.iter_attachments())[:50]
    ]
    return text[:MAX_TEXT], attachments
