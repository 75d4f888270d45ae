"""The query API on the real broker: timeline paging, lookup, freshness, and live streams.

One worker answers paging, lookup, validation and freshness; then two workers of one app
answer the same questions for each other: every request is made through *both* workers,
so one of them is always the worker that does not hold the customer (the identity tables
live on one worker, a customer's context on the worker owning its partition) and has to
route, or, for the Server-Sent Events stream, serve it from its own tail of
``customer.context``.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from schemas.context import CustomerContext
from schemas.events import Identifier, RawEvent
from tests.integration.test_identity_at_scale import Cluster
from tests.integration.test_worker_kafka import publish_events
from tests.processes import Process, http_json, wait_for

#: Recent, so that the context policy's window keeps every event on the timeline.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
FRESHNESS = "X-Omnistitch-Freshness"


def ev(eid: str, minute: float, *ids: tuple[str, str], **kw: Any) -> RawEvent:
    body: dict[str, Any] = {
        "event_id": eid,
        "channel": "web",
        "source": "test",
        "kind": "page",
        "name": f"Page {eid}",
        "occurred_at": T0 + timedelta(minutes=minute),
        "received_at": T0,
        "identifiers": [Identifier(type=t, value=v) for t, v in ids],
    }
    body.update(kw)
    return RawEvent.model_validate(body)


def chat(eid: str, minute: float, text: str, *ids: tuple[str, str]) -> RawEvent:
    props = {"conversation_id": "conv-q", "author": "visitor", "text": text}
    return ev(eid, minute, *ids, channel="chat", kind="message", name=None, properties=props)


def get(url: str, **params: str) -> httpx.Response:
    """GET, retrying while the worker rebalances (503) or is not listening yet."""
    deadline = time.monotonic() + 60
    while True:
        try:
            resp = httpx.get(url, params=params, timeout=15)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        else:
            if resp.status_code != 503 or time.monotonic() > deadline:
                return resp
        time.sleep(0.25)


def wait_customer(
    api: str, identifier: str, done: Callable[[CustomerContext], bool], proc: Process | None
) -> CustomerContext:
    url = f"{api}/v1/customers?identifier={quote(identifier, safe='')}"

    def probe() -> CustomerContext | None:
        body = http_json(url)
        ctx = None if body is None else CustomerContext.model_validate(body)
        return ctx if ctx is not None and done(ctx) else None

    return wait_for(f"customer {identifier}", probe, 90, proc)


def walk_timeline(api: str, customer_id: str, limit: int) -> list[dict[str, Any]]:
    """Every entry, following ``next`` until the last page; checks each page's shape."""
    entries: list[dict[str, Any]] = []
    before: str | None = None
    for _ in range(1000):
        params = {"limit": str(limit)} | ({} if before is None else {"before": before})
        resp = get(f"{api}/v1/customers/{customer_id}/timeline", **params)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert page["customer_id"] == customer_id
        assert len(page["entries"]) <= limit
        assert page["freshness"]["context_version"] is not None
        assert FRESHNESS in resp.headers
        entries.extend(page["entries"])
        before = page["next"]
        if before is None:
            return entries
        assert len(page["entries"]) == limit
    raise AssertionError("the cursor walk did not end")


def check_walk(api: str, customer: CustomerContext, limit: int) -> None:
    walked = walk_timeline(api, customer.customer_id, limit)
    ids = [e["event_id"] for e in walked]
    assert len(ids) == len(set(ids)), "an entry came twice"
    assert set(ids) == {e.event_id for e in customer.timeline}
    order = [(datetime.fromisoformat(e["occurred_at"]), e["event_id"]) for e in walked]
    assert order == sorted(order, reverse=True), "not newest first"


