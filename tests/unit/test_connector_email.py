"""The email connector: parsing mail (pure), and SMTP conversations with ``smtplib``
against the aiosmtpd server and an in-memory publisher."""

from __future__ import annotations

import smtplib
import socket
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

import pytest

from connectors.delivery import ConnectorMetrics, Delivery
from connectors.email.message import NotMail, to_raw_event
from connectors.email.smtp import MailHandler
from connectors.publisher import InMemoryPublisher
from schemas.events import Channel
from tests.connector_support import TOPIC, published, smtp_server

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def mail(**headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = headers.pop("From", "Ann Lee <Ann@Example.com>")
    msg["To"] = headers.pop("To", "support@shop.example")
    msg["Subject"] = headers.pop("Subject", "Order 1182 arrived damaged")
    msg["Message-ID"] = headers.pop("Message_ID", "<reply-2@mail.example.com>")
    msg["In-Reply-To"] = "<ticket-1@shop.example>"
    msg["References"] = "<ticket-0@shop.example> <ticket-1@shop.example>"
    msg["Date"] = format_datetime(datetime(2026, 11, 20, 9, 29, tzinfo=UTC))
    for name, value in headers.items():
        msg[name] = value
    msg.set_content("The box was crushed.\nCan you send a new one?\n")
    return msg


def test_mail_maps_threading_headers_and_text() -> None:
    event = to_raw_event(bytes(mail()), "bounce@mail.example.com", ["support@shop.example"], NOW)
    assert event.event_id == "email:reply-2@mail.example.com"
    assert (event.channel, event.source, event.kind) == (Channel.EMAIL, "email", "message")
    assert [i.key for i in event.identifiers] == ["email:Ann@Example.com"]
    props = event.properties
    assert props["subject"] == "Order 1182 arrived damaged"
    assert props["to"] == ["support@shop.example"]
    assert props["in_reply_to"] == "ticket-1@shop.example"
    assert props["references"] == ["ticket-0@shop.example", "ticket-1@shop.example"]
    assert props["thread_id"] == "ticket-0@shop.example"
    assert props["text"] == "The box was crushed.\nCan you send a new one?\n"
    assert event.traits == {"name": "Ann Lee"}
    assert event.occurred_at == datetime(2026, 11, 20, 9, 29, tzinfo=UTC)
    assert event.payload["mail_from"] == "bounce@mail.example.com"


def test_html_only_and_attachments_and_no_message_id() -> None:
    msg = EmailMessage()
    msg["From"] = "bob@example.com"
    msg["Subject"] = "Photo"
    msg.set_content("<p>Hello&nbsp;<b>there</b></p>", subtype="html")
    msg.add_attachment(b"\x89PNG....", maintype="image", subtype="png", filename="box.png")
    event = to_raw_event(bytes(msg), None, ["support@shop.example"], NOW)
    assert event.event_id.startswith("email:sha256:")
    assert event.properties["text"] == "Hello there"
    assert event.properties["attachments"] == [
        {"filename": "box.png", "content_type": "image/png", "size": 8}
    ]
    assert event.properties["thread_id"] is None
    assert event.occurred_at == NOW


@pytest.mark.parametrize(
    "content", [b"", b"hello world\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\xff\xfe\x00"]
)
def test_what_is_not_mail_raises(content: bytes) -> None:
    with pytest.raises(NotMail):
        to_raw_event(content, None, ["a@b.c"], NOW)


# --- SMTP ----------------------------------------------------------------------------------


def handler(publisher: InMemoryPublisher, domains: frozenset[str] = frozenset()) -> MailHandler:
    return MailHandler(Delivery(TOPIC, publisher, ConnectorMetrics("email")), domains)


def test_smtplib_mail_is_published_then_250() -> None:
    publisher = InMemoryPublisher()
    with smtp_server(handler(publisher)) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        code, banner = smtp.ehlo()
        assert code == 250
        assert b"SIZE 65536" in banner
        refused = smtp.send_message(mail(), "bounce@mail.example.com", ["support@shop.example"])
        assert refused == {}
    [(key, event)] = published(publisher)
    assert key == "email:Ann@Example.com"
    assert event.event_id == "email:reply-2@mail.example.com"


def test_smtp_codes_for_refusals() -> None:
    publisher = InMemoryPublisher()
    box = handler(publisher, frozenset({"shop.example"}))
    with smtp_server(box, max_bytes=4096) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo()
        # A recipient of another domain: 550.
        smtp.mail("a@example.com")
        assert smtp.rcpt("someone@elsewhere.example")[0] == 550
        smtp.rset()
        # Not mail: 554.
        smtp.mail("a@example.com")
        smtp.rcpt("support@shop.example")
        code, reply = smtp.data(b"just some words, no headers at all\r\n")
        assert code == 554
        assert b"5.6.0" in reply
        # Over the size limit: 552.
        smtp.mail("a@example.com")
        smtp.rcpt("support@shop.example")
        big = mail()
        big.set_content("a reasonably long line of text\n" * 200)
        assert smtp.data(big.as_bytes(policy=SMTP))[0] == 552
        # Broker unavailable: 451, transient.
        publisher.fail_reason = "ack_timeout"
        smtp.mail("a@example.com")
        smtp.rcpt("support@shop.example")
        code, reply = smtp.data(mail().as_bytes(policy=SMTP))
        assert code == 451
        assert b"4.3.0" in reply
    assert publisher.records == []
    samples = {
        s.labels["reason"]: s.value
        for family in box.delivery.metrics.registry.collect()
        for s in family.samples
        if s.name == "omnistitch_connector_requests_rejected_total"
    }
    assert (samples["forbidden"], samples["not_mail"], samples["unavailable"]) == (1, 1, 1)


def test_a_non_smtp_client_gets_5xx_not_a_crash() -> None:
    publisher = InMemoryPublisher()
    with smtp_server(handler(publisher)) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.recv(1024)  # greeting
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = sock.recv(1024)
        assert answer.startswith(b"5")
        with smtplib.SMTP("127.0.0.1", port) as smtp:  # still serving
            assert smtp.noop()[0] == 250
