"""The queue's invariants (docs/architecture.md) with real processes.

Kills, poison jobs, retries, cancel, SIGTERM.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import Any

import psutil
import pytest

from tests.support.fleet import Env, stop
from tests.support.wait import wait_for
from tests.support.workload import Workload, connect

pytestmark = pytest.mark.e2e

CANCEL = "SELECT operator_cancel_conversion(%s, 'test', 'test')"


def _processing_pid(work: Workload, cid: uuid.UUID) -> int | None:
    job = work.job(cid)
    if job["status"] != "processing" or not job["worker_id"]:
        return None
    return int(str(job["worker_id"]).split(":")[1])


def test_a_worker_killed_mid_job_is_rescued_and_the_job_completes_once_elsewhere(env: Env) -> None:
    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        [cid] = work.submit(1, style="slow")
        slow: dict[str, Any] = {"STAYLER_FAILPOINTS": "sleep=slow:2"}
        env.start_fleet(**slow)
        env.start_fleet(**slow)  # a second "host"
        pid = wait_for(lambda: _processing_pid(work, cid), 30, "the job to be claimed", env)
        os.kill(int(pid), signal.SIGKILL)
        wait_for(lambda: work.all_terminal([cid]), 40, "the rescued job to finish", env)
        job = work.job(cid)
        # A first loss is not charged (the job may have been an innocent batch-mate): retry_count 0.
        assert (job["status"], job["attempt"], job["retry_count"], job["suspect"]) == (
            "completed", 2, 0, True), env.logs()
        assert conn.execute("SELECT count(*) FROM images WHERE type = 'result'").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM conversion_metrics").fetchone() == (1,)
        files = sorted(p.name for p in (env.storage_dir / "results").rglob("*") if p.is_file())
        assert files == ["a2.jpg", "a2.thumb.jpg"]


@pytest.mark.slow  # the batch-8 variant below runs in the default suite
def test_a_poison_job_that_kills_its_worker_every_time_ends_failed(env: Env) -> None:
    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        [poison] = work.submit(1, style="poison", max_retries=1)
        healthy = work.submit(2)
        env.start_supervised(STAYLER_FAILPOINTS="kill=poison", STAYLER_CLAIM_BATCH_SIZE="1")
        wait_for(lambda: work.all_terminal([poison, *healthy]), 60, "the poison job to end", env)
        job = work.job(poison)
        # The first loss is free (the job becomes suspect and runs alone); each later one counts.
        assert (job["status"], job["error_type"], job["retry_count"], job["attempt"]) == (
            "failed", "worker_lost", 1, 3), env.logs()
        assert set(work.statuses(healthy).values()) == {"completed"}
        metrics = conn.execute("SELECT success, error_type FROM conversion_metrics WHERE conversion_id = %s",
                               (poison,)).fetchall()
        assert metrics == [(False, "worker_lost")]


def test_a_poison_job_in_a_batch_charges_only_itself(env: Env) -> None:
    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        [poison] = work.submit(1, style="poison", max_retries=0, priority=5)
        healthy = work.submit(5, max_retries=0)
        env.start_supervised(STAYLER_FAILPOINTS="kill=poison", STAYLER_CLAIM_BATCH_SIZE="8")
        wait_for(lambda: work.all_terminal([poison, *healthy]), 90, "the batch to end", env)
        assert set(work.statuses(healthy).values()) == {"completed"}, env.logs()
        assert all(work.job(c)["retry_count"] == 0 for c in healthy)
        job = work.job(poison)
        assert (job["status"], job["error_type"], job["retry_count"]) == ("failed", "worker_lost", 0)


@pytest.mark.slow  # a fleet run; retries up to max_retries: tests/queue/test_queue_operations.py
def test_a_job_that_always_fails_ends_failed_after_exactly_max_retries(env: Env) -> None:
    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        [cid] = work.submit(1, max_retries=2)
        (env.storage_dir / "results").write_text("a file where the results folder should be")  # writes fail
        env.start_fleet()
        wait_for(lambda: work.all_terminal([cid]), 30, "the failing job to end", env)
        job = work.job(cid)
        assert (job["status"], job["retry_count"], job["attempt"], job["error_type"]) == (
            "failed", 2, 3, "storage"), env.logs()
        row = conn.execute("SELECT status, error_message FROM conversions WHERE id = %s", (cid,)).fetchone()
        assert row is not None and row[0] == "failed" and "results" in row[1]
        assert conn.execute("SELECT success, error_type FROM conversion_metrics WHERE conversion_id = %s",
                            (cid,)).fetchall() == [(False, "storage")]
        assert conn.execute("SELECT count(*) FROM images WHERE type = 'result'").fetchone() == (0,)


@pytest.mark.slow  # a fleet run; the default suite keeps poison-in-a-batch and test_batch_pipeline.py
def test_bad_input_in_a_batch_fails_only_its_own_job(env: Env) -> None:
    from modelkit.samples import make_person, to_bytes
    from producer import submit
    from producer.images import register_image
    from tests.support.workload import LIMITS

    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        good = work.submit(3)
        # A registered image whose stored bytes are later damaged (bit rot, a bad upload path).
        record = register_image(conn, work.storage, to_bytes(make_person(96, 128).image), owner_id=work.user,
                                owner_type="user", image_type="user", limits=LIMITS)
        (env.storage_dir / record.file_path).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        bad = submit(conn, user_id=work.user, user_image_id=record.id, cloth_image_id=work.garment)
        env.start_fleet(STAYLER_CLAIM_BATCH_SIZE="8")
        wait_for(lambda: work.all_terminal([*good, bad]), 30, "the batch", env)
        assert set(work.statuses(good).values()) == {"completed"}
        job = work.job(bad)
        assert (job["status"], job["error_type"], job["retry_count"], job["attempt"]) == (
            "failed", "invalid_image", 0, 1), env.logs()


def test_cancel_while_queued_and_while_running(env: Env) -> None:
    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        [queued] = work.submit(1)
        assert conn.execute(CANCEL, (queued,)).fetchone() == ("cancelled",)
        [running] = work.submit(1, style="slow")
        env.start_fleet(STAYLER_FAILPOINTS="sleep=slow:3")
        wait_for(lambda: _processing_pid(work, running), 30, "the slow job to start", env)
        assert conn.execute(CANCEL, (running,)).fetchone() == ("cancelled",)
        time.sleep(4.5)  # the worker wakes from its sleep, sees the lost claim and drops the attempt
        assert work.statuses([queued, running]) == {queued: "cancelled", running: "cancelled"}
        assert work.job(queued)["attempt"] == 0  # never claimed
        assert conn.execute("SELECT count(*) FROM images WHERE type = 'result'").fetchone() == (0,)
        assert list(env.storage_dir.glob("results/**/*.jpg")) == []
        assert conn.execute("SELECT count(*) FROM conversion_metrics WHERE error_type = 'cancelled'").fetchone() \
            == (2,)
        assert "claim lost" in env.logs()


@pytest.mark.slow  # a fleet run; hand-back is covered on the database in tests/worker/test_hand_back.py
def test_sigterm_finishes_or_hands_back_in_flight_jobs(env: Env) -> None:
    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        [slow] = work.submit(1, style="slow")
        fleet = env.start_fleet(STAYLER_FAILPOINTS="sleep=slow:6", STAYLER_SHUTDOWN_GRACE_S="1")
        wait_for(lambda: _processing_pid(work, slow), 30, "the slow job to start", env)
        assert stop(fleet, timeout=30) is not None
        job = work.job(slow)
        # The grace period (1 s) is shorter than the job (6 s): the claim went back, uncounted.
        assert (job["status"], job["retry_count"], job["worker_id"]) == ("queued", 0, None), env.logs()
        assert conn.execute("SELECT count(*) FROM conversion_jobs WHERE status = 'processing'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM workers WHERE stopped_at IS NULL").fetchone() == (0,)
        env.start_fleet()
        wait_for(lambda: work.all_terminal([slow]), 30, "the handed-back job", env)
        assert work.job(slow)["attempt"] == 2
        quick = work.submit(2)
        fleet = env.fleets[-1]
        wait_for(lambda: work.all_terminal(quick), 30, "quick jobs", env)
        stop(fleet)
        assert not psutil.pid_exists(fleet.pid) or psutil.Process(fleet.pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.slow  # a fleet run; the default suite keeps the cancel test
def test_a_completion_that_arrives_after_cancel_leaves_no_row_and_no_file(env: Env) -> None:
    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        [cid] = work.submit(1, style="late")
        env.start_fleet(STAYLER_FAILPOINTS="stall=late:3")
        # The worker stores its result, then stalls before recording it: cancel in that window.
        wait_for(lambda: list(env.storage_dir.glob(f"results/{cid}/a1.jpg")), 30, "the result file", env)
        assert conn.execute(CANCEL, (cid,)).fetchone() == ("cancelled",)
        wait_for(lambda: "completion fenced out" in env.logs(), 15, "the fenced-out completion", env)
        assert work.statuses([cid]) == {cid: "cancelled"}
        assert conn.execute("SELECT count(*) FROM images WHERE type = 'result'").fetchone() == (0,)
        assert list(env.storage_dir.glob("results/**/*.jpg")) == []
