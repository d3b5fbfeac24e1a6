"""Fairness: no backlog of one customer starves the others (docs/architecture.md, "Fair share").

Two parts, in one run:

* **The claim with many owners.** ``fairness_queue`` queued jobs spread over ``fairness_owners``
  owners, beside the same number queued by one owner (rows inserted in bulk through the stamping
  trigger; the claim is the worker's own door, ``JobQueue.claim`` with a batch of 16, under the
  default weights and per-owner cap, its jobs handed back after each timed claim). Target: the
  many-owner median within 1.5x of the one-owner median.
* **A flood and latecomers.** The null model, 2 worker processes, a per-owner cap of
  ``fairness_cap``. First ``fairness_idle`` users submit one conversion each on an idle fleet (the
  idle p50). Then a vendor submits ``fairness_flood`` conversions at once; after ``fairness_alone_s``
  seconds alone, ``fairness_users`` users each submit one at a random moment within
  ``fairness_users_s`` seconds. Reported: the users' enqueue → completed p50 against the idle p50
  (target ≤ 2x), the vendor's completions/s while the users wait against its rate alone (target
  ≥ 0.9x), and the largest number of one owner's jobs processing at any sampled moment (target ≤ the
  cap). Latency is ``completed_at − created_at`` of each job, both stamped by PostgreSQL.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg

from bench.common import Row, Services, Sizes, fleet, percentile, wait_terminal

NAME = "fairness"
log = logging.getLogger(__name__)
CHUNK = 250_000


def load_queue(conn: psycopg.Connection, owners: int, jobs: int) -> None:
    """``jobs`` queued jobs over ``owners`` new users (one person and one cloth image row each), in bulk.

    Rows are interleaved across owners (job i belongs to owner i mod ``owners``, older first) and
    carry the fair-share stamp the insert trigger would give them, computed in SQL instead of one
    lane lookup per row (the trigger keeps a loader's stamp: owner_id given): plan ``free``, the
    plan's band, virtual start k / weight for an owner's k-th job (the clock is 0 on a fresh
    database), and each owner's lane at its last virtual finish. So the loader is one INSERT ...
    SELECT per chunk; tests/bench/test_fairness_loader.py checks the rows equal the trigger's.
    """
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS bench_owner (n int PRIMARY KEY, id uuid, person uuid, cloth uuid)")
    conn.execute("TRUNCATE bench_owner")
    conn.execute("""INSERT INTO bench_owner
                    SELECT g, gen_random_uuid(), gen_random_uuid(), gen_random_uuid()
                      FROM generate_series(0, %s - 1) g""", (owners,))
    conn.execute("INSERT INTO users (id, email) SELECT id, 'bench-' || id || '@example.test' FROM bench_owner")
    conn.execute("""INSERT INTO images (id, owner_id, owner_type, file_path, file_name, original_url, file_size,
                                        mime_type, type)
                    SELECT i.id, o.id, 'user', 'bench/' || i.id, 'f.jpg', 'file:///bench', 1000, 'image/jpeg', i.t
                      FROM bench_owner o,
                           LATERAL (VALUES (o.person, 'user'), (o.cloth, 'cloth')) AS i (id, t)""")
    row = conn.execute("SELECT p.weight, p.band, (SELECT vtime FROM fair_clock) FROM fair_plans p "
                       "WHERE p.plan = 'free'").fetchone()
    assert row is not None
    weight, band, clock = float(row[0]), int(row[1]), float(row[2] or 0)
    params = {"owners": owners, "jobs": jobs, "weight": weight, "band": band, "clock": clock}
    done = 0
    while done < jobs:
        n = min(CHUNK, jobs - done)
        conn.execute(
            """WITH src AS MATERIALIZED (
                   SELECT gen_random_uuid() AS cid, o.id AS owner_id, o.person, o.cloth,
                          now() - make_interval(secs => %(jobs)s - i) AS created_at,
                          %(clock)s + (i / %(owners)s)::float8 / %(weight)s AS vstart
                     FROM generate_series(%(base)s, %(base)s + %(n)s - 1) AS i
                     JOIN bench_owner o ON o.n = i %% %(owners)s
               ), c AS (
                   INSERT INTO conversions (id, user_id, user_image_id, cloth_image_id, status, created_at)
                   SELECT cid, owner_id, person, cloth, 'pending', created_at FROM src)
               INSERT INTO conversion_jobs (conversion_id, created_at, owner_id, plan, band, vstart)
               SELECT cid, created_at, owner_id, 'free', %(band)s, vstart FROM src""",
            {**params, "n": n, "base": done})
        done += n
    # Each owner's lane as the trigger leaves it: last finish = its last virtual start + 1 / weight.
    conn.execute(
        """INSERT INTO owner_lanes (owner_id, owner_kind, plan, last_finish)
           SELECT o.id, 'user', 'free',
                  %(clock)s + (%(jobs)s / %(owners)s + (o.n < %(jobs)s %% %(owners)s)::int)::float8 / %(weight)s
             FROM bench_owner o
           ON CONFLICT (owner_id)
           DO UPDATE SET last_finish = GREATEST(owner_lanes.last_finish, EXCLUDED.last_finish)""",
        params)
    conn.execute("INSERT INTO owner_load (owner_id) SELECT id FROM bench_owner ON CONFLICT DO NOTHING")


def claim_times(conn: psycopg.Connection, count: int, batch: int = 16) -> list[float]:
    """Milliseconds of ``count`` claims of ``batch`` through the worker's door (committed); each claim's
    jobs are handed back afterwards (not timed), so per-owner caps never run the queue dry."""
    from worker.jobqueue import JobQueue

    door = JobQueue.on_connection(conn, "bench-fairness")
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        claimed = door.claim(batch)
        times.append((time.perf_counter() - t0) * 1000)
        assert claimed, "the queue ran dry"
        door.release([(c.job_id, c.attempt) for c in claimed])
    return times


def _claim_rows(svc: Services, sizes: Sizes) -> list[Row]:
    medians: dict[int, float] = {}
    notes: dict[int, str] = {}
    for owners in (1, sizes.fairness_owners):
        with svc.fresh_database(f"fair{owners}") as url, psycopg.connect(url, autocommit=True) as conn:
            from core.settings import Settings
            from leader.config import FairShareSettings
            from leader.fairness import configure_plans

            # The default weights and per-owner cap, as a fleet writes them.
            configure_plans(conn, FairShareSettings.from_settings(Settings()))
            t0 = time.monotonic()
            load_queue(conn, owners, sizes.fairness_queue)
            conn.execute("VACUUM ANALYZE")
            fill_s = time.monotonic() - t0
            claim_times(conn, 5)
            times = claim_times(conn, sizes.scale_claims)
            medians[owners] = percentile(times, 0.5)
            notes[owners] = f"p95 {percentile(times, 0.95):.2f} ms over {len(times)} claims; loaded in {fill_s:.0f} s"
    one, many = medians[1], medians[sizes.fairness_owners]
    ratio = many / one
    return [
        Row(NAME, f"claim of 16, {sizes.fairness_queue:,} queued by 1 owner, median", one, "ms", note=notes[1]),
        Row(NAME, f"claim of 16, {sizes.fairness_queue:,} queued by {sizes.fairness_owners:,} owners, median",
            many, "ms", ratio=ratio, ratio_of="one owner", target="≤ 1.5× one owner", met=ratio <= 1.5,
            note=notes[sizes.fairness_owners]),
    ]


class _Owner:
    """An owner (user or vendor) with a person and a garment registered through the producer."""

    def __init__(self, conn: psycopg.Connection, storage_dir: Path, *, vendor: bool, seed: int) -> None:
        from modelkit.samples import make_garment, make_person, to_bytes
        from producer import register_image
        from producer.accounts import create_user, create_vendor
        from producer.images import ImageLimits
        from storage import from_url

        limits = ImageLimits(max_bytes=20_000_000, max_pixels=40_000_000, thumbnail_size=64)
        storage = from_url(f"file://{storage_dir.resolve()}")
        self.vendor = vendor
        self.id = create_vendor(conn, f"bench vendor {seed}") if vendor else create_user(conn)
        kind = "vendor" if vendor else "user"
        self.person = register_image(conn, storage, to_bytes(make_person(64, 64, seed=seed).image), owner_id=self.id,
                                     owner_type=kind, image_type="user", limits=limits).id
        self.cloth = register_image(conn, storage, to_bytes(make_garment(seed=seed)), owner_id=self.id,
                                    owner_type=kind, image_type="cloth", limits=limits).id

    def submit(self, conn: psycopg.Connection, count: int = 1) -> None:
        """``count`` conversions in one statement (create_conversion)."""
        user, vendor = (None, self.id) if self.vendor else (self.id, None)
        conn.execute("SELECT count(create_conversion(user_id := %s, vendor_id := %s, user_image_id := %s, "
                     "cloth_image_id := %s)) FROM generate_series(1, %s)",
                     (user, vendor, self.person, self.cloth, count))


def _sample_max_processing(url: str, stop: threading.Event, out: list[int]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            row = conn.execute("SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM conversion_jobs "
                               "WHERE status = 'processing' GROUP BY owner_id) AS x").fetchone()
            out.append(int(row[0]) if row else 0)
            stop.wait(0.05)


def _latencies(conn: psycopg.Connection, owners: list[uuid.UUID]) -> list[float]:
    rows = conn.execute("SELECT extract(epoch FROM j.completed_at - j.created_at) * 1000 FROM conversion_jobs j "
                        "WHERE j.owner_id = ANY(%s) AND j.status = 'completed'", (owners,)).fetchall()
    return [float(r[0]) for r in rows]


def _vendor_rate(conn: psycopg.Connection, vendor: uuid.UUID, start: float, end: float) -> float:
    """The vendor's completions per second between two database epochs."""
    row = conn.execute("SELECT count(*) FROM conversion_jobs WHERE owner_id = %s AND status = 'completed' "
                       "AND completed_at >= to_timestamp(%s) AND completed_at < to_timestamp(%s)",
                       (vendor, start, end)).fetchone()
    return (int(row[0]) if row else 0) / max(end - start, 1e-9)


def _db_now(conn: psycopg.Connection) -> float:
    row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    assert row is not None
    return float(row[0])


def _flood_rows(svc: Services, sizes: Sizes) -> list[Row]:
    from core.settings import Settings
    from leader.config import FairShareSettings
    from leader.fairness import configure_plans

    work = svc.work_dir / "fairness"
    rng = random.Random(20)
    with svc.fresh_database("fairflood") as url, psycopg.connect(url, autocommit=True) as conn:
        storage = work / "storage"
        vendor = _Owner(conn, storage, vendor=True, seed=1)
        idle = [_Owner(conn, storage, vendor=False, seed=10 + i) for i in range(sizes.fairness_idle)]
        late = [_Owner(conn, storage, vendor=False, seed=100 + i) for i in range(sizes.fairness_users)]
        cap = sizes.fairness_cap
        configure_plans(conn, FairShareSettings.from_settings(Settings(owner_max_processing=cap)))
        peaks: list[int] = []
        stop = threading.Event()
        with fleet(url, svc.redis_url, svc.queue_name("fair"), work, processes=2, threads=2, STAYLER_MODEL="null",
                   STAYLER_MODEL_THREADS="1", STAYLER_CLAIM_BATCH_SIZE="8",
                   STAYLER_OWNER_MAX_PROCESSING=str(cap)) as flt:
            for owner in idle:  # one at a time on an idle fleet
                owner.submit(conn)
                wait_terminal(conn, idle.index(owner) + 1, 600, flt, interval_s=0.01)  # the first: the boot
            sampler = threading.Thread(target=_sample_max_processing, args=(url, stop, peaks), daemon=True)
            sampler.start()
            vendor.submit(conn, sizes.fairness_flood)
            t_flood = _db_now(conn)
            time.sleep(sizes.fairness_alone_s)
            t_users = _db_now(conn)
            moments = sorted(rng.uniform(0, sizes.fairness_users_s) for _ in late)
            t0 = time.monotonic()
            for owner, at in zip(late, moments, strict=True):
                delay = t0 + at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                owner.submit(conn)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                row = conn.execute("SELECT count(*) FROM conversion_jobs WHERE owner_id = ANY(%s) "
                                   "AND status IN ('completed', 'failed', 'cancelled')", ([o.id for o in late],)
                                   ).fetchone()
                if row and row[0] >= len(late):
                    break
                time.sleep(0.05)
            t_done = _db_now(conn)
            stop.set()
            sampler.join(5)
            left = conn.execute("SELECT count(*) FROM conversion_jobs WHERE owner_id = %s AND status = 'queued'",
                                (vendor.id,)).fetchone()
        idle_ms = _latencies(conn, [o.id for o in idle])
        late_ms = _latencies(conn, [o.id for o in late])
        alone = _vendor_rate(conn, vendor.id, t_flood + 1.0, t_users)  # skip the first second (claims ramp up)
        shared = _vendor_rate(conn, vendor.id, t_users, t_done)
    idle50, late50 = percentile(idle_ms, 0.5), percentile(late_ms, 0.5)
    peak = max(peaks, default=0)
    return [
        Row(NAME, f"enqueue → completed p50, {len(idle_ms)} users on an idle fleet", idle50, "ms"),
        Row(NAME, f"enqueue → completed p50, {len(late_ms)}/{len(late)} users behind a vendor's "
            f"{sizes.fairness_flood:,}", late50, "ms", ratio=late50 / idle50, ratio_of="idle p50",
            target="≤ 2× idle p50", met=len(late_ms) == len(late) and late50 <= 2 * idle50,
            note=f"p95 {percentile(late_ms, 0.95):.0f} ms; vendor jobs still queued when the last user finished: "
                 f"{left[0] if left else '?'}"),
        Row(NAME, "vendor completions/s alone", alone, "/s", note=f"from 1 s after its submit for "
            f"{sizes.fairness_alone_s - 1:.0f} s; per-owner cap {cap}, 2 processes × 2 threads, batch 8, null model"),
        Row(NAME, "vendor completions/s while the users wait", shared, "/s", ratio=shared / alone if alone else None,
            ratio_of="alone", target="≥ 0.9× alone", met=alone > 0 and shared >= 0.9 * alone),
        Row(NAME, "largest count of one owner's jobs processing (sampled every 50 ms)", float(peak), "jobs",
            target=f"≤ cap ({cap})", met=peak <= cap, note=f"{len(peaks)} samples"),
    ]


def run(svc: Services, sizes: Sizes) -> list[Row]:
    """The claim rows, then the flood (a failing part gets an error row; the other's rows are kept)."""
    rows: list[Row] = []
    for part in (_claim_rows, _flood_rows):
        try:
            got = part(svc, sizes)
        except Exception as exc:
            log.exception("fairness: %s failed", part.__name__)
            got = [Row(NAME, f"error in {part.__name__.strip('_')}", None, "",
                       note=f"{type(exc).__name__}: {str(exc).splitlines()[0]}")]
        for row in got:  # as they come: the claim rows take long at full size
            print(f"fairness: {row.case}: {row.value} {row.unit} {row.note}", file=sys.stderr, flush=True)
        rows.extend(got)
    return rows
