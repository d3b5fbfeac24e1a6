"""The leader's duties, one round at a time, against a real PostgreSQL (Redis faked with fakeredis)."""

from __future__ import annotations

import logging
from pathlib import Path

import fakeredis
import psycopg
import pytest

from broker.messages import waiting_messages
from broker.redis import StaylerRedisBroker
from leader.duties.clean import CleanDuty
from leader.duties.dispatch import DispatchDuty
from leader.duties.rescue import RescueDuty
from storage import LocalStorage, StorageError, result_key
from tests.queue.ops import claim_jobs, fail_job
from tests.support.factories import conversion, job_of, make_conversion
from worker.errors import Failure


def dispatch_duty(batch_size: int = 4) -> DispatchDuty:
    broker = StaylerRedisBroker(client=fakeredis.FakeRedis(), namespace="t")
    return DispatchDuty(broker, "q", batch_size=batch_size, max_waiting=16, interval_s=5)


def rescue_duty(rescue_after_s: float = 1.0) -> RescueDuty:
    return RescueDuty(rescue_after_s=rescue_after_s, interval_s=1, backoff_base_s=0.001, backoff_max_s=0.001)


def lose_all(db: psycopg.Connection) -> None:
    db.execute("UPDATE conversion_jobs SET heartbeat_at = now() - interval '1 minute' WHERE status = 'processing'")


def test_dispatch_sends_one_message_per_batch_of_ready_jobs(db: psycopg.Connection) -> None:
    duty = dispatch_duty()
    for _ in range(9):
        make_conversion(db)
    assert duty.run_once(db) == 3
    assert duty.run_once(db) == 0  # the queue already holds enough messages
    assert waiting_messages(duty.broker, "q") == 3


def test_an_idle_queue_sets_no_wake_up(db: psycopg.Connection) -> None:
    # Regression: GREATEST(0, NULL) is 0, so an empty queue asked for a dispatch round at once, forever
    # (about 1,200 Redis LLEN a second and a third of a core from an idle leader).
    duty = dispatch_duty()
    assert duty.run_once(db) == 0
    assert duty.wake_in_s is None


def test_dispatch_promotes_due_scheduled_jobs_and_times_the_next_by_the_database_clock(
        db: psycopg.Connection) -> None:
    # Regression (issue 10, defect 9): the wake-up was computed against the host's clock; 5 s of
    # skew made 16,049 dispatch rounds in 3 s. Now the database says how long to wait.
    due, later = make_conversion(db), make_conversion(db)
    db.execute("UPDATE conversion_jobs SET run_after = now() + interval '1 hour' WHERE conversion_id = %s", (later,))
    db.execute("UPDATE conversion_jobs SET run_after = now() + interval '5 minutes' WHERE conversion_id = %s", (due,))
    assert job_of(db, due)["scheduled"] and job_of(db, later)["scheduled"]
    duty = dispatch_duty()
    assert duty.run_once(db) == 0
    assert duty.wake_in_s is not None and 290 <= duty.wake_in_s <= 300
    # Its backoff ends (written the way job_fail writes it): the next round makes it ready.
    db.execute("UPDATE conversion_jobs SET run_after = now() - interval '1 second', scheduled = true "
               "WHERE conversion_id = %s", (due,))
    db.execute("ALTER TABLE conversion_jobs DISABLE TRIGGER trg_conversion_jobs_scheduled")
    db.execute("UPDATE conversion_jobs SET scheduled = true WHERE conversion_id = %s", (due,))
    db.execute("ALTER TABLE conversion_jobs ENABLE TRIGGER trg_conversion_jobs_scheduled")
    assert duty.run_once(db) == 1
    assert not job_of(db, due)["scheduled"]
    assert duty.wake_in_s is not None and duty.wake_in_s > 3000


