"""Messages between the pipeline's stages, and their (de)serialisation.

``IdentityRequest`` goes from ingest to the identity stage (keyed by tenant).
``CustomerOp`` goes from the identity stage to the context stage (keyed by customer id):
an event to fold in, a merge to carry out at the merged-away customer, or the merged-away
customer's context to absorb at the survivor.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas.context import CustomerContext
from schemas.events import RawEvent


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventOp(_Op):
    op: Literal["event"] = "event"
    customer_id: str
    event: RawEvent


class MergeOp(_Op):
    """Sent to the merged-away customer: hand your context over to ``into_id``."""

    op: Literal["merge"] = "merge"
    customer_id: str
    into_id: str
    event_id: str


class AbsorbOp(_Op):
    """Sent to the survivor: fold ``context`` (a merged-away customer's) into yours."""

    op: Literal["absorb"] = "absorb"
    customer_id: str
    context: CustomerContext


CustomerOp = Annotated[EventOp | MergeOp | AbsorbOp, Field(discriminator="op")]
CUSTOMER_OP: TypeAdapter[EventOp | MergeOp | AbsorbOp] = TypeAdapter(CustomerOp)
