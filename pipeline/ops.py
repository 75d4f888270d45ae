"""Messages between the pipeline's stages, and their (de)serialisation.

Identity requests go to the identity stage, keyed by tenant, in one ordered log: an event
to resolve, or an operator's split or erasure. Customer ops go to the context stage, keyed
by customer id.
"""

from __future__ import annotations

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


IdentityRequest = Annotated[ResolveRequest | SplitRequest | EraseRequest, Field(discriminator="op")]
IDENTITY_REQUEST: TypeAdapter[ResolveRequest | SplitRequest | EraseRequest] = TypeAdapter(
    IdentityRequest
)


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


class RedirectOp(_Msg):
    """Sent to a merged-away id whose survivor changed (after a split)."""

    op: Literal["redirect"] = "redirect"
    customer_id: str
    into_id: str


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
CUSTOMER_OP: TypeAdapter[AnyCustomerOp] = TypeAdapter(CustomerOp)
