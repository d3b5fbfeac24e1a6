"""Infrastructure faults: PostgreSQL or Redis down when workers start or going away mid-run, a
producer facing a dead database, and a full disk. Uses servers of its own (never the shared ones)."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.settings import get_settings
from producer import ProducerError, submit
from schema.migrate import apply_migrations
from stayler.cli import main
from tests.reliability.servers import ThrowawayPostgres, ThrowawayRedis, free_port, throwaway_postgres, throwaway_redis
from tests.support.fleet import Env
from tests.support.wait import wait_for
from tests.support.workload import Workload

pytestmark = pytest.mark.e2e


@pytest.fixture
def own(tmp_path: Path) -> Iterator[tuple[ThrowawayPostgres, ThrowawayRedis, Env]]:
    """A migrated PostgreSQL and a Redis of this test's own, and an Env on them."""
    with throwaway_postgres() as pg, throwaway_redis() as redis:
        url = pg.create_database("faults")
        apply_migrations(url)
        storage, logs = tmp_path / "storage", tmp_path / "logs"
        storage.mkdir()
        logs.mkdir()
        env = Env(url, redis.url, "faults", storage, logs)
        try:
            yield pg, redis, env
        finally:
            from tests.support.fleet import kill_tree, stop

            for proc in env.fleets:
                stop(proc, timeout=20)
                kill_tree(proc.pid)


def _quiet(**extra: str) -> dict[str, Any]:
    return {"STAYLER_METRICS_PORT": "0", **extra}


def test_the_cli_with_the_database_down_prints_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    monkeypatch.setenv("STAYLER_STATE_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        for argv in (["users", "add"], ["submit", "--user-id", str(uuid.uuid4()), "--person", str(uuid.uuid4()),
                                        "--garment", str(uuid.uuid4())], ["status", str(uuid.uuid4())]):
            capsys.readouterr()
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.startswith("stayler: error: cannot connect to the database"), err
            assert "Traceback" not in err
    finally:
        get_settings.cache_clear()


def test_the_python_producer_gets_a_producer_error_when_the_database_goes_away(
        own: tuple[ThrowawayPostgres, ThrowawayRedis, Env]) -> None:
    pg, _, env = own
    with psycopg.connect(env.db_url, autocommit=True) as conn:
        work = Workload(conn, env.storage_dir)
        work.person()
        pg.stop()
        with pytest.raises(ProducerError) as info:
            submit(conn, user_id=work.user, user_image_id=work.person(), cloth_image_id=work.garment)
        assert info.value.code == "database_unavailable" and "unavailable" in str(info.value)
    pg.start()


def _done(env: Env, ids: list[uuid.UUID]) -> bool:
    with contextlib.suppress(psycopg.OperationalError), psycopg.connect(env.db_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM conversions WHERE id = ANY(%s) AND status = 'completed'",
                           (ids,)).fetchone()
        return row is not None and row[0] == len(ids)
    return False


@pytest.mark.slow
def test_workers_started_while_postgres_is_down_wait_and_then_work(
        own: tuple[ThrowawayPostgres, ThrowawayRedis, Env]) -> None:
    pg, _, env = own
    with psycopg.connect(env.db_url, autocommit=True) as conn:
        ids = Workload(conn, env.storage_dir).submit(6)
    pg.stop()
    fleet = env.start_fleet(processes=2, **_quiet())
    wait_for(lambda: "could not register the worker yet" in env.logs() or "lost its database connection"
             in env.logs(), 30, "the workers to notice the database is down", env)
    assert fleet.poll() is None, env.logs()
    pg.start()
    wait_for(lambda: _done(env, ids), 60, "the jobs after PostgreSQL came back", env)
    # ... and going away mid-run: jobs in flight come back, none lost, none doubled.
    with psycopg.connect(env.db_url, autocommit=True) as conn:
        more = Workload(conn, env.storage_dir).submit(20, style="slow")
    pg.restart(down_s=2.0)
    wait_for(lambda: _done(env, more), 90, "the jobs after a PostgreSQL restart", env)
    assert fleet.poll() is None, env.logs()
    with psycopg.connect(env.db_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM images WHERE type = 'result'").fetchone() == (26,)
        assert conn.execute("SELECT count(*) FROM conversion_metrics").fetchone() == (26,)


@pytest.mark.slow
def test_workers_started_while_redis_is_down_recover_and_survive_a_redis_restart(
        own: tuple[ThrowawayPostgres, ThrowawayRedis, Env]) -> None:
    _, redis, env = own
    with psycopg.connect(env.db_url, autocommit=True) as conn:
        ids = Workload(conn, env.storage_dir).submit(6)
    redis.stop()
    supervisor = env.start_supervised(processes=1, **_quiet(STAYLER_FAILPOINTS="sleep=slow:1"))
    wait_for(lambda: "restarting in" in env.logs() or "onnection" in env.logs(), 40,
             "the fleet to notice Redis is down", env)
    assert supervisor.poll() is None, env.logs()
    redis.start()  # same port: the supervisor's next fleet connects
    wait_for(lambda: _done(env, ids), 90, "the jobs after Redis came up", env)
    with psycopg.connect(env.db_url, autocommit=True) as conn:
        more = Workload(conn, env.storage_dir).submit(10, style="slow")
    redis.stop()  # every message gone
    redis.start()
    wait_for(lambda: _done(env, more), 90, "the jobs after Redis lost every message", env)
    assert supervisor.poll() is None, env.logs()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.slow  # a fleet run; storage errors are covered on fakes in tests/worker/test_health.py
def test_a_full_disk_retries_then_fails_with_storage_and_leaves_no_partial_files(env: Env) -> None:
    results = env.storage_dir / "results"
    if not _mount_tmpfs(results, "256k"):
        pytest.skip("cannot mount a tmpfs here (needs root); tests/e2e covers an unwritable results folder")
    try:
        filler = results / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
        with psycopg.connect(env.db_url, autocommit=True) as conn:
            work = Workload(conn, env.storage_dir)
            ids = work.submit(2, max_retries=2)
            env.start_fleet(**_quiet())
            wait_for(lambda: work.all_terminal(ids), 60, "the jobs to give up", env)
            for cid in ids:
                job = work.job(cid)
                assert (job["status"], job["error_type"], job["retry_count"], job["attempt"]) == (
                    "failed", "storage", 2, 3), env.logs()
                assert "No space left" in (job["error_message"] or ""), job["error_message"]
            assert conn.execute("SELECT count(*) FROM images WHERE type = 'result'").fetchone() == (0,)
        left = [p for p in results.rglob("*") if p.is_file() and p != filler]
        assert left == [], left
    finally:
        subprocess.run(["umount", "-l", str(results)], check=False)
