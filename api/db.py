"""The API's database access: a connection pool, used from worker threads so the event loop never blocks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

import anyio.to_thread
import psycopg
import psycopg_pool

from api.problems import Problem, from_database, from_producer
from core.settings import Settings
from producer.errors import ProducerError
from schema.connections import connection_kwargs
from schema.queries import Q

P = ParamSpec("P")
T = TypeVar("T")


class Database:
    """A pool of autocommit connections; :meth:`run` calls a function with one of them, in a thread."""

    def __init__(self, url: str, size: int, settings: Settings | None = None) -> None:
        """Prepare a pool of at most ``size`` connections to ``url`` (opened by :meth:`open`).

        Connections are named ``stayler-api``, kept alive, time-bounded and, behind a transaction
        pooler (``STAYLER_DATABASE_POOLED``), free of prepared statements (``schema.connections``).
        """
        self.url = url
        kwargs = connection_kwargs(settings or Settings(), "api")
        self.pool = psycopg_pool.ConnectionPool(url, min_size=size, max_size=size, open=False, timeout=10,
                                                kwargs=kwargs, name="stayler-api")

    def open(self) -> None:
        """Open the pool without waiting for the database (readiness reports it)."""
        self.pool.open(wait=False)

    def close(self) -> None:
        """Close every connection."""
        self.pool.close()

    def call(self, fn: Callable[Concatenate[psycopg.Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` here, turning database and producer errors into problems."""
        try:
            with self.pool.connection() as conn:
                return fn(conn, *args, **kwargs)
        except psycopg_pool.PoolTimeout as exc:
            raise Problem("database_unavailable") from exc
        except ProducerError as exc:
            raise from_producer(exc) from exc
        except psycopg.Error as exc:
            raise from_database(exc) from exc

    def ping(self, timeout_s: float = 2.0) -> None:
        """One round trip, waiting at most ``timeout_s`` for a connection (readiness must answer fast)."""
        try:
            with self.pool.connection(timeout=timeout_s) as conn:
                conn.execute(Q.db_now).fetchone()
        except (psycopg_pool.PoolTimeout, psycopg.OperationalError) as exc:
            raise Problem("database_unavailable") from exc

    async def run(self, fn: Callable[Concatenate[psycopg.Connection, P], T], *args: P.args,
                  **kwargs: P.kwargs) -> T:
        """:meth:`call` in a worker thread."""
        return await anyio.to_thread.run_sync(lambda: self.call(fn, *args, **kwargs))
