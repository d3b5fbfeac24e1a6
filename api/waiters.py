"""``?wait=`` admission and the wait itself: capped per process and per key, ended by the client leaving.

A waiter costs no query while it waits: it reads the conversion once, then sleeps until the
process's one listener (``api.waiting.CompletionHub``) says that conversion may have ended, its time
is up, or its client hangs up. Only while the listener has no connection does a waiter re-read
every ``POLL_FALLBACK_S`` (a fault, not the normal path).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from starlette.requests import Request

from api.problems import Problem
from api.waiting import CompletionHub
from producer.wait import POLL_FALLBACK_S
from schema.statuses import TERMINAL

RETRY_AFTER_S = 1


class WaiterLimits:
    """How many ``?wait=`` requests this process holds, in all and per API key."""

    def __init__(self, max_total: int, max_per_key: int) -> None:
        """At most ``max_total`` waiters, ``max_per_key`` of them for one key."""
        self.max_total = max_total
        self.max_per_key = max_per_key
        self.total = 0
        self.by_key: Counter[uuid.UUID] = Counter()

    @contextlib.contextmanager
    def admit(self, key_id: uuid.UUID) -> Iterator[None]:
        """Hold a place for the block, or raise 429 ``too_many_waiters`` with ``Retry-After``."""
        if self.total >= self.max_total or self.by_key[key_id] >= self.max_per_key:
            which = "this API process" if self.total >= self.max_total else "this key"
            raise Problem("too_many_waiters", f"{which} already holds as many ?wait= requests as it may; "
                          "retry later or without wait", headers={"Retry-After": str(RETRY_AFTER_S)})
        self.total += 1
        self.by_key[key_id] += 1
        try:
            yield
        finally:
            self.total -= 1
            self.by_key[key_id] -= 1
            if self.by_key[key_id] <= 0:
                del self.by_key[key_id]


async def _disconnected(request: Request) -> None:
    """Return when the client has gone (a GET's body is empty, so the next message is the hang-up)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def wait_for_end(request: Request, hub: CompletionHub, conversion_id: uuid.UUID, seconds: float,
                       read: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any] | None:
    """The conversion once it is terminal or ``seconds`` have passed; None when the client left first."""
    deadline = time.monotonic() + seconds
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        with hub.subscribe(conversion_id) as changed:
            row = await read()
            while row["status"] not in TERMINAL:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                timeout = remaining if hub.connected.is_set() else min(remaining, POLL_FALLBACK_S)
                woken = asyncio.ensure_future(changed.wait())
                try:
                    await asyncio.wait({woken, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
                if gone.done():
                    return None
                if changed.is_set() or not hub.connected.is_set():  # told, or polling without a listener
                    changed.clear()
                    row = await read()
            return row
    finally:
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await gone
