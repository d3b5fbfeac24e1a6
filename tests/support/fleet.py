"""Worker fleets and the leader as real processes: their environment, starting, finding and stopping.

Every driver uses these: the e2e tests (:class:`Env`, one test's fleets on the shared servers), the
chaos runner and the multihost cluster (supervised fleets on private servers). A fleet is either
``dramatiq worker.app`` (:func:`worker.supervisor.worker_command`, the leader runs in its master) or
``stayler worker``, the supervisor that restarts a fleet after a crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import psycopg

from core.settings import Settings
from producer import ProducerError
from worker.supervisor import worker_command

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

#: Short intervals so liveness, rescue, sweeps and the leader's lease happen within seconds.
FAST = {
    "STAYLER_HEARTBEAT_INTERVAL_S": "0.5",
    "STAYLER_RESCUE_AFTER_S": "3",
    "STAYLER_RESCUE_INTERVAL_S": "0.5",
    "STAYLER_SWEEP_INTERVAL_S": "1",
    "STAYLER_LEADER_LEASE_S": "3",
    "STAYLER_BACKOFF_BASE_S": "0.2",
    "STAYLER_BACKOFF_MAX_S": "1",
    "STAYLER_SHUTDOWN_GRACE_S": "2",
    "STAYLER_MODEL": "null",
    "STAYLER_MODEL_THREADS": "1",
    "STAYLER_LOG_LEVEL": "INFO",
    "STAYLER_METRICS_PORT": "0",  # fleets of concurrent tests must not share port 9191; tests/ops turns it on
}


def fleet_environment(*overlays: Mapping[str, Any]) -> dict[str, str]:
    """This process's environment with :data:`FAST`, then each overlay, on top (values as strings)."""
    env = dict(os.environ)
    env.update(FAST)
    for overlay in overlays:
        env.update({k: str(v) for k, v in overlay.items()})
    return env


def start_supervised(env: Mapping[str, str], log_path: Path, *, processes: int = 1,
                     threads: int = 2) -> subprocess.Popen[bytes]:
    """Start ``stayler worker`` (the supervisor) with ``env``, its output appended to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "stayler.cli", "worker", "--processes", str(processes),
                                 "--threads", str(threads)], env=dict(env), stdout=log, stderr=subprocess.STDOUT,
                                cwd=ROOT)


def start_workers(env: Mapping[str, str], log_path: Path, *, processes: int = 1,
                  threads: int = 2) -> subprocess.Popen[bytes]:
    """Start ``dramatiq worker.app`` (no supervisor) with ``env``, its output appended to ``log_path``."""
    settings = Settings(shutdown_grace_s=float(env.get("STAYLER_SHUTDOWN_GRACE_S", "2")))
    with log_path.open("ab") as log:
        return subprocess.Popen(worker_command(settings, processes=processes, threads=threads), env=dict(env),
                                stdout=log, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM a fleet (in-flight jobs finish or go back) and wait; kill its whole tree if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(proc.pid)
            proc.wait()
    return proc.returncode


def stop_all(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGTERM every fleet first (they stop together), then wait for each as :func:`stop` does."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        stop(proc, timeout)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants."""
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid)
        for child in parent.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        parent.kill()


def worker_pids(supervisors: Iterable[subprocess.Popen[bytes]]) -> list[int]:
    """Live worker processes (Dramatiq's forked workers) under ``stayler worker`` supervisors."""
    pids = []
    for supervisor in supervisors:
        with contextlib.suppress(psutil.NoSuchProcess):
            for master in psutil.Process(supervisor.pid).children():
                for child in master.children():
                    with contextlib.suppress(psutil.NoSuchProcess):
                        if "dramatiq" in " ".join(child.cmdline()):
                            pids.append(child.pid)
    return pids


def retrying(open_conn: Callable[[], psycopg.Connection], holder: list[psycopg.Connection | None],
             fn: Callable[[psycopg.Connection], T], deadline: float, what: str = "the database") -> T:
    """``fn(conn)``, reconnecting and trying again while the database is away (a producer's retry).

    ``holder[0]`` is the connection in use (None: open one); it is replaced after a disconnect.
    """
    while True:
        try:
            conn = holder[0]
            if conn is None or conn.closed:
                conn = holder[0] = open_conn()
            return fn(conn)
        except (ProducerError, psycopg.OperationalError) as exc:
            if isinstance(exc, ProducerError) and exc.code != "database_unavailable":
                raise
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: the database stayed unavailable") from exc
            if holder[0] is not None:
                with contextlib.suppress(Exception):
                    holder[0].close()
            holder[0] = None
            time.sleep(0.3)


@dataclass
class Env:
    """One test's services, storage and fleets (on the shared servers, the test's own database)."""

    db_url: str
    redis_url: str
    queue_name: str
    storage_dir: Path
    log_dir: Path
    fleets: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def variables(self, **overrides: Any) -> dict[str, str]:
        """The environment of a worker fleet for this test."""
        return fleet_environment(
            {"DATABASE_URL": self.db_url, "REDIS_URL": self.redis_url, "STAYLER_QUEUE_NAME": self.queue_name,
             "STAYLER_STORAGE_DIR": str(self.storage_dir), "STAYLER_STATE_DIR": str(self.log_dir),
             "STAYLER_METRICS_DIR": str(self.log_dir / f"prometheus-{len(self.fleets)}")},
            overrides)

    def _log(self) -> Path:
        return self.log_dir / f"fleet-{len(self.fleets)}.log"

    def start_fleet(self, processes: int = 1, threads: int = 2, **overrides: Any) -> subprocess.Popen[bytes]:
        """Start ``dramatiq worker.app``; the fixture stops it at the end of the test."""
        proc = start_workers(self.variables(**overrides), self._log(), processes=processes, threads=threads)
        self.fleets.append(proc)
        return proc

    def start_supervised(self, processes: int = 1, threads: int = 2, **overrides: str) -> subprocess.Popen[bytes]:
        """Start ``stayler worker`` (the supervisor that restarts a fleet after a crash)."""
        proc = start_supervised(self.variables(**overrides), self._log(), processes=processes, threads=threads)
        self.fleets.append(proc)
        return proc

    def logs(self) -> str:
        """Every fleet's log, for failure messages."""
        return "\n".join(p.read_text(errors="replace")[-6000:] for p in sorted(self.log_dir.glob("fleet-*.log")))
