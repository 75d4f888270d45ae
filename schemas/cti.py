"""Contact-center CTI events: the platform-neutral JSON a contact-center platform posts.

A contact (a call, or a chat routed by the contact center) goes through ``offered`` (it
reached the contact center), ``queued``, ``answered`` (an agent took it),
``transferred``, and ends ``abandoned`` (the customer hung up before an agent answered)
or ``ended``. Every event names the contact (``interaction_id``) and the customer, and
carries what is known at that point: queue, agent, IVR path, disposition.

``POST /cti/events`` takes one :class:`CtiEvent` or a :class:`CtiBatch`; the JSON Schemas
are ``schemas/json/cti_event.v1.schema.json`` and ``cti_batch.v1.schema.json``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, StringConstraints

CTI_SCHEMA_VERSION: Final = 1

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class CtiEventType(StrEnum):
    """What happened to the contact."""

    OFFERED = "offered"
    QUEUED = "queued"
    ANSWERED = "answered"
    TRANSFERRED = "transferred"
    ABANDONED = "abandoned"
    ENDED = "ended"


class CtiCustomer(BaseModel):
    """Who the contact is with: at least one identifier (the caller's number, usually)."""

    model_config = ConfigDict(extra="forbid")

    phone: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="The customer's number (ANI for inbound calls), any format."
    )
    email: Annotated[str, StringConstraints(max_length=320)] | None = None
    user_id: Id | None = Field(default=None, description="Your login id, when known.")
    account_id: Id | None = Field(default=None, description="Your account number.")
    crm_id: Id | None = Field(default=None, description="The CRM contact id, when matched.")
    name: Annotated[str, StringConstraints(max_length=200)] | None = None


class CtiAgent(BaseModel):
    """The agent handling the contact."""

    model_config = ConfigDict(extra="forbid")

    id: Id
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    team: Label | None = None


class CtiTransfer(BaseModel):
    """Where a ``transferred`` contact went."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["blind", "warm", "conference"] | None = None
    to_queue: Label | None = None
    to_agent_id: Id | None = None
    to_number: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="An external number the contact was transferred to."
    )


class CtiEvent(BaseModel):
    """One event in the life of a contact-center contact."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = CTI_SCHEMA_VERSION
    event_id: Id = Field(
        description="Unique per event in your platform; a retry must reuse it (dedupe key)."
    )
    type: CtiEventType
    interaction_id: Id = Field(description="The contact's id, shared by all its events.")
    occurred_at: AwareDatetime = Field(description="When it happened, with a time zone.")
    channel: Literal["voice", "chat", "email", "sms", "social"] = "voice"
    direction: Literal["inbound", "outbound"] = "inbound"
    customer: CtiCustomer
    queue: Label | None = Field(default=None, description="The queue (skill, split) it is in.")
    agent: CtiAgent | None = None
    ivr_path: list[Label] = Field(
        default_factory=list,
        max_length=50,
        description="The IVR menu nodes the customer went through, in order.",
    )
    disposition: Label | None = Field(
        default=None, description="The wrap-up (disposition) code, usually on ``ended``."
    )
    transfer: CtiTransfer | None = Field(default=None, description="On ``transferred``.")
    wait_seconds: float | None = Field(default=None, ge=0, le=86_400 * 7)
    talk_seconds: float | None = Field(default=None, ge=0, le=86_400 * 7)
    attributes: dict[str, JsonValue] = Field(
        default_factory=dict, description="Anything else the platform wants kept."
    )


class CtiBatch(BaseModel):
    """Several events in one request: all are accepted, or none."""

    model_config = ConfigDict(extra="forbid")

    events: list[CtiEvent] = Field(min_length=1, max_length=500)
