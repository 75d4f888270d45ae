"""Returning the freed heap to the OS: the real glibc call in a fresh process, the thread
around it with a stand-in."""

from __future__ import annotations

import ctypes.util
import json
import platform
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client import REGISTRY

from pipeline import heap_trim
from pipeline import metrics as m
from pipeline.heap_trim import HeapTrimmer

GLIBC = platform.libc_ver()[0] == "glibc"

# A heap with holes: 200 MB of 64 KiB blocks (below glibc's mmap threshold, so from the
# heap), each followed by a small block that stays; the large ones freed. glibc cannot
# shrink the heap from the top past the survivors, so the freed pages stay resident
# until a trim.
FRAGMENT_AND_TRIM = """
import json
from pipeline.heap_trim import HeapTrimmer, resident_bytes
big, keep = [], []
for i in range(3_200):
    big.append(bytearray(65_536))
    keep.append(bytearray(600))
before = resident_bytes()
del big
held = resident_bytes()
seen = []
released = HeapTrimmer(1.0, lambda s, b: seen.append((s, b))).trim_once()
print(json.dumps({"before": before, "held": held, "released": released,
                  "after": resident_bytes(), "reported": seen}))
"""


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's; this C library has none")
def test_a_trim_gives_the_freed_heap_back_to_the_os() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENT_AND_TRIM], capture_output=True, text=True, check=True
    ).stdout
    r = json.loads(out)
    freed = 3_200 * 65_536
    assert r["before"] - r["held"] < freed // 4, "glibc gave the holes back unasked"
    assert r["released"] > freed // 2
    assert r["after"] <= r["held"] - freed // 2
    ((seconds, reported),) = r["reported"]
    assert reported == r["released"]
    assert 0 <= seconds < 5


def test_the_trimmer_trims_on_its_thread_until_stopped() -> None:
    calls: list[int] = []
    reports: list[tuple[float, int]] = []
    trimmed = threading.Event()

    def trim(pad: int) -> int:
        calls.append(pad)
        if len(calls) >= 3:
            trimmed.set()
        return 1

    trimmer = HeapTrimmer(0.01, lambda s, b: reports.append((s, b)), trim=trim)
    trimmer.start()
    assert trimmed.wait(5)
    trimmer.stop()
    after_stop = len(calls)
    time.sleep(0.05)
    assert len(calls) == after_stop, "trimmed after stop()"
    assert set(calls) == {0}  # all free memory, none kept at the top
    assert len(reports) == after_stop
    assert all(s >= 0 and b >= 0 for s, b in reports)
    assert not [t for t in threading.enumerate() if t.name == "heap-trim"]


def test_without_malloc_trim_nothing_runs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert heap_trim.glibc_malloc_trim() is None
    trimmer = HeapTrimmer(0.01)
    assert not trimmer.available
    with caplog.at_level("INFO", logger="pipeline.heap_trim"):
        trimmer.start()
    assert "no malloc_trim" in caplog.text
    assert not [t for t in threading.enumerate() if t.name == "heap-trim"]
    assert trimmer.trim_once() == 0
    trimmer.stop()


def test_an_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s must be positive"):
        HeapTrimmer(0)


def test_each_trim_is_counted_in_seconds_and_bytes() -> None:
    seconds = REGISTRY.get_sample_value("omnistitch_heap_trim_seconds_total") or 0.0
    released = REGISTRY.get_sample_value("omnistitch_heap_trim_released_bytes_total") or 0.0
    m.heap_trimmed(0.25, 4096)
    assert REGISTRY.get_sample_value("omnistitch_heap_trim_seconds_total") == seconds + 0.25
    assert REGISTRY.get_sample_value("omnistitch_heap_trim_released_bytes_total") == released + 4096
