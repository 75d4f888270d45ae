"""The Twilio connector: Messaging and Voice webhooks, signature-checked, answered with TwiML.

Point a number's (or Messaging Service's) webhooks at it:

| Twilio setting | URL |
| --- | --- |
| Messaging: "A message comes in" | ``POST {public_url}/twilio/sms`` |
| Messaging: status callback | ``POST {public_url}/twilio/sms/status`` |
| Voice: "A call comes in" / ``statusCallback`` | ``POST {public_url}/twilio/voice`` |
| ``<Gather action>`` | ``POST {public_url}/twilio/voice/gather[?step=menu]`` |
| ``recordingStatusCallback`` / ``<Record action>`` | ``POST {public_url}/twilio/voice/recording`` |
| ``<Record transcribeCallback>`` | ``POST {public_url}/twilio/voice/transcription`` |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import ClassVar
from urllib.parse import urlencode, urlsplit
from xml.sax.saxutils import quoteattr

from pydantic import AnyHttpUrl, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from connectors.base import (
    Accepted,
    ConnectorSettings,
    HttpConnector,
    Inbound,
    Reply,
    Route,
    SignatureInvalid,
)
from connectors.twilio import signature, sms, voice
from schemas.events import RawEvent

FORM = ("application/x-www-form-urlencoded",)
EMPTY_TWIML = Reply(b'<?xml version="1.0" encoding="UTF-8"?><Response/>', "text/xml")

Mapper = Callable[[Sequence[tuple[str, str]], datetime, Sequence[tuple[str, str]]], RawEvent]


class TwilioSettings(ConnectorSettings):
    """``OMNISTITCH_TWILIO_*``."""

    model_config = SettingsConfigDict(
        env_prefix="OMNISTITCH_TWILIO_", env_file=".env", extra="ignore"
    )

    port: int = Field(default=8091, ge=1, le=65535, description="Listening port.")
    auth_token: SecretStr = Field(
        min_length=1, description="The account's Auth Token (or SharedKey secret): signs webhooks."
    )
    public_url: AnyHttpUrl | None = Field(
        default=None,
        description="Base URL Twilio calls (scheme://host[:port]), when a proxy sits in front.",
    )
    gather_redirect_url: AnyHttpUrl | None = Field(
        default=None,
        description="After a Gather result is published, redirect the call here (your IVR).",
    )


class TwilioConnector(HttpConnector[TwilioSettings]):
    """Twilio Programmable Messaging and Voice webhooks."""

    name = "twilio"
    summary = "Twilio SMS and Voice webhooks (X-Twilio-Signature)"
    settings_class = TwilioSettings
    kinds: ClassVar[tuple[str, ...]] = (
        "message",
        "message_status",
        "consent",
        "call",
        "ivr_input",
        "recording",
        "transcription",
    )

    def routes(self) -> Sequence[Route]:
        return [
            Route("POST", "/twilio/sms", self.sms, FORM),
            Route("POST", "/twilio/sms/status", self.sms_status, FORM),
            Route("POST", "/twilio/voice", self._voice(voice.call_event), FORM),
            Route("POST", "/twilio/voice/gather", self.gather, FORM),
            Route("POST", "/twilio/voice/recording", self._voice(voice.recording_event), FORM),
            Route(
                "POST", "/twilio/voice/transcription", self._voice(voice.transcription_event), FORM
            ),
        ]

    def verify(self, request: Inbound) -> None:
        """``X-Twilio-Signature`` over the URL Twilio called and the form parameters."""
        alg = signature.algorithm(request.header("x-twilio-webhooks-signature-settings"))
        token = self.settings.auth_token.get_secret_value()
        url = self.signed_url(request)
        if not signature.is_valid(
            token, url, request.form(), request.header("x-twilio-signature"), alg
        ):
            raise SignatureInvalid("X-Twilio-Signature does not match", "X-Twilio-Signature")

    def signed_url(self, request: Inbound) -> str:
        """The URL Twilio requested: ``public_url`` + path + query when configured."""
        if self.settings.public_url is None:
            return request.url
        query = urlsplit(request.url).query
        base = str(self.settings.public_url).rstrip("/")
        return f"{base}{request.path}" + (f"?{query}" if query else "")

    def sms(self, request: Inbound) -> Accepted:
        return Accepted(sms.inbound_events(request.form(), request.received_at), EMPTY_TWIML)

    def sms_status(self, request: Inbound) -> Accepted:
        return Accepted([sms.status_event(request.form(), request.received_at)], EMPTY_TWIML)

    def gather(self, request: Inbound) -> Accepted:
        event = voice.gather_event(request.form(), request.received_at, request.query)
        target = self.settings.gather_redirect_url
        if target is None:
            return Accepted([event], EMPTY_TWIML)
        answer = [
            (k, str(event.properties[k])) for k in ("digits", "speech") if k in event.properties
        ]
        url = str(target)
        if answer:
            url += ("&" if "?" in url else "?") + urlencode(answer)
        twiml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<Response><Redirect method="POST">{_xml(url)}</Redirect></Response>'
        )
        return Accepted([event], Reply(twiml.encode(), "text/xml"))

    def _voice(self, mapper: Mapper) -> Callable[[Inbound], Accepted]:
        def handle(request: Inbound) -> Accepted:
            return Accepted(
                [mapper(request.form(), request.received_at, request.query)], EMPTY_TWIML
            )

        return handle


def _xml(text: str) -> str:
    return quoteattr(text)[1:-1]
