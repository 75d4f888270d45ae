"""Messages between the pipeline's stages, and their (de)serialisation.

Identity requests go to the identity stage, keyed by tenant, in one ordered log: an event
to resolve, or an operator's split or erasure. Customer ops go to the context stage, keyed
by customer id.

Between stages, messages travel in **batches**: one Kafka record carries every request a
batch of raw records produced (``RequestBatch``), or every op one stage batch produced for
one partition of the ops topic (``OpBatch``, sent to the partition its customers' keys hash
to). A record costs the framework far more than the bytes in it, so this divides the
per-message cost of the two internal hops by the batch size. Single messages (the API's
split and erase requests, the trigger timer's ticks) are still valid records.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from schemas.context import CustomerContext
from schemas.events import RawEvent
from schemas.identity import Evidence


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- identity requests (key: tenant) -------------------------------------------------------
class ResolveRequest(_Msg):
    op: Literal["resolve"] = "resolve"
    event: RawEvent
    evidence: Evidence


class SplitRequest(_Msg):
    op: Literal["split"] = "split"
    request_id: str
    customer_id: str
    link_id: str
    requested_at: AwareDatetime


class EraseRequest(_Msg):
    op: Literal["erase"] = "erase"
    request_id: str
    customer_id: str
    requested_at: AwareDatetime


AnyIdentityRequest = ResolveRequest | SplitRequest | EraseRequest
IdentityRequest = Annotated[AnyIdentityRequest, Field(discriminator="op")]


class RequestBatch(_Msg):
    """Several identity requests in one record, resolved in order."""

    op: Literal["batch"] = "batch"
    requests: list[IdentityRequest]


IDENTITY_RECORD: TypeAdapter[AnyIdentityRequest | RequestBatch] = TypeAdapter(
    Annotated[AnyIdentityRequest | RequestBatch, Field(discriminator="op")]
)
#: The most requests one identity-log record may carry (decision positions reserve that many).
MAX_REQUESTS_PER_RECORD = 1 << 16


def identity_requests(value: bytes) -> list[AnyIdentityRequest]:
    """The requests an ``<app>-identity-requests`` record carries, in order."""
    record = IDENTITY_RECORD.validate_json(value)
    return list(record.requests) if isinstance(record, RequestBatch) else [record]


# -- customer ops (key: customer id) -------------------------------------------------------
class EventOp(_Msg):
    """Fold an event into this customer's context."""

    op: Literal["event"] = "event"
    customer_id: str
    event: RawEvent


class MergeOp(_Msg):
    """Sent to the merged-away customer: hand your context over to ``into_id``."""

    op: Literal["merge"] = "merge"
    customer_id: str
    into_id: str
    event_id: str
    decided_at: int = Field(description="Position of the decision in the identity log.")


class AbsorbOp(_Msg):
    """Sent to the survivor: fold ``context`` (a merged-away customer's) into yours."""

    op: Literal["absorb"] = "absorb"
    customer_id: str
    context: CustomerContext
    decided_at: int = Field(description="Position of the merge in the identity log.")


class SplitOp(_Msg):
    """Sent to the split customer: keep your piece, hand the others their parts."""

    op: Literal["split"] = "split"
    customer_id: str
    pieces: dict[str, list[str]]  # customer id -> identifier keys
    id_map: dict[str, str]  # every id of the old component -> its customer now
    decided_at: int = Field(description="Position of the split in the identity log.")


class RestoreOp(_Msg):
    """Sent to a piece of a split: you are a customer again; fold in your part."""

    op: Literal["restore"] = "restore"
    customer_id: str
    context: CustomerContext | None = None  # None: only stop redirecting (sent first)
    split: SplitOp | None = Field(
        default=None,
        description="With the first restore: the split that restored this customer, so a "
        "merge into it decided before the split but absorbed after is divided like it.",
    )
    decided_at: int | None = Field(
        default=None,
        description="With a context: the position of the split that divided it off, so a "
        "piece merged again since hands the part on to where it lives now.",
    )


class RedirectOp(_Msg):
    """Sent to a merged-away id whose survivor changed (after a split)."""

    op: Literal["redirect"] = "redirect"
    customer_id: str
    into_id: str
    decided_at: int = Field(default=0, description="Position of the split that re-pointed it.")


class EraseOp(_Msg):
    """Forget this customer id: context, redirect; tombstone it on customer.context."""

    op: Literal["erase"] = "erase"
    customer_id: str


class TickOp(_Msg):
    """Sent by the trigger timer: this customer has an engagement trigger due."""

    op: Literal["tick"] = "tick"
    customer_id: str


CustomerOp = Annotated[
    EventOp | MergeOp | AbsorbOp | SplitOp | RestoreOp | RedirectOp | EraseOp | TickOp,
    Field(discriminator="op"),
]
AnyCustomerOp = EventOp | MergeOp | AbsorbOp | SplitOp | RestoreOp | RedirectOp | EraseOp | TickOp


class OpBatch(_Msg):
    """Ops for customers of one ops-topic partition, applied in order."""

    op: Literal["batch"] = "batch"
    ops: list[CustomerOp]


OPS_RECORD: TypeAdapter[AnyCustomerOp | OpBatch] = TypeAdapter(
    Annotated[AnyCustomerOp | OpBatch, Field(discriminator="op")]
)


def customer_ops(value: bytes) -> list[AnyCustomerOp]:
    """The ops an ``<app>-customer-ops`` record carries, in order."""
    record = OPS_RECORD.validate_json(value)
    return list(record.ops) if isinstance(record, OpBatch) else [record]


#: The most bytes of messages one batch record carries (the broker's default limit on one
#: record is 1 MiB; a single larger message still goes alone, as it always did).
BATCH_RECORD_BYTES = 262_144


def batch_records(parts: Sequence[bytes], field: str) -> Iterator[bytes]:
    """``{"op":"batch","<field>":[...]}`` records holding ``parts`` (serialised messages) in
    order, each at most ``BATCH_RECORD_BYTES`` unless one part alone is larger, and at most
    ``MAX_REQUESTS_PER_RECORD`` parts (decision positions reserve that many per record)."""
    head = b'{"op":"batch","' + field.encode() + b'":['
    chunk: list[bytes] = []
    size = 0
    for part in parts:
        full = len(chunk) == MAX_REQUESTS_PER_RECORD
        if chunk and (full or size + len(part) > BATCH_RECORD_BYTES):
            yield head + b",".join(chunk) + b"]}"
            chunk, size = [], 0
        chunk.append(part)
        size += len(part) + 1
    if chunk:
        yield head + b",".join(chunk) + b"]}"
