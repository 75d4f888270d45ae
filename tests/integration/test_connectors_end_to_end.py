"""One person across four channels becomes one customer, through the real processes.

A web visit (tracking collector), a web chat (web chat connector, HMAC-proved user id,
email and phone given in the chat, the visit's anonymous id shared), a missed call (Twilio
voice ``no-answer`` from their phone) and an SMS (Twilio, same phone): the worker's API
answers one customer with all four interactions on the timeline.

The chat is what links the others: it carries the visit's ``anonymous_id`` and the phone
the call and the SMS came from. Requests arrive in an order where the call and the SMS
make a customer of their own first, so the chat has to merge two customers.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from urllib.parse import quote

import httpx

from connectors.webchat.identity import identifier_hash
from schemas.context import CustomerContext
from tests.conftest import free_port
from tests.connector_support import twilio_post
from tests.processes import Process, http_json, wait_for

WRITE_KEY = "e2e-connectors-key"
CHAT_SECRET = "e2e-chat-secret-0123456789"
TWILIO_TOKEN = "e2e-twilio-auth-token"
PHONE = "+14155550177"


def test_web_chat_call_and_sms_become_one_customer(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **worker_env,
        "OMNISTITCH_WRITE_KEYS": WRITE_KEY,
        "OMNISTITCH_COLLECTOR_PORT": str(free_port()),
        "OMNISTITCH_CHAT_HMAC_SECRET": CHAT_SECRET,
        "OMNISTITCH_CHAT_PORT": str(free_port()),
        "OMNISTITCH_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "OMNISTITCH_TWILIO_PORT": str(free_port()),
    }
    collector_url = f"http://127.0.0.1:{env['OMNISTITCH_COLLECTOR_PORT']}"
    chat_url = f"http://127.0.0.1:{env['OMNISTITCH_CHAT_PORT']}"
    twilio_url = f"http://127.0.0.1:{env['OMNISTITCH_TWILIO_PORT']}"
    api = f"http://127.0.0.1:{env['OMNISTITCH_API_PORT']}"
    processes = [
        Process("worker", env, tmp_path / "worker.log"),
        Process("collector", env, tmp_path / "collector.log"),
        Process("connector run webchat", env, tmp_path / "webchat.log"),
        Process("connector run twilio", env, tmp_path / "twilio.log"),
    ]
    for process in processes:
        process.start()
    worker, collector, webchat, twilio = processes
    try:
        for url, process in ((collector_url, collector), (chat_url, webchat), (twilio_url, twilio)):
            ready = partial(http_json, f"{url}/readyz")
            wait_for(f"{process.command} ready", ready, 60, process)

        def signed(path: str, params: dict[str, str]) -> httpx.Response:
            return twilio_post(twilio_url, path, params, TWILIO_TOKEN)

        # The missed call and the SMS first: they make a customer of their own.
        call = signed(
            "/twilio/voice",
            {
                "CallSid": "CAe2e",
                "AccountSid": "ACe2e",
                "From": PHONE,
                "To": "+18005550000",
                "Direction": "inbound",
                "CallStatus": "no-answer",
                "SequenceNumber": "2",
            },
        )
        assert call.status_code == 200, call.text
        sms = signed(
            "/twilio/sms",
            {
                "MessageSid": "SMe2e",
                "AccountSid": "ACe2e",
                "From": PHONE,
                "To": "+18005550000",
                "Body": "Did you just call me?",
                "NumMedia": "0",
            },
        )
        assert sms.status_code == 200, sms.text
        # The web visit: anonymous.
        page = httpx.post(
            f"{collector_url}/v1/page",
            json={"anonymousId": "anon-e2e", "name": "Returns", "properties": {"path": "/returns"}},
            auth=(WRITE_KEY, ""),
            timeout=30,
        )
        assert page.status_code == 200, page.text

        def holder(identifier: str, events: int) -> CustomerContext | None:
            body = http_json(f"{api}/v1/customers?identifier={quote(identifier)}")
            ctx = None if body is None else CustomerContext.model_validate(body)
            return ctx if ctx is not None and len(ctx.timeline) == events else None

        # Their records have different keys, so no order between them: wait for both
        # customers before the chat, which then has to merge them.
        by_phone = wait_for("the caller", partial(holder, f"phone:{PHONE}", 2), 120, worker)
        visitor = wait_for("the visitor", partial(holder, "anonymous_id:anon-e2e", 1), 60, worker)
        assert by_phone.customer_id != visitor.customer_id
        # The chat: logged in (proved), same browser, gives email and phone.
        chat = httpx.post(
            f"{chat_url}/webchat/events",
            json={
                "id": "chat-e2e-1",
                "type": "message",
                "conversation_id": "conv-e2e",
                "visitor": {
                    "id": "user-e2e",
                    "identifier_hash": identifier_hash(CHAT_SECRET, "user-e2e"),
                    "anonymous_id": "anon-e2e",
                    "email": "Rio@Example.com",
                    "phone": "(415) 555-0177",
                },
                "message": {"id": "m-1", "author": "visitor", "text": "You called, I missed it."},
            },
            timeout=30,
        )
        assert chat.status_code == 200, chat.text

        stitched = partial(holder, "user_id:user-e2e", 4)
        customer = wait_for("one customer with four interactions", stitched, 120, worker)
        # one of the two survives the merge (the older), and names the other as merged into it
        pair = {by_phone.customer_id, visitor.customer_id}
        assert customer.customer_id in pair
        assert pair - {customer.customer_id} <= set(customer.merged_from)
        assert {e.channel.value for e in customer.timeline} == {"web", "chat", "voice", "sms"}
        assert {e.event_id for e in customer.timeline} == {
            "twilio:call:CAe2e:no-answer:2",
            "twilio:sms:SMe2e",
            "webchat:default:chat-e2e-1",
            next(e.event_id for e in customer.timeline if e.source == "tracking"),
        }
        keys = {i.key: i.verified for i in customer.identifiers}
        assert keys["user_id:user-e2e"] is True
        assert {"anonymous_id:anon-e2e", "email:rio@example.com", f"phone:{PHONE}"} <= set(keys)
        for lookup in (f"phone:{PHONE}", "email:RIO@example.com", "anonymous_id:anon-e2e"):
            found = http_json(f"{api}/v1/customers?identifier={quote(lookup)}")
            assert found is not None, lookup
            assert found["customer_id"] == customer.customer_id
    finally:
        for process in reversed(processes):
            process.stop()
