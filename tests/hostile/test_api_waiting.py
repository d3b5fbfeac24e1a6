"""Row 6 of issue 19: a ``?wait=`` waiter ends when its client leaves, waiters are capped per process and
per key (429 with ``Retry-After``), and waiting costs no query per waiter."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

import api.routes.conversions as routes
from api import waiters
from api.db import Database
from tests.api.conftest import ApiEnv, problem_type


def _until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _raw_wait(api: ApiEnv, key: str, cid: str, seconds: int) -> socket.socket:
    parts = urlsplit(api.base_url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.sendall(f"GET /v1/conversions/{cid}?wait={seconds} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                 f"Authorization: Bearer {key}\r\n\r\n".encode())
    return sock


def test_a_waiter_ends_when_its_client_hangs_up(api: ApiEnv) -> None:
    owner = api.owner()
    cid = owner.conversion()["id"]
    hub = api.server.app.state.ctx.hub
    sockets = [_raw_wait(api, owner.keys["read"], cid, 60) for _ in range(5)]
    assert _until(lambda: hub.waiting == 5)
    for sock in sockets:
        sock.close()
    # Before the fix each kept waiting (and re-reading) for its whole 60 s.
    assert _until(lambda: hub.waiting == 0), hub.waiting
    assert api.server.app.state.ctx.waiters.total == 0


def test_waiters_are_capped_per_key_with_retry_after(make_api: Callable[..., ApiEnv]) -> None:
    api = make_api(api_max_waiters_per_key=2, api_max_waiters=3)
    owner, other, third = api.owner(), api.owner(), api.owner()
    cid = owner.conversion()["id"]
    held = [_raw_wait(api, owner.keys["read"], cid, 30) for _ in range(2)]
    ctx = api.server.app.state.ctx
    assert _until(lambda: ctx.waiters.total == 2)
    refused = owner.client("read").get(f"/v1/conversions/{cid}", params={"wait": 5})
    assert refused.status_code == 429 and problem_type(refused) == "too_many_waiters"
    assert refused.headers["Retry-After"] == "1"
    assert owner.client("read").get(f"/v1/conversions/{cid}").status_code == 200  # without wait: served
    other_cid = other.conversion()["id"]
    held.append(_raw_wait(api, other.keys["read"], other_cid, 30))  # another key still waits …
    assert _until(lambda: ctx.waiters.total == 3)
    third_cid = third.conversion()["id"]
    full = third.client("read").get(f"/v1/conversions/{third_cid}", params={"wait": 5})
    assert full.status_code == 429 and "process" in full.json()["detail"]  # … up to the process's cap
    for sock in held:
        sock.close()
    assert _until(lambda: ctx.waiters.total == 0)


def test_a_waiter_reads_its_conversion_once_while_the_listener_is_connected(
        api: ApiEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waiters, "POLL_FALLBACK_S", 0.2)
    monkeypatch.setattr(routes, "POLL_FALLBACK_S", 0.2, raising=False)  # the name the old loop polled by
    owner = api.owner()
    cid = owner.conversion()["id"]
    ctx = api.server.app.state.ctx
    assert _until(ctx.hub.connected.is_set)
    reads: list[Any] = []
    real = Database.run

    async def counted(self: Database, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(fn, "__name__", "") == "fetch":
            reads.append(fn)
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(Database, "run", counted)
    answer = owner.client("read").get(f"/v1/conversions/{cid}", params={"wait": 1.5})
    assert answer.status_code == 200 and answer.json()["status"] == "pending"
    assert len(reads) == 1, len(reads)  # the old loop re-read every POLL_FALLBACK_S: 7 reads here

    results: list[str] = []
    thread = threading.Thread(target=lambda: results.append(
        owner.client("read").get(f"/v1/conversions/{cid}", params={"wait": 20}).json()["status"]))
    thread.start()
    assert _until(lambda: ctx.hub.waiting == 1)
    api.complete(cid)
    thread.join(timeout=15)
    assert results == ["completed"]


def test_the_cap_does_not_leak_when_waiters_end_normally(make_api: Callable[..., ApiEnv]) -> None:
    api = make_api(api_max_waiters_per_key=1)
    owner = api.owner()
    cid = owner.conversion()["id"]
    with httpx.Client(base_url=api.base_url, timeout=10,
                      headers={"Authorization": f"Bearer {owner.keys['read']}"}) as client:
        for _ in range(3):
            assert client.get(f"/v1/conversions/{cid}", params={"wait": 0.2}).status_code == 200
