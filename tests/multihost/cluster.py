"""Shared services and "hosts" for the scale-out suites, all on loopback and all our own.

A :class:`Cluster` starts a private PostgreSQL with a small ``max_connections``, PgBouncer in
transaction mode in front of it, a Redis (plain, or Sentinel-managed), and the storage (a moto S3
server and bucket, or a folder). Each "host" is one ``stayler worker`` supervisor with its own state
and metrics folders; the hosts share nothing else. Workers reach PostgreSQL through PgBouncer
(``STAYLER_DATABASE_POOLED=true``), the leader directly when ``direct_url`` is on.

Conversions are submitted through the pooler by plain SQL (``SELECT create_conversion(…)``, as a
service in another language would) and by the Python producer, with idempotency keys and retries
while the database is away. :meth:`Cluster.check` then verifies from the database and the storage
that every conversion ended, that each completed one has exactly one result row, one result object
and one thumbnail, and that nothing is stored for the others.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import psycopg

from core.settings import Settings
from modelkit.samples import make_garment, make_person, to_bytes
from producer import cancel, register_image, submit
from producer.accounts import create_user
from producer.images import ImageRecord
from schema.connections import connect
from schema.migrate import apply_migrations
from schema.statuses import ConversionStatus
from storage import Storage, from_url
from tests.infra.fault_proxy import FaultProxy
from tests.infra.pgbouncer import PgBouncer
from tests.infra.postgres import SmallPostgres
from tests.infra.redis_sentinel import RedisSentinelGroup
from tests.infra.s3 import S3Server
from tests.reliability.servers import ThrowawayRedis
from tests.support.fleet import FAST, retrying, start_supervised, stop_all, worker_pids
from tests.support.workload import LIMITS

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

#: The fleets' short intervals (``tests.support.fleet.FAST``) but the default retry back-off, a
#: database timeout that outlasts a failover, and some slow jobs.
HOST_ENV = {
    **{name: value for name, value in FAST.items() if not name.startswith("STAYLER_BACKOFF_")},
    "STAYLER_LEADER_LEASE_S": "5",  # 3 s lapsed under a starved CPU (load 50 on 2 cores), not under its own work
    "STAYLER_DB_TIMEOUT_S": "10",
    "STAYLER_FAILPOINTS": "sleep=slow:1",
}


@dataclass
class ClusterConfig:
    """What to start."""

    hosts: int = 3
    processes: int = 2
    threads: int = 1
    batch_size: int = 8
    max_connections: int = 30
    pool_size: int = 20
    direct_url: bool = True
    s3: bool = True
    sentinel: bool = True
    max_retries: int = 3
    #: Each host reaches PostgreSQL (pooled and direct) through fault proxies of its own, so the
    #: run can partition one host (black-hole its connections, no RST).
    proxied: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Checked:
    """What :meth:`Cluster.check` counted and found."""

    conversions: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    retries: int = 0
    #: Attempts charged (requeued with a retry, or failed) for a storage or database error.
    retries_for_shared_services: int = 0
    #: Attempts handed back uncharged (a shared service down, or a graceful stop).
    released: int = 0
    duplicates: int = 0
    lost: int = 0
    result_objects: int = 0
    #: error_type → failed conversions.
    failed_by_type: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class Cluster:
    """The shared services and the hosts of one run."""

    def __init__(self, config: ClusterConfig, work_dir: Path) -> None:
        """Prepare folders; :meth:`start_services` starts the servers."""
        self.config = config
        self.work_dir = work_dir
        self.log_dir = work_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pg = SmallPostgres(config.max_connections)
        self.bouncer: PgBouncer | None = None
        self.sentinel: RedisSentinelGroup | None = None
        self.redis: ThrowawayRedis | None = None
        self.s3: S3Server | None = None
        self.bucket = ""
        self.direct_url = ""
        self.pooled_url = ""
        self.redis_url = ""
        self.storage_url = ""
        self.hosts: list[subprocess.Popen[bytes]] = []
        #: Per host: the fault proxies in front of PgBouncer and of PostgreSQL (``proxied`` only).
        self.proxies: list[tuple[FaultProxy, FaultProxy]] = []
        self.submitted: list[uuid.UUID] = []
        #: Most client backends seen on the server at once (this poller's own not counted).
        self.peak_connections = 0
        #: Most server connections PgBouncer held at once.
        self.peak_pooled = 0
        self._saved_env: dict[str, str | None] = {}
        self._stop_polling = threading.Event()
        self._poller: threading.Thread | None = None

    def start_services(self) -> None:
        """PostgreSQL (migrated), PgBouncer, Redis and the storage."""
        cfg = self.config
        self.pg.start()
        self.direct_url = self.pg.create_database("stayler")
        apply_migrations(self.direct_url)
        self.bouncer = PgBouncer(self.pg.url, default_pool_size=cfg.pool_size)
        self.bouncer.start()
        self.pooled_url = self.bouncer.url("stayler")
        if cfg.sentinel:
            self.sentinel = RedisSentinelGroup()
            self.sentinel.start()
            self.redis_url = self.sentinel.url
        else:
            self.redis = ThrowawayRedis()
            self.redis.start()
            self.redis_url = self.redis.url
        if cfg.s3:
            self.s3 = S3Server()
            self.s3.start()
            for name, value in self.s3.env().items():  # this process's producer writes to the bucket too
                self._saved_env[name] = os.environ.get(name)
                os.environ[name] = value
            self.bucket = self.s3.create_bucket()
            self.storage_url = f"s3://{self.bucket}/fleet"
        else:
            folder = self.work_dir / "shared-storage"
            folder.mkdir()
            self.storage_url = f"file://{folder}"
        if cfg.proxied:
            assert self.bouncer is not None
            self.proxies = [(FaultProxy(self.bouncer.port).start(), FaultProxy(self.pg.port).start())
                            for _ in range(cfg.hosts)]
        self._poller = threading.Thread(target=self._poll_connections, name="connection-poller", daemon=True)
        self._poller.start()

    def storage(self) -> Storage:
        """The shared storage, as this process sees it."""
        return from_url(self.storage_url)

    def _poll_connections(self) -> None:
        conn: psycopg.Connection | None = None
        while not self._stop_polling.wait(0.2):
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.pg.url, autocommit=True, connect_timeout=2)
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                                   ).fetchone()
                self.peak_connections = max(self.peak_connections, int(row[0]) - 1 if row else 0)
                if self.bouncer is not None:
                    self.peak_pooled = max(self.peak_pooled, self.bouncer.server_connections())
            except psycopg.Error:
                conn = None

    def host_env(self, index: int) -> dict[str, str]:
        """The environment of one host: its own folders, the shared services' URLs."""
        cfg = self.config
        host_dir = self.work_dir / f"host-{index}"
        env = dict(os.environ)
        env.update(HOST_ENV)
        env.update({
            "DATABASE_URL": self.pooled_url, "STAYLER_DATABASE_POOLED": "true", "REDIS_URL": self.redis_url,
            "STAYLER_STORAGE_URL": self.storage_url, "STAYLER_STATE_DIR": str(host_dir / "state"),
            "STAYLER_METRICS_DIR": str(host_dir / "metrics"), "STAYLER_QUEUE_NAME": "multihost",
            "STAYLER_CLAIM_BATCH_SIZE": str(cfg.batch_size), "PYTHONPATH": str(ROOT), "TMPDIR": str(host_dir),
        })
        env.pop("STAYLER_STORAGE_DIR", None)
        env.pop("STAYLER_DIRECT_DATABASE_URL", None)
        if cfg.direct_url:
            env["STAYLER_DIRECT_DATABASE_URL"] = self.direct_url
        if self.proxies:
            pooled, direct = self.proxies[index]
            env["DATABASE_URL"] = pooled.url(self.pooled_url)
            if cfg.direct_url:
                env["STAYLER_DIRECT_DATABASE_URL"] = direct.url(self.direct_url)
        if self.s3 is not None:
            env.update(self.s3.env())
        env.update(cfg.extra_env)
        return env

    def start_hosts(self) -> None:
        """One ``stayler worker`` supervisor per host."""
        for i in range(self.config.hosts):
            (self.work_dir / f"host-{i}").mkdir(exist_ok=True)
            self.hosts.append(start_supervised(self.host_env(i), self.log_dir / f"host-{i}.log",
                                               processes=self.config.processes, threads=self.config.threads))

    def worker_pids(self) -> list[int]:
        """Live worker processes (Dramatiq's forked children) of every host."""
        return worker_pids(self.hosts)

    def wait_for_workers(self, timeout_s: float = 180.0) -> None:
        """Block until every host runs all its worker processes and they registered in ``workers``."""
        want = self.config.hosts * self.config.processes
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.worker_pids()) >= want and self.registered_workers() >= want:
                return
            if any(h.poll() is not None for h in self.hosts):
                raise RuntimeError("a host exited at start:\n" + self.logs())
            time.sleep(0.5)
        raise RuntimeError(f"{len(self.worker_pids())} of {want} worker processes after {timeout_s} s\n" + self.logs())

    def host_of(self, pid: int) -> int | None:
        """The index of the host whose process tree holds ``pid``."""
        for index, host in enumerate(self.hosts):
            with contextlib.suppress(psutil.NoSuchProcess):
                if pid in {p.pid for p in psutil.Process(host.pid).children(recursive=True)}:
                    return index
        return None

    def partition(self, index: int, on: bool) -> None:
        """Black-hole (on) or heal (off) every database connection of host ``index``."""
        for proxy in self.proxies[index]:
            proxy.black_hole(on)

    def freeze(self, index: int, on: bool) -> None:
        """SIGSTOP (on) or SIGCONT (off) every process of host ``index``, as a stalled VM."""
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.hosts[index].pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.send_signal(signal.SIGSTOP if on else signal.SIGCONT)

    def leader(self) -> tuple[int, int | None]:
        """The lease's epoch and its holder's pid (None when lapsed or unreadable)."""
        with contextlib.suppress(psycopg.Error), psycopg.connect(self.direct_url, autocommit=True,
                                                                  connect_timeout=2) as conn:
            row = conn.execute("SELECT epoch, holder, expires_at > now() FROM leader_lease WHERE name = 'fleet'"
                               ).fetchone()
            if row:
                pid = int(row[1].split(":")[1]) if row[1] and row[2] and row[1].count(":") >= 1 \
                    and row[1].split(":")[1].isdigit() else None
                return int(row[0]), pid
        return -1, None

    def registry_lies(self) -> int:
        """Workers listed stopped although they heartbeat after the stop was written (0 when truthful)."""
        with contextlib.suppress(psycopg.Error), psycopg.connect(self.direct_url, autocommit=True,
                                                                  connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM workers WHERE stopped_at IS NOT NULL "
                               "AND heartbeat_at > stopped_at").fetchone()
            return int(row[0]) if row else 0
        return 0

    def registered_workers(self) -> int:
        """Worker rows that are running."""
        with contextlib.suppress(psycopg.Error), psycopg.connect(self.direct_url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM workers WHERE stopped_at IS NULL").fetchone()
            return int(row[0]) if row else 0
        return 0

    def logs(self, tail: int = 4000) -> str:
        """The end of every host's log."""
        return "\n".join(p.read_text(errors="replace")[-tail:] for p in sorted(self.log_dir.glob("host-*.log")))

    def producer_connection(self) -> psycopg.Connection:
        """A producer's connection through the pooler (named, no prepared statements)."""
        settings = Settings().model_copy(update={"database_pooled": True, "db_timeout_s": 5.0})
        return connect(self.pooled_url, settings, "producer")

    def sql_connection(self) -> psycopg.Connection:
        """A plain client's connection through the pooler, as any language's driver would open it."""
        return psycopg.connect(self.pooled_url, autocommit=True, prepare_threshold=None, connect_timeout=5)

    def submit(self, count: int, *, rate_per_s: float | None = None, seed: int = 7, cancel_share: float = 0.0,
               slow_share: float = 0.0, bad_share: float = 0.0, timeout_s: float = 600.0) -> None:
        """Register images and submit ``count`` conversions, alternating plain SQL and Python.

        ``rate_per_s`` spreads them over time; ``cancel_share`` of them are cancelled right away or
        later, ``slow_share`` take a second longer, ``bad_share`` use an input damaged after upload.
        """
        rng = random.Random(seed)
        deadline = time.monotonic() + timeout_s
        storage = self.storage()
        retries = self.config.max_retries
        py: list[psycopg.Connection | None] = [None]
        sql: list[psycopg.Connection | None] = [None]
        user = retrying(self.producer_connection, py, create_user, deadline)

        def image(conn: psycopg.Connection, data: bytes, kind: str) -> ImageRecord:
            return register_image(conn, storage, data, owner_id=user, owner_type="user", image_type=kind,
                                  limits=LIMITS)

        def by_sql(conn: psycopg.Connection, person: uuid.UUID, style: str | None, key: str) -> uuid.UUID:
            row = conn.execute("SELECT create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s, "
                               "style_name := %s, max_retries := %s, idempotency_key := %s)",
                               (user, person, garment, style, retries, key)).fetchone()
            assert row is not None
            return uuid.UUID(str(row[0]))

        def by_python(conn: psycopg.Connection, person: uuid.UUID, style: str | None, key: str) -> uuid.UUID:
            return submit(conn, user_id=user, user_image_id=person, cloth_image_id=garment, style_name=style,
                          max_retries=retries, idempotency_key=key)

        def cancel_one(conn: psycopg.Connection, victim: uuid.UUID) -> object:
            return cancel(conn, victim, user_id=user)

        garment = retrying(self.producer_connection, py,
                           functools.partial(image, data=to_bytes(make_garment(seed=3)), kind="cloth"), deadline).id
        persons = [retrying(self.producer_connection, py, functools.partial(
            image, data=to_bytes(make_person(96, 128, seed=s).image), kind="user"), deadline) for s in range(4)]
        damaged = persons[-1]
        self._damage(damaged.file_path)
        good = [p.id for p in persons[:-1]]
        started = time.monotonic()
        to_cancel: list[uuid.UUID] = []
        for i in range(count):
            roll = rng.random()
            person = damaged.id if roll < bad_share else rng.choice(good)
            style = "slow" if bad_share <= roll < bad_share + slow_share else None
            if i % 2 == 0:
                cid = retrying(self.sql_connection, sql, functools.partial(by_sql, person=person, style=style,
                                                                         key=f"mh-{i}"), deadline)
            else:
                cid = retrying(self.producer_connection, py, functools.partial(by_python, person=person, style=style,
                                                                             key=f"mh-{i}"), deadline)
            self.submitted.append(cid)
            if rng.random() < cancel_share:
                to_cancel.append(cid)
            if to_cancel and rng.random() < 0.5:  # some at once, some after a while (mid-flight)
                retrying(self.producer_connection, py, functools.partial(cancel_one, victim=to_cancel.pop(0)),
                         deadline)
            if rate_per_s:
                ahead = started + (i + 1) / rate_per_s - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        for victim in to_cancel:
            retrying(self.producer_connection, py, functools.partial(cancel_one, victim=victim), deadline)
        for holder in (py, sql):
            if holder[0] is not None:
                holder[0].close()

    def _damage(self, key: str) -> None:
        """Overwrite a stored input with bytes that do not decode (the worker must fail it, not retry)."""
        if self.s3 is not None:
            self.s3.client().put_object(Bucket=self.bucket, Key=f"fleet/{key}", Body=b"\xff\xd8\xff damaged")
        else:
            (Path(self.storage_url.removeprefix("file://")) / key).write_bytes(b"\xff\xd8\xff damaged")

    def counts(self) -> dict[str, int]:
        """Conversions per status (direct connection; empty while the database is away)."""
        with contextlib.suppress(psycopg.Error), psycopg.connect(self.direct_url, autocommit=True,
                                                                  connect_timeout=2) as conn:
            return {r[0]: int(r[1]) for r in conn.execute("SELECT status, count(*) FROM conversions GROUP BY 1")}
        return {}

    def result_keys(self) -> list[str]:
        """Every stored key under ``results/`` (storage keys, without the bucket prefix)."""
        if self.s3 is not None:
            return [k.removeprefix("fleet/") for k in self.s3.keys(self.bucket, "fleet/results/")]
        root = Path(self.storage_url.removeprefix("file://"))
        return [str(p.relative_to(root)) for p in (root / "results").rglob("*") if p.is_file()] \
            if (root / "results").exists() else []

    def check(self, expected: int) -> Checked:
        """Verify the run from the database and the storage; see the module's docstring."""
        out = Checked()
        problems = out.problems
        with psycopg.connect(self.direct_url, autocommit=True) as conn:
            def one(sql: str) -> int:
                row = conn.execute(sql).fetchone()
                return int(row[0]) if row and row[0] is not None else 0

            by_status = {r[0]: int(r[1]) for r in conn.execute("SELECT status, count(*) FROM conversions GROUP BY 1")}
            out.conversions = sum(by_status.values())
            out.completed, out.failed, out.cancelled = (by_status.get(s, 0) for s in (
                ConversionStatus.COMPLETED, ConversionStatus.FAILED, ConversionStatus.CANCELLED))
            out.retries = one("SELECT sum(retry_count) FROM conversion_jobs")
            out.retries_for_shared_services = one(
                "SELECT count(*) FROM conversion_job_attempts WHERE outcome IN ('requeued', 'failed') "
                "AND error_type IN ('storage', 'database')")
            out.released = one("SELECT count(*) FROM conversion_job_attempts WHERE outcome = 'released'")
            out.failed_by_type = {str(r[0]): int(r[1]) for r in conn.execute(
                "SELECT error_type, count(*) FROM conversion_jobs WHERE status = 'failed' GROUP BY 1 ORDER BY 1")}
            ids = {r[0] for r in conn.execute("SELECT id FROM conversions")}
            not_terminal = out.conversions - out.completed - out.failed - out.cancelled
            out.lost = len(set(self.submitted) - ids) + not_terminal + max(expected - out.conversions, 0)
            if out.conversions != expected:
                problems.append(f"{out.conversions} conversions for {expected} submissions")
            if len(set(self.submitted)) != len(self.submitted):
                problems.append("an idempotent resubmission created a second conversion")
            checks = {
                "conversions not terminal": "SELECT count(*) FROM conversions WHERE status NOT IN "
                                            "('completed','failed','cancelled')",
                "conversions with other than one job":
                    "SELECT count(*) FROM (SELECT c.id FROM conversions c LEFT JOIN conversion_jobs j "
                    "ON j.conversion_id = c.id GROUP BY c.id HAVING count(j.id) <> 1) x",
                "jobs not in their conversion's status":
                    "SELECT count(*) FROM conversion_jobs j JOIN conversions c ON c.id = j.conversion_id "
                    "WHERE j.status <> c.status",
                "jobs with retry_count > max_retries": "SELECT count(*) FROM conversion_jobs "
                                                       "WHERE retry_count > max_retries",
                "completed conversions without a result image":
                    "SELECT count(*) FROM conversions c LEFT JOIN images i ON i.id = c.result_image_id "
                    "WHERE c.status = 'completed' AND (i.id IS NULL OR i.type <> 'result')",
                "failed or cancelled conversions with a result":
                    "SELECT count(*) FROM conversions WHERE status IN ('failed','cancelled') "
                    "AND result_image_id IS NOT NULL",
                "result image rows no conversion points at":
                    "SELECT count(*) FROM images i WHERE i.type = 'result' AND NOT EXISTS "
                    "(SELECT 1 FROM conversions c WHERE c.result_image_id = i.id)",
                "terminal conversions without exactly one metrics row":
                    "SELECT count(*) FROM conversions c WHERE c.status IN ('completed','failed','cancelled') "
                    "AND (SELECT count(*) FROM conversion_metrics m WHERE m.conversion_id = c.id) <> 1",
            }
            for what, sql in checks.items():
                n = one(sql)
                if n:
                    problems.append(f"{n} {what}")
            extra_rows = one("SELECT sum(n - 1) FROM (SELECT count(*) n FROM images WHERE type = 'result' "
                             "GROUP BY split_part(file_path, '/', 2)) x")
            rows = {r[0]: r[1] for r in conn.execute(
                "SELECT c.id::text, i.file_path FROM conversions c JOIN images i ON i.id = c.result_image_id "
                "WHERE c.status = 'completed'")}
            statuses = {r[0]: r[1] for r in conn.execute("SELECT id::text, status FROM conversions")}
        keys = self.result_keys()
        out.result_objects = len(keys)
        per_conversion: dict[str, list[str]] = {}
        for key in keys:
            parts = key.split("/")
            per_conversion.setdefault(parts[1] if len(parts) == 3 else key, []).append(key)
        extra_objects = 0
        for cid, found in per_conversion.items():
            status = statuses.get(cid)
            if status != "completed":
                problems.append(f"objects of a {status or 'unknown'} conversion {cid}: {sorted(found)}")
                extra_objects += len(found)
                continue
            mains = [k for k in found if not k.endswith(".thumb.jpg")]
            thumbs = [k for k in found if k.endswith(".thumb.jpg")]
            if len(mains) != 1 or len(thumbs) != 1:
                problems.append(f"conversion {cid} has objects {sorted(found)}")
                extra_objects += max(len(mains) - 1, 0) + max(len(thumbs) - 1, 0)
            elif mains[0] != rows.get(cid):
                problems.append(f"conversion {cid}: object {mains[0]} but row {rows.get(cid)}")
        missing = [cid for cid in rows if cid not in per_conversion]
        if missing:
            problems.append(f"{len(missing)} completed conversions without result objects, e.g. {missing[:3]}")
        out.duplicates = extra_rows + extra_objects
        return out

    def stop_hosts(self) -> None:
        """SIGTERM every host (in-flight jobs finish or go back) and wait."""
        stop_all(self.hosts, timeout=40)

    def close(self) -> None:
        """Stop everything this cluster started and restore the environment."""
        self.stop_hosts()
        self._stop_polling.set()
        if self._poller is not None:
            self._poller.join(5)
        for pair in self.proxies:
            for proxy in pair:
                proxy.black_hole(False)
                proxy.close()
        if self.bouncer is not None:
            self.bouncer.stop()
        if self.sentinel is not None:
            self.sentinel.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.s3 is not None:
            self.s3.stop()
        self.pg.destroy()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def render(title: str, rows: list[tuple[str, Any]]) -> str:
    """Aligned ``name value`` lines under a title."""
    width = max(len(name) for name, _ in rows)
    return "\n".join([title] + [f"  {name:<{width}}  {value}" for name, value in rows])
