"""deploy/local/kafka.sh warns before the broker's data directory outgrows the fd limit."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

LAUNCHER = Path(__file__).resolve().parents[2] / "deploy" / "local" / "kafka.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status(home: Path, open_files: int) -> subprocess.CompletedProcess[str]:
    port = _free_port()
    return subprocess.run(
        ["bash", "-c", f'ulimit -n {open_files} && exec "{LAUNCHER}" status'],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "OMNISTITCH_KAFKA_HOME": str(home),
            "OMNISTITCH_KAFKA_PORT": str(port),
        },
        capture_output=True,
        text=True,
        timeout=30,
    )


def partitions(home: Path, n: int) -> None:
    for i in range(n):
        (home / "data" / f"bench{i}.raw.events-{i % 8}").mkdir(parents=True)


def test_a_data_directory_near_the_open_file_limit_is_reported(tmp_path: Path) -> None:
    partitions(tmp_path, 40)
    result = status(tmp_path, open_files=128)
    assert result.returncode == 3  # not running
    assert "40 partition directories" in result.stderr
    assert "Too many open files" in result.stderr
    assert "reset" in result.stderr


def test_a_small_data_directory_is_not(tmp_path: Path) -> None:
    partitions(tmp_path, 10)
    result = status(tmp_path, open_files=128)
    assert result.returncode == 3
    assert "partition directories" not in result.stderr
