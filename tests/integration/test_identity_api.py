"""The identity engine through the worker's API, on the real broker: why, split, erase, hubs."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from schemas.context import CustomerContext
from schemas.events import RawEvent
from schemas.identity import IdentityView, Split
from tests.integration.test_worker_kafka import consume_until, publish_events, raw
from tests.processes import Process, http_json, wait_for

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def api(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['OMNISTITCH_API_PORT']}"


def customer(env: dict[str, str], ref: str, proc: Process, pred: object = None) -> CustomerContext:
    """Wait for the customer (by id or ``type:value``) to exist and satisfy ``pred``."""
    url = f"{api(env)}/v1/customers" + (f"?identifier={ref}" if ":" in ref else f"/{ref}")

    last: list[object] = [None]

    def probe() -> CustomerContext | None:
        body = last[0] = http_json(url)
        ctx = None if body is None else CustomerContext.model_validate(body)
        return ctx if ctx is not None and (pred is None or pred(ctx)) else None  # type: ignore[operator]

    try:
        return wait_for(f"customer {ref}", probe, 90, proc)
    except AssertionError as exc:
        raise AssertionError(f"last answer for {ref}: {last[0]}") from exc


def identity(env: dict[str, str], cid: str) -> IdentityView:
    body = http_json(f"{api(env)}/v1/customers/{cid}/identity")
    assert body is not None
    return IdentityView.model_validate(body)


def events_of(ctx: CustomerContext) -> list[str]:
    return sorted(e.event_id for e in ctx.timeline)


def test_why_split_and_erase(worker_env: dict[str, str], tmp_path: Path) -> None:
    env = worker_env
    worker = Process("worker", env, tmp_path / "worker.log").start()
    try:
        publish_events(
            env,
            [
                raw("a1", 0, ("anonymous_id", "laptop"), ("email", "ann@x.com"), channel="chat"),
                raw("b1", 1, ("anonymous_id", "phone")),
                raw("b2", 2, ("anonymous_id", "phone"), ("phone", "(415) 555-0101")),
            ],
        )
        a = customer(env, "email:ann@x.com", worker).customer_id
        b = customer(env, "anonymous_id:phone", worker, lambda c: len(c.timeline) == 2).customer_id
        assert a != b
        publish_events(env, [raw("j1", 3, ("anonymous_id", "phone"), ("email", "ann@x.com"))])
        joined = customer(env, "phone:+14155550101", worker, lambda c: len(c.timeline) == 4)
        assert joined.customer_id == a

        # Why: the links behind the customer, with their evidence and the view's freshness.
        why = identity(env, b)
        assert why.customer_id == a
        assert why.requested_id == b
        assert [link.link_id for link in why.links] == ["a1", "b1", "b2", "j1"]
        join = why.links[-1]
        assert join.merged == [b]
        assert join.evidence.topic == env["OMNISTITCH_TOPIC_PREFIX"] + "raw.events"
        assert join.evidence.partition is not None
        assert join.evidence.offset is not None
        assert join.evidence.rule_version == "builtin-1"
        assert why.freshness.offset is not None
        assert why.freshness.event_time == T0 + timedelta(minutes=3)

        # Split: bad requests are clear errors; a real one restores the old ids.
        url = f"{api(env)}/v1/customers/{a}/split"
        bad = httpx.post(url, json={"nope": 1}, timeout=10)
        assert bad.status_code == 400
        assert bad.json()["field"] == "link_id"
        unknown = httpx.post(url, json={"link_id": "no-such-event"}, timeout=10)
        assert unknown.status_code == 404
        accepted = httpx.post(url, json={"link_id": "j1"}, timeout=10)
        assert accepted.status_code == 202
        assert accepted.json()["customer_id"] == a
        back = customer(env, b, worker, lambda c: c.customer_id == b)
        ann = customer(env, a, worker, lambda c: "b1" not in events_of(c))
        assert {"b1", "b2"} <= set(events_of(back))
        assert {"a1"} <= set(events_of(ann))
        assert sorted([*events_of(back), *events_of(ann)]) == ["a1", "b1", "b2", "j1"]
        assert {i.key for i in back.identifiers} == {"anonymous_id:phone", "phone:+14155550101"}
        splits = consume_until(env, "identity.splits", lambda r: len(r) >= 1)
        record = Split.model_validate_json(splits[0][1] or b"")
        assert record.id_map == {a: a, b: b}
        assert [link.link_id for link in identity(env, b).links] == ["b1", "b2"]

        # Guard rails: a second account on the same email is refused and audited.
        # u1 and u2 have different keys, so different raw partitions: wait for u1 to be applied
        # before u2 exists, or u2 could be the one that joins and u1 the one refused.
        publish_events(env, [raw("u1", 4, ("user_id", "u-1"), ("email", "ann@x.com"))])
        assert customer(env, "user_id:u-1", worker).customer_id == a
        publish_events(env, [raw("u2", 5, ("user_id", "u-2"), ("email", "ann@x.com"))])
        second = customer(env, "user_id:u-2", worker)
        assert second.customer_id != a
        refused = identity(env, second.customer_id).rejected_links
        assert [(r.identifier, r.reason, r.other_customer) for r in refused] == [
            ("email:ann@x.com", "limit", a)
        ]

        # Erasure: the person is gone everywhere, and a replay does not bring them back.
        gone = httpx.delete(f"{api(env)}/v1/customers/{a}", timeout=10)
        assert gone.status_code == 202
        wait_for(
            "erasure",
            lambda: http_json(f"{api(env)}/v1/customers?identifier=email:ann@x.com", 404),
            60,
            worker,
        )
        assert http_json(f"{api(env)}/v1/customers/{a}", 404)
        assert http_json(f"{api(env)}/v1/customers/{a}/identity", 404)
        view = consume_until(env, "customer.context", lambda r: (a.encode(), None) in r)
        assert (a.encode(), None) in view
        publish_events(env, [raw("a1", 0, ("anonymous_id", "laptop"), ("email", "ann@x.com"))])
        # The replay has been applied once both its identifiers were counted as suppressed
        # (a probe event on another key would prove nothing: its partition has its own order).
        suppressed = "omnistitch_identity_suppressed_identifiers_total 2.0"
        wait_for(
            "the replay",
            lambda: suppressed in httpx.get(f"{api(env)}/metrics").text or None,
            60,
            worker,
        )
        assert http_json(f"{api(env)}/v1/customers?identifier=email:ann@x.com", 404)
        assert http_json(f"{api(env)}/v1/customers?identifier=anonymous_id:laptop", 404)
        metrics = httpx.get(f"{api(env)}/metrics", timeout=10).text
        assert 'omnistitch_identity_splits_total{reason="operator"} 1.0' in metrics
        assert "omnistitch_identity_erasures_total 1.0" in metrics
        assert http_json(f"{api(env)}/v1/customers/cus_nobody", 404)
        assert httpx.delete(f"{api(env)}/v1/customers/cus_nobody", timeout=10).status_code == 404
    finally:
        worker.stop()


def test_hub_identifier_is_quarantined_listed_and_unmerged(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    env = worker_env
    worker = Process("worker", env, tmp_path / "worker.log").start()
    shop = ("phone", "+1 800 555 0100")
    try:
        # A company number on unverified callers: the first five merge (as one person's
        # five emails would), then the email limit starts refusing it, and on the
        # fourth customer refused it is quarantined, which undoes the merges it made.
        publish_events(
            env, [raw(f"c{i}", i, ("email", f"caller{i}@x.com"), shop) for i in range(8)]
        )

        def listed() -> dict[str, object] | None:
            body = http_json(f"{api(env)}/v1/identity/quarantine")
            return body if body and body["quarantined"] else None

        body = wait_for("a quarantine", listed, 60, worker)
        hubs = body["quarantined"]
        assert isinstance(hubs, list)
        assert [h["identifier"] for h in hubs] == ["phone:+18005550100"]
        # Every caller is their own customer again, with only their own call.
        callers = [
            customer(env, f"email:caller{i}@x.com", worker, lambda c: len(c.timeline) == 1)
            for i in range(8)
        ]
        assert len({c.customer_id for c in callers}) == 8
        assert [events_of(c) for c in callers] == [[f"c{i}"] for i in range(8)]
        undone = consume_until(env, "identity.splits", lambda r: len(r) >= 1)
        record = Split.model_validate_json(undone[0][1] or b"")
        assert record.reason == "quarantine"
        assert len(record.customers) == 5
        # An event that only carries the hub cannot be attributed: dead-lettered with why.
        publish_events(env, [raw("only-hub", 9, shop)])
        dlq = consume_until(env, "raw.events.dlq", lambda r: len(r) >= 1)
        letter = json.loads(dlq[0][1] or b"{}")
        assert letter["reason"] == "only_quarantined_identifiers"
        # The original is the raw event itself (not the stage's batch record), so that
        # `omnistitch dlq replay` can send it back to raw.events once the hub is released.
        original = RawEvent.model_validate_json(base64.b64decode(letter["original_value_b64"]))
        assert original.event_id == "only-hub"
        metrics = httpx.get(f"{api(env)}/metrics", timeout=10).text
        assert "omnistitch_identity_quarantines_total 1.0" in metrics
        assert 'omnistitch_identity_splits_total{reason="quarantine"} 1.0' in metrics
    finally:
        worker.stop()


def test_bad_rules_file_fails_at_startup(worker_env: dict[str, str], tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[types.email]\nlimit = 0\nblocked_patterns = ["(unclosed"]\n')
    env = {**worker_env, "OMNISTITCH_RULES_FILE": str(rules)}
    proc = Process("worker", env, tmp_path / "worker.log").start()
    assert proc.proc is not None
    assert proc.proc.wait(60) == 2
    log = proc.log_tail()
    assert "types.email.limit" in log
    assert "types.email.blocked_patterns" in log
