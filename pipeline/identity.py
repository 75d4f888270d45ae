"""The identity engine: which identifiers belong to which canonical customer, and why.

Pure logic over five mappings (``IdentityTables``), so the same code runs on plain dicts
as the single-process reference model and on faust tables in the worker:

* ``owners``: identifier key (``type:value``) -> a customer id that holds it;
* ``parents``: customer id -> the customer it was merged into (roots are absent);
* ``nodes``: root customer id -> its ``CustomerNode`` (identifiers, links with evidence,
  rejected links), as JSON;
* ``hubs``: identifier key -> ``HubState`` (which customers presented it), as JSON;
* ``suppressed``: hash of an erased identifier key -> when it was erased.

A merge never relabels: the younger root gets a forwarding pointer to the older one
(union-find), so a merge is O(1) plus the node summary, and every old id still resolves.
Customer ids are minted deterministically from an event and sort by the time it occurred,
so the older customer survives and replaying the same log with the same rules yields the
same ids. Every accepted link is stored with its evidence, which is what makes a merge
explainable (``view``) and reversible (``split``).

Guard rails, applied greedily in identifier priority order (strongest first, so the
weakest identifier is the one dropped from the match):

* **limit**: a type's most values per customer (optionally within a time window);
* **trust**: an unverified identifier never joins two customers that each hold a
  verified identifier;
* **merge**: a type configured ``merge = false`` attaches but never joins customers;
* **hub quarantine**: an identifier presented on more than N customers within a window
  stops matching altogether.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec

from pipeline.identity_state import (
    AnyIdentifier,
    CustomerNode,
    Evidence,
    HubState,
    IdentifierState,
    Link,
    RejectedLink,
    decode_hub,
    decode_node,
    encode,
    to_public,
)
from pipeline.lru import Lru
from pipeline.rules import Rules, Trust, TypeRule, suppression_hash
from schemas.identity import Evidence as PublicEvidence
from schemas.identity import (
    Freshness,
    IdentifierInfo,
    IdentityView,
    Quarantine,
    RejectReason,
)
from schemas.identity import Link as PublicLink
from schemas.identity import RejectedLink as PublicRejectedLink

CUSTOMER_ID_PREFIX = "cus_"
#: Rejected-link audit records kept per customer (newest last).
REJECTED_KEEP = 200
#: A re-sighting refreshes an identifier's last_seen (for windowed limits) this coarsely,
#: so that ordinary traffic does not rewrite the customer's node on every event.
LAST_SEEN_RESOLUTION = timedelta(hours=1)

log = logging.getLogger(__name__)

#: Every identifier of every event is checked against erasures by its hash (a SHA-256).
_suppression_hash = functools.lru_cache(maxsize=1 << 14)(suppression_hash)


def mint_customer_id(event_id: str, occurred_at: datetime) -> str:
    """A deterministic, opaque customer id that sorts by when its first event occurred."""
    millis = max(0, int(occurred_at.timestamp() * 1000))
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()
    return f"{CUSTOMER_ID_PREFIX}{millis:012x}{digest}"


def identifier_type(key: str) -> str:
    return key.partition(":")[0]


@dataclass
class IdentityTables:
    """The engine's state. Dicts for the reference model, faust tables in the worker."""

    owners: MutableMapping[str, str]
    parents: MutableMapping[str, str]
    nodes: MutableMapping[str, bytes]
    hubs: MutableMapping[str, bytes]
    suppressed: MutableMapping[str, str]

    @classmethod
    def in_memory(cls) -> IdentityTables:
        return cls({}, {}, {}, {}, {})


@dataclass(frozen=True)
class Observation:
    """What the engine needs of an event: its normalised identifiers and its evidence."""

    identifiers: Sequence[AnyIdentifier]
    evidence: Evidence | PublicEvidence  # the worker's requests carry the struct

    def stored_evidence(self) -> Evidence:
        """The evidence as a link or rejected link stores it."""
        return Evidence.of(self.evidence)

    @property
    def event_id(self) -> str:
        return self.evidence.event_id

    @property
    def occurred_at(self) -> datetime:
        return self.evidence.occurred_at


