from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.identity import IdentityGraph, mint_customer_id

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def graph() -> IdentityGraph:
    return IdentityGraph({}, {})


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_first_event_mints_a_deterministic_sortable_id() -> None:
    g = graph()
    res = g.resolve("e1", at(0), ["anonymous_id:a"])
    assert res.created
    assert res.merges == ()
    assert res.customer_id == mint_customer_id("e1", at(0))
    assert mint_customer_id("e9", at(0)) < mint_customer_id("e0", at(1))


def test_shared_identifier_stitches_to_the_same_customer() -> None:
    g = graph()
    first = g.resolve("e1", at(0), ["anonymous_id:a"])
    second = g.resolve("e2", at(1), ["anonymous_id:a", "email:x@y.com"])
    third = g.resolve("e3", at(2), ["email:x@y.com"])
    assert first.customer_id == second.customer_id == third.customer_id
    assert not second.created
    assert second.merges == ()


def test_later_event_joins_two_customers_and_the_older_id_survives() -> None:
    g = graph()
    older = g.resolve("e1", at(0), ["anonymous_id:laptop"]).customer_id
    younger = g.resolve("e2", at(5), ["anonymous_id:phone", "email:x@y.com"]).customer_id
    assert older != younger
    join = g.resolve("e3", at(9), ["anonymous_id:laptop", "email:x@y.com"])
    assert join.customer_id == older
    assert [(m.from_id, m.into_id) for m in join.merges] == [(younger, older)]
    assert g.lookup("anonymous_id:phone") == older
    assert g.find(younger) == older


def test_resolving_the_same_event_twice_changes_nothing() -> None:
    g = graph()
    g.resolve("e1", at(0), ["anonymous_id:a"])
    g.resolve("e2", at(1), ["anonymous_id:b"])
    join = g.resolve("e3", at(2), ["anonymous_id:a", "anonymous_id:b"])
    owners, parents = dict(g.owners), dict(g.parents)
    again = g.resolve("e3", at(2), ["anonymous_id:a", "anonymous_id:b"])
    assert again.customer_id == join.customer_id
    assert again.merges == ()
    assert (dict(g.owners), dict(g.parents)) == (owners, parents)


def test_find_compresses_long_chains_only_when_asked() -> None:
    g = IdentityGraph({}, {"c3": "c2", "c2": "c1"})
    assert g.find("c3", compress=False) == "c1"
    assert g.parents["c3"] == "c2"
    assert g.find("c3") == "c1"
    assert g.parents["c3"] == "c1"


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
        st.lists(st.sampled_from([f"email:{c}" for c in "abcdefgh"]), min_size=1, max_size=3),
        min_size=1,
        max_size=30,
    ),
    st.randoms(use_true_random=False),
)
def test_stitching_equals_connected_components_in_any_order(
    events: list[list[str]], rnd: random.Random
) -> None:
    order = list(range(len(events)))
    rnd.shuffle(order)
    g = graph()
    assigned: dict[int, str] = {}
    for i in order:
        assigned[i] = g.resolve(f"e{i}", at(i), events[i]).customer_id
    groups: dict[str, set[int]] = {}
    for i, cid in assigned.items():
        groups.setdefault(g.find(cid), set()).add(i)
    assert {frozenset(s) for s in groups.values()} == _components(events)
    # The survivor of every component is its oldest customer id.
    for root, members in groups.items():
        minted = {assigned[i] for i in members}
        assert root == min(minted)
