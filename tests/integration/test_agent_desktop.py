"""The agent desktop page in a real browser (Debian's Chromium driven by playwright).

Real processes end to end: the tracking collector and the web chat connector receive an
anonymous visit and a chat in which the visitor gives their phone number; the worker
stitches them. The agent opens ``/agent``, types the phone number in another spelling and
sees the unified customer: the chat transcript, the pages viewed, identifiers, traits.
A new chat message then appears on the open page without a reload (Server-Sent Events).

The page must also render customer text as text: a message carrying markup must not
become markup. A screenshot is kept in ``test-artifacts/agent-desktop.png``.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, Route, expect

from connectors.webchat.identity import identifier_hash
from schemas.context import CustomerContext
from tests.conftest import REPO, free_port
from tests.processes import Process, http_json, wait_for

WRITE_KEY = "desk-write-key"
CHAT_SECRET = "desk-chat-secret-0123456789"
ARTIFACTS = REPO / "test-artifacts"
XSS = '<img src=x onerror="window.__pwned = 1">'


def chat_event(n: int, text: str, author: str = "visitor", **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"id": f"m-{n}", "author": author, "text": text}
    if author == "agent":
        message["agent_id"] = "agent-7"
    return {
        "id": f"desk-{n}",
        "type": "message",
        "conversation_id": "conv-desk",
        "visitor": {
            "id": "user-desk",
            "identifier_hash": identifier_hash(CHAT_SECRET, "user-desk"),
            "anonymous_id": "anon-desk",
            "email": "Robin@Example.com",
            "phone": "(415) 555-0133",
            "name": "Robin Park",
        },
        "message": message,
        **extra,
    }


def test_agent_finds_the_customer_and_sees_the_chat_live(
    worker_env: dict[str, str], tmp_path: Path, browser: Browser
) -> None:
    env = {
        **worker_env,
        "OMNISTITCH_WRITE_KEYS": WRITE_KEY,
        "OMNISTITCH_COLLECTOR_PORT": str(free_port()),
        "OMNISTITCH_CHAT_HMAC_SECRET": CHAT_SECRET,
        "OMNISTITCH_CHAT_PORT": str(free_port()),
    }
    collector_url = f"http://127.0.0.1:{env['OMNISTITCH_COLLECTOR_PORT']}"
    chat_url = f"http://127.0.0.1:{env['OMNISTITCH_CHAT_PORT']}"
    api = f"http://127.0.0.1:{env['OMNISTITCH_API_PORT']}"
    processes = [
        Process("worker", env, tmp_path / "worker.log"),
        Process("collector", env, tmp_path / "collector.log"),
        Process("connector run webchat", env, tmp_path / "webchat.log"),
    ]
    for process in processes:
        process.start()
    worker, collector, webchat = processes
    page: Page | None = None
    try:
        for url, process in ((collector_url, collector), (chat_url, webchat), (api, worker)):
            wait_for(f"{process.command} ready", partial(http_json, f"{url}/readyz"), 90, process)

        # An anonymous visit, then a chat in the same browser in which they give a phone.
        for name, path in (("Returns policy", "/returns"), ("Red Running Shoes", "/p/red")):
            page_view = {
                "anonymousId": "anon-desk",
                "name": name,
                "properties": {"path": path, "url": f"https://shop.example{path}"},
            }
            resp = httpx.post(
                f"{collector_url}/v1/page", json=page_view, auth=(WRITE_KEY, ""), timeout=30
            )
            assert resp.status_code == 200, resp.text
        for event in (
            chat_event(1, f"Hi, my order #1234 has not arrived {XSS}"),
            chat_event(2, "Let me check that for you.", author="agent"),
        ):
            resp = httpx.post(f"{chat_url}/webchat/events", json=event, timeout=30)
            assert resp.status_code == 200, resp.text

        def stitched() -> CustomerContext | None:
            body = http_json(f"{api}/v1/lookup?q=%2B14155550133")
            ctx = None if body is None else CustomerContext.model_validate(body["customer"])
            return ctx if ctx is not None and len(ctx.timeline) == 4 else None

        wait_for("the stitched customer", stitched, 90, worker)

        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{api}/agent")
        page.get_by_test_id("lookup-input").fill("415-555-0133")
        page.get_by_test_id("lookup-submit").click()

        customer = page.get_by_test_id("customer")
        expect(customer).to_be_visible(timeout=30_000)
        expect(page.get_by_test_id("customer-name")).to_have_text("Robin Park")
        messages = page.get_by_test_id("message")
        expect(messages.filter(has_text="my order #1234 has not arrived")).to_have_count(1)
        expect(messages.filter(has_text="Let me check that for you.")).to_have_count(1)
        # The markup in the message is shown as text, never run or parsed.
        expect(messages.filter(has_text=XSS)).to_have_count(1)
        assert customer.locator("img").count() == 0
        assert page.evaluate("window.__pwned") is None
        # The pages of the anonymous visit, by name, stitched onto the same customer.
        for name in ("Returns policy", "Red Running Shoes"):
            expect(page.get_by_test_id("page").filter(has_text=name)).to_have_count(1)
            expect(page.get_by_test_id("timeline-entry").filter(has_text=name)).to_have_count(1)
        expect(page.get_by_test_id("timeline-entry")).to_have_count(4)
        identifiers = page.get_by_test_id("identifiers")
        for shown in ("+14155550133", "robin@example.com", "anon-desk", "user-desk"):
            expect(identifiers).to_contain_text(shown)
        name_trait = page.locator('[data-testid="trait"][data-name="name"]')
        # Provenance on hover: which event, channel and connector set the trait.
        expect(name_trait).to_have_attribute("title", re.compile(r"set by webchat:default:desk-"))
        expect(name_trait).to_have_attribute("title", re.compile(r"via chat/webchat"))
        expect(page.get_by_test_id("live-status")).to_have_text("live", timeout=30_000)

        # A new message while the page is open: it appears without a reload.
        page.evaluate("window.__sameDocument = true")
        resp = httpx.post(
            f"{chat_url}/webchat/events",
            json=chat_event(3, "Any news? I am still waiting."),
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        fresh = messages.filter(has_text="Any news? I am still waiting.")
        expect(fresh).to_have_count(1, timeout=60_000)
        expect(page.get_by_test_id("timeline-entry")).to_have_count(5)
        assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
        assert errors == [], errors
    finally:
        if page is not None:
            shot = tmp_path / "agent-desktop.png"
            page.screenshot(path=str(shot), full_page=True)
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copyfile(shot, ARTIFACTS / "agent-desktop.png")
            page.close()
        for process in reversed(processes):
            process.stop()


# -- rendering, without a worker: the page against canned answers --------------------------
def full_context() -> CustomerContext:
    """Every layer of the contract filled in, as the merge logic produces it."""
    t = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

    def at(minutes: int) -> datetime:
        return t + timedelta(minutes=minutes)

    return CustomerContext.model_validate(
        {
            "customer_id": "cus_render",
            "identifiers": [
                {"type": "email", "value": "mo@example.com", "verified": False},
                {"type": "phone", "value": "+14155550188", "verified": False},
                {"type": "user_id", "value": "u-mo", "verified": True},
            ],
            "traits": {
                "name": {
                    "value": "Mo <script>window.__pwned = 1</script>",
                    "event_id": "crm:7",
                    "channel": "server",
                    "source": "crm",
                    "observed_at": at(0),
                },
                "language": {
                    "value": "es",
                    "event_id": "webchat:default:l1",
                    "channel": "chat",
                    "source": "webchat",
                    "observed_at": at(1),
                },
            },
            "consent": {
                "sms": {
                    "channel": "sms",
                    "status": "opted_out",
                    "event_id": "twilio:sms:SM1:consent",
                    "source": "twilio",
                    "observed_at": at(2),
                },
                "email": {
                    "channel": "email",
                    "status": "opted_in",
                    "event_id": "email:e1",
                    "source": "email",
                    "observed_at": at(3),
                },
            },
            "timeline": [
                {
                    "event_id": "cti:c1:ended",
                    "channel": "voice",
                    "source": "cti",
                    "kind": "call",
                    "name": "ended",
                    "occurred_at": at(30),
                    "interaction_id": "call:c1",
                    "properties": {"queue": "billing-tier2"},
                },
                {
                    "event_id": "email:e1",
                    "channel": "email",
                    "source": "email",
                    "kind": "message",
                    "occurred_at": at(3),
                    "interaction_id": "email:t1",
                    "properties": {"subject": "Refund", "text": "Where is my refund?"},
                },
            ],
            "interactions": [
                {
                    "interaction_id": "call:c1",
                    "kind": "call",
                    "channel": "voice",
                    "source": "cti",
                    "started_at": at(20),
                    "last_at": at(30),
                    "status": "completed",
                    "outcome": "transferred",
                    "agent_id": "a-9",
                    "agent_name": "Sam Lee",
                    "queue": "billing-tier2",
                    "ivr_path": ["billing", "disputes"],
                    "transcript": "I was charged twice for order 88.",
                },
                {
                    "interaction_id": "email:t1",
                    "kind": "email_thread",
                    "channel": "email",
                    "source": "email",
                    "started_at": at(3),
                    "last_at": at(3),
                    "subject": "Refund",
                    "messages": [
                        {
                            "event_id": "email:e1",
                            "at": at(3),
                            "author": "customer",
                            "subject": "Refund",
                            "text": "Where is my refund?",
                        }
                    ],
                },
            ],
            "routing": {
                "open_conversations": [
                    {
                        "interaction_id": "chat:default:c9",
                        "channel": "chat",
                        "since": at(40),
                        "last_at": at(41),
                    }
                ],
                "last_agent": {
                    "agent_id": "a-9",
                    "agent_name": "Sam Lee",
                    "channel": "voice",
                    "interaction_id": "call:c1",
                    "at": at(30),
                },
                "repeat_contact": {
                    "interaction_id": "chat:default:c9",
                    "previous_interaction_id": "call:c1",
                    "previous_channel": "voice",
                    "previous_status": "completed",
                    "hours_since_previous": 0.2,
                    "at": at(40),
                },
                "language": "es",
                "contactable_channels": ["email", "voice"],
            },
            "updated_at": at(41),
            "version": 3,
        }
    )


def bare_context() -> CustomerContext:
    """Only the timeline: what a context looks like before interactions are derived."""
    t = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    chat_props = {"conversation_id": "c5", "author": "visitor", "text": "Is the blue one in stock?"}
    reply = {"conversation_id": "c5", "author": "agent", "agent_name": "Ana", "text": "It is!"}
    return CustomerContext.model_validate(
        {
            "customer_id": "cus_render",
            "timeline": [
                {
                    "event_id": "w2",
                    "channel": "chat",
                    "source": "webchat",
                    "kind": "message",
                    "occurred_at": t + timedelta(minutes=3),
                    "properties": reply,
                },
                {
                    "event_id": "w1",
                    "channel": "chat",
                    "source": "webchat",
                    "kind": "message",
                    "occurred_at": t + timedelta(minutes=2),
                    "properties": chat_props,
                },
                {
                    "event_id": "p1",
                    "channel": "web",
                    "source": "tracking",
                    "kind": "page",
                    "name": "Blue <b>Jacket</b>",
                    "occurred_at": t,
                    "properties": {"url": "https://shop.example/p/blue"},
                },
            ],
            "version": 4,
        }
    )


def test_page_renders_every_layer_and_falls_back_to_the_timeline(
    browser: Browser, tmp_path: Path
) -> None:
    static = REPO / "pipeline" / "static"
    stream_ctx = [full_context()]

    def serve(route: Route) -> None:
        url = route.request.url
        if url.endswith("/agent"):
            route.fulfill(body=(static / "agent.html").read_bytes(), content_type="text/html")
        elif "/agent/static/" in url:
            name = url.rsplit("/", 1)[1]
            kind = "text/javascript" if name.endswith(".js") else "text/css"
            route.fulfill(body=(static / name).read_bytes(), content_type=kind)
        elif "/v1/lookup" in url:
            ctx = full_context().model_dump(mode="json")
            found = {"customer_id": "cus_render", "matched": "phone:+14155550188", "customer": ctx}
            route.fulfill(json=found)
        elif url.endswith("/v1/customers/cus_render/stream"):
            data = stream_ctx[0].model_dump_json()
            events = f"retry: 300\n\nevent: context\ndata: {data}\n\n"
            route.fulfill(body=events, content_type="text/event-stream")
        else:
            route.fulfill(status=404, json={"error": "not_found"})

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.route("http://desk.test/**", serve)
    try:
        page.goto("http://desk.test/agent")
        page.get_by_test_id("lookup-input").fill("(415) 555-0188")
        page.get_by_test_id("lookup-submit").click()
        expect(page.get_by_test_id("customer")).to_be_visible()

        name = page.get_by_test_id("customer-name")
        expect(name).to_have_text("Mo <script>window.__pwned = 1</script>")
        assert page.evaluate("window.__pwned") is None
        expect(page.locator('[data-testid="trait"][data-name="name"]')).to_have_attribute(
            "title", re.compile(r"set by crm:7 via server/crm at 2026-11-02T09:00:00Z")
        )
        sms = page.get_by_test_id("consent-sms")
        expect(sms).to_have_class(re.compile(r"\bopted-out\b"))
        expect(sms).to_contain_text("OPTED OUT")
        expect(page.get_by_test_id("consent-email")).to_have_class(re.compile(r"\bopted-in\b"))
        expect(page.get_by_test_id("repeat-contact")).to_contain_text("Repeat contact")
        expect(page.get_by_test_id("last-agent")).to_contain_text("Sam Lee")
        expect(page.get_by_test_id("language")).to_contain_text("es")
        expect(page.get_by_test_id("open-conversations")).to_have_attribute("data-count", "1")
        call = page.locator('[data-testid="interaction"][data-kind="call"]')
        expect(call.get_by_test_id("ivr-path")).to_have_text("billing \u203a disputes")
        expect(call.get_by_test_id("queue")).to_have_text("billing-tier2")
        expect(call.get_by_test_id("agent")).to_have_text("Sam Lee")
        expect(call.get_by_test_id("outcome")).to_have_text("transferred")
        expect(call.get_by_test_id("call-transcript")).to_have_text(
            "I was charged twice for order 88."
        )
        email = page.locator('[data-testid="interaction"][data-kind="email_thread"]')
        expect(email.get_by_test_id("message")).to_contain_text("Refund: Where is my refund?")
        expect(page.get_by_test_id("timeline-entry")).to_have_count(2)

        # The next version has no interactions yet: chat and pages come from the timeline.
        stream_ctx[0] = bare_context()
        expect(page.get_by_test_id("freshness")).to_have_attribute("data-version", "4")
        messages = page.get_by_test_id("message")
        expect(messages.filter(has_text="Is the blue one in stock?")).to_have_count(1)
        expect(messages.filter(has_text="It is!")).to_contain_text("Ana")
        expect(page.get_by_test_id("page")).to_have_text(re.compile(r"Blue <b>Jacket</b>"))
        assert page.locator("[data-testid=customer] b").count() == 0
        expect(page.get_by_test_id("timeline-entry")).to_have_count(3)
        assert errors == [], errors
    finally:
        page.screenshot(path=str(tmp_path / "agent-desktop-render.png"), full_page=True)
        page.close()
