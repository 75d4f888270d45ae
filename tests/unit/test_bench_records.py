"""The chat-history records the bench drains: the same messages, in one visit or several."""

from __future__ import annotations

import json

from omnistitch.bench import chat_history_records


def _ids(records: list[tuple[bytes, bytes]]) -> list[str]:
    return [json.loads(value)["event_id"] for _, value in records]


def _messages(records: list[tuple[bytes, bytes]]) -> list[tuple[bytes, str, str]]:
    """Key, event id and text of each record (``received_at`` is the clock's)."""
    events = [(key, json.loads(value)) for key, value in records]
    return sorted((key, e["event_id"], e["properties"]["text"]) for key, e in events)


def test_one_visit_is_one_customer_after_the_other() -> None:
    ids = _ids(chat_history_records(customers=3, messages=4, seed=1))
    assert ids == [f"chat{c}-m{i}" for c in range(3) for i in range(4)]


def test_visits_come_round_robin_with_the_same_messages() -> None:
    once = chat_history_records(customers=4, messages=7, seed=1)
    visits = chat_history_records(customers=4, messages=7, seed=1, visits=3)
    assert _messages(visits) == _messages(once)  # the same messages, keys and texts
    ids = _ids(visits)
    # 7 messages in 3 visits: 2, 2 and 3 of them; every customer's first visit first.
    first = [f"chat{c}-m{i}" for c in range(4) for i in range(2)]
    second = [f"chat{c}-m{i}" for c in range(4) for i in range(2, 4)]
    third = [f"chat{c}-m{i}" for c in range(4) for i in range(4, 7)]
    assert ids == first + second + third


def test_more_visits_than_messages_is_a_message_a_visit() -> None:
    ids = _ids(chat_history_records(customers=2, messages=2, seed=1, visits=5))
    assert ids == ["chat0-m0", "chat1-m0", "chat0-m1", "chat1-m1"]
