"""The customer-op protocol: which ops an identity decision sends, and how the context
stage applies them. Pure logic, no Kafka: the faust stage (app.py) only moves the ops
between partitions, and tests/unit/test_context_races.py runs this same code under every
delivery order Kafka allows (each partition in order, partitions interleaved at will).

Ops about one customer travel on its partition of ``<app>-customer-ops``. A merge, a split
or a restore hands a context to another customer: a second hop, on another partition,
which can arrive before or after ops the identity stage decided later. Each rule below
exists for one such race; pipeline/README.md tells them in prose.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Protocol

from pipeline import context as ctxlogic
from pipeline.context_policy import ContextPolicy
from pipeline.context_state import CustomerContext, replace
from pipeline.identity import Decision, EraseDecision, SplitDecision
from pipeline.ops import (
    AbsorbOp,
    AnyCustomerOp,
    EraseOp,
    EventForward,
    EventOp,
    MergeOp,
    RedirectOp,
    ResolveRequest,
    RestoreOp,
    SplitOp,
    TickOp,
    decode_split,
    encode_op,
)

#: ``redirects`` value of an erased customer id: ops that still reach it are dropped.
ERASED = "!erased"

Send = Callable[[AnyCustomerOp], None]
#: What the identity stage sends: ops, and events passed on as bytes (decoded as ``EventOp``).
Sent = AnyCustomerOp | EventForward


# -- the identity stage's side: decisions -> ops, in the order they must be applied --------
def split_ops(split: SplitDecision, decided_at: int) -> list[AnyCustomerOp]:
    """First make every piece a customer again and re-point the merged-away ids (so ops
    decided from now on land on the right customer); then divide the context."""
    split_op = SplitOp(
        customer_id=split.old_root,
        pieces=split.pieces,
        id_map=split.id_map,
        decided_at=decided_at,
    )
    ops: list[AnyCustomerOp] = []
    for member, now in split.id_map.items():
        if member == now and member != split.old_root:
            ops.append(RestoreOp(customer_id=member, split=split_op))
        elif member != now:
            ops.append(RedirectOp(customer_id=member, into_id=now, decided_at=decided_at))
    ops.append(split_op)
    return ops


def resolve_ops(request: ResolveRequest, decision: Decision, decided_at: int) -> list[Sent]:
    """A resolved event's ops: each merge (to the merged-away customer), then the event
    (to its customer, with only the identifiers the engine accepted), then the un-merges a
    hub quarantine caused (positioned just after the event)."""
    if decision.customer_id is None:
        return []
    ops: list[Sent] = [
        MergeOp(
            customer_id=merge.from_id,
            into_id=merge.into_id,
            event_id=request.event_id,
            decided_at=decided_at,
        )
        for merge in decision.merges
    ]
    accepted = [i for i in request.identifiers if i.key in decision.accepted]
    ops.append(EventForward(decision.customer_id, accepted, request.event))
    for undone in decision.splits:
        ops.extend(split_ops(undone, decided_at + 1))
    return ops


def erase_ops(erased: EraseDecision) -> list[AnyCustomerOp]:
    return [EraseOp(customer_id=member) for member in erased.member_ids]


# -- the context stage's side --------------------------------------------------------------
class ContextStore(Protocol):
    """Where the stage keeps contexts: a dict in tests, a table with a write buffer in the
    worker. ``drop`` removes the row, which tombstones the customer on the view.

    A context stored ``changed`` may have stale derived fields (``routing``,
    ``pending_triggers``): an event is folded without deriving them, so that a customer
    with several events in a batch is derived once. The store derives such a context
    (``context.derive``) before it reads or writes them; every other op derives its own."""

    def load(self, cid: str) -> CustomerContext | None: ...

    def store(
        self, cid: str, ctx: CustomerContext, *, changed: bool = True, published: bool = True
    ) -> None: ...

    def drop(self, cid: str) -> None: ...


class ContextOps:
    """Applies ops to the customers of the partitions it is given.

    ``redirects``: merged-away (or erased) id -> where its context lives now, and the
    position of the decision that moved it there (``"<id> <position>"``).
    ``last_splits``: customer -> its last split (JSON), for merges that arrive after it.
    """

    def __init__(
        self,
        store: ContextStore,
        redirects: MutableMapping[str, str],
        last_splits: MutableMapping[str, bytes],
        policy: ContextPolicy,
        on_event: Callable[[EventOp], None] | None = None,
    ) -> None:
        self.store, self.redirects, self.last_splits = store, redirects, last_splits
        self.policy = policy
        self.on_event = on_event

    def apply(self, op: AnyCustomerOp, send: Send) -> None:
        """Apply one op; ``send`` the ops it causes on other customers."""
        moved = self._moved(op.customer_id)
        moved_to = None if moved is None else moved[0]
        if isinstance(op, EraseOp):
            self._on_erase(op)
        elif moved_to == ERASED:
            return  # an op that raced with this customer's erasure
        elif isinstance(op, AbsorbOp) and (split := self._split_since(op)) is not None:
            self._divide(op, split, moved_to, send)  # here first, even if merged away since
        elif moved_to is not None and isinstance(op, EventOp | AbsorbOp | SplitOp):
            # Raced with a merge: this customer's context now lives at the survivor.
            send(replace(op, customer_id=moved_to))
        elif isinstance(op, EventOp):
            self._on_event(op)
        elif isinstance(op, MergeOp):
            self._on_merge(op, send)
        elif isinstance(op, AbsorbOp):
            self._on_absorb(op)
        elif isinstance(op, SplitOp):
            self._on_split(op, send)
        elif isinstance(op, RestoreOp):
            self._on_restore(op, moved, send)
        elif isinstance(op, TickOp):
            current = self.store.load(op.customer_id)
            if current is not None:
                self.store.store(op.customer_id, current, changed=False, published=False)
        else:
            self._redirect(op.customer_id, op.into_id, op.decided_at)

    def _redirect(self, cid: str, into: str, decided_at: int) -> None:
        self.redirects[cid] = f"{into} {decided_at}"

    def _moved(self, cid: str) -> tuple[str, int] | None:
        """Where a redirected customer's context lives, and the position that moved it."""
        raw = self.redirects.get(cid)
        if raw is None:
            return None
        into, _, at = raw.partition(" ")
        return into, int(at or 0)

    def _on_event(self, op: EventOp) -> None:
        cid = op.customer_id
        current = self.store.load(cid)
        event = op.event
        updated = ctxlogic.apply_event(
            current, cid, event, event.identifiers, self.policy, derived=False
        )
        result = updated or current
        if result is not None:
            self.store.store(cid, result, changed=updated is not None)
        if self.on_event is not None:
            self.on_event(op)

    def _on_merge(self, op: MergeOp, send: Send) -> None:
        cid = op.customer_id
        current = self.store.load(cid)
        self._redirect(cid, op.into_id, op.decided_at)
        self.store.drop(cid)
        if current is not None:
            send(AbsorbOp(customer_id=op.into_id, context=current, decided_at=op.decided_at))

    def _split_since(self, op: AbsorbOp) -> SplitOp | None:
        """This customer's last split, if it was decided after the merge ``op`` brings."""
        raw = self.last_splits.get(op.customer_id)
        split = None if raw is None else decode_split(raw)
        return split if split is not None and op.decided_at < split.decided_at else None

    def _divide(self, op: AbsorbOp, split: SplitOp, moved_to: str | None, send: Send) -> None:
        """The merge was decided before this customer was split: divide what it brings the
        way the split divided everything else."""
        cid, policy = op.customer_id, self.policy
        for piece, part in ctxlogic.split_context(
            op.context, split.pieces, split.id_map, policy
        ).items():
            if piece == cid and moved_to is not None:
                # merged away since the split: its part follows the merge
                send(RestoreOp(customer_id=moved_to, context=part, decided_at=split.decided_at))
            elif piece == cid:
                current = self.store.load(cid) or CustomerContext(customer_id=cid)
                self.store.store(cid, ctxlogic.restore(current, part, policy))
            else:
                send(RestoreOp(customer_id=piece, context=part, decided_at=split.decided_at))

    def _on_absorb(self, op: AbsorbOp) -> None:
        cid = op.customer_id
        current = self.store.load(cid) or CustomerContext(customer_id=cid)
        updated = ctxlogic.absorb(current, op.context, self.policy)
        self.store.store(cid, updated or current, changed=updated is not None)

    def _on_split(self, op: SplitOp, send: Send) -> None:
        cid = op.customer_id
        self.last_splits[cid] = encode_op(op)
        current = self.store.load(cid)
        if current is None:
            return
        parts = ctxlogic.split_context(current, op.pieces, op.id_map, self.policy)
        for piece, part in parts.items():
            if piece == cid:
                self.store.store(cid, part)
            else:
                send(RestoreOp(customer_id=piece, context=part, decided_at=op.decided_at))
        if cid not in parts:
            self.store.drop(cid)

    def _on_restore(self, op: RestoreOp, moved: tuple[str, int] | None, send: Send) -> None:
        cid = op.customer_id
        overtaken = moved is not None and moved[1] > (op.decided_at or 0)
        if op.context is not None and op.split is None and moved is not None and overtaken:
            # A part on its second hop (from the split customer's partition), overtaken by
            # a merge of this piece decided after the split (the first restore, on this
            # partition, had lifted the redirect before): the part follows the merge, as a
            # restore (folded by event id: an absorb counts a merged-away id only once).
            send(replace(op, customer_id=moved[0]))
            return
        if op.context is None or op.split is not None:
            self.redirects.pop(cid, None)  # the first restore; a part may have overtaken it
        if op.split is not None:
            # A merge into this customer decided before the split that restored it may
            # still be on its way (it travels through the merged customer's partition):
            # _divide divides it the way the split divided the rest.
            self.last_splits[cid] = encode_op(op.split)
        if op.context is not None:
            current = self.store.load(cid) or CustomerContext(customer_id=cid)
            self.store.store(cid, ctxlogic.restore(current, op.context, self.policy))

    def _on_erase(self, op: EraseOp) -> None:
        self.redirects[op.customer_id] = ERASED
        self.store.drop(op.customer_id)
