"""Where the machine's CPU went while the bench measured latency.

The latency floor is set "at a fixed offered load below saturation", and on a machine of
two cores the worker, the broker and the bench share them: a p99 read alone cannot say
whether the load was below saturation. So the latency phase is sampled too, from its
first offered event to its last: the cores each process used (the workers, the broker,
the bench itself), the machine's busy and stolen cores, and the workers' CPU per offered
event (in a drain an event costs less: a batch then carries hundreds of records, at a
low rate a few, each paying its fixed work).

The broker is found as the process listening on the bootstrap port, when the bootstrap
host is this machine; a remote broker's share is not known (None).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psutil

#: ``psutil.cpu_times()`` fields counted as busy (not idle, not waiting on I/O, not
#: stolen): guest time is already inside user time on Linux.
_BUSY = ("user", "nice", "system", "irq", "softirq")


@dataclass
class CpuShares:
    """Cores used over ``seconds``: a process's CPU seconds over the wall clock's."""

    seconds: float
    cpus: int
    machine_busy: float  # cores busy, every process (and the kernel's interrupts)
    steal: float  # cores the hypervisor gave to others while this machine wanted them
    processes: dict[str, float | None]  # role -> cores (None: not on this machine)
    worker_us_per_event: float  # the workers' CPU per event offered

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
        """``worker 0.81, broker 0.62, bench 0.22 of 2 cores; machine 88% busy, 1% stolen``"""
        roles = ", ".join(f"{role} {cores}" for role, cores in self.cores().items())
        return (
            f"{roles} of {self.cpus} cores; machine {self.busy_pct:.0f}% busy, "
            f"{self.steal_pct:.0f}% stolen"
        )


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


class CpuProbe:
    """CPU of named groups of processes and of the machine, between :meth:`start` and
    :meth:`stop`. A role with no pids (a remote broker) is reported as None."""

    def __init__(self, roles: Mapping[str, list[int]]) -> None:
        self.roles = dict(roles)
        self._t0 = 0.0
        self._machine0 = (0.0, 0.0)
        self._procs0: dict[str, float] = {}

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._machine0 = _machine()
        self._procs0 = {role: process_cpu_s(pids) for role, pids in self.roles.items()}

    def stop(self, events: int, worker_role: str = "worker") -> CpuShares:
        seconds = time.monotonic() - self._t0
        busy, steal = _machine()
        cores: dict[str, float | None] = {
            role: (process_cpu_s(pids) - self._procs0[role]) / seconds if pids else None
            for role, pids in self.roles.items()
        }
        worker = cores.get(worker_role) or 0.0
        return CpuShares(
            seconds=seconds,
            cpus=psutil.cpu_count() or 1,
            machine_busy=(busy - self._machine0[0]) / seconds,
            steal=(steal - self._machine0[1]) / seconds,
            processes=cores,
            worker_us_per_event=worker * seconds / max(events, 1) * 1e6,
        )


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
