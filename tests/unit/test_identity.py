from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.identity import (
    IdentityEngine,
    IdentityError,
    IdentityTables,
    Observation,
    mint_customer_id,
)
from pipeline.identity_state import decode_node, encode
from pipeline.rules import HubRule, Rules, TypeRule, suppression_hash
from schemas.events import Channel, Identifier
from schemas.identity import Evidence, Freshness

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NO_RAILS = Rules(
    types={t: TypeRule(limit=None) for t in ("email", "user_id", "anonymous_id", "phone")},
    hub=HubRule(max_customers=10_000),
)


def engine(rules: Rules | None = None) -> IdentityEngine:
    return IdentityEngine(rules or Rules(), IdentityTables.in_memory())


def obs(eid: str, minute: int, *keys: str, verified: bool = False) -> Observation:
    ids = []
    for key in keys:
        t, _, v = key.partition(":")
        ids.append(Identifier(type=t, value=v, verified=verified))
    return Observation(
        ids,
        Evidence(
            event_id=eid,
            channel=Channel.WEB,
            source="test",
            occurred_at=T0 + timedelta(minutes=minute),
            rule_version="test",
        ),
    )


def test_first_event_mints_a_deterministic_sortable_id() -> None:
    e = engine()
    res = e.resolve(obs("e1", 0, "anonymous_id:a"))
    assert res.created
    assert res.merges == ()
    assert res.customer_id == mint_customer_id("e1", T0)
    assert mint_customer_id("e9", T0) < mint_customer_id("e0", T0 + timedelta(minutes=1))


def test_shared_identifier_stitches_to_the_same_customer() -> None:
    e = engine()
    first = e.resolve(obs("e1", 0, "anonymous_id:a"))
    second = e.resolve(obs("e2", 1, "anonymous_id:a", "email:x@y.com"))
    third = e.resolve(obs("e3", 2, "email:x@y.com"))
    assert first.customer_id == second.customer_id == third.customer_id
    assert not second.created
    assert second.merges == ()


def test_later_event_joins_two_customers_and_the_older_id_survives() -> None:
    e = engine()
    older = e.resolve(obs("e1", 0, "anonymous_id:laptop")).customer_id
    younger = e.resolve(obs("e2", 5, "anonymous_id:phone", "email:x@y.com")).customer_id
    assert older != younger
    join = e.resolve(obs("e3", 9, "anonymous_id:laptop", "email:x@y.com"))
    assert join.customer_id == older
    assert [(m.from_id, m.into_id) for m in join.merges] == [(younger, older)]
    assert e.lookup("anonymous_id:phone") == older
    assert younger is not None
    assert e.find(younger) == older
    node = e.node(older)
    assert node is not None
    assert [link.link_id for link in node.links] == ["e1", "e2", "e3"]
    assert node.links[2].merged == [younger]


def table_rows(tables: IdentityTables) -> dict[str, dict[str, object]]:
    """Every table's rows."""
    return {name: dict(rows) for name, rows in vars(tables).items()}


def test_resolving_the_same_event_twice_changes_nothing() -> None:
    e = engine()
    e.resolve(obs("e1", 0, "anonymous_id:a"))
    e.resolve(obs("e2", 1, "user_id:u1"))
    e.resolve(obs("e2b", 1, "user_id:u2", "email:shared@x.com"))
    join = e.resolve(obs("e3", 2, "anonymous_id:a", "user_id:u1", "email:shared@x.com"))
    state = table_rows(e.t)
    again = e.resolve(obs("e3", 2, "anonymous_id:a", "user_id:u1", "email:shared@x.com"))
    assert again.customer_id == join.customer_id
    assert again.merges == ()
    assert table_rows(e.t) == state


def test_a_crash_between_changelogs_is_healed_by_the_redelivered_event() -> None:
    """owners landed and nodes did not (a kill -9 between two changelog writes): the
    re-delivered event resolves as the first time did, link and all."""
    whole = engine()
    first = whole.resolve(obs("e1", 0, "anonymous_id:a", "email:a@x.com"))
    crashed = engine()
    crashed.resolve(obs("e1", 0, "anonymous_id:a", "email:a@x.com"))
    assert first.customer_id is not None
    del crashed.t.nodes[first.customer_id]  # the node's changelog record was lost
    again = crashed.resolve(obs("e1", 0, "anonymous_id:a", "email:a@x.com"))
    assert again.customer_id == first.customer_id
    assert again.created
    assert table_rows(crashed.t) == table_rows(whole.t)