class EventStream:
    """A Server-Sent Events client on a thread: parsed ``(event, data)`` pairs in a queue."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.seen: list[tuple[str, Any]] = []
        self.status: int | None = None
        self.headers: httpx.Headers | None = None
        self.comments = 0
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=60.0))
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sse", daemon=True)
        self._thread.start()
        assert self._started.wait(60), f"no answer from {url}"

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self.url) as resp:
                self.status, self.headers = resp.status_code, resp.headers
                self._started.set()
                if resp.status_code != 200:
                    self.events.put(("_status", resp.read().decode()))
                    return
                event, data = "message", list[str]()
                for line in resp.iter_lines():
                    if line == "":
                        if data:
                            self.events.put((event, json.loads("\n".join(data))))
                        event, data = "message", list[str]()
                    elif line.startswith(":"):
                        self.comments += 1
                    elif line.startswith("event:"):
                        event = line.removeprefix("event:").strip()
                    elif line.startswith("data:"):
                        data.append(line.removeprefix("data:").removeprefix(" "))
        except Exception as exc:  # surfaced to the test through the queue
            self.events.put(("_error", repr(exc)))
        finally:
            self._started.set()
            self.events.put(("_closed", None))

    def next_event(self, timeout: float = 60.0) -> tuple[str, Any]:
        try:
            item = self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event from {self.url} within {timeout}s") from None
        self.seen.append(item)
        return item

    def wait_for(self, what: str, match: Callable[[str, Any], bool], timeout: float = 90.0) -> Any:
        """Skip events until one matches; fail (listing what came) on timeout or close."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what}: not seen in {timeout}s; got {self.summary()}")
            event, data = self.next_event(left)
            if event.startswith("_"):
                raise AssertionError(f"{what}: stream ended ({event} {data}); {self.summary()}")
            if match(event, data):
                return data

    def summary(self) -> list[str]:
        return [
            f"{e}:{d.get('customer_id')}:v{d.get('version')}" if isinstance(d, dict) else e
            for e, d in self.seen
        ]

    def close(self) -> None:
        self._client.close()


def has_event(event_id: str) -> Callable[[str, Any], bool]:
    def match(event: str, data: Any) -> bool:
        return event == "context" and any(e["event_id"] == event_id for e in data["timeline"])

    return match


