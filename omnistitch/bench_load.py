"""Where the machine's CPU went while the bench measured latency, and while it drained.

The latency floor is set "at a fixed offered load below saturation", and on a machine of
two cores the worker, the broker and the bench share them: a p99 read alone cannot say
whether the load was below saturation. So the latency phase is sampled too, from its
first offered event to its last: the cores each process used (the workers, the broker,
the bench itself), the machine's busy and stolen cores, and the workers' CPU per offered
event (in a drain an event costs less: a batch then carries hundreds of records, at a
low rate a few, each paying its fixed work).

The broker is found as the process listening on the bootstrap port, when the bootstrap
host is this machine; a remote broker's share is not known (None). Its JVM's own
housekeeping is split out, as the cores its JIT compilers and its garbage collector's
threads used: on two cores a broker just started (compiling its hot paths for minutes) or
holding many partitions (a large live heap to mark) starves the worker, and the tail
measured then is partly the broker's (session 20, docs/performance-history.md).

Each drain is sampled the same way, for the scaling floor: two workers can reach 1.6x one
worker's rate only "where the broker leaves CPU for it". :func:`machine_room` says how
much the machine left: how many times the rate drained its cores could carry if every
process kept its CPU per event.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

#: ``psutil.cpu_times()`` fields counted as busy (not idle, not waiting on I/O, not
#: stolen): guest time is already inside user time on Linux.
_BUSY = ("user", "nice", "system", "irq", "softirq")

#: HotSpot's threads by what they do, by name prefix (Linux shows a thread's first 15
#: characters): the JIT compilers, and G1's concurrent, refinement and parallel workers.
JVM_HOUSEKEEPING: dict[str, tuple[str, ...]] = {
    "jit": ("C1 CompilerThre", "C2 CompilerThre", "Sweeper thread"),
    "gc": ("G1 ", "GC Thread"),
}


@dataclass(frozen=True)
class MainThread:
    """A role's main threads over a probe, in cores: on a CPU, and runnable but waiting for
    one. ``1 - running - waiting`` is the share of the wall clock they slept: on I/O, a
    timer, or another thread's interpreter lock."""

    running: float
    waiting: float


@dataclass
class CpuShares:
    """Cores used over ``seconds``: a process's CPU seconds over the wall clock's."""

    seconds: float
    cpus: int
    machine_busy: float  # cores busy, every process (and the kernel's interrupts)
    steal: float  # cores the hypervisor gave to others while this machine wanted them
    processes: dict[str, float | None]  # role -> cores (None: not on this machine)
    worker_us_per_event: float  # the workers' CPU per event offered
    #: Cores the JVM role's (the broker's) JIT compilers and garbage collector used, by
    #: ``JVM_HOUSEKEEPING`` kind; None where its threads could not be seen.
    jvm: dict[str, float] | None = None
    #: Each role's main threads (a worker's event loop, where its stages run): the cores
    #: they ran on, and those they spent runnable but waiting for a CPU (the kernel's
    #: run-queue delay, ``/proc/<pid>/task/<tid>/schedstat``); None where not seen.
    main_threads: dict[str, MainThread | None] = field(default_factory=dict)

    @property
    def busy_pct(self) -> float:
        return 100.0 * self.machine_busy / self.cpus

    @property
    def steal_pct(self) -> float:
        return 100.0 * self.steal / self.cpus

    def cores(self) -> dict[str, str]:
        """Each role's cores as shown (``0.81``; ``n/a`` when not on this machine)."""
        return {r: "n/a" if c is None else f"{c:.2f}" for r, c in self.processes.items()}

    def summary(self) -> str:
        """``worker 0.81, broker 0.62, bench 0.22 of 2 cores; machine 88% busy, 1% stolen``,
        and the broker's JIT and GC cores when seen (``; broker's JIT 0.30, GC 0.02``)."""
        roles = ", ".join(f"{role} {cores}" for role, cores in self.cores().items())
        text = (
            f"{roles} of {self.cpus} cores; machine {self.busy_pct:.0f}% busy, "
            f"{self.steal_pct:.0f}% stolen"
        )
        if self.jvm is not None:
            text += "; broker's " + ", ".join(
                f"{kind.upper()} {cores:.2f}" for kind, cores in self.jvm.items()
            )
        return text

    @property
    def jvm_housekeeping(self) -> float:
        """Cores the broker's JVM spent compiling and collecting (0 when not seen)."""
        return sum((self.jvm or {}).values())


def machine_room(cpu: CpuShares) -> float:
    """How many times the rate measured the machine could carry if every process on it (the
    workers, the broker, the bench, anything else) kept its CPU per event: the cores it had
    (those the hypervisor stole excepted) over the cores busy. 1.25 means a second worker
    could add at most a quarter of the first one's rate, and less where it costs more per
    event (standby replicas replay the other's changelogs)."""
    return (cpu.cpus - cpu.steal) / max(cpu.machine_busy, 1e-9)


def _machine() -> tuple[float, float]:
    times = psutil.cpu_times()
    return sum(getattr(times, f, 0.0) for f in _BUSY), getattr(times, "steal", 0.0)


