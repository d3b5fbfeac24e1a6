"""How long the fleet's threads wait for a CPU once woken, during open-loop conversions at 5/s.

``python -m bench.sched_probe [--seconds S] [--rate R] [--processes P] [--model-threads T]`` boots a
fleet on the configured (or embedded) PostgreSQL and Redis, warms it up, then submits conversions at
``rate`` per second for ``seconds`` under ``perf sched record -a`` (Debian's ``linux-perf``) and
prints ``perf sched latency`` for the fleet's threads (named by ``core.thread_names``): how many
times each was switched in, its average and largest delay between being woken and running, and per
conversion. On a virtual machine a woken thread whose virtual CPU was halted waits for the host to
run that CPU again; the latency benchmark's CPU split says how much each thread ran.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench.common import Workload, fleet, services, wait_terminal
from bench.inference import MODEL
from core.settings import Settings

THREADS = ("dq-worker", "dq-consumer", "onnx-intra", "leader", "heartbeat", "health", "postgres", "redis-server")
ROW = re.compile(r"^\s*(\S+?):\S*\s*\|\s*([\d.]+) ms\s*\|\s*(\d+)\s*\|\s*avg:\s*([\d.]+) ms\s*\|\s*max:\s*([\d.]+) ms")


def record(args: argparse.Namespace, work: Path) -> tuple[Path, int]:
    """Run the fleet and the open loop under ``perf sched record``; the trace and the conversions sent."""
    from producer import Waker

    trace = work / "sched.data"
    with services(Settings(), work) as svc, svc.fresh_database("sched") as url, \
            psycopg.connect(url, autocommit=True) as conn:
        load = Workload(conn, work / "storage", (384, 512))
        queue = svc.queue_name("sched")
        load.waker = Waker.from_url(svc.redis_url, queue)
        with fleet(url, svc.redis_url, queue, work, processes=args.processes, threads=2, STAYLER_MODEL=MODEL,
                   STAYLER_MODEL_THREADS=str(args.model_threads), STAYLER_CLAIM_BATCH_SIZE="1") as flt:
            for _ in range(3 * args.processes):
                load.submit_one()
            wait_terminal(conn, 3 * args.processes, 120, flt, interval_s=0.05)
            time.sleep(0.5)
            count = int(args.seconds * args.rate)
            perf = subprocess.Popen(["perf", "sched", "record", "-a", "-o", str(trace), "--", "sleep",
                                     str(args.seconds + 1.0)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            t0 = time.perf_counter()
            for i in range(count):
                delay = t0 + i / args.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                load.submit_one()
            perf.wait()
            wait_terminal(conn, 3 * args.processes + count, 60, flt, interval_s=0.05)
    return trace, count


def summarise(trace: Path, conversions: int) -> list[str]:
    """``perf sched latency`` rows of the fleet's threads (and PostgreSQL, Redis), with per-conversion sums."""
    out = subprocess.run(["perf", "sched", "latency", "-i", str(trace)], capture_output=True, text=True,
                         check=True).stdout
    lines = [f"{'thread':<14} {'run ms':>9} {'switches':>9} {'avg delay':>10} {'max delay':>10} "
             f"{'switches/conv':>14} {'delay ms/conv':>14}"]
    for line in out.splitlines():
        match = ROW.match(line)
        if match is None or match.group(1) not in THREADS:
            continue
        name, run_ms, switches, avg, worst = match.groups()
        n = int(switches)
        lines.append(f"{name:<14} {float(run_ms):>9.1f} {n:>9} {float(avg):>8.3f}ms {float(worst):>8.3f}ms "
                     f"{n / conversions:>14.1f} {n * float(avg) / conversions:>14.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, record, print the table; exit 2 when ``perf`` is missing."""
    parser = argparse.ArgumentParser(prog="python -m bench.sched_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the recorded open loop (10)")
    parser.add_argument("--rate", type=float, default=5.0, help="conversions per second (5)")
    parser.add_argument("--processes", type=int, default=1, help="worker processes (1)")
    parser.add_argument("--model-threads", type=int, default=2, help="intra-op threads per process (2)")
    args = parser.parse_args(argv)
    if shutil.which("perf") is None:
        print("bench.sched_probe: perf is not installed (Debian's linux-perf)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="stayler-sched-") as tmp:
        trace, count = record(args, Path(tmp))
        print(f"{count} conversions at {args.rate:g}/s, {args.processes} process(es) × {args.model_threads} "
              f"intra-op thread(s), model {MODEL}")
        print("\n".join(summarise(trace, count)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
