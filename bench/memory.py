"""5. Memory: resident memory of each worker process at steady state and after N conversions.

Two worker processes (2 threads each, claim batch 16, the null model) drain ``memory_conversions``
pre-queued conversions. RSS (psutil) of each worker process is sampled once a tenth of them are done
(steady state: sessions, pools and caches exist) and again after all of them. The documented bound:
growth ≤ 25 MiB per process between the two samples.
"""

from __future__ import annotations

import time

import psycopg

from bench.common import Row, Services, Sizes, Workload, fleet, terminal_count, wait_terminal

NAME = "memory"
GROWTH_BOUND_MIB = 25.0


def run(svc: Services, sizes: Sizes) -> list[Row]:
    """Drain the conversions, sampling RSS at a tenth and at the end."""
    work = svc.work_dir / "memory"
    total = sizes.memory_conversions
    with svc.fresh_database("mem") as url, psycopg.connect(url, autocommit=True) as conn:
        Workload(conn, work / "storage", sizes.null_person_size).create_many(total)
        with fleet(url, svc.redis_url, svc.queue_name("mem"), work, processes=2, threads=2, STAYLER_MODEL="null",
                   STAYLER_MODEL_THREADS="1", STAYLER_CLAIM_BATCH_SIZE="16") as flt:
            wait_terminal(conn, max(1, total // 10), max(120.0, total / 20), flt, interval_s=0.05)
            steady = flt.rss_mib()
            done_at_steady = terminal_count(conn)
            wait_terminal(conn, total, max(120.0, total / 20), flt)
            time.sleep(0.5)
            after = flt.rss_mib()
    growth = max((a - s for a, s in zip(sorted(after), sorted(steady), strict=False)), default=float("nan"))
    return [
        Row(NAME, f"RSS per worker process, steady state (after {done_at_steady:,} conversions)", max(steady or [0]),
            "MiB", note="per process: " + ", ".join(f"{v:.0f}" for v in steady)),
        Row(NAME, f"RSS per worker process after {total:,} conversions", max(after or [0]), "MiB",
            note="per process: " + ", ".join(f"{v:.0f}" for v in after)),
        Row(NAME, "RSS growth, steady state → end (largest)", growth, "MiB", target=f"≤ {GROWTH_BOUND_MIB:g} MiB",
            met=growth <= GROWTH_BOUND_MIB),
    ]
