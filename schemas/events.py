"""The raw-event envelope every connector publishes to the raw events topic."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

RAW_EVENT_SCHEMA_VERSION: Final = 1

#: Identifier types the pipeline knows how to normalise. Custom types are allowed too
#: (any lower-case slug), and are compared verbatim after trimming.
KNOWN_IDENTIFIER_TYPES = ("email", "phone", "user_id", "anonymous_id")

IDENTIFIER_TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"


class Channel(StrEnum):
    """The customer-facing channel an event came from."""

    WEB = "web"
    APP = "app"
    CHAT = "chat"
    VOICE = "voice"
    SMS = "sms"
    EMAIL = "email"
    SOCIAL = "social"
    SERVER = "server"


class Identifier(BaseModel):
    """One typed identifier carried by an event, e.g. ``email:alice@example.com``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str = Field(pattern=IDENTIFIER_TYPE_PATTERN, description="Identifier type.")
    value: str = Field(min_length=1, max_length=512, description="Identifier value.")
    verified: bool = Field(
        default=False,
        description="True when the channel proved the identifier (signed login, HMAC).",
    )

    @property
    def key(self) -> str:
        """The ``type:value`` form used as a table and lookup key."""
        return f"{self.type}:{self.value}"


class RawEvent(BaseModel):
    """A channel interaction as a connector received it.

    ``payload`` keeps the provider's body verbatim so a better mapping can be replayed
    later; ``identifiers`` and ``traits`` are the connector's typed reading of it.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = RAW_EVENT_SCHEMA_VERSION
    event_id: str = Field(
        min_length=1,
        max_length=256,
        description="Deterministic where the provider has an id, so retries dedupe.",
    )
    channel: Channel
    source: str = Field(min_length=1, max_length=64, description="Connector that received it.")
    kind: str = Field(
        min_length=1,
        max_length=64,
        description="What happened, e.g. page, track, identify, alias, message, call.",
    )
    name: str | None = Field(
        default=None, max_length=512, description="Event or page name, when there is one."
    )
    occurred_at: AwareDatetime = Field(description="The source's clock, UTC.")
    received_at: AwareDatetime = Field(description="The connector's clock, UTC.")
    identifiers: list[Identifier] = Field(default_factory=list, max_length=64)
    traits: dict[str, JsonValue] = Field(
        default_factory=dict, description="Profile attributes the event asserts."
    )
    properties: dict[str, JsonValue] = Field(
        default_factory=dict, description="Interaction details (url, title, text, ...)."
    )
    payload: dict[str, Any] = Field(
        default_factory=dict, description="The provider's message, verbatim."
    )
