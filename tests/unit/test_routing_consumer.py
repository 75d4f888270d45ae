"""The routing consumer's per-record decisions and settings, without a broker."""

from __future__ import annotations

import json

import pytest

from omnistitch import dlq
from omnistitch.routing_consumer import HintMaker, Publish, Reject, Unchanged
from omnistitch.routing_hints import RoutingPolicy
from omnistitch.settings import RoutingConsumerSettings, SettingsError, load
from schemas.context import Routing, RoutingHint
from tests.context_samples import context, repeat_caller

KEY = b"cus_repeat"


def maker() -> HintMaker:
    return HintMaker(RoutingPolicy(default_queue="general"), cache_size=100)


def published(action: object) -> RoutingHint:
    assert isinstance(action, Publish), action
    assert action.value is not None
    return RoutingHint.model_validate_json(action.value)


def test_a_context_becomes_its_hint_keyed_by_the_customer() -> None:
    action = maker().decide(KEY, repeat_caller().model_dump_json().encode())
    assert isinstance(action, Publish)
    assert action.key == KEY
    assert published(action).preferred_agent_id == "agent-dana"


def test_an_unchanged_hint_is_not_republished_whatever_the_context_version() -> None:
    m = maker()
    first = repeat_caller()
    assert published(m.decide(KEY, first.model_dump_json().encode())).context_version == 7
    newer = first.model_copy(update={"version": 8, "channel_counts": {"voice": 3}})
    assert m.decide(KEY, newer.model_dump_json().encode()) == Unchanged()
    # A change that matters is published, with the version it came from.
    vip = newer.model_copy(update={"version": 9, "routing": Routing(vip=True)})
    hint = published(m.decide(KEY, vip.model_dump_json().encode()))
    assert (hint.reasons, hint.context_version) == (["vip"], 9)


def test_a_tombstone_becomes_a_tombstone_once() -> None:
    m = maker()
    m.decide(KEY, repeat_caller().model_dump_json().encode())
    assert m.decide(KEY, None) == Publish(KEY, None)
    assert m.decide(KEY, None) == Unchanged()
    # The customer id reused after an undone merge gets its hint again.
    assert isinstance(m.decide(KEY, repeat_caller().model_dump_json().encode()), Publish)


def test_forget_republishes_after_a_revocation() -> None:
    m = maker()
    body = repeat_caller().model_dump_json().encode()
    m.decide(KEY, body)
    m.forget()
    assert isinstance(m.decide(KEY, body), Publish)


def test_the_lru_is_bounded() -> None:
    m = HintMaker(RoutingPolicy(), cache_size=2)
    bodies = {f"c{i}".encode(): context(f"c{i}").model_dump_json().encode() for i in range(3)}
    for key, body in bodies.items():
        assert isinstance(m.decide(key, body), Publish)
    assert m.decide(b"c2", bodies[b"c2"]) == Unchanged()
    assert isinstance(m.decide(b"c0", bodies[b"c0"]), Publish)  # evicted: published again


@pytest.mark.parametrize(
    ("key", "value", "reason", "summary"),
    [
        (None, b"{}", "no_key", "the record has no key"),
        (b"\xff\xfe", b"{}", "invalid_key", "the key is not UTF-8"),
        (KEY, b"not json at all", "invalid_json", "Invalid JSON"),
        (KEY, b'{"customer_id": "cus_repeat", "vip": 1}', "invalid_context", "at vip"),
        (KEY, context("cus_other").model_dump_json().encode(), "key_mismatch", "cus_other"),
    ],
)
def test_bad_records_are_rejected_with_their_reason(
    key: bytes | None, value: bytes, reason: str, summary: str
) -> None:
    action = maker().decide(key, value)
    assert isinstance(action, Reject)
    assert action.reason == reason
    assert summary in action.summary


def test_the_log_summary_never_quotes_the_value() -> None:
    action = maker().decide(KEY, b'{"customer_id": "cus_repeat", "version": "ann@example.com"}')
    assert isinstance(action, Reject)
    assert action.reason == "invalid_context"
    assert action.summary.startswith("1 schema error(s), first at version: ")
    assert "ann@example.com" not in action.summary
    assert "ann@example.com" in action.detail  # the dead letter keeps the evidence


def test_dead_letters_use_the_pipeline_format() -> None:
    raw = dlq.encode(
        stage="routing",
        reason="invalid_json",
        detail="x" * 5000,
        key=KEY,
        value=b"garbage",
        topic="customer.context",
        partition=3,
        offset=41,
    )
    record = json.loads(raw)
    assert (record["stage"], record["topic"], record["partition"], record["offset"]) == (
        "routing",
        "customer.context",
        3,
        41,
    )
    assert len(record["detail"]) == 4000
    assert dlq.decode(raw) == dlq.DeadLetter("invalid_json", "routing", KEY, b"garbage")


def test_settings_parse_language_queues_and_fail_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMNISTITCH_ROUTING_LANGUAGE_QUEUES", "es=support-es, FR = support-fr")
    settings = load(RoutingConsumerSettings)
    assert settings.routing_language_queues == {"es": "support-es", "fr": "support-fr"}
    assert settings.routing_policy().queue_for_language("fr") == "support-fr"
    assert settings.routing_group_id == "omnistitch-routing"
    monkeypatch.setenv("OMNISTITCH_ROUTING_LANGUAGE_QUEUES", "es")
    with pytest.raises(SettingsError, match="OMNISTITCH_ROUTING_LANGUAGE_QUEUES"):
        load(RoutingConsumerSettings)
    monkeypatch.setenv("OMNISTITCH_ROUTING_LANGUAGE_QUEUES", "spanish=support-es")
    with pytest.raises(SettingsError, match="not an ISO 639 language code"):
        load(RoutingConsumerSettings)
