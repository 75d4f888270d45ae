from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.consumer import fetcher  # type: ignore[import-untyped]

from pipeline.fetch_backoff import limit_fetch_backoff


async def _new_fetcher() -> Any:
    """A real aiokafka Fetcher over stand-ins for the client and subscriptions."""

    class Client:
        _loop = asyncio.get_running_loop()
        _metadata_max_age_ms = 300_000

    class Subscriptions:
        def register_fetch_waiters(self, _waiters: Any) -> None:
            pass

    made = fetcher.Fetcher(Client(), Subscriptions())
    made._fetch_task.cancel()  # its routine needs a real client; only the settings matter
    return made


def test_fetchers_created_afterwards_hold_fetches_at_most_the_limit() -> None:
    original = fetcher.Fetcher.__init__
    try:
        assert asyncio.run(_new_fetcher())._prefetch_backoff == pytest.approx(0.1)
        assert asyncio.run(_new_fetcher())._fetch_max_wait_ms == 500
        limit_fetch_backoff(0.005)
        limit_fetch_backoff(0.004, 0.03)  # applying it again replaces the values
        made = asyncio.run(_new_fetcher())
        assert made._prefetch_backoff == pytest.approx(0.004)
        # faust passes 1,500 ms itself: the limit wins over the caller's value
        assert made._fetch_max_wait_ms == 30
        explicit = fetcher.Fetcher.__init__
        assert explicit.__wrapped__ is original
    finally:
        fetcher.Fetcher.__init__ = original


def test_a_nonsense_backoff_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="positive"):
        limit_fetch_backoff(0)
    with pytest.raises(ValueError, match="positive"):
        limit_fetch_backoff(0.005, 0)
