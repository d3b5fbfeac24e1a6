"""CPU cost per conversion by stage, from a py-spy profile of a null-model drain, and the floor.

A fleet (``profile_processes`` processes × 2 threads, claim batch 16, the null model) starts on an
empty fresh database; once every worker process has registered and has drained a warm-up of 32
conversions (lazy imports, plans, caches), ``py-spy record --format raw --subprocesses
--nonblocking`` attaches to the fleet; ``profile_jobs`` conversions are created in one statement
and drained; py-spy is stopped. py-spy samples only threads that are running (not waiting on a
socket, a lock or the disk), so a sample is CPU time. Each sample goes to the stage of the
innermost frame that a rule of :data:`RULES` names (file or function); the table is CPU ms per
conversion by stage. The CPU time of the fleet's PostgreSQL backends (``/proc/<pid>/stat`` of the
pids in ``pg_stat_activity``, when the server runs on this host) is a row of its own.

Beside it, the floor (:mod:`bench.floor`): one process, no queue, the same file and row work.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import psycopg

from bench.common import Row, Services, Sizes, Workload, fleet, proc_cpu_seconds, wait_terminal

NAME = "profile"
RATE_HZ = 200
BATCH = 16
WARM_UP = 2 * BATCH

# (stage, file part, function pattern): a sample goes to the first rule that some frame of its stack
# matches (the file part in the frame's file, the pattern, if any, found in its qualified function name).
RULES: tuple[tuple[str, str, str | None], ...] = (
    ("start-up (imports)", "<frozen importlib", None),
    ("model", "onnxruntime/", None),
    ("decode", "imaging/decode.py", None),
    ("encode", "imaging/encode.py", None),
    ("render", "models/pipeline.py", r"render"),
    ("preprocess", "models/pipeline.py", None),
    ("Redis", "redis/", None),
    ("Redis", "broker/", None),
    ("read", "storage/", r"\bget\b"),
    ("store", "storage/", None),
    ("claim", "worker/jobqueue.py", r"JobQueue\.(\w*claim\w*|flush)\b"),
    ("complete", "worker/jobqueue.py", r"JobQueue\.(\w*complete\w*|_resolve|fail)\b"),
    ("heartbeat", "worker/jobqueue.py", r"JobQueue\.(renew|renew_worker|release|register)\b"),
    ("heartbeat", "worker/heartbeat.py", None),
    ("dispatch", "leader/duties/dispatch.py", None),
    ("leader (lease, rescue, gauges)", "leader/", None),
    ("metrics", "prometheus_client/", None),
    ("metrics", "worker/metrics/", None),
    ("logging", "logging/", None),
    ("logging", "core/logs.py", None),
    ("database (other)", "psycopg", None),
    ("pipeline (other)", "worker/", None),
    ("pipeline (other)", "models/", None),
    ("Dramatiq", "dramatiq/", None),
)
STAGES = ("claim", "read", "decode", "preprocess", "model", "render", "encode", "store", "complete", "dispatch",
          "Redis", "heartbeat", "leader (lease, rescue, gauges)")
_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(.*) \((.*)\)$")
_PATTERNS = {p: re.compile(p) for _, _, p in RULES if p}


def stage_of(frames: list[str]) -> str:
    """The stage of one stack of py-spy frames (``function (file:line)``)."""
    parsed = []
    for frame in frames:
        match = _FRAME.match(frame)
        parsed.append((match.group(1), match.group(2)) if match else (frame, frame))
    for stage, where, pattern in RULES:
        for function, file in parsed:
            if where in file and (pattern is None or _PATTERNS[pattern].search(function)):
                return stage
    return "other"


def fold(lines: Iterable[str]) -> Counter[str]:
    """Samples per stage from py-spy's raw (collapsed) output; process and thread frames are skipped."""
    counts: Counter[str] = Counter()
    for line in lines:
        match = _LINE.match(line.rstrip("\n"))
        if match is None:
            continue  # the continuation of a command line that held a newline
        frames = [f for f in match.group(1).split(";") if not f.startswith(("process ", "thread "))]
        counts[stage_of(frames)] += int(match.group(2))
    return counts


