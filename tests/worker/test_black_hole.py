"""A black-holed connection (no RST; the peer keeps TCP alive) ends a pooled statement within STAYLER_DB_TIMEOUT_S."""

from __future__ import annotations

import threading
import uuid
from urllib.parse import urlsplit

import psycopg
import pytest

from core.settings import Settings
from schema.deadline import WATCHDOG
from tests.infra.fault_proxy import fault_proxy
from worker.jobqueue import JobQueue, PoolSource, QueueUnavailable

TIMEOUT_S = 2.0


def test_a_black_holed_pooled_statement_fails_within_the_db_timeout(db_url: str, db: psycopg.Connection) -> None:
    # Regression (issue 26, defect 6): keepalives never fire through a black hole, so a pooled
    # statement hung for the whole 20 s partition instead of STAYLER_DB_TIMEOUT_S (8 s).
    settings = Settings(db_timeout_s=TIMEOUT_S, database_pooled=True)
    port = urlsplit(db_url).port or 5432
    with fault_proxy(port) as proxy:
        queue = JobQueue(PoolSource(proxy.url(db_url), settings), f"w-{uuid.uuid4().hex[:6]}",
                         retry_for_s=TIMEOUT_S)
        try:
            queue.register(hostname="h", pid=1, concurrency=1, model_name="m", model_version="v")
            cuts = WATCHDOG.cuts
            proxy.black_hole(True)
            outcome: list[BaseException | None] = []

            def renew() -> None:
                try:
                    queue.renew_worker()
                    outcome.append(None)
                except BaseException as exc:
                    outcome.append(exc)

            thread = threading.Thread(target=renew, daemon=True)
            thread.start()
            thread.join(timeout=TIMEOUT_S * 5)  # the old code hangs here for as long as the black hole lasts
            assert not thread.is_alive(), "the statement hung past its deadline"
            assert len(outcome) == 1 and isinstance(outcome[0], QueueUnavailable)
            assert WATCHDOG.cuts > cuts
            proxy.black_hole(False)
            queue.renew_worker()  # healed: fresh connections work again
        finally:
            proxy.black_hole(False)
            queue.close()


@pytest.mark.parametrize("role", ["worker", "api"])
def test_every_statement_of_a_connection_carries_a_deadline(db_url: str, role: str) -> None:
    from schema.connections import connect

    settings = Settings(db_timeout_s=TIMEOUT_S, db_statement_timeout_s=1.0)
    with connect(db_url, settings, role, pooled=True) as conn:
        cuts = WATCHDOG.cuts
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT pg_sleep(%s)", (TIMEOUT_S * 3 if role == "worker" else 1.0 + TIMEOUT_S * 2,))
        assert WATCHDOG.cuts == cuts + 1 and conn.broken
