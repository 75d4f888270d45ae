"""Customer-context merge: folding events, and other customers, into one context.

Pure logic, no I/O. Every operation is idempotent and order-insensitive where the inputs
allow it, because the pipeline delivers at least once and merges race with events:

* an event already on the timeline changes nothing (dedupe by event id);
* the timeline is ordered by ``occurred_at`` whatever the arrival order;
* a trait keeps the value of the latest event (ties broken by event id);
* absorbing a customer that was already absorbed changes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from schemas.context import CustomerContext, TimelineEntry, TraitValue
from schemas.events import Identifier, RawEvent


def _order(entry: TimelineEntry) -> tuple[float, str]:
    return (entry.occurred_at.timestamp(), entry.event_id)


def _union_identifiers(a: Iterable[Identifier], b: Iterable[Identifier]) -> list[Identifier]:
    merged: dict[str, Identifier] = {}
    for ident in (*a, *b):
        prior = merged.get(ident.key)
        if prior is None or (ident.verified and not prior.verified):
            merged[ident.key] = ident
    return sorted(merged.values(), key=lambda i: (i.type, i.value))


def _newer(candidate: TraitValue, current: TraitValue | None) -> bool:
    if current is None:
        return True
    return (candidate.observed_at, candidate.event_id) > (current.observed_at, current.event_id)


def entry_for(event: RawEvent) -> TimelineEntry:
    """The timeline entry an event contributes."""
    return TimelineEntry(
        event_id=event.event_id,
        channel=event.channel,
        source=event.source,
        kind=event.kind,
        name=event.name,
        occurred_at=event.occurred_at,
        identifiers=[i.key for i in event.identifiers],
        properties=event.properties,
    )


def apply_event(
    ctx: CustomerContext | None,
    customer_id: str,
    event: RawEvent,
    identifiers: Sequence[Identifier],
    timeline_limit: int,
) -> CustomerContext | None:
    """Fold one event into a customer's context; ``None`` when it changes nothing."""
    ctx = ctx or CustomerContext(customer_id=customer_id)
    if any(e.event_id == event.event_id for e in ctx.timeline):
        return None
    timeline = ctx.timeline
    if len(timeline) >= timeline_limit and _order(entry_for(event)) < _order(timeline[-1]):
        # Older than anything the capped timeline keeps: it may be a duplicate that already
        # fell out, so it is not counted again.
        return None
    traits = dict(ctx.traits)
    for name, value in event.traits.items():
        candidate = TraitValue(
            value=value,
            event_id=event.event_id,
            channel=event.channel,
            observed_at=event.occurred_at,
        )
        if _newer(candidate, traits.get(name)):
            traits[name] = candidate
    counts = Counter(ctx.channel_counts)
    counts[event.channel.value] += 1
    entries = sorted([*timeline, entry_for(event)], key=_order, reverse=True)[:timeline_limit]
    return ctx.model_copy(
        update={
            "identifiers": _union_identifiers(ctx.identifiers, identifiers),
            "traits": traits,
            "timeline": entries,
            "channel_counts": dict(counts),
            "first_seen": min(filter(None, (ctx.first_seen, event.occurred_at))),
            "last_seen": max(filter(None, (ctx.last_seen, event.occurred_at))),
            "version": ctx.version + 1,
        }
    )


def absorb(
    into: CustomerContext, other: CustomerContext, timeline_limit: int
) -> CustomerContext | None:
    """Merge a merged-away customer's context into the survivor; ``None`` if already done."""
    if other.customer_id == into.customer_id or other.customer_id in into.merged_from:
        return None
    merged = _combine(into, other, timeline_limit)
    merged_from = sorted({*merged.merged_from, other.customer_id})
    return merged.model_copy(update={"merged_from": merged_from})


def restore(into: CustomerContext, part: CustomerContext, timeline_limit: int) -> CustomerContext:
    """Fold the part of a split customer's context that belongs to ``into``."""
    return _combine(into, part, timeline_limit)


def _combine(into: CustomerContext, other: CustomerContext, timeline_limit: int) -> CustomerContext:
    ours = {e.event_id for e in into.timeline}
    overlap = Counter(e.channel.value for e in other.timeline if e.event_id in ours)
    counts = Counter(into.channel_counts)
    counts.update(other.channel_counts)
    counts.subtract(overlap)
    traits = dict(into.traits)
    for name, value in other.traits.items():
        if _newer(value, traits.get(name)):
            traits[name] = value
    entries = {e.event_id: e for e in (*into.timeline, *other.timeline)}
    timeline = sorted(entries.values(), key=_order, reverse=True)[:timeline_limit]
    seen = [t for t in (into.first_seen, other.first_seen) if t is not None]
    last = [t for t in (into.last_seen, other.last_seen) if t is not None]
    return into.model_copy(
        update={
            "identifiers": _union_identifiers(into.identifiers, other.identifiers),
            "traits": traits,
            "timeline": timeline,
            "channel_counts": {k: v for k, v in counts.items() if v > 0},
            "merged_from": sorted({*into.merged_from, *other.merged_from}),
            "first_seen": min(seen) if seen else None,
            "last_seen": max(last) if last else None,
            "version": max(into.version, other.version) + 1,
        }
    )


def split_context(
    ctx: CustomerContext, pieces: dict[str, list[str]], id_map: dict[str, str]
) -> dict[str, CustomerContext]:
    """Divide a customer's context among the pieces of a split.

    Each timeline entry follows the piece that holds its event's identifiers, and each
    trait follows the event that set it. An entry none of whose identifiers survived the
    split (the removed link's own event, say) stays with the split customer's piece, as
    do counts the capped timeline no longer itemises.
    """
    home = ctx.customer_id if ctx.customer_id in pieces else min(pieces, default=ctx.customer_id)
    owner_of = {key: cid for cid, keys in pieces.items() for key in keys}
    entries: dict[str, list[TimelineEntry]] = {cid: [] for cid in {*pieces, home}}
    for entry in ctx.timeline:
        cid = next((owner_of[k] for k in entry.identifiers if k in owner_of), home)
        entries[cid].append(entry)
    itemised = Counter(e.channel.value for e in ctx.timeline)
    unlisted = Counter(ctx.channel_counts)
    unlisted.subtract(itemised)
    out = {}
    for cid, mine in entries.items():
        event_ids = {e.event_id for e in mine}
        counts = Counter(e.channel.value for e in mine)
        if cid == home:
            counts.update({k: v for k, v in unlisted.items() if v > 0})
        out[cid] = CustomerContext(
            customer_id=cid,
            identifiers=[i for i in ctx.identifiers if owner_of.get(i.key) == cid],
            traits={n: t for n, t in ctx.traits.items() if t.event_id in event_ids},
            timeline=mine,
            channel_counts=dict(counts),
            merged_from=sorted(m for m in ctx.merged_from if id_map.get(m) == cid and m != cid),
            first_seen=min((e.occurred_at for e in mine), default=None),
            last_seen=max((e.occurred_at for e in mine), default=None),
            version=ctx.version + 1,
        )
    return out
