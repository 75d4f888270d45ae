"""Dead-letter records: bad input is parked with its reason and original bytes, and counted."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime

import faust

from pipeline.metrics import DEAD_LETTERS

log = logging.getLogger(__name__)


async def dead_letter(
    topic: faust.TopicT,
    reason: str,
    detail: str,
    key: bytes | None,
    value: bytes | None,
    stage: str = "ingest",
) -> None:
    """Publish one dead-letter record (JSON) carrying the reason and the original bytes.

    The detail (which may quote the event's content) goes to the record only, never to
    the log: the log says which stage and why.
    """
    record = {
        "stage": stage,
        "reason": reason,
        "detail": detail[:4000],
        "dead_lettered_at": datetime.now(UTC).isoformat(),
        "original_key_b64": base64.b64encode(key).decode() if key is not None else None,
        "original_value_b64": base64.b64encode(value).decode() if value is not None else None,
    }
    DEAD_LETTERS.labels(stage, reason).inc()
    log.warning("dead-lettered a record at stage %s: %s", stage, reason)
    await topic.send(key=key, value=json.dumps(record).encode())
