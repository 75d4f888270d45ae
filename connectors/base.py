"""The connector interface: one class per channel, found through a Python entry point.

A connector turns what a provider sends into :class:`schemas.RawEvent` envelopes and
publishes them to the raw events topic, answering the provider only once the broker has
them. Most channels are webhooks: subclass :class:`HttpConnector`, list your
:class:`Route` s, and optionally override :meth:`HttpConnector.verify` (the signature
hook). The shared machinery (``connectors.http``) does the rest: body limit (413),
content type (415), signature failures (403), bad input (400 naming the field),
publish-then-ack, 503 with ``Retry-After``, ``/healthz``, ``/readyz`` and ``/metrics``.
A connector that is not HTTP (the SMTP server) subclasses :class:`Connector` and
implements :meth:`Connector.serve` itself.

Register the class in your package's ``pyproject.toml``::

    [project.entry-points."omnistitch.connectors"]
    mychannel = "my_package.connector:MyChannelConnector"

and run it with ``omnistitch connector run mychannel``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar
from urllib.parse import parse_qsl

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.errors import Rejected, SignatureInvalid, invalid
from connectors.mapping import MAX_DEPTH, deeper_than
from schemas.events import RawEvent

if TYPE_CHECKING:
    from connectors.publisher import Publisher

ENTRY_POINT_GROUP = "omnistitch.connectors"

__all__ = [
    "Accepted",
    "Connector",
    "ConnectorSettings",
    "HttpConnector",
    "Inbound",
    "Rejected",
    "Reply",
    "Route",
    "SignatureInvalid",
    "invalid",
]


class ConnectorSettings(BaseSettings):
    """What every connector reads; subclasses set their own ``env_prefix``.

    Secrets are :class:`pydantic.SecretStr` fields of the subclass, so they print as
    ``**********`` in reprs, logs and error messages.
    """

    model_config = SettingsConfigDict(
        env_prefix="OMNISTITCH_CONNECTOR_", env_file=".env", extra="ignore"
    )

    host: str = Field(default="127.0.0.1", description="Bind address.")
    port: int = Field(default=8090, ge=1, le=65535, description="Listening port.")
    ack_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Longest wait for the broker's ack."
    )
    max_body_bytes: int = Field(
        default=256 * 1024, ge=1024, le=16 * 1024 * 1024, description="Largest request body."
    )


SettingsT = TypeVar("SettingsT", bound=ConnectorSettings)


@dataclass(frozen=True)
class Inbound:
    """One HTTP request as a connector sees it: the body read in full, within the limit."""

    method: str
    url: str
    path: str
    headers: Mapping[str, str]
    query: Sequence[tuple[str, str]]
    body: bytes
    received_at: datetime

    def header(self, name: str) -> str | None:
        """A request header by case-insensitive name (headers are stored lower-case)."""
        return self.headers.get(name.lower())

    def form(self) -> list[tuple[str, str]]:
        """The body as ``application/x-www-form-urlencoded`` pairs, in order."""
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid("body", "form body is not UTF-8") from None
        return parse_qsl(text, keep_blank_values=True)

    def json(self) -> Any:
        """The body as JSON (NaN and Infinity refused, nesting limited to ``MAX_DEPTH``)."""
        try:
            value = json.loads(self.body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise invalid("body", f"invalid JSON: {exc}"[:300]) from None
        if deeper_than(value, MAX_DEPTH):
            raise invalid("body", f"nested deeper than {MAX_DEPTH} levels")
        return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


@dataclass(frozen=True)
class Reply:
    """What the provider gets back after every event was acknowledged."""

    body: bytes = b'{"success":true}'
    media_type: str = "application/json"
    status: int = 200


@dataclass(frozen=True)
class Accepted:
    """A handler's result: the events to publish, then the reply (sent only after the ack)."""

    events: Sequence[RawEvent] = ()
    reply: Reply = field(default_factory=Reply)


Handler = Callable[[Inbound], Accepted]


@dataclass(frozen=True)
class Route:
    """One endpoint of an HTTP connector.

    ``content_types``: media types accepted (others get 415); empty accepts any.
    ``verify``: run the connector's signature hook before the handler.
    """

    method: Literal["GET", "POST"]
    path: str
    handle: Handler
    content_types: tuple[str, ...] = ()
    verify: bool = True


class Connector(ABC, Generic[SettingsT]):
    """A channel connector. Subclasses set ``name``, ``summary`` and ``settings_class``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    settings_class: type[SettingsT]
    #: Event kinds it publishes (pre-creates their metric series); others still count.
    kinds: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: SettingsT) -> None:
        self.settings = settings

    @abstractmethod
    async def serve(self, topic: str, publisher: Publisher) -> None:
        """Accept traffic and publish to ``topic`` until the process is asked to stop."""


class HttpConnector(Connector[SettingsT]):
    """A webhook connector: routes, an optional signature hook, and mapping to events."""

    @abstractmethod
    def routes(self) -> Sequence[Route]:
        """The endpoints; ``/healthz``, ``/readyz`` and ``/metrics`` are added for you."""

    def verify(self, request: Inbound) -> None:
        """The signature hook, run for routes with ``verify=True``: raise
        :class:`SignatureInvalid` (403) or :class:`Rejected` to refuse the request."""

    async def serve(self, topic: str, publisher: Publisher) -> None:
        """Serve the routes with uvicorn (no access log: query strings may hold tokens)."""
        from connectors.http import serve_http

        await serve_http(self, topic, publisher)


class UnknownConnector(LookupError):
    """No connector of that name is installed."""


def available() -> dict[str, EntryPoint]:
    """The installed connectors by name (entry point group ``omnistitch.connectors``)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_connector(name: str) -> type[Connector[Any]]:
    """The connector class registered under ``name``; raises :class:`UnknownConnector`."""
    found = available().get(name)
    if found is None:
        names = ", ".join(sorted(available())) or "none"
        raise UnknownConnector(f"no connector named {name!r} (installed: {names})")
    cls = found.load()
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise TypeError(f"entry point {found.value!r} is not a connectors.base.Connector class")
    return cls