@dataclass(frozen=True)
class MergeDecision:
    """``from_id`` (younger root) now forwards to ``into_id`` (older root)."""

    from_id: str
    into_id: str


@dataclass(frozen=True)
class Decision:
    """The outcome of resolving one event."""

    customer_id: str | None  # None: nothing usable was left (suppressed or quarantined)
    created: bool = False
    merges: tuple[MergeDecision, ...] = ()
    accepted: tuple[str, ...] = ()
    rejected: tuple[RejectedLink, ...] = ()
    quarantined: tuple[str, ...] = ()
    suppressed: int = 0
    splits: tuple[SplitDecision, ...] = ()  # un-merges caused by quarantining a hub
    #: identifiers found owned by a customer with no node, resolved as unowned: what a
    #: crash leaves when part of a batch's writes landed (pipeline/README.md, "Not covered")
    orphaned: int = 0


@dataclass(frozen=True)
class SplitDecision:
    old_root: str
    id_map: dict[str, str]  # every member id of the old component -> its customer now
    pieces: dict[str, list[str]]  # new root -> its identifier keys
    detached: list[str]  # identifier keys that no remaining link holds


@dataclass(frozen=True)
class EraseDecision:
    customer_id: str
    member_ids: list[str]
    identifiers_erased: int


class IdentityError(LookupError):
    """An operator request that names something that does not exist."""


class _Union:
    """The identifiers of the customers (and new identifiers) an event has accepted so far,
    with how many of each type count against its limit (those seen within its window)."""

    def __init__(self, rules: Rules, at: datetime) -> None:
        self.rules, self.at = rules, at
        self.keys: dict[str, datetime] = {}  # key -> last seen
        self.verified = False
        self._counted: dict[str, int] = {}  # type -> keys that count against its limit
        self._horizons: dict[str, datetime | None] = {}

    def _horizon(self, id_type: str) -> datetime | None:
        """The oldest last-seen that still counts against the type's limit (None: all)."""
        if id_type not in self._horizons:
            rule = self.rules.rule(id_type)
            days = None if rule is None else rule.limit_window_days
            self._horizons[id_type] = None if days is None else self.at - timedelta(days=days)
        return self._horizons[id_type]

    def deltas(self, extra: dict[str, datetime]) -> dict[str, int]:
        """How adding ``extra`` would change each of its types' counts (a key counts if it
        was seen within its type's window; one the union holds already is counted once)."""
        deltas: dict[str, int] = {}
        keys, horizons = self.keys, self._horizons
        for key, seen in extra.items():
            id_type = key[: key.find(":")]
            horizon = horizons[id_type] if id_type in horizons else self._horizon(id_type)
            change = int(horizon is None or seen >= horizon)
            old = keys.get(key)
            if old is not None and (horizon is None or old >= horizon):
                change -= 1
            deltas[id_type] = deltas.get(id_type, 0) + change
        return deltas

    def exceeds(self, deltas: dict[str, int]) -> str | None:
        """The type whose limit adding keys with these ``deltas`` would break, if any."""
        for id_type, change in deltas.items():
            rule = self.rules.rule(id_type)
            if rule is None or rule.limit is None:
                continue
            if self._counted.get(id_type, 0) + change > rule.limit:
                return id_type
        return None

    def add(self, keys: dict[str, datetime], deltas: dict[str, int], verified: bool) -> None:
        """Accept ``keys`` (``deltas``: theirs, from :meth:`deltas` before this add)."""
        for id_type, change in deltas.items():
            self._counted[id_type] = self._counted.get(id_type, 0) + change
        self.keys.update(keys)
        self.verified = self.verified or verified


def _resighted(state: IdentifierState, at: datetime, verified: bool) -> bool:
    """An identifier a customer holds, seen again at ``at``: its last-seen refreshed if it is
    ``LAST_SEEN_RESOLUTION`` stale, its verification if the sighting is verified. True if
    either changed (the node must be stored)."""
    if at - state.last_seen < LAST_SEEN_RESOLUTION and (state.verified or not verified):
        return False
    state.last_seen = max(state.last_seen, at)
    state.verified = state.verified or verified
    return True


