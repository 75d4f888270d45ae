"""The product's scenario, end to end, through the real connectors, broker and worker.

1. A visitor browses anonymously (Segment's ``page`` and ``Product Viewed`` to the
   collector).
2. They ask in web chat, logged in (the web chat connector; an HMAC-proved user id, the
   visit's anonymous id, their phone and email).
3. The chat is abandoned (``conversation_ended``, ``visitor_left``).
4. A callback call (an outbound CTI contact) is answered by an agent, who sees through the
   API and on the agent desktop page (headless Chromium) the chat transcript and the
   products viewed, with no repeat from the customer.
5. A week later an SMS reply (Twilio) lands in the same timeline, as an open conversation.
6. STOP by SMS removes SMS from the channels proactive engagement may use: a dropped call
   afterwards raises ``repeat_contact`` and ``dropped_call_no_callback`` triggers that
   offer voice and email, never SMS.

Steps 1-4 happen "a week ago": their events carry those times, as a replay or a late
delivery would; the SMS and everything after happen now.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from confluent_kafka import Consumer
from playwright.sync_api import Browser, expect

from connectors.webchat.identity import identifier_hash
from schemas.context import CustomerContext, EngagementTrigger
from tests.conftest import REPO, free_port
from tests.connector_support import twilio_post
from tests.processes import Process, http_json, wait_for

WRITE_KEY = "scenario-write-key"
CHAT_SECRET = "scenario-chat-secret-0123456789"
TWILIO_TOKEN = "scenario-twilio-auth-token"
CTI_SECRET = "scenario-cti-secret-0123456789"
PHONE = "+14155550199"
EMAIL = "mia@example.com"
ARTIFACTS = REPO / "test-artifacts"


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class Channels:
    """The four connectors' endpoints, each request made as the real sender makes it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.collector = f"http://127.0.0.1:{env['OMNISTITCH_COLLECTOR_PORT']}"
        self.chat = f"http://127.0.0.1:{env['OMNISTITCH_CHAT_PORT']}"
        self.twilio = f"http://127.0.0.1:{env['OMNISTITCH_TWILIO_PORT']}"
        self.cti = f"http://127.0.0.1:{env['OMNISTITCH_CTI_PORT']}"

    def segment(self, call: str, body: dict[str, Any]) -> None:
        r = httpx.post(f"{self.collector}/v1/{call}", json=body, auth=(WRITE_KEY, ""), timeout=30)
        assert r.status_code == 200, r.text

    def webchat(self, body: dict[str, Any]) -> None:
        r = httpx.post(f"{self.chat}/webchat/events", json=body, timeout=30)
        assert r.status_code == 200, r.text

    def cti_event(self, event: dict[str, Any]) -> None:
        body = json.dumps(event).encode()
        ts = str(int(time.time()))
        sig = hmac.new(CTI_SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256)
        r = httpx.post(
            f"{self.cti}/cti/events",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Omnistitch-Timestamp": ts,
                "X-Omnistitch-Signature": f"sha256={sig.hexdigest()}",
            },
            timeout=30,
        )
        assert r.status_code == 200, r.text

    def twilio_post(self, path: str, params: dict[str, str]) -> None:
        r = twilio_post(self.twilio, path, params, TWILIO_TOKEN)
        assert r.status_code == 200, r.text

    def sms(self, sid: str, body: str) -> None:
        params = {"MessageSid": sid, "AccountSid": "ACs", "From": PHONE, "To": "+18005550000"}
        self.twilio_post("/twilio/sms", {**params, "Body": body, "NumMedia": "0"})


def chat_event(eid: str, kind: str, at: datetime, **extra: Any) -> dict[str, Any]:
    visitor = {
        "id": "user-mia",
        "identifier_hash": identifier_hash(CHAT_SECRET, "user-mia"),
        "anonymous_id": "anon-mia",
        "email": EMAIL,
        "phone": "(415) 555-0199",
        "name": "Mia",
    }
    return {
        "site_id": "shop",
        "id": eid,
        "type": kind,
        "conversation_id": "conv-mia",
        "occurred_at": iso(at),
        "visitor": visitor,
        **extra,
    }


def read_triggers(
    bootstrap: str, topic: str, timeout_s: float, expected: int
) -> list[EngagementTrigger]:
    """Every trigger on the topic within ``timeout_s``: reading stops once ``expected`` have
    arrived, plus a short grace to catch duplicates. (Stopping a grace after the first one
    raced the delayed trigger, due 3 s after the immediate one, on a busy machine.)"""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    found: list[EngagementTrigger] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            value = msg.value()
            assert value is not None
            found.append(EngagementTrigger.model_validate_json(value))
            if len(found) >= expected:
                deadline = min(deadline, time.monotonic() + 3)
    finally:
        consumer.close()
    return found


