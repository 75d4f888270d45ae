"""``omnistitch demo``: the whole slice on one machine, from a cold start.

Starts the local broker, a worker and the collector; replays a bundled omnichannel journey
through the collector over HTTP (as an analytics client would); waits until the pipeline
has stitched it into one customer; prints that customer and the URL of its view.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from omnistitch.cli import KAFKA_LAUNCHER, REPO

WRITE_KEY = "demo-write-key"
LOOKUP = "email:dana.reyes@example.com"


class DemoError(RuntimeError):
    pass


def _step(n: int, total: int, text: str) -> float:
    print(f"[{n}/{total}] {text} ...", end=" ", flush=True)
    return time.monotonic()


def _done(started: float, extra: str = "") -> None:
    print(f"ok ({time.monotonic() - started:.1f}s){' ' + extra if extra else ''}", flush=True)


def _wait(what: str, probe: Callable[[], Any], timeout: float, procs: list[_Child]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in procs:
            if child.proc.poll() is not None:
                raise DemoError(f"{child.name} exited; see {child.log}")
        value = probe()
        if value:
            return value
        time.sleep(0.3)
    raise DemoError(f"timed out waiting for {what}")


class _Child:
    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "omnistitch", name],
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def _get(url: str, **kw: Any) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5.0, **kw)
    except httpx.TransportError:
        return None


def _ready(url: str) -> bool:
    resp = _get(url)
    return resp is not None and resp.status_code == 200


def sample_journey() -> list[dict[str, Any]]:
    """The bundled sample: two devices, a web chat, one person."""
    text = resources.files("omnistitch").joinpath("sample/journey.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def run_demo(keep_running: bool = True) -> int:
    """Run the demo; return the process exit code."""
    env = dict(os.environ)
    env.setdefault("OMNISTITCH_TOPIC_PREFIX", "demo.")
    env.setdefault("OMNISTITCH_APP_ID", "omnistitch-demo")
    env.setdefault("OMNISTITCH_STATE_DIR", str(REPO / "var" / "demo" / "state"))
    env.setdefault("OMNISTITCH_WRITE_KEYS", WRITE_KEY)
    env.setdefault("OMNISTITCH_API_PORT", "6066")
    env.setdefault("OMNISTITCH_COLLECTOR_PORT", "8088")
    logs = Path(env["OMNISTITCH_STATE_DIR"]).parent
    logs.mkdir(parents=True, exist_ok=True)
    api = f"http://127.0.0.1:{env['OMNISTITCH_API_PORT']}"
    collector = f"http://127.0.0.1:{env['OMNISTITCH_COLLECTOR_PORT']}"
    write_key = env["OMNISTITCH_WRITE_KEYS"].split(",")[0].strip()
    children: list[_Child] = []
    try:
        t = _step(1, 5, "starting the Kafka broker (first run fetches its jars)")
        started = subprocess.run(
            [str(KAFKA_LAUNCHER), "start"], env=env, capture_output=True, text=True, check=False
        )
        if started.returncode != 0:
            raise DemoError("the broker did not start:\n" + started.stderr)
        bootstrap = started.stdout.strip().splitlines()[-1]
        env["OMNISTITCH_BOOTSTRAP_SERVERS"] = bootstrap
        _done(t, bootstrap)

        t = _step(2, 5, "starting a worker and the tracking collector")
        children = [_Child(n, env, logs / f"{n}.log") for n in ("worker", "collector")]
        _wait("the collector", lambda: _ready(f"{collector}/readyz"), 60, children)
        _wait("the worker", lambda: _ready(f"{api}/readyz"), 120, children)
        _done(t, f"logs in {logs}")

        journey = sample_journey()
        t = _step(3, 5, f"replaying {len(journey)} events through the collector over HTTP")
        for session in ("demo-a-page", "demo-a-", "demo-b-"):
            batch = [m for m in journey if m["messageId"].startswith(session)]
            journey = [m for m in journey if m not in batch]
            resp = httpx.post(
                f"{collector}/v1/batch", json={"batch": batch}, auth=(write_key, ""), timeout=30
            )
            if resp.status_code != 200:
                raise DemoError(f"collector answered {resp.status_code}: {resp.text}")
        _done(t)

        t = _step(4, 5, "waiting for the pipeline to stitch the journey")
        total = len(sample_journey())

        def stitched() -> dict[str, Any] | None:
            resp = _get(f"{api}/v1/customers", params={"identifier": LOOKUP})
            if resp is None or resp.status_code != 200:
                return None
            body: dict[str, Any] = resp.json()
            return body if len(body["timeline"]) >= total else None

        customer = _wait("the stitched customer", stitched, 120, children)
        _done(t)

        _step(5, 5, "the stitched customer")
        print()
        _print_customer(customer, api)
        if keep_running:
            print("\nThe stack stays up; press Ctrl-C to stop it.", flush=True)
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    except DemoError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for child in children:
            child.stop()


def _print_customer(c: dict[str, Any], api: str) -> None:
    ids = ", ".join(f"{i['type']}:{i['value']}" for i in c["identifiers"])
    traits = ", ".join(f"{k}={v['value']!r}" for k, v in sorted(c["traits"].items()))
    print(f"  customer   {c['customer_id']}")
    print(f"  merged     {', '.join(c['merged_from']) or '-'}")
    print(f"  identifiers {ids}")
    print(f"  traits     {traits}")
    print(f"  channels   {c['channel_counts']}")
    print("  timeline (newest first):")
    for e in c["timeline"]:
        detail = e["properties"].get("text") or e["properties"].get("path") or ""
        label = e["name"] or e["kind"]
        print(f"    {e['occurred_at']}  {e['channel']:<4} {e['kind']:<8} {label}  {detail}")
    print(f"\n  view:  {api}/v1/customers/{c['customer_id']}")
    print(f"  by id: {api}/v1/customers?identifier={LOOKUP}")
