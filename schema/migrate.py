"""Apply the SQL migrations in ``schema/migrations`` (``stayler migrate``).

The migrations are plain SQL files applied in file-name order; DBAs and services in other
languages apply the same files with ``psql -v ON_ERROR_STOP=1 -1 -f``.  This module adds the
bookkeeping: yoyo-migrations records each applied file (table ``_yoyo_migration``, keyed by the
file name without ``.sql``) and runs each file in one transaction.

Concurrency: the whole run holds a transaction-level PostgreSQL advisory lock
(:data:`ADVISORY_LOCK_KEY`) inside a transaction kept open on a connection of its own, so several
processes or threads may call :func:`apply_migrations` at once: one applies, the others wait and
then find nothing pending.  The lock ends with that transaction: on success, on error, or when the
migrator dies (the server rolls back a dropped connection, and PgBouncer closes a server connection
whose client left mid-transaction), so a crashed migrator never leaves a stale lock behind (yoyo's
own lock-table row is not used for that reason).  A transaction lock, unlike a session lock, also
works through a transaction-mode pooler, which pins one server connection to an open transaction;
a session lock taken through one would stay on whatever server connection ran it and could be
"released" on another, leaking it.  :func:`migrate_configured` prefers
``STAYLER_DIRECT_DATABASE_URL`` anyway; through a pooler a run holds two pooled server connections.

URLs: anything libpq accepts as a URI, including unix-socket URLs such as
``postgresql://postgres:@/postgres?host=/some/dir``; a SQLAlchemy driver suffix
(``postgresql+psycopg://``) is stripped.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from yoyo import read_migrations
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend

from core.settings import Settings
from schema.connections import application_name

log = logging.getLogger(__name__)

#: Folder of the SQL migration files, applied in name order.
MIGRATIONS_DIR: Path = Path(__file__).resolve().parent / "migrations"

#: yoyo's table of applied migrations (its default name).
MIGRATION_TABLE = "_yoyo_migration"

#: Tables yoyo-migrations keeps for its bookkeeping (not part of the product schema).
BOOKKEEPING_TABLES: tuple[str, ...] = ("_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock")

#: Key of the session advisory lock held while migrating (the ASCII bytes of "staymigr").
ADVISORY_LOCK_KEY = 0x7374_6179_6D69_6772

#: Every product table, in dependency order.
PRODUCT_TABLES: tuple[str, ...] = (
    "users",
    "vendors",
    "albums",
    "images",
    "conversions",
    "image_usage_history",
    "conversion_jobs",
    "conversion_metrics",
    "workers",
    "operator_actions",
)


@dataclass(frozen=True)
class MigrationStatus:
    """What :func:`migration_status` reports about one database."""

    #: (migration id, applied at in UTC), in the order applied.
    applied: list[tuple[str, datetime]] = field(default_factory=list)
    #: Migration ids in :data:`MIGRATIONS_DIR` not applied yet, in the order they would apply.
    pending: list[str] = field(default_factory=list)
    #: Row count of every product table that exists.
    table_counts: dict[str, int] = field(default_factory=dict)


def libpq_url(database_url: str) -> str:
    """Return ``database_url`` as a libpq URI: a SQLAlchemy ``+driver`` suffix is removed."""
    return re.sub(r"^(postgres(?:ql)?)\+[A-Za-z0-9_]+://", r"\1://", database_url)


#: The committed order of the migrations (``schema/migrations/ORDER``): append only.
MIGRATION_ORDER_FILE: Path = MIGRATIONS_DIR / "ORDER"


def migration_order(path: Path = MIGRATION_ORDER_FILE) -> list[str]:
    """The ids listed in ``ORDER``, in its order (``#`` lines and blank lines skipped)."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def migration_ids() -> list[str]:
    """Ids (file names without ``.sql``) of every migration in :data:`MIGRATIONS_DIR`, in order."""
    return sorted(
        p.stem for p in MIGRATIONS_DIR.glob("*.sql") if not p.name.endswith(".rollback.sql")
    )


@dataclass(frozen=True)
class _Target:
    """The connection target handed to the yoyo backend (picklable, as yoyo requires)."""

    conninfo: str
    #: Database name (yoyo reads ``uri.database`` when listing tables).
    database: str | None = None

    @classmethod
    def from_url(cls, conninfo: str) -> _Target:
        """Build the target of a libpq URI."""
        dbname = conninfo_to_dict(conninfo).get("dbname")
        return cls(conninfo, None if dbname is None else str(dbname))


class _Backend(PostgresqlPsycopgBackend):
    """yoyo's psycopg 3 backend, connecting with the libpq URI as given.

    yoyo's own URI parsing lowercases host names and cannot express every libpq form; handing
    the URI to libpq keeps socket directories, service files and options intact.
    """

    def connect(self, dburi: _Target) -> psycopg.Connection[Any]:
        """Open an autocommit connection (yoyo issues BEGIN/COMMIT itself)."""
        return _connect(dburi.conninfo)


def _connect(conninfo: str) -> psycopg.Connection[Any]:
    """An autocommit ``stayler-migrate`` connection: no prepared statements (a pooler may be in
    between), no statement timeout (a migration may take long)."""
    return psycopg.connect(conninfo, autocommit=True, prepare_threshold=None, connect_timeout=10,
                           application_name=application_name("migrate"))


def apply_migrations(database_url: str) -> list[str]:
    """Apply every pending migration, each in its own transaction; return the ids applied.

    Holds a transaction advisory lock for the whole run (see the module's docstring), so it is safe
    to call twice or from several processes at once, directly or through a transaction pooler.
    Raises the database error of a failing migration (that migration is rolled back and not
    recorded; the ones before it stay applied).
    """
    conninfo = libpq_url(database_url)
    with _connect(conninfo) as lock_conn, lock_conn.transaction():
        # The lock's transaction sits idle while the migrations run on another connection.
        lock_conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        lock_conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
        backend = _Backend(_Target.from_url(conninfo), MIGRATION_TABLE)
        try:
            backend.init_database()
            migrations = read_migrations(str(MIGRATIONS_DIR))
            pending = backend.to_apply(migrations)
            applied: list[str] = []
            for migration in pending:
                log.info("applying migration %s", migration.id)
                backend.apply_one(migration)
                applied.append(migration.id)
        finally:
            backend.connection.close()
    return applied


def migrate_configured(settings: Settings, database_url: str) -> list[str]:
    """Apply migrations for a command: over ``STAYLER_DIRECT_DATABASE_URL`` when it is set (with
    ``DATABASE_URL``), else over ``database_url``.

    Pooled without a direct URL, the run goes through the pooler: it works (the lock is a
    transaction lock on one pinned server connection) but holds two of the pool's server
    connections for its duration, and the pooler's ``query_timeout`` applies to each migration.
    """
    if settings.database_url and settings.direct_database_url:
        return apply_migrations(settings.direct_database_url)
    if settings.database_pooled:
        log.info("migrating through the transaction pooler (no STAYLER_DIRECT_DATABASE_URL): the migration "
                 "lock is held by an open transaction on one pooled server connection")
    return apply_migrations(database_url)


def migration_status(database_url: str) -> MigrationStatus:
    """Report applied and pending migrations and the row count of every product table."""
    with _connect(libpq_url(database_url)) as conn:
        applied: list[tuple[str, datetime]] = []
        if _table_exists(conn, MIGRATION_TABLE):
            rows = conn.execute(
                sql.SQL("SELECT migration_id, applied_at_utc FROM {} ORDER BY applied_at_utc, migration_id")
                .format(sql.Identifier(MIGRATION_TABLE))
            ).fetchall()
            applied = [(str(r[0]), r[1]) for r in rows]
        done = {mig_id for mig_id, _ in applied}
        pending = [mig_id for mig_id in migration_ids() if mig_id not in done]
        counts: dict[str, int] = {}
        for table in PRODUCT_TABLES:
            if _table_exists(conn, table):
                row = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                ).fetchone()
                counts[table] = int(row[0]) if row else 0
    return MigrationStatus(applied=applied, pending=pending, table_counts=counts)


def _table_exists(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m schema.migrate URL [--status]``: apply migrations or print their status."""
    parser = argparse.ArgumentParser(prog="python -m schema.migrate", description=__doc__.splitlines()[0])
    parser.add_argument("database_url", help="libpq URI of the target database")
    parser.add_argument("--status", action="store_true", help="print status instead of migrating")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("yoyo").setLevel(logging.WARNING)
    if args.status:
        status = migration_status(args.database_url)
        for mig_id, applied_at in status.applied:
            print(f"applied  {mig_id}  {applied_at:%Y-%m-%d %H:%M:%S}")
        for mig_id in status.pending:
            print(f"pending  {mig_id}")
        for table, count in status.table_counts.items():
            print(f"{table:<22}{count:>12,}")
        return 0
    applied = apply_migrations(args.database_url)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