def test_one_bad_row_does_not_stop_the_rescue_of_the_others(db: psycopg.Connection) -> None:
    # Regression (issue 10, defect 3): a processing job of a conversion that had already ended
    # made jobs_rescue raise SA021 for the whole batch, every round.
    ended, healthy = make_conversion(db), make_conversion(db)
    claim_jobs(db, "dead", 2)
    db.execute("SELECT operator_cancel_conversion(%s, 'test', 'test')", (ended,))
    db.execute("ALTER TABLE conversion_jobs DISABLE TRIGGER trg_conversion_jobs_status_guard")
    db.execute("UPDATE conversion_jobs SET status = 'processing', completed_at = NULL WHERE conversion_id = %s",
               (ended,))  # the state an operator's re-run insert used to leave behind
    db.execute("ALTER TABLE conversion_jobs ENABLE TRIGGER trg_conversion_jobs_status_guard")
    # And a row that fails for a reason nobody foresaw, through a trigger of the test's own.
    broken = make_conversion(db)
    claim_jobs(db, "dead", 1)
    lose_all(db)
    db.execute(f"""CREATE FUNCTION test_break() RETURNS trigger LANGUAGE plpgsql AS $$
                   BEGIN IF NEW.conversion_id = '{broken}' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$""")
    db.execute("CREATE TRIGGER test_break BEFORE UPDATE ON conversion_jobs FOR EACH ROW EXECUTE FUNCTION test_break()")
    duty = rescue_duty()
    assert duty.run_once(db) == 2
    assert duty.errors == 1
    assert job_of(db, healthy)["status"] == "queued"
    assert (job_of(db, ended)["status"], job_of(db, ended)["error_type"]) == ("cancelled", "conversion_ended")
    assert job_of(db, broken)["status"] == "processing"


def test_queued_jobs_of_ended_conversions_are_never_claimed_and_are_ended(db: psycopg.Connection) -> None:
    # Regression (issue 11, defect 5): the claim moved such a job to processing and its join dropped it.
    done = make_conversion(db, max_retries=0)
    [claim] = claim_jobs(db, "w", 1)
    fail_job(db, claim, Failure("internal", "boom", False), backoff_base_s=1, backoff_max_s=1,
             processing_time_ms=1, ai_model_version="v")
    db.execute("INSERT INTO conversion_jobs (conversion_id, priority) VALUES (%s, 9)", (done,))  # a "re-run"
    fresh = make_conversion(db)
    assert [c.conversion_id for c in claim_jobs(db, "w", 5)] == [fresh]
    assert rescue_duty().run_once(db) == 1
    rerun = db.execute("SELECT status, error_type FROM conversion_jobs WHERE conversion_id = %s "
                       "ORDER BY created_at DESC LIMIT 1", (done,)).fetchone()
    assert rerun == ("failed", "conversion_ended")
    assert conversion(db, done)["status"] == "failed"


def test_rescue_marks_workers_whose_heartbeat_stopped_as_stopped(db: psycopg.Connection) -> None:
    db.execute("INSERT INTO workers (id, hostname, pid, heartbeat_at) VALUES "
               "('gone', 'h', 1, now() - interval '1 hour'), ('alive', 'h', 2, now())")
    rescue_duty(rescue_after_s=30).run_once(db)
    stopped: dict[str, bool] = dict(db.execute("SELECT id, stopped_at IS NOT NULL FROM workers").fetchall())
    assert stopped == {"gone": True, "alive": False}


