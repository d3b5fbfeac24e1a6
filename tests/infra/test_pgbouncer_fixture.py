"""The PgBouncer fixture pools a private, small PostgreSQL in transaction mode."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg

from tests.infra.pgbouncer import PgBouncer
from tests.infra.pgbouncer import pgbouncer_for as pgbouncer_for
from tests.infra.postgres import SmallPostgres
from tests.infra.postgres import small_postgres as small_postgres


def test_many_clients_share_few_server_connections_in_transaction_mode(
        small_postgres: SmallPostgres, pgbouncer_for: Callable[..., PgBouncer]) -> None:
    bouncer = pgbouncer_for(small_postgres.url, default_pool_size=5)
    clients = [psycopg.connect(bouncer.url(), prepare_threshold=None, autocommit=True) for _ in range(40)]
    try:
        def work(conn: psycopg.Connection) -> int:
            total = 0
            for i in range(20):
                with conn.transaction():
                    row = conn.execute("SELECT %s::int + 1", (i,)).fetchone()
                    assert row is not None
                    total += row[0]
            return total

        with ThreadPoolExecutor(40) as pool:
            assert list(pool.map(work, clients)) == [210] * 40
        # 40 clients (more than the server's max_connections - superuser slots) over ≤ 5 server connections.
        assert bouncer.server_connections() <= 5
        assert small_postgres.connection_count() <= 5
        pools = [row for row in bouncer.show("POOLS") if row["database"] == "postgres"]
        assert pools and pools[0]["pool_mode"] == "transaction" and int(pools[0]["cl_active"]) == 40
    finally:
        for conn in clients:
            conn.close()


def test_small_postgres_enforces_its_connection_limit(small_postgres: SmallPostgres) -> None:
    with psycopg.connect(small_postgres.url, autocommit=True) as conn:
        row = conn.execute("SHOW max_connections").fetchone()
    assert row == ("30",)
