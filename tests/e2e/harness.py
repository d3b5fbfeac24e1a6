"""Helpers for end-to-end tests: real worker fleets (``dramatiq worker.app`` subprocesses) on a real
PostgreSQL and Redis, sample images registered through the producer, and polling helpers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg

from core.settings import Settings
from modelkit.samples import make_garment, make_person, to_bytes
from producer import register_image, submit
from producer.accounts import create_user
from producer.images import ImageLimits
from schema.statuses import TERMINAL
from storage import LocalStorage
from worker.supervisor import worker_command

LIMITS = ImageLimits(max_bytes=20_000_000, max_pixels=40_000_000, thumbnail_size=64)

#: Short intervals so liveness, rescue and sweeps happen within seconds in tests.
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


@dataclass
class Env:
    """One test's services and storage."""

    db_url: str
    redis_url: str
    queue_name: str
    storage_dir: Path
    log_dir: Path
    fleets: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def variables(self, **overrides: Any) -> dict[str, str]:
        """The environment of a worker fleet for this test."""
        env = dict(os.environ)
        env.update(FAST)
        env.update({"DATABASE_URL": self.db_url, "REDIS_URL": self.redis_url, "STAYLER_QUEUE_NAME": self.queue_name,
                    "STAYLER_STORAGE_DIR": str(self.storage_dir), "STAYLER_STATE_DIR": str(self.log_dir),
                    "STAYLER_METRICS_DIR": str(self.log_dir / f"prometheus-{len(self.fleets)}")})
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    def start_fleet(self, processes: int = 1, threads: int = 2, **overrides: Any) -> subprocess.Popen[bytes]:
        """Start ``dramatiq worker.app``; the fixture stops it at the end of the test."""
        env = self.variables(**overrides)
        settings = Settings(shutdown_grace_s=float(env["STAYLER_SHUTDOWN_GRACE_S"]))
        log = (self.log_dir / f"fleet-{len(self.fleets)}.log").open("ab")
        proc = subprocess.Popen(worker_command(settings, processes=processes, threads=threads), env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        self.fleets.append(proc)
        return proc

    def start_supervised(self, processes: int = 1, threads: int = 2, **overrides: str) -> subprocess.Popen[bytes]:
        """Start ``stayler worker`` (the supervisor that restarts a fleet after a crash)."""
        env = self.variables(**overrides)
        log = (self.log_dir / f"fleet-{len(self.fleets)}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "stayler.cli", "worker", "--processes", str(processes),
                                 "--threads", str(threads)], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.fleets.append(proc)
        return proc

    def logs(self) -> str:
        """Every fleet's log, for failure messages."""
        return "\n".join(p.read_text(errors="replace")[-6000:] for p in sorted(self.log_dir.glob("fleet-*.log")))


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM a fleet and wait; kill it if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(proc.pid)
            proc.wait()
    return proc.returncode


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants."""
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid)
        for child in parent.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        parent.kill()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, env: Env | None = None,
             interval: float = 0.1) -> Any:
    """Poll until ``predicate()`` is truthy; fail with the fleets' logs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n" + (env.logs() if env else ""))


class Workload:
    """A user with a garment, and a way to submit conversions of sample person photos."""

    def __init__(self, conn: psycopg.Connection, storage_dir: Path) -> None:
        """Register a user and one garment."""
        self.conn = conn
        self.storage = LocalStorage(storage_dir)
        self.user = create_user(conn)
        self.garment = register_image(conn, self.storage, to_bytes(make_garment(seed=3)), owner_id=self.user,
                                      owner_type="user", image_type="cloth", limits=LIMITS).id
        self._person: uuid.UUID | None = None

    def person(self) -> uuid.UUID:
        """One registered person photo (shared by conversions; they only read it)."""
        if self._person is None:
            img = make_person(192, 256, seed=5).image
            self._person = register_image(self.conn, self.storage, to_bytes(img), owner_id=self.user,
                                          owner_type="user", image_type="user", limits=LIMITS).id
        return self._person

    def submit(self, count: int = 1, *, style: str | None = None, max_retries: int = 3,
               priority: int = 0) -> list[uuid.UUID]:
        """Create ``count`` conversions."""
        return [submit(self.conn, user_id=self.user, user_image_id=self.person(), cloth_image_id=self.garment,
                       style_name=style, max_retries=max_retries, priority=priority) for _ in range(count)]

    def statuses(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Conversion id → status."""
        rows = self.conn.execute("SELECT id, status FROM conversions WHERE id = ANY(%s)", (ids,)).fetchall()
        return {r[0]: r[1] for r in rows}

    def all_terminal(self, ids: list[uuid.UUID]) -> bool:
        """Whether every conversion reached a terminal status."""
        st = self.statuses(ids)
        return len(st) == len(ids) and all(s in TERMINAL for s in st.values())

    def job(self, conversion_id: uuid.UUID) -> dict[str, Any]:
        """The conversion's job row."""
        with self.conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            row = cur.execute("SELECT * FROM conversion_jobs WHERE conversion_id = %s", (conversion_id,)).fetchone()
        assert row is not None
        return row


@contextlib.contextmanager
def connect(db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn
