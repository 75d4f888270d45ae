"""A crash can land part of an identity batch's writes: each identity table has its own
changelog, and records to different partitions land independently (no transaction), so a
worker restored after a kill -9 may hold some of a batch's row changes and not others. The
batch's events are delivered again (their offsets were not committed) and must bring the
graph to what the whole batch would have left.

What a customer's identifiers resolve to is compared (``lookup`` of every identifier, and
each root's identifiers), not the audit trail (links, first-seen times), which a re-decided
event may spell differently.

The engine survives either part of a new customer's writes (its owners without its node:
``resolve`` takes an owner without a node for unowned; its node without its owners: the
event mints the same id again, over it). Neither part of a merge (``PARTIAL_MERGE``)."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import pytest

from pipeline.identity import IdentityEngine, IdentityTables
from tests.unit.test_identity import engine, obs

TABLES = ("owners", "parents", "nodes", "hubs", "suppressed")
GONE = object()


def _tables(e: IdentityEngine) -> dict[str, dict[str, Any]]:
    return {name: dict(getattr(e.t, name)) for name in TABLES}


def _changes(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in TABLES:
        old, new = before[name], after[name]
        changed = {
            k: new.get(k, GONE)
            for k in old.keys() | new.keys()
            if old.get(k, GONE) != new.get(k, GONE)
        }
        if changed:
            out[name] = changed
    return out


def _landed(
    before: dict[str, dict[str, Any]], changes: dict[str, dict[str, Any]], tables: tuple[str, ...]
) -> IdentityEngine:
    """A fresh engine over ``before`` with the changes of ``tables`` only applied."""
    rows = {name: dict(before[name]) for name in TABLES}
    for name in tables:
        for key, value in changes[name].items():
            if value is GONE:
                rows[name].pop(key, None)
            else:
                rows[name][key] = value
    e = engine()
    e.t = IdentityTables(**rows)
    return e


def _resolved(e: IdentityEngine, keys: list[str]) -> dict[str, Any]:
    lookup = {key: e.lookup(key, compress=False) for key in keys}
    roots = {r: e.node(r) for r in set(lookup.values()) if r is not None}
    return {
        "lookup": lookup,
        "roots": {r: sorted(n.identifiers) for r, n in roots.items() if n is not None},
    }


EVENTS = [
    obs("e1", 0, "email:a@example.com"),  # a new customer
    obs("e2", 1, "phone:+14155550100", "anonymous_id:z"),  # another, with a cookie
    obs("e3", 2, "email:a@example.com", "phone:+14155550100"),  # the two merged
    obs("e4", 3, "phone:+14155550100"),
]
KEYS = ["email:a@example.com", "phone:+14155550100", "anonymous_id:z"]


def _parts(at: int) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The tables before ``EVENTS[at]`` (a batch of its own), and the rows it changes."""
    e = engine()
    for o in EVENTS[:at]:
        e.resolve(o)
    before = _tables(e)
    e.resolve(EVENTS[at])
    return before, _changes(before, _tables(e))


def _subsets(changes: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """Every part of the tables changed, neither none nor all."""
    return [t for n in range(1, len(changes)) for t in combinations(sorted(changes), n)]


def _delivered_again(at: int, landed: tuple[str, ...]) -> None:
    """``EVENTS[at]`` and what follows, over the rows before it with ``landed``'s changes
    only, resolve to what the whole log does."""
    whole = engine()
    for o in EVENTS:
        whole.resolve(o)
    before, changes = _parts(at)
    partial = _landed(before, changes, landed)
    for o in EVENTS[at:]:
        partial.resolve(o)
    assert _resolved(partial, KEYS) == _resolved(whole, KEYS)


CREATE, MERGE = 1, 2


def test_the_batches_change_these_tables() -> None:
    assert sorted(_parts(CREATE)[1]) == ["nodes", "owners"]
    assert sorted(_parts(MERGE)[1]) == ["nodes", "parents"]


@pytest.mark.parametrize("landed", _subsets(_parts(CREATE)[1]), ids="+".join)
def test_a_new_customer_delivered_again_over_part_of_its_writes_converges(
    landed: tuple[str, ...],
) -> None:
    _delivered_again(CREATE, landed)


#: Why neither part converges: the engine re-decides the merge over rows the batch already
#: changed. Only the pointer landed: the winner's node never absorbs the loser's other
#: identifiers (the event carries only some). Only the nodes landed: the loser's
#: identifiers keep an owner with neither node nor pointer, which the engine takes for a
#: customer a crash left half made and mints again, so one phone number has two customers.
#: Seen in the survivor test (docs/performance-history.md, session 26). No order of the two
#: changelogs makes both parts safe; a batch's records landing together (one record per
#: batch, or a Kafka transaction) would.
PARTIAL_MERGE = pytest.mark.xfail(
    strict=True, reason="a merge's changelog records do not land together (no transaction)"
)


@pytest.mark.parametrize(
    "landed",
    [pytest.param(s, marks=PARTIAL_MERGE) for s in _subsets(_parts(MERGE)[1])],
    ids="+".join,
)
def test_a_merge_delivered_again_over_part_of_its_writes_converges(landed: tuple[str, ...]) -> None:
    _delivered_again(MERGE, landed)


def test_an_owner_without_a_node_is_resolved_as_unowned_and_counted() -> None:
    """The owners of a new customer landed without its node: the event delivered again
    finds its identifiers' owner has no node, resolves them as unowned (the same id
    minted again) and says so (``Decision.orphaned``, the worker's
    ``omnistitch_identity_orphaned_owners_total``); over the whole batch, nothing is."""
    before, changes = _parts(CREATE)
    partial = _landed(before, changes, ("owners",))
    whole = _landed(before, changes, tuple(changes))
    again = partial.resolve(EVENTS[CREATE])
    assert (again.orphaned, again.created) == (2, True)  # the phone and the cookie
    assert whole.resolve(EVENTS[CREATE]).orphaned == 0
    assert again.customer_id == whole.lookup("phone:+14155550100")