class IdentityEngine:
    """Resolves events to customers under the identity rules; splits and erases on request."""

    def __init__(self, rules: Rules, tables: IdentityTables, parsed_nodes: int = 5_000) -> None:
        self.rules = rules
        self.t = tables
        # Parsed nodes of recently resolved customers, each with the very bytes object it
        # was parsed from (or serialised to): valid while the table still holds that
        # object, so a row rewritten, recovered or removed underneath is parsed again.
        self._parsed: Lru[str, tuple[bytes, CustomerNode]] = Lru(parsed_nodes)
        # Roots whose node, as the very bytes object held, holds no more identifiers of any
        # type than its limit (``_resolve_held``).
        self._fits: Lru[str, bytes] = Lru(parsed_nodes)

    # -- reading --------------------------------------------------------------------------
    def find(self, customer_id: str, *, compress: bool = True) -> str:
        """The canonical (root) id of a customer, following merge pointers.

        ``compress=False`` never writes, for readers outside the owning stream (the API).
        """
        path: list[str] = []
        node = customer_id
        while (parent := self.t.parents.get(node)) is not None:
            path.append(node)
            node = parent
        if compress:
            for stale in path[:-1]:
                self.t.parents[stale] = node
        return node

    def lookup(self, identifier_key: str, *, compress: bool = True) -> str | None:
        """The canonical customer id holding an identifier, if any."""
        owner = self.t.owners.get(identifier_key)
        return None if owner is None else self.find(owner, compress=compress)

    def node(self, root: str) -> CustomerNode | None:
        raw = self.t.nodes.get(root)
        return None if raw is None else decode_node(raw)

    def _node_to_change(self, root: str) -> CustomerNode | None:
        """``node(root)`` for ``resolve``, from the parsed cache when the row is unchanged.
        The node returned may be changed in place only if it is then stored (``_store``)."""
        row = self._parsed_row(root)
        return None if row is None else row[1]

    def _parsed_row(self, root: str) -> tuple[bytes, CustomerNode] | None:
        """The node row as stored and parsed (the parse cached while the row is unchanged)."""
        raw = self.t.nodes.get(root)
        if raw is None:
            return None
        hit = self._parsed.get(root)
        if hit is not None and hit[0] is raw:
            return hit
        row = self._parsed[root] = (raw, decode_node(raw))
        return row

    def _store(self, root: str, node: CustomerNode) -> bytes:
        raw = encode(node)
        self.t.nodes[root] = raw
        self._parsed[root] = (raw, node)
        return raw

    def hub(self, key: str) -> HubState | None:
        raw = self.t.hubs.get(key)
        return None if raw is None else decode_hub(raw)

    def quarantined(self) -> list[Quarantine]:
        """Every hub identifier, for operators to review."""
        out = []
        for key, raw in self.t.hubs.items():
            state = decode_hub(raw)
            if state.quarantined_at is not None:
                out.append(
                    Quarantine(
                        identifier=key,
                        customers=sorted(state.sightings),
                        since=state.quarantined_at,
                    )
                )
        return sorted(out, key=lambda q: q.identifier)

    def view(self, customer_id: str, freshness: Freshness) -> IdentityView | None:
        """Why a customer is who they are: identifiers, links, rejections, quarantines."""
        root = self.find(customer_id, compress=False)
        node = self.node(root)
        if node is None:
            return None
        hubs = [(k, self.hub(k)) for k in node.hubs]
        return IdentityView(
            customer_id=root,
            requested_id=customer_id,
            identifiers=[
                IdentifierInfo(
                    identifier=k,
                    verified=s.verified,
                    first_seen=s.first_seen,
                    last_seen=s.last_seen,
                )
                for k, s in sorted(node.identifiers.items())
            ],
            links=to_public(PublicLink, node.links),
            rejected_links=to_public(PublicRejectedLink, node.rejected),
            quarantined=[
                Quarantine(identifier=k, customers=sorted(h.sightings), since=h.quarantined_at)
                for k, h in hubs
                if h is not None and h.quarantined_at is not None
            ],
            freshness=freshness,
        )

    # -- resolving an event ---------------------------------------------------------------
    def resolve(self, obs: Observation) -> Decision:
        """Attach an event's identifiers to one customer, merging where the rules allow.

        Idempotent: resolving the same event again changes no identity state and returns
        the same customer id with no merges, which at-least-once delivery needs.
        """
        at = obs.occurred_at
        keyed = [(i, i.key) for i in obs.identifiers]
        if (held := self._resolve_held(keyed, at)) is not None:
            return held
        usable = [(i, k) for i, k in keyed if _suppression_hash(k) not in self.t.suppressed]
        suppressed = len(keyed) - len(usable)
        rejected: list[RejectedLink] = []
        presented_hubs: list[str] = []
        candidates: list[tuple[AnyIdentifier, str, TypeRule]] = []
        for ident, key in usable:
            rule = self.rules.rule(ident.type)
            if rule is None:
                continue  # ingest already dropped unknown types; rules may have changed since
            hub = self.hub(key)
            if hub is not None and hub.quarantined_at is not None:
                presented_hubs.append(key)
                owner = self.lookup(key)
                rejected.append(self._reject(key, "quarantined", "hub identifier", owner, obs))
                continue
            candidates.append((ident, key, rule))
        if not candidates:
            return Decision(None, rejected=tuple(rejected), suppressed=suppressed)

        candidates.sort(key=lambda c: (c[2].priority, c[1]))
        union = _Union(self.rules, at)
        roots: list[str] = []
        nodes: dict[str, CustomerNode] = {}
        accepted: list[tuple[AnyIdentifier, str]] = []
        orphaned = 0
        for ident, key, rule in candidates:
            verified = ident.verified or rule.trust is Trust.VERIFIED
            owner = self.lookup(key)
            if owner is not None and owner in roots:
                accepted.append((ident, key))
                continue
            node = None if owner is None else self._node_to_change(owner)
            if owner is not None and node is None:
                # An owner whose customer has no node is what a crash leaves between two
                # changelogs (owners landed, nodes did not); the event that made it is
                # being re-delivered now, so it is resolved as if the owner never was.
                log.warning("identifier owned by %s, which has no node: re-resolving", owner)
                owner = None
                orphaned += 1
            if owner is None or node is None:
                mine = {key: at}
                deltas = union.deltas(mine)
                if (broken := union.exceeds(deltas)) is not None:
                    rejected.append(self._limit(key, broken, None, obs))
                    continue
                union.add(mine, deltas, verified)
                accepted.append((ident, key))
                continue
            if roots and not rule.merge:
                reason: RejectReason = "no_merge"
                rejected.append(
                    self._reject(key, reason, f"{ident.type} may not merge", owner, obs)
                )
                continue
            theirs = {k: s.last_seen for k, s in node.identifiers.items()}
            deltas = union.deltas(theirs)
            if (broken := union.exceeds(deltas)) is not None:
                rejected.append(self._limit(key, broken, owner, obs))
            elif not verified and union.verified and node.has_verified():
                detail = "unverified identifier between two verified customers"
                rejected.append(self._reject(key, "trust", detail, owner, obs))
            else:
                nodes[owner] = node
                roots.append(owner)
                union.add(theirs, deltas, node.has_verified() or verified)
                accepted.append((ident, key))

        created = not roots
        winner = mint_customer_id(obs.event_id, at) if created else min(roots)
        target = nodes.get(winner) or CustomerNode(customer_id=winner)
        merges = tuple(MergeDecision(r, winner) for r in sorted(roots) if r != winner)
        changed = created or bool(merges)
        for merge in merges:
            self._absorb(target, nodes[merge.from_id])
            self.t.parents[merge.from_id] = winner
            del self.t.nodes[merge.from_id]
            self._parsed.pop(merge.from_id, None)
        new_keys = []
        for ident, key in accepted:
            verified = ident.verified or self.rules.types[ident.type].trust is Trust.VERIFIED
            state = target.identifiers.get(key)
            if state is None:
                target.identifiers[key] = IdentifierState(
                    verified=verified, first_seen=at, last_seen=at
                )
                self.t.owners[key] = winner
                new_keys.append(key)
            elif _resighted(state, at, verified):
                changed = True
        if new_keys or merges or created:
            target.links.append(
                Link(
                    link_id=obs.event_id,
                    identifiers=[k for _, k in accepted],
                    created=winner if created else None,
                    merged=[m.from_id for m in merges],
                    evidence=obs.stored_evidence(),
                )
            )
        changed = changed or bool(new_keys)
        known = {(r.evidence.event_id, r.identifier) for r in target.rejected} if rejected else ()
        fresh = [r for r in rejected if (r.evidence.event_id, r.identifier) not in known]
        if fresh:
            target.rejected = [*target.rejected, *fresh][-REJECTED_KEEP:]
            changed = True
        for key in presented_hubs:
            if key not in target.hubs:
                target.hubs.append(key)
                changed = True
        if changed:
            self._store(winner, target)
        newly_quarantined = self._sight_hubs(winner, rejected, at)
        splits = tuple(s for key in newly_quarantined if (s := self.detach(key)) is not None)
        return Decision(
            customer_id=winner,
            created=created,
            merges=merges,
            accepted=tuple(k for _, k in accepted),
            rejected=tuple(rejected),
            quarantined=tuple(newly_quarantined),
            suppressed=suppressed,
            splits=splits,
            orphaned=orphaned,
        )

    def _resolve_held(
        self, keyed: list[tuple[AnyIdentifier, str]], at: datetime
    ) -> Decision | None:
        """The decision for an event whose identifiers one customer holds already, the
        commonest kind (two thirds of a bench drain's): each identifier known to the rules,
        not erased, never sighted as a hub, held by one customer whose node is within every
        type's limit. For it the full path below accepts every identifier, refreshes the
        last-seen (and verification) of those it holds too coarsely, and writes no other
        row than that node and the pointers its look-ups compress (these do the same); it
        only spends longer getting there (the union's counting, the audit lists). None: the
        full path decides. ``tests/unit/test_identity.py`` runs both on the same random
        histories and compares every decision and every row."""
        owners, suppressed, hubs = self.t.owners, self.t.suppressed, self.t.hubs
        found = []
        for ident, key in keyed:  # first the cheap refusal: an identifier nobody holds
            rule = self.rules.rule(ident.type)
            owner = owners.get(key)
            if rule is None or owner is None:
                return None
            found.append((ident, key, rule, owner))
        root = None
        ruled = []
        for ident, key, rule, owner in found:
            if _suppression_hash(key) in suppressed or hubs.get(key) is not None:
                return None
            owner = self.find(owner)  # what ``lookup`` does, pointers compressed alike
            if root is not None and owner != root:
                return None
            root = owner
            ruled.append((ident, key, rule))
        row = None if root is None else self._parsed_row(root)
        if root is None or row is None:
            return None
        raw, node = row
        held = node.identifiers
        if any(key not in held for _, key, _ in ruled):
            return None
        if self._fits.get(root) is not raw:
            if not self._within_limits(node):
                return None
            self._fits[root] = raw
        changed = False
        for ident, key, rule in ruled:
            verified = ident.verified or rule.trust is Trust.VERIFIED
            changed = _resighted(held[key], at, verified) or changed
        if changed:
            self._fits[root] = self._store(root, node)  # the same identifiers: still fits
        ranked = sorted((rule.priority, key) for _, key, rule in ruled)
        return Decision(customer_id=root, accepted=tuple(key for _, key in ranked))

    def _within_limits(self, node: CustomerNode) -> bool:
        """No type holds more identifiers on ``node`` than its limit, counting them all: a
        window only counts fewer, so within this the full path rejects none either."""
        counts: dict[str, int] = {}
        for key in node.identifiers:
            id_type = identifier_type(key)
            counts[id_type] = counts.get(id_type, 0) + 1
        for id_type, count in counts.items():
            rule = self.rules.rule(id_type)
            if rule is not None and rule.limit is not None and count > rule.limit:
                return False
        return True

    def _reject(
        self, key: str, reason: RejectReason, detail: str, owner: str | None, obs: Observation
    ) -> RejectedLink:
        return RejectedLink(
            identifier=key,
            reason=reason,
            detail=detail,
            other_customer=owner,
            evidence=obs.stored_evidence(),
        )

    def _limit(self, key: str, id_type: str, owner: str | None, obs: Observation) -> RejectedLink:
        limit = self.rules.types[id_type].limit
        detail = f"would give the customer more than {limit} {id_type} value(s)"
        return self._reject(key, "limit", detail, owner, obs)

    @staticmethod
    def _absorb(into: CustomerNode, other: CustomerNode) -> None:
        for key, state in other.identifiers.items():
            mine = into.identifiers.get(key)
            if mine is None:
                into.identifiers[key] = state
            else:
                mine.first_seen = min(mine.first_seen, state.first_seen)
                mine.last_seen = max(mine.last_seen, state.last_seen)
                mine.verified = mine.verified or state.verified
        into.links = [*into.links, *other.links]
        into.rejected = [*into.rejected, *other.rejected][-REJECTED_KEEP:]
        into.hubs = sorted({*into.hubs, *other.hubs})

    def _sight_hubs(self, winner: str, rejected: Iterable[RejectedLink], at: datetime) -> list[str]:
        """Count the customers a conflicting identifier shows up on; quarantine hubs."""
        hub_rule = self.rules.hub
        horizon = at - timedelta(days=hub_rule.window_days)
        newly = []
        for rej in rejected:
            if rej.reason == "quarantined" or rej.other_customer is None:
                continue
            state = self.hub(rej.identifier) or HubState()
            before = encode(state)
            for cid in (rej.other_customer, winner):
                # A customer already sighted under an id merged away since keeps that key, so
                # replaying an old event after the merge adds no second key for one customer.
                key = self._sighting_key(state.sightings, cid)
                state.sightings[key] = max(at, state.sightings.get(key, at))
            state.sightings = {c: t for c, t in state.sightings.items() if t >= horizon}
            # Count customers, not ids: a merged-away id and its survivor are one customer
            # (so replaying an old event cannot add a sighting).
            customers = {self.find(c, compress=False) for c in state.sightings}
            if state.quarantined_at is None and len(customers) > hub_rule.max_customers:
                state.quarantined_at = at
                newly.append(rej.identifier)
            after = encode(state)
            if after != before:
                self.t.hubs[rej.identifier] = after
        return newly

    def _sighting_key(self, sightings: Mapping[str, datetime], customer_id: str) -> str:
        """The key a hub's sightings hold ``customer_id`` under, possibly a merged-away id."""
        if customer_id in sightings:
            return customer_id
        root = self.find(customer_id, compress=False)
        for key in sightings:
            if self.find(key, compress=False) == root:
                return key
        return customer_id

    # -- operator requests ----------------------------------------------------------------
    def split(self, customer_id: str, link_id: str) -> SplitDecision:
        """Remove one link and recompute the customer's component from the links left.

        Each resulting piece takes back the oldest customer id minted inside it, so
        undoing a merge restores the ids the customers had before it.
        """
        root = self.find(customer_id)
        node = self.node(root)
        if node is None:
            raise IdentityError(f"no customer {customer_id!r}")
        if not any(link.link_id == link_id for link in node.links):
            raise IdentityError(f"customer {root!r} has no link {link_id!r}")
        remaining = [link for link in node.links if link.link_id != link_id]
        return self._rebuild(root, node, remaining)

    def detach(self, identifier_key: str) -> SplitDecision | None:
        """Take a (quarantined) identifier out of every link of the customer holding it.

        A hub may have joined customers before it was recognised as one; recomputing the
        component without it undoes exactly those merges. None if nobody holds it.
        """
        root = self.lookup(identifier_key)
        node = None if root is None else self.node(root)
        if root is None or node is None:
            return None
        remaining = [
            msgspec.structs.replace(
                link, identifiers=[k for k in link.identifiers if k != identifier_key]
            )
            for link in node.links
        ]
        return self._rebuild(root, node, remaining)

    def _rebuild(self, root: str, node: CustomerNode, remaining: list[Link]) -> SplitDecision:
        """Recompute a customer's component from ``remaining`` links; store the pieces."""
        members = node.member_ids()
        parent: dict[str, str] = {}

        def top(k: str) -> str:
            while parent.setdefault(k, k) != k:
                k = parent[k]
            return k

        for link in remaining:
            keys = [k for k in link.identifiers if k in node.identifiers]
            for k in keys:
                top(k)
            for a, b in itertools.pairwise(keys):
                parent[top(b)] = top(a)
        groups: dict[str, list[str]] = {}
        for key in sorted(parent):
            groups.setdefault(top(key), []).append(key)
        links_of: dict[str, list[Link]] = {}
        for link in remaining:
            keys = [k for k in link.identifiers if k in node.identifiers]
            if keys:
                links_of.setdefault(top(keys[0]), []).append(link)
        # Each piece is named after the oldest customer id minted by one of its own links,
        # so undoing a merge gives every customer back its id, and the piece holding the
        # root's founding link keeps the root id. A piece that minted nothing takes the
        # root id if no piece did, else a new id minted from its oldest link.
        order = sorted(
            groups,
            key=lambda g: min((lk.evidence.occurred_at, lk.link_id) for lk in links_of[g]),
        )
        created_in = {lk.created: g for g in order for lk in links_of[g] if lk.created}
        names: dict[str, str] = {}
        for cid, g in sorted(created_in.items()):
            names.setdefault(g, cid)
        for g in order:
            if g in names:
                continue
            if root not in names.values():
                names[g] = root
            else:
                first = min(links_of[g], key=lambda lk: (lk.evidence.occurred_at, lk.link_id))
                names[g] = mint_customer_id(f"split:{first.link_id}", first.evidence.occurred_at)
        pieces = {names[g]: groups[g] for g in order}
        kept = {k for keys in groups.values() for k in keys}
        detached = sorted(set(node.identifiers) - kept)
        for key in detached:
            self.t.owners.pop(key, None)
        home = names[order[0]] if order else root
        id_map = {cid: names[g] for cid, g in created_in.items()}
        id_map.update({name: name for name in names.values()})
        for member in members - set(id_map):
            # Ids whose founding link is gone (the removed link made them): they follow
            # the piece with the oldest link.
            id_map[member] = home
        for g in order:
            cid = names[g]
            piece = CustomerNode(
                customer_id=cid,
                identifiers={k: node.identifiers[k] for k in groups[g]},
                links=links_of[g],
                rejected=node.rejected if cid == home else [],
                hubs=node.hubs if cid == home else [],
            )
            self.t.nodes[cid] = encode(piece)
            for key in groups[g]:
                self.t.owners[key] = cid
        for member, now in id_map.items():
            if member == now:
                self.t.parents.pop(member, None)
            else:
                self.t.parents[member] = now
        if root not in pieces:
            self.t.nodes.pop(root, None)
        return SplitDecision(root, dict(sorted(id_map.items())), pieces, detached)

    def erase(self, customer_id: str, at: datetime) -> EraseDecision:
        """Forget a person: identifiers, links and ids; remember only hashes to suppress."""
        root = self.find(customer_id)
        node = self.node(root)
        if node is None:
            raise IdentityError(f"no customer {customer_id!r}")
        stamp = at.isoformat()
        for key in node.identifiers:
            self.t.owners.pop(key, None)
            self.t.hubs.pop(key, None)
            self.t.suppressed[suppression_hash(key)] = stamp
        members = sorted(node.member_ids() | {customer_id})
        for member in members:
            self.t.parents.pop(member, None)
        del self.t.nodes[root]
        return EraseDecision(root, members, len(node.identifiers))
