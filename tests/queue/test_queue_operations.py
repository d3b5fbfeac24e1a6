"""The queue's state machine in SQL: claim, complete, fail/retry, rescue, release, cancel (real PostgreSQL)."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

from tests.queue.ops import claim_jobs, complete_jobs, fail_job, release_jobs
from tests.support.factories import conversion, job_of, make_conversion
from worker.errors import Failure
from worker.jobs import Claim, Completion

TRANSIENT = Failure("storage", "disk full", True)
PERMANENT = Failure("invalid_image", "person image does not decode", False)


def completion(claim: Claim, key: str = "results/x/a1.jpg") -> Completion:
    return Completion(claim=claim, file_path=key, file_name="a1.jpg", original_url=f"file:///{key}",
                      thumbnail_url="file:///t.jpg", file_size=1234, mime_type="image/jpeg", width=10, height=20,
                      processing_time_ms=42, ai_model_version="test-1")


def fail(conn: psycopg.Connection, claim: Claim, failure: Failure) -> str | None:
    return fail_job(conn, claim, failure, backoff_base_s=0.001, backoff_max_s=0.001, processing_time_ms=5,
                    ai_model_version="test-1")


def make_available(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE conversion_jobs SET run_after = now() - interval '1 second' WHERE status = 'queued'")


def test_claim_takes_highest_priority_then_oldest_and_marks_everything(db: psycopg.Connection) -> None:
    low = make_conversion(db, priority=0)
    high = make_conversion(db, priority=5)
    later_low = make_conversion(db, priority=0)
    claims = claim_jobs(db, "w1", 2)
    assert [c.conversion_id for c in claims] == [high, low]
    assert all(c.attempt == 1 for c in claims)
    job = job_of(db, high)
    assert (job["status"], job["worker_id"], job["attempt"]) == ("processing", "w1", 1)
    assert job["started_at"] is not None and job["heartbeat_at"] is not None
    assert conversion(db, high)["status"] == "processing"
    assert conversion(db, later_low)["status"] == "pending"
    usage = db.execute("SELECT count(*) FROM image_usage_history WHERE action = 'convert' AND conversion_id = %s",
                       (high,)).fetchone()
    assert usage == (1,)
    assert claims[0].person_key.startswith("images/")


def test_concurrent_claims_never_share_a_job(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as setup:
        for _ in range(40):
            make_conversion(setup)
    got: list[list[uuid.UUID]] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            mine: list[uuid.UUID] = []
            while batch := claim_jobs(conn, f"w{n}", 3):
                mine.extend(c.job_id for c in batch)
            with lock:
                got.append(mine)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [j for mine in got for j in mine]
    assert len(flat) == 40
    assert len(set(flat)) == 40


def test_a_job_waiting_for_backoff_is_not_claimed(db: psycopg.Connection) -> None:
    conv = make_conversion(db)
    db.execute("UPDATE conversion_jobs SET run_after = now() + interval '1 hour' WHERE conversion_id = %s", (conv,))
    assert claim_jobs(db, "w1", 5) == []


def test_completion_is_fenced_and_happens_once(db: psycopg.Connection) -> None:
    conv = make_conversion(db)
    [claim] = claim_jobs(db, "w1", 1)
    first = complete_jobs(db, [completion(claim)])
    assert first[claim.job_id] is not None
    again = complete_jobs(db, [completion(claim, "results/x/a1-dup.jpg")])
    assert again[claim.job_id] is None
    row = conversion(db, conv)
    assert row["status"] == "completed" and row["result_image_id"] == first[claim.job_id]
    assert row["processing_time_ms"] == 42
    assert job_of(db, conv)["status"] == "completed"
    assert db.execute("SELECT count(*) FROM images WHERE type = 'result'").fetchone() == (1,)
    metrics = db.execute("SELECT success, ai_model_version, output_file_size_bytes, processing_time_ms "
                         "FROM conversion_metrics WHERE conversion_id = %s", (conv,)).fetchall()
    assert metrics == [(True, "test-1", 1234, 42)]
    owner = db.execute("SELECT i.owner_id = c.user_id, i.owner_type FROM images i JOIN conversions c "
                       "ON c.result_image_id = i.id WHERE c.id = %s", (conv,)).fetchone()
    assert owner == (True, "user")


def test_completion_after_cancel_writes_nothing(db: psycopg.Connection) -> None:
    conv = make_conversion(db)
    [claim] = claim_jobs(db, "w1", 1)
    assert db.execute("SELECT operator_cancel_conversion(%s, 'test', 'test')", (conv,)).fetchone() == ("cancelled",)
    assert complete_jobs(db, [completion(claim)])[claim.job_id] is None
    row = conversion(db, conv)
    assert row["status"] == "cancelled" and row["result_image_id"] is None
    assert job_of(db, conv)["status"] == "cancelled"
    assert db.execute("SELECT count(*) FROM images WHERE type = 'result'").fetchone() == (0,)
    assert db.execute("SELECT success, error_type FROM conversion_metrics WHERE conversion_id = %s",
                      (conv,)).fetchall() == [(False, "cancelled")]


def test_cancel_while_queued_is_immediate(db: psycopg.Connection) -> None:
    conv = make_conversion(db)
    assert db.execute("SELECT operator_cancel_conversion(%s, 'test', 'test')", (conv,)).fetchone() == ("cancelled",)
    assert job_of(db, conv)["status"] == "cancelled"
    assert claim_jobs(db, "w1", 5) == []
    # Cancelling a finished conversion reports its status and changes nothing.
    assert db.execute("SELECT operator_cancel_conversion(%s, 'test', 'test')", (conv,)).fetchone() == ("cancelled",)


def test_transient_failures_retry_with_backoff_then_fail_after_max_retries(db: psycopg.Connection) -> None:
    conv = make_conversion(db, max_retries=2)
    statuses = []
    for attempt in (1, 2, 3):
        make_available(db)
        [claim] = claim_jobs(db, "w1", 1)
        assert claim.attempt == attempt
        statuses.append(fail(db, claim, TRANSIENT))
        if statuses[-1] == "queued":
            assert conversion(db, conv)["status"] == "pending"
    assert statuses == ["queued", "queued", "failed"]
    job = job_of(db, conv)
    assert (job["status"], job["retry_count"], job["error_type"]) == ("failed", 2, "storage")
    row = conversion(db, conv)
    assert row["status"] == "failed" and row["error_message"] == "disk full"
    assert db.execute("SELECT success, error_type FROM conversion_metrics WHERE conversion_id = %s",
                      (conv,)).fetchall() == [(False, "storage")]


def test_backoff_delays_the_next_attempt(db: psycopg.Connection) -> None:
    conv = make_conversion(db)
    [claim] = claim_jobs(db, "w1", 1)
    fail_job(db, claim, TRANSIENT, backoff_base_s=60, backoff_max_s=600, processing_time_ms=1, ai_model_version="v")
    delay = db.execute("SELECT extract(epoch FROM run_after - now()) FROM conversion_jobs WHERE conversion_id = %s",
                       (conv,)).fetchone()
    assert delay is not None and 29 <= float(delay[0]) <= 61  # 60 s with equal jitter: between 30 and 60
    assert claim_jobs(db, "w1", 1) == []


def test_permanent_failure_fails_at_once(db: psycopg.Connection) -> None:
    conv = make_conversion(db, max_retries=3)
    [claim] = claim_jobs(db, "w1", 1)
    assert fail(db, claim, PERMANENT) == "failed"
    job = job_of(db, conv)
    assert (job["status"], job["retry_count"], job["error_type"]) == ("failed", 0, "invalid_image")


def lose(db: psycopg.Connection) -> None:
    db.execute("UPDATE conversion_jobs SET heartbeat_at = now() - interval '1 minute' WHERE status = 'processing'")


def test_first_loss_is_free_and_fences_out_the_lost_worker(db: psycopg.Connection) -> None:
    conv = make_conversion(db, max_retries=1)
    [lost] = claim_jobs(db, "dead", 1)
    lose(db)
    rescued = db.execute("SELECT * FROM jobs_rescue(30, 0.001, 0.001)").fetchall()
    assert [(r[0], r[2], r[3]) for r in rescued] == [(lost.job_id, 1, "queued")]
    job = job_of(db, conv)
    assert (job["status"], job["retry_count"], job["error_type"], job["worker_id"], job["suspect"]) == (
        "queued", 0, "worker_lost", None, True)
    [again] = claim_jobs(db, "alive", 1)
    assert again.attempt == 2
    assert complete_jobs(db, [completion(lost)])[lost.job_id] is None  # the dead worker's late result
    assert complete_jobs(db, [completion(again)])[again.job_id] is not None
    assert conversion(db, conv)["status"] == "completed"


def test_a_suspect_job_lost_again_is_charged_then_fails_past_max_retries(db: psycopg.Connection) -> None:
    conv = make_conversion(db, max_retries=1)
    outcomes = []
    for _ in range(3):
        make_available(db)
        claim_jobs(db, "dead", 1)
        lose(db)
        outcomes.append(db.execute("SELECT new_status FROM jobs_rescue(30, 0.001, 0.001)").fetchone())
    assert outcomes == [("queued",), ("queued",), ("failed",)]
    job = job_of(db, conv)
    assert (job["status"], job["retry_count"], job["error_type"]) == ("failed", 1, "worker_lost")
    assert conversion(db, conv)["status"] == "failed"


def test_rescue_leaves_live_claims_alone(db: psycopg.Connection) -> None:
    make_conversion(db)
    claim_jobs(db, "alive", 1)
    assert db.execute("SELECT * FROM jobs_rescue(30)").fetchall() == []


def test_release_returns_jobs_without_counting_a_retry(db: psycopg.Connection) -> None:
    conv = make_conversion(db)
    [claim] = claim_jobs(db, "w1", 1)
    assert release_jobs(db, [(claim.job_id, claim.attempt)]) == [claim.job_id]
    job = job_of(db, conv)
    assert (job["status"], job["retry_count"], job["worker_id"]) == ("queued", 0, None)
    assert conversion(db, conv)["status"] == "pending"
    assert release_jobs(db, [(claim.job_id, claim.attempt)]) == []  # no longer held
    [again] = claim_jobs(db, "w2", 1)
    assert again.attempt == 2


def test_heartbeat_renews_only_claims_still_held(db: psycopg.Connection) -> None:
    from schema.queries import Q

    make_conversion(db)
    conv2 = make_conversion(db)
    claims = claim_jobs(db, "w1", 2)
    db.execute("SELECT operator_cancel_conversion(%s, 'test', 'test')", (conv2,))
    rows = db.execute(Q.jobs_heartbeat, {"job_ids": [c.job_id for c in claims],
                                          "attempts": [c.attempt for c in claims]}).fetchall()
    held = {r[0] for r in rows}
    assert held == {c.job_id for c in claims if c.conversion_id != conv2}


def test_a_queued_job_notifies_only_on_commit(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as listener, psycopg.connect(db_url) as producer:
        listener.execute("LISTEN stayler_jobs")
        make_conversion(producer)
        assert list(listener.notifies(timeout=0.3, stop_after=1)) == []
        producer.commit()
        assert len(list(listener.notifies(timeout=2, stop_after=1))) == 1


@pytest.mark.parametrize("bad", ["completed", "failed"])
def test_terminal_jobs_cannot_move_back(db: psycopg.Connection, bad: str) -> None:
    conv = make_conversion(db, max_retries=0)
    [claim] = claim_jobs(db, "w1", 1)
    if bad == "completed":
        complete_jobs(db, [completion(claim)])
    else:
        fail(db, claim, PERMANENT)
    with pytest.raises(psycopg.Error):
        db.execute("UPDATE conversion_jobs SET status = 'queued' WHERE conversion_id = %s", (conv,))


def test_every_ended_attempt_is_kept(db: psycopg.Connection) -> None:
    conv = make_conversion(db, max_retries=2)
    [first] = claim_jobs(db, "w1", 1)
    assert fail(db, first, TRANSIENT) == "queued"
    make_available(db)
    db.execute("UPDATE conversion_jobs SET scheduled = false WHERE conversion_id = %s", (conv,))
    [second] = claim_jobs(db, "w2", 1)
    complete_jobs(db, [completion(second)])
    rows = db.execute("SELECT a.attempt, a.worker_id, a.outcome, a.error_type, a.started_at IS NOT NULL "
                      "FROM conversion_job_attempts a JOIN conversion_jobs j ON j.id = a.job_id "
                      "WHERE j.conversion_id = %s ORDER BY a.attempt", (conv,)).fetchall()
    assert rows == [(1, "w1", "requeued", "storage", True), (2, "w2", "completed", None, True)]
