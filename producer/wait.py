"""Waiting for conversions to end, on the completion channel, with a polling fallback.

A trigger (``0200_api.sql``) sends ``NOTIFY stayler_conversion_done, '<conversion id>'``
(:data:`schema.channels.CONVERSION_DONE`) when a conversion becomes terminal, on commit of that
transaction. The waiter listens first, then reads the
statuses, so a completion that commits in between is either read or notified.

Through a transaction-mode pooler (``STAYLER_DATABASE_POOLED``, a URL other than
``STAYLER_DIRECT_DATABASE_URL``) a LISTEN would stay on whichever server connection ran it and
notify nobody, so the waiter does not listen and polls every :data:`POOLED_POLL_S` instead
(:func:`schema.listen.listen` decides).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable, Iterator

import psycopg

from core.settings import get_settings
from producer.errors import database_errors
from schema import channels
from schema.listen import Listener, listen, listening_on
from schema.queries import Q
from schema.statuses import TERMINAL

#: Re-read the statuses at least this often even without a notification (a lost connection, a
#: listener that joined late): the fallback, not the path.
POLL_FALLBACK_S = 5.0
#: How often a waiter re-reads the statuses through a transaction pooler (no LISTEN there).
POOLED_POLL_S = 0.25


@contextlib.contextmanager
def _listening(conn_or_url: psycopg.Connection | str) -> Iterator[Listener]:
    """A listener on the completion channel: on a connection of its own, or on the caller's."""
    if isinstance(conn_or_url, str):
        with listen(get_settings(), "producer", (channels.CONVERSION_DONE,), url=conn_or_url,
                    poll_s=POOLED_POLL_S) as listener:
            yield listener
        return
    if not conn_or_url.autocommit:
        raise ValueError("wait() needs an autocommit connection: notifications arrive between transactions")
    with listening_on(conn_or_url, (channels.CONVERSION_DONE,)) as listener:
        yield listener


def wait(conn_or_url: psycopg.Connection | str, conversion_ids: Iterable[uuid.UUID],
         timeout: float) -> dict[uuid.UUID, str]:
    """Wait until every conversion is terminal or ``timeout`` seconds pass; returns id → status.

    ``conn_or_url`` is an autocommit connection (it LISTENs on it and UNLISTENs after) or a URL (a
    connection of its own). Unknown ids are left out of the result and never waited for.
    """
    ids = list(dict.fromkeys(conversion_ids))
    deadline = time.monotonic() + max(0.0, timeout)
    with database_errors("waiting for conversions"), _listening(conn_or_url) as listener:
        while True:
            rows = listener.conn.execute(Q.conversion_list_statuses, {"ids": ids}).fetchall()
            statuses = {row[0]: row[1] for row in rows}
            pending = {cid for cid, st in statuses.items() if st not in TERMINAL}
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                return statuses
            _wait_for_any(listener, {str(cid) for cid in pending}, min(remaining, POLL_FALLBACK_S))


def _wait_for_any(listener: Listener, payloads: set[str], timeout_s: float) -> None:
    """Return when one of ``payloads`` is notified, when polling says look again, or after ``timeout_s``."""
    until = time.monotonic() + timeout_s
    while True:
        notes = listener.wait(until - time.monotonic())
        if notes is None or any(note.payload in payloads for note in notes):
            return
        if time.monotonic() >= until:
            return
