"""How every long-lived connection of the system is opened: named, kept alive, time-bounded.

A connection that a network black-holes, a frozen peer or a failover leaves half-open must fail in
seconds, not hang for the kernel's two hours: each one carries TCP keepalives and a
``tcp_user_timeout``, a connect timeout, and (when the server is reached directly) a statement
timeout and an idle-in-transaction timeout. Each one names itself with ``application_name``
(``stayler-worker host:pid``, ``stayler-leader …``) so operators can read ``pg_stat_activity``.

Every statement also has a client-side deadline (``schema.deadline``): a watchdog cuts the
connection when no reply arrives in time, which is what ends a statement that a black hole (a
partition whose peer keeps TCP alive) would otherwise hang forever. Queue and leader statements
(short by design) get ``STAYLER_DB_TIMEOUT_S``; the others ``STAYLER_DB_STATEMENT_TIMEOUT_S`` plus
that margin; migrations none.

Behind a transaction-mode pooler (``STAYLER_DATABASE_POOLED=true``) nothing may live in the
session: prepared statements are off and startup ``options`` are not sent (PgBouncer refuses
unknown startup parameters; set ``query_timeout`` there instead).
"""

from __future__ import annotations

import os
import socket
from typing import Any, Protocol

import psycopg

from schema.deadline import deadline_cursor


class ConnectionSettings(Protocol):
    """What opening a connection reads from the settings (``core.settings.Settings`` or a slice of it)."""

    @property
    def database_pooled(self) -> bool:
        """The URL goes through a transaction-mode pooler."""
        ...

    @property
    def db_timeout_s(self) -> float:
        """A dead connection is noticed within this."""
        ...

    @property
    def db_statement_timeout_s(self) -> float:
        """Longest statement on direct connections."""
        ...


#: Roles that name connections; the part after ``stayler-`` in ``application_name``.
ROLES = ("worker", "leader", "producer", "api", "cli", "migrate", "webhooks")
#: Roles whose statements are short by design: bounded by ``db_timeout_s`` alone.
SHORT_STATEMENT_ROLES = ("worker", "leader")


def statement_deadline_s(settings: ConnectionSettings, role: str) -> float | None:
    """How long a statement of ``role`` may wait for its reply before the connection is cut."""
    if role == "migrate":
        return None
    if role in SHORT_STATEMENT_ROLES:
        return settings.db_timeout_s
    return settings.db_statement_timeout_s + settings.db_timeout_s


def application_name(role: str) -> str:
    """``stayler-<role> <host>:<pid>``, cut to PostgreSQL's 63-byte limit."""
    return f"stayler-{role} {socket.gethostname()}:{os.getpid()}"[:63]


def connection_kwargs(settings: ConnectionSettings, role: str, *, pooled: bool | None = None) -> dict[str, Any]:
    """Keyword arguments for ``psycopg.connect`` / a pool's ``kwargs`` for a connection of ``role``."""
    pooled = settings.database_pooled if pooled is None else pooled
    timeout_s = settings.db_timeout_s
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "application_name": application_name(role),
        "connect_timeout": max(1, round(min(timeout_s, 10))),
        "keepalives": 1,
        "keepalives_idle": max(1, round(timeout_s / 3)),
        "keepalives_interval": max(1, round(timeout_s / 9)),
        "keepalives_count": 3,
        "tcp_user_timeout": int(timeout_s * 1000),
    }
    deadline_s = statement_deadline_s(settings, role)
    if deadline_s is not None:
        kwargs["cursor_factory"] = deadline_cursor(deadline_s)
    if pooled:
        kwargs["prepare_threshold"] = None
    else:
        statement_ms = int(settings.db_statement_timeout_s * 1000)
        kwargs["options"] = (f"-c statement_timeout={statement_ms} "
                             f"-c idle_in_transaction_session_timeout={statement_ms}")
    return kwargs


def connect(url: str, settings: ConnectionSettings, role: str, *, pooled: bool | None = None) -> psycopg.Connection:
    """An autocommit connection to ``url`` with the system's keepalives, timeouts and name."""
    return psycopg.connect(url, **connection_kwargs(settings, role, pooled=pooled))
