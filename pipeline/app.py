"""The faust application: topics, tables and the identity and context stages.

Data flow (each arrow is a Kafka topic; see pipeline/README.md for the protocol)::

    raw.events ──ingest──▶ <app>-identity-requests (key: tenant) ◀── split / erase (API)
      (pipeline/ingest.py: batches through confluent-kafka, on a thread of the worker)
                 │  └────▶ raw.events.dlq (bad input, with the reason)
                 ▼
    identity (sole writer of the identity tables for its tenant)
                 ├──────▶ identity.merges, identity.splits
                 ▼
    <app>-customer-ops (key: customer id) ──context──▶ customer.context (compacted)

The domain logic lives in plain modules (normalize, identity, context); this module only
moves bytes between topics and tables. Delivery is at-least-once: every handler is
idempotent, so a redelivered message re-emits the same outputs and changes no state.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache, partial
from typing import Any, cast

import faust
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]
from confluent_kafka import Producer
from faust.streams import _current_event
from faust.tables.manager import TableManager
from faust.types import TP, EventT

from omnistitch.kafka_client import client_config, durable_producer_config, faust_credentials
from omnistitch.settings import WorkerSettings
from omnistitch.topics import (
    CUSTOMER_CONTEXT,
    ENGAGEMENT_TRIGGERS,
    IDENTITY_MERGES,
    IDENTITY_SPLITS,
    RAW_EVENTS_DLQ,
    TopicSpec,
    internal_topic,
)
from pipeline import context_state, fetch_pauses, table_recovery, triggers
from pipeline import metrics as m
from pipeline.changelog_replay import ChangelogReplay
from pipeline.consumer_loop import LoopStageConsumer
from pipeline.context import derive
from pipeline.context_ops import ContextOps, Sent, erase_ops, resolve_ops, split_ops
from pipeline.context_policy import ContextPolicy, load_context_policy
from pipeline.context_state import CustomerContext, Event
from pipeline.dead_letter import dead_letter
from pipeline.identity import (
    IdentityEngine,
    IdentityError,
    IdentityTables,
    Observation,
)
from pipeline.lru import WeightedLru
from pipeline.ops import (
    MAX_REQUESTS_PER_RECORD,
    AnyCustomerOp,
    EraseRequest,
    ResolveRequest,
    SplitRequest,
    TickOp,
    batch_records,
    customer_ops,
    encode_op,
    identity_requests,
)
from pipeline.rocksdb_memory import STORE_URL, RocksDBMemory
from pipeline.rules import Rules, load_rules
from pipeline.stage_consumer import StageConsumer
from pipeline.stage_failure import stage_failed
from pipeline.table_writer import NOT_STAGED, Table, TableWriter, read_row
from pipeline.weighted_assignor import weighted_assignor
from pipeline.write_behind import WriteBehind
from schemas.identity import Freshness, Merge, Split

log = logging.getLogger(__name__)

Stage = Callable[[faust.StreamT[bytes]], Awaitable[None]]


def _order(offset: int, index: int, step: int) -> int:
    """A total order of identity decisions: the identity log offset, the request's place in
    that record's batch, then merges before the split that the same request may cause."""
    return (offset * MAX_REQUESTS_PER_RECORD + index) * 2 + step


@lru_cache(maxsize=1 << 14)
def key_partition(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as aiokafka and the Java client
    use) gives ``key``: where faust would send it, and where its table rows live.

    Cached: aiokafka's murmur2 is pure Python (~5 µs a key), and the same customers get ops
    batch after batch."""
    return cast(int, murmur2(key.encode()) & 0x7FFFFFFF) % partitions


@contextmanager
def processing(event: EventT[Any]) -> Iterator[None]:
    """Make ``event`` faust's current event while its batch is handled.

    faust reads a table row from the RocksDB partition of the event being processed (and
    ``read_row`` does too), which it finds through a context variable its stream sets per
    message. A batch from ``take_events`` is handled outside that iteration, so each
    partition's part of it is handled with one of its own events set here, exactly as
    faust would.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def by_partition(events: Sequence[EventT[Any]]) -> list[list[EventT[Any]]]:
    """A batch's events grouped by partition, each group in offset order."""
    groups: dict[tuple[str, int], list[EventT[Any]]] = {}
    for event in events:
        groups.setdefault((event.message.topic, event.message.partition), []).append(event)
    return list(groups.values())


