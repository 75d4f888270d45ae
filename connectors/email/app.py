"""The email connector: an SMTP server for inbound mail, plus an HTTP port for operations.

Point an MX (or a forwarding rule of your mail provider) at ``OMNISTITCH_EMAIL_HOST``:
``OMNISTITCH_EMAIL_PORT``; ``/healthz``, ``/readyz`` and ``/metrics`` are served on
``OMNISTITCH_EMAIL_HTTP_PORT``.
"""

from __future__ import annotations

import logging
from typing import Annotated, ClassVar

import uvicorn
from fastapi import FastAPI
from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from connectors.base import Connector, ConnectorSettings
from connectors.delivery import ConnectorMetrics, Delivery
from connectors.email.smtp import MailHandler, start_smtp
from connectors.http import add_operational_routes
from connectors.publisher import Publisher

log = logging.getLogger(__name__)


class EmailSettings(ConnectorSettings):
    """``OMNISTITCH_EMAIL_*``."""

    model_config = SettingsConfigDict(
        env_prefix="OMNISTITCH_EMAIL_", env_file=".env", extra="ignore"
    )

    port: int = Field(default=8025, ge=1, le=65535, description="SMTP port.")
    http_port: int = Field(
        default=8095, ge=1, le=65535, description="Port of /healthz, /readyz and /metrics."
    )
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest message (SMTP SIZE); bigger ones get 552.",
    )
    hostname: str = Field(
        default="omnistitch.local", min_length=1, description="Name in the SMTP greeting."
    )
    domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated recipient domains accepted (550 for others); empty: any.",
    )

    @field_validator("domains", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [d.strip().lower() for d in value.split(",") if d.strip()]
        return value


class EmailConnector(Connector[EmailSettings]):
    """Inbound mail over SMTP."""

    name = "email"
    summary = "Inbound email over SMTP (aiosmtpd)"
    settings_class = EmailSettings
    kinds: ClassVar[tuple[str, ...]] = ("message",)

    async def serve(self, topic: str, publisher: Publisher) -> None:
        """SMTP and the operations port until SIGINT/SIGTERM."""
        settings = self.settings
        if not log.isEnabledFor(logging.DEBUG):  # aiosmtpd logs every SMTP command at INFO
            logging.getLogger("mail.log").setLevel(logging.WARNING)
        metrics = ConnectorMetrics(self.name, self.kinds)
        handler = MailHandler(Delivery(topic, publisher, metrics), frozenset(settings.domains))
        smtp = await start_smtp(
            handler, settings.host, settings.port, settings.max_body_bytes, settings.hostname
        )
        operations = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        add_operational_routes(operations, publisher, metrics.registry)
        config = uvicorn.Config(
            operations,
            host=settings.host,
            port=settings.http_port,
            access_log=False,
            log_config=None,
            lifespan="off",
        )
        try:
            await uvicorn.Server(config).serve()
        finally:
            smtp.close()
            await smtp.wait_closed()
