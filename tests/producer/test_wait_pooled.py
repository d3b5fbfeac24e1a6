"""``producer.wait(url, …)`` through a real PgBouncer in transaction mode.

A LISTEN through a transaction pooler stays on whichever server connection ran it, so the waiter
must poll there (and send no prepared statements); it still sees a cancel within a fraction of a
second, not after the 5 s fallback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from core.settings import get_settings
from producer import cancel
from producer.wait import POLL_FALLBACK_S, wait
from schema.migrate import apply_migrations
from tests.infra.pgbouncer import PgBouncer
from tests.infra.pgbouncer import pgbouncer_for as pgbouncer_for
from tests.infra.postgres import SmallPostgres
from tests.infra.postgres import small_postgres as small_postgres
from tests.support.factories import make_conversion, make_user


@pytest.fixture
def pooled_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``STAYLER_DATABASE_POOLED=true`` for this test's settings."""
    monkeypatch.setenv("STAYLER_DATABASE_POOLED", "true")
    monkeypatch.delenv("STAYLER_DIRECT_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_wait_on_a_pooled_url_sees_a_cancel_promptly(
        small_postgres: SmallPostgres, pgbouncer_for: Callable[..., PgBouncer], pooled_env: None) -> None:
    direct = small_postgres.create_database("wait_pooled")
    apply_migrations(direct)
    bouncer = pgbouncer_for(small_postgres.url)
    with psycopg.connect(direct, autocommit=True) as conn:
        user = make_user(conn)
        cid = make_conversion(conn, user_id=user)
        # Keep other clients busy on the pool so the waiter's statements land on several server connections.
        others = [psycopg.connect(bouncer.url("wait_pooled"), autocommit=True, prepare_threshold=None)
                  for _ in range(4)]
        stop = threading.Event()

        def churn(c: psycopg.Connection) -> None:
            while not stop.is_set():
                c.execute("SELECT pg_sleep(0.01)")

        threads = [threading.Thread(target=churn, args=(c,)) for c in others]
        for t in threads:
            t.start()
        cancelled_at: list[float] = []

        def cancel_later() -> None:
            time.sleep(2.0)
            cancel(conn, cid, user_id=user)
            cancelled_at.append(time.monotonic())

        canceller = threading.Thread(target=cancel_later)
        canceller.start()
        try:
            result = wait(bouncer.url("wait_pooled"), [cid], timeout=15)
            seen_at = time.monotonic()
        finally:
            canceller.join()
            stop.set()
            for t in threads:
                t.join()
            for c in others:
                c.close()
    assert result == {cid: "cancelled"}
    assert seen_at - cancelled_at[0] < min(1.5, POLL_FALLBACK_S)
