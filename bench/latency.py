"""3. Latency: enqueue-to-completed p50/p95/p99 at a fixed arrival rate below capacity (open loop).

An open-loop generator submits one conversion through the Python producer at each scheduled
instant ``t0 + i / rate``, whether or not earlier ones finished (a late submit is sent at once and
the lag is reported, so slow service cannot hide latency: no coordinated omission). Latency is
``completed_at − created_at`` of each job, both stamped by PostgreSQL. The shipped model, one worker
process with 2 threads, claim batch 1. "Model time" is the bare end-to-end loop's time per image
for the same photo in a spawned process (see the inference benchmark); target: p50 ≤ it + 10 ms.

That loop runs back to back, with warm caches and busy model threads. Requests at 5/s each find an
idle machine, so the same loop is also timed at the run's arrival cadence (one image every
``1/rate`` s) to tell the cost of arriving alone from the cost of the queue; and the fleet's
/metrics split the worker's time into the model's stages and its own work (inputs, files, completion).
"""

from __future__ import annotations

import time

import psycopg

from bench.common import Row, Services, Sizes, Workload, fleet, percentile, wait_terminal
from bench.inference import MODEL, bare_loop
from schema.statuses import JobStatus

NAME = "latency"
MODEL_STAGES = ("person", "decode", "preprocess", "inference", "postprocess", "encode")
OWN_STAGES = ("read", "store", "database")


def run(svc: Services, sizes: Sizes) -> list[Row]:
    """Warm the fleet up, then submit at ``latency_rate_per_s`` for ``latency_seconds``."""
    from modelkit.samples import make_garment, make_person, to_bytes
    from models.runner import available_cores

    threads = available_cores()
    work = svc.work_dir / "latency"
    pair = (to_bytes(make_person(*sizes.person_size, seed=5).image), to_bytes(make_garment(seed=3)))
    bare = bare_loop([pair], max(10, int(sizes.latency_rate_per_s * 2)), threads,
                     cadence_s=1.0 / sizes.latency_rate_per_s)
    model_ms, isolated_ms = bare["ms_e2e"], bare["ms_isolated"]
    with svc.fresh_database("lat") as url, psycopg.connect(url, autocommit=True) as conn:
        from producer import Waker

        load = Workload(conn, work / "storage", sizes.person_size)
        queue = svc.queue_name("lat")
        load.waker = Waker.from_url(svc.redis_url, queue)  # the producer wakes a worker itself after commit
        with fleet(url, svc.redis_url, queue, work, processes=1, threads=2, STAYLER_MODEL=MODEL,
                   STAYLER_MODEL_THREADS=str(threads), STAYLER_CLAIM_BATCH_SIZE="1") as flt:
            warm = 3
            for _ in range(warm):
                load.submit_one()
            wait_terminal(conn, warm, 120, flt, interval_s=0.05)
            time.sleep(0.5)
            conn.execute("DELETE FROM conversion_metrics")  # keep only measured jobs' rows below
            conn.execute("UPDATE conversion_jobs SET error_message = 'warm-up'")
            total = max(1, int(sizes.latency_rate_per_s * sizes.latency_seconds))
            interval = 1.0 / sizes.latency_rate_per_s
            lags = []
            t0 = time.perf_counter()
            for i in range(total):
                due = t0 + i * interval
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                lags.append(max(0.0, time.perf_counter() - due))
                load.submit_one()
            wait_terminal(conn, warm + total, 120 + total, flt, interval_s=0.05)
            stages = flt.stage_means_ms()
        rows = conn.execute(
            "SELECT extract(epoch FROM completed_at - created_at) * 1000, status, "
            "       extract(epoch FROM started_at - created_at) * 1000 FROM conversion_jobs "
            "WHERE error_message IS DISTINCT FROM 'warm-up'").fetchall()
    lat = [float(r[0]) for r in rows if r[1] == JobStatus.COMPLETED]
    wait = [float(r[2]) for r in rows if r[1] == JobStatus.COMPLETED]
    work_ms = [a - b for a, b in zip(lat, wait, strict=True)]
    p50, p95, p99 = (percentile(lat, q) for q in (0.5, 0.95, 0.99))
    note = (f"{len(lat)} conversions at {sizes.latency_rate_per_s:g}/s open loop; "
            f"max submit lag {1000 * max(lags, default=0):.1f} ms")
    return [
        Row(NAME, "model time (bare end-to-end loop, per image)", model_ms, "ms"),
        Row(NAME, "enqueue → completed p50", p50, "ms", target="≤ model time + 10 ms (idle system)",
            met=p50 <= model_ms + 10, note=f"{p50 - model_ms:+.1f} ms over model time; {note}"),
        Row(NAME, "enqueue → completed p95", p95, "ms"),
        Row(NAME, "enqueue → completed p99", p99, "ms"),
        Row(NAME, "  of which enqueue → claimed (the producer's wake-up, Redis, claim) p50", percentile(wait, 0.5),
            "ms", note=f"p95 {percentile(wait, 0.95):.1f} ms"),
        Row(NAME, "  of which claimed → completed (inputs, model, storage, completion) p50", percentile(work_ms, 0.5),
            "ms", note=f"p95 {percentile(work_ms, 0.95):.1f} ms"),
        Row(NAME, "model time at the arrival cadence (bare loop, one image every "
            f"{1000 / sizes.latency_rate_per_s:.0f} ms, median)", isolated_ms, "ms",
            ratio=isolated_ms / model_ms, ratio_of="back-to-back model time",
            note=f"enqueue → completed p50 is {p50 - isolated_ms:+.1f} ms over it"),
        *_stage_rows(stages),
    ]


def _stage_rows(stages: dict[str, float]) -> list[Row]:
    """The worker's time per conversion split into the model's stages and its own work (/metrics means)."""
    model = [s for s in MODEL_STAGES if s in stages]
    own = [s for s in OWN_STAGES if s in stages]
    if not model or not own:
        return []
    return [
        Row(NAME, "  worker: the model's stages per conversion (mean)", sum(stages[s] for s in model), "ms",
            note=", ".join(f"{s} {stages[s]:.1f}" for s in model)),
        Row(NAME, "  worker: its own work per conversion after the claim (mean)", sum(stages[s] for s in own), "ms",
            note=", ".join(f"{s} {stages[s]:.1f}" for s in own) + " (database = the fenced completion)"),
    ]
