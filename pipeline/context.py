"""Customer-context merge: folding events, and other customers, into one context.

Pure logic, no I/O. Every operation is idempotent and order-insensitive where the inputs
allow it, because the pipeline delivers at least once and merges race with events:

* an event already on the timeline changes nothing (dedupe by event id);
* the timeline is ordered by ``occurred_at`` whatever the arrival order, and an interaction
  keeps its messages and pages in time order, so a late event lands in its place;
* a thread or visit is named by its earliest event, and one that a late event (or a
  merge) brings within the gap of another is joined with it; a chat transcript does not
  repeat the messages received live;
* each trait is reconciled by its configured rule (most recent, source priority, most
  frequent), with the provenance of the value chosen, the same in any order;
* absorbing a customer that was already absorbed changes nothing.

Bounds: the timeline keeps ``window_days`` (measured from the customer's newest event, so
a replay folds the same way as live traffic) and at most ``timeline_limit`` entries, each
with the event's properties trimmed (``text_limit`` characters, :data:`PROPERTY_ITEMS`
items); interactions likewise, and at most ``items_per_interaction`` messages, pages,
products and event ids each. What falls out is counted in ``archived``. ``routing`` and
``pending_triggers`` are derived from the rest after every change (:func:`derive`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

from pydantic import JsonValue

from pipeline.context_policy import ContextPolicy, TraitPolicy
from pipeline.context_state import (
    AgentRef,
    Archived,
    Consent,
    CustomerContext,
    Event,
    Interaction,
    Message,
    OpenConversation,
    PendingTrigger,
    RepeatContact,
    Routing,
    SelfServiceAttempt,
    Sighting,
    TimelineEntry,
    TraitValue,
    replace,
)
from pipeline.identity_state import Identifier
from pipeline.interactions import Contribution, classify
from schemas.context import InteractionKind, InteractionStatus
from schemas.events import Channel, RawEvent
from schemas.events import Identifier as PublicIdentifier

CONTACT_KINDS = ("conversation", "call", "email_thread")
#: Statuses that end an interaction; a later non-final status does not reopen it.
FINAL: frozenset[str] = frozenset(
    {"ended", "abandoned", "missed", "completed", "resolved", "unresolved"}
)
DROPPED: frozenset[str] = frozenset({"missed", "abandoned"})
#: Identifier types -> the channels they make a customer reachable on.
ADDRESS_CHANNELS = {
    "phone": ("sms", "voice"),
    "whatsapp": ("whatsapp",),
    "email": ("email",),
    "messenger_psid": ("messenger",),
}
#: Candidate values a most_frequent trait keeps counting.
MAX_CANDIDATES = 8
UNSUBSCRIBE_EVENTS = {"Unsubscribed": "opted_out", "Email Unsubscribed": "opted_out"}
SUBSCRIBE_EVENTS = {"Subscribed": "opted_in", "Email Subscribed": "opted_in"}


def _order(entry: TimelineEntry) -> tuple[datetime, str]:
    return (entry.occurred_at, entry.event_id)


#: Sort keys (C-level: the bounds run on every event).
_ENTRY_ORDER = attrgetter("occurred_at", "event_id")
_INTERACTION_ORDER = attrgetter("last_at", "interaction_id")
_ITEM_ORDER = attrgetter("at", "event_id")
_START_ORDER = attrgetter("started_at", "interaction_id")


def _union_identifiers(
    a: Sequence[Identifier], b: Iterable[Identifier | PublicIdentifier]
) -> list[Identifier]:
    """``a`` and ``b`` by key, sorted by type and value, a verified one kept over an
    unverified one. Most events bring only identifiers their customer's context lists
    already (as verified as they are): then the result is ``a``, when ``a`` is in that
    order already (every context's list is), without the sort."""
    held: dict[tuple[str, str], bool] = {}
    last: tuple[str, str] | None = None
    for ident in a:
        this = (ident.type, ident.value)
        if last is not None and this <= last:
            break  # not the canonical order: merged below
        held[this] = ident.verified
        last = this
    else:
        for new in b:
            verified = held.get((new.type, new.value))
            if verified is None or (new.verified and not verified):
                break
        else:
            return list(a)
    merged: dict[str, Identifier] = {}
    for ident in (*a, *map(Identifier.of, b)):
        prior = merged.get(ident.key)
        if prior is None or (ident.verified and not prior.verified):
            merged[ident.key] = ident
    return sorted(merged.values(), key=lambda i: (i.type, i.value))


# -- traits ------------------------------------------------------------------------------
def _rank(value: TraitValue, policy: TraitPolicy) -> int:
    order = policy.source_priority
    for name in (value.source, value.channel.value):
        if name in order:
            return len(order) - order.index(name)
    return 0


def _recency(value: TraitValue) -> tuple[datetime, str]:
    return (value.observed_at, value.event_id)


def _value_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def reconcile(current: TraitValue | None, seen: TraitValue, policy: TraitPolicy) -> TraitValue:
    """The value a trait keeps once ``seen`` (one assertion, or a whole other customer's
    reconciled value) is folded into ``current``."""
    if policy.rule == "most_frequent":
        return _most_frequent([v for v in (current, seen) if v is not None])
    if current is None:
        return replace(seen, rule=policy.rule)
    if policy.rule == "most_recent":
        newer = _recency(seen) > _recency(current)
        return replace(seen if newer else current, rule="most_recent")
    better = (_rank(seen, policy), *_recency(seen)) > (_rank(current, policy), *_recency(current))
    return replace(seen if better else current, rule="source_priority")


def _sighting(value: TraitValue) -> Sighting:
    return Sighting(
        event_id=value.event_id,
        channel=value.channel,
        source=value.source,
        observed_at=value.observed_at,
    )


def _sighting_order(s: Sighting) -> tuple[datetime, str]:
    return (s.observed_at, s.event_id)


def _most_frequent(values: Sequence[TraitValue]) -> TraitValue:
    """The most asserted value, ties to the one asserted most recently. Each candidate
    keeps its count and latest sighting, so the value chosen and its provenance are the
    same whatever order the assertions (or the customers holding them) are folded in."""
    counts: Counter[str] = Counter()
    latest: dict[str, Sighting] = {}
    for value in values:
        own = _value_key(value.value)
        counts.update(value.candidates or {own: value.sightings})
        for key, s in [*value.latest.items(), (own, _sighting(value))]:
            if key not in latest or _sighting_order(s) > _sighting_order(latest[key]):
                latest[key] = s

    def rank(key: str) -> tuple[int, datetime, str]:
        return (counts[key], *_sighting_order(latest[key]))

    ranked = sorted(latest, key=rank, reverse=True)[:MAX_CANDIDATES]
    top = latest[ranked[0]]
    return TraitValue(
        value=json.loads(ranked[0]),
        event_id=top.event_id,
        channel=top.channel,
        source=top.source,
        observed_at=top.observed_at,
        rule="most_frequent",
        sightings=counts[ranked[0]],
        candidates={k: counts[k] for k in ranked},
        latest={k: latest[k] for k in ranked},
    )


# -- consent -----------------------------------------------------------------------------
def consent_of(event: Event | RawEvent) -> Consent | None:
    """The consent decision an event carries: SMS STOP/START, an email unsubscribe."""
    p = event.properties
    status: str | None = None
    channel: str | None = None
    if event.kind == "consent":
        status, channel = str(p.get("status")), str(p.get("channel") or event.channel.value)
    elif event.kind == "track" and event.name in {**UNSUBSCRIBE_EVENTS, **SUBSCRIBE_EVENTS}:
        status = {**UNSUBSCRIBE_EVENTS, **SUBSCRIBE_EVENTS}[event.name]
        channel = str(p.get("channel") or "email")
    if status not in ("opted_out", "opted_in") or not channel:
        return None
    return Consent(
        channel=channel,
        status="opted_out" if status == "opted_out" else "opted_in",
        event_id=event.event_id,
        source=event.source,
        observed_at=event.occurred_at,
    )


def _newer_consent(a: Consent | None, b: Consent) -> bool:
    return a is None or (b.observed_at, b.event_id) > (a.observed_at, a.event_id)


# -- interactions ------------------------------------------------------------------------
#: Items of a list, and keys of an object, a timeline entry keeps of an event's properties.
PROPERTY_ITEMS = 50
#: A thread's or visit's id: ``<address or visitor>@<its first event, UTC>``.
_SESSION_ID = re.compile(r"^(.+)@(\d{8}T\d{6}Z)$")
#: A transcript line's message id: ``<transcript event id>#<line number>``.
_TRANSCRIPT_LINE = re.compile(r"#\d+$")


def entry_for(
    event: Event, interaction_id: str | None = None, text_limit: int = 2_000
) -> TimelineEntry:
    """The timeline entry an event contributes, its properties trimmed (:func:`_compact`)."""
    return TimelineEntry(
        event_id=event.event_id,
        channel=event.channel,
        source=event.source,
        kind=event.kind,
        name=event.name,
        occurred_at=event.occurred_at,
        interaction_id=interaction_id,
        identifiers=[i.key for i in event.identifiers],
        properties={k: _compact(v, text_limit) for k, v in event.properties.items()},
    )


def _compact(value: JsonValue, text_limit: int) -> JsonValue:
    """``value`` with strings clipped to ``text_limit`` and lists and objects cut to
    :data:`PROPERTY_ITEMS`: an entry stays small whatever the provider sent (a 64 KiB mail
    body, a chat's whole transcript); the interaction keeps the content."""
    if isinstance(value, str):
        return value[:text_limit]
    if isinstance(value, list):
        return [_compact(v, text_limit) for v in value[:PROPERTY_ITEMS]]
    if isinstance(value, dict):
        items = list(value.items())[:PROPERTY_ITEMS]
        return {k: _compact(v, text_limit) for k, v in items}
    return value


def _target(
    interactions: list[Interaction], c: Contribution, at: datetime
) -> tuple[str, Interaction | None]:
    """The id of the interaction a contribution joins, and that interaction if it exists."""
    if c.resolves_self_service:
        attempts = [
            i
            for i in interactions
            if i.kind == "self_service" and i.status == "unresolved" and i.last_at <= at
        ]
        best = max(attempts, key=lambda i: i.last_at, default=None)
        return (best.interaction_id, best) if best else ("", None)
    if c.gap is None:
        found = next((i for i in interactions if i.interaction_id == c.key), None)
        return c.key, found
    near = [
        i
        for i in interactions
        if _session_group(i.interaction_id) == c.key
        and i.started_at - c.gap <= at <= i.last_at + c.gap
    ]
    if near:
        best = min(near, key=lambda i: abs((i.last_at - at).total_seconds()))
        return best.interaction_id, best
    return _session_id(c.key, at), None


def _status(current: InteractionStatus | None, new: InteractionStatus | None, later: bool) -> Any:
    if new is None:
        return current
    if current is None:
        return new
    if current in FINAL and new not in FINAL:
        return current
    if new == "completed" and current in DROPPED:
        return current  # an abandoned call's "ended" does not make it a completed one ...
    if current == "completed" and new in DROPPED:
        return new  # ... whichever of the two arrives first
    if new in FINAL and current not in FINAL:
        return new
    return new if later else current


def _kind(i: Interaction, c: Contribution) -> InteractionKind:
    """A call that ends in IVR self-service with no agent on it is a self-service attempt."""
    if {i.kind, c.kind} == {"call", "self_service"}:
        return "call" if i.agent_id or c.agent_id else "self_service"
    return i.kind


def _agent_name(i: Interaction, c: Contribution) -> str | None:
    """The name of the contribution's agent; an event naming only the agent id (a chat
    message) keeps the name already known for that agent."""
    if c.agent_name is None and c.agent_id == i.agent_id:
        return i.agent_name
    return c.agent_name


def _recent_ids(ids: Iterable[str], limit: int) -> list[str]:
    """Each id once, the ``limit`` latest folded in."""
    return list(dict.fromkeys(ids))[-limit:]


def _unique(items: Iterable[Any]) -> list[Any]:
    """Messages, pages or products: each event once, oldest first."""
    return sorted({i.event_id: i for i in items}.values(), key=_ITEM_ORDER)


def _capped(items: Iterable[Any], limit: int) -> tuple[list[Any], int]:
    """Each event once, oldest first, the newest ``limit``; and how many fell off."""
    ordered = _unique(items)
    return ordered[-limit:], max(0, len(ordered) - limit)


def _capped_messages(messages: Iterable[Message], limit: int) -> tuple[list[Message], int]:
    return _capped(_without_replayed(_unique(messages)), limit)


def _without_replayed(messages: list[Message]) -> list[Message]:
    """Drop the transcript lines that repeat a message received live (same author and
    text): each live message cancels one such line, whichever of the two arrived first."""
    if not any("#" in m.event_id for m in messages):
        return messages  # no transcript lines (the usual case)
    live: Counter[tuple[str, str | None]] = Counter(
        (m.author, m.text) for m in messages if m.text and not _TRANSCRIPT_LINE.search(m.event_id)
    )
    kept: list[Message] = []
    for m in messages:
        key = (m.author, m.text)
        if live[key] > 0 and _TRANSCRIPT_LINE.search(m.event_id):
            live[key] -= 1
            continue
        kept.append(m)
    return kept


def _fold(
    found: Interaction | None,
    iid: str,
    c: Contribution,
    event: Event,
    policy: ContextPolicy,
) -> Interaction:
    at = event.occurred_at
    n = policy.items_per_interaction
    i = found or Interaction(
        interaction_id=iid,
        kind=c.kind,
        channel=c.channel,
        source=c.source,
        started_at=at,
        last_at=at,
        status="open" if c.kind in CONTACT_KINDS else None,
        self_service=c.self_service,
    )
    later = at >= i.last_at
    update: dict[str, Any] = {
        "kind": _kind(i, c),
        "started_at": min(i.started_at, at),
        "last_at": max(i.last_at, at),
        "status": _status(i.status, c.status, later),
        "event_ids": _recent_ids([*i.event_ids, event.event_id], n),
        "identifiers": sorted({*i.identifiers, *(x.key for x in event.identifiers)}),
    }
    for name in ("outcome", "agent_id", "queue", "subject", "transcript", "direction"):
        value = getattr(c, name)
        if value is not None and (later or getattr(i, name) is None):
            update[name] = value
    if c.agent_id is not None and (later or i.agent_id is None):
        update["agent_name"] = _agent_name(i, c)
    if c.self_service is not None:
        update["self_service"] = c.self_service
    if c.ivr_path and len(c.ivr_path) >= len(i.ivr_path):
        update["ivr_path"] = c.ivr_path[:n]
    elif c.ivr_step and (not i.ivr_path or i.ivr_path[-1] != c.ivr_step[-1]):
        update["ivr_path"] = [*i.ivr_path, *c.ivr_step][:n]
    dropped = i.dropped_items
    if c.messages:
        update["messages"], extra = _capped_messages([*i.messages, *c.messages], n)
        dropped += extra
    if c.page is not None:
        update["pages"], extra = _capped([*i.pages, c.page], n)
        dropped += extra
    if c.product is not None:
        update["products"], extra = _capped([*i.products, c.product], n)
        dropped += extra
    update["dropped_items"] = dropped
    return replace(i, **update)


def _merge_interactions(a: Interaction, b: Interaction, policy: ContextPolicy) -> Interaction:
    """One interaction seen by two customers before they merged (or two sessions of one
    thread or visit that a late event joined)."""
    first, last = (
        (a, b) if (a.last_at, a.interaction_id) <= (b.last_at, b.interaction_id) else (b, a)
    )
    n = policy.items_per_interaction
    merged = replace(
        last,
        **{
            "started_at": min(a.started_at, b.started_at),
            "status": _status(first.status, last.status, True),
            "ivr_path": max(a.ivr_path, b.ivr_path, key=len),
            "event_ids": _recent_ids([*first.event_ids, *last.event_ids], n),
            "identifiers": sorted({*a.identifiers, *b.identifiers}),
        },
    )
    update: dict[str, Any] = {}
    for name in ("outcome", "agent_id", "queue", "subject", "transcript", "direction"):
        if getattr(merged, name) is None:
            update[name] = getattr(first, name)
    if merged.self_service is None:
        update["self_service"] = first.self_service
    agent = update.get("agent_id", merged.agent_id)  # and the name known for that agent:
    names = [x.agent_name for x in (merged, first) if x.agent_id == agent and x.agent_name]
    update["agent_name"] = names[0] if names else None
    update["messages"], m = _capped_messages([*a.messages, *b.messages], n)
    update["pages"], p = _capped([*a.pages, *b.pages], n)
    update["products"], q = _capped([*a.products, *b.products], n)
    update["dropped_items"] = a.dropped_items + b.dropped_items + m + p + q
    return replace(merged, **update)


def _session_gap(i: Interaction, policy: ContextPolicy) -> timedelta | None:
    """The silence that ends a session (an SMS/WhatsApp/Messenger thread, a visit)."""
    if _session_group(i.interaction_id) is None:
        return None
    if i.kind == "visit":
        return timedelta(minutes=policy.visit_gap_minutes)
    if i.kind == "conversation":
        return timedelta(hours=policy.conversation_gap_hours)
    return None


def _session_id(group: str, started_at: datetime) -> str:
    return f"{group}@{started_at.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"


def _session_group(interaction_id: str) -> str | None:
    """The address or visitor of a session id (``sms:+1...@20261120T090000Z``); None for
    other ids, which may contain ``@`` too (``email:<message id>``, a chat's id)."""
    match = _SESSION_ID.match(interaction_id)
    return match.group(1) if match else None


def _coalesce(
    interactions: list[Interaction], policy: ContextPolicy, only: str | None = None
) -> tuple[list[Interaction], dict[str, str]]:
    """Sessions of one address or visitor (threads, visits) as the gap divides them now:
    joined when a late event filled the silence between them, or when two customers each
    held part of one; each named by its earliest event, whatever order events arrived in.
    Returns them with the renames (old id -> new id)."""
    out: list[Interaction] = []
    groups: dict[str, list[Interaction]] = {}
    for i in interactions:
        group = _session_group(i.interaction_id)
        if group is None or _session_gap(i, policy) is None or only not in (None, group):
            out.append(i)
        else:
            groups.setdefault(group, []).append(i)
    renames: dict[str, str] = {}
    for group, sessions in groups.items():
        for session, old_ids in _joined(sessions, policy):
            new_id = _session_id(group, session.started_at)
            renames |= {old: new_id for old in old_ids if old != new_id}
            out.append(replace(session, interaction_id=new_id))
    return out, renames


def _joined(
    sessions: list[Interaction], policy: ContextPolicy
) -> list[tuple[Interaction, list[str]]]:
    """One group's sessions, each joined with the next while no gap separates them; with
    the ids each joined session had."""
    sessions = sorted(sessions, key=lambda i: (i.started_at, i.interaction_id))
    joined = [(sessions[0], [sessions[0].interaction_id])]
    for nxt in sessions[1:]:
        current, old_ids = joined[-1]
        gap = _session_gap(nxt, policy)
        if gap is not None and nxt.started_at <= current.last_at + gap:
            merged = _merge_interactions(current, nxt, policy)
            joined[-1] = (merged, [*old_ids, nxt.interaction_id])
        else:
            joined.append((nxt, [nxt.interaction_id]))
    return joined


def _renamed(
    timeline: list[TimelineEntry], fired: list[str], renames: dict[str, str]
) -> tuple[list[TimelineEntry], list[str]]:
    """Timeline entries and fired trigger ids pointing at the joined sessions' ids."""
    if not renames:
        return timeline, fired
    entries = [
        replace(e, interaction_id=renames[e.interaction_id]) if e.interaction_id in renames else e
        for e in timeline
    ]
    triggers = []
    for tid in fired:
        rule, _, iid = tid.partition(":")
        triggers.append(trigger_id(rule, renames[iid]) if iid in renames else tid)
    return entries, list(dict.fromkeys(triggers))


# -- bounds ------------------------------------------------------------------------------
def _bound(ctx: CustomerContext, policy: ContextPolicy) -> CustomerContext:
    """Apply the window and caps; count what falls out in ``archived``."""
    timeline = sorted(ctx.timeline, key=_ENTRY_ORDER, reverse=True)
    return replace(ctx, **_bounded(timeline, ctx.interactions, ctx.archived, policy))


def _bounded(
    timeline: list[TimelineEntry],
    interactions: list[Interaction],
    a: Archived,
    policy: ContextPolicy,
) -> dict[str, Any]:
    """The window and caps applied to a timeline already in order (newest first): the
    fields that change, with what falls out counted in ``archived``."""
    if not timeline:
        return {}
    start = timeline[0].occurred_at - timedelta(days=policy.window_days)
    keep = timeline[: policy.timeline_limit]
    if keep[-1].occurred_at < start:  # the window ends inside the cap
        keep = [e for e in keep if e.occurred_at >= start]
    out = timeline[len(keep) :]  # newest first: what is kept is a prefix
    interactions = sorted(interactions, key=_INTERACTION_ORDER, reverse=True)
    kept_i = [i for i in interactions if i.last_at >= start][: policy.interaction_limit]
    gone_i = len(interactions) - len(kept_i)
    if not out and not gone_i:
        return {"timeline": timeline, "interactions": interactions}
    by_channel = Counter(a.by_channel)
    by_channel.update(e.channel.value for e in out)
    times = [t for t in (a.oldest_at, a.newest_at, *(e.occurred_at for e in out)) if t]
    archived = Archived(
        events=a.events + len(out),
        interactions=a.interactions + gone_i,
        by_channel=dict(by_channel),
        oldest_at=min(times, default=None),
        newest_at=max(times, default=None),
    )
    return {"timeline": keep, "interactions": kept_i, "archived": archived}


def _insert_newest_first(
    timeline: list[TimelineEntry], entry: TimelineEntry
) -> list[TimelineEntry]:
    """``timeline`` (newest first) with ``entry`` in its place, found by a binary search
    after every entry ordered above it (a live event is usually the newest: one step).
    Events of one customer arrive out of order across raw partitions; the linear walk this
    replaced took 29 µs to place an event 150 entries down."""
    order = _ENTRY_ORDER(entry)
    lo, hi = 0, len(timeline)
    if hi and _ENTRY_ORDER(timeline[0]) > order:  # not the newest: search below the first
        lo = 1
        while lo < hi:
            mid = (lo + hi) // 2
            if _ENTRY_ORDER(timeline[mid]) > order:
                lo = mid + 1
            else:
                hi = mid
    return [*timeline[:lo], entry, *timeline[lo:]]


def _too_old(ctx: CustomerContext, at: datetime, event_id: str, policy: ContextPolicy) -> bool:
    """An event older than anything the bounded timeline keeps: it may be a duplicate that
    already fell out, so it is not counted again."""
    if not ctx.timeline:
        return False
    newest = ctx.timeline[0].occurred_at
    if at < newest - timedelta(days=policy.window_days):
        return True
    return len(ctx.timeline) >= policy.timeline_limit and (at, event_id) < _order(ctx.timeline[-1])


# -- folding -----------------------------------------------------------------------------
def apply_event(
    ctx: CustomerContext | None,
    customer_id: str,
    event: Event | RawEvent,
    identifiers: Sequence[Identifier | PublicIdentifier],
    policy: ContextPolicy,
    *,
    derived: bool = True,
) -> CustomerContext | None:
    """Fold one event into a customer's context; ``None`` when it changes nothing.

    The context stage passes the event as it decoded it (``context_state.Event``); the
    public model is converted (tests, tools). ``derived=False`` leaves ``routing`` and
    ``pending_triggers`` as they were, for a caller that folds several events of a customer
    and derives them once (:func:`derive`) before the context is read or written: the
    context stage derives each context once per batch.
    """
    ctx = ctx or CustomerContext(customer_id=customer_id)
    event = Event.of(event)
    if event.event_id in [e.event_id for e in ctx.timeline]:
        return None
    if _too_old(ctx, event.occurred_at, event.event_id, policy):
        return None
    traits = dict(ctx.traits)
    for name, value in event.traits.items():
        seen = TraitValue(
            value=value,
            event_id=event.event_id,
            channel=event.channel,
            source=event.source,
            observed_at=event.occurred_at,
        )
        traits[name] = reconcile(traits.get(name), seen, policy.trait(name))
    consent = dict(ctx.consent)
    if (decision := consent_of(event)) is not None and _newer_consent(
        consent.get(decision.channel), decision
    ):
        consent[decision.channel] = decision
    placed, iid = _place(ctx, event, policy)
    counts = dict(ctx.channel_counts)  # a Counter's construction costs 1.1 µs more
    counts[event.channel.value] = counts.get(event.channel.value, 0) + 1
    # Every stored timeline is newest first (each context passed through the bounds), so
    # the entry is placed, not the whole timeline sorted again.
    entry = entry_for(event, iid, policy.text_limit)
    timeline = _insert_newest_first(placed["timeline"], entry)
    updated = replace(
        ctx,
        **{
            **placed,
            "identifiers": _union_identifiers(ctx.identifiers, identifiers),
            "traits": traits,
            "consent": consent,
            "channel_counts": counts,
            "first_seen": min(filter(None, (ctx.first_seen, event.occurred_at))),
            "last_seen": max(filter(None, (ctx.last_seen, event.occurred_at))),
            "version": ctx.version + 1,
            "timeline": timeline,
            **_bounded(timeline, placed["interactions"], ctx.archived, policy),
        },
    )
    return derive(updated, policy) if derived else updated


def _place(
    ctx: CustomerContext, event: Event, policy: ContextPolicy
) -> tuple[dict[str, Any], str | None]:
    """The interactions once ``event`` is folded into the one it belongs to (and sessions
    it joins are coalesced: timeline and fired triggers follow), and that interaction."""
    placed: dict[str, Any] = {
        "interactions": ctx.interactions,
        "timeline": ctx.timeline,
        "fired_triggers": ctx.fired_triggers,
    }
    contribution = classify(event, policy)
    if contribution is None:
        return placed, None
    iid, found = _target(ctx.interactions, contribution, event.occurred_at)
    if not iid:
        return placed, None
    folded = _fold(found, iid, contribution, event, policy)
    interactions = [i for i in ctx.interactions if i.interaction_id != iid] + [folded]
    if contribution.gap is not None:
        interactions, renames = _coalesce(interactions, policy, only=contribution.key)
        iid = renames.get(iid, iid)
        placed["timeline"], placed["fired_triggers"] = _renamed(
            ctx.timeline, ctx.fired_triggers, renames
        )
    placed["interactions"] = interactions
    return placed, iid


def absorb(
    into: CustomerContext, other: CustomerContext, policy: ContextPolicy
) -> CustomerContext | None:
    """Merge a merged-away customer's context into the survivor; ``None`` if already done."""
    if other.customer_id == into.customer_id or other.customer_id in into.merged_from:
        return None
    merged = _combine(into, other, policy)
    merged_from = sorted({*merged.merged_from, other.customer_id})
    return replace(merged, merged_from=merged_from)


def restore(into: CustomerContext, part: CustomerContext, policy: ContextPolicy) -> CustomerContext:
    """Fold the part of a split customer's context that belongs to ``into``."""
    return _combine(into, part, policy)


def _combine(
    into: CustomerContext, other: CustomerContext, policy: ContextPolicy
) -> CustomerContext:
    ours = {e.event_id for e in into.timeline}
    overlap = Counter(e.channel.value for e in other.timeline if e.event_id in ours)
    counts = Counter(into.channel_counts)
    counts.update(other.channel_counts)
    counts.subtract(overlap)
    traits = dict(into.traits)
    for name, value in other.traits.items():
        traits[name] = reconcile(traits.get(name), value, policy.trait(name))
    consent = dict(into.consent)
    for channel, decision in other.consent.items():
        if _newer_consent(consent.get(channel), decision):
            consent[channel] = decision
    entries = {e.event_id: e for e in (*into.timeline, *other.timeline)}
    by_id = {i.interaction_id: i for i in into.interactions}
    for i in other.interactions:
        prior = by_id.get(i.interaction_id)
        by_id[i.interaction_id] = i if prior is None else _merge_interactions(prior, i, policy)
    interactions, renames = _coalesce(list(by_id.values()), policy)
    timeline, fired = _renamed(
        list(entries.values()), [*into.fired_triggers, *other.fired_triggers], renames
    )
    a, b = into.archived, other.archived
    by_channel = Counter(a.by_channel)
    by_channel.update(b.by_channel)
    oldest = [t for t in (a.oldest_at, b.oldest_at) if t]
    newest = [t for t in (a.newest_at, b.newest_at) if t]
    seen = [t for t in (into.first_seen, other.first_seen) if t is not None]
    last = [t for t in (into.last_seen, other.last_seen) if t is not None]
    combined = replace(
        into,
        **{
            "identifiers": _union_identifiers(into.identifiers, other.identifiers),
            "traits": traits,
            "consent": consent,
            "timeline": timeline,
            "interactions": interactions,
            "channel_counts": {k: v for k, v in counts.items() if v > 0},
            "archived": Archived(
                events=a.events + b.events,
                interactions=a.interactions + b.interactions,
                by_channel=dict(by_channel),
                oldest_at=min(oldest, default=None),
                newest_at=max(newest, default=None),
            ),
            "fired_triggers": _recent_fired(fired, policy),
            "merged_from": sorted({*into.merged_from, *other.merged_from}),
            "first_seen": min(seen) if seen else None,
            "last_seen": max(last) if last else None,
            "version": max(into.version, other.version) + 1,
        },
    )
    return derive(_bound(combined, policy), policy)


def _recent_fired(ids: Iterable[str], policy: ContextPolicy) -> list[str]:
    unique = list(dict.fromkeys(ids))
    return unique[-policy.fired_trigger_limit :]


def split_context(
    ctx: CustomerContext,
    pieces: dict[str, list[str]],
    id_map: dict[str, str],
    policy: ContextPolicy,
) -> dict[str, CustomerContext]:
    """Divide a customer's context among the pieces of a split.

    Each timeline entry and interaction follows the piece that holds its identifiers, and
    each trait and consent decision follows the event that set it. Whatever none of the
    surviving identifiers claims (the removed link's own event, say) stays with the split
    customer's piece, as do the counts the bounded timeline no longer itemises and the
    traits set by events it no longer holds. A consent decision whose event it no longer
    holds goes to every piece: better to ask again than to message someone who said stop.
    """
    home = ctx.customer_id if ctx.customer_id in pieces else min(pieces, default=ctx.customer_id)
    owner_of = {key: cid for cid, keys in pieces.items() for key in keys}

    def owner(keys: Iterable[str]) -> str:
        return next((owner_of[k] for k in keys if k in owner_of), home)

    entries: dict[str, list[TimelineEntry]] = {cid: [] for cid in {*pieces, home}}
    for entry in ctx.timeline:
        entries[owner(entry.identifiers)].append(entry)
    itemised = {e.event_id for e in ctx.timeline}
    unlisted = Counter(ctx.channel_counts)
    unlisted.subtract(e.channel.value for e in ctx.timeline)
    out = {}
    for cid, mine in entries.items():
        event_ids = {e.event_id for e in mine}
        counts = Counter(e.channel.value for e in mine)
        times = [e.occurred_at for e in mine]
        if cid == home:
            counts.update({k: v for k, v in unlisted.items() if v > 0})
            times += [t for t in (ctx.archived.oldest_at, ctx.archived.newest_at) if t]
        part = CustomerContext(
            customer_id=cid,
            identifiers=[i for i in ctx.identifiers if owner_of.get(i.key) == cid],
            traits={
                n: t
                for n, t in ctx.traits.items()
                if t.event_id in event_ids or (cid == home and t.event_id not in itemised)
            },
            consent={
                n: c
                for n, c in ctx.consent.items()
                if c.event_id in event_ids or c.event_id not in itemised
            },
            timeline=mine,
            interactions=[i for i in ctx.interactions if owner(i.identifiers) == cid],
            channel_counts=dict(counts),
            archived=ctx.archived if cid == home else Archived(),
            fired_triggers=ctx.fired_triggers,
            merged_from=sorted(m for m in ctx.merged_from if id_map.get(m) == cid and m != cid),
            first_seen=min(times, default=None),
            last_seen=max(times, default=None),
            version=ctx.version + 1,
        )
        out[cid] = derive(part, policy)
    return out


# -- derived context ---------------------------------------------------------------------
def _addresses(ctx: CustomerContext) -> list[str]:
    reachable: dict[str, None] = {}
    for ident in ctx.identifiers:
        for channel in ADDRESS_CHANNELS.get(ident.type, ()):
            reachable[channel] = None
    return list(reachable)


def _medium(i: Interaction) -> str:
    if i.channel is Channel.SOCIAL:
        return i.interaction_id.split(":", 1)[0].replace("messenger_psid", "messenger")
    return i.channel.value


def _language(ctx: CustomerContext) -> str | None:
    for name in ("language", "locale", "preferred_language"):
        value = ctx.traits.get(name)
        if value is not None and isinstance(value.value, str) and len(value.value) >= 2:
            return value.value[:2].lower()
    return None


def _vip(ctx: CustomerContext, policy: ContextPolicy) -> bool:
    vip = ctx.traits.get("vip")
    tier = ctx.traits.get("tier")
    tiers = {t.lower() for t in policy.vip_tiers}
    return bool(vip and vip.value is True) or bool(
        tier and isinstance(tier.value, str) and tier.value.lower() in tiers
    )


def derive(
    ctx: CustomerContext, policy: ContextPolicy, updated_at: datetime | None = None
) -> CustomerContext:
    """Recompute ``routing`` and ``pending_triggers`` from the rest of the context (and
    stamp ``updated_at``, when given, in the same copy)."""
    by_start = sorted(ctx.interactions, key=_START_ORDER)
    contacts = [i for i in by_start if i.kind in CONTACT_KINDS]
    threads: dict[str, Interaction] = {}
    for i in contacts:
        if i.kind == "conversation":
            thread = _session_group(i.interaction_id) or i.interaction_id
            threads[thread] = i  # the latest thread per address
    open_conversations = [
        OpenConversation(
            interaction_id=i.interaction_id,
            channel=i.channel,
            since=i.started_at,
            last_at=i.last_at,
            agent_id=i.agent_id,
        )
        for i in sorted(threads.values(), key=lambda i: i.last_at, reverse=True)
        if i.status == "open"
    ]
    with_agent = [i for i in ctx.interactions if i.agent_id]
    last = max(with_agent, key=_INTERACTION_ORDER, default=None)
    last_agent = (
        None
        if last is None or last.agent_id is None
        else AgentRef(
            agent_id=last.agent_id,
            agent_name=last.agent_name,
            channel=last.channel,
            interaction_id=last.interaction_id,
            at=last.last_at,
        )
    )
    opted_out = {c for c, d in ctx.consent.items() if d.status == "opted_out"}
    used: dict[str, datetime] = {}
    for i in ctx.interactions:
        medium = _medium(i)
        used[medium] = max(used.get(medium, i.last_at), i.last_at)
    reachable = [c for c in _addresses(ctx) if c not in opted_out]
    reachable.sort(key=lambda c: (-(used[c].timestamp()) if c in used else 0.0, c))
    routing = Routing(
        open_conversations=open_conversations,
        last_agent=last_agent,
        repeat_contact=_repeat_contact(contacts, policy),
        unresolved_self_service=_unresolved_self_service(by_start, contacts, policy),
        language=_language(ctx),
        vip=_vip(ctx, policy),
        contactable_channels=reachable,
    )
    update: dict[str, Any] = {
        "routing": routing,
        "pending_triggers": _pending(ctx, by_start, policy),
    }
    if updated_at is not None:
        update["updated_at"] = updated_at
    return replace(ctx, **update)


def _repeat_contact(contacts: list[Interaction], policy: ContextPolicy) -> RepeatContact | None:
    inbound = [i for i in contacts if i.direction != "outbound"]
    if len(inbound) < 2:
        return None
    latest, previous = inbound[-1], inbound[-2]
    gap_h = max(0.0, (latest.started_at - previous.last_at).total_seconds() / 3600)
    if gap_h > policy.repeat_contact_hours:
        return None
    return RepeatContact(
        interaction_id=latest.interaction_id,
        previous_interaction_id=previous.interaction_id,
        previous_channel=previous.channel,
        previous_status=previous.status,
        hours_since_previous=round(gap_h, 3),
        at=latest.started_at,
    )


def _unresolved_self_service(
    by_start: list[Interaction], contacts: list[Interaction], policy: ContextPolicy
) -> SelfServiceAttempt | None:
    attempts = [i for i in by_start if i.kind == "self_service"]
    if not attempts or attempts[-1].status != "unresolved":
        return None
    attempt = attempts[-1]
    after = [c for c in contacts if c.started_at >= attempt.last_at]
    window = timedelta(minutes=policy.self_service_minutes)
    if after and after[0].started_at - attempt.last_at > window:
        return None
    return SelfServiceAttempt(
        interaction_id=attempt.interaction_id,
        channel=attempt.channel,
        what=attempt.self_service or "self-service",
        at=attempt.last_at,
        before_interaction_id=after[0].interaction_id if after else None,
    )


def trigger_id(rule: str, interaction_id: str) -> str:
    return f"{rule}:{interaction_id}"


def _pending(
    ctx: CustomerContext, by_start: list[Interaction], policy: ContextPolicy
) -> list[PendingTrigger]:
    rules = policy.triggers
    fired = set(ctx.fired_triggers)
    pending: list[PendingTrigger] = []
    if rules.checkout_abandoned_minutes:
        activity = [(p.at, p.action, i.interaction_id) for i in by_start for p in i.products]
        checkouts = [a for a in activity if a[1] == "checkout_started"]
        if checkouts:
            at, _, visit = max(checkouts)
            if not any(a[1] == "order_completed" and a[0] >= at for a in activity):
                due = at + timedelta(minutes=rules.checkout_abandoned_minutes)
                pending.append(
                    PendingTrigger(rule="checkout_abandoned", interaction_id=visit, due_at=due)
                )
    if rules.dropped_call_minutes:
        calls = [i for i in by_start if i.kind == "call"]
        dropped = [i for i in calls if i.status in DROPPED and i.direction != "outbound"]
        if dropped:
            call = dropped[-1]
            answered_after = any(
                c.started_at > call.started_at and c.status in ("answered", "completed")
                for c in calls
            )
            if not answered_after:
                due = call.last_at + timedelta(minutes=rules.dropped_call_minutes)
                pending.append(
                    PendingTrigger(
                        rule="dropped_call_no_callback",
                        interaction_id=call.interaction_id,
                        due_at=due,
                    )
                )
    return [p for p in pending if trigger_id(p.rule, p.interaction_id) not in fired]
