"""Where the machine's CPU went during a measured window: per process role and per worker thread.

Two snapshots of ``/proc`` (through psutil), one before and one after the window; the difference is
split into the fleet's worker processes (per thread, by the OS names ``core.thread_names`` gives
them: ``dq-worker``, ``dq-consumer``, ``heartbeat``, ``leader``, ``onnx-intra`` ...), the fleet's
master and helper forks, PostgreSQL, Redis, this benchmark process (per thread: the client that
submits and learns of completions), and everything else, from the machine's own counters; plus the
worker processes' minor page faults, and the machine's ``steal`` time (a virtual CPU that was ready
to run while the host ran something else).
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from dataclasses import dataclass

import psutil

Key = tuple[str, str]


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds so far, per (role, thread) key, plus the machine's busy and steal seconds."""

    seconds: dict[Key, float]
    machine_busy: float
    machine_steal: float
    worker_faults: int

    @classmethod
    def take(cls, fleet_pid: int | None, worker_pids: set[int]) -> CpuSnapshot:
        """Read every process and, for the fleet's workers and this process, every thread."""
        seconds: dict[Key, float] = defaultdict(float)
        fleet = _fleet_pids(fleet_pid)
        faults = sum(_minor_faults(pid) for pid in worker_pids)
        for proc in psutil.process_iter(["pid", "name"]):
            with contextlib.suppress(psutil.Error):
                pid, name = proc.info["pid"], proc.info["name"] or "?"
                if pid in worker_pids:
                    _add_threads(seconds, f"worker {sorted(worker_pids).index(pid) + 1}", proc)
                elif pid == os.getpid():
                    _add_threads(seconds, "benchmark client", proc)
                else:
                    times = proc.cpu_times()
                    seconds[(_role(pid, name, fleet), "")] += times.user + times.system
        cpu = psutil.cpu_times()
        busy = sum(getattr(cpu, f) for f in ("user", "nice", "system", "irq", "softirq") if hasattr(cpu, f))
        return cls(dict(seconds), busy, getattr(cpu, "steal", 0.0), faults)


def _minor_faults(pid: int) -> int:
    """Minor page faults of a process so far (``/proc/<pid>/stat`` field 10), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[7])
    except (OSError, IndexError, ValueError):
        return 0


def _fleet_pids(fleet_pid: int | None) -> set[int]:
    if fleet_pid is None:
        return set()
    with contextlib.suppress(psutil.Error):
        return {fleet_pid, *(c.pid for c in psutil.Process(fleet_pid).children(recursive=True))}
    return set()


def _role(pid: int, name: str, fleet: set[int]) -> str:
    if pid in fleet:
        return "fleet master and helper forks"
    if name.startswith("postgres"):
        return "PostgreSQL (all processes)"
    if name.startswith("redis"):
        return "Redis"
    return "other processes"


def _add_threads(seconds: dict[Key, float], role: str, proc: psutil.Process) -> None:
    for thread in proc.threads():
        try:
            with open(f"/proc/{proc.pid}/task/{thread.id}/comm") as comm:
                name = comm.read().strip()
        except OSError:
            name = "?"
        name = "main" if thread.id == proc.pid else name
        seconds[(role, name)] += thread.user_time + thread.system_time


@dataclass(frozen=True)
class CpuSplit:
    """CPU milliseconds per conversion over a window, per key, biggest first."""

    per_conversion_ms: list[tuple[Key, float]]
    machine_busy_ms: float
    steal_ms: float
    conversions: int
    worker_faults: float = 0.0

    @classmethod
    def between(cls, before: CpuSnapshot, after: CpuSnapshot, conversions: int) -> CpuSplit:
        """The difference of two snapshots, per conversion (processes that ended in between count 0)."""
        n = max(1, conversions)
        diffs = {k: after.seconds[k] - before.seconds.get(k, 0.0) for k in after.seconds}
        known = sum(v for v in diffs.values() if v > 0)
        busy = after.machine_busy - before.machine_busy
        diffs[("not attributed (kernel, exited processes)", "")] = max(0.0, busy - known)
        rows = sorted(((k, 1000 * v / n) for k, v in diffs.items() if v > 0), key=lambda kv: -kv[1])
        return cls(rows, 1000 * busy / n, 1000 * (after.machine_steal - before.machine_steal) / n, n,
                   (after.worker_faults - before.worker_faults) / n)

    @classmethod
    def merge(cls, splits: list[CpuSplit]) -> CpuSplit:
        """Several windows as one: per-conversion figures weighted by each window's conversions."""
        n = sum(s.conversions for s in splits)
        total: dict[Key, float] = defaultdict(float)
        for split in splits:
            for key, ms in split.per_conversion_ms:
                total[key] += ms * split.conversions / n
        rows = sorted(total.items(), key=lambda kv: -kv[1])
        busy = sum(s.machine_busy_ms * s.conversions for s in splits) / n
        steal = sum(s.steal_ms * s.conversions for s in splits) / n
        faults = sum(s.worker_faults * s.conversions for s in splits) / n
        return cls(rows, busy, steal, n, faults)

    def by_role(self) -> list[tuple[str, float]]:
        """Milliseconds per conversion per role (threads summed), biggest first."""
        roles: dict[str, float] = defaultdict(float)
        for (role, _), ms in self.per_conversion_ms:
            roles[role] += ms
        return sorted(roles.items(), key=lambda kv: -kv[1])

    def threads_of(self, role: str) -> list[tuple[str, float]]:
        """Milliseconds per conversion of each thread of ``role`` (a worker or the client), biggest first."""
        merged: dict[str, float] = defaultdict(float)
        for (r, thread), ms in self.per_conversion_ms:
            if r == role:
                merged[thread] += ms
        return sorted(merged.items(), key=lambda kv: -kv[1])
