"""Observability against the real broker: a real Prometheus server scraping a worker and
the lag exporter, and the processes' JSON logs free of personal data.

The Prometheus server binary comes from ``make system-deps``; a missing binary fails the
test (it never skips).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import httpx
import pytest
import yaml
from segment.analytics import Client as SegmentClient

from tests.conftest import free_port
from tests.connector_support import sample_value
from tests.integration.test_worker_kafka import publish, publish_events, raw
from tests.processes import Process, http_json, wait_for

Targets = dict[str, list[str]]


class Prometheus:
    """A Prometheus server on a free loopback port, scraping ``targets`` every second."""

    def __init__(self, tmp_path: Path, targets: Targets) -> None:
        exe = shutil.which("prometheus")
        if exe is None:
            pytest.fail("the prometheus binary is missing: run `make system-deps`", pytrace=False)
        self.url = f"http://127.0.0.1:{free_port()}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": hosts}]}
                for job, hosts in targets.items()
            ],
        }
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.log = tmp_path / "prometheus.log"
        self.proc = subprocess.Popen(
            [
                exe,
                f"--config.file={path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
                "--log.level=warn",
            ],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def ready(self) -> bool | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200 or None
        except httpx.TransportError:
            return None

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query through the HTTP API: ``[(labels, value)]``."""
        resp = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        resp.raise_for_status()
        body = resp.json()
        assert body["status"] == "success", body
        return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return result[0][1] if result else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def lag_stack(worker_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """Worker settings reading lag every second, and a running lag exporter for its group."""
    env = {**worker_env, "OMNISTITCH_LAG_INTERVAL_S": "1"}
    exporter_env = {
        **{k: v for k, v in env.items() if k != "OMNISTITCH_API_PORT"},
        "OMNISTITCH_LAG_EXPORTER_PORT": str(free_port()),
    }
    exporter = Process("lag-exporter", exporter_env, tmp_path / "exporter.log").start()
    url = f"http://127.0.0.1:{exporter_env['OMNISTITCH_LAG_EXPORTER_PORT']}"
    try:
        wait_for("the lag exporter ready", lambda: http_json(f"{url}/readyz"), 60, exporter)
        yield env, url.removeprefix("http://")
    finally:
        exporter.stop()


def sample(url: str, name: str, **labels: str) -> float | None:
    """A sample of the process serving ``url`` (None: absent or unreachable)."""
    try:
        return sample_value(httpx.get(url, timeout=5).text, name, **labels)
    except httpx.HTTPError:
        return None


def test_prometheus_sees_lag_rise_while_the_worker_is_down_and_drain_after(
    lag_stack: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    env, exporter = lag_stack
    worker_target = f"127.0.0.1:{env['OMNISTITCH_API_PORT']}"
    topic = env["OMNISTITCH_TOPIC_PREFIX"] + "raw.events"
    # The workers' two groups: the ingest stage's reads raw.events, faust's the rest.
    groups = f"{env['OMNISTITCH_APP_ID']}|{env['OMNISTITCH_APP_ID']}-ingest"
    log = tmp_path / "worker.log"
    prom = Prometheus(tmp_path, {"worker": [worker_target], "exporter": [exporter]})
    worker = Process("worker", env, log).start()

    def lag(job: str, only: str | None) -> float | None:
        """The groups' lag, on one topic or (``None``) on every topic they read."""
        sel = f'job="{job}",group=~"{groups}"' + (f',topic="{only}"' if only else "")
        return prom.scalar(f"sum(omnistitch_consumer_lag_records{{{sel}}})")

    def equals(value: float, *jobs: str, only: str | None = None) -> bool | None:
        return all(lag(job, only) == value for job in jobs) or None

    try:
        wait_for("prometheus ready", prom.ready, 30)
        wait_for("worker ready", lambda: http_json(f"http://{worker_target}/readyz"), 90, worker)
        # The lag series appear from both the worker and the exporter, one per partition.
        per_job = f'count by (job) (omnistitch_consumer_lag_records{{topic="{topic}"}})'
        wait_for(
            "lag series from both jobs",
            lambda: (
                {m["job"]: v for m, v in prom.query(per_job)} == {"worker": 8, "exporter": 8}
                or None
            ),
            30,
            worker,
        )
        publish_events(env, [raw(f"warm{i}", i, ("anonymous_id", f"w{i}")) for i in range(3)])
        # taken first (lag was 0 before they existed too), then the lag seen back at 0
        warm = partial(sample, f"http://{worker_target}/metrics", "omnistitch_stage_messages_total")
        wait_for("warm-up taken", lambda: warm(stage="ingest") == 3 or None, 60, worker)
        wait_for("lag 0 after warm-up", lambda: equals(0, "worker", "exporter"), 60, worker)

        # The worker stops; events keep arriving: the exporter shows the lag rising.
        assert worker.stop() == 0
        publish_events(env, [raw(f"late{i}", i, ("anonymous_id", f"l{i}")) for i in range(20)])
        wait_for("lag 20 while down", lambda: equals(20, "exporter", only=topic), 30)
        assert prom.scalar('up{job="worker"}') == 0
        seconds = prom.scalar(
            f'max(omnistitch_consumer_lag_seconds{{job="exporter",topic="{topic}"}})'
        )
        assert seconds is not None
        assert seconds > 0

        # It comes back and drains the lag to 0, which both jobs report.
        worker = Process("worker", env, log).start()
        wait_for("lag back to 0", lambda: equals(0, "worker", "exporter"), 90, worker)
        peak = prom.scalar(
            f'max(max_over_time(omnistitch_consumer_lag_records{{job="exporter",topic="{topic}"}}[5m]))'
        )
        assert peak is not None
        assert peak > 0
        # What the restarted worker did is visible too: 20 web events in, with latencies.
        wait_for(
            "events in, views out",
            lambda: (
                (prom.scalar('sum(omnistitch_events_out_total{job="worker",channel="web"})') or 0)
                >= 20
                or None
            ),
            30,
            worker,
        )
        assert prom.scalar('sum(omnistitch_events_in_total{job="worker",channel="web"})') == 20
        e2e = prom.scalar('sum(omnistitch_end_to_end_latency_seconds_count{job="worker"})')
        assert e2e is not None
        assert e2e >= 20  # at least once: a view may be published twice
        assert prom.scalar('omnistitch_worker_ready{job="worker"}') == 1
        assert (prom.scalar('omnistitch_rebalances_total{job="worker"}') or 0) >= 1
        assert (prom.scalar('omnistitch_state_size_bytes{job="worker"}') or 0) > 0
    finally:
        worker.stop()
        prom.stop()


EMAIL = "Rosa.Diaz@Example.com"
PHONE = "(415) 555-0142"
PII = ("rosa.diaz@example.com", "rosa.diaz%40example.com", "5550142", "555-0142", "+14155550142")


def test_logs_are_json_lines_without_personal_data(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    key = "logs-write-key"
    env = {
        **worker_env,
        "OMNISTITCH_WRITE_KEYS": key,
        "OMNISTITCH_COLLECTOR_PORT": str(free_port()),
    }
    collector_url = f"http://127.0.0.1:{env['OMNISTITCH_COLLECTOR_PORT']}"
    api = f"http://127.0.0.1:{env['OMNISTITCH_API_PORT']}"
    logs = {"collector": tmp_path / "collector.log", "worker": tmp_path / "worker.log"}
    collector = Process("collector", env, logs["collector"]).start()
    worker = Process("worker", env, logs["worker"]).start()
    try:
        wait_for("collector ready", lambda: http_json(f"{collector_url}/readyz"), 60, collector)
        client = SegmentClient(key, host=collector_url, sync_mode=True, max_retries=0)
        client.identify(anonymous_id="tablet-9", traits={"email": EMAIL, "phone": PHONE})
        client.track(anonymous_id="kiosk-3", event="Visited")
        # A request the collector rejects, carrying the email in its body.
        bad = httpx.post(
            f"{collector_url}/v1/identify", auth=(key, ""), json={"traits": {"email": EMAIL}}
        )
        assert bad.status_code == 400
        lookup = f"{api}/v1/customers?identifier=email:{EMAIL.replace('@', '%40')}"
        for url in (lookup, f"{api}/v1/customers?identifier=anonymous_id:kiosk-3"):
            wait_for(f"customer {url}", partial(http_json, url), 90, worker)
        # An event joining the two customers: a merge, logged with its ids.
        publish_events(env, [raw("join-1", 1, ("anonymous_id", "kiosk-3"), ("email", EMAIL))])
        # Not an event (no channel): dead-lettered, its validation error logged.
        invalid = {"event_id": "bad-1", "identifiers": [{"type": "phone", "value": PHONE}]}
        publish(env, [(b"k", json.dumps(invalid).encode())])

        def merged() -> dict[str, object] | None:
            body = http_json(lookup)
            return body if body is not None and body.get("merged_from") else None

        customer = wait_for("the merged customer", merged, 90, worker)
        letters = partial(sample, f"{api}/metrics", "omnistitch_dead_letters_total")
        wait_for(
            "the dead letter",
            lambda: letters(stage="ingest", reason="invalid_event") == 1 or None,
            60,
            worker,
        )
        wait_for(
            "the merge in the log",
            lambda: "merge " in logs["worker"].read_text() or None,
            30,
            worker,
        )
    finally:
        collector.stop()
        worker.stop()

    for name, path in logs.items():
        lines = path.read_text().splitlines()
        assert lines, f"{name} wrote no log"
        records = []
        for line in lines:
            record = json.loads(line)  # every line is one JSON object
            assert {"time", "level", "logger", "message"} <= set(record), line
            assert datetime.fromisoformat(record["time"]).tzinfo == UTC
            records.append(record)
        text = path.read_text().lower()
        leaked = [value for value in PII if value.lower() in text]
        assert leaked == [], f"{name} log shows personal data"
    merges = [
        r
        for r in map(json.loads, logs["worker"].read_text().splitlines())
        if r["message"].startswith("merge ")
    ]
    assert merges[0]["event_id"] == "join-1"
    assert merges[0]["customer_id"] == customer["customer_id"]
    access = [json.loads(line) for line in logs["collector"].read_text().splitlines()]
    assert any(r["logger"] == "uvicorn.access" for r in access)
