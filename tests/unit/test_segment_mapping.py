"""Segment message validation and mapping to RawEvent (no HTTP, no Kafka)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from connectors.tracking.segment import (
    InvalidMessage,
    parse_body,
    partition_key,
    to_raw_event,
)
from schemas.events import Channel, Identifier, RawEvent

RECEIVED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def map_one(kind: str, body: dict[str, Any]) -> RawEvent:
    [(message, raw)] = parse_body(kind, body)
    return to_raw_event(message, RECEIVED, raw)


def errors_of(kind: str, body: object) -> dict[str, str]:
    with pytest.raises(InvalidMessage) as info:
        parse_body(kind, body)
    return {e.field: e.message for e in info.value.errors}


def ids(event: RawEvent) -> list[tuple[str, str]]:
    return [(i.type, i.value) for i in event.identifiers]


def test_identify_maps_traits_and_identifiers() -> None:
    event = map_one(
        "identify",
        {
            "userId": " u-1 ",
            "anonymousId": "anon-1",
            "messageId": "m-1",
            "traits": {"email": " Alice@Example.com ", "plan": "pro"},
            "context": {"traits": {"phone": "+44 20 7946 0958", "plan": "free"}},
            "timestamp": "2024-05-01T10:00:00+02:00",
        },
    )
    assert event.event_id == "tracking:m-1"
    assert (event.source, event.kind, event.name) == ("tracking", "identify", None)
    assert event.channel is Channel.WEB
    assert ids(event) == [
        ("user_id", "u-1"),
        ("anonymous_id", "anon-1"),
        ("email", "Alice@Example.com"),
        ("phone", "+44 20 7946 0958"),
    ]
    assert event.traits["plan"] == "pro"  # the call's traits win over context.traits
    assert event.occurred_at == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.received_at == RECEIVED
    assert event.payload["traits"]["email"] == " Alice@Example.com "  # verbatim


def test_track_maps_event_name_and_properties() -> None:
    body = {"anonymousId": "a1", "event": " Order Completed ", "properties": {"total": 12.5}}
    event = map_one("track", body)
    assert (event.kind, event.name) == ("track", "Order Completed")
    assert event.properties == {"total": 12.5}
    assert ids(event) == [("anonymous_id", "a1")]
    assert event.payload == {**body, "type": "track"}


def test_track_takes_email_from_context_traits() -> None:
    event = map_one(
        "track",
        {"userId": "u1", "event": "x", "context": {"traits": {"email": "bob@example.com"}}},
    )
    assert ("email", "bob@example.com") in ids(event)
    assert event.traits == {"email": "bob@example.com"}


def test_page_fills_url_fields_from_context_page() -> None:
    event = map_one(
        "page",
        {
            "userId": "u1",
            "name": "Pricing",
            "properties": {"title": "Own title"},
            "context": {
                "page": {
                    "url": "https://shop.example/pricing?a=1",
                    "path": "/pricing",
                    "title": "Context title",
                    "referrer": "https://google.com/",
                    "search": "?a=1",
                }
            },
        },
    )
    assert (event.kind, event.name, event.channel) == ("page", "Pricing", Channel.WEB)
    assert event.properties == {
        "title": "Own title",
        "url": "https://shop.example/pricing?a=1",
        "path": "/pricing",
        "referrer": "https://google.com/",
    }


def test_screen_is_app_channel() -> None:
    event = map_one("screen", {"userId": "u1", "name": "Home", "properties": {"tab": 2}})
    assert (event.kind, event.name, event.channel) == ("screen", "Home", Channel.APP)
    assert event.properties == {"tab": 2}


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({"device": {"type": "ios"}}, Channel.APP),
        ({"device": {"type": "android"}}, Channel.APP),
        ({"os": {"name": "iOS", "version": "17.2"}}, Channel.APP),
        ({"os": {"name": "Mac OS X"}}, Channel.WEB),
        ({"userAgent": "Mozilla/5.0"}, Channel.WEB),
        ({}, Channel.WEB),
    ],
)
def test_channel_from_device_and_os(context: dict[str, Any], expected: Channel) -> None:
    event = map_one("track", {"userId": "u1", "event": "x", "context": context})
    assert event.channel is expected


def test_alias_links_user_id_and_previous_id() -> None:
    event = map_one("alias", {"userId": "u-9", "previousId": "anon-9"})
    assert event.kind == "alias"
    assert ids(event) == [("user_id", "u-9"), ("anonymous_id", "anon-9")]
    assert partition_key(event) == "user_id:u-9"


def test_group_keeps_group_traits_apart_from_user_traits() -> None:
    event = map_one(
        "group",
        {"userId": "u1", "groupId": "acme", "traits": {"email": "billing@acme.example"}},
    )
    assert event.kind == "group"
    assert event.properties == {
        "group_id": "acme",
        "group_traits": {"email": "billing@acme.example"},
    }
    assert event.traits == {}
    assert ids(event) == [("user_id", "u1")]


def test_numeric_ids_become_strings_and_blank_ids_are_absent() -> None:
    event = map_one("track", {"userId": 42, "anonymousId": "  ", "event": "x"})
    assert ids(event) == [("user_id", "42")]


def test_event_id_without_message_id_is_deterministic() -> None:
    body = {"userId": "u1", "event": "Clicked", "properties": {"b": 1, "a": 2}}
    reordered = {"properties": {"a": 2, "b": 1}, "event": "Clicked", "userId": "u1"}
    first = map_one("track", body).event_id
    assert first.startswith("tracking:sha256:")
    assert map_one("track", dict(body)).event_id == first
    assert map_one("track", reordered).event_id == first
    assert map_one("track", {**body, "sentAt": "2024-05-01T00:00:00Z"}).event_id == first
    assert map_one("track", {**body, "event": "Other"}).event_id != first


def test_occurred_at_falls_back_to_original_timestamp_then_received_at() -> None:
    base = {"userId": "u1", "event": "x"}
    both = map_one(
        "track",
        {**base, "timestamp": "2024-04-01T00:00:00Z", "originalTimestamp": "2024-03-01T00:00:00Z"},
    )
    assert both.occurred_at == datetime(2024, 4, 1, tzinfo=UTC)
    original = map_one("track", {**base, "originalTimestamp": "2024-03-01T01:00:00-01:00"})
    assert original.occurred_at == datetime(2024, 3, 1, 2, tzinfo=UTC)
    naive = map_one("track", {**base, "timestamp": "2024-02-01T00:00:00"})
    assert naive.occurred_at == datetime(2024, 2, 1, tzinfo=UTC)
    neither = map_one("track", base)
    assert neither.occurred_at == RECEIVED


def test_received_at_is_normalised_to_utc() -> None:
    [(message, raw)] = parse_body("track", {"userId": "u1", "event": "x"})
    cet = timezone(timedelta(hours=1))
    event = to_raw_event(message, datetime(2024, 1, 1, 13, tzinfo=cet), raw)
    assert event.received_at == datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert event.received_at.tzinfo == UTC


def test_partition_key_prefers_user_id_then_email_then_phone_then_anonymous_id() -> None:
    event = map_one(
        "identify",
        {"anonymousId": "a", "traits": {"phone": "+1 555", "email": "e@x.io"}},
    )
    assert partition_key(event) == "email:e@x.io"
    assert partition_key(event.model_copy(update={"identifiers": []})) == event.event_id
    only = [Identifier(type="anonymous_id", value="a"), Identifier(type="phone", value="+1")]
    assert partition_key(event.model_copy(update={"identifiers": only})) == "phone:+1"
    with_user = [*only, Identifier(type="user_id", value="u")]
    assert partition_key(event.model_copy(update={"identifiers": with_user})) == "user_id:u"


def test_batch_applies_envelope_context_and_drops_write_key() -> None:
    parsed = parse_body(
        "batch",
        {
            "writeKey": "secret",
            "context": {"device": {"type": "android"}, "locale": "en-GB"},
            "batch": [
                {"type": "track", "userId": "u1", "event": "a", "writeKey": "secret"},
                {"type": "page", "userId": "u1", "context": {"locale": "fr-FR"}},
            ],
        },
    )
    events = [to_raw_event(m, RECEIVED, raw) for m, raw in parsed]
    assert [e.kind for e in events] == ["track", "page"]
    assert all(e.channel is Channel.APP for e in events)
    assert events[1].payload["context"]["locale"] == "fr-FR"
    assert all("writeKey" not in e.payload for e in events)


def test_extra_fields_are_allowed_and_kept() -> None:
    body = {
        "userId": "u1",
        "event": "x",
        "integrations": {"All": True},
        "_metadata": {"bundled": ["Segment.io"]},
        "library": {"name": "custom"},
    }
    event = map_one("track", body)
    assert event.payload["_metadata"] == {"bundled": ["Segment.io"]}


def test_null_optional_fields_as_analytics_python_sends_them() -> None:
    event = map_one(
        "page",
        {"userId": None, "anonymousId": "a", "name": None, "properties": None, "context": {}},
    )
    assert event.name is None
    assert event.properties == {}


def test_validation_requires_an_identity() -> None:
    assert errors_of("track", {"event": "x"}) == {"userId": "userId or anonymousId is required"}
    assert "userId" in errors_of("identify", {"userId": "   "})


def test_validation_requires_track_event_and_alias_ids() -> None:
    assert set(errors_of("track", {"userId": "u"})) == {"event"}
    assert set(errors_of("track", {"userId": "u", "event": " "})) == {"event"}
    assert set(errors_of("alias", {"userId": "u"})) == {"previousId"}
    assert set(errors_of("alias", {"previousId": "p"})) == {"userId"}
    assert set(errors_of("group", {"userId": "u"})) == {"groupId"}


def test_validation_paths_in_a_batch() -> None:
    errors = errors_of(
        "batch",
        {
            "batch": [
                {"type": "track", "userId": "u", "event": "ok"},
                {"type": "track", "event": "x"},
                {"userId": "u"},
                {"type": "bogus", "userId": "u"},
                "not an object",
                {"type": "track", "userId": "u", "event": "x", "timestamp": "yesterday"},
            ]
        },
    )
    assert set(errors) == {
        "batch.1.userId",
        "batch.2.type",
        "batch.3.type",
        "batch.4",
        "batch.5.timestamp",
    }
    assert errors["batch.1.userId"] == "userId or anonymousId is required"


def test_validation_of_the_envelope() -> None:
    assert set(errors_of("batch", {})) == {"batch"}
    assert set(errors_of("batch", {"batch": {"type": "track"}})) == {"batch"}
    assert set(errors_of("track", ["not", "an", "object"])) == {"body"}
    assert errors_of("track", {"type": "page", "userId": "u"}) == {
        "type": "expected 'track' on this endpoint"
    }


def test_overlong_values_are_rejected_not_crashed() -> None:
    assert set(errors_of("track", {"userId": "u" * 513, "event": "x"})) == {"userId"}
    assert set(errors_of("track", {"userId": "u", "event": "x" * 513})) == {"event"}
    assert set(errors_of("track", {"userId": "u", "event": "x", "messageId": "m" * 201})) == {
        "messageId"
    }
