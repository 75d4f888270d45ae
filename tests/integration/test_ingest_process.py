"""``omnistitch ingest`` beside a worker that runs no ingest thread
(``OMNISTITCH_INGEST_IN_WORKER=false``), on the real broker: the events are stitched and
published as with the thread, the ingest counters and dead letters are the ingest
process's, and it stops cleanly on SIGTERM."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.integration.test_worker_kafka import customer_by, metrics, publish, publish_events, raw
from tests.processes import Process, wait_for

INGESTED = 'omnistitch_stage_messages_total{stage="ingest"}'


def test_a_worker_without_its_ingest_thread_stitches_what_the_ingest_process_takes(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    ingest_env = {**worker_env, "OMNISTITCH_API_PORT": str(free_port())}
    worker_only = {**worker_env, "OMNISTITCH_INGEST_IN_WORKER": "false"}
    worker = Process("worker", worker_only, tmp_path / "worker.log").start()
    ingest = Process("ingest", ingest_env, tmp_path / "ingest.log").start()
    try:
        publish_events(
            worker_env,
            [
                raw("e1", 0, ("anonymous_id", "tablet")),
                raw("e2", 1, ("anonymous_id", "tablet"), ("email", "ana@example.com")),
            ],
        )
        publish(worker_env, [(b"k", b"{not json")])
        ctx = customer_by(worker_env, "email:ana@example.com", worker, 2)
        assert [e.event_id for e in ctx.timeline] == ["e2", "e1"]

        def ingested() -> str | None:
            text = httpx.get(f"http://127.0.0.1:{ingest_env['OMNISTITCH_API_PORT']}/metrics").text
            return text if f"{INGESTED} 3.0" in text else None

        served = wait_for("the ingest process's counters", ingested, 30, ingest)
        assert 'omnistitch_dead_letters_total{reason="invalid_event",stage="ingest"} 1.0' in served
        assert f"{INGESTED} 0.0" in metrics(worker_env)  # the worker took none itself
        assert worker.alive()
        assert ingest.stop() == 0
        assert "ingest stopped" in ingest.log_tail()
    finally:
        ingest.stop()
        worker.stop()
