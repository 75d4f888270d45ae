"""The query and operator API, served by every worker through faust's web server.

Each worker holds only some partitions of the tables, so every view is routed to the
worker that owns the key (faust's table router), whichever worker received the request.
The identity tables all live on the tenant's partition; contexts on the customer's.

* ``GET /v1/customers/{id}``: the customer's context. An id that was merged away resolves
  to the survivor (the response's ``customer_id`` says which).
* ``GET /v1/customers?identifier=type:value``: the customer holding that identifier.
* ``GET /v1/customers/{id}/timeline?limit=N&before=<cursor>``: the timeline, newest first,
  a page at a time (``next`` is the cursor of the following page, null on the last).
* ``GET /v1/lookup?q=...``: whatever an agent types (a phone number in any spelling, an
  email, a handle, ``type:value``), tried as every identifier it could be (pipeline.lookup).
* ``GET /v1/customers/{id}/stream``: Server-Sent Events of the customer's context
  (``context``, ``merged``, ``deleted``, ``unavailable``), served by the worker that
  receives it from its own tail of ``customer.context`` (pipeline.context_feed).
* ``GET /v1/customers/{id}/identity``: identifiers, links with evidence, rejected links,
  quarantines, and the view's freshness.
* ``POST /v1/customers/{id}/split`` ``{"link_id": ...}``: remove a link (202).
* ``DELETE /v1/customers/{id}``: erase the person (202).
* ``GET /v1/identity/quarantine``: hub identifiers that no longer merge.
* ``GET /agent``: the agent desktop page (pipeline/static/).
* ``GET /healthz`` (alive), ``GET /readyz`` (partitions assigned, tables recovered, broker
  reachable), ``GET /metrics`` (Prometheus).

Every answer about a customer says how fresh it is: a ``freshness`` object in JSON bodies
that have room for it, and the ``X-Omnistitch-Freshness`` header everywhere (fields in
pipeline.query). The profile answers (``/v1/customers/{id}``, ``?identifier=``) keep the
exact ``customer.context`` value as their body, so their freshness is the header only.

Errors are JSON: ``{"error": ..., "message": ...}`` with 400, 404 or 503; a 400 also names
the parameter (``"field"`` and ``"errors": [{"field": ..., "message": ...}]``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any, NamedTuple, cast

import aiohttp
import faust
from aiohttp import web
from faust.transport.drivers.aiokafka import Producer as AIOKafkaDriverProducer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types import TP, CollectionT
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from yarl import URL

from omnistitch.kafka_client import faust_credentials
from pipeline import query
from pipeline.app import Pipeline
from pipeline.context_feed import (
    Closed,
    ContextFeed,
    Merged,
    Resync,
    Subscription,
    Tombstone,
    Update,
    aiokafka_consumer_factory,
)
from pipeline.lookup import InvalidQuery, candidates
from pipeline.normalize import parse_identifier_key
from pipeline.ops import EraseRequest, SplitRequest

log = logging.getLogger(__name__)

#: Internal: the context stage's position, from the worker holding a context to the one
#: answering (JSON of :func:`pipeline.query.stage_position`).
_POSITION_HEADER = "X-Omnistitch-Context-Position"
#: Headers a routed answer keeps on its way back through the worker that received it.
_RELAYED = (
    "Content-Type",
    "Content-Location",
    "Last-Modified",
    "Retry-After",
    query.FRESHNESS_HEADER,
    _POSITION_HEADER,
)
#: A comment line on an idle event stream, so proxies keep it open and a gone client shows.
KEEPALIVE_S = 15.0
STATIC = Path(__file__).with_name("static")
_ASSETS = {
    "agent.js": "text/javascript; charset=utf-8",
    "agent.css": "text/css; charset=utf-8",
}
_PAGE_HEADERS = {
    # The page renders customer data: no inline script, nothing from elsewhere.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class Answer(NamedTuple):
    """A routed answer as data: status, JSON body, the headers worth keeping, and (when
    resolved on this worker) its freshness object."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    freshness: dict[str, Any] | None = None


class _Busy(Exception):
    """Another worker could not answer an internal hop (rebalancing, or gone)."""


def _busy_answer(message: str) -> Answer:
    return Answer(503, {"error": "not_ready", "message": message}, {"Retry-After": "1"})


def _error(view: View, status: int, error: str, message: str, **extra: str) -> Response:
    return view.json({"error": error, "message": message, **extra}, status=status)


def _invalid(view: View, field: str, message: str) -> Response:
    return view.json(query.error_body(field, message), status=400)


