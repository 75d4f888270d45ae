"""``omnistitch connector ...`` as platform teams run it: discovery, start-up failures on
bad configuration, secrets that never reach a log, and the SMTP connector's process."""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from connectors.meta import webhook
from omnistitch.settings import KafkaSettings
from omnistitch.topics import RAW_EVENTS, ensure_topics
from tests.conftest import free_port
from tests.connector_support import consume
from tests.processes import REPO, Process, http_json, wait_for

NAMES = ["cti", "email", "meta", "twilio", "webchat"]
META_SECRET = "meta-app-secret-SHOULD-NOT-LEAK-1"
META_TOKEN = "meta-verify-token-SHOULD-NOT-LEAK-2"
TWILIO_TOKEN = "twilio-token-SHOULD-NOT-LEAK-3"


def omnistitch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OMNISTITCH_")}
    return subprocess.run(
        [sys.executable, "-m", "omnistitch", *args],
        cwd=REPO,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_connector_list_names_every_installed_connector() -> None:
    proc = omnistitch("connector", "list")
    assert proc.returncode == 0, proc.stderr
    listed = [line.split("\t")[0] for line in proc.stdout.splitlines()]
    assert listed == NAMES


@pytest.mark.parametrize(
    ("name", "env", "variable"),
    [
        ("twilio", {}, "OMNISTITCH_TWILIO_AUTH_TOKEN: Field required"),
        ("webchat", {"OMNISTITCH_CHAT_HMAC_SECRET": "too-short"}, "OMNISTITCH_CHAT_HMAC_SECRET"),
        (
            "meta",
            {"OMNISTITCH_META_APP_SECRET": "x"},
            "OMNISTITCH_META_VERIFY_TOKEN: Field required",
        ),
        ("cti", {}, "OMNISTITCH_CTI_SIGNING_SECRET: Field required"),
        ("email", {"OMNISTITCH_EMAIL_PORT": "smtp"}, "OMNISTITCH_EMAIL_PORT"),
        (
            "twilio",
            {"OMNISTITCH_TWILIO_AUTH_TOKEN": "t", "OMNISTITCH_BOOTSTRAP_SERVERS": "nope"},
            "OMNISTITCH_BOOTSTRAP_SERVERS",
        ),
        ("sms-gateway", {}, "no connector named 'sms-gateway'"),
    ],
)
def test_bad_configuration_exits_2_naming_the_variable(
    name: str, env: dict[str, str], variable: str
) -> None:
    proc = omnistitch("connector", "run", name, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert variable in proc.stderr
    assert "too-short" not in proc.stderr  # the value of a secret is never echoed


def test_env_file_configures_a_connector(tmp_path: Path) -> None:
    env_file = tmp_path / "cti.env"
    env_file.write_text("OMNISTITCH_CTI_SIGNATURE_TOLERANCE_S=0\n")  # invalid: must be > 0
    proc = omnistitch("connector", "run", "cti", "--env-file", str(env_file))
    assert proc.returncode == 2
    assert "OMNISTITCH_CTI_SIGNATURE_TOLERANCE_S" in proc.stderr
    assert "OMNISTITCH_CTI_SIGNING_SECRET: Field required" in proc.stderr


def test_secrets_never_reach_a_log(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    env = {
        "OMNISTITCH_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "OMNISTITCH_TOPIC_PREFIX": unique_prefix,
        "OMNISTITCH_LOG_LEVEL": "DEBUG",
        "OMNISTITCH_META_APP_SECRET": META_SECRET,
        "OMNISTITCH_META_VERIFY_TOKEN": META_TOKEN,
        "OMNISTITCH_META_PORT": str(free_port()),
        "OMNISTITCH_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "OMNISTITCH_TWILIO_PORT": str(free_port()),
    }
    meta_url = f"http://127.0.0.1:{env['OMNISTITCH_META_PORT']}"
    twilio_url = f"http://127.0.0.1:{env['OMNISTITCH_TWILIO_PORT']}"
    meta = Process("connector run meta", env, tmp_path / "meta.log").start()
    twilio = Process("connector run twilio", env, tmp_path / "twilio.log").start()
    try:
        wait_for("meta ready", lambda: http_json(f"{meta_url}/readyz"), 60, meta)
        wait_for("twilio ready", lambda: http_json(f"{twilio_url}/readyz"), 60, twilio)
        # The verify token travels in the query string: the riskiest place for a log.
        handshake = {"hub.mode": "subscribe", "hub.verify_token": META_TOKEN, "hub.challenge": "7"}
        assert httpx.get(f"{meta_url}/meta/webhook", params=handshake).text == "7"
        wrong = {**handshake, "hub.verify_token": META_TOKEN[:-1]}
        assert httpx.get(f"{meta_url}/meta/webhook", params=wrong).status_code == 403
        body = json.dumps({"object": "page", "entry": []}).encode()
        for signature in (webhook.sign(META_SECRET, body), "sha256=00"):
            httpx.post(
                f"{meta_url}/meta/webhook",
                content=body,
                headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
            )
        params = {"MessageSid": "SMlog", "From": "+14155550100", "To": "+18005550000", "Body": "hi"}
        url = f"{twilio_url}/twilio/sms"
        for token in (TWILIO_TOKEN, "forger"):
            signature = RequestValidator(token).compute_signature(url, params)
            httpx.post(
                url,
                content=urlencode(params),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": signature,
                },
            )
        metrics = httpx.get(f"{meta_url}/metrics").text
        assert 'omnistitch_connector_signature_failures_total{connector="meta"} 2.0' in metrics
    finally:
        meta.stop()
        twilio.stop()
    logs = meta.log_path.read_text() + twilio.log_path.read_text()
    assert "hub.verify_token does not match" in logs  # the refusals were logged ...
    assert "X-Twilio-Signature does not match" in logs
    for secret in (META_SECRET, META_TOKEN, TWILIO_TOKEN):  # ... without the secrets
        assert secret not in logs


def test_email_connector_process(kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique_prefix)
    ensure_topics(kafka)
    env = {
        "OMNISTITCH_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "OMNISTITCH_TOPIC_PREFIX": unique_prefix,
        "OMNISTITCH_EMAIL_PORT": str(free_port()),
        "OMNISTITCH_EMAIL_HTTP_PORT": str(free_port()),
        "OMNISTITCH_EMAIL_DOMAINS": "shop.example",
    }
    ops = f"http://127.0.0.1:{env['OMNISTITCH_EMAIL_HTTP_PORT']}"
    email = Process("connector run email", env, tmp_path / "email.log").start()
    try:
        wait_for("email ready", lambda: http_json(f"{ops}/readyz"), 60, email)
        msg = EmailMessage()
        msg["From"] = "lee@example.com"
        msg["To"] = "help@shop.example"
        msg["Subject"] = "Hello"
        msg["Message-ID"] = "<proc-1@example.com>"
        msg.set_content("Hi there")
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", int(env["OMNISTITCH_EMAIL_PORT"]), timeout=30) as smtp:
            assert smtp.send_message(msg) == {}
        assert time.monotonic() - started < 20
        metrics = httpx.get(f"{ops}/metrics").text
        assert (
            'omnistitch_connector_events_accepted_total{connector="email",kind="message"} 1.0'
            in metrics
        )
    finally:
        assert email.stop() == 0
    [record] = consume(kafka.bootstrap_servers, kafka.topic(RAW_EVENTS), 1)
    assert record.event.event_id == "email:proc-1@example.com"
