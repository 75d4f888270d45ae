"""Identity-graph records: merges, splits, links with their evidence, and the "why" view."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.events import Channel


class Evidence(BaseModel):
    """Where a link came from: the event, its place in Kafka, and the rules that decided."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str
    channel: Channel
    source: str
    occurred_at: AwareDatetime
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    rule_version: str


class Link(BaseModel):
    """An accepted link: the identifiers one event joined into this customer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    link_id: str = Field(description="The id of the event that made the link.")
    identifiers: list[str] = Field(description="type:value keys the event joined.")
    created: str | None = Field(default=None, description="Customer id this link minted.")
    merged: list[str] = Field(default_factory=list, description="Customer ids it merged in.")
    evidence: Evidence


RejectReason = Literal["limit", "trust", "no_merge", "quarantined"]


class RejectedLink(BaseModel):
    """A link the guard rails refused: the identifier stayed out of the match."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    identifier: str
    reason: RejectReason
    detail: str
    other_customer: str | None = Field(
        default=None, description="The customer the identifier already belongs to."
    )
    evidence: Evidence


class Merge(BaseModel):
    """Published on ``identity.merges`` (key: ``from_id``) when an event joins two customers."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    from_id: str = Field(description="The merged-away (younger) customer id.")
    into_id: str = Field(description="The surviving (older) customer id.")
    link_id: str = Field(description="The event whose identifiers joined them.")
    evidence: Evidence


class Split(BaseModel):
    """Published on ``identity.splits`` (key: ``customer_id``) when an operator removes a link."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    customer_id: str = Field(description="The customer that was split.")
    reason: Literal["operator", "quarantine"] = Field(
        default="operator",
        description="An operator removed a link, or a quarantined hub was taken out of links.",
    )
    link_id: str | None = Field(default=None, description="The removed link (operator splits).")
    id_map: dict[str, str] = Field(
        description="Every customer id of the old component -> the customer id it is now."
    )
    customers: list[str] = Field(description="The customer ids the component became.")
    requested_at: AwareDatetime


class Quarantine(BaseModel):
    """A hub identifier: seen on too many customers, it no longer merges anything."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    identifier: str
    customers: list[str]
    since: AwareDatetime


class IdentifierInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    identifier: str
    verified: bool
    first_seen: AwareDatetime
    last_seen: AwareDatetime


class Freshness(BaseModel):
    """How current the answering identity view is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: int | None = Field(description="Partition of the identity log the view reads.")
    offset: int | None = Field(description="Last offset of that log applied to the view.")
    event_time: AwareDatetime | None = Field(description="occurred_at of the last event applied.")


class IdentityView(BaseModel):
    """``GET /v1/customers/{id}/identity``: why this customer is who they are."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str
    requested_id: str
    identifiers: list[IdentifierInfo]
    links: list[Link]
    rejected_links: list[RejectedLink]
    quarantined: list[Quarantine] = Field(
        description="Hub identifiers this customer presented, which no longer merge."
    )
    freshness: Freshness
