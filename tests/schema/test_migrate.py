"""`apply_migrations`: bookkeeping, repeat and concurrent runs, socket URLs, and equality with plain psql."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from core.services import with_database
from schema.migrate import (
    BOOKKEEPING_TABLES,
    MIGRATIONS_DIR,
    PRODUCT_TABLES,
    apply_migrations,
    libpq_url,
    migration_ids,
    migration_status,
)

ROOT = Path(__file__).resolve().parents[2]
_n = iter(range(1_000_000))


@pytest.fixture
def empty_db(pg_admin_url: str) -> Iterator[str]:
    """URL of a new, empty database (no migrations)."""
    urls = []

    def make() -> str:
        name = f"stayler_m{os.getpid()}_{next(_n)}"
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        urls.append(name)
        return with_database(pg_admin_url, name)

    yield make  # type: ignore[misc]
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        for name in urls:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migrations_dir_holds_the_spec_file() -> None:
    ids = migration_ids()
    assert "0010_conversions_images_schema" in ids
    assert ids == sorted(ids) and ids[0] == "0001_users_vendors"
    assert all((MIGRATIONS_DIR / f"{i}.sql").is_file() for i in ids)


def test_apply_records_and_is_idempotent(empty_db: Any) -> None:
    url = empty_db()
    before = migration_status(url)
    assert before.applied == [] and before.pending == migration_ids() and before.table_counts == {}
    assert apply_migrations(url) == migration_ids()
    assert apply_migrations(url) == []
    status = migration_status(url)
    assert [m for m, _at in status.applied] == migration_ids()
    assert status.pending == []
    assert status.table_counts == dict.fromkeys(PRODUCT_TABLES, 0)


def test_sqlalchemy_style_url_is_accepted(empty_db: Any) -> None:
    url = empty_db()
    assert libpq_url("postgresql+psycopg://u:p@h/db") == "postgresql://u:p@h/db"
    assert apply_migrations(url.replace("postgresql://", "postgresql+psycopg://", 1)) == migration_ids()


def test_unix_socket_url(empty_db: Any, pg_admin_url: str) -> None:
    """The embedded server's URL form: postgresql://postgres:@/db?host=/socket/dir."""
    url = empty_db()
    with psycopg.connect(url) as conn:
        dirs = str(conn.execute("SHOW unix_socket_directories").fetchone()[0])  # type: ignore[index]
        port = conn.info.port
        dbname = conn.info.dbname
        user = conn.info.user
    sockets = [d.strip() for d in dirs.split(",") if d.strip() and Path(d.strip(), f".s.PGSQL.{port}").exists()]
    if not sockets:
        pytest.skip("the server's unix socket is not reachable from here")
    socket_url = f"postgresql://{user}:@/{dbname}?host={quote(sockets[0], safe='/')}&port={port}"
    assert apply_migrations(socket_url) == migration_ids()
    assert migration_status(socket_url).pending == []


def test_concurrent_runs_apply_each_migration_once(empty_db: Any) -> None:
    url = empty_db()
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(apply_migrations(url))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "schema.migrate", url], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        for _ in range(3)
    ]
    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    outputs = [p.communicate(timeout=60) for p in procs]
    assert not errors
    assert all(p.returncode == 0 for p in procs), outputs
    applied_by_processes = [
        out.strip().split(": ", 1)[1].split(", ") for out, _err in outputs if not out.startswith("applied 0")
    ]
    everything = [m for r in results for m in r] + [m for r in applied_by_processes for m in r]
    assert sorted(everything) == migration_ids()  # each exactly once, by exactly one runner
    assert [m for m, _ in migration_status(url).applied] == migration_ids()


def test_failing_migration_is_rolled_back_and_not_recorded(empty_db: Any, monkeypatch: Any, tmp_path: Path) -> None:
    url = empty_db()
    for f in MIGRATIONS_DIR.glob("*.sql"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "9999_broken.sql").write_text("CREATE TABLE half_done (id int);\nSELECT 1/0;\n")
    monkeypatch.setattr("schema.migrate.MIGRATIONS_DIR", tmp_path)
    with pytest.raises(psycopg.errors.DivisionByZero):
        apply_migrations(url)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
    assert migration_status(url).pending == ["9999_broken"]


# Plain psql gives the same database as `stayler migrate`

CATALOG_QUERIES = {
    "columns": """
        SELECT table_name, column_name, ordinal_position, data_type, udt_name, is_nullable,
               column_default, character_maximum_length, numeric_precision
          FROM information_schema.columns
         WHERE table_schema = 'public' AND NOT (table_name = ANY(%(skip)s))
         ORDER BY 1, 2""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
          FROM pg_constraint
         WHERE connamespace = 'public'::regnamespace AND NOT (conrelid::regclass::text = ANY(%(skip)s))
         ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
         WHERE schemaname = 'public' AND NOT (tablename = ANY(%(skip)s))
         ORDER BY 1, 2""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
          FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid),
               obj_description(p.oid, 'pg_proc')
          FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1, 2""",
    "comments": """
        SELECT c.relname, d.objsubid, d.description
          FROM pg_description d JOIN pg_class c ON c.oid = d.objoid AND d.classoid = 'pg_class'::regclass
         WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1, 2""",
    "relations": """
        SELECT relname, relkind FROM pg_class
         WHERE relnamespace = 'public'::regnamespace AND NOT (relname = ANY(%(skip)s))
           AND relname NOT LIKE '%%yoyo%%' ORDER BY 1""",
    "extensions": "SELECT extname FROM pg_extension ORDER BY 1",
}


def catalog_snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the migrations define, minus yoyo's bookkeeping tables."""
    skip = list(BOOKKEEPING_TABLES)
    with psycopg.connect(url) as conn:
        return {k: [tuple(r) for r in conn.execute(q, {"skip": skip})] for k, q in CATALOG_QUERIES.items()}


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_psql_and_migrate_give_the_same_database(empty_db: Any) -> None:
    by_psql, by_migrate = empty_db(), empty_db()
    for f in sorted(MIGRATIONS_DIR.glob("*.sql")):
        subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", libpq_url(by_psql), "-f", str(f)],
            check=True, capture_output=True, text=True,
        )
    apply_migrations(by_migrate)
    a, b = catalog_snapshot(by_psql), catalog_snapshot(by_migrate)
    assert a["functions"] and a["triggers"] and a["indexes"]
    for key in CATALOG_QUERIES:
        assert a[key] == b[key], key
