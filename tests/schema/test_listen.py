"""schema.listen: a notification is heard, a killed connection is replaced, a pooler means polling.

Waits are bounded by generous timeouts that only end a broken test; what is checked is what was
heard, how many connections were made, and which connection listened.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

import psycopg
import pytest

from core.backoff import Backoff
from core.settings import Settings
from schema import channels
from schema.listen import (
    AsyncListener,
    Listener,
    akeep_listening,
    alisten,
    keep_listening,
    listen,
    listen_target,
    listening_on,
)
from tests.infra.pgbouncer import PgBouncer
from tests.infra.pgbouncer import pgbouncer_for as pgbouncer_for

#: Long enough for a loaded machine; only a broken test waits this long.
PATIENCE_S = 20.0
QUICK = Backoff(first_s=0.01, max_s=0.05)


def settings_for(url: str, **overrides: object) -> Settings:
    return Settings(database_url=url, db_timeout_s=10, **overrides)  # type: ignore[arg-type]


def notify(url: str, channel: str, payload: str = "") -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


def terminate(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def heard_until(listener: Listener, wanted: Callable[[list[psycopg.Notify]], bool]) -> list[psycopg.Notify]:
    """Every notification heard until ``wanted`` says enough (at most PATIENCE_S of waiting in all)."""
    notes: list[psycopg.Notify] = []
    for _ in range(int(PATIENCE_S / 0.5)):
        got = listener.wait(0.5)
        assert got is not None, "a direct listener never polls"
        notes += got
        if wanted(notes):
            return notes
    raise AssertionError(f"not heard: {notes}")


# --- where to listen --------------------------------------------------------------------------

def test_the_direct_url_is_chosen_whenever_one_is_configured() -> None:
    pooled = Settings(database_url="postgresql://pooler/db", database_pooled=True)
    both = Settings(database_url="postgresql://pooler/db", database_pooled=True,
                    direct_database_url="postgresql://primary/db")
    plain = Settings(database_url="postgresql://primary/db")
    assert (listen_target(pooled).url, listen_target(pooled).direct) == ("postgresql://pooler/db", False)
    assert (listen_target(both).url, listen_target(both).direct) == ("postgresql://primary/db", True)
    assert listen_target(both, "postgresql://pooler/db").url == "postgresql://primary/db"
    assert (listen_target(plain).url, listen_target(plain).direct) == ("postgresql://primary/db", True)


def test_another_url_is_used_as_given() -> None:
    pooled = Settings(database_url="postgresql://pooler/db", database_pooled=True,
                      direct_database_url="postgresql://primary/db")
    assert (listen_target(pooled, "postgresql://other/x").url, listen_target(pooled, "postgresql://other/x").direct
            ) == ("postgresql://other/x", False)
    assert listen_target(Settings(database_url="postgresql://a/b"), "postgresql://other/x").direct


# --- sync ---------------------------------------------------------------------------------------

def test_a_notification_is_delivered(db_url: str) -> None:
    with listen(settings_for(db_url), "cli", (channels.JOBS, channels.CONVERSION_DONE)) as listener:
        assert listener.listening
        assert listener.wait(0.0) == []
        notify(db_url, channels.CONVERSION_DONE, "abc")
        notes = heard_until(listener, bool)
        assert [(n.channel, n.payload) for n in notes] == [(channels.CONVERSION_DONE, "abc")]
        # One that arrives while a statement runs is read with its results, queued, and still returned.
        listener.conn.execute("SELECT pg_notify(%s, 'x'), pg_sleep(0.05)", (channels.JOBS,))
        assert [(n.channel, n.payload) for n in listener.wait(0.0) or []] == [(channels.JOBS, "x")]


def test_listening_on_a_callers_connection_ends_with_unlisten(db: psycopg.Connection) -> None:
    with listening_on(db, (channels.WEBHOOKS,)):
        assert db.execute("SELECT pg_listening_channels()").fetchall() == [(channels.WEBHOOKS,)]
    assert db.execute("SELECT pg_listening_channels()").fetchall() == []


def test_a_listener_reconnects_after_its_backend_is_terminated(db_url: str) -> None:
    stop = threading.Event()
    pids: list[int] = []
    errors: list[Exception] = []
    heard: list[str] = []

    def serve(listener: Listener) -> None:
        pids.append(listener.conn.info.backend_pid)
        if len(pids) == 1:
            terminate(db_url, pids[0])
            heard_until(listener, bool)  # raises: the connection is gone
            return
        notify(db_url, channels.JOBS, "after")
        heard.extend(n.payload for n in heard_until(listener, bool))
        stop.set()

    thread = threading.Thread(target=keep_listening, args=(settings_for(db_url), "cli", (channels.JOBS,), serve, stop),
                              kwargs={"backoff": QUICK, "on_error": errors.append}, daemon=True)
    thread.start()
    thread.join(PATIENCE_S)
    stop.set()
    assert not thread.is_alive()
    assert len(pids) == 2 and pids[0] != pids[1]
    assert [type(e) for e in errors] == [psycopg.OperationalError]
    assert heard == ["after"]


# --- async --------------------------------------------------------------------------------------

def test_the_async_listener_hears_and_reconnects_after_termination(db_url: str) -> None:
    pids: list[int] = []
    heard: list[str | None] = []
    lost: list[int] = []

    async def serve(listener: AsyncListener) -> None:
        assert listener.conn is not None
        pids.append(listener.conn.info.backend_pid)
        await asyncio.to_thread(notify, db_url, channels.CONVERSION_DONE, f"n{len(pids)}")
        async for payload in listener.heard():
            heard.append(payload)
            if len(pids) == 1:
                await asyncio.to_thread(terminate, db_url, pids[0])
            else:
                raise asyncio.CancelledError

    async def main() -> None:
        task = asyncio.create_task(akeep_listening(settings_for(db_url), "api", (channels.CONVERSION_DONE,), serve,
                                                   backoff=QUICK, on_lost=lambda: lost.append(1)))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, PATIENCE_S)

    asyncio.run(main())
    assert heard == ["n1", "n2"]
    assert len(pids) == 2 and pids[0] != pids[1] and lost == [1]


# --- behind a pooler ----------------------------------------------------------------------------

def test_behind_a_pooler_the_listener_polls_and_the_direct_url_is_heard(
        db_url: str, pgbouncer_for: Callable[..., PgBouncer]) -> None:
    bouncer = pgbouncer_for(db_url)
    pooled_url = bouncer.url(urlsplit(db_url).path.lstrip("/"))
    settings = settings_for(pooled_url, database_pooled=True)
    with listen(settings, "cli", (channels.JOBS,), poll_s=0.05) as listener:
        assert not listener.listening
        for _ in range(8):  # statements run (no prepared statements through the pooler) …
            assert listener.conn.execute("SELECT %s::int", (1,)).fetchone() == (1,)
        notify(db_url, channels.JOBS)
        assert [listener.wait(PATIENCE_S) for _ in range(3)] == [None, None, None]  # … and waits say "look again"

    async def one_tick() -> list[str | None]:
        async with alisten(settings, "api", (channels.JOBS,), poll_s=0.05) as alistener:
            assert not alistener.listening
            return [payload async for payload in _first(alistener, 2)]

    assert asyncio.run(one_tick()) == [None, None]

    # With a direct URL configured, the same settings listen there and hear the notification.
    both = settings_for(pooled_url, database_pooled=True, direct_database_url=db_url)
    with listen(both, "cli", (channels.JOBS,)) as listener:
        assert listener.listening and listener.conn.info.port == urlsplit(db_url).port
        notify(pooled_url, channels.JOBS, "via the pooler")
        assert [n.payload for n in heard_until(listener, bool)] == ["via the pooler"]


async def _first(listener: AsyncListener, n: int):
    got = 0
    async for payload in listener.heard():
        yield payload
        got += 1
        if got == n:
            return
