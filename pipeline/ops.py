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

**The event travels as bytes.** Ingest validates a raw event once and sends the record's
own bytes on, beside the identifiers it normalised and the evidence it recorded
(``ResolveRequest``); the identity stage reads only those two (msgspec skips the event
without building it) and hands the same bytes to the context stage (``EventForward``),
which is the second and last place an event is decoded. Before, the event was validated
three times and serialised twice on its way (~45 µs of an event's ~200).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from pipeline import context_state
from pipeline.identity_state import AnyIdentifier, Evidence, Identifier, encode
from schemas.events import RawEvent
from schemas.identity import Evidence as PublicEvidence

#: A request's identifiers: msgspec structs (``identity_state.Identifier``), the JSON the
#: public model writes; pydantic's validation and dump of them cost ~4 µs a request.
_IDENTIFIERS = msgspec.json.Decoder(list[Identifier])


def _with_event(head: bytes, identifiers: Sequence[AnyIdentifier], event: bytes) -> bytes:
    """``{<head>,"identifiers":[...],"event":<event>}``: the event's JSON spliced in as is."""
    ids = encode([Identifier.of(i) for i in identifiers])
    return b"".join((b"{", head, b',"identifiers":', ids, b',"event":', event, b"}"))


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- identity requests (key: tenant) -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ResolveRequest:
    """Resolve an event: ``{"op":"resolve","identifiers":[...],"evidence":{...},"event":{...}}``.

    ``identifiers`` are the event's in canonical form (ingest normalised them);
    ``event`` is the raw record's JSON, verbatim, never decoded by the identity stage.
    """

    op: ClassVar[Literal["resolve"]] = "resolve"
    identifiers: Sequence[AnyIdentifier]
    evidence: Evidence
    event: bytes

    @classmethod
    def of(
        cls,
        event: RawEvent,
        identifiers: Sequence[AnyIdentifier],
        evidence: Evidence | PublicEvidence,
    ) -> ResolveRequest:
        """A request for an event already decoded (tests, tools)."""
        return cls(identifiers, Evidence.of(evidence), event.model_dump_json().encode())

    def encode(self) -> bytes:
        evidence = encode(self.evidence)
        return _with_event(b'"op":"resolve","evidence":' + evidence, self.identifiers, self.event)

    @property
    def event_id(self) -> str:
        return self.evidence.event_id


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
OPERATOR_REQUEST: TypeAdapter[SplitRequest | EraseRequest] = TypeAdapter(
    Annotated[SplitRequest | EraseRequest, Field(discriminator="op")]
)
#: The most requests one identity-log record may carry (decision positions reserve that many).
MAX_REQUESTS_PER_RECORD = 1 << 16


class _Record(msgspec.Struct, gc=False):
    """An identity-log record: one request, or ``{"op":"batch","requests":[...]}``."""

    op: str
    requests: list[msgspec.Raw] | None = None


class _Request(msgspec.Struct, gc=False):
    """One request, its parts left undecoded (and the event never decoded)."""

    op: str
    # empty when absent (a Raw field cannot be optional); identifiers are absent from
    # records from before the event travelled verbatim (its own were normalised then)
    evidence: msgspec.Raw = msgspec.Raw()
    event: msgspec.Raw = msgspec.Raw()
    identifiers: msgspec.Raw = msgspec.Raw()


_RECORD = msgspec.json.Decoder(_Record)
_REQUEST = msgspec.json.Decoder(_Request)
_EVIDENCE = msgspec.json.Decoder(Evidence)


class BadRequest(ValueError):
    """An identity-log record that is not a request (the message says why)."""


def identity_requests(value: bytes) -> list[AnyIdentityRequest]:
    """The requests an ``<app>-identity-requests`` record carries, in order; raises
    ``BadRequest`` for a record no stage of this pipeline wrote."""
    try:
        record = _RECORD.decode(value)
        parts = record.requests if record.op == "batch" else [msgspec.Raw(value)]
        return [_request(part) for part in parts or ()]
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        raise BadRequest(f"not an identity request: {exc}") from exc


def _request(part: msgspec.Raw) -> AnyIdentityRequest:
    wire = _REQUEST.decode(part)  # a Raw is a view of the record: decoded without a copy
    if wire.op != "resolve" or not wire.event or not wire.evidence:
        return OPERATOR_REQUEST.validate_json(bytes(part))
    event = bytes(wire.event)  # kept, and sent on
    identifiers: Sequence[AnyIdentifier] = (
        _IDENTIFIERS.decode(wire.identifiers)
        if wire.identifiers
        else RawEvent.model_validate_json(event).identifiers
    )
    evidence = _EVIDENCE.decode(wire.evidence)
    return ResolveRequest(identifiers, evidence, event)


# -- customer ops (key: customer id) -------------------------------------------------------
# msgspec structs, tagged by ``op``: the context stage decodes one per event, and the
# pydantic models they replaced took 21 µs an event to (the event validated a second time).
class _Op(
    msgspec.Struct,
    kw_only=True,
    frozen=True,
    forbid_unknown_fields=True,
    tag_field="op",
    gc=False,  # a tree, like the context it may carry (pipeline/context_state.py)
):
    customer_id: str


# Each op repeats ``kw_only`` and ``frozen``: msgspec inherits them, mypy's reading of a
# struct's fields does not.
class EventOp(_Op, kw_only=True, frozen=True, tag="event"):
    """Fold an event into this customer's context (sent as an ``EventForward``).

    Decoded, ``event`` carries the identifiers the identity stage accepted (in canonical
    form), which are what is folded: the event on the wire has them as the sender did.
    ``identifiers`` None: the event's own (records from before the event travelled verbatim).
    """

    identifiers: list[Identifier] | None = None
    event: context_state.Event

    def __post_init__(self) -> None:
        # The event was decoded for this op alone: replacing a field beats copying it.
        if self.identifiers is not None and self.event.identifiers is not self.identifiers:
            self.event.identifiers = self.identifiers


@dataclass(frozen=True, slots=True)
class EventForward:
    """An ``EventOp`` as the identity stage sends it: the event's bytes passed on as read."""

    customer_id: str
    identifiers: Sequence[AnyIdentifier]
    event: bytes

    def encode(self) -> bytes:
        head = b'"op":"event","customer_id":' + msgspec.json.encode(self.customer_id)
        return _with_event(head, self.identifiers, self.event)


class MergeOp(_Op, kw_only=True, frozen=True, tag="merge"):
    """Sent to the merged-away customer: hand your context over to ``into_id``."""

    into_id: str
    event_id: str
    decided_at: int  # position of the decision in the identity log


class AbsorbOp(_Op, kw_only=True, frozen=True, tag="absorb"):
    """Sent to the survivor: fold ``context`` (a merged-away customer's) into yours."""

    context: context_state.CustomerContext
    decided_at: int  # position of the merge in the identity log


class SplitOp(_Op, kw_only=True, frozen=True, tag="split"):
    """Sent to the split customer: keep your piece, hand the others their parts."""

    pieces: dict[str, list[str]]  # customer id -> identifier keys
    id_map: dict[str, str]  # every id of the old component -> its customer now
    decided_at: int  # position of the split in the identity log


class RestoreOp(_Op, kw_only=True, frozen=True, tag="restore"):
    """Sent to a piece of a split: you are a customer again; fold in your part.

    ``context`` None: only stop redirecting (sent first). ``split``, with the first
    restore: the split that restored this customer, so a merge into it decided before the
    split but absorbed after is divided like it. ``decided_at``, with a context: the
    position of the split that divided it off, so a piece merged again since hands the
    part on to where it lives now."""

    context: context_state.CustomerContext | None = None
    split: SplitOp | None = None
    decided_at: int | None = None


class RedirectOp(_Op, kw_only=True, frozen=True, tag="redirect"):
    """Sent to a merged-away id whose survivor changed (after a split)."""

    into_id: str
    decided_at: int = 0  # position of the split that re-pointed it


class EraseOp(_Op, kw_only=True, frozen=True, tag="erase"):
    """Forget this customer id: context, redirect; tombstone it on customer.context."""


class TickOp(_Op, kw_only=True, frozen=True, tag="tick"):
    """Sent by the trigger timer: this customer has an engagement trigger due."""


AnyCustomerOp = EventOp | MergeOp | AbsorbOp | SplitOp | RestoreOp | RedirectOp | EraseOp | TickOp


class OpBatch(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="op", tag="batch", gc=False
):
    """Ops for customers of one ops-topic partition, applied in order."""

    ops: list[AnyCustomerOp]


_OPS_RECORD = msgspec.json.Decoder(AnyCustomerOp | OpBatch)
_OPS_LOOSE = msgspec.json.Decoder(dict[str, Any])
_SPLIT = msgspec.json.Decoder(SplitOp)


def customer_ops(value: bytes) -> list[AnyCustomerOp]:
    """The ops an ``<app>-customer-ops`` record carries, in order."""
    try:
        record = _OPS_RECORD.decode(value)
    except msgspec.ValidationError:
        return _customer_ops_loosely(value)
    return list(record.ops) if isinstance(record, OpBatch) else [record]


def _customer_ops_loosely(value: bytes) -> list[AnyCustomerOp]:
    """The ops of a record whose event JSON's strict reading refused: an event ingest
    accepted in a spelling only the public model reads (a timestamp in epoch seconds, a
    boolean as a string), read here by the model as ingest read it."""
    record = _OPS_LOOSE.decode(value)
    ops = record["ops"] if record.get("op") == "batch" else [record]
    for op in ops:
        if op.get("op") == "event" and isinstance(op.get("event"), dict):
            op["event"] = RawEvent.model_validate(op["event"]).model_dump(mode="json")
    return [msgspec.convert(op, AnyCustomerOp, strict=False) for op in ops]


def decode_split(raw: bytes) -> SplitOp:
    """A split as ``encode_op`` wrote it (the context stage keeps each customer's last)."""
    return _SPLIT.decode(raw)


def encode_op(op: AnyCustomerOp | EventForward) -> bytes:
    """One op as it travels (inside an ``OpBatch`` record)."""
    return op.encode() if isinstance(op, EventForward) else encode(op)


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
