"""The identity engine's stored records, as msgspec structs: a customer's node and a hub's
sightings, with the links (and their evidence) a node keeps; and an identifier as the
stages pass it (a request's, an op's, a context's), the JSON ``schemas.events.Identifier``
writes, read without pydantic's validation (ingest validated it).

These are rows of the identity tables (``identity-nodes``, ``identity-hubs``), read and
rewritten by the identity stage on most events: a node is decoded when its customer is
resolved and its parsed copy has gone, and encoded whenever an event adds an identifier,
mints a customer or merges. With pydantic models a 3.7 KB node took 22 µs to decode and 17
to encode, and 22 KiB of memory parsed; as structs 5.4 µs, 2.4 µs and 7.3 KiB (measured on
100 nodes of a bench drain).

Their JSON is the JSON the pydantic models wrote before (same fields, same order, same
timestamp format), so rows stored by either read back with the other, and the links and
rejected links mirror the public models in ``schemas/identity.py`` that the query API
serves (``to_public``). ``tests/unit/test_identity_state.py`` holds the two to it. Every
record is keyword-only and refuses unknown fields, as the public models do (``extra=forbid``),
and none is tracked by the cycle collector (``gc=False``; a record is a tree, as a
context is: ``pipeline/context_state.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import msgspec
from pydantic import BaseModel

from schemas.events import Channel
from schemas.events import Identifier as PublicIdentifier
from schemas.identity import Evidence as PublicEvidence
from schemas.identity import RejectReason


class Identifier(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, gc=False):
    """``schemas.events.Identifier``: one identifier of an event, normalised by ingest (the
    requests and ops carry it), or stitched to a customer (its context lists them)."""

    type: str
    value: str
    verified: bool = False

    @property
    def key(self) -> str:
        return f"{self.type}:{self.value}"

    @classmethod
    def of(cls, ident: PublicIdentifier | Identifier) -> Identifier:
        if isinstance(ident, Identifier):
            return ident
        return cls(type=ident.type, value=ident.value, verified=ident.verified)


#: An identifier as the stages pass it, or as a test or tool built it (the public model).
AnyIdentifier = Identifier | PublicIdentifier


class Evidence(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, gc=False):
    """Where a link came from (``schemas.identity.Evidence``)."""

    event_id: str
    channel: Channel
    source: str
    occurred_at: datetime
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    rule_version: str

    @classmethod
    def of(cls, evidence: PublicEvidence | Evidence) -> Evidence:
        """``evidence`` as stored (the public model converted; a struct as it is)."""
        if isinstance(evidence, Evidence):
            return evidence
        return cls(**evidence.__dict__)  # the same fields (tests/unit/test_identity_state.py)

    def public(self) -> PublicEvidence:
        """The public model (``identity.merges`` records carry it)."""
        return PublicEvidence(**msgspec.structs.asdict(self))


class Link(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, gc=False):
    """An accepted link: the identifiers one event joined (``schemas.identity.Link``)."""

    link_id: str
    identifiers: list[str]
    created: str | None = None
    merged: list[str] = msgspec.field(default_factory=list)
    evidence: Evidence


class RejectedLink(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, gc=False):
    """A link the guard rails refused (``schemas.identity.RejectedLink``)."""

    identifier: str
    reason: RejectReason
    detail: str
    other_customer: str | None = None
    evidence: Evidence


class IdentifierState(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    verified: bool
    first_seen: datetime
    last_seen: datetime


class CustomerNode(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    """A root customer's identity: its identifiers and the evidence for each."""

    customer_id: str
    identifiers: dict[str, IdentifierState] = msgspec.field(default_factory=dict)
    links: list[Link] = msgspec.field(default_factory=list)
    rejected: list[RejectedLink] = msgspec.field(default_factory=list)
    hubs: list[str] = msgspec.field(default_factory=list)  # quarantined ids presented

    def has_verified(self) -> bool:
        return any(s.verified for s in self.identifiers.values())

    def member_ids(self) -> set[str]:
        """Every customer id that is, or was merged into, this customer."""
        ids = {self.customer_id}
        for link in self.links:
            ids.update(link.merged)
            if link.created:
                ids.add(link.created)
        return ids


class HubState(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    sightings: dict[str, datetime] = msgspec.field(default_factory=dict)
    quarantined_at: datetime | None = None


_NODE = msgspec.json.Decoder(CustomerNode)
_HUB = msgspec.json.Decoder(HubState)
_ENCODER = msgspec.json.Encoder()


def decode_node(raw: bytes) -> CustomerNode:
    return _NODE.decode(raw)


def decode_hub(raw: bytes) -> HubState:
    return _HUB.decode(raw)


def encode(record: msgspec.Struct | list[Identifier]) -> bytes:
    """A record's JSON, as stored (and as a request carries its evidence): the one encoder
    the stages' records share (contexts and ops too)."""
    return _ENCODER.encode(record)


Public = TypeVar("Public", bound=BaseModel)


def to_public(model: type[Public], records: list[Any]) -> list[Public]:
    """``records`` (links or rejected links) as the public model the API serves."""
    return [model.model_validate(msgspec.to_builtins(r)) for r in records]
