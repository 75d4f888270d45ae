"""The CTI connector: ``POST /cti/events`` (one :class:`schemas.cti.CtiEvent` or a batch)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from connectors.base import Accepted, ConnectorSettings, HttpConnector, Inbound, Route
from connectors.cti import signature
from connectors.cti.events import KIND, to_raw_events

JSON = ("application/json",)


class CtiSettings(ConnectorSettings):
    """``OMNISTITCH_CTI_*``."""

    model_config = SettingsConfigDict(env_prefix="OMNISTITCH_CTI_", env_file=".env", extra="ignore")

    port: int = Field(default=8094, ge=1, le=65535, description="Listening port.")
    signing_secret: SecretStr = Field(
        min_length=16, description="Shared with the platform: signs every request (HMAC-SHA256)."
    )
    signature_tolerance_s: float = Field(
        default=300, gt=0, le=3600, description="Oldest (or newest) signature timestamp accepted."
    )


class CtiConnector(HttpConnector[CtiSettings]):
    """Contact-center events in omnistitch's platform-neutral CTI format."""

    name = "cti"
    summary = "Contact-center CTI events, platform-neutral JSON (schemas/cti.py)"
    settings_class = CtiSettings
    kinds: ClassVar[tuple[str, ...]] = (KIND,)

    def routes(self) -> Sequence[Route]:
        return [Route("POST", "/cti/events", self.events, JSON)]

    def verify(self, request: Inbound) -> None:
        signature.check(
            self.settings.signing_secret.get_secret_value(),
            request.body,
            request.header(signature.TIMESTAMP_HEADER),
            request.header(signature.SIGNATURE_HEADER),
            time.time(),
            self.settings.signature_tolerance_s,
        )

    def events(self, request: Inbound) -> Accepted:
        return Accepted(to_raw_events(request.json(), request.received_at))