def test_a_node_row_changed_underneath_is_parsed_again() -> None:
    """The engine keeps parsed nodes while their row is the very bytes it read or wrote;
    a row replaced underneath (a recovered table, a split) is read again, not the copy."""
    e = engine()
    cid = e.resolve(obs("e1", 0, "email:a@x.com")).customer_id
    assert cid is not None
    node = decode_node(e.t.nodes[cid])
    node.hubs.append("email:marker@x.com")
    e.t.nodes[cid] = encode(node)  # equal bytes would do: not the same
    e.resolve(obs("e2", 1, "email:a@x.com", "anonymous_id:new"))
    stored = decode_node(e.t.nodes[cid])
    assert stored.hubs == ["email:marker@x.com"]
    assert set(stored.identifiers) == {"email:a@x.com", "anonymous_id:new"}


def test_limit_drops_the_lowest_priority_identifier_and_audits_it() -> None:
    e = engine()
    ann = e.resolve(obs("e1", 0, "user_id:ann", "email:family@x.com")).customer_id
    bob = e.resolve(obs("e2", 1, "user_id:bob", "email:family@x.com"))
    # user_id allows one value per customer: the email (lower priority) is dropped.
    assert bob.customer_id != ann
    assert bob.merges == ()
    assert [(r.identifier, r.reason, r.other_customer) for r in bob.rejected] == [
        ("email:family@x.com", "limit", ann)
    ]
    assert e.lookup("email:family@x.com") == ann
    node = e.node(bob.customer_id or "")
    assert node is not None
    assert [r.identifier for r in node.rejected] == ["email:family@x.com"]


def test_limit_on_new_identifiers_within_one_customer() -> None:
    e = engine(Rules(types={"email": TypeRule(normaliser="email", limit=2, priority=10)}))
    cid = e.resolve(obs("e1", 0, "user_id:u", "email:a@x.com", "email:b@x.com")).customer_id
    third = e.resolve(obs("e2", 1, "user_id:u", "email:c@x.com"))
    assert third.customer_id == cid
    assert [r.reason for r in third.rejected] == ["limit"]
    assert e.lookup("email:c@x.com") is None


def test_windowed_limit_only_counts_recent_values() -> None:
    rules = Rules(types={"device_id": TypeRule(limit=1, limit_window_days=1, priority=30)})
    e = engine(rules)
    cid = e.resolve(obs("e1", 0, "email:a@x.com", "device_id:old")).customer_id
    same_day = e.resolve(obs("e2", 60, "email:a@x.com", "device_id:new1"))
    assert [r.reason for r in same_day.rejected] == ["limit"]
    two_days = e.resolve(obs("e3", 2 * 1440, "email:a@x.com", "device_id:new2"))
    assert two_days.customer_id == cid
    assert two_days.rejected == ()


def test_unverified_identifier_never_joins_two_verified_customers() -> None:
    e = engine(Rules(types={"user_id": TypeRule(limit=None, priority=1, trust="verified")}))
    a = e.resolve(obs("e1", 0, "user_id:a", "cookie:shared")).customer_id
    b = e.resolve(obs("e2", 1, "user_id:b")).customer_id
    # A cookie seen with b's login may not join a and b, even with limits off.
    res = e.resolve(obs("e3", 2, "user_id:b", "cookie:shared"))
    assert res.customer_id == b
    assert [(r.reason, r.other_customer) for r in res.rejected] == [("trust", a)]
    # An anonymous customer (nothing verified) does attach through the same kind of link.
    anon = e.resolve(obs("e4", 3, "cookie:lonely")).customer_id
    attach = e.resolve(obs("e5", 4, "user_id:b", "cookie:lonely"))
    assert attach.customer_id == b
    assert [(m.from_id, m.into_id) for m in attach.merges] == [(anon, b)]
    # A verified identifier (an HMAC-proved email) may join two verified customers.
    e.resolve(obs("e6", 5, "user_id:a", "email:proved@x.com", verified=True))
    proved = e.resolve(obs("e7", 6, "user_id:b", "email:proved@x.com", verified=True))
    assert proved.merges


