"""The product path with real worker processes: submit → dispatch → claim → model → result rows and files."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import psycopg
import pytest
import redis

from broker.messages import send_claim_messages
from broker.redis import NAMESPACE, make_broker
from models.contract import load_manifest
from models.registry import resolve_model
from tests.support.fleet import Env
from tests.support.wait import wait_for
from tests.support.workload import Workload, connect

pytestmark = pytest.mark.e2e


def test_conversions_complete_with_result_image_metrics_and_usage(env: Env) -> None:
    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        ids = work.submit(4, style="casual")
        env.start_fleet(processes=2, STAYLER_MODEL="tryon-geometric", STAYLER_CLAIM_BATCH_SIZE="2")
        wait_for(lambda: work.all_terminal(ids), 90, "conversions to finish", env)
        version = load_manifest(resolve_model("tryon-geometric")).version
        rows = conn.execute(
            """SELECT c.status, c.processing_time_ms, i.type, i.owner_id = c.user_id, i.file_path, i.thumbnail_url,
                      i.width, i.height, i.mime_type, m.success, m.ai_model_version, m.output_file_size_bytes,
                      i.file_size, m.input_file_size_bytes
                 FROM conversions c JOIN images i ON i.id = c.result_image_id
                 JOIN conversion_metrics m ON m.conversion_id = c.id
                WHERE c.id = ANY(%s)""", (ids,)).fetchall()
        assert len(rows) == 4, env.logs()
        for (status, ms, itype, owned, key, thumb, width, height, mime, success, model_version, out_size,
             file_size, in_size) in rows:
            assert (status, itype, owned, mime, success) == ("completed", "result", True, "image/jpeg", True)
            assert model_version == version
            assert ms is not None and ms > 0
            assert (width, height) == (192, 256)  # the person photo's own size
            assert out_size == file_size == (env.storage_dir / key).stat().st_size
            assert in_size > 0
            assert Path(thumb.removeprefix("file://")).is_file()
        usage = conn.execute("SELECT action, count(*) FROM image_usage_history WHERE conversion_id = ANY(%s) "
                             "GROUP BY action ORDER BY action", (ids,)).fetchall()
        assert usage == [("convert", 4), ("use_in_conversion", 8)]
        assert conn.execute("SELECT count(*) FROM conversion_jobs WHERE status <> 'completed'").fetchone() == (0,)


@pytest.mark.slow  # a fleet run; the default suite keeps the main pipeline and the lost-message tests
def test_a_plain_sql_producer_job_is_picked_up(env: Env) -> None:
    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        person = work.person()
        env.start_fleet()
        # A service in another language: plain SQL, the spec's own call form, in its own transaction.
        with psycopg.connect(env.db_url) as other:
            row = other.execute(
                "SELECT create_conversion(user_id := %s, vendor_id := NULL, user_image_id := %s, "
                "cloth_image_id := %s, conversion_type := 'free', style_name := 'casual')",
                (work.user, person, work.garment)).fetchone()
            other.commit()
        assert row is not None
        wait_for(lambda: work.statuses([row[0]]).get(row[0]) == "completed", 30, "the SQL-created job", env)


@pytest.mark.slow  # a fleet run; the default suite keeps the main pipeline test
def test_first_claim_follows_the_commit_quickly_on_an_idle_system(env: Env) -> None:
    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        env.start_fleet(threads=1)
        warm = work.submit(1)
        wait_for(lambda: work.all_terminal(warm), 30, "warm-up", env)
        delays = []
        for _ in range(5):
            time.sleep(0.3)  # idle again: the consumer has backed off to its longest poll
            [cid] = work.submit(1)
            wait_for(lambda: work.all_terminal([cid]), 10, "a conversion", env, interval=0.02)  # noqa: B023
            job = work.job(cid)
            delays.append((job["started_at"] - job["created_at"]).total_seconds())
        print(f"commit-to-claim delays (s): {[round(d, 4) for d in delays]}")
        # The target (100 ms) is measured by the benchmark; here only guard against a regression to
        # Dramatiq's 1 s idle poll on a loaded 2-core CI machine.
        assert statistics.median(delays) < 0.5


@pytest.mark.slow  # a fleet run; a fenced, once-only completion is covered in tests/queue/test_queue_operations.py
def test_duplicate_and_stray_messages_change_nothing(env: Env) -> None:
    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        ids = work.submit(5)
        broker = make_broker(env.redis_url)
        send_claim_messages(broker, env.queue_name, 25)  # 25 claim messages for 5 jobs
        env.start_fleet(processes=2, STAYLER_CLAIM_BATCH_SIZE="1")
        wait_for(lambda: work.all_terminal(ids), 30, "conversions", env)
        client = redis.Redis.from_url(env.redis_url)
        wait_for(lambda: client.llen(f"{NAMESPACE}:{env.queue_name}") == 0, 15, "the extra messages to drain", env)
        assert conn.execute("SELECT count(*) FROM images WHERE type = 'result'").fetchone() == (5,)
        metrics = conn.execute("SELECT count(*), count(DISTINCT conversion_id) FROM conversion_metrics").fetchone()
        assert metrics == (5, 5)
        files = sorted(p.name for p in (env.storage_dir / "results").rglob("*") if p.is_file())
        assert files == sorted(["a1.jpg", "a1.thumb.jpg"] * 5)
        assert all(work.job(c)["attempt"] == 1 for c in ids)


def test_jobs_whose_messages_redis_lost_are_dispatched_again(env: Env) -> None:
    from leader.duties.dispatch import DispatchDuty

    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        ids = work.submit(6)
        # A leader sends the messages, then Redis loses them all (restart without persistence).
        dispatch = DispatchDuty(make_broker(env.redis_url), env.queue_name, batch_size=8, max_waiting=8, interval_s=1)
        with psycopg.connect(env.db_url, autocommit=True) as dconn:
            assert dispatch.run_once(dconn) > 0
        client = redis.Redis.from_url(env.redis_url)
        assert client.llen(f"{NAMESPACE}:{env.queue_name}") > 0
        client.delete(f"{NAMESPACE}:{env.queue_name}", f"{NAMESPACE}:{env.queue_name}.msgs")
        env.start_fleet()
        wait_for(lambda: work.all_terminal(ids), 30, "re-dispatched conversions", env)
        assert set(work.statuses(ids).values()) == {"completed"}


@pytest.mark.slow  # a fleet run; the default suite keeps the lost-message re-dispatch test
def test_queued_jobs_with_no_wakeup_are_found_by_the_sweep(env: Env) -> None:
    with connect(env.db_url) as conn:
        work = Workload(conn, env.storage_dir)
        person = work.person()
        env.start_fleet(STAYLER_SWEEP_INTERVAL_S="1")
        wait_for(lambda: conn.execute("SELECT count(*) FROM workers").fetchone() == (1,), 30, "the worker", env)
        time.sleep(1.0)
        # Insert with triggers off: no NOTIFY reaches the dispatcher and no message exists, as after a
        # Redis flush. Only the periodic sweep can find these jobs.
        with psycopg.connect(env.db_url) as silent:
            silent.execute("SET session_replication_role = replica")
            ids = []
            for _ in range(3):
                row = silent.execute("SELECT create_conversion(user_id := %s, user_image_id := %s, "
                                     "cloth_image_id := %s)", (work.user, person, work.garment)).fetchone()
                assert row is not None
                ids.append(row[0])
            silent.commit()
        started = time.monotonic()
        # The event is the assertion: jobs no message announced end anyway (15 s is a hang ceiling).
        wait_for(lambda: work.all_terminal(ids), 15, "swept conversions", env)
        print(f"found by the sweep after {time.monotonic() - started:.2f} s (sweep interval 1 s)")
