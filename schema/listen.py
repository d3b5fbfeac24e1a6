"""One way to hear the database's notifications: LISTEN on a direct connection, or poll behind a pooler.

A LISTEN through a transaction-mode pooler (PgBouncer, ``STAYLER_DATABASE_POOLED=true``) stays on
whichever server connection ran it: it hears nothing, or hears for a stranger. So a listener first
picks where to connect, once (:func:`listen_target`): the direct URL when one is configured
(``STAYLER_DIRECT_DATABASE_URL``), else the database URL, which LISTEN can use unless it is pooled.
Behind a pooler the listener does not LISTEN: each wait is a sleep of at most ``poll_s`` after which
the caller looks again (a wait returns ``None``: "anything may have happened").

- :func:`listen` (sync) opens a connection through :mod:`schema.connections` (named, kept alive,
  time-bounded), LISTENs on the channels and yields a :class:`Listener`: the connection (to run
  statements on too) and :meth:`Listener.wait`. :func:`listening_on` does the same on a connection
  the caller owns (and UNLISTENs after).
- :func:`keep_listening` (sync) and :func:`akeep_listening` (async) run a caller's ``serve`` on a
  listener and open a new one when the connection is lost, after a pause from a
  :class:`core.backoff.Backoff` that starts again from its first delay once connected.

Channel names live in :mod:`schema.channels`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg import sql

from core.backoff import Backoff
from core.logs import first_line
from core.settings import Settings
from schema.connections import ConnectionSettings, connect, connection_kwargs

log = logging.getLogger(__name__)

#: How often a listener behind a pooler (no LISTEN there) tells its caller to look again.
POOLED_POLL_S = 0.25


@dataclass(frozen=True)
class ListenTarget:
    """Where a listener connects, and whether LISTEN works there (``direct``: no pooler in between)."""

    url: str
    direct: bool


class ListenSettings(ConnectionSettings, Protocol):
    """What choosing the URL to listen on reads (``Settings`` or a slice of it)."""

    @property
    def database_url(self) -> str | None:
        """The configured database URL (possibly pooled)."""
        ...

    @property
    def direct_database_url(self) -> str | None:
        """A URL that reaches PostgreSQL directly, when the database URL is pooled."""
        ...


def listen_target(settings: ListenSettings, url: str | None = None) -> ListenTarget:
    """The URL to listen on: the direct URL when configured, else the database URL (direct unless pooled).

    A ``url`` other than the configured database URL (a database of a test, a tool's own) is used as
    given, direct when it is the configured direct URL or when the database is not declared pooled.
    """
    if url is None or url == settings.database_url:
        if settings.direct_database_url:
            return ListenTarget(settings.direct_database_url, True)
        if settings.database_url is None:
            raise RuntimeError("DATABASE_URL is not set")
        return ListenTarget(settings.database_url, not settings.database_pooled)
    return ListenTarget(url, url == settings.direct_database_url or not settings.database_pooled)


def _quoted(channels: Sequence[str]) -> list[str]:
    return [sql.Identifier(channel).as_string(None) for channel in channels]


class Listener:
    """A connection that hears ``channels`` (when ``listening``) or tells its caller to poll."""

    def __init__(self, conn: psycopg.Connection, channels: Sequence[str], *, listening: bool,
                 poll_s: float = POOLED_POLL_S) -> None:
        """Wrap ``conn``; :meth:`start` sends the LISTENs."""
        if listening and not conn.autocommit:
            raise ValueError("LISTEN needs an autocommit connection: notifications arrive between transactions")
        self.conn = conn
        self.channels = tuple(channels)
        self.listening = listening
        self.poll_s = poll_s

    def start(self) -> None:
        """LISTEN on every channel (nothing when polling)."""
        if self.listening:
            for channel in _quoted(self.channels):
                self.conn.execute(f"LISTEN {channel}")

    def stop(self) -> None:
        """UNLISTEN every channel, if the connection still works."""
        if self.listening and not self.conn.closed:
            with contextlib.suppress(psycopg.Error):
                for channel in _quoted(self.channels):
                    self.conn.execute(f"UNLISTEN {channel}")

    def wait(self, timeout_s: float, *, sleep: Callable[[float], Any] = time.sleep,
             wake_fds: Sequence[int] = ()) -> list[psycopg.Notify] | None:
        """Wait up to ``timeout_s`` for a notification; returns every one that arrived, ``[]`` on timeout.

        Polling (behind a pooler) it sleeps at most ``poll_s`` (with ``sleep``, say a stop event's
        ``wait``) and returns ``None``: look again. A readable ``wake_fds`` entry (a pipe of the
        caller's) ends the wait early too; the caller drains it.
        """
        timeout_s = max(timeout_s, 0.0)
        if not self.listening:
            pause = min(timeout_s, self.poll_s)
            if wake_fds:
                select.select(list(wake_fds), [], [], pause)
            else:
                sleep(pause)
            return None
        # A notification that arrived while a statement ran was read with its results and queued.
        notes = list(self.conn.notifies(timeout=0.0))
        if notes:
            return notes
        if wake_fds:
            select.select([self.conn.fileno(), *wake_fds], [], [], timeout_s)
            return list(self.conn.notifies(timeout=0.0))
        notes = list(self.conn.notifies(timeout=timeout_s, stop_after=1))
        if notes:
            notes += self.conn.notifies(timeout=0.0)  # one round serves everything that arrived meanwhile
        return notes


@contextlib.contextmanager
def listen(settings: Settings, role: str, channels: Sequence[str], *, url: str | None = None,
           poll_s: float = POOLED_POLL_S) -> Iterator[Listener]:
    """A connection of ``role`` to :func:`listen_target`, listening on ``channels`` (or polling)."""
    target = listen_target(settings, url)
    with connect(target.url, settings, role, pooled=not target.direct) as conn:
        listener = Listener(conn, channels, listening=target.direct, poll_s=poll_s)
        listener.start()
        yield listener


@contextlib.contextmanager
def listening_on(conn: psycopg.Connection, channels: Sequence[str], *,
                 poll_s: float = POOLED_POLL_S) -> Iterator[Listener]:
    """Listen on a connection the caller owns (it must reach PostgreSQL directly); UNLISTEN after."""
    listener = Listener(conn, channels, listening=True, poll_s=poll_s)
    listener.start()
    try:
        yield listener
    finally:
        listener.stop()


def keep_listening(settings: Settings, role: str, channels: Sequence[str], serve: Callable[[Listener], None],
                   stop: threading.Event, *, backoff: Backoff, url: str | None = None,
                   poll_s: float = POOLED_POLL_S, on_error: Callable[[Exception], None] | None = None) -> None:
    """Run ``serve`` on a listener until ``stop`` is set, on a new one after each failure.

    ``serve`` returns when ``stop`` is set (or when it wants a fresh connection). An exception from it
    or from connecting is passed to ``on_error`` (by default logged as a warning), then the loop
    waits the next delay of ``backoff`` (from its first once a connection was made) or until ``stop``.
    """
    delays = backoff.delays()
    while not stop.is_set():
        try:
            with listen(settings, role, channels, url=url, poll_s=poll_s) as listener:
                delays = backoff.delays()
                serve(listener)
        except Exception as exc:
            if on_error is not None:
                on_error(exc)
            else:
                log.warning("listener lost its connection; reconnecting",
                            extra={"role": role, "error": first_line(exc)})
            stop.wait(next(delays))


class AsyncListener:
    """The async form of :class:`Listener`: an async connection that hears ``channels``, or a poll timer."""

    def __init__(self, conn: psycopg.AsyncConnection[Any] | None, channels: Sequence[str], *,
                 poll_s: float = POOLED_POLL_S) -> None:
        """``conn`` None: behind a pooler, poll every ``poll_s``."""
        self.conn = conn
        self.channels = tuple(channels)
        self.poll_s = poll_s

    @property
    def listening(self) -> bool:
        """True when notifications arrive; False when the caller must poll."""
        return self.conn is not None

    async def start(self) -> None:
        """LISTEN on every channel (nothing when polling)."""
        if self.conn is not None:
            for channel in _quoted(self.channels):
                await self.conn.execute(f"LISTEN {channel}")

    async def heard(self) -> AsyncIterator[str | None]:
        """Each notification's payload as it arrives; polling, ``None`` every ``poll_s`` (look again).

        Ends (raises) when the connection is lost.
        """
        if self.conn is None:
            while True:
                await asyncio.sleep(self.poll_s)
                yield None
        async for note in self.conn.notifies():
            yield note.payload


def async_connection_kwargs(settings: Settings, role: str, *, pooled: bool) -> dict[str, Any]:
    """:func:`schema.connections.connection_kwargs` for an async connection (no sync deadline cursor)."""
    kwargs = connection_kwargs(settings, role, pooled=pooled)
    kwargs.pop("cursor_factory", None)
    return kwargs


@contextlib.asynccontextmanager
async def alisten(settings: Settings, role: str, channels: Sequence[str], *, url: str | None = None,
                  poll_s: float = POOLED_POLL_S) -> AsyncIterator[AsyncListener]:
    """An async connection of ``role`` to :func:`listen_target`, listening on ``channels``; polling behind a pooler."""
    target = listen_target(settings, url)
    if not target.direct:
        yield AsyncListener(None, channels, poll_s=poll_s)
        return
    async with await psycopg.AsyncConnection.connect(
            target.url, **async_connection_kwargs(settings, role, pooled=False)) as conn:
        listener = AsyncListener(conn, channels, poll_s=poll_s)
        await listener.start()
        yield listener


async def akeep_listening(settings: Settings, role: str, channels: Sequence[str],
                          serve: Callable[[AsyncListener], Awaitable[None]], *, backoff: Backoff,
                          url: str | None = None, poll_s: float = POOLED_POLL_S,
                          on_lost: Callable[[], None] | None = None) -> None:
    """Run ``serve`` on an async listener until cancelled, on a new one after each loss.

    After a loss (an exception, or ``serve`` returning) ``on_lost`` runs, then the loop sleeps the next
    delay of ``backoff`` (from its first once a connection was made).
    """
    delays = backoff.delays()
    while True:
        try:
            async with alisten(settings, role, channels, url=url, poll_s=poll_s) as listener:
                delays = backoff.delays()
                await serve(listener)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("listener lost its connection; reconnecting", extra={"role": role, "error": first_line(exc)})
        if on_lost is not None:
            on_lost()
        await asyncio.sleep(next(delays))
