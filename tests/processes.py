"""Run omnistitch's real processes (worker, collector) from tests, and wait on them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import httpx

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


class Process:
    """An ``omnistitch <command>`` child process whose output goes to a log file."""

    def __init__(self, command: str, env: Mapping[str, str], log_path: Path) -> None:
        self.command = command
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "omnistitch", *self.command.split()],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the process (SIGTERM: graceful; SIGKILL: crash) and wait for it to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def stacks(self) -> str:
        """Every thread's Python stack, for a failure that may be a hang (py-spy, a dev
        dependency; its own error if it cannot attach)."""
        if not self.alive():
            return "(not running)"
        assert self.proc is not None
        spy = Path(sys.executable).with_name("py-spy")
        try:
            done = subprocess.run(
                [str(spy), "dump", "--pid", str(self.proc.pid)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"(py-spy: {exc})"
        return done.stdout + done.stderr

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float, proc: Process | None = None
) -> T:
    """Poll ``probe`` until it returns a value; fail with the process log on timeout or exit."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if proc is not None and not proc.alive():
            raise AssertionError(
                f"{proc.command} exited while waiting for {what}:\n{proc.log_tail()}"
            )
        if time.monotonic() > deadline:
            tail = proc.log_tail() if proc is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")
        time.sleep(0.25)


def http_json(url: str, expect: int = 200) -> dict[str, object] | None:
    """GET ``url``; its JSON body if the status is ``expect``, else None (also when refused)."""
    try:
        resp = httpx.get(url, timeout=5.0)
    except httpx.TransportError:
        return None
    if resp.status_code != expect:
        return None
    body: dict[str, object] = resp.json()
    return body
