"""The Meta connector: one callback URL for WhatsApp Cloud API and Messenger webhooks.

Configure ``{public_url}/meta/webhook`` as the callback URL of the app's WhatsApp and
Messenger (Page) products, with ``OMNISTITCH_META_VERIFY_TOKEN`` as the verify token.
Meta retries a notification that is not answered 200, and disables a webhook that keeps
failing; a notification of a kind we do not map (``object: instagram`` ...) is therefore
acknowledged with no events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from connectors.base import Accepted, ConnectorSettings, HttpConnector, Inbound, Reply, Route
from connectors.mapping import parse_model
from connectors.meta import messenger, webhook, whatsapp
from connectors.meta.notification import Notification

JSON = ("application/json",)


class MetaSettings(ConnectorSettings):
    """``OMNISTITCH_META_*``."""

    model_config = SettingsConfigDict(
        env_prefix="OMNISTITCH_META_", env_file=".env", extra="ignore"
    )

    port: int = Field(default=8093, ge=1, le=65535, description="Listening port.")
    app_secret: SecretStr = Field(
        min_length=1, description="The Meta app secret: signs notifications (X-Hub-Signature-256)."
    )
    verify_token: SecretStr = Field(
        min_length=1, description="The token Meta echoes in the subscription handshake."
    )


class MetaConnector(HttpConnector[MetaSettings]):
    """WhatsApp Cloud API and Messenger webhooks."""

    name = "meta"
    summary = "Meta WhatsApp Cloud API and Messenger webhooks (X-Hub-Signature-256)"
    settings_class = MetaSettings
    kinds: ClassVar[tuple[str, ...]] = ("message", "message_status", "postback")

    def routes(self) -> Sequence[Route]:
        return [
            Route("GET", "/meta/webhook", self.handshake, verify=False),
            Route("POST", "/meta/webhook", self.notification, JSON),
        ]

    def verify(self, request: Inbound) -> None:
        webhook.check_signature(
            self.settings.app_secret.get_secret_value(),
            request.body,
            request.header(webhook.SIGNATURE_HEADER),
        )

    def handshake(self, request: Inbound) -> Accepted:
        answer = webhook.challenge(request.query, self.settings.verify_token.get_secret_value())
        return Accepted([], Reply(answer.encode(), "text/plain"))

    def notification(self, request: Inbound) -> Accepted:
        parsed = parse_model(Notification, request.json())
        if parsed.object == whatsapp.OBJECT:
            return Accepted(whatsapp.to_raw_events(parsed, request.received_at))
        if parsed.object == messenger.OBJECT:
            return Accepted(messenger.to_raw_events(parsed, request.received_at))
        return Accepted([])