# -- one worker: paging, lookup, validation, freshness ------------------------------------
def test_timeline_paging_lookup_and_freshness(worker_env: dict[str, str], tmp_path: Path) -> None:
    env = worker_env
    api = f"http://127.0.0.1:{env['OMNISTITCH_API_PORT']}"
    worker = Process("worker", env, tmp_path / "worker.log").start()
    try:
        anon = ("anonymous_id", "anon-q")
        events = [ev(f"p{i:02d}", i // 3, anon) for i in range(18)]  # ties: 3 per minute
        events += [
            chat("c1", 10, "Hi, <b>my order</b> is late", anon, ("email", "Quinn@Example.com")),
            chat("c2", 11, "My number is (415) 555-0142", ("email", "quinn@example.com"),
                 ("phone", "(415) 555-0142")),
            ev("m1", 12, ("messenger_psid", "7788990011"), ("phone", "+14155550142"),
               channel="social", kind="message"),
            ev("i1", 13, ("instagram", "@Quinn.Q"), ("email", "quinn@example.com"),
               channel="social", kind="message"),
            ev("u1", 14, ("user_id", "u-quinn"), ("email", "quinn@example.com"), kind="identify"),
        ]  # fmt: skip
        publish_events(env, events)
        customer = wait_customer(api, "user_id:u-quinn", lambda c: len(c.timeline) == 23, worker)
        cid = customer.customer_id

        # Paging: every entry exactly once, newest first, whatever the page size.
        for limit in (1, 5, 7, 23, 500):
            check_walk(api, customer, limit)
        default = get(f"{api}/v1/customers/{cid}/timeline").json()
        assert len(default["entries"]) == 23
        assert default["next"] is None
        # A page walked while new events arrive: the pages below the cursor do not move.
        first = get(f"{api}/v1/customers/{cid}/timeline", limit="10").json()
        publish_events(env, [ev("late-new", 60, anon)])
        wait_customer(api, "user_id:u-quinn", lambda c: len(c.timeline) == 24, worker)
        rest = walk_timeline_from(api, cid, first["next"])
        assert [e["event_id"] for e in first["entries"]] + [e["event_id"] for e in rest] == [
            e["event_id"] for e in default["entries"]
        ]

        # Validation: 400 naming the field, in the connectors' error shape.
        for params, field in (
            ({"limit": "0"}, "limit"),
            ({"limit": "501"}, "limit"),
            ({"limit": "many"}, "limit"),
            ({"before": "%%%"}, "before"),
            ({"before": "eyJub3QiOiJhIGN1cnNvciJ9"}, "before"),
        ):
            resp = get(f"{api}/v1/customers/{cid}/timeline", **params)
            assert resp.status_code == 400, (params, resp.text)
            body = resp.json()
            assert body["error"] == "invalid_request"
            assert body["errors"][0]["field"] == field
            assert body["field"] == field
        missing = get(f"{api}/v1/customers/cus_nobody/timeline")
        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"

        # Lookup: what an agent types, in any spelling.
        for typed, matched in (
            ("(415) 555-0142", "phone:+14155550142"),
            ("+1 415-555-0142", "phone:+14155550142"),
            ("415.555.0142", "phone:+14155550142"),
            ("QUINN@example.com", "email:quinn@example.com"),
            ("mailto:quinn@example.com", "email:quinn@example.com"),
            ("@quinn.q", "instagram:quinn.q"),
            ("messenger_psid:7788990011", "messenger_psid:7788990011"),
            ("7788990011", "messenger_psid:7788990011"),
            ("user_id:u-quinn", "user_id:u-quinn"),
            ("u-quinn", "user_id:u-quinn"),
            ("anon-q", "anonymous_id:anon-q"),
        ):
            resp = get(f"{api}/v1/lookup", q=typed)
            assert resp.status_code == 200, (typed, resp.text)
            body = resp.json()
            assert body["customer_id"] == cid, typed
            assert body["matched"] == matched, typed
            assert CustomerContext.model_validate(body["customer"]).customer_id == cid
        nobody = get(f"{api}/v1/lookup", q="(415) 555-0000")
        assert nobody.status_code == 404
        assert nobody.json()["error"] == "not_found"
        assert "phone:+14155550000" in nobody.json()["tried"]
        for bad in ("", "null", "phone:12"):
            resp = get(f"{api}/v1/lookup", q=bad)
            assert resp.status_code == 400, (bad, resp.text)
            assert resp.json()["errors"][0]["field"] == "q"
        assert get(f"{api}/v1/lookup").json()["errors"][0]["field"] == "q"

        # Freshness: the body's object and the header, on every answer about the customer.
        found = get(f"{api}/v1/lookup", q="(415) 555-0142")
        fresh = found.json()["freshness"]
        ctx = found.json()["customer"]
        assert fresh["context_version"] == ctx["version"]
        assert fresh["context_updated_at"] == ctx["updated_at"] is not None
        assert fresh["context_age_s"] >= 0
        stage = fresh["context_stage"]
        assert stage["topic"].endswith("-customer-ops")
        assert stage["processed_offset"] is not None
        assert stage["lag"] == 0  # nothing else is being written
        assert fresh["identity"]["offset"] is not None
        header = found.headers[FRESHNESS]
        assert f"version={ctx['version']}" in header
        assert "context_lag=0" in header
        profile = get(f"{api}/v1/customers/{cid}")
        assert CustomerContext.model_validate(profile.json()).customer_id == cid  # body as is
        assert f"version={profile.json()['version']}" in profile.headers[FRESHNESS]
        assert "Last-Modified" in profile.headers
        by_identifier = get(f"{api}/v1/customers", identifier="phone:(415) 555-0142")
        assert FRESHNESS in by_identifier.headers
        assert "identity_offset=" in get(f"{api}/v1/customers/{cid}/identity").headers[FRESHNESS]
    finally:
        worker.stop()


def walk_timeline_from(api: str, customer_id: str, cursor: str | None) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    while cursor is not None:
        page = get(f"{api}/v1/customers/{customer_id}/timeline", limit="4", before=cursor).json()
        entries.extend(page["entries"])
        cursor = page["next"]
    return entries


# -- two workers: routing, and streams served by whichever worker is asked ----------------
def test_two_workers_route_timeline_lookup_and_streams(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    cluster = Cluster(worker_env, tmp_path).start()
    env = cluster.env
    streams: list[EventStream] = []
    try:
        # Customer A first (the older one survives a merge), then B.
        publish_events(env, [ev("a1", 0, ("anonymous_id", "anon-a"), ("email", "ann@x.com"))])
        a = wait_customer(cluster.api(0), "email:ann@x.com", lambda c: True, None)
        publish_events(env, [ev("b1", 1, ("anonymous_id", "anon-b"))])
        b = wait_customer(cluster.api(1), "anonymous_id:anon-b", lambda c: True, None)
        assert a.customer_id != b.customer_id
        cluster.check_alive()

        for via in (0, 1):
            api = cluster.api(via)
            check_walk(api, a, 1)
            found = get(f"{api}/v1/lookup", q="ANN@x.com")
            assert found.status_code == 200, found.text
            assert found.json()["customer_id"] == a.customer_id
            assert found.json()["freshness"]["context_stage"]["processed_offset"] is not None
            assert FRESHNESS in found.headers
            bad = get(f"{api}/v1/customers/{a.customer_id}/timeline", limit="0")
            assert bad.status_code == 400

        # A stream of B through each worker: the first message is B's current context.
        for via in (0, 1):
            stream = EventStream(f"{cluster.api(via)}/v1/customers/{b.customer_id}/stream")
            streams.append(stream)
            assert stream.status == 200, stream.events.get(timeout=5)
            assert stream.headers is not None
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert FRESHNESS in stream.headers
            event, first = stream.next_event()
            assert event == "context", stream.summary()
            assert first["customer_id"] == b.customer_id
            assert first["version"] >= b.version
        # An update of B reaches both.
        publish_events(env, [ev("b2", 2, ("anonymous_id", "anon-b"))])
        for stream in streams:
            stream.wait_for("B's update", has_event("b2"))
        # B is merged into A: both streams say so, then follow A.
        publish_events(env, [ev("join", 3, ("anonymous_id", "anon-b"), ("email", "ann@x.com"))])
        for stream in streams:
            merged = stream.wait_for("the merge", lambda e, d: e == "merged")
            assert merged == {"customer_id": b.customer_id, "into": a.customer_id}
            stream.wait_for(
                "A with B's history",
                lambda e, d: (
                    e == "context"
                    and d["customer_id"] == a.customer_id
                    and {"b1", "b2", "join"} <= {x["event_id"] for x in d["timeline"]}
                ),
            )
        # A's later changes come on the streams that were opened for B.
        publish_events(env, [ev("a2", 4, ("anonymous_id", "anon-a"))])
        for stream in streams:
            ctx = stream.wait_for("A's update", has_event("a2"))
            assert ctx["customer_id"] == a.customer_id
            assert b.customer_id in ctx["merged_from"]
        # The merged-away id still resolves, on either worker, to the survivor's timeline.
        for via in (0, 1):
            page = get(f"{cluster.api(via)}/v1/customers/{b.customer_id}/timeline").json()
            assert page["customer_id"] == a.customer_id
            assert {"a1", "a2", "b1", "b2", "join"} <= {e["event_id"] for e in page["entries"]}
        # An unknown customer has no stream: a JSON 404, not an empty event stream.
        nobody = get(f"{cluster.api(0)}/v1/customers/cus_nobody/stream")
        assert nobody.status_code == 404
        assert nobody.json()["error"] == "not_found"
        cluster.check_alive()
    finally:
        for stream in streams:
            stream.close()
        cluster.stop()
