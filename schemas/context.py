"""The customer context published on ``customer.context`` and served by the query API."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

from schemas.events import Channel, Identifier

CONTEXT_SCHEMA_VERSION: Final = 1


class TraitValue(BaseModel):
    """A trait's current value with its provenance."""

    model_config = ConfigDict(extra="forbid")

    value: JsonValue
    event_id: str
    channel: Channel
    observed_at: AwareDatetime = Field(description="occurred_at of the event that set it.")


class TimelineEntry(BaseModel):
    """One interaction on the customer's cross-channel timeline."""

    model_config = ConfigDict(extra="forbid")

    event_id: str
    channel: Channel
    source: str
    kind: str
    name: str | None = None
    occurred_at: AwareDatetime
    identifiers: list[str] = Field(
        default_factory=list, description="type:value keys the event carried (normalised)."
    )
    properties: dict[str, JsonValue] = Field(default_factory=dict)


class CustomerContext(BaseModel):
    """Everything known about one canonical customer, merged across channels.

    Keyed by ``customer_id`` on the compacted ``customer.context`` topic; a merged-away
    customer's key is tombstoned (a null value) when it is merged into another.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = CONTEXT_SCHEMA_VERSION
    customer_id: str = Field(description="Canonical, stable, sortable customer id.")
    identifiers: list[Identifier] = Field(
        default_factory=list, description="Every identifier stitched to this customer."
    )
    traits: dict[str, TraitValue] = Field(
        default_factory=dict, description="Latest value of each trait, by occurred_at."
    )
    timeline: list[TimelineEntry] = Field(
        default_factory=list, description="Interactions, newest first, capped in length."
    )
    channel_counts: dict[str, int] = Field(
        default_factory=dict, description="Lifetime interaction count per channel."
    )
    merged_from: list[str] = Field(
        default_factory=list, description="Customer ids merged into this one."
    )
    first_seen: AwareDatetime | None = None
    last_seen: AwareDatetime | None = None
    version: int = Field(default=0, description="Increments with every change.")
