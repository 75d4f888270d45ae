"""The web chat connector: ``POST /webchat/events`` (one chat event per request, JSON).

Browser-facing, like the tracking collector: what makes an identity count is the
visitor's ``identifier_hash``, checked against the site's secret
(``OMNISTITCH_CHAT_SITE_SECRETS`` for a site of its own, else ``OMNISTITCH_CHAT_HMAC_SECRET``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from connectors.base import Accepted, ConnectorSettings, HttpConnector, Inbound, Route
from connectors.webchat.events import EVENT_TYPES, to_raw_event

JSON = ("application/json",)


class WebChatSettings(ConnectorSettings):
    """``OMNISTITCH_CHAT_*``."""

    model_config = SettingsConfigDict(
        env_prefix="OMNISTITCH_CHAT_", env_file=".env", extra="ignore"
    )

    port: int = Field(default=8092, ge=1, le=65535, description="Listening port.")
    hmac_secret: SecretStr = Field(
        min_length=16, description="Identity secret: visitors' identifier_hash is HMAC'd with it."
    )
    site_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Per-site identity secrets, JSON: {"acme": "..."}; others use hmac_secret.',
    )


class WebChatConnector(HttpConnector[WebChatSettings]):
    """Conversation events of a web chat, with HMAC-proved logged-in visitors."""

    name = "webchat"
    summary = "Web chat conversation events (identifier_hash HMAC-SHA256)"
    settings_class = WebChatSettings
    kinds: ClassVar[tuple[str, ...]] = EVENT_TYPES

    def routes(self) -> Sequence[Route]:
        return [Route("POST", "/webchat/events", self.event, JSON)]

    def secret_for(self, site_id: str) -> str:
        """The identity secret of ``site_id``."""
        secret = self.settings.site_secrets.get(site_id, self.settings.hmac_secret)
        return secret.get_secret_value()

    def event(self, request: Inbound) -> Accepted:
        return Accepted([to_raw_event(request.json(), self.secret_for, request.received_at)])
