"""The worker logs JSON lines from its first record: before any of its threads starts."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from omnistitch.logs import JsonFormatter
from omnistitch.settings import WorkerSettings
from pipeline import worker
from pipeline.rules import load_rules


@pytest.fixture
def root_handlers() -> Iterator[None]:
    """Whatever ``run`` configures is undone afterwards (pytest's own capture included)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_logging_is_json_before_the_first_thread_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root_handlers: None
) -> None:
    seen: list[logging.Formatter | None] = []

    def prepare(_state_dir: Path) -> None:
        # The first step of ``run``, before the lag monitor and ingest start their threads
        # (a warning from one of them once reached the log as a bare line).
        seen.extend(h.formatter for h in logging.getLogger().handlers)
        raise RuntimeError("stopped before any thread")

    monkeypatch.setattr(worker, "prepare", prepare)
    settings = WorkerSettings(bootstrap_servers="127.0.0.1:1", state_dir=tmp_path)
    with pytest.raises(RuntimeError, match="stopped before any thread"):
        worker.run(settings, load_rules(None))
    assert any(isinstance(f, JsonFormatter) for f in seen)
    record = logging.LogRecord(
        "omnistitch.lag_monitor", logging.WARNING, "", 0, "no offsets", (), None
    )
    assert json.loads(JsonFormatter().format(record))["message"] == "no offsets"
