"""``?wait=``: one LISTEN connection per API process, its notifications fanned out to waiting requests.

A waiting request costs no database query while it waits: it registers an event for its conversion,
re-reads the conversion once (so a completion that committed before it registered is not missed),
and sleeps until the listener sets the event or its time is up. When the listener loses its
connection every waiter is woken to re-read, and waiters re-read every ``POLL_FALLBACK_S`` anyway.
Behind a transaction pooler (no LISTEN there, :mod:`schema.listen`) the listener wakes every
waiter every ``schema.listen.POOLED_POLL_S`` to re-read instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Iterator

from core.backoff import Backoff
from core.settings import Settings
from producer.wait import POLL_FALLBACK_S
from schema import channels
from schema.listen import AsyncListener, akeep_listening

#: Waits before the listener connects again: 0.5 s, doubling, at most the waiters' own fallback.
RECONNECT = Backoff(first_s=0.5, max_s=POLL_FALLBACK_S)


class CompletionHub:
    """Conversion id → the events of the requests waiting for it, set from one listening connection."""

    def __init__(self, url: str, settings: Settings) -> None:
        """Listen on ``url``'s completion channel (or its direct URL) once :meth:`start` runs."""
        self.url = url
        self.settings = settings
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
        await akeep_listening(self.settings, "api", (channels.CONVERSION_DONE,), self._serve, backoff=RECONNECT,
                              url=self.url, on_lost=self._lost)

    async def _serve(self, listener: AsyncListener) -> None:
        self.connected.set()
        self._wake_all()  # anything may have ended while we were not listening
        async for payload in listener.heard():
            if payload is None:
                self._wake_all()  # polling behind a pooler: every waiter looks again
            else:
                self._wake(payload)

    def _lost(self) -> None:
        self.connected.clear()
        self._wake_all()
