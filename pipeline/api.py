"""The query and operator API, served by every worker through faust's web server.

Each worker holds only some partitions of the tables, so every view is routed to the
worker that owns the key (faust's table router), whichever worker received the request.
The identity tables all live on the tenant's partition; contexts on the customer's.

* ``GET /v1/customers/{id}``: the customer's context. An id that was merged away resolves
  to the survivor (the response's ``customer_id`` says which).
* ``GET /v1/customers?identifier=type:value``: the customer holding that identifier.
* ``GET /v1/customers/{id}/identity``: identifiers, links with evidence, rejected links,
  quarantines, and the view's freshness.
* ``POST /v1/customers/{id}/split`` ``{"link_id": ...}``: remove a link (202).
* ``DELETE /v1/customers/{id}``: erase the person (202).
* ``GET /v1/identity/quarantine``: hub identifiers that no longer merge.
* ``GET /healthz`` (alive), ``GET /readyz`` (partitions assigned, tables recovered, broker
  reachable), ``GET /metrics`` (Prometheus).

Errors are JSON: ``{"error": ..., "message": ...}`` with 400, 404 or 503.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import aiohttp
import faust
from aiohttp import web
from faust.transport.drivers.aiokafka import Producer as AIOKafkaDriverProducer
from faust.types import CollectionT
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from yarl import URL

from pipeline.app import Pipeline
from pipeline.normalize import parse_identifier_key
from pipeline.ops import EraseRequest, SplitRequest


def _error(view: View, status: int, error: str, message: str, **extra: str) -> Response:
    return view.json({"error": error, "message": message, **extra}, status=status)


def register_api(p: Pipeline, broker_ok: Callable[[], bool] | None = None) -> None:
    """Attach the API's views to the pipeline's faust app.

    ``broker_ok`` (the lag monitor's health: it reads offsets from the broker) is part of
    ``/readyz``; the query views only need the tables.
    """
    app = p.app
    tenant = p.settings.tenant
    identity_table = cast(CollectionT, p.identity_tables.nodes)

    def not_ready(view: View) -> Response | None:
        if p.ready:
            return None
        body = {"error": "not_ready", "message": "worker is rebalancing or recovering tables"}
        return view.json(body, status=503, headers={"Retry-After": "1"})

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
        dest = URL(str(app.router.key_store(table.name, key)))
        if _same_node(dest, URL(str(app.conf.canonical_url))):
            return await local()
        return await _forward(view, request, dest)

    async def fetch_context(root: str) -> dict[str, Any] | None:
        """A root customer's context, from this worker or the one that owns its partition."""
        await _know_partitions(app, p.contexts.changelog_topic.get_topic_name())
        dest = URL(str(app.router.key_store(p.contexts.name, root)))
        if _same_node(dest, URL(str(app.conf.canonical_url))):
            return p.customer_snapshot(root)
        async with (
            aiohttp.ClientSession() as session,
            session.get(str(dest / "v1" / "internal" / "contexts" / root)) as resp,
        ):
            if resp.status == 404:
                return None
            resp.raise_for_status()
            body: dict[str, Any] = await resp.json()
            return body

    async def answer(view: View, requested: str, root: str | None) -> Response:
        # The identity graph is authoritative: an erased (or never seen) customer is 404
        # even while the context stage has yet to apply the erasure.
        known = root is not None and p.engine.node(root) is not None
        ctx = await fetch_context(root) if known and root is not None else None
        if ctx is None:
            return _error(view, 404, "not_found", f"no customer {requested!r}")
        return view.json(ctx, headers={"Content-Location": f"/v1/customers/{root}"})

    @app.page("/v1/customers/{customer_id}")
    class CustomerById(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            async def local() -> Response:
                return await answer(self, customer_id, p.engine.find(customer_id, compress=False))

            return await route(self, request, identity_table, tenant, local)

        async def delete(self, request: Request, customer_id: str) -> Response:
            async def local() -> Response:
                root = p.engine.find(customer_id, compress=False)
                if p.engine.node(root) is None:
                    return _error(self, 404, "not_found", f"no customer {customer_id!r}")
                req = EraseRequest(
                    request_id=str(uuid.uuid4()), customer_id=root, requested_at=p.now()
                )
                await p.send_request(req)
                body = {"status": "accepted", "request_id": req.request_id, "customer_id": root}
                return self.json(body, status=202)

            return await route(self, request, identity_table, tenant, local)

    @app.page("/v1/customers/{customer_id}/identity")
    class CustomerIdentity(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            async def local() -> Response:
                found = p.engine.view(customer_id, p.identity_position)
                if found is None:
                    return _error(self, 404, "not_found", f"no customer {customer_id!r}")
                return self.json(found.model_dump(mode="json"))

            return await route(self, request, identity_table, tenant, local)

    @app.page("/v1/customers/{customer_id}/split")
    class CustomerSplit(View):
        async def post(self, request: Request, customer_id: str) -> Response:
            try:
                body = json.loads(await cast(web.Request, request).read() or b"{}")
                link_id = body["link_id"]
                if not isinstance(link_id, str) or not link_id:
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                return _error(
                    self,
                    400,
                    "invalid_request",
                    'expected {"link_id": "<event id>"}',
                    field="link_id",
                )

            async def local() -> Response:
                root = p.engine.find(customer_id, compress=False)
                node = p.engine.node(root)
                if node is None:
                    return _error(self, 404, "not_found", f"no customer {customer_id!r}")
                if not any(link.link_id == link_id for link in node.links):
                    msg = f"customer {root!r} has no link {link_id!r}"
                    return _error(self, 404, "not_found", msg, field="link_id")
                req = SplitRequest(
                    request_id=str(uuid.uuid4()),
                    customer_id=root,
                    link_id=link_id,
                    requested_at=p.now(),
                )
                await p.send_request(req)
                reply = {"status": "accepted", "request_id": req.request_id, "customer_id": root}
                return self.json(reply, status=202)

            return await route(self, request, identity_table, tenant, local)

    @app.page("/v1/customers")
    class CustomerByIdentifier(View):
        async def get(self, request: Request) -> Response:
            return await route(self, request, identity_table, tenant, lambda: self.find(request))

        async def find(self, request: Request) -> Response:
            raw = request.query.get("identifier")
            if not raw:
                msg = "query parameter identifier=type:value is required"
                return _error(self, 400, "invalid_request", msg, field="identifier")
            try:
                key = parse_identifier_key(raw, p.rules).key
            except ValueError as exc:
                return _error(self, 400, "invalid_request", str(exc), field="identifier")
            return await answer(self, raw, p.engine.lookup(key, compress=False))

    @app.page("/v1/identity/quarantine")
    class Quarantined(View):
        async def get(self, request: Request) -> Response:
            async def local() -> Response:
                hubs = [q.model_dump(mode="json") for q in p.engine.quarantined()]
                return self.json({"quarantined": hubs, "freshness": _fresh(p)})

            return await route(self, request, identity_table, tenant, local)

    @app.page("/v1/internal/contexts/{customer_id}")
    class ContextByRoot(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            async def local() -> Response:
                ctx = p.customer_snapshot(customer_id)
                if ctx is None:
                    return _error(self, 404, "not_found", f"no context for {customer_id!r}")
                return self.json(ctx)

            return await route(self, request, p.contexts, customer_id, local)

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/readyz")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            if (busy := not_ready(self)) is not None:
                return busy
            if broker_ok is not None and not broker_ok():
                body = {"error": "not_ready", "message": "the Kafka broker does not answer"}
                return self.json(body, status=503, headers={"Retry-After": "5"})
            return self.json({"status": "ready"})

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            body = generate_latest(REGISTRY)
            # aiohttp's own response: faust's helper rejects Prometheus' parameterised type.
            headers = {"Content-Type": CONTENT_TYPE_LATEST}
            return cast(Response, web.Response(body=body, headers=headers))


def _fresh(p: Pipeline) -> dict[str, Any]:
    return p.identity_position.model_dump(mode="json")


async def _forward(view: View, request: Request, dest: URL) -> Response:
    """Proxy a request, body included, to the worker at ``dest``; relay its answer.

    faust's own router forwards the method and headers but not the body, so a POST
    routed to another worker would hang waiting for it.
    """
    rel = cast(web.Request, request).rel_url
    body = await cast(web.Request, request).read()  # aiohttp caches it: safe to read twice
    headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            request.method,
            str(dest.with_path(rel.path).with_query(rel.query)),
            data=body,
            headers=headers,
        ) as resp,
    ):
        payload = await resp.read()
        relay = {"Content-Type": resp.headers.get("Content-Type", "application/json")}
        return cast(Response, web.Response(body=payload, status=resp.status, headers=relay))


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
