from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.context import _union_identifiers, absorb, apply_event
from pipeline.context_policy import ContextPolicy
from pipeline.context_state import CustomerContext
from pipeline.identity_state import Identifier as StoredIdentifier
from schemas.events import Channel, Identifier, RawEvent

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EMAIL = Identifier(type="email", value="a@b.com")


def event(eid: str, minute: int, channel: Channel = Channel.WEB, **kw: object) -> RawEvent:
    return RawEvent.model_validate(
        {
            "event_id": eid,
            "channel": channel,
            "source": "test",
            "kind": "page",
            "occurred_at": T0 + timedelta(minutes=minute),
            "received_at": T0,
            "identifiers": [EMAIL],
            **kw,
        }
    )


def fold(events: list[RawEvent], cid: str = "c1", limit: int = 100) -> CustomerContext:
    ctx: CustomerContext | None = None
    for ev in events:
        ctx = apply_event(ctx, cid, ev, ev.identifiers, ContextPolicy(timeline_limit=limit)) or ctx
    assert ctx is not None
    return ctx


def test_timeline_is_newest_first_whatever_the_arrival_order() -> None:
    ctx = fold([event("b", 2), event("a", 1), event("c", 3, Channel.CHAT)])
    assert [e.event_id for e in ctx.timeline] == ["c", "b", "a"]
    assert ctx.channel_counts == {"web": 2, "chat": 1}
    assert ctx.first_seen == T0 + timedelta(minutes=1)
    assert ctx.last_seen == T0 + timedelta(minutes=3)
    assert ctx.identifiers == [StoredIdentifier.of(EMAIL)]


def test_duplicate_event_changes_nothing() -> None:
    ctx = fold([event("a", 1)])
    assert apply_event(ctx, "c1", event("a", 1), [EMAIL], ContextPolicy()) is None


def test_latest_trait_wins_by_occurred_at_not_arrival() -> None:
    ctx = fold(
        [
            event("new", 5, traits={"name": "Alice B."}),
            event("old", 1, traits={"name": "Alice", "plan": "pro"}),
        ]
    )
    assert ctx.traits["name"].value == "Alice B."
    assert ctx.traits["name"].event_id == "new"
    assert ctx.traits["plan"].value == "pro"


def test_timeline_is_capped_and_old_stragglers_are_not_recounted() -> None:
    ctx = fold([event(f"e{i}", i) for i in range(10)], limit=3)
    assert [e.event_id for e in ctx.timeline] == ["e9", "e8", "e7"]
    assert ctx.channel_counts == {"web": 10}
    assert apply_event(ctx, "c1", event("e0", 0), [EMAIL], ContextPolicy(timeline_limit=3)) is None


def test_absorb_merges_everything_once() -> None:
    survivor = fold([event("a", 1, traits={"name": "A"})], cid="old")
    other = fold([event("b", 2, Channel.CHAT, traits={"name": "B"}), event("a", 1)], cid="young")
    merged = absorb(survivor, other, ContextPolicy())
    assert merged is not None
    assert merged.customer_id == "old"
    assert [e.event_id for e in merged.timeline] == ["b", "a"]
    assert merged.channel_counts == {"web": 1, "chat": 1}
    assert merged.traits["name"].value == "B"
    assert merged.merged_from == ["young"]
    assert absorb(merged, other, ContextPolicy()) is None


def _union_reference(
    a: Sequence[StoredIdentifier], b: Sequence[StoredIdentifier | Identifier]
) -> list[StoredIdentifier]:
    """What ``_union_identifiers`` returned before its shortcut: every identifier once by
    key, a verified one over an unverified one, sorted by type and value."""
    merged: dict[str, StoredIdentifier] = {}
    for ident in (*a, *map(StoredIdentifier.of, b)):
        prior = merged.get(ident.key)
        if prior is None or (ident.verified and not prior.verified):
            merged[ident.key] = ident
    return sorted(merged.values(), key=lambda i: (i.type, i.value))


_IDENT = st.builds(
    StoredIdentifier,
    type=st.sampled_from(["email", "phone", "cookie"]),
    value=st.sampled_from(["a", "b", "c:d"]),
    verified=st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_IDENT, max_size=6), st.lists(_IDENT, max_size=4), st.booleans())
def test_identifier_union_equals_the_sorted_merge(
    a: list[StoredIdentifier], b: list[StoredIdentifier], canonical: bool
) -> None:
    """With ``a`` as every context holds it (the union's own output) or as anything else,
    and ``b`` held already or not: the same list, and ``a``'s own objects when it wins."""
    if canonical:
        a = _union_reference(a, [])
    union = _union_identifiers(a, b)
    assert union == _union_reference(a, b)
    assert union is not a  # a new list: the context's own is never shared
