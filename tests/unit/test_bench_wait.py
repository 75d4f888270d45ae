"""The bench's waits: a long drain that keeps moving never times out; a stalled one does."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from omnistitch import bench


class _Running:
    class proc:  # the shape of subprocess.Popen the wait reads
        @staticmethod
        def poll() -> None:
            return None

    procs = (proc,)
    log = "worker.log"


def test_a_wait_that_keeps_progressing_outlives_its_timeout() -> None:
    started = time.monotonic()
    # progress changes every look, for 1.2 s: four times the 0.3 s timeout
    bench._wait(
        "a drain",
        lambda: time.monotonic() - started > 1.2,
        0.3,
        [cast(Any, _Running())],
        progress=time.monotonic,
    )
    assert time.monotonic() - started >= 1.2


def test_a_wait_without_progress_times_out_and_says_so() -> None:
    started = time.monotonic()
    with pytest.raises(
        RuntimeError, match=r"timed out \(0s without progress\) waiting for a drain"
    ):
        bench._wait("a drain", lambda: False, 0.3, [cast(Any, _Running())], progress=lambda: 7)
    assert time.monotonic() - started < 2


def test_a_plain_wait_times_out_after_its_timeout() -> None:
    with pytest.raises(RuntimeError, match=r"timed out \(0s\) waiting for recovery"):
        bench._wait("recovery", lambda: False, 0.3, [cast(Any, _Running())])
