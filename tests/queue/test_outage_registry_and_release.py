"""Issue 26 in SQL: a release is logged as a release, and a heartbeat makes a worker marked stopped live again."""

from __future__ import annotations

import psycopg

from schema.queries import Q
from tests.queue.ops import claim_jobs, fail_job, release_jobs
from tests.support.factories import make_conversion
from worker.errors import Failure

TRANSIENT = Failure("storage", "disk full", True)


def _attempts(conn: psycopg.Connection, conv: object) -> list[tuple[object, ...]]:
    return conn.execute("SELECT a.attempt, a.outcome, a.error_type, a.error_message "
                        "FROM conversion_job_attempts a JOIN conversion_jobs j ON j.id = a.job_id "
                        "WHERE j.conversion_id = %s ORDER BY a.attempt", (conv,)).fetchall()


def test_a_graceful_release_is_logged_as_a_release_not_with_the_previous_error(db: psycopg.Connection) -> None:
    conv = make_conversion(db, max_retries=3)
    [first] = claim_jobs(db, "w1", 1)
    assert fail_job(db, first, TRANSIENT, backoff_base_s=0.001, backoff_max_s=0.001, processing_time_ms=5,
                    ai_model_version="t") == "queued"
    db.execute("UPDATE conversion_jobs SET run_after = now() - interval '1 second', scheduled = false "
               "WHERE conversion_id = %s", (conv,))
    [second] = claim_jobs(db, "w2", 1)
    assert release_jobs(db, [(second.job_id, second.attempt)]) == [second.job_id]
    rows = _attempts(db, conv)
    assert rows == [(1, "requeued", "storage", "disk full"), (2, "released", None, None)]
    # Not charged: the retry count is the one failure's.
    assert db.execute("SELECT retry_count FROM conversion_jobs WHERE conversion_id = %s", (conv,)).fetchone() == (1,)


def test_a_release_by_claim_token_is_logged_as_a_release(db: psycopg.Connection) -> None:
    conv = make_conversion(db)
    [claim] = claim_jobs(db, "w1", 1)
    token = db.execute("SELECT claim_token FROM conversion_jobs WHERE id = %s", (claim.job_id,)).fetchone()
    assert token is not None and token[0] is not None
    db.execute(Q.jobs_release_claim, {"claim_token": token[0]})
    assert _attempts(db, conv) == [(1, "released", None, None)]


def test_the_flag_does_not_leak_to_a_retry_in_the_same_transaction(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conv = make_conversion(conn, max_retries=3)
        a, b = claim_jobs(conn, "w1", 1), None
        conn.commit()
        make_conversion(conn, max_retries=3)
        conn.commit()
        b = claim_jobs(conn, "w1", 1)
        conn.commit()
        release_jobs(conn, [(b[0].job_id, b[0].attempt)])
        fail_job(conn, a[0], TRANSIENT, backoff_base_s=0.001, backoff_max_s=0.001, processing_time_ms=5,
                 ai_model_version="t")
        conn.commit()
        assert _attempts(conn, conv) == [(1, "requeued", "storage", "disk full")]


def test_a_heartbeat_makes_a_worker_marked_stopped_live_again(db: psycopg.Connection) -> None:
    db.execute(Q.worker_register, {"id": "w1", "hostname": "h", "pid": 1, "concurrency": 1,
                                   "model_name": "m", "model_version": "v"})
    db.execute("UPDATE workers SET heartbeat_at = now() - interval '1 hour'")
    db.execute(Q.workers_mark_stopped, {"stale_after_s": 30})
    assert db.execute("SELECT stopped_at IS NOT NULL FROM workers").fetchone() == (True,)
    assert db.execute(Q.workers_renew, {"id": "w1", "services_down": None}).fetchone() == (True,)
    assert db.execute("SELECT stopped_at IS NULL, heartbeat_at > now() - interval '5 seconds' FROM workers"
                      ).fetchone() == (True, True)
    # The 7-day prune reads the truth: a live worker is not pruned.
    assert db.execute("SELECT prune_stopped_workers(interval '1 second')").fetchone() == (0,)
    assert db.execute(Q.workers_renew, {"id": "gone", "services_down": None}).fetchone() == (False,)
