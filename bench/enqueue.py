"""6. Enqueue rate: conversions created per second through the Python producer.

One at a time: ``producer.submit`` with autocommit, one transaction (one ``create_conversion()``
call) per conversion, as a web request would. In bulk: the same SQL function for every row,
sent with psycopg's pipeline mode in one transaction (one commit, no per-row round trip wait).
"""

from __future__ import annotations

import time

import psycopg

from bench.common import Row, Services, Sizes, Workload

NAME = "enqueue"


def run(svc: Services, sizes: Sizes) -> list[Row]:
    """Create ``enqueue_single`` conversions one by one, then ``enqueue_bulk`` in one transaction."""
    from schema.queries import Q

    with svc.fresh_database("enq") as url, psycopg.connect(url, autocommit=True) as conn:
        load = Workload(conn, svc.work_dir / "enqueue" / "storage", (64, 64))
        t0 = time.perf_counter()
        for _ in range(sizes.enqueue_single):
            load.submit_one()
        single = sizes.enqueue_single / (time.perf_counter() - t0)
        params = [{"user_id": load.user, "vendor_id": None, "user_image_id": load.person,
                   "cloth_image_id": load.garment, "conversion_type": "free", "style_name": None, "priority": 0,
                   "max_retries": 3, "metadata": "{}", "idempotency_key": None}] * sizes.enqueue_bulk
        t0 = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(Q.create_conversion, params)
        bulk = sizes.enqueue_bulk / (time.perf_counter() - t0)
        count = conn.execute("SELECT count(*) FROM conversion_jobs WHERE status = 'queued'").fetchone()
        assert count is not None and count[0] == sizes.enqueue_single + sizes.enqueue_bulk
    return [
        Row(NAME, "producer.submit, one transaction each", single, "conv/s",
            note=f"{sizes.enqueue_single:,} conversions"),
        Row(NAME, "create_conversion() × N in one transaction (pipelined executemany)", bulk, "conv/s",
            ratio=bulk / single, ratio_of="one at a time", note=f"{sizes.enqueue_bulk:,} conversions"),
    ]
