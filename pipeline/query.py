"""Pure helpers of the query API: timeline paging, freshness, Server-Sent Events framing.

No I/O; :mod:`pipeline.api` wires them to faust's web views.

**Freshness.** Every answer about a customer says how current it is, as a ``freshness``
object in JSON bodies and as the ``X-Omnistitch-Freshness`` header (the same facts as
``key=value`` pairs separated by ``;``)::

    {
      "served_at": "2026-03-01T12:00:03.120000Z",   # the answering worker's clock
      "context_version": 12,                        # the context's version (increments per change)
      "context_updated_at": "2026-03-01T12:00:01Z", # when the context stage wrote that version
      "context_age_s": 2.12,                        # served_at - context_updated_at
      "context_stage": {                            # the context stage of the worker that holds
        "topic": "<app>-customer-ops",              # this customer, on the customer's partition:
        "partition": 3,
        "processed_offset": 1234,                   # last op it finished (null: none yet)
        "end_offset": 1236,                         # the partition's end (next offset written)
        "lag": 1                                    # ops written but not yet processed
      },
      "identity": {"partition": 0, "offset": 56,    # the identity log position the id was
                   "event_time": "..."}             # resolved against (schemas.identity.Freshness)
    }

``lag`` 0 means every change decided so far for this customer's partition is in the
answer; the header reads ``served_at=...; version=12; updated_at=...; age_s=2.12;
context_offset=3:1234; context_lag=1; identity_offset=0:56`` (absent facts are left out).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

FRESHNESS_HEADER: Final = "X-Omnistitch-Freshness"
TIMELINE_DEFAULT_LIMIT: Final = 50
TIMELINE_MAX_LIMIT: Final = 500

Cursor = tuple[datetime, str]
Json = dict[str, Any]


class InvalidParam(ValueError):
    """A query parameter that cannot be used; ``field`` names it (HTTP 400)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def error_body(field: str, message: str) -> Json:
    """The API's 400 body: the connectors' ``errors`` list and the older top-level ``field``."""
    return {
        "error": "invalid_request",
        "message": message,
        "field": field,
        "errors": [{"field": field, "message": message}],
    }


# -- timeline paging ---------------------------------------------------------------------
def entry_order(entry: Mapping[str, Any]) -> Cursor:
    """The timeline's order key: ``(occurred_at, event_id)``; newest first is descending."""
    return (datetime.fromisoformat(str(entry["occurred_at"])), str(entry["event_id"]))


def encode_cursor(entry: Mapping[str, Any]) -> str:
    """An opaque cursor pointing just below ``entry`` (URL-safe base64 of its order key)."""
    raw = json.dumps([str(entry["occurred_at"]), str(entry["event_id"])], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Cursor:
    """The order key a cursor points below; :class:`InvalidParam` (``before``) if malformed."""
    bad = InvalidParam("before", "not a cursor returned as 'next' by this endpoint")
    if not cursor or len(cursor) > 1024:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, event_id = json.loads(raw)
        if not isinstance(at, str) or not isinstance(event_id, str):
            raise bad
        when = datetime.fromisoformat(at)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise bad from None
    if when.tzinfo is None:
        raise bad
    return when, event_id


def page_params(query: Mapping[str, str]) -> tuple[int, Cursor | None]:
    """``limit`` (1..500, default 50) and the decoded ``before`` cursor, validated."""
    raw_limit = query.get("limit")
    limit = TIMELINE_DEFAULT_LIMIT
    if raw_limit is not None:
        try:
            limit = int(raw_limit.strip())
        except ValueError:
            raise InvalidParam("limit", f"limit must be an integer, got {raw_limit!r}") from None
        if not 1 <= limit <= TIMELINE_MAX_LIMIT:
            raise InvalidParam("limit", f"limit must be between 1 and {TIMELINE_MAX_LIMIT}")
    before = query.get("before")
    return limit, None if before is None else decode_cursor(before)


def timeline_page(
    entries: Sequence[Mapping[str, Any]], limit: int, before: Cursor | None
) -> tuple[list[Mapping[str, Any]], str | None]:
    """One page of the timeline, newest first, and the cursor of the next (None: the last).

    The cursor is a position in the timeline's order, not an index: entries added above it
    meanwhile (new events) do not shift the pages below, so walking the cursors returns each
    entry exactly once.
    """
    ordered = sorted(entries, key=entry_order, reverse=True)
    if before is not None:
        ordered = [e for e in ordered if entry_order(e) < before]
    page = ordered[:limit]
    return page, encode_cursor(page[-1]) if len(ordered) > limit else None


# -- freshness ---------------------------------------------------------------------------
def freshness(
    ctx: Mapping[str, Any] | None,
    context_stage: Mapping[str, Any] | None,
    identity: Mapping[str, Any] | None,
    now: datetime,
) -> Json:
    """The ``freshness`` object of an answer (see the module doc)."""
    updated = None if ctx is None else ctx.get("updated_at")
    age = None
    if isinstance(updated, str):
        age = round((now - datetime.fromisoformat(updated)).total_seconds(), 3)
    return {
        "served_at": now.isoformat().replace("+00:00", "Z"),
        "context_version": None if ctx is None else ctx.get("version"),
        "context_updated_at": updated,
        "context_age_s": age,
        "context_stage": None if context_stage is None else dict(context_stage),
        "identity": None if identity is None else dict(identity),
    }


def freshness_header(fresh: Mapping[str, Any]) -> str:
    """The ``X-Omnistitch-Freshness`` value of a freshness object."""
    parts = {
        "served_at": fresh.get("served_at"),
        "version": fresh.get("context_version"),
        "updated_at": fresh.get("context_updated_at"),
        "age_s": fresh.get("context_age_s"),
    }
    stage = fresh.get("context_stage") or {}
    if stage.get("partition") is not None and stage.get("processed_offset") is not None:
        parts["context_offset"] = f"{stage['partition']}:{stage['processed_offset']}"
    parts["context_lag"] = stage.get("lag")
    identity = fresh.get("identity") or {}
    if identity.get("partition") is not None and identity.get("offset") is not None:
        parts["identity_offset"] = f"{identity['partition']}:{identity['offset']}"
    return "; ".join(f"{k}={v}" for k, v in parts.items() if v is not None)


def stage_position(
    topic: str, partition: int, processed: int | None, end: int | None
) -> dict[str, Any]:
    """``context_stage``: the last processed offset of a partition and what is left."""
    lag = None if end is None else max(0, end - (-1 if processed is None else processed) - 1)
    return {
        "topic": topic,
        "partition": partition,
        "processed_offset": processed,
        "end_offset": end,
        "lag": lag,
    }


# -- Server-Sent Events ------------------------------------------------------------------
def sse_event(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One SSE message. Compact JSON has no raw newline, so ``data`` is one line."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False))
    return ("\n".join(lines) + "\n\n").encode()


def sse_raw_event(event: str, data: bytes, event_id: str | None = None) -> bytes:
    """An SSE message whose data is already JSON (a ``customer.context`` value)."""
    head = f"event: {event}\n" + ("" if event_id is None else f"id: {event_id}\n")
    if b"\n" in data or b"\r" in data:  # not what pydantic writes, but never split a message
        data = json.dumps(json.loads(data), separators=(",", ":")).encode()
    return head.encode() + b"data: " + data + b"\n\n"


SSE_KEEPALIVE: Final = b": keep-alive\n\n"