def process_cpu_s(pids: Iterable[int]) -> float:
    """CPU seconds (user and system) the processes have used; one gone counts 0."""
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def main_threads_s(pids: Iterable[int]) -> tuple[float, float] | None:
    """Seconds the main threads of ``pids`` have run, and waited runnable for a CPU, since
    they started (the kernel's schedstat); None where it cannot be read (not Linux,
    schedstats not built in). A process gone counts nothing."""
    running = waiting = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
        except FileNotFoundError:
            continue
        except OSError:
            return None
        running += int(fields[0]) / 1e9
        waiting += int(fields[1]) / 1e9
    return running, waiting


def jvm_threads_cpu_s(pids: Iterable[int]) -> dict[tuple[str, int], float] | None:
    """CPU seconds of each JIT compiler and garbage collector thread of the JVMs ``pids``,
    keyed by (``JVM_HOUSEKEEPING`` kind, thread id); None where thread names cannot be
    read (not Linux, not permitted). A process gone counts nothing."""
    seen: dict[tuple[str, int], float] = {}
    for pid in pids:
        try:
            threads = psutil.Process(pid).threads()
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied:
            return None
        for thread in threads:
            try:
                name = Path(f"/proc/{pid}/task/{thread.id}/comm").read_text()
            except FileNotFoundError:  # ended meanwhile
                continue
            except OSError:
                return None
            for kind, prefixes in JVM_HOUSEKEEPING.items():
                if name.startswith(prefixes):
                    seen[kind, thread.id] = thread.user_time + thread.system_time
    return seen


def jvm_cores(
    before: dict[tuple[str, int], float] | None,
    after: dict[tuple[str, int], float] | None,
    seconds: float,
) -> dict[str, float] | None:
    """Cores per kind between two readings: a thread started meanwhile counts all its time,
    one ended meanwhile (the JIT's threads come and go) only what the first reading saw."""
    if before is None or after is None:
        return None
    cores = dict.fromkeys(JVM_HOUSEKEEPING, 0.0)
    for key, cpu_s in after.items():
        cores[key[0]] += (cpu_s - before.get(key, 0.0)) / seconds
    return cores


class CpuProbe:
    """CPU of named groups of processes and of the machine, between :meth:`start` and
    :meth:`stop`. A role with no pids (a remote broker) is reported as None; the ``jvm``
    role's JIT and GC threads are reported apart too (:attr:`CpuShares.jvm`)."""

    def __init__(self, roles: Mapping[str, list[int]], jvm: str = "broker") -> None:
        self.roles = dict(roles)
        self._jvm_pids = self.roles.get(jvm, [])
        self._t0 = 0.0
        self._machine0 = (0.0, 0.0)
        self._procs0: dict[str, float] = {}
        self._jvm0: dict[tuple[str, int], float] | None = None
        self._main0: dict[str, tuple[float, float] | None] = {}

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._machine0 = _machine()
        self._procs0 = {role: process_cpu_s(pids) for role, pids in self.roles.items()}
        self._main0 = {role: main_threads_s(pids) for role, pids in self.roles.items()}
        self._jvm0 = jvm_threads_cpu_s(self._jvm_pids) if self._jvm_pids else None

    def stop(self, events: int, worker_role: str = "worker") -> CpuShares:
        seconds = time.monotonic() - self._t0
        busy, steal = _machine()
        cores: dict[str, float | None] = {
            role: (process_cpu_s(pids) - self._procs0[role]) / seconds if pids else None
            for role, pids in self.roles.items()
        }
        worker = cores.get(worker_role) or 0.0
        jvm = jvm_threads_cpu_s(self._jvm_pids) if self._jvm_pids else None
        return CpuShares(
            seconds=seconds,
            cpus=psutil.cpu_count() or 1,
            machine_busy=(busy - self._machine0[0]) / seconds,
            steal=(steal - self._machine0[1]) / seconds,
            processes=cores,
            worker_us_per_event=worker * seconds / max(events, 1) * 1e6,
            jvm=jvm_cores(self._jvm0, jvm, seconds),
            main_threads={
                role: _main_cores(self._main0.get(role), main_threads_s(pids), seconds)
                if pids
                else None
                for role, pids in self.roles.items()
            },
        )


def _main_cores(
    before: tuple[float, float] | None, after: tuple[float, float] | None, seconds: float
) -> MainThread | None:
    if before is None or after is None:
        return None
    return MainThread((after[0] - before[0]) / seconds, (after[1] - before[1]) / seconds)


def broker_pids(bootstrap: str) -> list[int]:
    """The pids listening on the bootstrap servers' ports on this machine (the local
    broker's JVM); empty when none of them is local or none could be seen."""
    local = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        if port.isdigit() and _is_local(host.strip("[]")):
            local.append(int(port))
    if not local:
        return []
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:  # other users' sockets (not root): not seen
        return []
    return sorted(
        {
            c.pid
            for c in connections
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in local and c.pid
        }
    )


def _is_local(host: str) -> bool:
    if host in ("", "localhost", socket.gethostname()):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def this_process() -> list[int]:
    return [os.getpid()]
