"""What every HTTP connector shares: the app around an :class:`HttpConnector`'s routes.

For each request, in order: the body is read up to ``max_body_bytes`` (413), its media
type checked against the route's (415), the connector's signature hook run (403), the
route's handler maps it to events (400 naming the field), the events are published and
acknowledged by the broker (503 with ``Retry-After`` when not), and only then the
handler's reply is sent. Every app gets ``/healthz``, ``/readyz`` and ``/metrics`` (a
Prometheus registry of its own).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from connectors.base import HttpConnector, Inbound, Rejected, Route
from connectors.delivery import ConnectorMetrics, Delivery
from connectors.publisher import Publisher, PublishUnavailable

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5

Endpoint = Callable[[Request], Awaitable[Response]]


class BodyTooLarge(Exception):
    """The request body exceeds the configured limit."""


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (before reading, when declared) anything over ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def unavailable(reason: str) -> JSONResponse:
    """503 with ``Retry-After``: nothing was promised, the sender should retry."""
    return JSONResponse(
        {"error": "unavailable", "reason": reason},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def add_operational_routes(app: FastAPI, publisher: Publisher, registry: CollectorRegistry) -> None:
    """``/healthz`` (alive), ``/readyz`` (the producer can reach the broker), ``/metrics``."""

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        if publisher.healthy():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "unavailable"}, status_code=503)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def create_app(connector: HttpConnector[Any], topic: str, publisher: Publisher) -> FastAPI:
    """The connector's app; ``publisher`` is owned (and closed) by the caller."""
    app = FastAPI(
        title=f"omnistitch {connector.name} connector",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    metrics = ConnectorMetrics(connector.name, connector.kinds)
    delivery = Delivery(topic, publisher, metrics)
    limit = connector.settings.max_body_bytes

    def refuse(rejection: Rejected) -> JSONResponse:
        metrics.reject(rejection.reason)
        body: dict[str, Any] = {"error": rejection.reason, "message": rejection.message}
        if rejection.field is not None:
            body["errors"] = [{"field": rejection.field, "message": rejection.message}]
        return JSONResponse(body, status_code=rejection.status, headers=rejection.headers)

    async def handle(route: Route, request: Request) -> Response:
        received_at = datetime.now(UTC)
        try:
            body = await read_body(request, limit)
        except BodyTooLarge:
            return refuse(Rejected(413, "too_large", f"request body exceeds {limit} bytes", "body"))
        inbound = Inbound(
            method=request.method,
            url=str(request.url),
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            query=list(request.query_params.multi_items()),
            body=body,
            received_at=received_at,
        )
        try:
            _check_media_type(route, inbound)
            if route.verify:
                connector.verify(inbound)
            accepted = route.handle(inbound)
        except Rejected as rejection:
            if rejection.reason == "signature":
                log.info("%s %s: %s", connector.name, inbound.path, rejection.message)
            return refuse(rejection)
        try:
            await delivery.publish(accepted.events)
        except PublishUnavailable as exc:
            log.warning("%s: publish failed: %s", connector.name, exc.reason)
            metrics.reject("unavailable")
            return unavailable(exc.reason)
        reply = accepted.reply
        return Response(reply.body, status_code=reply.status, media_type=reply.media_type)

    def endpoint(route: Route) -> Endpoint:
        async def handle_route(request: Request) -> Response:
            return await handle(route, request)

        handle_route.__name__ = f"{route.method.lower()}_{route.path.strip('/')}"
        return handle_route

    for route in connector.routes():
        app.add_api_route(route.path, endpoint(route), methods=[route.method])
    add_operational_routes(app, publisher, metrics.registry)
    return app


def _check_media_type(route: Route, inbound: Inbound) -> None:
    if not route.content_types:
        return
    media_type = (inbound.header("content-type") or "").partition(";")[0].strip().lower()
    if media_type not in route.content_types:
        expected = " or ".join(route.content_types)
        raise Rejected(
            415,
            "unsupported_media_type",
            f"expected Content-Type {expected}, got {media_type or 'none'}",
            "Content-Type",
        )


async def serve_http(connector: HttpConnector[Any], topic: str, publisher: Publisher) -> None:
    """Serve the connector with uvicorn until SIGINT/SIGTERM.

    No access log: a webhook's query string can carry a token (Meta's ``hub.verify_token``).
    """
    settings = connector.settings
    config = uvicorn.Config(
        create_app(connector, topic, publisher),
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_config=None,
        lifespan="off",
    )
    await uvicorn.Server(config).serve()
