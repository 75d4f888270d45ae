"""``omnistitch ingest``: the ingest stage as a process of its own.

The ingest stage keeps no state (raw events in, resolve requests out, its own consumer
group, ``pipeline/ingest.py``), so it can run apart from the workers: each worker then
runs with ``OMNISTITCH_INGEST_IN_WORKER=false`` and gives its one interpreter lock to the
faust stages alone, and ingest processes scale with the raw topic's partitions instead
of with the workers. The process serves its metrics (the ingest stage's counters, the
same names a worker serves) at ``/metrics`` on ``OMNISTITCH_API_PORT``, and stops on
SIGTERM or SIGINT after the batch in hand (flushed and committed).
"""

from __future__ import annotations

import logging
import signal
import threading

from prometheus_client import start_http_server

from omnistitch.logs import setup_logging
from omnistitch.settings import WorkerSettings
from omnistitch.topics import TopicSpec, ensure_topics
from pipeline.gc_policy import freeze_startup_heap, tune
from pipeline.ingest import Ingest
from pipeline.rules import Rules

log = logging.getLogger(__name__)


def run(settings: WorkerSettings, rules: Rules) -> None:
    """Create the topics if missing, serve the metrics, run the stage until signalled.

    The identity log ingest writes to is created as the worker creates it, with the
    workers' partition count (a broker's auto-creation would give it one partition)."""
    setup_logging(settings.log_level)
    ingest = Ingest(settings, rules)
    ensure_topics(settings, extra=[TopicSpec(ingest.requests_topic, settings.raw_partitions)])
    server, _thread = start_http_server(settings.api_port, addr=settings.api_host)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    tune(settings.gc_gen0_threshold)  # as a worker does (pipeline/gc_policy.py)
    freeze_startup_heap()
    ingest.start()
    log.info("ingest running; metrics on %s:%d", settings.api_host, settings.api_port)
    stop.wait()
    ingest.stop()
    server.shutdown()
    log.info("ingest stopped")
