"""Callbacks, click-to-call and self-service, as documented in connectors/README.md:
web and app requests through the tracking collector, IVR self-service through CTI."""

from __future__ import annotations

from datetime import UTC, datetime

from connectors.cti.events import to_raw_events
from connectors.publisher import InMemoryPublisher
from connectors.tracking.app import create_app
from omnistitch.settings import CollectorSettings
from schemas.events import Channel
from tests.connector_support import TOPIC, AsgiClient, published

KEY = "wk-self-service"


def test_callback_click_to_call_and_article_views_through_the_collector() -> None:
    publisher = InMemoryPublisher()
    settings = CollectorSettings(write_keys=[KEY], topic_prefix="test.")
    client = AsgiClient(create_app(settings, publisher))
    batch = [
        {
            "type": "track",
            "anonymousId": "anon-cb",
            "messageId": "cb-1",
            "event": "Callback Requested",
            "properties": {"phone": "+14155550100", "reason": "billing", "queue": "billing"},
            "context": {"traits": {"phone": "+14155550100"}},
        },
        {
            "type": "track",
            "anonymousId": "anon-cb",
            "messageId": "ctc-1",
            "event": "Click To Call Requested",
            "properties": {"queue": "sales", "page": "/pricing"},
        },
        {
            "type": "page",
            "anonymousId": "anon-cb",
            "messageId": "kb-1",
            "name": "How do I return an item?",
            "properties": {"category": "help", "article_id": "kb-112", "helpful": True},
        },
    ]
    response = client.post("/v1/batch", json={"batch": batch}, auth=(KEY, ""))
    assert response.status_code == 200
    events = {e.event_id: (key, e) for key, e in published(publisher, TOPIC)}
    key, callback = events["tracking:cb-1"]
    assert (callback.kind, callback.name) == ("track", "Callback Requested")
    assert {i.key for i in callback.identifiers} == {
        "anonymous_id:anon-cb",
        "phone:+14155550100",
    }
    assert key == "phone:+14155550100"
    assert events["tracking:ctc-1"][1].name == "Click To Call Requested"
    article = events["tracking:kb-1"][1]
    assert (article.kind, article.properties["article_id"]) == ("page", "kb-112")


def test_ivr_self_service_completion_through_cti() -> None:
    body = {
        "event_id": "ivr-77",
        "type": "ended",
        "interaction_id": "call-77",
        "occurred_at": "2026-11-20T09:31:00Z",
        "customer": {"phone": "+14155550100"},
        "ivr_path": ["main", "order_status", "tracking_read_out"],
        "disposition": "self_service:order_status",
    }
    [event] = to_raw_events(body, datetime(2026, 11, 20, 9, 31, 2, tzinfo=UTC))
    assert (event.channel, event.kind, event.name) == (Channel.VOICE, "contact_center", "ended")
    assert event.properties["disposition"] == "self_service:order_status"
    assert "agent_id" not in event.properties
