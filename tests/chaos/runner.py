"""The chaos suite: thousands of conversions through real worker fleets while things break.

``python -m tests.chaos.runner [--conversions 2000]`` (or ``make chaos``; ``pytest -m slow tests/chaos``)

It starts a PostgreSQL cluster and a Redis of its own (never the machine's shared ones), migrates,
registers sample images and submits conversions through the Python producer (idempotency keys, and
retries while the database is away), with some cancelled mid-run, some slow and a few whose stored
input was damaged. Several supervised fleets (``stayler worker``, several processes each, batching
on) run them while the runner SIGKILLs a random worker process every few seconds (once some more
conversions finished since the last kill), restarts
PostgreSQL once and flushes Redis once. It waits for the drain by counted progress, not by the
clock: the run ends when every conversion is terminal, or when nothing moved (no conversion became
terminal, none was submitted) for ``--stall`` seconds, so a slow machine takes longer but is not
judged, and a stuck queue still ends the run. Afterwards it checks, from the database and the
storage folder, that nothing was lost and nothing was done twice, and prints the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from modelkit.samples import make_garment, make_person, to_bytes
from producer import ProducerError, cancel, register_image, submit
from producer.accounts import create_user
from schema.migrate import apply_migrations
from storage import LocalStorage
from tests.reliability.servers import ThrowawayPostgres, ThrowawayRedis
from tests.support.fleet import fleet_environment, start_supervised, stop_all, worker_pids
from tests.support.scratch import run_folder
from tests.support.workload import LIMITS

ROOT = Path(__file__).resolve().parents[2]

#: On top of the fleets' short intervals (``tests.support.fleet.FAST``): the real model, some slow jobs.
CHAOS_ENV = {
    "STAYLER_BACKOFF_MAX_S": "2",
    "STAYLER_FAILPOINTS": "sleep=slow:1",
}


@dataclass
class Figures:
    """What the run did and what the checks found."""

    conversions: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    kills: int = 0
    fleet_restarts: int = 0
    postgres_restarts: int = 0
    redis_flushes: int = 0
    rescues: int = 0
    retries: int = 0
    duplicates: int = 0
    lost: int = 0
    wall_s: float = 0.0
    stalled: bool = False
    problems: list[str] = field(default_factory=list)

    def render(self) -> str:
        """The figures as the lines the issue asks for."""
        return "\n".join([
            "chaos figures",
            f"  conversions        {self.conversions}",
            f"  completed          {self.completed}",
            f"  failed             {self.failed}",
            f"  cancelled          {self.cancelled}",
            f"  kills (SIGKILL)    {self.kills}",
            f"  restarts           {self.fleet_restarts} fleet, {self.postgres_restarts} PostgreSQL, "
            f"{self.redis_flushes} Redis flush",
            f"  rescues            {self.rescues}",
            f"  retries            {self.retries}",
            f"  duplicates found   {self.duplicates}",
            f"  lost               {self.lost}",
            f"  wall time          {self.wall_s:.1f} s" + (" (ended: no progress)" if self.stalled else ""),
            f"  problems           {len(self.problems)}" + "".join(f"\n    - {p}" for p in self.problems[:20]),
        ])


@dataclass
class ChaosConfig:
    """Knobs of a run."""

    conversions: int = 2000
    fleets: int = 3
    processes: int = 2
    threads: int = 2
    batch_size: int = 8
    model: str = "tryon-geometric"
    kill_every_s: tuple[float, float] = (2.0, 5.0)
    #: ... and only once this many more conversions became terminal since the last kill: the kills
    #: keep pace with the work, so a slow machine (fleets that take longer to boot than the kill
    #: interval) still makes progress between them instead of being killed while it boots.
    kill_every_done: int = 15
    cancel_share: float = 0.03
    slow_share: float = 0.05
    bad_share: float = 0.01
    #: The run is stuck when no conversion became terminal and none was submitted for this long.
    stall_s: float = 300.0
    seed: int = 7


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def _retrying(url: str, holder: list[psycopg.Connection], fn, what: str, patience_s: float):
    """Call ``fn(conn)``; while the database is away (up to ``patience_s``), reconnect and try again (a
    producer's retry)."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            if holder[0].closed:
                holder[0] = _connect(url)
            return fn(holder[0])
        except (ProducerError, psycopg.OperationalError) as exc:
            if isinstance(exc, ProducerError) and exc.code != "database_unavailable":
                raise
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: database still unavailable") from exc
            with contextlib.suppress(Exception):
                holder[0].close()
            time.sleep(0.3)


class Chaos:
    """One chaos run."""

    def __init__(self, config: ChaosConfig, work_dir: Path) -> None:
        """Prepare folders and servers (not started)."""
        self.config = config
        self.rng = random.Random(config.seed)
        self.work_dir = work_dir
        self.storage_dir = work_dir / "storage"
        self.log_dir = work_dir / "logs"
        self.storage_dir.mkdir(parents=True)
        self.log_dir.mkdir(parents=True)
        self.pg = ThrowawayPostgres()  # its own folder: the server runs as an unprivileged user
        self.redis = ThrowawayRedis()
        self.db_url = ""
        self.figures = Figures()
        self.submitted: list[uuid.UUID] = []
        self.submit_error: BaseException | None = None
        self.fleets: list[subprocess.Popen[bytes]] = []
        self.stop_chaos = threading.Event()


    def start_services(self) -> None:
        """Start our own PostgreSQL and Redis and migrate."""
        self.pg.start()
        self.redis.start()
        self.db_url = self.pg.create_database("chaos")
        apply_migrations(self.db_url)

    def fleet_env(self, index: int) -> dict[str, str]:
        """Environment of one supervised fleet."""
        return fleet_environment(CHAOS_ENV, {
            "DATABASE_URL": self.db_url, "REDIS_URL": self.redis.url, "STAYLER_QUEUE_NAME": "chaos",
            "STAYLER_STORAGE_DIR": str(self.storage_dir), "STAYLER_STATE_DIR": str(self.work_dir / "state"),
            "STAYLER_CLAIM_BATCH_SIZE": str(self.config.batch_size), "STAYLER_MODEL": self.config.model,
            "STAYLER_METRICS_DIR": str(self.work_dir / f"metrics-{index}"),
            "PYTHONPATH": str(ROOT),
        })

    def start_fleets(self) -> None:
        """``stayler worker`` per fleet: the supervisor restarts a fleet whose process was killed."""
        self.fleets.extend(start_supervised(self.fleet_env(i), self.log_dir / f"fleet-{i}.log",
                                            processes=self.config.processes, threads=self.config.threads)
                           for i in range(self.config.fleets))


    def submit_all(self) -> None:
        """Register images and submit every conversion (runs in a thread, overlapping the chaos)."""
        try:
            self._submit_all()
        except BaseException as exc:  # reported by the main thread
            self.submit_error = exc

    def _submit_all(self) -> None:
        cfg = self.config
        patience = cfg.stall_s
        holder = [_connect(self.db_url)]
        storage = LocalStorage(self.storage_dir)
        user = _retrying(self.db_url, holder, create_user, "user", patience)
        garment = _retrying(self.db_url, holder, lambda c: register_image(
            c, storage, to_bytes(make_garment(seed=3)), owner_id=user, owner_type="user", image_type="cloth",
            limits=LIMITS).id, "garment", patience)
        persons = [_retrying(self.db_url, holder, lambda c, s=s: register_image(
            c, storage, to_bytes(make_person(96, 128, seed=s).image), owner_id=user, owner_type="user",
            image_type="user", limits=LIMITS), "person", patience) for s in range(4)]
        damaged = persons[-1]  # its stored bytes rot after registration: conversions using it must fail
        (self.storage_dir / damaged.file_path).write_bytes(b"\xff\xd8\xff\xe0 damaged after upload")
        good = [p.id for p in persons[:-1]]
        for i in range(cfg.conversions):
            roll = self.rng.random()
            person = damaged.id if roll < cfg.bad_share else self.rng.choice(good)
            style = "slow" if cfg.bad_share <= roll < cfg.bad_share + cfg.slow_share else None
            cid = _retrying(self.db_url, holder, lambda c, p=person, s=style, i=i: submit(
                c, user_id=user, user_image_id=p, cloth_image_id=garment, style_name=s,
                idempotency_key=f"chaos-{i}", max_retries=3), "submit", patience)
            self.submitted.append(cid)
            if self.rng.random() < cfg.cancel_share:
                _retrying(self.db_url, holder, lambda c, cid=cid: cancel(c, cid, user_id=user), "cancel", patience)
            if i % 200 == 199:
                time.sleep(0.5)  # spread submission over the first part of the run
        if holder[0] is not None:
            holder[0].close()


    def worker_pids(self) -> list[int]:
        """Live worker processes (Dramatiq's forked workers) of our fleets."""
        return worker_pids(self.fleets)

    def busy_pids(self, conn: psycopg.Connection) -> set[int]:
        """Pids holding a processing job."""
        rows = conn.execute("SELECT DISTINCT worker_id FROM conversion_jobs WHERE status = 'processing'").fetchall()
        return {int(r[0].split(":")[1]) for r in rows if r[0]}

    def terminal_count(self, conn: psycopg.Connection) -> int:
        """Conversions in a terminal status."""
        row = conn.execute("SELECT count(*) FROM conversions WHERE status IN ('completed','failed','cancelled')"
                           ).fetchone()
        return int(row[0]) if row else 0

    def run(self) -> Figures:
        """The whole run: services, workload, chaos, drain, checks."""
        cfg = self.config
        started = time.monotonic()
        self.start_services()
        submitter = threading.Thread(target=self.submit_all, name="chaos-submit", daemon=True)
        submitter.start()
        self.start_fleets()
        next_kill = time.monotonic() + self.rng.uniform(*cfg.kill_every_s)
        done = 0
        done_at_kill = 0
        progress = (-1, -1)  # (terminal, submitted) when last seen moving
        moved_at = time.monotonic()
        conn: psycopg.Connection | None = None
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            seen = (done, len(self.submitted))
            if seen != progress:
                progress, moved_at = seen, now
            elif now - moved_at > cfg.stall_s:
                self.figures.stalled = True
                break
            try:
                if conn is None or conn.closed:
                    conn = _connect(self.db_url)
                done = self.terminal_count(conn)
                busy = self.busy_pids(conn)
            except psycopg.OperationalError:
                conn = None
                continue
            total = cfg.conversions
            finished_submitting = not submitter.is_alive()
            if finished_submitting and done >= total:
                break
            if not self.figures.postgres_restarts and done >= total * 0.3:
                conn.close()
                conn = None
                self.pg.restart(down_s=3.0)
                self.figures.postgres_restarts += 1
                continue
            if not self.figures.redis_flushes and done >= total * 0.6:
                self.redis.flushall()
                self.figures.redis_flushes += 1
            if (done < total * 0.97 and time.monotonic() >= next_kill
                    and done - done_at_kill >= cfg.kill_every_done):
                done_at_kill = done
                pids = self.worker_pids()
                preferred = [p for p in pids if p in busy] or pids
                if preferred:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.rng.choice(preferred), signal.SIGKILL)
                        self.figures.kills += 1
                next_kill = time.monotonic() + self.rng.uniform(*cfg.kill_every_s)
        if conn is not None:
            conn.close()
        submitter.join(timeout=5)
        self.figures.wall_s = time.monotonic() - started
        stop_all(self.fleets)
        self.check()
        return self.figures


    def check(self) -> None:
        """Count and verify everything from the database and the storage folder."""
        f = self.figures
        problems = f.problems
        if self.submit_error is not None:
            problems.append(f"submission failed: {self.submit_error!r}")
        if f.stalled:
            problems.append(f"no progress for {self.config.stall_s:.0f} s: the run ended before the queue drained")
        logs = "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("fleet-*.log")))
        f.fleet_restarts = len(re.findall(r"the fleet exited unexpectedly", logs))
        f.rescues = len(re.findall(r"rescued a job from a dead worker", logs))
        tracebacks = len(re.findall(r"Traceback", logs))
        with _connect(self.db_url) as conn:
            q = conn.execute
            by_status: dict[str, int] = dict(q("SELECT status, count(*) FROM conversions GROUP BY status").fetchall())
            f.conversions = sum(by_status.values())
            f.completed = by_status.get("completed", 0)
            f.failed = by_status.get("failed", 0)
            f.cancelled = by_status.get("cancelled", 0)
            f.retries = int(q("SELECT coalesce(sum(retry_count), 0) FROM conversion_jobs").fetchone()[0])  # type: ignore[index]
            ids = {r[0] for r in q("SELECT id FROM conversions").fetchall()}
            missing = set(self.submitted) - ids
            not_terminal = q("SELECT count(*) FROM conversions WHERE status NOT IN ('completed','failed',"
                             "'cancelled')").fetchone()[0]  # type: ignore[index]
            f.lost = len(missing) + int(not_terminal) + max(self.config.conversions - f.conversions, 0)
            if len(set(self.submitted)) != len(self.submitted):
                problems.append("an idempotent resubmission created a second conversion")
            if f.conversions != self.config.conversions:
                problems.append(f"{f.conversions} conversions for {self.config.conversions} submissions")
            # Jobs: one per conversion, none left running, statuses in step, retries bounded.
            checks = {
                "conversions with other than one job":
                    "SELECT count(*) FROM (SELECT c.id FROM conversions c LEFT JOIN conversion_jobs j "
                    "ON j.conversion_id = c.id GROUP BY c.id HAVING count(j.id) <> 1) x",
                "jobs not in their conversion's status":
                    "SELECT count(*) FROM conversion_jobs j JOIN conversions c ON c.id = j.conversion_id "
                    "WHERE j.status <> c.status",
                "jobs with retry_count > max_retries":
                    "SELECT count(*) FROM conversion_jobs WHERE retry_count > max_retries",
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
                "metrics rows of non-terminal conversions":
                    "SELECT count(*) FROM conversion_metrics m JOIN conversions c ON c.id = m.conversion_id "
                    "WHERE c.status NOT IN ('completed','failed','cancelled')",
                "metrics rows whose success disagrees with the status":
                    "SELECT count(*) FROM conversion_metrics m JOIN conversions c ON c.id = m.conversion_id "
                    "WHERE m.success <> (c.status = 'completed')",
                "damaged inputs that did not fail as invalid_image":
                    "SELECT count(*) FROM conversion_jobs j JOIN conversions c ON c.id = j.conversion_id "
                    "JOIN images i ON i.id = c.user_image_id WHERE c.status = 'failed' AND j.error_type IS "
                    "DISTINCT FROM 'invalid_image' AND j.error_type IS DISTINCT FROM 'worker_lost' "
                    "AND i.file_path LIKE 'images/%' AND j.retry_count = 0",
            }
            for what, sql in checks.items():
                n = int(q(sql).fetchone()[0])  # type: ignore[index]
                if n:
                    problems.append(f"{n} {what}")
            extra_rows = int(q("SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) n FROM images WHERE "
                               "type = 'result' GROUP BY split_part(file_path, '/', 2)) x").fetchone()[0])  # type: ignore[index]
            result_rows = {r[0]: (r[1], r[2]) for r in q(
                "SELECT i.file_path, c.id, c.status FROM images i JOIN conversions c ON c.result_image_id = i.id "
                "WHERE i.type = 'result'").fetchall()}
            statuses: dict[str, str] = dict(q("SELECT id::text, status FROM conversions").fetchall())
            bad_errors = q("SELECT DISTINCT error_type FROM conversion_jobs WHERE status = 'failed'").fetchall()
        from worker.errors import ERROR_TYPES

        unknown = [r[0] for r in bad_errors if r[0] not in ERROR_TYPES]
        if unknown:
            problems.append(f"failed jobs with undocumented error_type {unknown}")
        # Storage: per completed conversion exactly one result file and one thumbnail; nothing else.
        results_root = self.storage_dir / "results"
        files = [p for p in results_root.rglob("*") if p.is_file()] if results_root.exists() else []
        extra_files = 0
        per_conversion: dict[str, list[str]] = {}
        for p in files:
            per_conversion.setdefault(p.parent.name, []).append(p.name)
        for cid, names in per_conversion.items():
            status = statuses.get(cid)
            if status != "completed":
                problems.append(f"result files of a {status or 'missing'} conversion {cid}: {names}")
                extra_files += len(names)
                continue
            mains = [n for n in names if not n.endswith(".thumb.jpg")]
            thumbs = [n for n in names if n.endswith(".thumb.jpg")]
            if len(mains) != 1 or len(thumbs) != 1:
                problems.append(f"conversion {cid} has files {sorted(names)}")
                extra_files += max(len(mains) - 1, 0) + max(len(thumbs) - 1, 0)
            for m in mains:
                if f"results/{cid}/{m}" not in result_rows:
                    problems.append(f"result file results/{cid}/{m} has no row")
        completed_with_file = {cid for cid, names in per_conversion.items() if statuses.get(cid) == "completed"}
        for path, (cid, _status) in result_rows.items():
            if not (self.storage_dir / path).is_file():
                problems.append(f"result row {path} of {cid} has no file")
        missing_files = len([c for c, st in statuses.items() if st == "completed" and c not in completed_with_file])
        if missing_files:
            problems.append(f"{missing_files} completed conversions without result files")
        partial = [str(p) for p in self.storage_dir.rglob(".tmp-*")]
        if partial:
            problems.append(f"partial files left: {partial[:5]}")
        f.duplicates = extra_rows + extra_files
        if tracebacks:
            # Not a failure by itself (a killed peer's connection can log one), but worth reading.
            print(f"note: {tracebacks} traceback(s) in the fleet logs under {self.log_dir}", file=sys.stderr)

    def close(self) -> None:
        """Stop everything we started."""
        stop_all(self.fleets)
        self.redis.stop()
        self.pg.destroy()