def test_browse_chat_callback_sms_stop(
    worker_env: dict[str, str], tmp_path: Path, browser: Browser
) -> None:
    policy = tmp_path / "context.toml"
    policy.write_text("[triggers]\ndropped_call_minutes = 0.05\ncheckout_abandoned_minutes = 0\n")
    env = {
        **worker_env,
        "OMNISTITCH_CONTEXT_FILE": str(policy),
        "OMNISTITCH_TRIGGER_INTERVAL_S": "0.2",
        "OMNISTITCH_WRITE_KEYS": WRITE_KEY,
        "OMNISTITCH_COLLECTOR_PORT": str(free_port()),
        "OMNISTITCH_CHAT_HMAC_SECRET": CHAT_SECRET,
        "OMNISTITCH_CHAT_PORT": str(free_port()),
        "OMNISTITCH_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "OMNISTITCH_TWILIO_PORT": str(free_port()),
        "OMNISTITCH_CTI_SIGNING_SECRET": CTI_SECRET,
        "OMNISTITCH_CTI_PORT": str(free_port()),
    }
    api = f"http://127.0.0.1:{env['OMNISTITCH_API_PORT']}"
    processes = [
        Process("worker", env, tmp_path / "worker.log"),
        Process("collector", env, tmp_path / "collector.log"),
        Process("connector run webchat", env, tmp_path / "webchat.log"),
        Process("connector run twilio", env, tmp_path / "twilio.log"),
        Process("connector run cti", env, tmp_path / "cti.log"),
    ]
    for process in processes:
        process.start()
    worker = processes[0]
    send = Channels(env)
    try:
        for url, process in zip(
            (send.collector, send.chat, send.twilio, send.cti), processes[1:], strict=True
        ):
            wait_for(f"{process.command} ready", partial(http_json, f"{url}/readyz"), 60, process)
        week_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(days=7)

        # 1. Anonymous browsing.
        for minute, (name, path) in enumerate([("Home", "/"), ("Trail Runner 2", "/p/tr2")]):
            send.segment(
                "page",
                {
                    "anonymousId": "anon-mia",
                    "messageId": f"page-{minute}",
                    "name": name,
                    "properties": {"path": path, "url": f"https://shop.example{path}"},
                    "timestamp": iso(week_ago + timedelta(minutes=minute)),
                },
            )
        send.segment(
            "track",
            {
                "anonymousId": "anon-mia",
                "messageId": "product-1",
                "event": "Product Viewed",
                "properties": {"product_id": "sku-tr2", "name": "Trail Runner 2", "price": 129},
                "timestamp": iso(week_ago + timedelta(minutes=2)),
            },
        )
        # 2-3. A logged-in chat on the same browser, then abandoned.
        chat_at = week_ago + timedelta(minutes=10)
        send.webchat(chat_event("c1", "conversation_started", chat_at))
        question = "Do the Trail Runner 2 come in wide fit?"
        send.webchat(
            chat_event(
                "c2",
                "message",
                chat_at + timedelta(seconds=20),
                message={"id": "m1", "author": "visitor", "text": question},
            )
        )
        send.webchat(
            chat_event(
                "c3",
                "message",
                chat_at + timedelta(seconds=40),
                message={"id": "m2", "author": "bot", "text": "An agent will be with you."},
            )
        )
        send.webchat(
            chat_event(
                "c4", "conversation_ended", chat_at + timedelta(minutes=3), reason="visitor_left"
            )
        )
        # 4. The callback: an outbound call, answered by an agent.
        call_at = week_ago + timedelta(minutes=40)
        for i, kind in enumerate(("offered", "answered")):
            send.cti_event(
                {
                    "event_id": f"cb-{kind}",
                    "type": kind,
                    "interaction_id": "callback-1",
                    "occurred_at": iso(call_at + timedelta(seconds=10 * i)),
                    "direction": "outbound",
                    "customer": {"phone": PHONE},
                    "queue": "callbacks",
                    "agent": {"id": "agent-7", "name": "Sam"},
                }
            )

        def profile(pred: Any) -> CustomerContext | None:
            body = http_json(f"{api}/v1/customers?identifier={quote('phone:' + PHONE)}")
            ctx = None if body is None else CustomerContext.model_validate(body)
            return ctx if ctx is not None and pred(ctx) else None

        def has(*event_ids: str) -> Any:
            return lambda c: set(event_ids) <= {e.event_id for e in c.timeline}

        ctx = wait_for(
            "the agent's view of the callback",
            partial(profile, has("cti:cb-answered", "webchat:shop:c4", "tracking:product-1")),
            120,
            worker,
        )
        by_kind = {i.kind: i for i in ctx.interactions}
        chat, visit, call = by_kind["conversation"], by_kind["visit"], by_kind["call"]
        # The agent sees the chat transcript and the products viewed...
        assert [(m.author, m.text) for m in chat.messages] == [
            ("customer", question),
            ("bot", "An agent will be with you."),
        ]
        assert chat.status == "abandoned"
        assert [p.name for p in visit.pages] == ["Home", "Trail Runner 2"]
        assert [(p.action, p.product_id, p.name) for p in visit.products] == [
            ("viewed", "sku-tr2", "Trail Runner 2")
        ]
        # ...on the call they are on, with the anonymous visit stitched in.
        assert (call.status, call.direction, call.agent_id, call.queue) == (
            "answered",
            "outbound",
            "agent-7",
            "callbacks",
        )
        assert "anonymous_id:anon-mia" in {i.key for i in ctx.identifiers}
        assert ctx.routing.last_agent is not None
        assert ctx.routing.last_agent.agent_id == "agent-7"
        assert ctx.routing.repeat_contact is None  # a callback is not the customer calling
        assert ctx.traits["name"].value == "Mia"
        assert ctx.traits["name"].source == "webchat"
        # The agent's desktop shows the same, found by the number they are calling.
        page = browser.new_page()
        page.goto(f"{api}/agent")
        page.get_by_test_id("lookup-input").fill("(415) 555-0199")
        page.get_by_test_id("lookup-submit").click()
        # the first answer waits on the page's lookup: playwright's 5 s default is short on
        # a 2-core machine running six processes and Chromium (the desktop test gives 30 s)
        expect(page.get_by_test_id("customer-name")).to_have_text("Mia", timeout=30_000)
        expect(page.get_by_test_id("message").filter(has_text=question)).to_have_count(1)
        expect(page.get_by_test_id("product").filter(has_text="Trail Runner 2")).to_have_count(1)
        expect(page.get_by_test_id("last-agent")).to_contain_text("Sam")
        page.screenshot(path=str(tmp_path / "callback.png"), full_page=True)

        # 5. A week later: an SMS lands in the same timeline, as an open conversation.
        send.sms("SMmia1", "Are they back in stock?")
        ctx = wait_for(
            "the SMS on the timeline", partial(profile, has("twilio:sms:SMmia1")), 60, worker
        )
        assert ctx.timeline[0].event_id == "twilio:sms:SMmia1"
        assert ctx.timeline[0].occurred_at > call_at + timedelta(days=6)
        assert [o.channel.value for o in ctx.routing.open_conversations] == ["sms"]
        assert "sms" in ctx.routing.contactable_channels
        assert {"web", "chat", "voice", "sms"} <= set(ctx.channel_counts)

        # 6. STOP removes SMS from the channels engagement may use...
        send.sms("SMmia2", "STOP")
        ctx = wait_for(
            "the opt-out", partial(profile, has("twilio:sms:SMmia2:consent")), 60, worker
        )
        assert ctx.consent["sms"].status == "opted_out"
        assert ctx.consent["sms"].event_id == "twilio:sms:SMmia2:consent"
        assert "sms" not in ctx.routing.contactable_channels
        assert {"voice", "email"} <= set(ctx.routing.contactable_channels)
        # The open page followed live: the SMS thread and the opt-out are on it.
        expect(
            page.get_by_test_id("message").filter(has_text="Are they back in stock?")
        ).to_have_count(1, timeout=30_000)
        expect(page.get_by_test_id("consent-sms")).to_have_class(
            re.compile(r"\bopted-out\b"), timeout=30_000
        )
        page.screenshot(path=str(tmp_path / "after-stop.png"), full_page=True)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "after-stop.png", ARTIFACTS / "product-scenario.png")
        # ...so the trigger a dropped call raises offers every channel but SMS.
        send.twilio_post(
            "/twilio/voice",
            {
                "CallSid": "CAmia",
                "AccountSid": "ACs",
                "From": PHONE,
                "To": "+18005550000",
                "Direction": "inbound",
                "CallStatus": "no-answer",
            },
        )
        topic = f"{worker_env['OMNISTITCH_TOPIC_PREFIX']}engagement.triggers"
        fired = read_triggers(worker_env["OMNISTITCH_BOOTSTRAP_SERVERS"], topic, 60, expected=2)
        # The call also comes minutes after the SMS: a repeat contact, which fires at once.
        assert sorted(t.rule for t in fired) == ["dropped_call_no_callback", "repeat_contact"]
        for trigger in fired:
            assert trigger.customer_id == ctx.customer_id
            assert trigger.interaction_id == "call:CAmia"
            assert "sms" not in trigger.channels
            assert set(trigger.channels) == {"voice", "email"}
        # Nothing from a week ago fired late: the abandoned chat is history, not news.
        after = wait_for(
            "the trigger recorded",
            partial(profile, lambda c: "dropped_call_no_callback:call:CAmia" in c.fired_triggers),
            30,
            worker,
        )
        assert after.pending_triggers == []
    finally:
        for process in reversed(processes):
            process.stop()
