"""The API's completion hub behind a transaction pooler: no LISTEN, every waiter looks again on each poll."""

from __future__ import annotations

import asyncio
import uuid

from api.waiting import CompletionHub
from core.settings import Settings


def test_behind_a_pooler_the_hub_wakes_its_waiters_on_each_poll() -> None:
    url = "postgresql://nobody@127.0.0.1:9/never"  # never connected to: behind a pooler the hub only polls
    hub = CompletionHub(url, Settings(database_url=url, database_pooled=True))

    async def main() -> int:
        hub.start()
        await asyncio.wait_for(hub.connected.wait(), 10)
        wakes = 0
        with hub.subscribe(uuid.uuid4()) as event:
            for _ in range(3):
                await asyncio.wait_for(event.wait(), 10)
                event.clear()
                wakes += 1
        await hub.stop()
        return wakes

    assert asyncio.run(main()) == 3
