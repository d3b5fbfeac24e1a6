"""Waiting for conversions to end, on the completion channel, with a polling fallback.

A trigger (``0200_api.sql``) sends ``NOTIFY stayler_conversion_done, '<conversion id>'`` when a
conversion becomes terminal, on commit of that transaction. The waiter listens first, then reads the
statuses, so a completion that commits in between is either read or notified.

Through a transaction-mode pooler (``STAYLER_DATABASE_POOLED``, a URL other than
``STAYLER_DIRECT_DATABASE_URL``) a LISTEN would stay on whichever server connection ran it and
notify nobody, so the waiter does not listen and polls every :data:`POOLED_POLL_S` instead.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable, Iterator

import psycopg

from core.settings import get_settings
from producer.errors import database_errors
from schema.connections import connect
from schema.queries import Q
from schema.statuses import TERMINAL

CHANNEL = "stayler_conversion_done"
#: Re-read the statuses at least this often even without a notification (a lost connection, a
#: listener that joined late): the fallback, not the path.
POLL_FALLBACK_S = 5.0
#: How often a waiter re-reads the statuses through a transaction pooler (no LISTEN there).
POOLED_POLL_S = 0.25


@contextlib.contextmanager
def _listening(conn_or_url: psycopg.Connection | str) -> Iterator[tuple[psycopg.Connection, float]]:
    """A connection to wait on, and the longest wait between two reads of the statuses."""
    if isinstance(conn_or_url, str):
        settings = get_settings()
        pooled = settings.database_pooled and conn_or_url != settings.direct_database_url
        with connect(conn_or_url, settings, "producer", pooled=pooled) as conn:
            if pooled:
                yield conn, POOLED_POLL_S
                return
            conn.execute(f"LISTEN {CHANNEL}")
            yield conn, POLL_FALLBACK_S
        return
    conn = conn_or_url
    if not conn.autocommit:
        raise ValueError("wait() needs an autocommit connection: notifications arrive between transactions")
    conn.execute(f"LISTEN {CHANNEL}")
    try:
        yield conn, POLL_FALLBACK_S
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.execute(f"UNLISTEN {CHANNEL}")


def wait(conn_or_url: psycopg.Connection | str, conversion_ids: Iterable[uuid.UUID],
         timeout: float) -> dict[uuid.UUID, str]:
    """Wait until every conversion is terminal or ``timeout`` seconds pass; returns id → status.

    ``conn_or_url`` is an autocommit connection (it LISTENs on it and UNLISTENs after) or a URL (a
    connection of its own). Unknown ids are left out of the result and never waited for.
    """
    ids = list(dict.fromkeys(conversion_ids))
    deadline = time.monotonic() + max(0.0, timeout)
    with database_errors("waiting for conversions"), _listening(conn_or_url) as (conn, poll_s):
        while True:
            rows = conn.execute(Q.conversion_list_statuses, {"ids": ids}).fetchall()
            statuses = {row[0]: row[1] for row in rows}
            pending = {cid for cid, st in statuses.items() if st not in TERMINAL}
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                return statuses
            pending_text = {str(cid) for cid in pending}
            for note in conn.notifies(timeout=min(remaining, poll_s)):
                if note.payload in pending_text:
                    break