def test_no_merge_type_attaches_but_never_joins() -> None:
    e = engine(Rules(types={"phone": TypeRule(normaliser="phone", merge=False, priority=11)}))
    a = e.resolve(obs("e1", 0, "email:a@x.com", "phone:+14155550100")).customer_id
    b = e.resolve(obs("e2", 1, "email:b@x.com")).customer_id
    res = e.resolve(obs("e3", 2, "email:b@x.com", "phone:+14155550100"))
    assert res.customer_id == b
    assert [(r.reason, r.other_customer) for r in res.rejected] == [("no_merge", a)]
    alone = e.resolve(obs("e4", 3, "phone:+14155550100"))
    assert alone.customer_id == a


def test_hub_identifier_is_quarantined_after_n_customers() -> None:
    e = engine(Rules(hub=HubRule(max_customers=3)))
    shop = "phone:+18005550100"
    owners = [e.resolve(obs(f"e{i}", i, f"user_id:u{i}", shop)) for i in range(4)]
    assert owners[1].quarantined == ()
    assert owners[3].quarantined == (shop,)
    assert [q.identifier for q in e.quarantined()] == [shop]
    assert len(e.quarantined()[0].customers) == 4
    # Quarantined: it no longer matches anything, and alone it resolves to nobody.
    later = e.resolve(obs("e9", 9, "user_id:u9", shop))
    assert [r.reason for r in later.rejected] == ["quarantined"]
    assert e.resolve(obs("e10", 10, shop)).customer_id is None


def test_quarantine_undoes_the_merges_the_hub_made() -> None:
    e = engine(Rules(hub=HubRule(max_customers=3)))
    shop = "phone:+18005550199"
    first = [e.resolve(obs(f"e{i}", i, f"email:caller{i}@x.com", shop)) for i in range(5)]
    assert len({e.lookup(f"email:caller{i}@x.com") for i in range(5)}) == 1  # the trap
    later = [e.resolve(obs(f"f{i}", 10 + i, f"email:late{i}@x.com", shop)) for i in range(3)]
    assert later[-1].quarantined == (shop,)
    (undo,) = later[-1].splits
    assert undo.old_root == first[0].customer_id
    assert len(undo.pieces) == 5
    assert len({e.lookup(f"email:caller{i}@x.com") for i in range(5)}) == 5
    assert e.lookup(shop) is None  # held by nobody: quarantined hubs match nothing
    assert e.lookup("email:caller0@x.com") == first[0].customer_id  # the oldest keeps its id


def test_split_restores_the_old_ids_and_replay_restores_the_merge() -> None:
    e = engine()
    a = e.resolve(obs("a1", 0, "anonymous_id:laptop", "email:a@x.com")).customer_id
    b = e.resolve(obs("b1", 1, "anonymous_id:phone")).customer_id
    e.resolve(obs("b2", 2, "anonymous_id:phone", "phone:+14155550101"))
    join = e.resolve(obs("j1", 3, "anonymous_id:phone", "email:a@x.com"))
    assert join.customer_id == a
    after = e.resolve(obs("a2", 4, "email:a@x.com", "user_id:u1"))
    assert after.customer_id == a
    assert a is not None
    assert b is not None
    split = e.split(b, "j1")
    assert split.old_root == a
    assert split.id_map == {a: a, b: b}
    assert split.pieces == {
        a: ["anonymous_id:laptop", "email:a@x.com", "user_id:u1"],
        b: ["anonymous_id:phone", "phone:+14155550101"],
    }
    assert e.lookup("phone:+14155550101") == b
    assert e.lookup("user_id:u1") == a
    assert e.find(b) == b
    # Replaying the removed link's event restores the merge, with the same ids.
    again = e.resolve(obs("j1", 3, "anonymous_id:phone", "email:a@x.com"))
    assert [(m.from_id, m.into_id) for m in again.merges] == [(b, a)]
    with pytest.raises(IdentityError):
        e.split(a, "no-such-link")