def test_a_lost_attempts_files_are_deleted_after_the_rescue(db: psycopg.Connection, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    conv = make_conversion(db)
    [claim] = claim_jobs(db, "dead", 1)
    key = result_key(conv, claim.attempt, "image/jpeg")
    storage.put(key, b"half a result")
    lose_all(db)
    assert rescue_duty().run_once(db) == 1
    assert CleanDuty(storage, interval_s=1).run_once(db) == 1  # one marker: the lost attempt
    assert not (tmp_path / key).exists()
    assert db.execute("SELECT count(*) FROM storage_cleanup").fetchone() == (0,)


def test_cleanup_follows_durable_markers_so_late_commits_are_never_skipped(
        db: psycopg.Connection, tmp_path: Path) -> None:
    # Regression (issue 10, defect 10): cleanup read a time window, and a cancel that committed after
    # a round began (its completed_at inside the window already read) kept its files forever.
    storage = LocalStorage(tmp_path)
    clean = CleanDuty(storage, interval_s=1)
    failed, cancelled, running = make_conversion(db, max_retries=0), make_conversion(db), make_conversion(db)
    claims = {c.conversion_id: c for c in claim_jobs(db, "w", 3)}
    for conv in (failed, cancelled, running):
        storage.put(result_key(conv, 1, "image/jpeg"), b"a lost attempt's file")
    assert clean.run_once(db) == 0  # nothing ended yet
    fail_job(db, claims[failed], Failure("internal", "boom", False), backoff_base_s=1, backoff_max_s=1,
             processing_time_ms=1, ai_model_version="v")
    db.execute("SELECT operator_cancel_conversion(%s, 'test', 'test')", (cancelled,))
    # The late commit: its timestamp lies before the previous round.
    db.execute("UPDATE conversion_jobs SET completed_at = now() - interval '1 day' WHERE conversion_id = %s",
               (cancelled,))
    assert clean.run_once(db) == 2
    left = sorted(p.parent.name for p in (tmp_path / "results").rglob("*.jpg"))
    assert left == [str(running)]  # a running conversion's files are its worker's business
    assert clean.run_once(db) == 0


def test_cleanup_during_a_storage_outage_logs_one_line_and_waits_for_the_next_round(
        db: psycopg.Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Regression (issue 12): during a 10 s S3 outage the leader tried every marker every round and
    # logged a traceback for each, megabytes of log per host.
    class DownStorage(LocalStorage):
        deletes = 0

        def delete_prefix(self, prefix: str) -> int:
            DownStorage.deletes += 1
            raise StorageError(f"could not delete {prefix}: Could not connect to the endpoint URL")

    storage = DownStorage(tmp_path)
    convs = [make_conversion(db, max_retries=0) for _ in range(3)]
    for c in claim_jobs(db, "w", 3):
        fail_job(db, c, Failure("internal", "boom", False), backoff_base_s=1, backoff_max_s=1,
                 processing_time_ms=1, ai_model_version="v")
    caplog.set_level(logging.WARNING, logger="leader.duties.clean")
    assert CleanDuty(storage, interval_s=1).run_once(db) == 0
    assert DownStorage.deletes == 1
    assert [(r.levelno, r.exc_info) for r in caplog.records] == [(logging.WARNING, None)]
    assert db.execute("SELECT count(*) FROM storage_cleanup").fetchone() == (len(convs),)  # all kept
    assert CleanDuty(LocalStorage(tmp_path), interval_s=1).run_once(db) == 3  # the store is back


def test_the_leader_runs_every_duty_of_the_design(tmp_path: Path) -> None:
    from core.settings import Settings
    from leader.assembly import default_duties
    from leader.config import LeaderSettings

    broker = StaylerRedisBroker(client=fakeredis.FakeRedis(), namespace="t")
    names = [d.name for d in default_duties(LeaderSettings.from_settings(Settings()), broker, LocalStorage(tmp_path))]
    assert names == ["dispatch", "rescue", "clean", "retention", "orphans", "expiry", "fairness"]


def test_every_duty_of_the_registry_is_a_duty_with_a_name_and_an_interval(tmp_path: Path) -> None:
    from core.settings import Settings
    from leader.assembly import default_duties
    from leader.config import LeaderSettings
    from leader.duties import Duty
    from leader.queue_gauges import QueueGauges

    broker = StaylerRedisBroker(client=fakeredis.FakeRedis(), namespace="t")
    duties = default_duties(LeaderSettings.from_settings(Settings()), broker, LocalStorage(tmp_path),
                            gauges=QueueGauges())
    assert "gauges" in [d.name for d in duties]
    assert all(isinstance(d, Duty) for d in duties)
    names = [d.name for d in duties]
    assert len(set(names)) == len(names) and all(names)
    assert all(d.interval_s > 0 for d in duties)
    assert all(set(d.wakes) <= set(names) for d in duties)
