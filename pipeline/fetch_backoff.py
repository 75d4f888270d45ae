"""How long a fetch waits: aiokafka holding a broker's next fetch while fetched records
wait to be taken, and the broker holding a fetch request for data.

aiokafka's fetcher sends no new fetch request to a broker while any partition led by that
broker still has records the application has not taken, until ``prefetch_backoff`` has
passed (100 ms by default). faust takes records only for the partitions whose streams have
room. On a single broker that leads every partition, every such wait stalls every
partition, so a record waited up to 100 ms at each of the pipeline's three hops. The
bench measured it: at 100 ev/s offered, the p99 from ``raw.events`` to ``customer.context``
was 314 ms with the default and 94 ms with 5 ms, and the median fell from 74 to 62 ms.

The second wait is the broker's: a fetch request is a long poll, held until data arrives
on one of the partitions *it names* or ``fetch_max_wait_ms`` passes, and faust sets that
to 1,500 ms. The fetcher leaves out of a request every partition that still has records
waiting to be taken, so a record that lands on such a partition meanwhile waits for the
request in flight to time out. Once ingest batched raw records, that was most of the
latency: at 1,000 ev/s offered the stages idled (63% of the worker's main thread in
``select``) while their input waited, and the p50 from ``raw.events`` to
``customer.context`` was 2.7 s. With 20 ms the stages kept up.

``AIOKafkaConsumer`` does not expose ``prefetch_backoff`` (it builds its ``Fetcher`` in
``start()``) and faust passes its own ``fetch_max_wait_ms``, so :func:`limit_fetch_backoff`
sets both on the fetcher once per process, before faust creates its consumer.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from aiokafka.consumer import fetcher  # type: ignore[import-untyped]

_MARK = "_omnistitch_prefetch_backoff"


def limit_fetch_backoff(seconds: float, max_wait_s: float = 0.02) -> None:
    """Make every aiokafka ``Fetcher`` created from now on use ``prefetch_backoff=seconds``
    and ``fetch_max_wait_ms=max_wait_s`` (in ms).

    Fails at start-up (``TypeError``) if aiokafka no longer has those parameters, instead of
    silently doing nothing after an upgrade.
    """
    if seconds <= 0 or max_wait_s <= 0:
        raise ValueError("the fetch backoff and the fetch wait must be positive")
    init = fetcher.Fetcher.__init__
    original = getattr(init, _MARK, init)
    parameters = inspect.signature(original).parameters
    for name in ("prefetch_backoff", "fetch_max_wait_ms"):
        if name not in parameters:
            raise TypeError(f"aiokafka's Fetcher has no {name} parameter any more")

    @functools.wraps(original)
    def patched(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["prefetch_backoff"] = seconds
        kwargs["fetch_max_wait_ms"] = max(1, round(max_wait_s * 1000))
        original(self, *args, **kwargs)

    setattr(patched, _MARK, original)
    fetcher.Fetcher.__init__ = patched
