"""The routing rules of the example consumer (omnistitch.routing_hints), one by one."""

from __future__ import annotations

import dataclasses

import pytest

from omnistitch.routing_hints import RoutingPolicy, hint_for
from schemas.context import (
    AgentRef,
    OpenConversation,
    RepeatContact,
    Routing,
    RoutingHint,
    SelfServiceAttempt,
)
from schemas.events import Channel
from tests.context_samples import at, context, interaction, repeat_caller, vip_spanish_speaker

POLICY = RoutingPolicy(default_queue="general", language_queues={"es": "support-es"})

REPEAT = RepeatContact(
    interaction_id="call:2",
    previous_interaction_id="call:1",
    previous_channel=Channel.VOICE,
    hours_since_previous=3.5,
    at=at(200),
)
SELF_SERVICE = SelfServiceAttempt(
    interaction_id="web:faq", channel=Channel.WEB, what="article:refunds", at=at(10)
)


def open_conversation(iid: str, channel: Channel) -> OpenConversation:
    return OpenConversation(interaction_id=iid, channel=channel, since=at(1), last_at=at(2))


def test_a_customer_with_nothing_special_gets_normal_priority_and_the_default_queue() -> None:
    assert hint_for(context("cus_1", version=4), POLICY) == RoutingHint(
        customer_id="cus_1",
        priority="normal",
        reasons=[],
        preferred_agent_id=None,
        language=None,
        suggested_queue="general",
        open_conversation_channels=[],
        context_version=4,
    )


def test_the_preferred_agent_is_the_last_agent() -> None:
    last = AgentRef(agent_id="agent-7", channel=Channel.CHAT, interaction_id="chat:1", at=at(3))
    hint = hint_for(context(routing=Routing(last_agent=last)), POLICY)
    assert hint.preferred_agent_id == "agent-7"
    assert hint.priority == "normal"  # an earlier agent alone is no reason to hurry


@pytest.mark.parametrize(
    ("routing", "reasons"),
    [
        (Routing(repeat_contact=REPEAT), ["repeat_contact"]),
        (Routing(vip=True), ["vip"]),
        (Routing(unresolved_self_service=SELF_SERVICE), ["unresolved_self_service"]),
        (
            Routing(vip=True, unresolved_self_service=SELF_SERVICE, repeat_contact=REPEAT),
            ["repeat_contact", "vip", "unresolved_self_service"],
        ),
    ],
    ids=["repeat", "vip", "self-service", "all-three-in-order"],
)
def test_each_reason_raises_the_priority(routing: Routing, reasons: list[str]) -> None:
    hint = hint_for(context(routing=routing), POLICY)
    assert (hint.priority, hint.reasons) == ("high", reasons)


def test_language_is_passed_on_and_picks_its_configured_queue_over_interactions() -> None:
    ctx = context(
        routing=Routing(language="es"), interactions=[interaction("call:1", 0, "billing")]
    )
    hint = hint_for(ctx, POLICY)
    assert (hint.language, hint.suggested_queue) == ("es", "support-es")


def test_a_regional_language_tag_matches_its_language() -> None:
    hint = hint_for(context(routing=Routing(language="ES-mx")), POLICY)
    assert (hint.language, hint.suggested_queue) == ("ES-mx", "support-es")


def test_an_unconfigured_language_falls_back_to_the_latest_interaction_queue() -> None:
    ctx = context(
        routing=Routing(language="fr"),
        interactions=[  # newest first; the newest had no queue
            interaction("chat:3", 50, None, kind="conversation", channel=Channel.CHAT),
            interaction("call:2", 20, "returns"),
            interaction("call:1", 0, "billing"),
        ],
    )
    hint = hint_for(ctx, POLICY)
    assert (hint.language, hint.suggested_queue) == ("fr", "returns")


def test_without_language_or_queued_interaction_the_default_queue_applies() -> None:
    ctx = context(interactions=[interaction("call:1", 0, None)])
    assert hint_for(ctx, POLICY).suggested_queue == "general"
    assert hint_for(ctx, RoutingPolicy()).suggested_queue is None


def test_open_conversation_channels_each_once_in_order() -> None:
    routing = Routing(
        open_conversations=[
            open_conversation("sms:1", Channel.SMS),
            open_conversation("chat:1", Channel.CHAT),
            open_conversation("sms:2", Channel.SMS),
        ]
    )
    assert hint_for(context(routing=routing), POLICY).open_conversation_channels == [
        "sms",
        "chat",
    ]


def test_the_sample_customers() -> None:
    assert hint_for(repeat_caller(), POLICY).model_dump() == {
        "schema_version": 1,
        "customer_id": "cus_repeat",
        "priority": "high",
        "reasons": ["repeat_contact"],
        "preferred_agent_id": "agent-dana",
        "language": None,
        "suggested_queue": "billing",
        "open_conversation_channels": ["chat"],
        "context_version": 7,
    }
    hint = hint_for(vip_spanish_speaker(), POLICY)
    assert (hint.priority, hint.reasons, hint.suggested_queue) == (
        "high",
        ["vip", "unresolved_self_service"],
        "support-es",
    )


def test_policy_normalises_language_codes_and_is_immutable() -> None:
    policy = RoutingPolicy(default_queue="general", language_queues={" ES ": " support-es "})
    assert dict(policy.language_queues) == {"es": "support-es"}
    assert policy.queue_for_language("es") == "support-es"
    assert policy.queue_for_language(None) is None
    with pytest.raises(TypeError):
        policy.language_queues["fr"] = "support-fr"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.default_queue = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"language_queues": {"spanish": "support-es"}}, "not an ISO 639 language code"),
        ({"language_queues": {"es": "a", "ES": "b"}}, "mapped twice"),
        ({"language_queues": {"es": " "}}, "empty queue"),
        ({"default_queue": ""}, "default queue is empty"),
    ],
)
def test_policy_rejects_bad_configuration(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RoutingPolicy(**kwargs)  # type: ignore[arg-type]
