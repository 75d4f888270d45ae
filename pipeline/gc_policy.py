"""How often the worker's cyclic garbage collector runs.

A worker keeps a large, long-lived heap (parsed contexts in an LRU, the identity tier's
hot rows, faust's and aiokafka's own objects) and allocates thousands of short-lived
objects per batch (decoded records, pydantic models). With CPython's default thresholds
(700, 10, 10) a batch decode set off many young collections and, every hundred of them, a
full one over that whole heap: in the in-process stage profile (``omnistitch bench``,
``domain`` row) decoding a batch of customer ops cost ~80 µs per op, ~8 µs with the
threshold at 10,000 or more.

Reference counting still frees almost everything at once; only reference cycles wait for a
collection, so a higher threshold trades a little memory held by cycles for CPU. Objects
alive once the worker is built (modules, the app, its topics and tables) are frozen out of
every collection (``gc.freeze``), as CPython's docs suggest for long-running servers.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

#: CPython's defaults for the two older generations, kept (only the youngest changes).
_OLDER = (10, 10)


def tune(gen0_threshold: int) -> None:
    """Set the youngest generation's threshold (0: keep CPython's default)."""
    if gen0_threshold:
        gc.set_threshold(gen0_threshold, *_OLDER)


def freeze_startup_heap() -> None:
    """Move everything alive now out of the collector's reach (it is never garbage)."""
    gc.collect()
    gc.freeze()


def time_collections(spent: Callable[[int, float], None]) -> Callable[[str, dict[str, Any]], None]:
    """Report each collection's generation and seconds to ``spent``; returns the callback
    registered (``gc.callbacks.remove`` it to stop)."""
    started = 0.0

    def callback(phase: str, info: dict[str, Any]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            spent(int(info["generation"]), time.perf_counter() - started)

    gc.callbacks.append(callback)
    return callback
