"""Bounded growth: the prune functions (0110) and the leader's retention duty.

Before 0110 nothing pruned finished jobs or stopped workers; each test here fails on that schema.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import psycopg
import pytest

from core.settings import Settings
from leader.config import RetentionSettings
from leader.duties.retention import RetentionDuty
from schema.queries import Q

from .conftest import Factory


def _one(db: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def finished_conversion(db: psycopg.Connection[Any], make: Factory, age: str) -> uuid.UUID:
    """A cancelled conversion whose job finished ``age`` ago."""
    _user, _ui, _ci, conv = make.user_conversion()
    db.execute("SELECT operator_cancel_conversion(%s, 'test', 'retention')", (conv,))
    db.execute("UPDATE conversion_jobs SET completed_at = now() - %s::interval WHERE conversion_id = %s", (age, conv))
    return conv


def test_finished_jobs_are_pruned_by_age_in_bounded_batches(db: psycopg.Connection[Any], make: Factory) -> None:
    old = [finished_conversion(db, make, "40 days") for _ in range(5)]
    recent = finished_conversion(db, make, "1 day")
    _u, _ui, _ci, active = make.user_conversion()
    assert _one(db, "SELECT prune_finished_jobs(interval '30 days', 2)") == 2
    assert _one(db, "SELECT prune_finished_jobs(interval '30 days', 10)") == 3
    assert _one(db, "SELECT prune_finished_jobs(interval '30 days', 10)") == 0
    assert _one(db, "SELECT prune_finished_jobs(interval '0', 10)") == 0  # 0 = never
    left = {r[0] for r in db.execute("SELECT conversion_id FROM conversion_jobs").fetchall()}
    assert left == {recent, active}
    # the conversions keep their outcome
    assert _one(db, "SELECT count(*) FROM conversions WHERE id = ANY(%s) AND status = 'cancelled'", (old,)) == 5


def test_stopped_and_silent_workers_are_pruned_unless_they_hold_a_job(db: psycopg.Connection[Any],
                                                                     make: Factory) -> None:
    db.execute("""INSERT INTO workers (id, hostname, pid, started_at, heartbeat_at, stopped_at) VALUES
                  ('stopped-old', 'h', 1, now() - interval '9 days', now() - interval '8 days',
                   now() - interval '8 days'),
                  ('stopped-new', 'h', 2, now(), now(), now()),
                  ('live', 'h', 3, now(), now(), NULL),
                  ('silent-old', 'h', 4, now() - interval '9 days', now() - interval '8 days', NULL),
                  ('silent-holder', 'h', 5, now() - interval '9 days', now() - interval '8 days', NULL)""")
    _u, _ui, _ci, conv = make.user_conversion()
    db.execute("UPDATE conversion_jobs SET status = 'processing', worker_id = 'silent-holder', attempt = 1 "
               "WHERE conversion_id = %s", (conv,))
    assert _one(db, "SELECT prune_stopped_workers(interval '7 days', 100)") == 2
    assert {r[0] for r in db.execute("SELECT id FROM workers").fetchall()} == {"stopped-new", "live", "silent-holder"}


def test_the_duty_prunes_queue_rows_and_leaves_user_data_alone_by_default(db: psycopg.Connection[Any],
                                                                         make: Factory) -> None:
    for _ in range(3):
        finished_conversion(db, make, "40 days")
    db.execute("UPDATE image_usage_history SET created_at = now() - interval '10 years'")
    db.execute("UPDATE conversion_metrics SET created_at = now() - interval '10 years'")
    db.execute("UPDATE operator_actions SET created_at = now() - interval '10 years'")
    db.execute("INSERT INTO workers (id, hostname, pid, heartbeat_at, stopped_at) "
               "VALUES ('w-old', 'h', 1, now() - interval '8 days', now() - interval '8 days')")
    duty = RetentionDuty(RetentionSettings.from_settings(Settings(retention_batch_size=2)))
    assert (duty.name, duty.interval_s) == ("retention", 300.0)
    assert duty.run_once(db) == 4  # three jobs in two batches, one worker
    assert duty.run_once(db) == 0
    assert _one(db, "SELECT count(*) FROM image_usage_history") == 6
    assert _one(db, "SELECT count(*) FROM conversion_metrics") == 3
    assert _one(db, "SELECT count(*) FROM operator_actions") == 3
    opted_in = RetentionDuty(RetentionSettings.from_settings(Settings(
        retention_usage_history_after_s=86400, retention_metrics_after_s=86400,
        retention_operator_actions_after_s=86400)))
    assert opted_in.run_once(db) == 6 + 3 + 3


def test_a_run_is_bounded(db: psycopg.Connection[Any], make: Factory) -> None:
    for _ in range(5):
        finished_conversion(db, make, "40 days")
    duty = RetentionDuty(RetentionSettings.from_settings(Settings(retention_batch_size=1, retention_max_batches=2)))
    assert duty.run_once(db) == 2
    assert _one(db, "SELECT count(*) FROM conversion_jobs") == 3


def _median_ms(db: psycopg.Connection[Any], statement: str, params: dict[str, Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        with db.transaction(force_rollback=True):
            start = time.perf_counter()
            db.execute(statement, params).fetchall()
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@pytest.mark.slow
def test_claim_and_prune_stay_flat_at_a_million_finished_jobs(db: psycopg.Connection[Any], make: Factory) -> None:
    """1,000,000 finished jobs (half of them prunable): a claim costs what it costs on an almost empty table,
    and a prune batch stays bounded by the batch (measured medians; prints the figures)."""
    user, ui, ci, _ = make.user_conversion()
    for _ in range(50):
        make.user_conversion()
    [claim_name] = [n for n in Q.names() if n.startswith("job_claim")]
    claim = getattr(Q, claim_name)
    params = {"limit": 16, "worker_id": "w-bench", "claim_token": uuid.uuid4(), "allow_suspect": True}
    prune = "SELECT prune_finished_jobs(interval '30 days', 1000)"

    def finished(n: int) -> None:
        db.execute(
            """WITH c AS (
                   INSERT INTO conversions (user_id, user_image_id, cloth_image_id, status)
                   SELECT %s, %s, %s, 'failed' FROM generate_series(1, %s) RETURNING id)
               INSERT INTO conversion_jobs (conversion_id, status, attempt, completed_at, created_at)
               SELECT c.id, 'failed', 1, now() - make_interval(secs => random() * 60 * 86400),
                      now() - interval '61 days' FROM c""", (user, ui, ci, n))
        db.execute("ANALYZE conversion_jobs")

    finished(3000)
    small_claim = _median_ms(db, claim, params, 50)
    small_prune = _median_ms(db, prune, {}, 20)
    started = time.perf_counter()
    finished(997_000)
    load_s = time.perf_counter() - started
    big_claim = _median_ms(db, claim, params, 50)
    big_prune = _median_ms(db, prune, {}, 20)
    print(f"\nclaim of 16: {small_claim:.2f} ms at 3,000 finished, {big_claim:.2f} ms at 1,000,000; "
          f"prune batch of 1,000: {small_prune:.2f} ms vs {big_prune:.2f} ms; rows inserted in {load_s:.0f} s")
    assert big_claim <= max(2 * small_claim, small_claim + 2.0)
    # a batch touches up to 1,000 heap pages when the victims are spread over the table: bounded by the
    # batch, not by the table (a sequential scan of 1,000,000 rows costs hundreds of ms here)
    assert big_prune <= small_prune + 50.0
