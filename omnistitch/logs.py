"""Structured logs: one JSON object per line, the same setup in every process.

Each line has ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``, plus
``event_id`` and ``customer_id`` when the call passes them
(``log.info("...", extra={"event_id": ..., "customer_id": ...})``) and ``exception`` for
a traceback.

Personal data stays out of the logs: whatever a message says, e-mail addresses and phone
numbers in it (plain, ``type:value`` identifier keys, or URL-encoded) are replaced by
``[email]`` and ``[phone]`` before the line is written. Settings never reach a log line
(passwords are ``SecretStr``).

* :func:`logging_config` is a :func:`logging.config.dictConfig` dict: the faust worker
  passes it to ``faust.Worker(logging_config=...)``, the HTTP processes to uvicorn's
  ``log_config``;
* :func:`setup_logging` applies it in processes that configure logging themselves.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
from datetime import UTC, datetime
from typing import Any

#: Attributes of a log record copied to the JSON line when a call provides them.
CONTEXT_FIELDS = ("event_id", "customer_id")

_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Identifier keys first, so that "phone:(415) 555-0100" loses its whole value.
    (
        re.compile(r"(?i)\bphone(?::|%3A)\s*[^\s&\"',;}\]]+(?:\s+[\d().+-]*\d)*"),
        "phone:[phone]",
    ),
    (re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"), "[email]"),
    # International (also URL-encoded "+"), and the national formats (415) 555-0100, 415-555-0100.
    (re.compile(r"(?:\+|%2B)\d[\d\s().-]{5,20}\d"), "[phone]"),
    (re.compile(r"\(\d{3}\)\s?\d{3}[-.\s]\d{4}\b"), "[phone]"),
    (re.compile(r"\b\d{3}[-.\s]\d{3}[-.\s]\d{4}\b"), "[phone]"),
)


def redact(text: str) -> str:
    """``text`` with e-mail addresses and phone numbers replaced by placeholders."""
    for pattern, placeholder in _REDACTIONS:
        text = pattern.sub(placeholder, text)
    return text


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON, with personal data redacted."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = str(value)
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        return json.dumps(line, ensure_ascii=False, default=str)


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A ``dictConfig`` sending every logger's records, as JSON lines, to stdout."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level, "handlers": ["json"]},
        # uvicorn configures its own loggers with handlers; route them to the root instead.
        "loggers": {
            name: {"level": level, "handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def setup_logging(level: str = "INFO") -> None:
    """Configure the process's logging as :func:`logging_config` describes."""
    logging.config.dictConfig(logging_config(level))
