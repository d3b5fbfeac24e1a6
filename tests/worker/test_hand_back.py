"""The door's uncharged hand-back: now, or, while the database is away, at the next flush."""

from __future__ import annotations

import psycopg

from tests.support.factories import make_conversion
from worker.jobqueue import JobQueue


def test_a_deferred_hand_back_is_released_by_the_next_flush_uncharged(db: psycopg.Connection) -> None:
    conv = make_conversion(db, max_retries=3)
    queue = JobQueue.on_connection(db, "w1")
    [claim] = queue.claim(1)
    assert queue.hand_back([(claim.job_id, claim.attempt)], defer=True) is False
    assert db.execute("SELECT status FROM conversion_jobs WHERE id = %s", (claim.job_id,)).fetchone() == ("processing",)
    assert queue.flush() == 1
    assert queue.flush() == 0  # released once
    row = db.execute("SELECT j.status, j.retry_count, a.outcome FROM conversion_jobs j "
                     "JOIN conversion_job_attempts a ON a.job_id = j.id WHERE j.conversion_id = %s", (conv,)).fetchone()
    assert row == ("queued", 0, "released")
    # The attempt's files (if the store refused their deletion) are left to the clean duty.
    assert db.execute("SELECT attempt FROM storage_cleanup WHERE conversion_id = %s", (conv,)).fetchall() == [(1,)]


def test_a_hand_back_now_releases_at_once(db: psycopg.Connection) -> None:
    make_conversion(db)
    queue = JobQueue.on_connection(db, "w1")
    [claim] = queue.claim(1)
    assert queue.hand_back([(claim.job_id, claim.attempt)]) is True
    assert db.execute("SELECT status, retry_count FROM conversion_jobs WHERE id = %s",
                      (claim.job_id,)).fetchone() == ("queued", 0)
    queue.ping()
