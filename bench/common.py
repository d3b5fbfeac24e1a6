"""What every benchmark shares: sizes, result rows, fresh databases, worker fleets and workloads.

Each benchmark gets a database of its own, cloned from a migrated template on the server of
``DATABASE_URL`` (or the embedded PostgreSQL), and a Redis queue name of its own, so benchmarks
never see each other's rows or messages and can share a server with test runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import psycopg

from core.settings import Settings
from worker.supervisor import stop_workers, worker_command

if TYPE_CHECKING:
    from producer import Waker


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is; :data:`FULL` is the documented run, :data:`SMOKE` takes seconds."""

    queue_jobs: int = 10_000  # per run; the fair peer drains as many in every configuration and repeat
    queue_processes: tuple[int, ...] = (1, 2)
    queue_batches: tuple[int, ...] = (1, 16)
    pgqueuer_jobs: int = 20_000
    pgqueuer_batches: tuple[int, ...] = (10, 100)
    inference_images: int = 192
    inference_batch: int = 8
    latency_rate_per_s: float = 5.0
    latency_seconds: float = 30.0
    latency_blocks: int = 3  # blocks per fleet layout; the layouts alternate block by block
    scale_small: int = 10_000
    scale_large: int = 1_000_000
    scale_claims: int = 200
    memory_conversions: int = 10_000
    enqueue_single: int = 2_000
    enqueue_bulk: int = 20_000
    person_size: tuple[int, int] = (384, 512)
    null_person_size: tuple[int, int] = (64, 64)
    repeats: int = 2
    # (processes, threads, claim batch, intra-op threads) tried by the inference benchmark, best first
    # guesses first; candidates after the first of each claim batch are skipped once the budget is spent.
    inference_grid: tuple[tuple[int, int, int, int], ...] = (
        (1, 2, 1, 2), (1, 1, 1, 2), (2, 1, 1, 1), (2, 2, 1, 1),
        (1, 2, 8, 2), (1, 1, 8, 2), (2, 1, 8, 1), (2, 2, 8, 1),
    )
    inference_budget_s: float = 300.0
    profile_jobs: int = 5_000
    profile_processes: int = 1
    floor_jobs: int = 2_000
    idle_seconds: float = 10.0
    fairness_queue: int = 1_000_000
    fairness_owners: int = 10_000
    fairness_flood: int = 20_000
    fairness_users: int = 20
    fairness_idle: int = 10
    fairness_cap: int = 8
    fairness_alone_s: float = 10.0
    fairness_users_s: float = 10.0
    erasure_conversions: int = 10_000
    retention_small: int = 1_000
    retention_large: int = 1_000_000
    retention_batch: int = 1_000


FULL = Sizes()
SMOKE = Sizes(
    queue_jobs=150, queue_processes=(1, 2), queue_batches=(1, 16), pgqueuer_jobs=300, pgqueuer_batches=(10, 100),
    inference_images=8, inference_batch=4, latency_rate_per_s=10.0, latency_seconds=1.5, latency_blocks=1,
    scale_small=500, scale_large=2_000, scale_claims=20, memory_conversions=100, enqueue_single=50,
    enqueue_bulk=200, person_size=(96, 128), repeats=1,
    inference_grid=((1, 2, 1, 2), (2, 1, 4, 1)), inference_budget_s=60.0,
    profile_jobs=100, floor_jobs=30, idle_seconds=2.0,
    fairness_queue=2_000, fairness_owners=100, fairness_flood=600, fairness_users=4, fairness_idle=3,
    fairness_alone_s=2.0, fairness_users_s=1.0,
    erasure_conversions=200, retention_small=100, retention_large=2_000, retention_batch=100,
)


@dataclass
class Row:
    """One line of the results table."""

    benchmark: str
    case: str
    value: float | None
    unit: str
    ratio: float | None = None
    ratio_of: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""

    def verdict(self) -> str:
        """'met', 'MISSED' or '' (no target)."""
        if self.met is None:
            return ""
        return "met" if self.met else "MISSED"