def register_api(p: Pipeline, broker_ok: Callable[[], bool] | None = None) -> None:
    """Attach the API's views to the pipeline's faust app.

    ``broker_ok`` (the lag monitor's health: it reads offsets from the broker) is part of
    ``/readyz``; the query views only need the tables.
    """
    app = p.app
    tenant = p.settings.tenant
    identity_table = cast(CollectionT, p.identity_tables.nodes)
    feed = ContextFeed(
        p.context_topic.get_topic_name(),
        aiokafka_consumer_factory(
            p.settings.bootstrap_servers,
            credentials_to_aiokafka_auth(faust_credentials(p.settings)),
            client_id=f"{p.settings.app_id}-context-feed",
        ),
    )

    async def close_streams(_sender: Any, *args: Any, **_kw: Any) -> None:
        await feed.close()  # end every event stream, so the web server can stop at once

    app.on_before_shutdown.connect(cast(Any, close_streams))  # mode: loose types

    def not_ready(view: View) -> Response | None:
        if p.ready:
            return None
        body = {"error": "not_ready", "message": "worker is rebalancing or recovering tables"}
        return view.json(body, status=503, headers={"Retry-After": "1"})

    async def owner(table: CollectionT, key: str) -> URL | None:
        """The worker that holds ``key`` of ``table``; None when it is this one."""
        await _know_partitions(app, table.changelog_topic.get_topic_name())
        dest = URL(str(app.router.key_store(table.name, key)))
        return None if _same_node(dest, URL(str(app.conf.canonical_url))) else dest

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
        dest = await owner(table, key)
        if dest is None:
            return await local()
        return await _forward(view, request, dest)

    async def context_position(root: str) -> dict[str, Any]:
        """Where this worker's context stage is on ``root``'s partition of the ops topic."""
        topic = p.ops_topic.get_topic_name()
        await _know_partitions(app, topic)
        tp = app.producer.key_partition(topic, root.encode())
        return query.stage_position(topic, tp.partition, *_processed_and_end(app, tp))

    async def fetch_context(root: str) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """A root customer's context and its stage position, from wherever it is held."""
        dest = await owner(p.contexts, root)
        if dest is None:
            ctx = p.customer_snapshot(root)
            return None if ctx is None else (ctx, await context_position(root))
        try:
            got = await _get_json(dest / "v1" / "internal" / "contexts" / root)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Busy(f"the worker holding {root!r} did not answer: {exc!r}") from exc
        if got.status == 404:
            return None
        if got.status != 200:
            raise _Busy(f"the worker holding {root!r} answered {got.status}")
        raw = got.headers.get(_POSITION_HEADER)
        return got.body, None if raw is None else json.loads(raw)

    def fresh(ctx: dict[str, Any] | None, position: dict[str, Any] | None) -> dict[str, Any]:
        return query.freshness(ctx, position, _fresh(p), p.now())

    def fresh_headers(ctx: dict[str, Any], freshness: dict[str, Any]) -> dict[str, str]:
        headers = {query.FRESHNESS_HEADER: query.freshness_header(freshness)}
        if isinstance(updated := ctx.get("updated_at"), str):
            headers["Last-Modified"] = format_datetime(datetime.fromisoformat(updated), True)
        return headers

    async def resolve(requested: str, root: str | None) -> Answer:
        """The context of ``root`` (the identity stage's answer for ``requested``).

        Runs on the identity owner. The identity graph is authoritative: an erased (or never
        seen) customer is 404 even while the context stage has yet to apply the erasure.
        """
        known = root is not None and p.engine.node(root) is not None
        try:
            got = await fetch_context(root) if known and root is not None else None
        except _Busy as exc:
            return _busy_answer(str(exc))
        if got is None:
            return Answer(404, {"error": "not_found", "message": f"no customer {requested!r}"}, {})
        ctx, position = got
        freshness = fresh(ctx, position)
        headers = fresh_headers(ctx, freshness)
        headers["Content-Location"] = f"/v1/customers/{root}"
        return Answer(200, ctx, headers, freshness)

    async def answer(view: View, requested: str, root: str | None) -> Response:
        found = await resolve(requested, root)
        return view.json(found.body, status=found.status, headers=found.headers)

    async def profile(requested: str) -> Answer:
        """``GET /v1/customers/{requested}`` as data, routed like the view (SSE uses it)."""
        if not p.ready:
            body = {"error": "not_ready", "message": "worker is rebalancing or recovering tables"}
            return Answer(503, body, {"Retry-After": "1"})
        dest = await owner(identity_table, tenant)
        if dest is None:
            return await resolve(requested, p.engine.find(requested, compress=False))
        try:
            return await _get_json(dest / "v1" / "customers" / requested)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _busy_answer(f"the identity owner did not answer: {exc!r}")

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

    @app.page("/v1/customers/{customer_id}/timeline")
    class CustomerTimeline(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            try:
                limit, before = query.page_params(request.query)
            except query.InvalidParam as exc:
                return _invalid(self, exc.field, exc.message)

            async def local() -> Response:
                found = await resolve(customer_id, p.engine.find(customer_id, compress=False))
                if found.status != 200 or found.freshness is None:
                    return self.json(found.body, status=found.status, headers=found.headers)
                ctx, freshness, root = found.body, found.freshness, str(found.body["customer_id"])
                entries, nxt = query.timeline_page(ctx.get("timeline") or [], limit, before)
                body = {
                    "customer_id": root,
                    "requested_id": customer_id,
                    "entries": entries,
                    "next": nxt,
                    "archived": ctx.get("archived"),
                    "freshness": freshness,
                }
                return self.json(body, headers=found.headers)

            return await route(self, request, identity_table, tenant, local)

    @app.page("/v1/lookup")
    class Lookup(View):
        async def get(self, request: Request) -> Response:
            q = request.query.get("q")
            if q is None:
                msg = "query parameter q is required: a phone, an email, a handle or type:value"
                return _invalid(self, "q", msg)
            try:
                tried = candidates(q, p.rules).keys
            except InvalidQuery as exc:
                return _invalid(self, "q", str(exc))

            async def local() -> Response:
                matches: list[dict[str, str]] = []
                for key in tried:
                    root = p.engine.lookup(key, compress=False)
                    if root is not None and p.engine.node(root) is not None:
                        matches.append({"identifier": key, "customer_id": root})
                found = await resolve(q, matches[0]["customer_id"]) if matches else None
                if found is not None and found.status not in (200, 404):
                    return self.json(found.body, status=found.status, headers=found.headers)
                if found is None or found.status != 200:
                    missing: dict[str, Any] = {
                        "error": "not_found",
                        "message": f"no customer matches {q!r}",
                        "tried": list(tried),
                        "freshness": fresh(None, None),
                    }
                    return self.json(missing, status=404)
                body: dict[str, Any] = {
                    "query": q,
                    "matched": matches[0]["identifier"],
                    "customer_id": matches[0]["customer_id"],
                    "customer": found.body,
                    "matches": matches,
                    "tried": list(tried),
                    "freshness": found.freshness,
                }
                return self.json(body, headers=found.headers)

            return await route(self, request, identity_table, tenant, local)

    @app.page("/v1/customers/{customer_id}/stream")
    class CustomerStream(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            if (busy := not_ready(self)) is not None:
                return busy
            try:
                sub = await feed.subscribe(customer_id)
            except Exception:
                log.exception("cannot follow customer.context for a stream")
                body = {"error": "unavailable", "message": "the context feed cannot start"}
                return self.json(body, status=503, headers={"Retry-After": "5"})
            try:
                first = await follow(sub, customer_id)
                if first.status != 200:
                    return self.json(first.body, status=first.status, headers=first.headers)
                stream = web.StreamResponse(
                    headers={
                        "Content-Type": "text/event-stream",
                        "Cache-Control": "no-cache",
                        "X-Accel-Buffering": "no",
                        **{
                            k: v
                            for k, v in first.headers.items()
                            if k in (query.FRESHNESS_HEADER, "Content-Location")
                        },
                    }
                )
                await stream.prepare(cast(web.Request, request))
                try:
                    await stream.write(b"retry: 2000\n\n")
                    await pump(stream, sub, first.body)
                except ConnectionResetError:
                    pass  # the client went away: nothing to tell anyone
                return cast(Response, stream)
            finally:
                feed.unsubscribe(sub)

    async def follow(sub: Subscription, requested: str) -> Answer:
        """Make ``sub`` follow ``requested``'s current customer; return its context.

        Subscribe (or re-target) first, fetch second: a change published in between is
        then in the queue, and one published before is in the fetched context. A fetch that
        lands on another id (a merge) re-targets and fetches again.
        """
        got = await profile(requested)
        for _ in range(5):
            if got.status != 200:
                return got
            root = str(got.body["customer_id"])
            if root == sub.customer_id:
                return got
            feed.retarget(sub, root)
            got = await profile(root)
        return got

    async def pump(stream: web.StreamResponse, sub: Subscription, ctx: dict[str, Any]) -> None:
        """Write the stream's events until the client leaves or the feed closes."""
        current, version = str(ctx["customer_id"]), int(ctx.get("version", 0))
        await stream.write(query.sse_event("context", ctx, f"{current}:{version}"))
        while True:
            try:
                item = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
            except TimeoutError:
                await stream.write(query.SSE_KEEPALIVE)
                continue
            if isinstance(item, Closed):
                await stream.write(query.sse_event("unavailable", {"reason": item.reason}))
                return
            if isinstance(item, Merged):
                if item.from_id == current:
                    merged = {"customer_id": item.from_id, "into": item.into_id}
                    await stream.write(query.sse_event("merged", merged))
                    current, version = item.into_id, -1
                # Also when this reader already followed the survivor (it found the merge
                # through the tombstone first): the record is the survivor's context.
                item = Update(item.into_id, item.value)
            if isinstance(item, Update):
                if item.customer_id != current:
                    continue  # queued before a re-target
                new = int(json.loads(item.value).get("version", 0))
                if new > version:
                    version = new
                    event = query.sse_raw_event("context", item.value, f"{current}:{new}")
                    await stream.write(event)
                continue
            if isinstance(item, Tombstone) and item.customer_id != current:
                continue
            # A tombstone of the followed id (merged away, split away or erased), or a
            # backlog dropped for a slow reader: ask the identity graph where it went.
            assert isinstance(item, Tombstone | Resync)
            got = await follow(sub, current)
            if got.status == 404:
                await stream.write(query.sse_event("deleted", {"customer_id": current}))
                return
            if got.status != 200:
                await stream.write(query.sse_event("unavailable", {"reason": got.body}))
                return
            root = str(got.body["customer_id"])
            if root != current:
                merged = {"customer_id": current, "into": root}
                await stream.write(query.sse_event("merged", merged))
                current, version = root, -1
            new = int(got.body.get("version", 0))
            if new > version:
                version = new
                await stream.write(query.sse_event("context", got.body, f"{current}:{new}"))

    @app.page("/v1/customers/{customer_id}/identity")
    class CustomerIdentity(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            async def local() -> Response:
                found = p.engine.view(customer_id, p.identity_position)
                if found is None:
                    return _error(self, 404, "not_found", f"no customer {customer_id!r}")
                body = found.model_dump(mode="json")
                identity_only = query.freshness(None, None, body["freshness"], p.now())
                headers = {query.FRESHNESS_HEADER: query.freshness_header(identity_only)}
                return self.json(body, headers=headers)

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
                return _invalid(self, "link_id", 'expected {"link_id": "<event id>"}')

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
                return _invalid(self, "identifier", msg)
            try:
                key = parse_identifier_key(raw, p.rules).key
            except ValueError as exc:
                return _invalid(self, "identifier", str(exc))
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
                position = await context_position(customer_id)
                headers = fresh_headers(ctx, query.freshness(ctx, position, None, p.now()))
                headers[_POSITION_HEADER] = json.dumps(position, separators=(",", ":"))
                return self.json(ctx, headers=headers)

            return await route(self, request, p.contexts, customer_id, local)

    pages = {name: (STATIC / name).read_bytes() for name in ("agent.html", *_ASSETS)}

    @app.page("/agent")
    class AgentDesktop(View):
        async def get(self, request: Request) -> Response:
            headers = {**_PAGE_HEADERS, "Content-Type": "text/html; charset=utf-8"}
            return cast(Response, web.Response(body=pages["agent.html"], headers=headers))

    @app.page("/agent/static/{name}")
    class AgentAsset(View):
        async def get(self, request: Request, name: str) -> Response:
            if name not in _ASSETS:
                return _error(self, 404, "not_found", f"no asset {name!r}")
            headers = {**_PAGE_HEADERS, "Content-Type": _ASSETS[name]}
            return cast(Response, web.Response(body=pages[name], headers=headers))

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


def _processed_and_end(app: faust.App, tp: TP) -> tuple[int | None, int | None]:
    """The last offset of ``tp`` this worker's stream finished, and the partition's end.

    faust acks a message once the agent has processed it and commits the acked prefix
    (committed = next offset to read); the processed position is the newer of the two. The
    end offset is the consumer's last fetched high watermark (None if not assigned here).
    These are faust's own bookkeeping, read without a lock: a snapshot, which is all a
    freshness report needs.
    """
    consumer: Any = app.consumer
    acked: list[int] = list(consumer._acked.get(tp) or [])
    committed: int | None = consumer._committed_offset.get(tp)
    candidates_ = [*acked, *([] if committed is None else [committed - 1])]
    processed = max(candidates_) if candidates_ else None
    end = consumer.highwater(tp) if tp in consumer.assignment() else None
    return processed, None if end is None else int(end)


async def _get_json(url: URL) -> Answer:
    """GET a JSON answer from another worker (an internal hop)."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(str(url)) as resp:
        body: dict[str, Any] = await resp.json(content_type=None)
        # Content-Type stays behind: the answer is re-serialised here, as JSON.
        headers = {
            k: v for k in _RELAYED if k != "Content-Type" and (v := resp.headers.get(k)) is not None
        }
        return Answer(resp.status, body, headers)


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
        relay = _relayed(resp.headers)
        relay.setdefault("Content-Type", "application/json")
        return cast(Response, web.Response(body=payload, status=resp.status, headers=relay))


def _relayed(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k in _RELAYED if (v := headers.get(k)) is not None}


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
