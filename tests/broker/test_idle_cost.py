"""An idle worker process blocks on Redis instead of polling it, and still picks a message up at once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.broker.idle_cost import measure
from tests.reliability.servers import ThrowawayRedis


@pytest.fixture(scope="module")
def private_redis() -> Iterator[str]:
    """A redis-server of this module's own, so its command counters hold only our worker's commands."""
    server = ThrowawayRedis()
    server.start()
    yield server.url
    server.stop()


def test_an_idle_worker_process_sends_few_redis_commands_and_picks_up_at_once(private_redis: str) -> None:
    cost = measure(private_redis, "blocking", idle_s=5.0, messages=5)
    print(cost.line())
    assert cost.commands_per_s <= 20
    assert cost.cpu_share <= 0.02  # the budget is 1 %; twice that absorbs a busy shared test machine
    assert len(cost.latencies_ms) == 5
    # Messages sent after 1.5 s of idleness (the consumers deep in their blocking wait).
    assert sorted(cost.latencies_ms)[2] < 15 and max(cost.latencies_ms) < 100