class Outbox:
    """The customer ops a stage batch produced, sent after it as one record per partition.

    Ops keep their order within a partition (the only order Kafka has), so the context
    stage sees them exactly as if each had been a record of its own.
    """

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.ops: dict[int, list[bytes]] = {}

    def add(self, op: Sent) -> None:
        partition = key_partition(op.customer_id, self.partitions)
        self.ops.setdefault(partition, []).append(encode_op(op))

    def send(self, writer: TableWriter, topic: str) -> None:
        """Produce the ops with the stage's table writer: acknowledged by the same commit
        as its rows, before the stage's input offsets are (``flush_all``)."""
        ops, self.ops = self.ops, {}
        for partition, parts in sorted(ops.items()):
            for record in batch_records(parts, "ops"):
                writer.send(topic, partition, record)


@dataclass
class _Unwritten:
    """A context changed in the current batch, written once when the batch ends."""

    context: CustomerContext
    changed: bool
    published: bool


def _fail_fast(stage: str, fun: Stage) -> Stage:
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
            stage_failed(stage)

    guarded.__name__ = guarded.__qualname__ = stage
    return guarded


class RawKeyTable(faust.Table):  # type: ignore[type-arg]
    """A table whose ``str`` keys are serialised raw (UTF-8), not as JSON.

    faust hashes a table key's *serialised* bytes to find the partition (and the worker)
    that holds it. Our topics carry raw keys, so the tables must too: with JSON keys,
    ``"default"`` and ``default`` hash to different partitions and every routed query
    would go to a worker that does not hold the data.
    """

    def _serializer_from_type(self, typ: Any) -> Any:
        return "raw" if typ is str else super()._serializer_from_type(typ)


#: Producer batching (see the Performance section of README.md for the measurements).
PRODUCER_BATCH_BYTES = 524_288  # under the broker's 1 MB message.max.bytes default
PRODUCER_REQUEST_BYTES = 4_194_304
PRODUCER_LINGER_S = 0.005
#: RocksDB write buffers per table partition (one database each: 9 tables x 8 partitions).
#: faust's defaults (64 MiB write buffers x 3, a 2 GiB block cache) let a worker's RSS grow
#: with its data: 661 MB at 100,000 customers in `bench --growth`. The block cache and the
#: write-buffer budget are shared by all the databases (pipeline/rocksdb_memory.py).
ROCKSDB_OPTIONS: dict[str, int] = {
    "write_buffer_size": 4 * 1024 * 1024,
    "max_write_buffer_number": 2,
}
#: How long the table writers' producers hold a partition's records to batch them. A stage
#: produces its batch's records at once, when the batch ends (a row or op record per
#: partition), so 1 ms gathers them; the connectors' 5 ms, meant for records arriving one
#: by one, held each of them 4 ms longer for no larger request (one per partition either
#: way: librdkafka sends a partition's records in requests of their own).
WRITER_LINGER_MS = 1
#: Records a stage's faust stream may hold unprocessed, in stage batches.
STREAM_BUFFER_BATCHES = 4
#: Sends allowed to wait in faust's producer buffer, per message a batch may hold.
CHANGELOG_BUFFER_PER_RECORD = 20