@dataclass
class Services:
    """The servers a run uses and the migrated template its fresh databases are cloned from."""

    admin_url: str
    redis_url: str
    template: str
    work_dir: Path
    created: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def fresh_database(self, label: str) -> Iterator[str]:
        """A new database cloned from the template, dropped afterwards; yields its URL."""
        from core.services import with_database

        name = f"stayler_bench_{os.getpid()}_{label}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        try:
            yield with_database(self.admin_url, name)
        finally:
            drop_database(self.admin_url, name)

    def queue_name(self, label: str) -> str:
        """A Dramatiq queue name nobody else uses."""
        return f"stayler-bench-{label}-{uuid.uuid4().hex[:10]}"


def drop_database(admin_url: str, name: str) -> None:
    """Drop a database, disconnecting whoever is still on it."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def services(settings: Settings, work_dir: Path) -> Iterator[Services]:
    """PostgreSQL and Redis (configured or embedded) with a migrated template database."""
    from core.services import database, redis_server, with_database
    from schema.migrate import apply_migrations

    with database(settings) as admin_url, redis_server(settings) as redis_url:
        template = f"stayler_bench_{os.getpid()}_tpl"
        drop_database(admin_url, template)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{template}"')
        try:
            apply_migrations(with_database(admin_url, template))
            yield Services(admin_url, redis_url, template, work_dir)
        finally:
            drop_database(admin_url, template)


def free_port() -> int:
    """A TCP port nobody listens on right now (for a fleet's /metrics endpoint)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Fleet:
    """A running ``dramatiq worker.app`` fleet."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    processes: int = 1
    metrics_port: int | None = None

    def stage_means_ms(self) -> dict[str, float]:
        """Mean milliseconds per observation of each pipeline stage, from the fleet's /metrics."""
        import urllib.request

        if self.metrics_port is None:
            return {}
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:
            body = reply.read().decode()
        family = "stayler_stage_duration_seconds"
        sums = {m[0]: float(m[1]) for m in re.findall(family + r'_sum\{stage="(\w+)"\} (\S+)', body)}
        counts = {m[0]: float(m[1]) for m in re.findall(family + r'_count\{stage="(\w+)"\} (\S+)', body)}
        return {stage: 1000 * total / counts[stage] for stage, total in sums.items() if counts.get(stage)}

    def _workers(self) -> list[psutil.Process]:
        """The master's ``processes`` largest children by resident memory: the worker processes (the
        others are Dramatiq's small helper forks, such as the /metrics server)."""
        sized = []
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                sized.append((child.memory_info().rss, child))
        return [child for _, child in sorted(sized, key=lambda pair: -pair[0])[:self.processes]]

    def worker_pids(self) -> set[int]:
        """The worker processes' pids."""
        return {child.pid for child in self._workers()}

    def rss_mib(self) -> list[float]:
        """Resident memory of each worker process, MiB, largest first."""
        sizes = []
        for child in self._workers():
            with contextlib.suppress(psutil.NoSuchProcess):
                sizes.append(child.memory_info().rss / 2**20)
        return sorted(sizes, reverse=True)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the fleet's log (for error messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@contextlib.contextmanager
def fleet(db_url: str, redis_url: str, queue: str, work_dir: Path, *, processes: int, threads: int = 2,
          **overrides: Any) -> Iterator[Fleet]:
    """Run a worker fleet against ``db_url`` for the block; stops it (SIGTERM, then kill) afterwards."""
    storage = work_dir / "storage"
    log_path = work_dir / f"fleet-{queue}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    port = free_port()
    env.update({
        "DATABASE_URL": db_url, "REDIS_URL": redis_url, "STAYLER_QUEUE_NAME": queue,
        "STAYLER_STORAGE_DIR": str(storage), "STAYLER_STORAGE_URL": f"file://{storage}",
        "STAYLER_STATE_DIR": str(work_dir / "state"),
        "STAYLER_WORKER_PROCESSES": str(processes), "STAYLER_WORKER_THREADS": str(threads),
        "STAYLER_METRICS_PORT": str(port), "STAYLER_METRICS_DIR": str(work_dir / f"metrics-{port}"),
        "STAYLER_SHUTDOWN_GRACE_S": "5", "STAYLER_SWEEP_INTERVAL_S": "1",
    })
    env.update({k: str(v) for k, v in overrides.items()})
    settings = Settings(shutdown_grace_s=5.0)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(worker_command(settings, processes=processes, threads=threads), env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        yield Fleet(proc, log_path, processes, metrics_port=port)
    finally:
        stop_workers(proc, 20)


class Workload:
    """A user with one person photo and one garment, both registered through the producer."""

    def __init__(self, conn: psycopg.Connection, storage_dir: Path, person_size: tuple[int, int]) -> None:
        """Register the user and the two images (files under ``storage_dir``)."""
        from modelkit.samples import make_garment, make_person, to_bytes
        from producer import register_image
        from producer.accounts import create_user
        from producer.images import ImageLimits
        from storage import from_url

        limits = ImageLimits(max_bytes=20_000_000, max_pixels=40_000_000, thumbnail_size=64)
        storage = from_url(f"file://{storage_dir.resolve()}")
        self.conn = conn
        self.waker: Waker | None = None
        self.user = create_user(conn)
        self.person = register_image(conn, storage, to_bytes(make_person(*person_size, seed=5).image),
                                     owner_id=self.user, owner_type="user", image_type="user", limits=limits).id
        self.garment = register_image(conn, storage, to_bytes(make_garment(seed=3)), owner_id=self.user,
                                      owner_type="user", image_type="cloth", limits=limits).id

    def create_many(self, count: int) -> None:
        """Create ``count`` conversions with ``create_conversion()`` in one statement (pre-queueing)."""
        self.conn.execute(
            "SELECT count(create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s)) "
            "FROM generate_series(1, %s)", (self.user, self.person, self.garment, count))

    def submit_one(self) -> uuid.UUID:
        """Create one conversion through the Python producer (waking a worker when ``waker`` is set)."""
        from producer import submit

        return submit(self.conn, user_id=self.user, user_image_id=self.person, cloth_image_id=self.garment,
                      waker=self.waker)


def terminal_count(conn: psycopg.Connection) -> int:
    """Jobs in a terminal status."""
    row = conn.execute("SELECT count(*) FROM conversion_jobs WHERE status IN ('completed', 'failed', 'cancelled')"
                       ).fetchone()
    return int(row[0]) if row else 0


def wait_terminal(conn: psycopg.Connection, count: int, timeout_s: float, flt: Fleet | None = None,
                  interval_s: float = 0.25) -> None:
    """Wait until ``count`` jobs are terminal; raise with the fleet's log once none became terminal for
    ``timeout_s`` (counted progress, not a window: a loaded machine boots and drains slower)."""
    seen, moved_at = -1, time.monotonic()
    while True:
        done = terminal_count(conn)
        if done >= count:
            return
        if done != seen:
            seen, moved_at = done, time.monotonic()
        elif time.monotonic() - moved_at > timeout_s:
            break
        if flt is not None and flt.proc.poll() is not None:
            raise RuntimeError(f"the worker fleet exited with {flt.proc.returncode}\n{flt.log_tail()}")
        time.sleep(interval_s)
    raise TimeoutError(f"{seen}/{count} conversions finished; none for {timeout_s:.0f} s\n"
                       + (flt.log_tail() if flt else ""))


def drain_rate(conn: psycopg.Connection) -> tuple[int, float, int]:
    """(completed, seconds from the first claim to the last completion, not completed) of the database."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'completed'), "
        "       extract(epoch FROM max(completed_at) - min(started_at))::float8, "
        "       count(*) FILTER (WHERE status <> 'completed') FROM conversion_jobs").fetchone()
    assert row is not None
    return int(row[0]), float(row[1] or 0.0), int(row[2])


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process on this host (``/proc``); None when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
