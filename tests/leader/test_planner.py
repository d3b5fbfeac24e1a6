"""leader.planner: how many claim messages to send (pure arithmetic)."""

from __future__ import annotations

import pytest

from leader.planner import messages_to_send


@pytest.mark.parametrize(("available", "waiting", "batch", "cap", "expected"), [
    (0, 0, 8, 64, 0),
    (1, 0, 8, 64, 1),
    (17, 0, 8, 64, 3),
    (17, 2, 8, 64, 1),
    (17, 5, 8, 64, 0),
    (10_000, 0, 16, 64, 64),
    (10_000, 70, 16, 64, 0),
])
def test_planner_tops_the_queue_up_to_one_message_per_batch(available: int, waiting: int, batch: int, cap: int,
                                                            expected: int) -> None:
    assert messages_to_send(available, waiting, batch, cap) == expected
