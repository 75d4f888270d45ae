"""Structured JSON logs with personal data redacted."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import sys

import pytest

from omnistitch.logs import JsonFormatter, logging_config, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("merge of ann@example.com", "merge of [email]"),
        ("email:Bo@Example.CO.uk joined", "email:[email] joined"),
        (
            "GET /v1/customers?identifier=email:ann%40example.com",
            "GET /v1/customers?identifier=email:[email]",
        ),
        ("phone:(415) 555-0100 joined", "phone:[phone] joined"),
        ("identifier=phone%3A%2B14155550101&x=1", "identifier=phone:[phone]&x=1"),
        ("called +44 20 7946 0958.", "called [phone]."),
        ("call 415-555-0100 or (415) 555-0199", "call [phone] or [phone]"),
        ("{'phone': '+14155550101'}", "{'phone': '[phone]'}"),
    ],
)
def test_emails_and_phones_are_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "partition 3 offset 1234567890 at 2026-03-01T12:00:00+00:00",
        "customer cus_01a1e3cc9d00cc1757286bc25d46 merged into cus_01a1e3cc9d00cc17",
        "event tracking:5f1c2b44-7d0e-4a35-9a51-0b5d8a2c9e11 took 0.25 s",
    ],
)
def test_ordinary_messages_are_left_alone(text: str) -> None:
    assert redact(text) == text


def test_a_record_is_one_json_object_with_context_fields() -> None:
    logger = logging.getLogger("omnistitch.test.logs")
    record = logger.makeRecord(
        logger.name,
        logging.INFO,
        __file__,
        1,
        "merged %s for %s",
        ("cus_1", "dana@example.com"),
        None,
        extra={"event_id": "e1", "customer_id": "cus_1"},
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    body = json.loads(line)
    assert body == {
        "time": body["time"],
        "level": "INFO",
        "logger": "omnistitch.test.logs",
        "message": "merged cus_1 for [email]",
        "event_id": "e1",
        "customer_id": "cus_1",
    }
    assert body["time"].endswith("+00:00")


def test_exceptions_are_inside_the_line_and_redacted() -> None:
    try:
        raise ValueError("bad input ann@example.com")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), exc_info=sys.exc_info()
        )
    body = json.loads(JsonFormatter().format(record))
    assert "ValueError: bad input [email]" in body["exception"]
    assert "ann@example.com" not in json.dumps(body)


def test_the_config_routes_every_logger_and_uvicorns_to_json_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    try:
        logging.config.dictConfig(logging_config("INFO"))
        logging.getLogger("uvicorn.access").info('%s - "GET %s"', "1.2.3.4", "/v1/x?e=a@b.io")
        logging.getLogger("some.library").debug("not at INFO")
        logging.getLogger("some.library").warning("careful")
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
        logging.root.handlers.clear()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(x["logger"], x["message"]) for x in lines] == [
        ("uvicorn.access", '1.2.3.4 - "GET /v1/x?e=[email]"'),
        ("some.library", "careful"),
    ]
