"""``omnistitch worker``: run one stream-processor process (agents, tables and query API)."""

from __future__ import annotations

import faust

from omnistitch.settings import WorkerSettings
from omnistitch.topics import ensure_topics
from pipeline.api import register_api
from pipeline.app import Pipeline
from pipeline.rules import Rules


def build(settings: WorkerSettings, rules: Rules | None = None) -> Pipeline:
    """The pipeline with its API attached, ready to run (``rules``: from settings if None)."""
    pipeline = Pipeline(settings, rules)
    register_api(pipeline)
    return pipeline


def run(settings: WorkerSettings, rules: Rules) -> None:
    """Create the topics if missing, then run the worker until it is stopped."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    pipeline = build(settings, rules)
    ensure_topics(settings, extra=pipeline.internal_topics())
    worker = faust.Worker(pipeline.app, loglevel=settings.log_level)
    worker.execute_from_commandline()
