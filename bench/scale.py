"""4. Scale: the claim's time with a small and with a large queue (plus as many finished jobs).

Rows are inserted with plain SQL in bulk (valid rows, the same columns ``create_conversion()``
writes, without its per-row checks, which would take far longer than the measurement). The claim is
the worker's own door (``JobQueue.claim``: ``job_claim_batch`` with a batch of 16, committed), timed
from Python around the round trip; the median and p95 over ``scale_claims`` claims are reported.
A third row puts ``scale_small`` higher-priority jobs in retry backoff ahead of the ready ones
(what a mass rescue leaves): they must stay out of the claim's path.
"""

from __future__ import annotations

import time

import psycopg

from bench.common import Row, Services, Sizes, Workload, percentile

NAME = "scale"
CHUNK = 250_000


def _insert(conn: psycopg.Connection, load: Workload, count: int, status: str, *, backoff: bool = False) -> None:
    conv_status = {"queued": "pending", "completed": "cancelled"}[status]
    done = 0
    while done < count:
        n = min(CHUNK, count - done)
        conn.execute(
            """WITH c AS (
                   INSERT INTO conversions (user_id, user_image_id, cloth_image_id, status, created_at)
                   SELECT %(u)s, %(p)s, %(g)s, %(cs)s, now() - make_interval(secs => %(base)s + g)
                     FROM generate_series(1, %(n)s) AS g
                   RETURNING id, created_at)
               INSERT INTO conversion_jobs (conversion_id, status, created_at, started_at, completed_at,
                                            priority, run_after)
               SELECT id, %(js)s, created_at,
                      CASE WHEN %(js)s = 'queued' THEN NULL ELSE created_at END,
                      CASE WHEN %(js)s = 'queued' THEN NULL ELSE created_at END,
                      CASE WHEN %(backoff)s THEN 9 ELSE 0 END,
                      CASE WHEN %(backoff)s THEN now() + interval '1 hour' ELSE now() END
                 FROM c""",
            {"u": load.user, "p": load.person, "g": load.garment, "cs": conv_status, "js": status, "n": n,
             "base": done, "backoff": backoff})
        done += n


def _claims(conn: psycopg.Connection, count: int) -> list[float]:
    from worker.jobqueue import JobQueue

    door = JobQueue.on_connection(conn, "bench-scale")
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        claimed = door.claim(16)
        times.append((time.perf_counter() - t0) * 1000)
        assert claimed, "the queue ran dry"
    return times


def run(svc: Services, sizes: Sizes) -> list[Row]:
    """Claim times at ``scale_small`` queued, then at ``scale_large`` queued + ``scale_large`` finished."""
    with svc.fresh_database("scale") as url, psycopg.connect(url, autocommit=True) as conn:
        load = Workload(conn, svc.work_dir / "scale" / "storage", (64, 64))
        _insert(conn, load, sizes.scale_small, "queued")
        conn.execute("VACUUM ANALYZE")
        _claims(conn, 5)  # warm caches and plans
        small = _claims(conn, sizes.scale_claims)
        t0 = time.monotonic()
        _insert(conn, load, sizes.scale_large - sizes.scale_small, "queued")
        _insert(conn, load, sizes.scale_large, "completed")
        conn.execute("VACUUM ANALYZE")
        fill_s = time.monotonic() - t0
        _claims(conn, 5)
        large = _claims(conn, sizes.scale_claims)
    with svc.fresh_database("scale-backoff") as url, psycopg.connect(url, autocommit=True) as conn:
        load = Workload(conn, svc.work_dir / "scale-backoff" / "storage", (64, 64))
        _insert(conn, load, sizes.scale_small, "queued", backoff=True)
        _insert(conn, load, sizes.scale_small, "queued")
        conn.execute("VACUUM ANALYZE")
        _claims(conn, 5)
        waiting = _claims(conn, sizes.scale_claims)
    s50, l50, w50 = percentile(small, 0.5), percentile(large, 0.5), percentile(waiting, 0.5)
    ratio = l50 / s50
    return [
        Row(NAME, f"claim of 16, {sizes.scale_small:,} queued, median", s50, "ms",
            note=f"p95 {percentile(small, 0.95):.2f} ms over {len(small)} claims"),
        Row(NAME, f"claim of 16, {sizes.scale_large:,} queued + {sizes.scale_large:,} finished, median", l50, "ms",
            ratio=ratio, ratio_of="small queue", target="≤ 1.5× small queue", met=ratio <= 1.5,
            note=f"p95 {percentile(large, 0.95):.2f} ms; rows inserted in {fill_s:.0f} s"),
        Row(NAME, f"claim of 16, {sizes.scale_small:,} queued behind {sizes.scale_small:,} in backoff, median", w50,
            "ms", ratio=w50 / s50, ratio_of="small queue", target="≤ 1.5× small queue", met=w50 / s50 <= 1.5,
            note=f"p95 {percentile(waiting, 0.95):.2f} ms"),
    ]
