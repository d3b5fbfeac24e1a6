"""Fair share in the claim (real PostgreSQL, the worker's own claim statement): a latecomer is
served before a flood drains, plan weights hold, a customer's priority orders only its own jobs, the
per-owner cap holds even under concurrent claims, and the load counter follows every move."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import psycopg

from core.settings import Settings
from leader.config import FairShareSettings
from leader.fairness import configure_plans, read_plan_stats
from tests.queue.ops import claim_jobs, release_jobs
from tests.support.factories import make_image, make_user, make_vendor
from worker.jobs import Claim


def submit(conn: psycopg.Connection, owner: uuid.UUID, count: int, *, vendor: bool = False,
           priority: int = 0, conversion_type: str = "free") -> list[uuid.UUID]:
    """``count`` conversions of one owner through create_conversion(), in one statement."""
    kind = "vendor" if vendor else "user"
    person = make_image(conn, owner, owner_type=kind, type_="user")
    cloth = make_image(conn, owner, owner_type=kind, type_="cloth")
    user_id, vendor_id = (None, owner) if vendor else (owner, None)
    rows = conn.execute(
        "SELECT create_conversion(user_id := %s, vendor_id := %s, user_image_id := %s, cloth_image_id := %s, "
        "priority := %s, conversion_type := %s) FROM generate_series(1, %s)",
        (user_id, vendor_id, person, cloth, priority, conversion_type, count)).fetchall()
    return [r[0] for r in rows]


def owner_of(conn: psycopg.Connection, claims: list[Claim]) -> list[uuid.UUID]:
    """The owner of each claimed job, in claim order."""
    out = []
    for c in claims:
        row = conn.execute("SELECT owner_id FROM conversion_jobs WHERE id = %s", (c.job_id,)).fetchone()
        assert row is not None
        out.append(row[0])
    return out


def finish(conn: psycopg.Connection, claims: list[Claim]) -> None:
    """End claimed jobs (cancelled: the quickest terminal move that frees their owner's slot)."""
    for c in claims:
        conn.execute("SELECT update_conversion_status(conversion_id := %s, status := 'cancelled')",
                     (c.conversion_id,))


def load_matches(conn: psycopg.Connection) -> list[Any]:
    """Owners whose counter differs from their processing jobs (should be none)."""
    return conn.execute(
        """SELECT o.owner_id, o.processing, count(j.id) FROM owner_load o
             LEFT JOIN conversion_jobs j ON j.owner_id = o.owner_id AND j.status = 'processing'
            GROUP BY o.owner_id, o.processing HAVING o.processing <> count(j.id)""").fetchall()


def test_a_latecomer_is_served_before_the_flood_drains(db: psycopg.Connection) -> None:
    vendor, user = make_vendor(db), make_user(db)
    submit(db, vendor, 300, vendor=True)
    for _ in range(5):
        finish(db, claim_jobs(db, "w", 4))
    [late] = submit(db, user, 1)
    first = claim_jobs(db, "w", 2)
    assert late in [c.conversion_id for c in first]
    queued = db.execute("SELECT count(*) FROM conversion_jobs WHERE owner_id = %s AND status = 'queued'",
                        (vendor,)).fetchone()
    assert queued is not None and queued[0] >= 270  # the flood is far from drained


def test_plan_weights_hold(db: psycopg.Connection) -> None:
    paid, free = make_user(db), make_user(db)
    submit(db, paid, 60, conversion_type="paid")  # weight 4
    submit(db, free, 60)  # weight 1, submitted after: still served in its share
    served: Counter[uuid.UUID] = Counter()
    for _ in range(25):
        claims = claim_jobs(db, "w", 1)
        served.update(owner_of(db, claims))
        finish(db, claims)
    assert 18 <= served[paid] <= 21 and served[paid] + served[free] == 25, served


def test_a_customers_priority_orders_only_its_own_jobs(db: psycopg.Connection) -> None:
    loud, quiet = make_user(db), make_user(db)
    low = submit(db, loud, 5)
    submit(db, loud, 20, priority=1000)
    [urgent] = submit(db, loud, 1, priority=2000)
    [other] = submit(db, quiet, 1)
    order: list[uuid.UUID] = []
    for _ in range(4):
        claims = claim_jobs(db, "w", 1)
        order.extend(c.conversion_id for c in claims)
        finish(db, claims)
    assert order[0] == urgent  # the loud customer's own order: its highest priority first
    assert other in order[:2]  # but its priority 2000 does not jump the quiet customer
    assert not set(low) & set(order)  # its priority-0 jobs wait behind its priority-1000 ones


def test_the_per_owner_cap_holds_and_frees_as_jobs_end(db: psycopg.Connection) -> None:
    configure_plans(db, FairShareSettings.from_settings(Settings(owner_max_processing=2)))
    a, b = make_user(db), make_user(db)
    submit(db, a, 10)
    submit(db, b, 10)
    first = claim_jobs(db, "w", 8)
    assert Counter(owner_of(db, first)) == {a: 2, b: 2}
    assert claim_jobs(db, "w", 8) == []
    stats = {s.plan: s for s in read_plan_stats(db)}
    assert stats["free"].throttled == 2 and stats["free"].processing == 4 and stats["free"].queued == 16
    finish(db, [c for c in first if owner_of(db, [c]) == [a]][:1])
    again = claim_jobs(db, "w", 8)
    assert owner_of(db, again) == [a]
    assert load_matches(db) == []


def test_the_cap_holds_under_concurrent_claims(db: psycopg.Connection, db_url: str) -> None:
    configure_plans(db, FairShareSettings.from_settings(Settings(owner_max_processing=3)))
    owner = make_user(db)
    submit(db, owner, 60)
    peak: list[int] = []
    errors: list[BaseException] = []

    def claimer(name: str) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                for _ in range(15):
                    claims = claim_jobs(conn, name, 4)
                    row = conn.execute("SELECT count(*) FROM conversion_jobs WHERE owner_id = %s "
                                       "AND status = 'processing'", (owner,)).fetchone()
                    assert row is not None
                    peak.append(int(row[0]))
                    release_jobs(conn, [(c.job_id, c.attempt) for c in claims])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert max(peak) <= 3 and len(peak) == 60
    assert load_matches(db) == []


def test_the_load_counter_follows_claims_releases_rescues_and_deletes(db: psycopg.Connection) -> None:
    owner = make_user(db)
    convs = submit(db, owner, 6)
    held = claim_jobs(db, "w", 4)
    release_jobs(db, [(held[0].job_id, held[0].attempt)])
    db.execute("UPDATE conversion_jobs SET heartbeat_at = now() - interval '1 hour' WHERE id = %s",
               (held[1].job_id,))
    db.execute("SELECT * FROM jobs_rescue(30)")
    db.execute("DELETE FROM conversions WHERE id = %s", (held[2].conversion_id,))
    assert load_matches(db) == []
    row = db.execute("SELECT processing FROM owner_load WHERE owner_id = %s", (owner,)).fetchone()
    assert row == (1,) and len(convs) == 6


def test_bulk_inserts_stamp_each_owner_in_sequence(db: psycopg.Connection) -> None:
    a, b = make_user(db), make_user(db)
    images = {o: (make_image(db, o, type_="user"), make_image(db, o, type_="cloth")) for o in (a, b)}
    # one statement, owners interleaved (a, b, a, b, ...), then one more statement for a
    db.execute("""WITH c AS (
                      INSERT INTO conversions (user_id, user_image_id, cloth_image_id)
                      SELECT o.id, o.p, o.c FROM generate_series(1, 10) g,
                             LATERAL (VALUES (%s::uuid, %s::uuid, %s::uuid, 1), (%s, %s, %s, 2)) AS o (id, p, c, k)
                       ORDER BY g, o.k
                      RETURNING id)
                  INSERT INTO conversion_jobs (conversion_id) SELECT id FROM c""",
               (a, *images[a], b, *images[b]))
    submit(db, a, 2, conversion_type="paid")  # weight 4: 0.25 apart
    starts = {o: [r[0] for r in db.execute("SELECT vstart FROM conversion_jobs WHERE owner_id = %s ORDER BY vstart",
                                            (o,))] for o in (a, b)}
    assert starts[b] == [float(i) for i in range(10)]
    assert starts[a] == [float(i) for i in range(10)] + [10.0, 10.25]
    lanes: dict[uuid.UUID, float] = dict(
        db.execute("SELECT owner_id, last_finish FROM owner_lanes WHERE owner_id IN (%s, %s)", (a, b)))
    assert lanes == {a: 10.5, b: 10.0}
    assert db.execute("SELECT current_setting('stayler_fair.lane', true)").fetchone() in (("",), (None,))


def test_many_creates_in_one_transaction_write_the_lane_once(db: psycopg.Connection) -> None:
    # Regression: the lane was written back after every create_conversion() statement, so a vendor's
    # 20,000 creates in one transaction updated one row 20,000 times (each update walking the row's
    # versions before it: the bench's flood took minutes to commit).
    vendor = make_vendor(db)
    person = make_image(db, vendor, owner_type="vendor", type_="user")
    cloth = make_image(db, vendor, owner_type="vendor", type_="cloth")
    with db.transaction():
        db.execute("SELECT count(create_conversion(vendor_id := %s, user_image_id := %s, cloth_image_id := %s)) "
                   "FROM generate_series(1, 200)", (vendor, person, cloth))
        row = db.execute("SELECT pg_stat_get_xact_tuples_updated('owner_lanes'::regclass)").fetchone()
        assert row is not None and row[0] == 0
    lane = db.execute("SELECT last_finish FROM owner_lanes WHERE owner_id = %s", (vendor,)).fetchone()
    assert lane == (200.0,)