def test_erase_forgets_the_person_and_suppresses_replays() -> None:
    e = engine()
    a = e.resolve(obs("a1", 0, "anonymous_id:laptop", "email:gone@x.com")).customer_id
    b = e.resolve(obs("b1", 1, "anonymous_id:phone", "email:gone@x.com")).customer_id
    assert a == b
    other = e.resolve(obs("c1", 2, "email:stays@x.com")).customer_id
    assert a is not None
    erased = e.erase(a, T0)
    assert erased.identifiers_erased == 3
    assert e.lookup("email:gone@x.com") is None
    assert e.node(a) is None
    assert suppression_hash("email:gone@x.com") in e.t.suppressed
    assert "email:gone@x.com" not in str(dict(e.t.suppressed))
    replay = e.resolve(obs("a1", 0, "anonymous_id:laptop", "email:gone@x.com"))
    assert replay.customer_id is None
    assert replay.suppressed == 2
    assert e.lookup("email:stays@x.com") == other


def test_view_explains_the_customer() -> None:
    e = engine()
    cid = e.resolve(obs("e1", 0, "user_id:u1", "email:a@x.com")).customer_id
    e.resolve(obs("e2", 1, "user_id:u2", "email:a@x.com"))
    assert cid is not None
    view = e.view(cid, Freshness(partition=0, offset=7, event_time=T0))
    assert view is not None
    assert [i.identifier for i in view.identifiers] == ["email:a@x.com", "user_id:u1"]
    assert [link.link_id for link in view.links] == ["e1"]
    assert view.links[0].evidence.rule_version == "test"
    assert view.rejected_links == []  # the rejection is recorded on the customer it was for
    assert view.freshness.offset == 7
    assert e.view("cus_unknown", view.freshness) is None


def _components(events: list[list[str]]) -> set[frozenset[int]]:
    """Reference: connected components of events linked by shared identifiers."""
    parent = list(range(len(events)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, ids in enumerate(events):
        for k in ids:
            if k in first:
                parent[root(i)] = root(first[k])
            else:
                first[k] = i
    groups: dict[int, set[int]] = {}
    for i in range(len(events)):
        groups.setdefault(root(i), set()).add(i)
    return {frozenset(g) for g in groups.values()}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(
            st.sampled_from([f"email:{c}@x.com" for c in "abcdef"] + ["user_id:1", "user_id:2"]),
            min_size=1,
            max_size=3,
            unique=True,
        ),
        min_size=1,
        max_size=30,
    ),
    st.randoms(use_true_random=False),
)
def test_without_rails_stitching_equals_connected_components_in_any_order(
    events: list[list[str]], rnd: random.Random
) -> None:
    order = list(range(len(events)))
    rnd.shuffle(order)
    e = engine(NO_RAILS)
    assigned: dict[int, str] = {}
    for i in order:
        cid = e.resolve(obs(f"e{i}", i, *events[i])).customer_id
        assert cid is not None
        assigned[i] = cid
    groups: dict[str, set[int]] = {}
    for i, cid in assigned.items():
        groups.setdefault(e.find(cid), set()).add(i)
    assert {frozenset(s) for s in groups.values()} == _components(events)
    for root, members in groups.items():
        assert root == min(assigned[i] for i in members)  # the oldest id survives


def assert_consistent(e: IdentityEngine) -> None:
    """Graph invariants: every identifier's root holds it, and only roots have nodes."""
    for key in e.t.owners:
        root = e.find(e.t.owners[key], compress=False)
        node = e.node(root)
        assert node is not None, f"{key} resolves to {root}, which has no node"
        assert key in node.identifiers, f"{key} resolves to {root}, which does not hold it"
    for cid in e.t.nodes:
        assert cid not in e.t.parents, f"{cid} has a node but forwards to {e.t.parents[cid]}"
        node = e.node(cid)
        assert node is not None
        for key in node.identifiers:
            assert e.lookup(key, compress=False) == cid