@contextlib.contextmanager
def chaos_run(config: ChaosConfig, keep: bool = False) -> Iterator[Chaos]:
    """A chaos run in a temporary folder, cleaned up afterwards (unless ``keep``)."""
    with run_folder("stayler-chaos-", keep) as work_dir:
        chaos = Chaos(config, work_dir)
        try:
            yield chaos
        finally:
            chaos.close()


def main(argv: list[str] | None = None) -> int:
    """Run the chaos suite and print its figures; exit 1 if any check failed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversions", type=int, default=2000)
    parser.add_argument("--fleets", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="tryon-geometric")
    parser.add_argument("--stall", type=float, default=300.0,
                        help="end the run when nothing became terminal and nothing was submitted for this many s")
    parser.add_argument("--kill-every-done", type=int, default=15,
                        help="kill only once this many more conversions finished since the last kill")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (logs, storage)")
    args = parser.parse_args(argv)
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so the fleets and servers we started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    config = ChaosConfig(conversions=args.conversions, fleets=args.fleets, processes=args.processes,
                         threads=args.threads, batch_size=args.batch_size, model=args.model,
                         stall_s=args.stall, kill_every_done=args.kill_every_done, seed=args.seed)
    with chaos_run(config, keep=args.keep) as chaos:
        figures = chaos.run()
        print(figures.render(), flush=True)
        if args.keep:
            print(f"run folder: {chaos.work_dir}")
    ok = not figures.problems and figures.duplicates == 0 and figures.lost == 0
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
