"""The dispatcher's rounds against a real PostgreSQL: dispatch, rescue with file cleanup, cleanup of
conversions that never complete. Redis is faked here (fakeredis with Lua); e2e tests use a real one."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import psycopg

from broker.messages import waiting_messages
from broker.redis import StaylerRedisBroker
from leader.service import Dispatcher, DispatcherConfig
from storage import LocalStorage, result_key
from tests.factories import make_conversion
from worker.claims import claim_jobs, fail_job
from worker.errors import Failure


def dispatcher(db_url: str, tmp_path: Path, rescue_after_s: float = 30.0) -> tuple[Dispatcher, LocalStorage]:
    storage = LocalStorage(tmp_path / "storage")
    broker = StaylerRedisBroker(client=fakeredis.FakeRedis(), namespace="t")
    config = DispatcherConfig(queue_name="q", batch_size=4, rescue_after_s=rescue_after_s)
    return Dispatcher(db_url, broker, config, storage), storage


def test_dispatch_sends_one_message_per_batch_of_available_jobs(db: psycopg.Connection, db_url: str,
                                                                tmp_path: Path) -> None:
    d, _ = dispatcher(db_url, tmp_path)
    for _ in range(9):
        make_conversion(db)
    assert d.dispatch_once(db) == 3
    assert d.dispatch_once(db) == 0  # the queue already holds enough messages
    assert waiting_messages(d.broker, "q") == 3


def test_rescue_deletes_the_files_a_lost_attempt_wrote(db: psycopg.Connection, db_url: str, tmp_path: Path) -> None:
    d, storage = dispatcher(db_url, tmp_path, rescue_after_s=1)
    conv = make_conversion(db)
    [claim] = claim_jobs(db, "dead", 1)
    key = result_key(conv, claim.attempt, "image/jpeg")
    storage.put(key, b"half a result")
    db.execute("UPDATE conversion_jobs SET heartbeat_at = now() - interval '1 minute'")
    assert d.rescue_once(db) == 1
    assert not (storage.root / key).exists()


def test_cleanup_removes_result_files_of_conversions_that_ended_without_a_result(
        db: psycopg.Connection, db_url: str, tmp_path: Path) -> None:
    d, storage = dispatcher(db_url, tmp_path)
    failed, cancelled, running = make_conversion(db, max_retries=0), make_conversion(db), make_conversion(db)
    claims = {c.conversion_id: c for c in claim_jobs(db, "w", 3)}
    for conv in (failed, cancelled, running):
        storage.put(result_key(conv, 1, "image/jpeg"), b"a lost attempt's file")
    fail_job(db, claims[failed], Failure("internal", "boom", False), backoff_base_s=1, backoff_max_s=1,
             processing_time_ms=1, ai_model_version="v")
    db.execute("SELECT cancel_conversion(%s)", (cancelled,))
    assert d.clean_once(db) == 2
    left = sorted(p.parent.name for p in (storage.root / "results").rglob("*.jpg"))
    assert left == [str(running)]  # a running conversion's files are its worker's business
    assert d.clean_once(db) == 0  # the watermark moved on
