"""Waiting for conversions to end, on the completion channel, with a polling fallback.

A trigger (``0200_api.sql``) sends ``NOTIFY stayler_conversion_done, '<conversion id>'`` when a
conversion becomes terminal, on commit of that transaction. The waiter listens first, then reads the
statuses, so a completion that commits in between is either read or notified.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable, Iterator

import psycopg

from producer.errors import database_errors
from schema.queries import Q

CHANNEL = "stayler_conversion_done"
TERMINAL = frozenset({"completed", "failed", "cancelled"})
#: Re-read the statuses at least this often even without a notification (a lost connection, a
#: listener that joined late): the fallback, not the path.
POLL_FALLBACK_S = 5.0


@contextlib.contextmanager
def _listening(conn_or_url: psycopg.Connection | str) -> Iterator[psycopg.Connection]:
    if isinstance(conn_or_url, str):
        with psycopg.connect(conn_or_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            yield conn
        return
    conn = conn_or_url
    if not conn.autocommit:
        raise ValueError("wait() needs an autocommit connection: notifications arrive between transactions")
    conn.execute(f"LISTEN {CHANNEL}")
    try:
        yield conn
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
    with database_errors("waiting for conversions"), _listening(conn_or_url) as conn:
        while True:
            rows = conn.execute(Q.conversion_list_statuses, {"ids": ids}).fetchall()
            statuses = {row[0]: row[1] for row in rows}
            pending = {cid for cid, st in statuses.items() if st not in TERMINAL}
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                return statuses
            pending_text = {str(cid) for cid in pending}
            for note in conn.notifies(timeout=min(remaining, POLL_FALLBACK_S)):
                if note.payload in pending_text:
                    break
