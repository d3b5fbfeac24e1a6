"""1. Queue overhead: conversions/s with the do-nothing model and all bookkeeping, beside pgqueuer.

For each (worker processes, claim batch size) a fresh database gets ``queue_jobs`` conversions
pre-queued through ``create_conversion()``; then a fleet starts and drains them. The rate is
completed conversions / (last ``completed_at`` − first ``started_at``), read from the database, so
process start-up is not counted. Each conversion does everything a real one does except the model's
arithmetic: claim (job, conversion, 'convert' usage row), read both input files, decode, the null
ONNX model, render, encode the result, write result and thumbnail files (fsync'd, atomic), one
fenced ``jobs_complete`` per batch (result image row, conversion, job, metrics row).

Beside each configuration, in the same repeat, the fair peer (``bench.peer_pgqueuer``): the same
conversions, the same storage writes, the same ``null`` model and the same schema functions, on
pgqueuer, at the same processes, threads and batch; the rate is read from the database the same way.
The project's rows carry the ratio project / peer (target ≥ 1.0×).

As context only, pgqueuer (an optional ``bench`` dependency) also drains ``pgqueuer_jobs`` no-op
jobs in its own fresh database, one process, at each of its batch sizes: a queue with no work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psycopg

from bench.common import Row, Services, Sizes, Workload, drain_rate, fleet, wait_terminal

NAME = "queue"
log = logging.getLogger(__name__)


def run_project(svc: Services, sizes: Sizes, processes: int, batch: int) -> float:
    """Conversions/s of the project's fleet for one configuration."""
    label = f"q{processes}x{batch}"
    work = svc.work_dir / label
    with svc.fresh_database(label) as url, psycopg.connect(url, autocommit=True) as conn:
        load = Workload(conn, work / "storage", sizes.null_person_size)
        load.create_many(sizes.queue_jobs)
        conn.execute("VACUUM ANALYZE")
        total = sizes.queue_jobs
        timeout = max(300.0, total / 50)  # without progress (wait_terminal): includes the fleet's boot
        with fleet(url, svc.redis_url, svc.queue_name(label), work, processes=processes,
                   STAYLER_MODEL="null", STAYLER_MODEL_THREADS="1", STAYLER_CLAIM_BATCH_SIZE=str(batch)) as flt:
            wait_terminal(conn, total, timeout, flt)
        done, seconds, other = drain_rate(conn)
        if other:
            raise RuntimeError(f"{other} conversions did not complete in {label}")
        return done / seconds if seconds > 0 else float("nan")


async def _pgqueuer_drain(url: str, jobs: int, batch: int) -> float:
    """Install pgqueuer, enqueue ``jobs`` no-op jobs in bulk, drain them; jobs/s of the drain.

    Uses asyncpg, pgqueuer's primary driver, when it is installed (the psycopg driver was several
    times slower here), else psycopg.
    """
    from pgqueuer import QueueManager
    from pgqueuer.models import Job
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    async def driver() -> tuple[Any, Any]:
        try:
            import asyncpg
            from pgqueuer.db import AsyncpgDriver
        except ImportError:
            from pgqueuer.db import PsycopgDriver

            conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
            return conn, PsycopgDriver(conn)
        conn = await asyncpg.connect(url)
        return conn, AsyncpgDriver(conn)

    setup, drv = await driver()
    try:
        queries = Queries(drv)
        await queries.install()
        step = 5000
        for start in range(0, jobs, step):
            n = min(step, jobs - start)
            await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
    finally:
        await setup.close()
    conn, drv = await driver()
    try:
        qm = QueueManager(Queries(drv))

        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            return None

        t0 = time.perf_counter()
        await qm.run(batch_size=batch, mode=QueueExecutionMode.drain)
        return jobs / (time.perf_counter() - t0)
    finally:
        await conn.close()


def pgqueuer_driver_name() -> str:
    """The driver :func:`_pgqueuer_drain` uses."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "psycopg"
    return "asyncpg"


def run_pgqueuer(svc: Services, sizes: Sizes, batch: int) -> float | None:
    """No-op jobs/s drained by pgqueuer at ``batch``; None when pgqueuer is not installed."""
    try:
        import pgqueuer  # noqa: F401
    except ImportError:
        return None
    with svc.fresh_database(f"pgq{batch}") as url:
        return asyncio.run(_pgqueuer_drain(url, sizes.pgqueuer_jobs, batch))


def run(svc: Services, sizes: Sizes) -> list[Row]:
    """pgqueuer's no-op drain (context), then per configuration the fair peer and the project."""
    from bench.peer_pgqueuer import available, run_peer

    ours: dict[tuple[int, int], list[float]] = {}
    peers: dict[tuple[int, int], list[float]] = {}
    theirs: dict[int, list[float]] = {}
    failures: dict[tuple[int, int], str] = {}
    missing = available()
    for _ in range(sizes.repeats):  # interleave repeats so drift hits every configuration alike
        for batch in sizes.pgqueuer_batches:
            rate = run_pgqueuer(svc, sizes, batch)
            if rate is not None:
                theirs.setdefault(batch, []).append(rate)
        for processes in sizes.queue_processes:
            for batch in sizes.queue_batches:
                if missing is None:
                    try:
                        peers.setdefault((processes, batch), []).append(run_peer(svc, sizes, processes, batch))
                    except Exception as exc:  # the project's rows must survive a failing peer
                        log.exception("the pgqueuer peer failed")
                        reason = " ".join(str(exc).split())[:200].replace("|", "/")
                        failures[(processes, batch)] = f"peer failed: {type(exc).__name__}: {reason}"
                ours.setdefault((processes, batch), []).append(run_project(svc, sizes, processes, batch))
    rows: list[Row] = []
    for batch in sizes.pgqueuer_batches:
        rates = theirs.get(batch)
        rows.append(Row(NAME, f"pgqueuer {_version()} ({pgqueuer_driver_name()}), no-op, batch {batch}, 1 process",
                        max(rates) if rates else None,
                        "jobs/s", note=_spread(rates) if rates else "pgqueuer not installed (pip install .[bench])"))
    best_noop = max((max(v) for v in theirs.values()), default=None)
    for (processes, batch), rates in ours.items():
        best = max(rates)
        peer = peers.get((processes, batch))
        peer_best = max(peer) if peer else None
        rows.append(Row(NAME, f"fair pgqueuer peer, same conversions, null model, {processes} proc × 2 thr, "
                              f"batch {batch}", peer_best, "conv/s",
                        note=_join(f"{sizes.queue_jobs} pre-queued", "bench/peer_pgqueuer.py", _spread(peer))
                        if peer else failures.get((processes, batch), str(missing))))
        ratio = best / peer_best if peer_best else None
        context = f"{best / best_noop:.2f}× pgqueuer no-op best" if best_noop else ""
        rows.append(Row(NAME, f"stayler, null model, {processes} proc × 2 thr, claim batch {batch}", best,
                        "conv/s", ratio=ratio, ratio_of="fair pgqueuer peer", target="≥ 1.0× fair pgqueuer peer",
                        met=None if ratio is None else ratio >= 1.0,
                        note=_join(f"{sizes.queue_jobs} pre-queued", context, _spread(rates))))
    return rows


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pgqueuer")
    except PackageNotFoundError:
        return "(absent)"


def _spread(values: list[float] | None) -> str:
    return f"runs: {', '.join(f'{v:,.0f}' for v in values)}" if values and len(values) > 1 else ""


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)