@settings(max_examples=300, deadline=None)
@given(st.permutations(range(8)))
def test_a_hub_never_joins_callers_whatever_the_order(order: list[int]) -> None:
    e = engine()
    for i in order:
        e.resolve(obs(f"c{i}", i, f"email:caller{i}@x.com", "phone:+18005550199"))
        assert_consistent(e)
    assert len({e.lookup(f"email:caller{i}@x.com") for i in range(8)}) == 8


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.lists(
            st.sampled_from(
                [f"email:{c}@x.com" for c in "abcd"]
                + ["user_id:1", "user_id:2", "phone:+18005550100", "anonymous_id:z"]
            ),
            min_size=1,
            max_size=3,
            unique=True,
        ),
        min_size=1,
        max_size=25,
    ),
    st.data(),
)
def test_graph_stays_consistent_under_rails_splits_and_erasure(
    events: list[list[str]], data: st.DataObject
) -> None:
    e = engine(Rules(hub=HubRule(max_customers=2)))
    for i, keys in enumerate(events):
        e.resolve(obs(f"e{i}", i, *keys))
        assert_consistent(e)
    roots = sorted(e.t.nodes)
    root = data.draw(st.sampled_from(roots))
    node = e.node(root)
    assert node is not None
    link = data.draw(st.sampled_from(node.links))
    split = e.split(root, link.link_id)
    assert_consistent(e)
    assert set(split.pieces) <= set(e.t.nodes)
    if e.t.nodes:
        victim = data.draw(st.sampled_from(sorted(e.t.nodes)))
        e.erase(victim, T0)
        assert_consistent(e)


def test_hub_sightings_count_customers_not_merged_away_ids() -> None:
    e = engine()
    hub = "phone:+14155550190"
    e.resolve(obs("e1", 0, "anonymous_id:x"))
    e.resolve(obs("e2", 1, hub, "user_id:u0"))
    e.resolve(obs("e3", 2, hub, "user_id:u1"))
    e.resolve(obs("e4", 3, hub, "user_id:u2"))
    merged = e.resolve(obs("e5", 4, "anonymous_id:x", "user_id:u1"))
    assert merged.merges
    sightings = dict(e.t.hubs)
    replay = e.resolve(obs("e3", 2, hub, "user_id:u1"))
    assert replay.quarantined == ()  # three customers saw the hub, not four
    assert replay.splits == ()
    # The replay's customer is now the merge survivor; the sighting it already left under
    # the merged-away id stands for it, so the hub's record is byte-for-byte unchanged.
    assert dict(e.t.hubs) == sightings


class FullPathOnly(IdentityEngine):
    """The engine without its shortcut for identifiers one customer holds already."""

    def _resolve_held(self, keyed: object, at: object) -> None:
        return None


HELD_POOL = [f"email:{c}@x.com" for c in "abc"] + [
    "user_id:1",
    "user_id:2",
    "phone:+18005550100",
    "anonymous_id:z",
    "anonymous_id:y",
]
STRICT = Rules(
    types={
        "email": TypeRule(normaliser="email", limit=1, priority=10),
        "anonymous_id": TypeRule(limit=1, priority=31),
    },
    hub=HubRule(max_customers=2),
)
WINDOWED = Rules(
    types={"email": TypeRule(normaliser="email", limit=2, limit_window_days=1, priority=10)}
)

#: One step of an identity history: an event (keys, hours after T0, verified, event id),
#: a split or an erasure of the n-th root, or a restart of the engine under other rules.
event_step = st.tuples(
    st.just("event"),
    st.lists(st.sampled_from(HELD_POOL), min_size=1, max_size=3),
    st.integers(0, 72),
    st.booleans(),
    st.integers(0, 40),
)
step = st.one_of(
    event_step,
    event_step,
    event_step,
    st.tuples(st.just("split"), st.integers(0, 50), st.integers(0, 50)),
    st.tuples(st.just("erase"), st.integers(0, 50)),
    st.tuples(st.just("restart"), st.sampled_from(["default", "strict", "windowed"])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, min_size=1, max_size=40))
