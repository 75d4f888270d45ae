"""Loaded by a worker started with this directory on PYTHONPATH (a test's fault, never
production): faust's consumer loses given records of one topic on their way to the
streams, once each, as faust does around a rebalance (docs/performance-history.md,
session 19). ``OMNISTITCH_TEST_LOSE_RECORDS=<topic suffix>:<offset>,<offset>``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

_spec = os.environ.get("OMNISTITCH_TEST_LOSE_RECORDS")
if _spec:
    from faust.transport import consumer as _consumer

    _suffix, _, _offsets = _spec.partition(":")
    _lose = {int(o) for o in _offsets.split(",")}
    _getmany = _consumer.Consumer.getmany

    async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:  # noqa: ASYNC109  # faust's signature
        async for tp, message in _getmany(self, timeout):
            if tp.topic.endswith(_suffix) and message.offset in _lose:
                _lose.discard(message.offset)  # lost once: read again, it comes through
                continue
            yield tp, message

    _consumer.Consumer.getmany = getmany  # type: ignore[method-assign]
