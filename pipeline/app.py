"""The faust application: topics, tables and the three agents that form the pipeline.

Data flow (each arrow is a Kafka topic; see pipeline/README.md for the protocol)::

    raw.events ──ingest──▶ <app>-identity-requests (key: tenant)
                 │  └────▶ raw.events.dlq (bad input, with the reason)
                 ▼
    identity (sole writer of the identity tables for its tenant)
                 ├──────▶ identity.merges (key: merged-away id)
                 ▼
    <app>-customer-ops (key: customer id) ──context──▶ customer.context (compacted)

The domain logic lives in plain modules (normalize, identity, context); this module only
moves bytes between topics and tables. Delivery is at-least-once: every handler is
idempotent, so a redelivered message re-emits the same outputs and changes no state.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, cast

import faust
from faust.tables.manager import TableManager
from pydantic import ValidationError

from omnistitch.settings import WorkerSettings
from omnistitch.topics import (
    CUSTOMER_CONTEXT,
    IDENTITY_MERGES,
    RAW_EVENTS,
    RAW_EVENTS_DLQ,
    TopicSpec,
)
from pipeline import context as ctxlogic
from pipeline.dead_letter import dead_letter
from pipeline.identity import IdentityGraph
from pipeline.metrics import CUSTOMERS_CREATED, MERGES, STAGE_EVENTS
from pipeline.normalize import normalise
from pipeline.ops import CUSTOMER_OP, AbsorbOp, EventOp, MergeOp
from schemas.context import CustomerContext, Merge
from schemas.events import RawEvent

log = logging.getLogger(__name__)


#: Exit status of a worker stopped by an unexpected error in a stage (EX_SOFTWARE).
EXIT_STAGE_FAILED = 70


def _fail_fast(
    stage: str, fun: Callable[[faust.StreamT[bytes]], Awaitable[None]]
) -> Callable[[faust.StreamT[bytes]], Awaitable[None]]:
    """Wrap a stage so that an unexpected error ends the process at once.

    faust's own agent-error path commits offsets and restarts the agent, which skips the
    failing message (faust-streaming#315, #527). Exiting without a commit instead leaves
    the message to be retried after a restart, and a crash loop shows as consumer lag.
    Bad *input* never gets here: the stage that reads it dead-letters it.
    """

    async def guarded(stream: faust.StreamT[bytes]) -> None:
        try:
            await fun(stream)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.critical("stage %s failed; exiting without committing", stage, exc_info=True)
            logging.shutdown()
            os._exit(EXIT_STAGE_FAILED)

    guarded.__name__ = guarded.__qualname__ = stage
    return guarded


class Pipeline:
    """The worker's faust app with its topics and tables, built from settings."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        s = settings
        n = s.raw_partitions
        self.app = faust.App(
            s.app_id,
            broker=[f"kafka://{hp}" for hp in s.bootstrap_servers.split(",")],
            store="rocksdb://",
            datadir=str(s.state_dir),
            topic_partitions=n,
            key_serializer="raw",
            value_serializer="raw",
            producer_acks=-1,
            web_host=s.api_host,
            web_port=s.api_port,
            web_bind=s.api_host,
            web_in_thread=False,
            consumer_auto_offset_reset="earliest",
            table_cleanup_interval=3600.0,
            # Kafka 4 has no ZooKeeper-era defaults to lean on: commit often, small batches.
            broker_commit_every=500,
            broker_commit_interval=1.0,
        )
        app = self.app
        self.raw_topic = app.topic(s.topic(RAW_EVENTS), key_type=bytes, value_type=bytes)
        self.dlq_topic = app.topic(s.topic(RAW_EVENTS_DLQ), key_type=bytes, value_type=bytes)
        self.context_topic = app.topic(s.topic(CUSTOMER_CONTEXT), key_type=str, value_type=bytes)
        self.merges_topic = app.topic(s.topic(IDENTITY_MERGES), key_type=str, value_type=bytes)
        self.requests_topic = app.topic(
            f"{s.topic_prefix}{s.app_id}-identity-requests",
            key_type=str,
            value_type=bytes,
            partitions=n,
            internal=True,
        )
        self.ops_topic = app.topic(
            f"{s.topic_prefix}{s.app_id}-customer-ops",
            key_type=str,
            value_type=bytes,
            partitions=n,
            internal=True,
        )
        # Identity tables: written only by the identity agent, on the tenant's partition.
        self.owners = app.Table("identity-owners", key_type=str, value_type=str, partitions=n)
        self.parents = app.Table("identity-parents", key_type=str, value_type=str, partitions=n)
        # Context tables: written only by the context agent, keyed by customer id.
        self.contexts = app.Table("customer-contexts", key_type=str, value_type=bytes, partitions=n)
        self.redirects = app.Table("customer-redirects", key_type=str, value_type=str, partitions=n)
        self.graph = IdentityGraph(self.owners, self.parents)

        for topic, name, fun in (
            (self.raw_topic, "ingest", self._ingest),
            (self.requests_topic, "identity", self._identity),
            (self.ops_topic, "context", self._context),
        ):
            app.agent(topic, name=name)(_fail_fast(name, fun))

    def internal_topics(self) -> list[TopicSpec]:
        """Topics faust would create itself, created up front instead.

        A consumer that subscribes before the broker's metadata lists a topic ignores it
        until the next rebalance ("Ignoring missing topic"), so a fresh worker would never
        read its own internal topics. Creating them before faust starts avoids the race.
        """
        n = self.settings.raw_partitions
        compact = {"cleanup.policy": "compact"}
        changelogs = [
            TopicSpec(t.changelog_topic.get_topic_name(), n, compact)
            for t in (self.owners, self.parents, self.contexts, self.redirects)
        ]
        streams = [TopicSpec(t.get_topic_name(), n) for t in (self.requests_topic, self.ops_topic)]
        return [*streams, *changelogs]

    @property
    def ready(self) -> bool:
        """True once partitions are assigned and every table has recovered."""
        recovery = cast(TableManager, self.app.tables).recovery
        return bool(recovery.completed.is_set() and not self.app.rebalancing)

    # -- stage 1: decode, normalise, route to the identity stage ------------------------
    async def _ingest(self, stream: faust.StreamT[bytes]) -> None:
        async for key, value in stream.items():
            STAGE_EVENTS.labels("ingest").inc()
            try:
                event = RawEvent.model_validate_json(value)
            except ValidationError as exc:
                await dead_letter(self.dlq_topic, "invalid_event", str(exc), key, value)
                continue
            result = normalise(event.identifiers)
            if not result.identifiers:
                reasons = "; ".join(str(r) for r in result.rejected) or "no identifiers"
                await dead_letter(self.dlq_topic, "no_usable_identifier", reasons, key, value)
                continue
            clean = event.model_copy(update={"identifiers": list(result.identifiers)})
            await self.requests_topic.send(
                key=self.settings.tenant, value=clean.model_dump_json().encode()
            )

    # -- stage 2: resolve identity (single writer per tenant) ---------------------------
    async def _identity(self, stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            event = RawEvent.model_validate_json(value)
            keys = [i.key for i in event.identifiers]
            res = self.graph.resolve(event.event_id, event.occurred_at, keys)
            STAGE_EVENTS.labels("identity").inc()
            CUSTOMERS_CREATED.inc(res.created)
            MERGES.inc(len(res.merges))
            for m in res.merges:
                log.info("merge %s into %s (event %s)", m.from_id, m.into_id, event.event_id)
                merge = Merge(
                    from_id=m.from_id, into_id=m.into_id, event_id=event.event_id, identifiers=keys
                )
                await self.merges_topic.send(key=m.from_id, value=merge.model_dump_json().encode())
                op = MergeOp(customer_id=m.from_id, into_id=m.into_id, event_id=event.event_id)
                await self._send_op(op)
            await self._send_op(EventOp(customer_id=res.customer_id, event=event))

    # -- stage 3: fold into the customer's context, publish the view --------------------
    async def _context(self, stream: faust.StreamT[bytes]) -> None:
        limit = self.settings.timeline_limit
        async for value in stream:
            op = CUSTOMER_OP.validate_json(value)
            STAGE_EVENTS.labels("context").inc()
            cid = op.customer_id
            moved_to = self.redirects.get(cid)
            if moved_to is not None and not isinstance(op, MergeOp):
                # Raced with a merge: this customer's context now lives at the survivor.
                await self._send_op(op.model_copy(update={"customer_id": moved_to}))
            elif isinstance(op, EventOp):
                current = self._load(cid)
                updated = ctxlogic.apply_event(current, cid, op.event, op.event.identifiers, limit)
                await self._store(cid, updated or current)
            elif isinstance(op, MergeOp):
                current = self._load(cid)
                self.redirects[cid] = op.into_id
                if cid in self.contexts:
                    del self.contexts[cid]
                if current is not None:
                    await self._send_op(AbsorbOp(customer_id=op.into_id, context=current))
                await self.context_topic.send(key=cid, value=None)  # tombstone
            else:
                current = self._load(cid) or CustomerContext(customer_id=cid)
                updated = ctxlogic.absorb(current, op.context, limit)
                await self._store(cid, updated or current)

    def _load(self, cid: str) -> CustomerContext | None:
        raw = self.contexts.get(cid)
        return None if raw is None else CustomerContext.model_validate_json(raw)

    async def _store(self, cid: str, ctx: CustomerContext | None) -> None:
        # Re-publish even when nothing changed: after a crash the table write may have
        # landed while the topic write did not (at-least-once: outputs are re-emitted).
        if ctx is None:
            return
        body = ctx.model_dump_json().encode()
        self.contexts[cid] = body
        await self.context_topic.send(key=cid, value=body)

    async def _send_op(self, op: EventOp | MergeOp | AbsorbOp) -> None:
        await self.ops_topic.send(key=op.customer_id, value=op.model_dump_json().encode())

    def customer_snapshot(self, cid: str) -> dict[str, Any] | None:
        """The stored context of a customer held by this worker, as JSON-ready data."""
        ctx = self._load(cid)
        return None if ctx is None else ctx.model_dump(mode="json")
