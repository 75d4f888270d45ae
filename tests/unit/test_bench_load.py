"""The bench's CPU probe: the cores a process used, and the broker found by its port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omnistitch.bench import (
    BenchReport,
    PipelineFigures,
    ScalingRound,
    broker_note,
    py_spy_command,
    scaling_note,
)
from omnistitch.bench_load import (
    CpuProbe,
    CpuShares,
    MainThread,
    broker_pids,
    jvm_cores,
    machine_room,
    this_process,
)
from omnistitch.cli import cli


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
    # This process's main thread did the spinning; the sleeper's slept.
    main, sleeping = shares.main_threads["worker"], shares.main_threads["idle"]
    assert main is not None
    assert sleeping is not None
    assert 0.5 < main.running <= 1.05
    assert 0 <= main.waiting < 0.5
    assert sleeping.running < 0.2
    assert shares.main_threads["broker"] is None


SPIN = "import time\nwhile True: pass"


def test_a_main_thread_sharing_one_cpu_with_two_spinners_waits_for_it() -> None:
    """Three spinning processes on one CPU: each runs about a third of the time and waits,
    runnable, for most of the rest (the kernel's run-queue delay, not sleep)."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(3)]
    try:
        for proc in spinners:
            os.sched_setaffinity(proc.pid, {min(os.sched_getaffinity(0))})
        time.sleep(0.2)
        probe = CpuProbe({"one": [spinners[0].pid], "all": [p.pid for p in spinners]})
        probe.start()
        time.sleep(1.0)
        shares = probe.stop(events=1)
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()
    one, every = shares.main_threads["one"], shares.main_threads["all"]
    assert one is not None
    assert every is not None
    assert 0.1 < one.running < 0.5, one
    assert one.waiting > 0.4, one
    assert 0.5 < every.running < 1.1, every  # one CPU between them (or less, if shared)
    assert every.waiting > 1.4, every


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


_NAMED_THREADS = """
import ctypes, threading, time
libc = ctypes.CDLL(None)
def named(name, spin):
    libc.prctl(15, name.encode())  # PR_SET_NAME: this thread's name, as HotSpot sets its own
    end = time.time() + 30
    while time.time() < end:
        if not spin:
            time.sleep(0.05)
for name, spin in (("C2 CompilerThread0", True), ("G1 Conc#0", False)):
    threading.Thread(target=named, args=(name, spin), daemon=True).start()
print("ready", flush=True)
time.sleep(30)
"""


def test_a_jvms_compiler_and_collector_threads_are_told_apart_by_name() -> None:
    """A stand-in JVM: a thread named as HotSpot names its C2 compiler spins, one named as
    G1's concurrent marker sleeps; the probe gives the compiler about a core, the collector
    about none, and both are inside the process's own share."""
    if not os.path.isdir("/proc/self/task"):
        pytest.fail("the bench reads thread names from /proc (Linux)")
    with subprocess.Popen(
        [sys.executable, "-c", _NAMED_THREADS], stdout=subprocess.PIPE, text=True
    ) as jvm:
        assert jvm.stdout is not None
        assert jvm.stdout.readline().strip() == "ready"
        probe = CpuProbe({"worker": this_process(), "broker": [jvm.pid]})
        probe.start()
        time.sleep(0.5)
        shares = probe.stop(events=100)
        jvm.kill()
    assert shares.jvm is not None
    assert 0.5 < shares.jvm["jit"] <= 1.05
    assert shares.jvm["gc"] < 0.1
    broker = shares.processes["broker"]
    assert broker is not None
    assert broker >= shares.jvm["jit"] * 0.95
    assert shares.jvm_housekeeping == pytest.approx(shares.jvm["jit"] + shares.jvm["gc"])
    assert "broker's JIT" in shares.summary()


def test_jvm_threads_started_or_ended_meanwhile_count_only_their_time_seen() -> None:
    before = {("jit", 1): 5.0, ("jit", 2): 1.0, ("gc", 3): 2.0}
    after = {("jit", 1): 5.5, ("gc", 3): 2.25, ("gc", 4): 0.25}  # 2 ended, 4 started
    assert jvm_cores(before, after, seconds=0.5) == {"jit": 1.0, "gc": 1.0}
    assert jvm_cores(None, after, seconds=0.5) is None  # names not readable: unknown


def test_no_local_broker_means_no_jvm_figures() -> None:
    probe = CpuProbe({"worker": this_process(), "broker": []})
    probe.start()
    shares = probe.stop(events=1)
    assert shares.jvm is None
    assert shares.jvm_housekeeping == 0.0
    assert "JIT" not in shares.summary()


def _shares(
    jvm: dict[str, float] | None = None, busy: float = 1.5, steal: float = 0.0
) -> CpuShares:
    return CpuShares(
        seconds=20.0,
        cpus=2,
        machine_busy=busy,
        steal=steal,
        processes={"worker": 0.9, "broker": 0.6, "bench": 0.2},
        worker_us_per_event=450.0,
        jvm=jvm,
    )


def test_the_bench_says_so_only_when_the_brokers_jvm_took_a_tenth_of_a_core() -> None:
    assert broker_note(_shares({"jit": 0.05, "gc": 0.05}), 195) is None  # 0.10: not over
    assert broker_note(_shares(None), 195) is None  # not seen: nothing to say
    note = broker_note(_shares({"jit": 0.30, "gc": 0.02}), 12_804)
    assert note is not None
    assert "0.32 cores compiling and collecting" in note
    assert "hosts 12,804 partitions" in note
    unknown = broker_note(_shares({"jit": 0.0, "gc": 0.5}), None)
    assert unknown is not None
    assert "an unknown number of partitions" in unknown


def test_the_machines_room_is_its_cores_not_stolen_over_those_busy() -> None:
    assert machine_room(_shares(busy=1.6)) == pytest.approx(1.25)
    assert machine_room(_shares(busy=0.5)) == pytest.approx(4.0)
    # Cores the hypervisor gave to others were not the machine's to use.
    assert machine_room(_shares(busy=1.0, steal=0.4)) == pytest.approx(1.6)
    assert machine_room(_shares(busy=0.0)) > 1e6  # an idle machine: room without bound


def _drain(
    workers: int,
    rate: float,
    cpu_us: float,
    busy: float = 1.5,
    loops: Sequence[MainThread | None] = (),
) -> PipelineFigures:
    return PipelineFigures(
        events=50_000,
        customers=10_000,
        workers=workers,
        seconds=50_000 / rate,
        events_per_s=rate,
        stage_events_per_s={},
        cpu_us_per_event=cpu_us,
        gc_us_per_event=2.0,
        peak_rss_mb=250.0,
        rocksdb_mb=12.0,
        rocksdb_mb_per_million_customers=1_200.0,
        drain_cpu=_shares(busy=busy),
        worker_cores=[0.99, 0.44] if workers == 2 else [0.88],
        worker_loops=list(loops),
    )


def test_the_bench_says_why_two_workers_fell_short_of_the_scaling_floor() -> None:
    # Reached: nothing to explain.
    assert scaling_note(_drain(1, 5_000, 150), _drain(2, 8_500, 170)) is None
    # No room: the machine was busy while one worker drained.
    busy = scaling_note(_drain(1, 5_000, 150, busy=1.6), _drain(2, 3_650, 270))
    assert busy is not None
    assert busy.startswith("0.73x, under the floor's 1.6x: while one worker drained")
    assert "drained (worker 0.90, broker 0.60, bench 0.20 of 2 cores; machine 80% busy" in busy
    assert "the machine's 2 cores carry at most 1.25x one worker's rate" in busy
    assert "does not hold here" in busy
    # Room: the workers' own costs are named, with what each worker used.
    own = scaling_note(_drain(1, 5_900, 150, busy=1.15), _drain(2, 5_400, 267))
    assert own is not None
    assert own.startswith("0.92x, under the floor's 1.6x, with room on the machine (1.74x")
    assert "CPU per event 150 µs with one worker, 267 µs summed over 2" in own
    assert "the 2 workers used 0.99 and 0.44 cores" in own
    # With the same workers drained without standby replicas, both are shown.
    both = scaling_note(
        _drain(1, 5_900, 150, busy=1.15), _drain(2, 5_400, 267), _drain(2, 8_500, 155)
    )
    assert both is not None
    assert both.startswith(own.removesuffix(" (README, Performance)"))
    assert both.endswith(
        "; without standby replicas 1.44x, 155 µs summed over 2; the 2 workers used "
        "0.99 and 0.44 cores (README, Performance)"
    )
    # The workers' event loops, when seen: what each ran and waited for a CPU, and the
    # contention named once the busiest one waited a tenth of the drain.
    alone = [MainThread(0.70, 0.05)]
    pair = [MainThread(0.68, 0.24), MainThread(0.45, 0.25)]
    full = scaling_note(
        _drain(1, 5_900, 150, busy=1.15, loops=alone),
        _drain(2, 6_800, 190, busy=1.68, loops=pair),
    )
    assert full is not None
    # 1.15x at 84% busy: at the pair's cost per event the cores carry 1.15 x 2 / 1.68
    assert full.startswith(
        "1.15x, under the floor's 1.6x, with room on the machine (1.74x one worker's rate at "
        "its CPU per event; 57% busy while it drained): but not at the 2 workers' cost per "
        "event: their drain kept the machine 84% busy at 1.15x one worker's rate, so its "
        "cores carry at most 1.37x (every process's CPU per event as in that drain: the "
        "workers', the broker's, the bench's), and the floor's condition does not hold here; "
        "the busiest worker's event loop waited for a CPU 0.24 of the 2 workers' drain (one "
        "worker's, 0.05): its cores were contended. CPU per event 150 µs"
    )
    waited = scaling_note(
        _drain(1, 5_900, 150, busy=1.15, loops=alone),
        _drain(2, 6_800, 190, busy=1.2, loops=pair),
    )
    assert waited is not None
    assert waited.startswith(
        "1.15x, under the floor's 1.6x, with room on the machine (1.74x one worker's rate at "
        "its CPU per event; 57% busy while it drained): yet the busiest worker's event loop "
        "waited for a CPU 0.24 of the 2 workers' drain (one worker's, 0.05), the machine 60% "
        "busy: its cores were contended, and the workers' costs are what they used of them. "
        "CPU per event 150 µs with one worker, 190 µs summed over 2; the 2 workers used 0.99 "
        "and 0.44 cores; their event loops on a CPU / waiting for one 0.68 / 0.24 and "
        "0.45 / 0.25 of the drain (README, Performance)"
    )
    calm = scaling_note(
        _drain(1, 5_900, 150, busy=1.15, loops=alone),
        _drain(2, 6_800, 190, busy=1.3, loops=[MainThread(0.9, 0.06), MainThread(0.5, 0.03)]),
    )
    assert calm is not None
    assert "waiting for one 0.90 / 0.06 and 0.50 / 0.03 of the drain (README" in calm
    assert "the workers' own costs bound it" in calm
    assert "contended" not in calm
    unread = scaling_note(
        _drain(1, 5_900, 150, busy=1.15, loops=alone),
        _drain(2, 6_800, 190, busy=1.68, loops=[None, MainThread(0.45, 0.25)]),
    )
    assert unread is not None
    assert "event loop" not in unread  # not all of them seen: none said
    # A drain whose CPU was not seen says nothing it cannot show.
    unseen = _drain(1, 5_000, 150)
    unseen.drain_cpu = None
    assert scaling_note(unseen, _drain(2, 3_000, 270)) is None


def test_scaling_rounds_are_reported_by_their_medians() -> None:
    """On a noisy machine one drain pair's ratio swings by a third (1.29-1.76x for the same
    code, session 22): with several rounds, the note and the report use their medians."""
    one, two, bare = _drain(1, 5_900, 150, busy=1.15), _drain(2, 5_400, 267), _drain(2, 8_500, 155)
    first = ScalingRound.of(one, two, bare)
    assert first.scaling == pytest.approx(5_400 / 5_900)
    assert first.scaling_without_standbys == pytest.approx(8_500 / 5_900)
    rounds = [
        first,
        ScalingRound.of(_drain(1, 5_000, 150), _drain(2, 5_500, 260), _drain(2, 7_000, 160)),
        ScalingRound.of(_drain(1, 6_000, 150), _drain(2, 4_800, 280), _drain(2, 9_600, 150)),
    ]
    note = scaling_note(one, two, bare, rounds)
    assert note is not None
    assert note.startswith("0.92x, under the floor's 1.6x")  # the median: 5,400 / 5,900
    assert "; without standby replicas 1.44x," in note  # the median: 8,500 / 5,900
    assert note.endswith(
        "(ratios: medians of 3 rounds; CPU: the first round's) (README, Performance)"
    )
    # The floor is judged on the median too: two rounds of three reaching it are enough.
    reached = [ScalingRound.of(_drain(1, 5_000, 150), _drain(2, r, 170), bare) for r in (9e3, 8e3)]
    assert scaling_note(one, two, bare, [first, *reached]) is None
    report = BenchReport(
        machine={},
        config={},
        kafka_producer_per_s=None,
        kafka_consumer_per_s=None,
        python_passthrough_per_s=100_000.0,
        python_passthrough_cpu_us=10.0,
        pipeline=one,
        ratios={
            "pipeline_vs_passthrough": 0.059,
            "scaling": 0.92,
            "scaling_without_standbys": 1.44,
        },
        scaled=two,
        scaled_without_standbys=bare,
        scaling_rounds=rounds,
    )
    table = report.table()
    assert "  median of 3 rounds, each" in table
    assert "0.92 / 1.10 / 0.80x" in table
    assert "1.44 / 1.40 / 1.60x" in table


def test_the_profile_samples_the_thread_holding_the_interpreter_lock(tmp_path: Path) -> None:
    """``--profile``'s py-spy, run for real on a process with one thread busy in Python and
    one busy in C without the lock (hashing): only the first is sampled (``--gil``; without
    it the second shows as much as a quarter as often), and py-spy writes its stacks on
    SIGINT."""
    busy = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import hashlib, threading\n"
            "def native_hasher():\n"
            "    data = bytes(1 << 22)\n"
            "    while True: hashlib.sha256(data).digest()\n"
            "def busy_loop():\n    while True: sum(range(1000))\n"
            "threading.Thread(target=native_hasher, daemon=True).start()\n"
            "busy_loop()\n",
        ]
    )
    out = tmp_path / "worker.txt"
    try:
        time.sleep(0.5)
        command = py_spy_command(busy.pid, out)
        assert "--gil" in command
        assert "--nonblocking" in command
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(2.0)
        spy.send_signal(signal.SIGINT)
        _, err = spy.communicate(timeout=60)
        assert spy.returncode == 0, err.decode()
    finally:
        busy.kill()
        busy.wait()
    samples = {"busy_loop": 0, "native_hasher": 0}
    for line in out.read_text().splitlines():  # "frame;frame;... <count>"
        stack, _, count = line.rpartition(" ")
        for name in samples:
            if name in stack:
                samples[name] += int(count)
    # The hasher takes the lock for a moment between hashes: a sample or two of hundreds
    # (without --gil it had a quarter of the busy loop's samples).
    assert samples["busy_loop"] > 50
    assert samples["native_hasher"] < samples["busy_loop"] * 0.05


def test_scaling_rounds_without_workers_to_scale_is_refused() -> None:
    """``--scaling-rounds`` repeats the ``--workers`` drains: alone it would be ignored, so it
    is refused before anything runs (no broker is asked)."""
    result = CliRunner().invoke(cli, ["bench", "--scaling-rounds", "3"])
    assert result.exit_code == 2
    assert "--scaling-rounds repeats the --workers drains" in result.output
