"""The whole slice as a user runs it: an analytics client, the collector, a worker, the API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from segment.analytics import Client as SegmentClient

from schemas.context import CustomerContext
from tests.conftest import free_port
from tests.processes import REPO, Process, http_json, wait_for

KEY = "e2e-write-key"


def test_segment_client_to_stitched_customer(worker_env: dict[str, str], tmp_path: Path) -> None:
    env = {
        **worker_env,
        "OMNISTITCH_WRITE_KEYS": KEY,
        "OMNISTITCH_COLLECTOR_PORT": str(free_port()),
    }
    collector_url = f"http://127.0.0.1:{env['OMNISTITCH_COLLECTOR_PORT']}"
    api = f"http://127.0.0.1:{env['OMNISTITCH_API_PORT']}"
    collector = Process("collector", env, tmp_path / "collector.log").start()
    worker = Process("worker", env, tmp_path / "worker.log").start()
    try:
        wait_for("collector ready", lambda: http_json(f"{collector_url}/readyz"), 60, collector)
        errors: list[object] = []
        client = SegmentClient(
            KEY,
            host=collector_url,
            sync_mode=True,
            max_retries=0,
            on_error=lambda exc, batch: errors.append(exc),
        )
        # Laptop: anonymous browsing, then an email given in chat.
        client.page(anonymous_id="laptop-1", name="Shoes", properties={"path": "/shoes"})
        client.identify(anonymous_id="laptop-1", traits={"email": "Kim@Example.com"})
        # Phone, a week later: another anonymous id, then a login with the same email.
        client.track(anonymous_id="phone-1", event="App Opened")
        client.identify(
            user_id="u-88",
            anonymous_id="phone-1",
            traits={"email": "kim@example.com", "phone": "415-555-0188"},
        )
        assert errors == []

        def stitched() -> CustomerContext | None:
            body = http_json(f"{api}/v1/customers?identifier=phone:%2B14155550188")
            ctx = None if body is None else CustomerContext.model_validate(body)
            return ctx if ctx is not None and len(ctx.timeline) == 4 else None

        customer = wait_for("the stitched customer", stitched, 90, worker)
        keys = {i.key for i in customer.identifiers}
        assert keys == {
            "anonymous_id:laptop-1",
            "anonymous_id:phone-1",
            "email:kim@example.com",
            "phone:+14155550188",
            "user_id:u-88",
        }
        assert [e.kind for e in customer.timeline] == ["identify", "track", "identify", "page"]
        assert customer.traits["email"].value == "kim@example.com"
        # Every identifier, in any spelling, finds the same customer.
        for lookup in ("email:KIM@example.com", "user_id:u-88", "anonymous_id:laptop-1"):
            found = http_json(f"{api}/v1/customers?identifier={lookup}")
            assert found is not None
            assert found["customer_id"] == customer.customer_id
        by_id = http_json(f"{api}/v1/customers/{customer.customer_id}")
        assert by_id is not None
        assert CustomerContext.model_validate(by_id) == customer
        # Unknown and malformed look-ups are clear errors.
        assert http_json(f"{api}/v1/customers?identifier=email:nobody@example.com", 404)
        bad = http_json(f"{api}/v1/customers?identifier=nonsense", 400)
        assert bad is not None
        assert bad["field"] == "identifier"
        assert http_json(f"{api}/v1/customers/cus_doesnotexist", 404)
    finally:
        collector.stop()
        worker.stop()


def test_demo_runs_end_to_end(
    broker_env: dict[str, str], unique_prefix: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **broker_env,
        "OMNISTITCH_TOPIC_PREFIX": unique_prefix,
        "OMNISTITCH_APP_ID": unique_prefix.rstrip(".") + "-demo",
        "OMNISTITCH_STATE_DIR": str(tmp_path / "state"),
        "OMNISTITCH_API_PORT": str(free_port()),
        "OMNISTITCH_COLLECTOR_PORT": str(free_port()),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "omnistitch", "demo", "--no-keep-running"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[5/5] the stitched customer" in proc.stdout
    assert "email:dana.reyes@example.com" in proc.stdout
    assert "user_id:user-5512" in proc.stdout
    assert "Do the Trail Runner 2 come in wide sizes?" in proc.stdout
