"""The SMTP face of the email connector: an aiosmtpd handler with the delivery promise.

``250`` only after the broker acknowledged the event; ``451 4.3.0`` (transient: the
sending server retries) when it could not; ``554 5.6.0`` for data that is not mail;
``550 5.1.1`` for a recipient outside the accepted domains. aiosmtpd itself answers
``552`` for a message over the size limit (advertised as ``SIZE`` in EHLO) and ``500``
for lines that are not SMTP.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from connectors.delivery import Delivery
from connectors.email.message import NotMail, to_raw_event
from connectors.errors import Rejected
from connectors.publisher import PublishUnavailable

log = logging.getLogger(__name__)


class MailHandler:
    """aiosmtpd handler: RCPT checks the domain, DATA publishes then answers."""

    def __init__(self, delivery: Delivery, domains: frozenset[str] = frozenset()) -> None:
        self.delivery = delivery
        self.domains = frozenset(d.lower() for d in domains)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        domain = address.rpartition("@")[2].lower()
        if self.domains and domain not in self.domains:
            self.delivery.metrics.reject("forbidden")
            return f"550 5.1.1 <{address}>: recipient domain not accepted here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        try:
            event = to_raw_event(content, envelope.mail_from, envelope.rcpt_tos, datetime.now(UTC))
        except NotMail as exc:
            self.delivery.metrics.reject("not_mail")
            return f"554 5.6.0 {exc}"
        except Rejected as exc:  # content the envelope cannot hold (e.g. nesting too deep)
            self.delivery.metrics.reject(exc.reason)
            return f"554 5.6.0 {exc.message}"[:500]
        try:
            await self.delivery.publish([event])
        except PublishUnavailable as exc:
            log.warning("email: publish failed: %s", exc.reason)
            self.delivery.metrics.reject("unavailable")
            return "451 4.3.0 cannot accept mail right now, try again later"
        return f"250 2.0.0 OK queued as {event.event_id}"[:500]


async def start_smtp(
    handler: MailHandler, host: str, port: int, max_bytes: int, hostname: str
) -> asyncio.Server:
    """Listen for SMTP on ``host:port`` in the running loop."""
    loop = asyncio.get_running_loop()

    def protocol() -> Any:
        return SMTP(
            handler,
            data_size_limit=max_bytes,
            enable_SMTPUTF8=True,
            hostname=hostname,
            ident="omnistitch",
            loop=loop,
        )

    return await loop.create_server(protocol, host=host, port=port)
