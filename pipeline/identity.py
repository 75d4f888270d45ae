"""The identity graph: which identifiers belong to which canonical customer.

Pure logic over two mappings, so the same code runs on plain dicts in unit tests and on
faust tables in the worker:

* ``owners``: identifier key (``type:value``) -> the customer id that claimed it;
* ``parents``: customer id -> the customer it was merged into (roots are absent).

A merge never relabels: the younger root gets a forwarding pointer to the older one
(union-find), so a merge is O(1) and every old id still resolves. Customer ids are minted
deterministically from the first event, and sort by the time that event occurred, so the
older customer always survives and a replay of the same log yields the same ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime

CUSTOMER_ID_PREFIX = "cus_"


def mint_customer_id(event_id: str, occurred_at: datetime) -> str:
    """A deterministic, opaque customer id that sorts by when its first event occurred."""
    millis = max(0, int(occurred_at.timestamp() * 1000))
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()
    return f"{CUSTOMER_ID_PREFIX}{millis:012x}{digest}"


@dataclass(frozen=True)
class MergeDecision:
    """``from_id`` (younger root) now forwards to ``into_id`` (older root)."""

    from_id: str
    into_id: str


@dataclass(frozen=True)
class Resolution:
    """The outcome of resolving one event's identifiers."""

    customer_id: str
    created: bool
    merges: tuple[MergeDecision, ...]


class IdentityGraph:
    """Union-find over customer ids, keyed by normalised identifier keys."""

    def __init__(self, owners: MutableMapping[str, str], parents: MutableMapping[str, str]):
        self.owners = owners
        self.parents = parents

    def find(self, customer_id: str, *, compress: bool = True) -> str:
        """The canonical (root) id of a customer, following merge pointers.

        ``compress=False`` never writes, for readers outside the owning stream (the API).
        """
        path: list[str] = []
        node = customer_id
        while (parent := self.parents.get(node)) is not None:
            path.append(node)
            node = parent
        # Path compression: later look-ups of a long chain take one hop.
        if compress:
            for stale in path[:-1]:
                self.parents[stale] = node
        return node

    def lookup(self, identifier_key: str, *, compress: bool = True) -> str | None:
        """The canonical customer id holding an identifier, if any."""
        owner = self.owners.get(identifier_key)
        return None if owner is None else self.find(owner, compress=compress)

    def resolve(
        self, event_id: str, occurred_at: datetime, identifier_keys: Sequence[str]
    ) -> Resolution:
        """Attach an event's identifiers to one customer, merging the customers they join.

        Idempotent: resolving the same event again changes nothing and returns the same
        customer id (with no merges), which is what at-least-once delivery needs.
        """
        if not identifier_keys:
            raise ValueError("an event needs at least one identifier to be resolved")
        roots = sorted({self.find(o) for k in identifier_keys if (o := self.owners.get(k))})
        created = not roots
        winner = mint_customer_id(event_id, occurred_at) if created else roots[0]
        merges = tuple(MergeDecision(loser, winner) for loser in roots[1:])
        for merge in merges:
            self.parents[merge.from_id] = winner
        for key in identifier_keys:
            if self.owners.get(key) != winner:
                self.owners[key] = winner
        return Resolution(winner, created, merges)
