"""Migrations through a real PgBouncer in transaction mode, and the choice of URL for commands.

A session advisory lock taken through a transaction pooler stays on whichever server connection ran
it: concurrent migrators were not kept apart (yoyo's lock then timed out) and the lock leaked onto a
pooled server connection, blocking the next migration. The lock is now a transaction lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from core.settings import Settings
from schema import migrate
from schema.migrate import ADVISORY_LOCK_KEY, apply_migrations, migrate_configured, migration_status
from tests.infra.pgbouncer import PgBouncer
from tests.infra.pgbouncer import pgbouncer_for as pgbouncer_for
from tests.infra.postgres import SmallPostgres
from tests.infra.postgres import small_postgres as small_postgres


def _advisory_locks(direct_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(direct_url, autocommit=True) as conn:
        return conn.execute("SELECT pid, granted FROM pg_locks WHERE locktype = 'advisory' AND objid = %s",
                            (ADVISORY_LOCK_KEY & 0xFFFFFFFF,)).fetchall()


def test_concurrent_migrations_through_pgbouncer_apply_once_and_leave_no_lock(
        small_postgres: SmallPostgres, pgbouncer_for: Callable[..., PgBouncer]) -> None:
    direct = small_postgres.create_database("migrate_pooled")
    bouncer = pgbouncer_for(small_postgres.url)
    errors: list[BaseException] = []
    applied: list[list[str]] = []

    def run() -> None:
        try:
            applied.append(apply_migrations(bouncer.url("migrate_pooled")))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sorted(len(a) for a in applied) == [0, 0, len(migrate.migration_ids())]
    assert _advisory_locks(direct) == []
    status = migration_status(bouncer.url("migrate_pooled"))  # many statements: no prepared ones
    assert status.pending == [] and "conversions" in status.table_counts
    # The next run is not blocked by anything left behind.
    assert apply_migrations(bouncer.url("migrate_pooled")) == []


def test_a_migrator_that_dies_mid_run_through_pgbouncer_leaves_no_lock(
        small_postgres: SmallPostgres, pgbouncer_for: Callable[..., PgBouncer]) -> None:
    direct = small_postgres.create_database("migrate_dies")
    bouncer = pgbouncer_for(small_postgres.url)
    conn = migrate._connect(bouncer.url("migrate_dies"))
    conn.execute("BEGIN")
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
    assert len(_advisory_locks(direct)) == 1
    conn.pgconn.finish()  # the client goes away mid-transaction, as a killed migrator would
    for _ in range(50):
        if not _advisory_locks(direct):
            break
        time.sleep(0.1)
    assert _advisory_locks(direct) == []


def test_commands_migrate_over_the_direct_url_when_one_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[str] = []

    def record(url: str) -> list[str]:
        used.append(url)
        return []

    monkeypatch.setattr(migrate, "apply_migrations", record)
    pooled = Settings().model_copy(update={"database_url": "postgresql://pgbouncer:6432/db", "database_pooled": True,
                                           "direct_database_url": "postgresql://postgres:5432/db"})
    migrate_configured(pooled, "postgresql://pgbouncer:6432/db")
    migrate_configured(pooled.model_copy(update={"direct_database_url": None}), "postgresql://pgbouncer:6432/db")
    embedded = pooled.model_copy(update={"database_url": None, "database_pooled": False})
    migrate_configured(embedded, "postgresql:///embedded")
    assert used == ["postgresql://postgres:5432/db", "postgresql://pgbouncer:6432/db", "postgresql:///embedded"]