class Pipeline:
    """The worker's faust app with its topics and tables, built from settings."""

    def __init__(self, settings: WorkerSettings, rules: Rules | None = None) -> None:
        self.settings = s = settings
        self.rules = rules or load_rules(settings.rules_file)
        self.policy: ContextPolicy = load_context_policy(
            settings.context_file, timeline_limit=settings.timeline_limit
        )
        n = s.raw_partitions
        requests_topic = internal_topic(s, s.app_id, "identity-requests")
        #: the tenant's identity-requests partition: every identity decision runs on it
        self.tenant_identity_tp = TP(requests_topic, key_partition(s.tenant, n))
        self.app = app = faust.App(
            s.app_id,
            broker=[f"kafka://{hp}" for hp in s.bootstrap_servers.split(",")],
            store=STORE_URL,
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
            Table=RawKeyTable,
            broker_commit_every=500,
            broker_commit_interval=1.0,
            # A customer context is tens of KB: with faust's 16 KB default every context
            # (and its changelog copy) went out as a batch, and a request, of its own.
            producer_max_batch_size=PRODUCER_BATCH_BYTES,
            producer_max_request_size=PRODUCER_REQUEST_BYTES,
            producer_linger=PRODUCER_LINGER_S,
            table_standby_replicas=s.standby_replicas,
            broker_session_timeout=s.session_timeout_s,
            broker_credentials=faust_credentials(s),
            # faust buffers up to 4,096 unprocessed records per stream by default. Every
            # record the two stages read is a batch record of up to 500 messages (~250 KB),
            # so that default let a worker behind on its identity log hold ~1 GB (RSS
            # 1,017 MB while draining 2,000,000 events); a few batches' worth is enough.
            stream_buffer_maxsize=STREAM_BUFFER_BATCHES * s.batch_records,
            # the worker owning the tenant's identity index takes fewer of the others
            PartitionAssignor=weighted_assignor(
                requests_topic,
                {self.tenant_identity_tp.partition: s.identity_partition_weight},
            ),
        )

        # aiokafka fetches only the partitions faust reads (pipeline/fetch_pauses.py), on
        # the stages' loop unless consumer_thread (pipeline/consumer_loop.py); the stages'
        # partitions are admitted in offset order (pipeline/stage_consumer.py).
        fetch_pauses.install(app, StageConsumer if s.consumer_thread else LoopStageConsumer)
        # changelogs replayed (standby copies, restores) off the event loop
        # (pipeline/changelog_replay.py, pipeline/table_recovery.py)
        if s.changelog_replay == "librdkafka":
            table_recovery.install(app, ChangelogReplay(client_config(s)))

        # faust stops taking input while more than `max_messages` (100) sends wait in its
        # producer buffer, and logs a warning each time. Table rows and customer ops no
        # longer go through it (table_writer.py), but a batch's merges, splits and dead
        # letters still do, one record each, so the bound scales with the batch (at 100,
        # when the rows went through it too, it stalled every few records: 4,505 warnings
        # in one drain).
        app.producer.buffer.max_messages = max(100, CHANGELOG_BUFFER_PER_RECORD * s.batch_max)
        # faust flushes its producer right before it commits the stages' input offsets; the
        # table writers' changelog records must be acknowledged by then too. Waiting for
        # them there, not after every batch, keeps a broker round trip per stage batch off
        # the path of every event (at 1,000 ev/s offered, p50 grew to 2.5 s with it there).
        self._flush_faust = app.producer.flush

        async def flush_all() -> None:
            # The batches sealed by now hold every offset faust is committing (it chose
            # them before this flush); their outputs sent through its producer are in it.
            marks = (self.identity_writer.mark(), self.context_writer.mark())
            await self._flush_faust()
            await self.identity_writer.commit(marks[0])
            await self.context_writer.commit(marks[1])

        app.producer.flush = flush_all  # type: ignore[method-assign]

        def topic(name: str, **kw: Any) -> faust.TopicT:
            return app.topic(name, key_type=str, value_type=bytes, **kw)

        def internal(name: str) -> faust.TopicT:
            return topic(internal_topic(s, s.app_id, name), partitions=n, internal=True)

        self.dlq_topic = app.topic(s.topic(RAW_EVENTS_DLQ), key_type=bytes, value_type=bytes)
        # The contexts table's changelog (below), so without acks like faust's own
        # changelogs: faust tracks offset gaps of acked topics in an interval tree, and a
        # compacted topic read during recovery is all gaps (that made recovering 100,000
        # customers take ~220 records/s).
        self.context_topic = topic(s.topic(CUSTOMER_CONTEXT), acks=False)
        self.merges_topic = topic(s.topic(IDENTITY_MERGES))
        self.splits_topic = topic(s.topic(IDENTITY_SPLITS))
        self.triggers_topic = topic(s.topic(ENGAGEMENT_TRIGGERS))
        self.requests_topic = internal("identity-requests")
        self.ops_topic = internal("customer-ops")
        # what the stages read, admitted in offset order (pipeline/stage_consumer.py)
        cast(StageConsumer, app.consumer).ordered_topics = frozenset(
            t.get_topic_name() for t in (self.requests_topic, self.ops_topic)
        )

        self.rocksdb_memory = rocksdb_memory = RocksDBMemory.from_settings(s)

        def table(name: str, value_type: type, **kw: Any) -> faust.types.TableT[str, Any]:
            return app.Table(
                name,
                key_type=str,
                value_type=value_type,
                partitions=n,
                options=rocksdb_memory.table_options(**ROCKSDB_OPTIONS),
                **kw,
            )

        # Every table row a stage batch changes is written through these, once per batch:
        # one per stage, each with its own producer (the two stages' batches interleave
        # on the event loop, and a commit waits for its own stage's records only).
        producer = partial(Producer, durable_producer_config(s, **{"linger.ms": WRITER_LINGER_MS}))
        self.identity_writer = TableWriter(producer)
        self.context_writer = TableWriter(producer)
        # Identity tables: written only by the identity stage, on the tenant's partition.
        self.identity_tables = IdentityTables(
            owners=table("identity-owners", str),
            parents=table("identity-parents", str),
            nodes=table("identity-nodes", bytes),
            hubs=table("identity-hubs", bytes),
            suppressed=table("identity-suppressed", str),
        )
        # The engine works on an in-memory tier over them: hot rows read from memory, and
        # each row a batch changed written (and changelogged) once when the batch ends.
        t, rows = self.identity_tables, s.identity_hot_rows
        # (suppressed is written only by erasures, but read for every identifier of every
        # event: through the tier, the usual answer, "absent", is a dict lookup.)
        self.identity_tiers: list[WriteBehind[Any]] = [
            WriteBehind(table, rows, partial(read_row, cast(Table, table)))
            for table in (t.owners, t.parents, t.nodes, t.hubs, t.suppressed)
        ]
        tiered = IdentityTables(*self.identity_tiers)
        self.engine = IdentityEngine(self.rules, tiered, s.identity_parsed_nodes)
        self.identity_position = Freshness(partition=None, offset=None, event_time=None)
        # Context tables: written only by the context stage, keyed by customer id.
        # ``customer.context`` *is* the contexts table's changelog (as Kafka Streams does
        # with a source-topic changelog): one record per write serves both the view and
        # recovery, every row write publishes the view, and removing a row tombstones it.
        # It is keyed and partitioned like the ops topic, so row p of the table is
        # partition p of the view.
        self.contexts = table("customer-contexts", bytes, changelog_topic=self.context_topic)
        self.redirects = table("customer-redirects", str)
        # The last split of each customer, so that a merge decided before it but absorbed
        # after it (the two travel different partitions) is divided the same way.
        self.last_splits = table("customer-splits", bytes)
        # Customers with a delayed engagement trigger pending -> its due time (ISO 8601).
        # Small (only pending customers), so the timer scans it; see _tick_due.
        self.trigger_schedule = table("trigger-schedule", str)

        # The context stage reads a redirect for every op and a customer's due time for
        # every context it writes, and is their sole writer per partition, so it reads
        # them through in-memory tiers too (absent rows cached: most customers were
        # never merged away); each row a batch changed is written once, per partition.
        def tier(table: faust.types.TableT[str, Any]) -> WriteBehind[Any]:
            return WriteBehind(table, s.context_hot_rows, partial(read_row, table))

        self.redirects_tier: WriteBehind[str] = tier(self.redirects)
        self.splits_tier: WriteBehind[bytes] = tier(self.last_splits)
        self.schedule_tier: WriteBehind[str] = tier(self.trigger_schedule)
        self.context_tiers: list[WriteBehind[Any]] = [
            self.redirects_tier,
            self.splits_tier,
            self.schedule_tier,
        ]
        self.context_ops = ContextOps(
            self,
            self.redirects_tier,
            self.splits_tier,
            self.policy,
            on_event=lambda op: self._folded.append(op.event),
        )
        # Parsed contexts of recently active customers: parsing a context costs ~O(timeline)
        # (≈0.8 ms at 200 entries), far more than the event that changes it. Written through
        # on every change, so the table always has what the cache has; forgotten whenever
        # partitions are revoked, since another worker may then change them.
        # Bounded by weight too (a context's encoded size), since one context weighs a few
        # KB to hundreds.
        self.context_cache: WeightedLru[str, CustomerContext] = WeightedLru(
            s.context_cache_size, round(s.context_cache_mb * 1024 * 1024)
        )
        # Contexts the context stage changed in the batch it is handling, not yet written.
        self._unwritten: dict[str, _Unwritten] = {}
        # The ops partition whose part of a batch the context stage is handling.
        self._partition = 0
        # Events the batch folded, counted (and their latency observed) once it is written.
        self._folded: list[Event] = []

        async def forget_cached(_sender: Any, *args: Any, **_kw: Any) -> None:
            self.context_cache.clear()
            for tier in (*self.identity_tiers, *self.context_tiers):
                tier.forget()

        # mode's signals are loosely typed
        app.on_partitions_revoked.connect(cast(Any, forget_cached))
        app.on_partitions_assigned.connect(cast(Any, forget_cached))

        for source, name, fun in (
            (self.requests_topic, "identity", self._identity),
            (self.ops_topic, "context", self._context),
        ):
            app.agent(source, name=name)(_fail_fast(name, fun))
        app.timer(s.trigger_interval_s, name="engagement-triggers")(self._tick_due)

    def close_writers(self) -> bool:
        """At a clean stop: the table writers' sealed batches released once their outputs
        are acknowledged, and everything flushed (bounded). True when every row written to
        local state reached its changelog; False (a batch cut short, an output
        unacknowledged) makes the next start recover from the changelogs instead."""
        released = True
        for writer in (self.identity_writer, self.context_writer):
            writer.close()
            released = released and not writer.unfinished
        return released

    def warm(self) -> None:
        """Connect the table writers' producers now, so that no batch waits for it."""
        for writer in (self.identity_writer, self.context_writer):
            writer.producer.list_topics(timeout=10)

    @property
    def tables(self) -> list[faust.types.TableT[str, Any]]:
        t = self.identity_tables
        identity = [t.owners, t.parents, t.nodes, t.hubs, t.suppressed]
        context = [self.contexts, self.redirects, self.last_splits, self.trigger_schedule]
        tables = [*identity, *context]
        return cast(list[faust.types.TableT[str, Any]], tables)

    def internal_topics(self) -> list[TopicSpec]:
        """Topics faust would create itself, created up front instead.

        A consumer that subscribes before the broker's metadata lists a topic ignores it
        until the next rebalance ("Ignoring missing topic"), so a fresh worker would never
        read its own internal topics. Creating them before faust starts avoids the race.
        """
        n = self.settings.raw_partitions
        compact = {"cleanup.policy": "compact"}
        changelogs = [
            TopicSpec(t.changelog_topic.get_topic_name(), n, compact) for t in self.tables
        ]
        streams = [TopicSpec(t.get_topic_name(), n) for t in (self.requests_topic, self.ops_topic)]
        return [*streams, *changelogs]

    def stage_inputs(self) -> dict[str, str]:
        """Each stage's input topic, by stage name."""
        return {
            "identity": self.requests_topic.get_topic_name(),
            "context": self.ops_topic.get_topic_name(),
        }

    @property
    def ready(self) -> bool:
        """True once partitions are assigned and every table has recovered."""
        recovery = cast(TableManager, self.app.tables).recovery
        return bool(recovery.completed.is_set() and not self.app.rebalancing)

    # -- batches --------------------------------------------------------------------------
    async def _batches(self, stream: faust.StreamT[bytes]) -> Any:
        """The stream in batches (at most ``batch_records`` records, waiting at most
        ``batch_wait_s``), each grouped by partition. faust acks a batch's records when the
        next batch is asked for, so everything a batch produced is sent by then.

        The records are batch records, each carrying up to ``batch_max`` messages: counted
        in records, a batch of 500 once held 100,000 requests, and the identity stage held
        the event loop for seconds while the context stage starved."""
        s = self.settings
        consumer = cast(StageConsumer, self.app.consumer)
        async for events in cast(Any, stream).take_events(s.batch_records, s.batch_wait_s):
            # in offset order, none skipped (pipeline/offset_order.py)
            taken = await consumer.admit(events)
            if taken:
                yield by_partition(taken)
                consumer.done(taken)  # the stage asks for the next batch: this one is sent

    async def send_request(self, request: SplitRequest | EraseRequest) -> None:
        """Append one request to the tenant's identity log (the API's split and erase)."""
        body = request.model_dump_json().encode()
        await self.requests_topic.send(key=self.settings.tenant, value=body)

    # -- stage 2: resolve identity (single writer per tenant) ---------------------------
    async def _identity(self, stream: faust.StreamT[bytes]) -> None:
        """Per batch, in this order: merges, splits and dead letters sent as requests are
        resolved; then each identity row the batch changed written once to RocksDB
        (``TableWriter``); then the customer ops (one record per ops partition); then the
        batch sealed (its rows' changelog records produced once its ops, merges and splits
        are acknowledged) and its records acked. faust commits acked offsets only after its
        producer and the table writers' are flushed (``flush_all``)."""
        async for groups in self._batches(stream):
            out = Outbox(self.settings.raw_partitions)
            for group in groups:
                partition = group[0].message.partition
                with processing(group[0]):  # faust reads the current event's partition
                    for item in group:
                        await self._identity_record(item, out)
                for tier in self.identity_tiers:
                    put = partial(self.identity_writer.put, cast(Table, tier.table), partition)
                    tier.flush(put)
                self.identity_writer.write(partition)
            out.send(self.identity_writer, self.ops_topic.get_topic_name())
            self.identity_writer.seal()

    async def _identity_record(self, item: EventT[Any], out: Outbox) -> None:
        msg = item.message
        requests = identity_requests(cast(bytes, item.value))
        event_time = self.identity_position.event_time
        for index, request in enumerate(requests):
            if isinstance(request, ResolveRequest):
                await self._resolve(request, _order(msg.offset, index, 0), out)
                event_time = request.evidence.occurred_at
            elif isinstance(request, SplitRequest):
                await self._split(request, _order(msg.offset, index, 1), out)
            else:
                await self._erase(request, out)
        m.IDENTITY_MESSAGES.inc(len(requests))
        self.identity_position = Freshness(
            partition=msg.partition, offset=msg.offset, event_time=event_time
        )

    async def _resolve(self, request: ResolveRequest, decided_at: int, out: Outbox) -> None:
        decision = self.engine.resolve(Observation(request.identifiers, request.evidence))
        # A counter's inc costs ~0.5 µs (a lock) even by 0, and most events change none.
        if decision.suppressed:
            m.SUPPRESSED.inc(decision.suppressed)
        for rejected in decision.rejected:
            m.REJECTED_LINKS.labels(rejected.reason).inc()
        if decision.quarantined:
            m.QUARANTINES.inc(len(decision.quarantined))
        if decision.orphaned:
            m.ORPHANED_OWNERS.inc(decision.orphaned)
        if decision.customer_id is None:
            if decision.suppressed < len(request.identifiers):
                await dead_letter(
                    self.dlq_topic,
                    "only_quarantined_identifiers",
                    "every usable identifier is a quarantined hub",
                    request.event_id.encode(),
                    request.event,  # the raw event, as received: `dlq replay` can re-send it
                    stage="identity",
                )
            return  # an erased person's event: dropped, never re-stored
        if decision.created:
            m.CUSTOMERS_CREATED.inc()
        if decision.merges:
            m.MERGES.inc(len(decision.merges))
        for merge in decision.merges:
            log.info(
                "merge %s into %s (event %s)",
                merge.from_id,
                merge.into_id,
                request.event_id,
                extra={"event_id": request.event_id, "customer_id": merge.into_id},
            )
            record = Merge(
                from_id=merge.from_id,
                into_id=merge.into_id,
                link_id=request.event_id,
                evidence=request.evidence.public(),
            )
            body = record.model_dump_json().encode()
            await self._send_output(self.merges_topic, merge.from_id, body, self.identity_writer)
        for op in resolve_ops(request, decision, decided_at):
            out.add(op)
        for undone in decision.splits:
            log.info(
                "quarantine of a hub un-merged %s into %s", undone.old_root, list(undone.pieces)
            )
            undo = Split(
                customer_id=undone.old_root,
                reason="quarantine",
                id_map=undone.id_map,
                customers=sorted(undone.pieces),
                requested_at=request.evidence.occurred_at,
            )
            await self._publish_split(undo)

    async def _split(self, request: SplitRequest, decided_at: int, out: Outbox) -> None:
        try:
            split = self.engine.split(request.customer_id, request.link_id)
        except IdentityError as exc:
            m.FAILED_REQUESTS.labels("split").inc()
            log.warning("split request %s refused: %s", request.request_id, exc)
            return
        log.info("split %s at link %s into %s", split.old_root, request.link_id, list(split.pieces))
        record = Split(
            customer_id=split.old_root,
            link_id=request.link_id,
            id_map=split.id_map,
            customers=sorted(split.pieces),
            requested_at=request.requested_at,
        )
        for op in split_ops(split, decided_at):
            out.add(op)
        await self._publish_split(record)

    async def _publish_split(self, record: Split) -> None:
        m.SPLITS.labels(record.reason).inc()
        body = record.model_dump_json().encode()
        await self._send_output(self.splits_topic, record.customer_id, body, self.identity_writer)

    async def _erase(self, request: EraseRequest, out: Outbox) -> None:
        try:
            erased = self.engine.erase(request.customer_id, request.requested_at)
        except IdentityError as exc:
            m.FAILED_REQUESTS.labels("erase").inc()
            log.warning("erase request %s refused: %s", request.request_id, exc)
            return
        m.ERASURES.inc()
        log.info("erased customer %s (%d ids)", erased.customer_id, len(erased.member_ids))
        for op in erase_ops(erased):
            out.add(op)

    # -- stage 3: fold into the customer's context, publish the view --------------------
    async def _context(self, stream: faust.StreamT[bytes]) -> None:
        """Per batch and ops partition, each changed context is written once to RocksDB,
        in this order: its due triggers sent, then the ``customer-contexts`` table and the
        trigger schedule; after the whole batch, the ops it sends on (absorbs, restores,
        forwards: one record per ops partition); then the batch is sealed and its records
        acked. Its rows reach their changelogs (the contexts table's *is*
        ``customer.context``) once its triggers and ops are acknowledged: a crash before
        re-runs the batch, which every op survives (idempotent), and a context removed
        from the view was always handed over first."""
        async for groups in self._batches(stream):
            out = Outbox(self.settings.raw_partitions)
            for group in groups:
                self._partition = group[0].message.partition
                with processing(group[0]):  # faust reads the current event's partition
                    for item in group:
                        ops = customer_ops(cast(bytes, item.value))
                        m.CONTEXT_MESSAGES.inc(len(ops))  # once a record, not an op
                        for op in ops:
                            self.context_ops.apply(op, out.add)
                    await self._write_contexts()
            out.send(self.context_writer, self.ops_topic.get_topic_name())
            self.context_writer.seal()

    # -- the context store (pipeline.context_ops.ContextStore) --------------------------
    def load(self, cid: str) -> CustomerContext | None:
        unwritten = self._unwritten.get(cid)
        if unwritten is not None:
            return unwritten.context
        cached = self.context_cache.get(cid)
        if cached is not None:
            return cached
        raw = self.context_writer.staged(self.contexts, self._partition, cid)
        if raw is NOT_STAGED:
            raw = self.contexts.get(cid)
        if not isinstance(raw, bytes):  # never stored, or removed in this batch
            return None
        m.CONTEXT_CACHE_MISSES.inc()
        ctx = context_state.decode(raw)
        self.context_cache.put(cid, ctx, len(raw))
        return ctx

    def drop(self, cid: str) -> None:
        """Forget a customer's context; removing its row tombstones it on the view."""
        self._unwritten.pop(cid, None)
        self.context_cache.pop(cid)
        self.context_writer.put(self.contexts, self._partition, cid, None)
        self.schedule_tier.pop(cid, None)

    def store(
        self,
        cid: str,
        ctx: CustomerContext,
        *,
        changed: bool = True,
        published: bool = True,
    ) -> None:
        """Keep a context to be written when the batch's partition is done (``_write_contexts``):
        a customer with several ops in one batch is serialised, changelogged and published
        once. ``published`` False (a tick) writes it only if a trigger fires."""
        unwritten = self._unwritten.get(cid)
        if unwritten is None:
            self._unwritten[cid] = _Unwritten(ctx, changed, published)
        else:
            unwritten.context = ctx
            unwritten.changed |= changed
            unwritten.published |= published

    async def _write_contexts(self) -> None:
        """Write the contexts the batch changed: triggers, then the table and the schedule.

        Triggers first: their ids are recorded in the context written next, whose changelog
        record (``customer.context``) waits for their acknowledgement (``TableWriter.after``),
        so a crash in between re-emits them with the same ids (consumers dedupe).
        Re-publishes even when nothing changed (a tick that fires nothing does not): after a
        crash the table write may have landed while the topic write did not
        (at-least-once). An unchanged context keeps its ``updated_at``: a duplicate event
        changes nothing, not even the stamp.
        """
        unwritten, self._unwritten = self._unwritten, {}
        now = self.now()
        for cid, u in unwritten.items():
            ctx, changed, published = u.context, u.changed, u.published
            if changed:  # its events were folded without deriving (ContextStore); stamped
                ctx = derive(ctx, self.policy, updated_at=now)
            due, recorded = triggers.due_triggers(ctx, now, self.policy)
            for trigger in due:
                body = trigger.model_dump_json().encode()
                await self._send_output(self.triggers_topic, cid, body, self.context_writer)
                m.TRIGGERS.labels(trigger.rule).inc()
            if recorded is not None:
                ctx, published, changed = recorded, True, True
            # Written only when it changes: every table write is a changelog record, and a
            # pending trigger's due time stays the same across most events of its customer.
            due_at = triggers.next_due(ctx)
            due_iso = None if due_at is None else due_at.isoformat()
            if self.schedule_tier.get(cid) != due_iso:
                if due_iso is None:
                    self.schedule_tier.pop(cid, None)
                else:
                    self.schedule_tier[cid] = due_iso
            if not published:  # a tick that fired nothing: kept, with the weight it was read at
                weight = self.context_cache.weight_of(cid)
                if weight is None:  # evicted meanwhile: weighed by encoding it
                    weight = len(context_state.encode(ctx))
                self.context_cache.put(cid, ctx, weight)
                continue
            if changed and ctx.updated_at != now:  # a trigger recorded in an unchanged one
                ctx = context_state.replace(ctx, updated_at=now)
            # the row's changelog record *is* the view (customer.context)
            encoded = context_state.encode(ctx)
            self.context_writer.put(self.contexts, self._partition, cid, encoded)
            self.context_cache.put(cid, ctx, len(encoded))
        for tier in self.context_tiers:
            tier.flush(partial(self.context_writer.put, cast(Table, tier.table), self._partition))
        self.context_writer.write(self._partition)
        folded, self._folded = self._folded, []
        m.events_out(self.context_topic.get_topic_name(), folded)

    async def _tick_due(self) -> None:
        """Timer: ask the context stage to fire the triggers that fell due.

        The stage itself does the work (a TickOp through the ops topic, keyed by the
        customer), so a context is only ever written by its one agent. Only customers with
        a pending trigger are in the schedule table, so the scan is cheap.
        """
        if not self.ready:
            return
        now = self.now()
        for cid, due_iso in list(self.trigger_schedule.items()):
            if datetime.fromisoformat(due_iso) <= now:
                await self._send_op(TickOp(customer_id=cid))

    @staticmethod
    async def _send_output(topic: faust.TopicT, key: str, body: bytes, writer: TableWriter) -> None:
        """Send a stage batch's output through faust's producer; the batch's changelog
        records wait for its acknowledgement (``TableWriter.after``)."""
        sent = await topic.send(key=key, value=body)
        writer.after(cast("asyncio.Future[Any]", sent))

    async def _send_op(self, op: AnyCustomerOp) -> None:
        await self.ops_topic.send(key=op.customer_id, value=encode_op(op))

    def customer_snapshot(self, cid: str) -> dict[str, Any] | None:
        """The stored context of a customer held by this worker, as JSON-ready data."""
        ctx = self.load(cid)
        return None if ctx is None else context_state.to_builtins(ctx)

    def now(self) -> datetime:
        return datetime.now(UTC)
