"""The domain ceiling: the bench's records through the pipeline's own pure code, in-process.

The same raw records the worker drains go through the same functions its three stages call
(decode, ``intake``, the identity engine, ``context_ops``) with dicts for tables, in batches
of the worker's size, encoding and decoding every message between stages exactly as the
worker does, and serialising each changed context once per batch (its table and view
write). What is left out is Kafka and faust: no broker, no changelogs, no RocksDB.

The records go through in the order a worker drains them from the raw topic
(:func:`drain_order`): a partition's records a fetch at a time, the partitions in turn. A
customer's events are keyed by different identifiers, so they sit on different partitions
and arrive out of time order, which costs the fold more than the order they were made in.

So ``events_per_s`` is the most one worker process could stitch with today's domain code,
whatever the framework around it, and the per-stage microseconds say where that code
spends its time. The worker's figure over this one is the framework's share.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline import context_state
from pipeline.app import Outbox, key_partition
from pipeline.context import derive
from pipeline.context_ops import ContextOps, resolve_ops
from pipeline.context_policy import ContextPolicy
from pipeline.context_state import CustomerContext
from pipeline.gc_policy import tune
from pipeline.identity import IdentityEngine, IdentityTables, Observation
from pipeline.intake import Rejected, intake
from pipeline.ops import ResolveRequest, batch_records, customer_ops, identity_requests
from pipeline.rules import Rules

#: The stages timed, in the order an event meets them.
STAGES = (
    "ingest",
    "identity decode",
    "identity resolve",
    "context decode",
    "context fold",
    "context write",
)


@dataclass
class DomainFigures:
    events: int
    seconds: float
    events_per_s: float
    us_per_event: dict[str, float]  # stage -> microseconds per raw event
    customers: int
    placed: int  # events on a live customer's timeline at the end (each exactly once)
    unresolved: int  # dead-lettered: no usable identifier, or only quarantined hubs


class DictStore:
    """The context table as a dict (a ``ContextStore``); ``changed`` lists the contexts a
    batch changed, to be serialised after it. The race tests use it too."""

    def __init__(self) -> None:
        self.rows: dict[str, CustomerContext] = {}
        self.changed: set[str] = set()

    def load(self, cid: str) -> CustomerContext | None:
        return self.rows.get(cid)

    def store(
        self, cid: str, ctx: CustomerContext, *, changed: bool = True, published: bool = True
    ) -> None:
        self.rows[cid] = ctx
        self.changed.add(cid)

    def drop(self, cid: str) -> None:
        self.rows.pop(cid, None)
        self.changed.discard(cid)


#: What one fetch brings of a partition: librdkafka's ``max.partition.fetch.bytes``.
FETCH_BYTES = 1 << 20


def drain_order(
    records: Sequence[tuple[bytes, bytes]], partitions: int, fetch_bytes: int = FETCH_BYTES
) -> list[tuple[bytes, bytes]]:
    """``records`` (raw-topic key and value, in the order produced) in the order a consumer
    draining the topic receives them: each partition (the key's, as the producer's murmur2
    partitioner places it) in order, a fetch of up to ``fetch_bytes`` at a time, the
    partitions in turn."""
    queues: list[list[tuple[bytes, bytes]]] = [[] for _ in range(partitions)]
    for key, value in records:
        queues[key_partition(key.decode(), partitions)].append((key, value))
    drained: list[tuple[bytes, bytes]] = []
    at = [0] * partitions
    while len(drained) < len(records):
        for p, queue in enumerate(queues):
            size = 0
            while at[p] < len(queue) and size < fetch_bytes:
                size += len(queue[at[p]][1])
                drained.append(queue[at[p]])
                at[p] += 1
    return drained


def run_domain(
    records: Sequence[tuple[bytes, bytes]],
    rules: Rules,
    policy: ContextPolicy,
    *,
    partitions: int,
    batch: int,
    gc_gen0_threshold: int,
) -> DomainFigures:
    """Drain ``records`` (raw-topic key and value, as produced) through the three stages
    in-process, in the order a worker would drain them (:func:`drain_order`)."""
    records = drain_order(records, partitions)
    tune(gen0_threshold=gc_gen0_threshold)  # as the worker does
    engine = IdentityEngine(rules, IdentityTables({}, {}, {}, {}, {}))
    store = DictStore()
    ctx_ops = ContextOps(store, {}, {}, policy, on_event=lambda _op: None)
    spent: dict[str, float] = defaultdict(float)
    clock = time.perf_counter
    unresolved = 0
    started = clock()
    for first in range(0, len(records), batch):
        t = clock()
        requests = []
        for offset, (_key, value) in enumerate(records[first : first + batch], first):
            outcome = intake(value, rules, topic="raw", partition=0, offset=offset)
            if isinstance(outcome, Rejected):
                unresolved += 1
            else:
                requests.append(outcome[1].encode())
        log = list(batch_records(requests, "requests"))
        t = _lap(spent, "ingest", t)
        decoded = [r for record in log for r in identity_requests(record)]
        t = _lap(spent, "identity decode", t)
        out = Outbox(partitions)
        for index, req in enumerate(decoded):
            if not isinstance(req, ResolveRequest):  # the bench sends only events
                continue
            decision = engine.resolve(Observation(req.identifiers, req.evidence))
            unresolved += decision.customer_id is None
            for op in resolve_ops(req, decision, (first + index) * 2):
                out.add(op)
        t = _lap(spent, "identity resolve", t)
        # The context stage's own sends (absorbs, restores) go round again, as they do
        # through the ops topic.
        while out.ops:
            parts, out.ops = out.ops, {}
            ops_log = [r for p in sorted(parts) for r in batch_records(parts[p], "ops")]
            ops = [op for record in ops_log for op in customer_ops(record)]
            t = _lap(spent, "context decode", t)
            for op in ops:
                ctx_ops.apply(op, out.add)
            t = _lap(spent, "context fold", t)
            for cid in store.changed:  # derived once, as the worker does (ContextStore)
                ctx = store.rows[cid] = derive(store.rows[cid], policy)
                context_state.encode(ctx)
            store.changed.clear()
            t = _lap(spent, "context write", t)
    seconds = clock() - started
    n = len(records)
    return DomainFigures(
        events=n,
        seconds=round(seconds, 3),
        events_per_s=round(n / seconds, 1),
        us_per_event={s: round(spent[s] / n * 1e6, 1) for s in STAGES},
        customers=len(store.rows),
        unresolved=unresolved,
        placed=sum(len(ctx.timeline) + ctx.archived.events for ctx in store.rows.values()),
    )


def _lap(spent: dict[str, float], stage: str, since: float) -> float:
    now = time.perf_counter()
    spent[stage] += now - since
    return now
