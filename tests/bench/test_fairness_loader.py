"""The fairness bench's bulk loader stamps jobs exactly as the insert trigger would (owner, plan,
band, virtual start, the owner's lane and load rows), so its 1,000,000-job row measures real rows."""

from __future__ import annotations

import uuid

import psycopg

from bench.fairness import load_queue
from core.settings import Settings
from leader.config import FairShareSettings
from leader.fairness import configure_plans
from tests.support.factories import make_image, make_user

OWNERS, JOBS = 7, 30  # not a multiple: some owners get one job more


Shape = tuple[tuple[object, ...], object, object]


def _shape(conn: psycopg.Connection, owners: list[uuid.UUID]) -> list[Shape]:
    """Per owner (in the given order): its jobs' (plan, band, status, vstart) by age, its lane, its load."""
    out: list[Shape] = []
    for owner in owners:
        jobs = conn.execute("SELECT plan, band, status, vstart FROM conversion_jobs WHERE owner_id = %s "
                            "ORDER BY created_at, vstart", (owner,)).fetchall()
        lane = conn.execute("SELECT owner_kind, plan, last_finish, band FROM owner_lanes WHERE owner_id = %s",
                            (owner,)).fetchone()
        load = conn.execute("SELECT processing FROM owner_load WHERE owner_id = %s", (owner,)).fetchone()
        out.append((tuple(jobs), lane, load))
    return out


def test_loaded_rows_equal_the_triggers_stamp(db: psycopg.Connection) -> None:
    configure_plans(db, FairShareSettings.from_settings(Settings()))
    # Reference: the same interleaving through the stamping trigger, in one statement.
    users = [make_user(db) for _ in range(OWNERS)]
    images = [(make_image(db, u, type_="user"), make_image(db, u, type_="cloth")) for u in users]
    db.execute("CREATE TEMP TABLE ref_owner (n int, id uuid, person uuid, cloth uuid)")
    with db.cursor() as cur:
        cur.executemany("INSERT INTO ref_owner VALUES (%s, %s, %s, %s)",
                        [(n, u, p, c) for n, (u, (p, c)) in enumerate(zip(users, images, strict=True))])
    # (Two statements: the trigger looks the conversion up, and cannot see one inserted by a CTE of
    # its own statement.)
    db.execute("""CREATE TEMP TABLE ref_src AS
                  SELECT gen_random_uuid() AS cid, o.id AS owner_id, o.person, o.cloth, i,
                         now() - make_interval(secs => %(jobs)s - i) AS created_at
                    FROM generate_series(0, %(jobs)s - 1) AS i JOIN ref_owner o ON o.n = i %% %(owners)s""",
               {"jobs": JOBS, "owners": OWNERS})
    db.execute("""INSERT INTO conversions (id, user_id, user_image_id, cloth_image_id, status, created_at)
                  SELECT cid, owner_id, person, cloth, 'pending', created_at FROM ref_src""")
    db.execute("INSERT INTO conversion_jobs (conversion_id, created_at) SELECT cid, created_at FROM ref_src ORDER BY i")
    reference = _shape(db, users)
    assert sum(len(jobs) for jobs, _, _ in reference) == JOBS

    load_queue(db, OWNERS, JOBS)
    loaded_owners = [r[0] for r in db.execute("SELECT id FROM bench_owner ORDER BY n").fetchall()]
    assert _shape(db, loaded_owners) == reference
