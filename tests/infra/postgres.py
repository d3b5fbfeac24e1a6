"""A private PostgreSQL with a small ``max_connections``, for connection-budget tests.

It is ``tests.reliability.servers.ThrowawayPostgres`` started with its own connection limit, so a
fleet that opens too many connections fails here the way it would on a production server.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.reliability.servers import ThrowawayPostgres


class SmallPostgres(ThrowawayPostgres):
    """A throwaway PostgreSQL whose ``max_connections`` is ``max_connections``."""

    def __init__(self, max_connections: int = 30) -> None:
        """Create the cluster (initdb); :meth:`start` runs it."""
        super().__init__()
        self.max_connections = max_connections

    def start(self) -> None:
        """Start with the small connection limit (3 of them reserved for superusers, as by default)."""
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{self.root}' "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                f"-c max_connections={self.max_connections}")
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w",
                   "-t", "60", "start"])

    def connection_count(self) -> int:
        """Client backends connected right now (the server-side count operators watch)."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                               ).fetchone()
        return int(row[0]) - 1 if row else 0  # not this query's own connection


@pytest.fixture(scope="module")
def small_postgres() -> Iterator[SmallPostgres]:
    """A private PostgreSQL with ``max_connections = 30`` for the module."""
    server = SmallPostgres(30)
    server.start()
    try:
        yield server
    finally:
        server.destroy()
