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
    completed = threading.Event()

    def complete() -> None:
        api.complete(conversion["id"])
        completed.set()

    timer = threading.Timer(0.5, complete)
    timer.start()
    response = owner.client("read").get(f"/v1/conversions/{conversion['id']}", params={"wait": 20})
    answered_after_completion = completed.is_set()
    timer.join()
    # Events, not a stopwatch: the request was answered after the other connection completed the
    # conversion (it waited), and with the completed state long before its 20 s wait ran out (a
    # timed-out wait answers with the state it has, "pending").
    assert answered_after_completion
    assert response.status_code == 200 and response.json()["status"] == "completed"
    assert response.json()["result"]["url"].endswith("/result")


def test_wait_times_out_with_the_current_state(api) -> None:
    owner = api.owner()
    conversion = owner.conversion()
    start = time.monotonic()
    response = owner.client("read").get(f"/v1/conversions/{conversion['id']}", params={"wait": 1})
    waited = time.monotonic() - start
    assert response.json()["status"] == "pending"
    # It waited its second: a lower bound only (a loaded machine makes it later, never earlier);
    # no ceiling on the wall clock.
    assert waited >= 0.9
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
    # Condition, not a nap: every waiter is held (its first read done) before the quiet window.
    deadline = time.monotonic() + 60
    while "stayler_api_waiting_requests 12.0" not in owner.client("read").get("/metrics").text:
        assert time.monotonic() < deadline, "the 12 waiters were never all held"
        time.sleep(0.1)
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
    timers = [threading.Timer(0.3, api.complete, args=(str(ids[0]),)),
              threading.Timer(0.6, api.fail, args=(str(ids[1]),))]
    for timer in timers:
        timer.start()
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        statuses = producer.wait(conn, ids, timeout=20)
    # Returned on the two notifications, not at its 20 s timeout (which answers with "pending").
    assert statuses == {ids[0]: "completed", ids[1]: "failed"}
    for timer in timers:
        timer.join()