def test_the_shortcut_for_held_identifiers_decides_and_writes_what_the_full_path_does(
    steps: list[tuple[Any, ...]],
) -> None:
    """``_resolve_held`` is an optimisation only: on any history (repeats hours apart that
    refresh last-seen, newly verified identifiers, duplicate keys, replays, hubs, splits,
    erasures, and restarts under stricter or windowed rules that leave customers over a
    limit) both engines return equal decisions and hold equal rows, byte for byte."""
    named = {"default": Rules(hub=HubRule(max_customers=2)), "strict": STRICT}
    named["windowed"] = WINDOWED
    fast = IdentityEngine(named["default"], IdentityTables.in_memory())
    full = FullPathOnly(named["default"], IdentityTables.in_memory())
    for kind, *args in steps:
        if kind == "restart":
            rules = named[args[0]]
            fast, full = IdentityEngine(rules, fast.t), FullPathOnly(rules, full.t)
            continue
        if kind == "event":
            keys, hours, verified, n = args
            event = obs(f"e{n}", 60 * hours, *keys, verified=verified)
            assert fast.resolve(event) == full.resolve(event)
        else:
            roots = sorted(full.t.nodes)
            if not roots:
                continue
            root = roots[args[0] % len(roots)]
            if kind == "erase":
                assert fast.erase(root, T0) == full.erase(root, T0)
            else:
                node = full.node(root)
                assert node is not None
                link = node.links[args[1] % len(node.links)].link_id
                assert fast.split(root, link) == full.split(root, link)
        assert table_rows(fast.t) == table_rows(full.t)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from(HELD_POOL), min_size=1, max_size=3), min_size=1, max_size=15),
    st.randoms(use_true_random=False),
)
def test_after_rules_tighten_the_shortcut_still_decides_what_the_full_path_does(
    events: list[list[str]], rnd: random.Random
) -> None:
    """Customers stitched under the default rules, then both engines restarted under rules
    that allow one email and one anonymous id: the same events again (in another order,
    later) find customers over those limits, which the shortcut must leave to the full
    path's refusals."""
    fast = IdentityEngine(Rules(), IdentityTables.in_memory())
    full = FullPathOnly(Rules(), IdentityTables.in_memory())
    for n, keys in enumerate(events):
        assert fast.resolve(obs(f"e{n}", n, *keys)) == full.resolve(obs(f"e{n}", n, *keys))
    fast, full = IdentityEngine(STRICT, fast.t), FullPathOnly(STRICT, full.t)
    again = list(enumerate(events))
    rnd.shuffle(again)
    for n, keys in again:
        event = obs(f"r{n}", 60 * 24 + n, *keys)
        assert fast.resolve(event) == full.resolve(event)
        assert table_rows(fast.t) == table_rows(full.t)


def test_the_shortcut_takes_held_identifiers_and_refreshes_their_last_seen() -> None:
    e = engine()
    cid = e.resolve(obs("e1", 0, "email:a@x.com", "anonymous_id:a")).customer_id
    assert cid is not None
    first = e.t.nodes[cid]
    keyed = [(i, i.key) for i in obs("e2", 1, "anonymous_id:a", "email:a@x.com").identifiers]
    held = e._resolve_held(keyed, T0 + timedelta(minutes=1))
    assert held is not None
    assert held.customer_id == cid
    assert held.accepted == ("email:a@x.com", "anonymous_id:a")  # strongest first
    assert e.t.nodes[cid] is first  # within LAST_SEEN_RESOLUTION: nothing written
    later = e.resolve(obs("e3", 120, "email:a@x.com"))
    assert later.customer_id == cid
    node = e.node(cid)
    assert node is not None
    assert node.identifiers["email:a@x.com"].last_seen == T0 + timedelta(minutes=120)
    assert node.identifiers["anonymous_id:a"].last_seen == T0
    assert [link.link_id for link in node.links] == ["e1"]
    new = [(i, i.key) for i in obs("e4", 121, "email:a@x.com", "phone:+18005550100").identifiers]
    assert e._resolve_held(new, T0) is None  # a new identifier: the full path


def test_a_customer_left_over_a_limit_by_new_rules_takes_the_full_path() -> None:
    """Rules tightened after a restart can leave a customer holding more of a type than
    its limit: an event of its own identifiers is then refused by the limit, as ever."""
    e = engine()
    cid = e.resolve(obs("e1", 0, "email:a@x.com", "email:b@x.com")).customer_id
    e = IdentityEngine(STRICT, e.t)
    keyed = [(i, i.key) for i in obs("e2", 1, "email:a@x.com").identifiers]
    assert e._resolve_held(keyed, T0 + timedelta(minutes=1)) is None
    again = e.resolve(obs("e2", 1, "email:a@x.com"))
    assert again.customer_id != cid
    assert [r.reason for r in again.rejected] == ["limit"]


def test_the_shortcut_records_a_newly_verified_identifier() -> None:
    e = engine()
    cid = e.resolve(obs("e1", 0, "email:a@x.com")).customer_id
    assert cid is not None
    assert e.resolve(obs("e2", 1, "email:a@x.com", verified=True)).customer_id == cid
    node = e.node(cid)
    assert node is not None
    assert node.identifiers["email:a@x.com"].verified
