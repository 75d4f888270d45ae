"""``omnistitch worker``: run one stream-processor process (agents, tables and query API)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import faust

from omnistitch.logs import logging_config, setup_logging
from omnistitch.settings import WorkerSettings
from omnistitch.topics import ensure_topics
from pipeline import metrics as m
from pipeline.api import register_api
from pipeline.app import Pipeline
from pipeline.fetch_backoff import limit_fetch_backoff
from pipeline.gc_policy import freeze_startup_heap, time_collections, tune
from pipeline.heap_trim import HeapTrimmer
from pipeline.ingest import Ingest
from pipeline.instrumentation import instrument, own_lag_monitor
from pipeline.rules import Rules
from pipeline.state_dir import mark_clean, prepare

log = logging.getLogger(__name__)


def build(
    settings: WorkerSettings,
    rules: Rules | None = None,
    broker_ok: Callable[[], bool] | None = None,
) -> Pipeline:
    """The pipeline with its API attached, ready to run (``rules``: from settings if None)."""
    pipeline = Pipeline(settings, rules)
    register_api(pipeline, broker_ok)
    return pipeline


def run(settings: WorkerSettings, rules: Rules) -> None:
    """Create the topics if missing, then run the worker until it is stopped.

    Logs are JSON lines (omnistitch.logs); the worker's own groups' lag is read from the
    broker on a thread of its own and served at ``/metrics`` with the stage counters. The
    ingest stage runs on a thread too (pipeline/ingest.py), unless ``ingest_in_worker`` is
    off and ``omnistitch ingest`` runs it; faust runs the others.
    """
    # JSON lines from the first record on: the lag monitor's and ingest's threads start
    # before faust's worker applies the same configuration, and a warning logged in between
    # went to Python's last-resort handler as a bare line (a broker still electing leaders
    # of the topics just created: "no offsets for 4 partitions ...").
    setup_logging(settings.log_level)
    prepare(settings.state_dir)  # local state is trusted only after a clean stop
    # before faust creates its consumer
    limit_fetch_backoff(settings.fetch_backoff_s, settings.fetch_max_wait_s)
    monitor = own_lag_monitor(settings)
    pipeline = build(settings, rules, broker_ok=monitor.healthy)
    instrument(pipeline, monitor)
    ensure_topics(settings, extra=pipeline.internal_topics())
    monitor.start()
    pipeline.warm()  # the table writers' producer connects before the first batch
    ingest = Ingest(settings, pipeline.rules)
    if settings.ingest_in_worker:  # else `omnistitch ingest` runs it (ingest_process.py)
        ingest.start()
    tune(settings.gc_gen0_threshold)
    time_collections(m.gc_spent)
    trimmer = None
    if settings.heap_trim_interval_s:
        trimmer = HeapTrimmer(settings.heap_trim_interval_s, m.heap_trimmed)
        trimmer.start()
    worker = faust.Worker(
        pipeline.app,
        loglevel=settings.log_level,
        logging_config=logging_config(settings.log_level),
        quiet=True,  # no banner on stdout: every line of output is a JSON log record
    )
    # faust's progress spinner, at WARNING and above, sets the root logger to DEBUG so it
    # can spin on every record: every debug call in faust and aiokafka then builds a
    # record (~5% of a busy worker's time, measured with py-spy) that nothing prints.
    worker.spinner = None
    freeze_startup_heap()
    clean = False
    try:
        worker.execute_from_commandline()
        clean = True
    except SystemExit as exc:
        clean = exc.code in (0, None)
        raise
    finally:
        ingest.stop()
        monitor.stop()
        if trimmer is not None:
            trimmer.stop()
        if clean and not pipeline.close_writers():
            log.warning(
                "local state holds rows not yet in their changelogs: the next start "
                "recovers every table from the changelogs"
            )
            clean = False
        if clean:
            mark_clean(settings.state_dir)
