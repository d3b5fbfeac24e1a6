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
    # The old 10 ms poll sent hundreds of commands/s; the speed budgets themselves live in `stayler bench idle`.
    assert cost.commands_per_s <= 20
    assert cost.cpu_share <= 0.05
    assert len(cost.latencies_ms) == 5
    # Messages sent after 1.5 s of idleness, the consumers deep in their blocking wait. Without a wake
    # token each would wait for the 1 s idle timeout (uniform over 0–1000 ms); with one they start at once.
    # The bounds tell the two apart on a loaded machine, they are not a latency target.
    assert sorted(cost.latencies_ms)[2] < 150 and max(cost.latencies_ms) < 500
