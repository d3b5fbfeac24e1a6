"""Client-side deadlines on every statement: a watchdog cuts a connection whose statement hangs.

TCP keepalives and ``tcp_user_timeout`` notice a dead peer, not a silent one: a partition that
black-holes packets while something (a pooler, a proxy, a middlebox) keeps the TCP connection
alive leaves a statement waiting for a reply that never comes, and PostgreSQL's own
``statement_timeout`` cannot help when the server never sees the statement or its reply is lost.
Behind PgBouncer in transaction mode there is no session setting to rely on either.

So every connection the system opens through ``schema.connections`` runs its statements through
``DeadlineCursor``: a statement registers its deadline with the process's watchdog thread; when
it passes, the watchdog shuts the connection's socket down (``shutdown(SHUT_RDWR)``), the waiting
call fails at once with ``psycopg.OperationalError`` ("server closed the connection"), and the
caller's usual handling of a broken connection takes over (the queue door drops it from the pool
and retries what is harmless to retry). A cancel request would travel the same black hole, so the
socket is cut instead.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.rows import Row

log = logging.getLogger(__name__)


class Watchdog:
    """One thread per process that cuts connections whose statement outlived its deadline."""

    def __init__(self) -> None:
        """Idle until the first guarded statement (the thread starts in the process that uses it)."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, tuple[psycopg.Connection[Any], float]] = {}
        self._ids = itertools.count()
        self._pid = -1
        self.cuts = 0

    @contextlib.contextmanager
    def guard(self, conn: psycopg.Connection[Any], timeout_s: float) -> Iterator[None]:
        """Within the block, ``conn`` is cut if the block lasts longer than ``timeout_s``."""
        token = next(self._ids)
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._ensure_thread()
            self._live[token] = (conn, timeout_s)
            heapq.heappush(self._heap, (deadline, token))
            if self._heap[0][1] == token:
                self._wake.notify()
        try:
            yield
        finally:
            with self._lock:
                self._live.pop(token, None)

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # threads do not survive a fork: one per process
            self._pid = os.getpid()
            self._heap = [(d, t) for d, t in self._heap if t in self._live]
            threading.Thread(target=self._run, name="stayler-db-deadline", daemon=True).start()

    def _run(self) -> None:
        pid = os.getpid()
        with self._lock:
            while self._pid == pid:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    self._wake.wait()
                    continue
                deadline, token = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._heap)
                conn, timeout_s = self._live.pop(token)
                self.cuts += 1
                cut(conn, timeout_s)

    def _after_fork(self) -> None:
        """In a forked child: fresh lock and state (the parent's thread and guards are not ours)."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap = []
        self._live = {}
        self._pid = -1


def cut(conn: psycopg.Connection[Any], timeout_s: float) -> None:
    """Shut ``conn``'s socket down so a call blocked on it fails now (the connection is then broken)."""
    try:
        fd = conn.pgconn.socket
        sock = socket.socket(fileno=os.dup(fd))
    except Exception:
        return  # already closed
    try:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    finally:
        sock.close()
    log.warning("a database statement outlived its deadline; cut its connection",
                extra={"deadline_s": timeout_s})


#: The process's watchdog.
WATCHDOG = Watchdog()
os.register_at_fork(after_in_child=WATCHDOG._after_fork)


class DeadlineCursor(psycopg.Cursor[Row]):
    """A cursor whose ``execute`` is bounded by ``deadline_s`` (set on the subclass)."""

    deadline_s: float | None = None

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> DeadlineCursor[Row]:
        """Run the statement; cut the connection if no reply arrives within ``deadline_s``."""
        if self.deadline_s is None:
            super().execute(query, params, **kwargs)
            return self
        with WATCHDOG.guard(self.connection, self.deadline_s):
            super().execute(query, params, **kwargs)
        return self


_CURSORS: dict[float, type[DeadlineCursor[Any]]] = {}


def deadline_cursor(deadline_s: float) -> type[DeadlineCursor[Any]]:
    """The cursor class (for ``psycopg.connect(cursor_factory=…)``) that bounds each statement to ``deadline_s``."""
    with contextlib.suppress(KeyError):
        return _CURSORS[deadline_s]
    cls = type(f"DeadlineCursor{int(deadline_s * 1000)}ms", (DeadlineCursor,), {"deadline_s": deadline_s})
    _CURSORS[deadline_s] = cls
    return cls
