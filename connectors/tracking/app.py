"""The HTTP face of the tracking collector: Segment-compatible endpoints publishing to Kafka.

A request is answered ``200 {"success": true}`` only after every event in it was
acknowledged by the broker; a client that sees anything else may retry, and events dedupe
on their deterministic ``event_id``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
)

from connectors.http import BodyTooLarge as _TooLarge
from connectors.http import add_operational_routes
from connectors.http import read_body as _read_body
from connectors.publisher import KafkaPublisher, Publisher, PublishUnavailable
from connectors.runner import exit_cleanly_on_sigterm
from connectors.tracking.segment import (
    MESSAGE_TYPES,
    FieldError,
    InvalidMessage,
    parse_body,
    partition_key,
    to_raw_event,
)
from omnistitch.kafka_client import client_config
from omnistitch.logs import logging_config, setup_logging
from omnistitch.settings import CollectorSettings
from omnistitch.topics import RAW_EVENTS, ensure_topics

log = logging.getLogger(__name__)

REALM = "omnistitch"
RETRY_AFTER_S = 5
REJECT_REASONS = ("unauthorized", "invalid_request", "too_large", "unavailable")
_GZIP = frozenset({"gzip", "x-gzip"})
_IDENTITY = frozenset({"", "identity"})

Endpoint = Callable[[Request], Awaitable[Response]]


class _BadBody(Exception):
    """The body is not (gzipped) JSON."""


class _Metrics:
    """The collector's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.accepted = Counter(
            "omnistitch_collector_events_accepted",
            "Events acknowledged by the broker, by message type.",
            ["kind"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "omnistitch_collector_requests_rejected",
            "Requests answered with an error, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "omnistitch_collector_publish_seconds",
            "Time from producing a request's events to the broker's last ack.",
            registry=self.registry,
        )
        for kind in MESSAGE_TYPES:
            self.accepted.labels(kind)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)


def create_app(settings: CollectorSettings, publisher: Publisher) -> FastAPI:
    """Build the collector app; ``publisher`` is owned (and closed) by the caller."""
    app = FastAPI(title="omnistitch collector", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = _Metrics()
    topic = settings.topic(RAW_EVENTS)
    write_keys = [k.encode() for k in settings.write_keys]
    limit = settings.max_body_bytes

    def reject(
        reason: str, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> JSONResponse:
        metrics.rejected.labels(reason).inc()
        return JSONResponse(body, status_code=status, headers=headers)

    def invalid(errors: Iterable[FieldError]) -> JSONResponse:
        details = [{"field": e.field, "message": e.message} for e in errors]
        return reject("invalid_request", 400, {"error": "invalid_request", "errors": details})

    def unauthorized() -> JSONResponse:
        return reject(
            "unauthorized",
            401,
            {"error": "unauthorized", "message": "missing or unknown write key"},
            {"WWW-Authenticate": f'Basic realm="{REALM}"'},
        )

    def known(key: object) -> bool:
        if not isinstance(key, str) or not key:
            return False
        candidate = key.encode()
        return any(hmac.compare_digest(candidate, k) for k in write_keys)

    async def ingest(kind: str, request: Request) -> Response:
        received_at = datetime.now(UTC)
        authorized = known(_basic_username(request.headers.get("authorization")))
        try:
            data = await _read_body(request, limit)
            body = _decode(data, request.headers.get("content-encoding", ""), limit)
        except _TooLarge:
            return reject(
                "too_large",
                413,
                {"error": "too_large", "message": f"request body exceeds {limit} bytes"},
            )
        except _BadBody as exc:
            return invalid([FieldError("body", str(exc))]) if authorized else unauthorized()
        if not authorized and not (isinstance(body, dict) and known(body.get("writeKey"))):
            return unauthorized()
        try:
            parsed = parse_body(kind, body)
        except InvalidMessage as exc:
            return invalid(exc.errors)
        records: list[tuple[str, bytes]] = []
        for index, (message, raw) in enumerate(parsed):
            try:
                event = to_raw_event(message, received_at, raw)
                records.append((partition_key(event), event.model_dump_json().encode()))
            except ValueError as exc:  # e.g. nesting deeper than the envelope allows
                field = f"batch.{index}" if kind == "batch" else "body"
                return invalid([FieldError(field, f"cannot be represented: {exc}"[:500])])
        if records:
            started = time.perf_counter()
            try:
                await publisher.publish(topic, records)
            except PublishUnavailable as exc:
                log.warning("publish failed: %s", exc.reason)
                return reject(
                    "unavailable",
                    503,
                    {"error": "unavailable", "reason": exc.reason},
                    {"Retry-After": str(RETRY_AFTER_S)},
                )
            finally:
                metrics.publish_seconds.observe(time.perf_counter() - started)
        for message, _raw in parsed:
            metrics.accepted.labels(message.type).inc()
        return JSONResponse({"success": True})

    def endpoint(kind: str) -> Endpoint:
        async def handle(request: Request) -> Response:
            return await ingest(kind, request)

        handle.__name__ = f"post_{kind}"
        return handle

    for kind in (*MESSAGE_TYPES, "batch"):
        app.add_api_route(f"/v1/{kind}", endpoint(kind), methods=["POST"])
    app.add_api_route("/v1/import", endpoint("batch"), methods=["POST"])

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        return invalid(
            FieldError(".".join(str(p) for p in err["loc"]) or "body", str(err["msg"]))
            for err in exc.errors()
        )

    add_operational_routes(app, publisher, metrics.registry)

    return app


def run(settings: CollectorSettings) -> None:
    """Create the topics, then serve the collector until interrupted."""
    setup_logging(settings.log_level)
    ensure_topics(settings)
    publisher = KafkaPublisher(
        settings.bootstrap_servers, settings.ack_timeout_s, extra_config=client_config(settings)
    )
    exit_cleanly_on_sigterm()
    try:
        uvicorn.run(
            create_app(settings, publisher),
            host=settings.collector_host,
            port=settings.collector_port,
            log_level=settings.log_level.lower(),
            log_config=logging_config(settings.log_level),
        )
    finally:
        publisher.close()


def _basic_username(header: str | None) -> str | None:
    """The username of an HTTP basic ``Authorization`` header (Segment's write key)."""
    if not header:
        return None
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0]


def _decode(data: bytes, encoding: str, limit: int) -> Any:
    """Un-gzip (bounded by ``limit``) and parse JSON, rejecting NaN and Infinity."""
    encoding = encoding.strip().lower()
    if encoding in _GZIP:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(data, limit + 1)
        except zlib.error as exc:
            raise _BadBody(f"invalid gzip body: {exc}") from None
        if len(data) > limit:
            raise _TooLarge
        if not inflater.eof:
            raise _BadBody("truncated gzip body")
    elif encoding not in _IDENTITY:
        raise _BadBody(f"unsupported Content-Encoding {encoding!r}; use gzip or none")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise _BadBody(f"invalid JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
