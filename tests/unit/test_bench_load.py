"""The bench's CPU probe: the cores a process used, and the broker found by its port."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from omnistitch.bench_load import CpuProbe, broker_pids, this_process


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_busy_process_counts_about_a_core_and_an_idle_one_none() -> None:
    with subprocess.Popen(["sleep", "30"]) as sleeper:
        probe = CpuProbe({"worker": this_process(), "broker": [], "idle": [sleeper.pid]})
        probe.start()
        _spin(0.3)
        shares = probe.stop(events=1_000)
        sleeper.kill()
    worker = shares.processes["worker"]
    assert worker is not None
    assert 0.5 < worker <= 1.05
    assert shares.processes["broker"] is None  # not on this machine: unknown, not 0
    idle = shares.processes["idle"]
    assert idle is not None
    assert idle < 0.2
    assert shares.machine_busy >= worker * 0.9  # this process is part of the machine
    assert 0 <= shares.steal <= shares.cpus
    assert shares.worker_us_per_event == pytest.approx(worker * shares.seconds / 1_000 * 1e6)
    assert "broker n/a" in shares.summary()
    assert f"of {shares.cpus} cores" in shares.summary()


def test_a_process_gone_before_the_end_counts_nothing() -> None:
    probe = CpuProbe({"worker": [2**22 + 12345]})  # above pid_max's default: never a pid
    probe.start()
    shares = probe.stop(events=10)
    assert shares.processes["worker"] == 0.0
    assert shares.worker_us_per_event == 0.0


def test_the_broker_is_whoever_listens_on_a_local_bootstrap_port() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert broker_pids(f"127.0.0.1:{port}") == [os.getpid()]
        assert broker_pids(f"localhost:{port}") == [os.getpid()]
        assert broker_pids(f"kafka-0.example.com:9092,127.0.0.1:{port}") == [os.getpid()]
        # A remote host's port is not ours, even when a local socket has the same number.
        assert broker_pids(f"kafka-0.example.com:{port}") == []
        assert broker_pids(f"10.1.2.3:{port}") == []
    assert broker_pids("127.0.0.1:notaport") == []
