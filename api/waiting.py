"""``?wait=``: one LISTEN connection per API process, its notifications fanned out to waiting requests.

A waiting request costs no database query while it waits: it registers an event for its conversion,
re-reads the conversion once (so a completion that committed before it registered is not missed),
and sleeps until the listener sets the event or its time is up. When the listener loses its
connection every waiter is woken to re-read, and waiters re-read every ``POLL_FALLBACK_S`` anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterator

import psycopg

from producer.wait import CHANNEL, POLL_FALLBACK_S

log = logging.getLogger("stayler.api.waiting")


class CompletionHub:
    """Conversion id → the events of the requests waiting for it, set from one listening connection."""

    def __init__(self, url: str) -> None:
        """Listen on ``url``'s completion channel once :meth:`start` runs."""
        self.url = url
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        """Start the listener task on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="stayler-api-listen")

    async def stop(self) -> None:
        """Stop the listener and wake every waiter."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._wake_all()

    @property
    def waiting(self) -> int:
        """How many requests are waiting now."""
        return sum(len(events) for events in self._waiters.values())

    @contextlib.contextmanager
    def subscribe(self, conversion_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set when ``conversion_id`` may have become terminal; unregistered on exit."""
        key = str(conversion_id)
        event = asyncio.Event()
        self._waiters[key].add(event)
        try:
            yield event
        finally:
            events = self._waiters.get(key)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiters[key]

    def _wake(self, key: str) -> None:
        for event in self._waiters.get(key, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True,
                                                                 connect_timeout=10) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    self._wake_all()  # anything may have ended while we were not listening
                    delay = 0.5
                    async for note in conn.notifies():
                        self._wake(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("completion listener lost its connection: %s", type(exc).__name__)
            self.connected.clear()
            self._wake_all()
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_FALLBACK_S)
