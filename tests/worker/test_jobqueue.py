"""The queue door against real PostgreSQL and the faults of real networks.

A TCP proxy cuts the connection right after a statement was forwarded (the server runs and
commits it, the client never hears back), a throwaway server is restarted under a pool, and two
connections race heartbeats against completions.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from core.settings import Settings
from schema.migrate import apply_migrations
from storage import LocalStorage
from tests.infra.fault_proxy import fault_proxy
from tests.reliability.servers import throwaway_postgres
from tests.support.factories import conversion, job_of, make_conversion
from tests.worker.fakes import EchoRunner
from worker.batch import BatchPipeline
from worker.inflight import HeldClaim, InFlight
from worker.jobqueue import JobQueue, PoolSource, QueueUnavailable
from worker.jobs import Claim, Completion

SETTINGS = Settings(db_timeout_s=3, db_statement_timeout_s=10)


def port_of(url: str) -> int:
    port = conninfo_to_dict(url).get("port")
    if not port:
        pytest.skip("the test database is not reached over TCP")
    return int(port)


@contextlib.contextmanager
def door(url: str, worker_id: str = "w-test") -> Iterator[JobQueue]:
    queue = JobQueue(PoolSource(url, SETTINGS), worker_id, retry_for_s=3)
    try:
        yield queue
    finally:
        queue.close()


def completion(claim: Claim, key: str) -> Completion:
    return Completion(claim=claim, file_path=key, file_name=key.rsplit("/", 1)[-1], original_url=f"file:///{key}",
                      thumbnail_url="file:///t.jpg", file_size=10, mime_type="image/jpeg", width=4, height=4,
                      processing_time_ms=5, ai_model_version="echo-1")


def test_a_completion_whose_reply_is_lost_keeps_its_committed_result_and_files(
        db: psycopg.Connection, db_url: str, tmp_path: Path) -> None:
    # Regression (issue 10, defect 1): the connection dropped after the server committed, and the
    # worker deleted the files the completed conversion's result row points at.
    conv = make_conversion(db)
    storage = LocalStorage(tmp_path)
    for (key,) in db.execute("SELECT i.file_path FROM images i JOIN conversions c "
                             "ON i.id IN (c.user_image_id, c.cloth_image_id) WHERE c.id = %s", (conv,)).fetchall():
        storage.put(key, b"input")
    with fault_proxy(port_of(db_url)) as proxy, door(proxy.url(db_url)) as queue:
        [claim] = queue.claim(1)
        inflight = InFlight()
        inflight.add(HeldClaim(claim.job_id, claim.attempt, 0.0))
        proxy.cut_after(b"jobs_complete")
        report = BatchPipeline(queue, storage, EchoRunner(), inflight).process([claim], 0.0)
        assert proxy.cuts == 1
    assert report.completed == [claim.job_id]
    row = conversion(db, conv)
    assert row["status"] == "completed"
    key = db.execute("SELECT file_path FROM images WHERE id = %s", (row["result_image_id"],)).fetchone()
    assert key is not None and (tmp_path / key[0]).is_file()


def test_a_completion_cut_before_the_server_ran_it_is_completed_on_a_fresh_connection(
        db: psycopg.Connection, db_url: str) -> None:
    make_conversion(db)
    with fault_proxy(port_of(db_url)) as proxy, door(proxy.url(db_url)) as queue:
        [claim] = queue.claim(1)
        # Cut on the read-back's first statement too: the door must keep going until it knows.
        proxy.cut_after(b"jobs_complete")
        outcome = queue.complete([completion(claim, f"results/{claim.conversion_id}/a1.jpg")])
    assert outcome == {claim.job_id: "completed"}
    assert job_of(db, claim.conversion_id)["status"] == "completed"


def test_a_claim_whose_reply_is_lost_hands_its_jobs_back(db: psycopg.Connection, db_url: str) -> None:
    # Regression (issue 10, defect 7): the job stayed 'processing' with nobody working on it.
    conv = make_conversion(db)
    with fault_proxy(port_of(db_url)) as proxy, door(proxy.url(db_url)) as queue:
        proxy.cut_after(b"claim_token")
        with pytest.raises(QueueUnavailable):
            queue.claim(4)
        assert proxy.cuts == 1
    job = job_of(db, conv)
    assert (job["status"], job["attempt"], job["retry_count"], job["worker_id"]) == ("queued", 1, 0, None)


def test_two_threads_flushing_the_same_lost_claim_do_not_raise(db: psycopg.Connection) -> None:
    # Regression (issue 12): a worker thread's claim and the heartbeat flushed the same token at once;
    # the second removal raised ValueError out of the actor (seen behind PgBouncer during a restart).
    queue = JobQueue.on_connection(db, "w")
    token = uuid.uuid4()
    queue._unreleased_claims.append(token)
    real = queue._retrying
    inner: list[int] = []
    raced = threading.Event()

    def racing(what: str, work: Any) -> Any:
        rows = real(what, work)
        if not raced.is_set():  # the other thread's flush runs between this release and its bookkeeping
            raced.set()
            inner.append(queue.flush())
        return rows

    queue._retrying = racing  # type: ignore[method-assign]
    assert queue.flush() == 0
    assert inner == [0] and queue._unreleased_claims == []


@pytest.mark.services  # starts a server of its own
def test_pooled_connections_killed_by_a_restart_do_not_cost_finished_work(tmp_path: Path) -> None:
    # Regression (issue 10, defect 5): after a restart the pool's dead connections failed the
    # completion, and the finished batch was charged as failed.
    with throwaway_postgres() as server:
        url = server.create_database("door")
        apply_migrations(url)
        with psycopg.connect(url, autocommit=True) as setup:
            convs = [make_conversion(setup, max_retries=0) for _ in range(2)]
        with door(url) as queue:
            claims = queue.claim(2)
            server.restart()
            outcome = queue.complete([completion(c, f"results/{c.conversion_id}/a1.jpg") for c in claims])
        assert sorted(outcome.values()) == ["completed", "completed"]
        with psycopg.connect(url, autocommit=True) as check:
            assert {conversion(check, c)["status"] for c in convs} == {"completed"}


def test_heartbeats_racing_completions_and_releases_never_deadlock(db: psycopg.Connection, db_url: str) -> None:
    # Regression (issue 10, defect 4): heartbeats locked rows in plan order, completions and
    # releases in id order; a tight loop of both deadlocked 20 times in 20 s.
    for _ in range(24):
        make_conversion(db)
    claims = JobQueue.on_connection(db, "w").claim(24)
    held = [(c.job_id, c.attempt) for c in claims]
    errors: list[BaseException] = []
    stop = threading.Event()

    def beat() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            queue = JobQueue.on_connection(conn, "w")
            while not stop.is_set():
                try:
                    queue.renew(list(reversed(held)))
                except BaseException as exc:
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=beat) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            finisher = JobQueue.on_connection(conn, "w")
            for i in range(0, 24, 2):
                pair = claims[i:i + 2]
                if i % 4:
                    finisher.release([(c.job_id, c.attempt) for c in pair])
                else:
                    finisher.complete([completion(c, f"results/{c.conversion_id}/a1.jpg") for c in pair])
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    statuses = {r[0] for r in db.execute("SELECT DISTINCT status FROM conversion_jobs").fetchall()}
    assert statuses == {"completed", "queued"}


def test_lock_conflicts_are_run_again_without_charging_an_attempt() -> None:
    calls: list[int] = []

    class Source:
        @contextlib.contextmanager
        def borrow(self) -> Iterator[object]:
            calls.append(1)
            if len(calls) < 3:
                raise psycopg.errors.DeadlockDetected("deadlock detected")
            yield object()

        def discard_broken(self) -> None:
            pass

        def close(self) -> None:
            pass

    queue = JobQueue(Source(), "w", sleep=lambda _: None)  # type: ignore[arg-type]
    assert queue._once(lambda conn: "ran") == "ran"
    assert len(calls) == 3


def test_every_connection_names_itself(db: psycopg.Connection, db_url: str) -> None:
    with door(db_url, worker_id=f"w-{uuid.uuid4().hex[:6]}") as queue:
        queue.renew_worker()
        names = {r[0] for r in db.execute(
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()").fetchall()}
    assert any(name.startswith("stayler-worker ") for name in names), names
