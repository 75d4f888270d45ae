"""The query API, served by every worker through faust's web server.

Each worker holds only some partitions of the tables, so every view is routed to the
worker that owns the key (faust ``table_route``), whichever worker received the request:

* ``GET /v1/customers/{id}``: the customer's context. An id that was merged away resolves
  to the survivor (the response's ``customer_id`` says which).
* ``GET /v1/customers?identifier=type:value``: the customer holding that identifier.
* ``GET /healthz`` (alive), ``GET /readyz`` (partitions assigned, tables recovered),
  ``GET /metrics`` (Prometheus).

Errors are JSON: ``{"error": ..., "message": ...}`` with 400 or 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import aiohttp
import faust
from aiohttp import web
from faust.exceptions import SameNode
from faust.transport.drivers.aiokafka import Producer as AIOKafkaDriverProducer
from faust.types import CollectionT
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from yarl import URL

from pipeline.app import Pipeline
from pipeline.normalize import parse_identifier_key


def register_api(p: Pipeline) -> None:
    """Attach the query API's views to the pipeline's faust app."""
    app = p.app
    tenant = p.settings.tenant

    async def fetch_context(view: View, root: str) -> dict[str, Any] | None:
        """A root customer's context, from this worker or the one that owns its partition."""
        dest = app.router.key_store(p.contexts.name, root)
        if _same_node(URL(str(dest)), URL(str(app.conf.canonical_url))):
            return p.customer_snapshot(root)
        async with (
            aiohttp.ClientSession() as session,
            session.get(str(URL(str(dest)) / "v1" / "internal" / "contexts" / root)) as resp,
        ):
            if resp.status == 404:
                return None
            resp.raise_for_status()
            body: dict[str, Any] = await resp.json()
            return body

    def not_ready(view: View) -> Response | None:
        if p.ready:
            return None
        body = {"error": "not_ready", "message": "worker is rebalancing or recovering tables"}
        return view.json(body, status=503, headers={"Retry-After": "1"})

    async def answer(view: View, requested: str, root: str | None) -> Response:
        ctx = None if root is None else await fetch_context(view, root)
        if ctx is None:
            return view.json(
                {"error": "not_found", "message": f"no customer {requested!r}"}, status=404
            )
        return view.json(ctx, headers={"Content-Location": f"/v1/customers/{root}"})

    async def route(
        view: View,
        request: Request,
        table: CollectionT,
        key: str,
        local: Callable[[], Awaitable[Response]],
    ) -> Response:
        """Answer locally if this worker owns ``key`` in ``table``, else proxy to the owner.

        Readiness is checked first: mid-rebalance the router has no partition map.
        """
        if (busy := not_ready(view)) is not None:
            return busy
        await _know_partitions(app, table.changelog_topic.get_topic_name())
        try:
            return await app.router.route_req(table.name, key, view.web, request)
        except SameNode:
            return await local()

    @app.page("/v1/customers/{customer_id}")
    class CustomerById(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            async def local() -> Response:
                return await answer(self, customer_id, p.graph.find(customer_id, compress=False))

            return await route(self, request, p.parents, tenant, local)

    @app.page("/v1/customers")
    class CustomerByIdentifier(View):
        async def get(self, request: Request) -> Response:
            return await route(self, request, p.owners, tenant, lambda: self.by_identifier(request))

        async def by_identifier(self, request: Request) -> Response:
            raw = request.query.get("identifier")
            if not raw:
                return self.json(
                    {
                        "error": "invalid_request",
                        "field": "identifier",
                        "message": "query parameter identifier=type:value is required",
                    },
                    status=400,
                )
            try:
                key = parse_identifier_key(raw).key
            except ValueError as exc:
                return self.json(
                    {"error": "invalid_request", "field": "identifier", "message": str(exc)},
                    status=400,
                )
            return await answer(self, raw, p.graph.lookup(key, compress=False))

    @app.page("/v1/internal/contexts/{customer_id}")
    class ContextByRoot(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            async def local() -> Response:
                ctx = p.customer_snapshot(customer_id)
                if ctx is None:
                    return self.json({"error": "not_found"}, status=404)
                return self.json(ctx)

            return await route(self, request, p.contexts, customer_id, local)

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            body = generate_latest(REGISTRY)
            # aiohttp's own response: faust's helper rejects Prometheus' parameterised type.
            return cast(
                Response, web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
            )

    @app.page("/readyz")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            return not_ready(self) or self.json({"status": "ready"})


async def _know_partitions(app: faust.App, topic: str) -> None:
    """Make sure the producer's metadata knows ``topic``, which key routing hashes against.

    faust's router asks the producer for a topic's partitions, and the producer only knows
    topics it has fetched metadata for: a worker that has not written a table yet would
    fail every routed request. aiokafka's ``partitions_for`` fetches it once.
    """
    driver = cast(AIOKafkaDriverProducer, app.producer)
    await driver._ensure_producer().partitions_for(topic)


def _same_node(a: URL, b: URL) -> bool:
    return (a.host, a.port) == (b.host, b.port)