def _backends_cpu(conn: psycopg.Connection) -> dict[int, float]:
    """CPU seconds so far of every other backend on this database (empty when not on this host)."""
    pids = [int(r[0]) for r in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
    seconds = {pid: proc_cpu_seconds(pid) for pid in pids}
    return {pid: s for pid, s in seconds.items() if s is not None}


def _wait_registered(conn: psycopg.Connection, processes: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = conn.execute("SELECT count(*) FROM workers WHERE stopped_at IS NULL").fetchone()
        if row and row[0] >= processes:
            return
        time.sleep(0.1)
    raise TimeoutError("the worker processes did not register")


def py_spy() -> str | None:
    """The py-spy executable (next to this Python first), or None."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def profile_drain(svc: Services, sizes: Sizes) -> tuple[Counter[str], int, float, float | None]:
    """(samples per stage, conversions, drain rate under the profiler, PostgreSQL backend CPU seconds)."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy not installed (pip install -e '.[bench]')")
    work = svc.work_dir / "profile"
    raw = work / "py-spy.txt"
    total = sizes.profile_jobs
    with svc.fresh_database("prof") as url, psycopg.connect(url, autocommit=True) as conn:
        load = Workload(conn, work / "storage", sizes.null_person_size)
        with fleet(url, svc.redis_url, svc.queue_name("prof"), work, processes=sizes.profile_processes,
                   STAYLER_MODEL="null", STAYLER_MODEL_THREADS="1", STAYLER_CLAIM_BATCH_SIZE=str(BATCH)) as flt:
            _wait_registered(conn, sizes.profile_processes)
            load.create_many(WARM_UP)  # lazy imports, plans and caches: not part of the profile
            wait_terminal(conn, WARM_UP, 120, flt, interval_s=0.05)
            conn.execute("UPDATE conversion_jobs SET error_message = 'warm-up'")
            spy = subprocess.Popen([exe, "record", "--format", "raw", "--subprocesses", "--rate", str(RATE_HZ),
                                    "--nonblocking", "-o", str(raw), "--pid", str(flt.proc.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                time.sleep(1.0)  # py-spy attaches to every process of the tree
                pg_before = _backends_cpu(conn)
                load.create_many(total)
                wait_terminal(conn, WARM_UP + total, max(120.0, total / 20), flt, interval_s=0.05)
                pg_after = _backends_cpu(conn)
            finally:
                spy.send_signal(signal.SIGINT)
                try:
                    _, err = spy.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    _, err = spy.communicate()
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'completed'), "
            "       extract(epoch FROM max(completed_at) - min(started_at))::float8, "
            "       count(*) FILTER (WHERE status <> 'completed') FROM conversion_jobs "
            "WHERE error_message IS DISTINCT FROM 'warm-up'").fetchone()
        assert row is not None
        done, seconds, other = int(row[0]), float(row[1] or 0.0), int(row[2])
    if not raw.is_file():
        raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace').strip()[-300:]}")
    pg = sum(pg_after[p] - pg_before[p] for p in pg_after if p in pg_before) if pg_before else None
    with raw.open(errors="replace") as handle:
        counts = fold(handle)
    if other:
        raise RuntimeError(f"{other} conversions did not complete under the profiler")
    return counts, done, done / seconds if seconds > 0 else float("nan"), pg


def run(svc: Services, sizes: Sizes) -> list[Row]:
    """The profile's stage table, then the floor."""
    from bench.floor import run_floor

    counts, done, rate, pg = profile_drain(svc, sizes)
    per_conv_ms = 1000.0 / RATE_HZ / max(1, done)
    worker_ms = sum(counts.values()) * per_conv_ms
    shape = f"{sizes.profile_processes} proc × 2 thr, claim batch {BATCH}, {done:,} null-model conversions"
    rows = [Row(NAME, f"worker processes' CPU per conversion, all stages ({shape})", worker_ms, "ms/conv",
                note=f"py-spy --rate {RATE_HZ}; drain under the profiler {rate:,.0f} conv/s")]
    for stage in STAGES:
        ms = counts.get(stage, 0) * per_conv_ms
        rows.append(Row(NAME, f"  {stage}", ms, "ms/conv", note=f"{_share(ms, worker_ms)} of worker CPU"))
    rest = sorted(((n, c) for n, c in counts.items() if n not in STAGES), key=lambda nc: -nc[1])
    rest_ms = sum(c for _, c in rest) * per_conv_ms
    rows.append(Row(NAME, "  everything else", rest_ms, "ms/conv",
                    note=f"{_share(rest_ms, worker_ms)} of worker CPU: " + ", ".join(
                        f"{n} {c * per_conv_ms:.2f}" for n, c in rest)))
    pg_ms = None if pg is None else 1000 * pg / max(1, done)
    rows.append(Row(NAME, "PostgreSQL backends of the fleet, CPU per conversion", pg_ms, "ms/conv",
                    note="server side: claim, completion, dispatch, heartbeats" if pg is not None
                    else "server not on this host: /proc unreadable"))
    floor = run_floor(svc, sizes)
    cores = os.cpu_count() or 1
    server = floor.get("pg_cpu_ms")
    cpu_ms = floor["cpu_ms"] + (server or 0.0)
    fleet_ms = worker_ms + (pg_ms or 0.0)
    rows.append(Row(NAME, "the fleet's CPU per conversion, worker processes + PostgreSQL backends", fleet_ms,
                    "ms/conv", ratio=fleet_ms / cpu_ms if cpu_ms > 0 else None, ratio_of="floor",
                    note=f"all {cores} cores busy at this cost: ≈ {cores * 1000 / fleet_ms:,.0f} conv/s"
                    if fleet_ms > 0 else ""))
    rows.append(Row(NAME, "floor: straight-line script, 1 process, no queue (bench/floor.py)", floor["rate"],
                    "conv/s", note=f"{int(floor['count']):,} conversions; with create_conversion() in the loop "
                                   f"{floor['rate_with_create']:,.0f} conv/s"))
    rows.append(Row(NAME, "floor: CPU per conversion, its process + its PostgreSQL backend", cpu_ms, "ms/conv",
                    note=f"process {floor['cpu_ms']:.2f} + backend "
                         + (f"{server:.2f}" if server is not None else "n/a (server not on this host)")
                         + f" ms; all {cores} cores busy at this cost: ≈ {cores * 1000 / cpu_ms:,.0f} conv/s"))
    return rows


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f} %" if whole > 0 else "n/a"
