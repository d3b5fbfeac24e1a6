"""Idle cost: Redis commands/s and CPU share of a worker process with nothing to do.

On a private ``redis-server`` (so its command counter holds only this fleet's commands) and a fresh
database, a real fleet (``stayler worker``: 1 process × 2 threads, the null model) starts; once its
process has registered and settled, the Redis commands processed and the CPU time of the worker
process (psutil) are read ``idle_seconds`` apart. The process leads its fleet, so the leader's
duties are in the figures. Targets (issue 15 with the scale-out issue's budget): ≤ 20 commands/s
and ≤ 1 % of a core.

As context, the broker's consumer alone on a bare Dramatiq worker, measured by the broker's own
harness ``tests/broker/idle_cost.py`` (``measure(url, "blocking")``), which ships with the source tree.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path
from types import ModuleType

import psutil
import psycopg
import redis

from bench.common import Row, Services, Sizes, fleet

NAME = "idle"
MAX_COMMANDS_PER_S = 20.0
MAX_CPU_PERCENT = 1.0
ROOT = Path(__file__).resolve().parents[1]


def _tests_module(name: str) -> ModuleType:
    """A module of the source tree's ``tests`` package (not installed with the project)."""
    if str(ROOT) not in sys.path and (ROOT / "tests" / "__init__.py").is_file():
        sys.path.append(str(ROOT))
    return importlib.import_module(name)


def _worker_process(master: int, timeout_s: float = 60.0) -> psutil.Process:
    """The fleet's worker process: the largest child of the master (the others are small helper forks)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = psutil.Process(master).children(recursive=True)
        if children:
            return max(children, key=lambda p: p.memory_info().rss)
        time.sleep(0.1)
    raise TimeoutError("the fleet started no worker process")


def _wait_registered(conn: psycopg.Connection, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = conn.execute("SELECT count(*) FROM workers WHERE stopped_at IS NULL").fetchone()
        if row and row[0] >= 1:
            return
        time.sleep(0.1)
    raise TimeoutError("the worker process did not register")


def _commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def measure_fleet(svc: Services, redis_url: str, seconds: float) -> tuple[float, float, float]:
    """(Redis commands/s, CPU % of a core of the worker process, CPU % of the whole fleet) while idle."""
    work = svc.work_dir / "idle"
    with (svc.fresh_database("idle") as url, psycopg.connect(url, autocommit=True) as conn,
          fleet(url, redis_url, svc.queue_name("idle"), work, processes=1, threads=2, STAYLER_MODEL="null",
                STAYLER_MODEL_THREADS="1") as flt):
        _wait_registered(conn)
        worker = _worker_process(flt.proc.pid)
        tree = [psutil.Process(flt.proc.pid), *psutil.Process(flt.proc.pid).children(recursive=True)]
        time.sleep(2.0)  # past start-up: the first dispatch, the consumers' first waits
        client = redis.Redis.from_url(redis_url)

        def cpu(procs: list[psutil.Process]) -> float:
            total = 0.0
            for p in procs:
                times = p.cpu_times()
                total += times.user + times.system
            return total

        commands, own, whole, t0 = _commands(client), cpu([worker]), cpu(tree), time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        commands_per_s = (_commands(client) - commands - 1) / elapsed  # minus our own second INFO
        own_pct = 100 * (cpu([worker]) - own) / elapsed
        whole_pct = 100 * (cpu(tree) - whole) / elapsed
    return commands_per_s, own_pct, whole_pct


def run(svc: Services, sizes: Sizes) -> list[Row]:
    """The real worker process idle on a private Redis, then the broker's consumer alone as context."""
    servers = _tests_module("tests.reliability.servers")
    idle_cost = _tests_module("tests.broker.idle_cost")
    server = servers.ThrowawayRedis()
    server.start()
    try:
        commands, own, whole = measure_fleet(svc, server.url, sizes.idle_seconds)
        server.flushall()
        broker = idle_cost.measure(server.url, "blocking", idle_s=sizes.idle_seconds, messages=3, gap_s=0.5)
    finally:
        server.stop()
    lat = sorted(broker.latencies_ms)
    return [
        Row(NAME, "idle worker process (stayler worker, 1 proc × 2 thr, leading): Redis commands", commands,
            "commands/s", target=f"≤ {MAX_COMMANDS_PER_S:g} commands/s", met=commands <= MAX_COMMANDS_PER_S,
            note=f"private redis-server, {sizes.idle_seconds:g} s idle"),
        Row(NAME, "idle worker process: CPU", own, "% of a core", target=f"≤ {MAX_CPU_PERCENT:g} %",
            met=own <= MAX_CPU_PERCENT, note=f"whole fleet (master and helper forks too): {whole:.2f} %"),
        Row(NAME, "broker consumer alone, bare Dramatiq worker (tests/broker/idle_cost.py, blocking)",
            broker.commands_per_s, "commands/s",
            note=f"{100 * broker.cpu_share:.2f} % of a core; enqueue → actor start median "
                 f"{lat[len(lat) // 2]:.1f} ms over {len(lat)} messages" if lat else "no message picked up"),
    ]
