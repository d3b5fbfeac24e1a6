"""?wait=N and producer.wait(): answered when another connection ends the conversion, on the channel."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg

import producer
from tests.api.conftest import scalar


def test_wait_returns_when_another_connection_completes(api) -> None:
    owner = api.owner()
    conversion = owner.conversion()
    timer = threading.Timer(0.5, api.complete, args=(conversion["id"],))
    timer.start()
    start = time.monotonic()
    response = owner.client("read").get(f"/v1/conversions/{conversion['id']}", params={"wait": 20})
    elapsed = time.monotonic() - start
    timer.join()
    assert response.status_code == 200 and response.json()["status"] == "completed"
    assert response.json()["result"]["url"].endswith("/result")
    assert 0.4 < elapsed < 3, elapsed


def test_wait_times_out_with_the_current_state(api) -> None:
    owner = api.owner()
    conversion = owner.conversion()
    start = time.monotonic()
    response = owner.client("read").get(f"/v1/conversions/{conversion['id']}", params={"wait": 1})
    assert response.json()["status"] == "pending"
    assert 0.9 < time.monotonic() - start < 3
    too_long = owner.client("read").get(f"/v1/conversions/{conversion['id']}", params={"wait": 61})
    assert too_long.status_code == 422


def test_many_waiters_cost_no_queries_while_waiting(api) -> None:
    owner = api.owner()
    conversions = [owner.conversion() for _ in range(3)]
    results: list[str] = []

    def waiter(cid: str) -> None:
        results.append(owner.client("read").get(f"/v1/conversions/{cid}", params={"wait": 20}).json()["status"])

    threads = [threading.Thread(target=waiter, args=(c["id"],)) for c in conversions for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        before = scalar(conn, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        time.sleep(1.5)
        after = scalar(conn, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    # 12 clients waited 1.5 s: a poll per second each would be ≥ 18 transactions.
    assert after - before < 6, after - before
    metrics = owner.client("read").get("/metrics").text
    assert "stayler_api_waiting_requests 12.0" in metrics
    for c in conversions:
        api.complete(c["id"])
    for t in threads:
        t.join(timeout=10)
    assert results == ["completed"] * 12


def test_producer_wait_on_the_same_channel(api) -> None:
    owner = api.owner()
    ids = [uuid.UUID(owner.conversion()["id"]) for _ in range(2)]
    unknown = uuid.uuid4()
    assert producer.wait(api.db_url, [*ids, unknown], timeout=0.2) == {ids[0]: "pending", ids[1]: "pending"}
    threading.Timer(0.3, api.complete, args=(str(ids[0]),)).start()
    threading.Timer(0.6, api.fail, args=(str(ids[1]),)).start()
    start = time.monotonic()
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        statuses = producer.wait(conn, ids, timeout=20)
    assert statuses == {ids[0]: "completed", ids[1]: "failed"}
    assert time.monotonic() - start < 3
