"""The query API's pure parts: lookup candidates, timeline cursors, freshness, SSE framing,
and the context feed's fan-out (with a fake consumer: no broker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import query
from pipeline.context_feed import (
    Closed,
    ContextFeed,
    FeedItem,
    Merged,
    Resync,
    Subscription,
    Tombstone,
    Update,
)
from pipeline.lookup import InvalidQuery, candidates

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


# -- lookup -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("typed", "first"),
    [
        ("(415) 555-0177", "phone:+14155550177"),
        ("+1 415 555 0177", "phone:+14155550177"),
        ("415.555.0177", "phone:+14155550177"),
        ("tel:+1-415-555-0177", "phone:+14155550177"),
        ("whatsapp:+1 415 555 0177", "whatsapp:+14155550177"),
        ("mailto:Rio@Example.com", "email:rio@example.com"),
        ("EMAIL:rio@example.com", "email:rio@example.com"),
        ("email:RIO@Example.com", "email:rio@example.com"),
        ("messenger_psid:123", "messenger_psid:123"),
        ("user_id:u1", "user_id:u1"),
        ("@Dana.Reyes", "instagram:dana.reyes"),
        ("u-42", "user_id:u-42"),
    ],
)
def test_lookup_candidates_start_with_the_strongest_reading(typed: str, first: str) -> None:
    assert candidates(typed).keys[0] == first


def test_lookup_candidates_cover_every_plausible_type() -> None:
    assert candidates("(415) 555-0177").keys == ("phone:+14155550177", "whatsapp:+14155550177")
    assert candidates("whatsapp:+14155550177").keys == (
        "whatsapp:+14155550177",
        "phone:+14155550177",
    )
    email = candidates("Rio@Example.com").keys
    assert "email:rio@example.com" in email
    assert "user_id:Rio@Example.com" in email
    assert not any(k.startswith("phone:") for k in email)
    # Bare digits may be a Messenger PSID or a user id, and are not a possible phone number.
    digits = candidates("1234567890123456").keys
    assert "messenger_psid:1234567890123456" in digits
    assert not any(k.startswith("phone:") for k in digits)
    assert "user_id:user-1" in candidates("user-1").keys


@pytest.mark.parametrize(
    "bad", ["", "   ", "phone:not a number", "email:nope", "null", "x" * 400, "tel:"]
)
def test_lookup_refuses_what_cannot_be_an_identifier(bad: str) -> None:
    with pytest.raises(InvalidQuery):
        candidates(bad)


# -- timeline paging ----------------------------------------------------------------------
def entry(i: int, at: datetime) -> dict[str, Any]:
    return {"event_id": f"e{i:03d}", "occurred_at": at.isoformat().replace("+00:00", "Z")}


@given(
    offsets=st.lists(st.integers(min_value=0, max_value=50), min_size=0, max_size=60),
    limit=st.integers(min_value=1, max_value=7),
)
def test_a_cursor_walk_returns_every_entry_once_newest_first(
    offsets: list[int], limit: int
) -> None:
    # Many entries share a timestamp: the event id breaks ties.
    entries = [entry(i, T0 + timedelta(seconds=s)) for i, s in enumerate(offsets)]
    seen: list[Mapping[str, Any]] = []
    before = None
    for _ in range(len(entries) + 2):
        page, nxt = query.timeline_page(entries, limit, before)
        assert len(page) <= limit
        seen.extend(page)
        if nxt is None:
            break
        before = query.decode_cursor(nxt)
    assert nxt is None
    assert sorted(e["event_id"] for e in seen) == sorted(e["event_id"] for e in entries)
    keys = [query.entry_order(e) for e in seen]
    assert keys == sorted(keys, reverse=True)


def test_pages_below_a_cursor_do_not_move_when_newer_entries_arrive() -> None:
    entries = [entry(i, T0 + timedelta(minutes=i)) for i in range(10)]
    first, nxt = query.timeline_page(entries, 4, None)
    assert [e["event_id"] for e in first] == ["e009", "e008", "e007", "e006"]
    assert nxt is not None
    entries.append(entry(99, T0 + timedelta(hours=5)))  # a new event meanwhile
    second, _ = query.timeline_page(entries, 4, query.decode_cursor(nxt))
    assert [e["event_id"] for e in second] == ["e005", "e004", "e003", "e002"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "-3"}, "limit"),
        ({"before": "not-a-cursor"}, "before"),
        ({"before": ""}, "before"),
        ({"before": "W10"}, "before"),  # base64 of "[]"
        ({"before": "WyIyMDI2LTAzLTAxVDEyOjAwOjAwIiwiZTEiXQ"}, "before"),  # naive time
    ],
)
def test_bad_page_parameters_name_the_field(params: dict[str, str], field: str) -> None:
    with pytest.raises(query.InvalidParam) as exc:
        query.page_params(params)
    assert exc.value.field == field
    body = query.error_body(exc.value.field, exc.value.message)
    assert body["error"] == "invalid_request"
    assert body["errors"][0]["field"] == field


def test_page_parameters_default_and_bounds() -> None:
    assert query.page_params({}) == (50, None)
    assert query.page_params({"limit": "1"})[0] == 1
    assert query.page_params({"limit": "500"})[0] == 500
    cursor = query.encode_cursor(entry(1, T0))
    assert query.page_params({"before": cursor})[1] == (T0, "e001")


# -- freshness and SSE --------------------------------------------------------------------
def test_freshness_object_and_header() -> None:
    ctx = {"version": 7, "updated_at": "2026-03-01T12:00:00Z"}
    stage = query.stage_position("ops", 3, processed=41, end=44)
    assert stage["lag"] == 2
    assert query.stage_position("ops", 3, processed=None, end=0)["lag"] == 0
    identity = {"partition": 0, "offset": 9, "event_time": None}
    fresh = query.freshness(ctx, stage, identity, T0 + timedelta(seconds=2.5))
    assert fresh["context_version"] == 7
    assert fresh["context_age_s"] == 2.5
    assert fresh["served_at"] == "2026-03-01T12:00:02.500000Z"
    header = query.freshness_header(fresh)
    assert "version=7" in header
    assert "context_offset=3:41" in header
    assert "context_lag=2" in header
    assert "identity_offset=0:9" in header
    assert "\n" not in header
    none = query.freshness(None, None, None, T0)
    assert query.freshness_header(none) == "served_at=2026-03-01T12:00:00Z"


def test_sse_messages_are_single_data_lines() -> None:
    msg = query.sse_event("context", {"text": "line one\nline two"}, "cus_1:3")
    assert msg.endswith(b"\n\n")
    lines = msg.decode().strip().split("\n")
    assert lines[:2] == ["event: context", "id: cus_1:3"]
    assert json.loads(lines[2].removeprefix("data: ")) == {"text": "line one\nline two"}
    raw = query.sse_raw_event("context", b'{\n"a": 1}')
    assert raw == b'event: context\ndata: {"a":1}\n\n'


# -- the context feed's fan-out -----------------------------------------------------------
class FakeRecord:
    def __init__(self, key: str, value: bytes | None) -> None:
        self.key = key.encode()
        self.value = value


def ctx_bytes(cid: str, version: int, merged_from: list[str] | None = None) -> bytes:
    body = {
        "customer_id": cid,
        "timeline": [{"properties": {"merged_from": ["decoy"]}}],
        "merged_from": merged_from or [],
        "version": version,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def drain(sub: Subscription) -> list[FeedItem]:
    items = []
    while not sub.queue.empty():
        items.append(sub.queue.get_nowait())
    return items


def test_feed_fans_out_by_key_and_retargets_on_merge() -> None:
    async def scenario() -> None:
        feed = ContextFeed("customer.context", consumer_factory=lambda: None, queue_size=4)
        feed._task = asyncio.get_running_loop().create_future()  # type: ignore[assignment]
        a = await feed.subscribe("cus_a")
        b = await feed.subscribe("cus_b")
        decoy = await feed.subscribe("decoy")
        feed._dispatch(FakeRecord("cus_a", ctx_bytes("cus_a", 1)))
        feed._dispatch(FakeRecord("cus_other", ctx_bytes("cus_other", 1)))
        assert drain(a) == [Update("cus_a", ctx_bytes("cus_a", 1))]
        assert drain(b) == []
        # cus_b is merged into cus_a: its tombstone, then the survivor's absorb record.
        feed._dispatch(FakeRecord("cus_b", None))
        survivor = ctx_bytes("cus_a", 2, merged_from=["cus_b"])
        feed._dispatch(FakeRecord("cus_a", survivor))
        assert drain(b) == [Tombstone("cus_b"), Merged("cus_b", "cus_a", survivor)]
        assert drain(a) == [Update("cus_a", survivor)]
        assert b.customer_id == "cus_a"
        # From now on b gets the survivor's records; a property named merged_from is no merge.
        feed._dispatch(FakeRecord("cus_a", ctx_bytes("cus_a", 3)))
        assert drain(b) == [Update("cus_a", ctx_bytes("cus_a", 3))]
        assert drain(decoy) == []
        # A slow reader loses its backlog for one Resync; a closing feed says so.
        for v in range(10):
            feed._dispatch(FakeRecord("cus_a", ctx_bytes("cus_a", 10 + v)))
        assert Resync() in drain(a)
        assert Resync() in drain(b)
        feed.unsubscribe(decoy)
        feed._task = None
        await feed.close("bye")
        assert drain(a) == [Closed("bye")]
        assert drain(b) == [Closed("bye")]
        assert feed.subscribers == 0

    asyncio.run(scenario())
