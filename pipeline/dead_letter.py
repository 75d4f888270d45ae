"""Dead-letter records: bad input is parked with its reason and original bytes, and counted."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from omnistitch import dlq
from pipeline.metrics import DEAD_LETTERS

if TYPE_CHECKING:  # the ingest process (ingest_process.py) runs without faust
    import faust

log = logging.getLogger(__name__)


def letter(
    stage: str,
    reason: str,
    detail: str,
    key: bytes | None,
    value: bytes | None,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> bytes:
    """One dead-letter record (JSON, :func:`omnistitch.dlq.encode`) carrying the reason and
    the original bytes, counted and logged; the caller publishes it.

    The detail (which may quote the event's content) goes to the record only, never to
    the log: the log says which stage and why.
    """
    DEAD_LETTERS.labels(stage, reason).inc()
    log.warning("dead-lettered a record at stage %s: %s", stage, reason)
    return dlq.encode(
        stage=stage,
        reason=reason,
        detail=detail,
        key=key,
        value=value,
        topic=topic,
        partition=partition,
        offset=offset,
    )


async def dead_letter(
    topic: faust.TopicT,
    reason: str,
    detail: str,
    key: bytes | None,
    value: bytes | None,
    stage: str = "ingest",
) -> None:
    """Publish one dead-letter record through faust's producer (see :func:`letter`)."""
    await topic.send(key=key, value=letter(stage, reason, detail, key, value))
