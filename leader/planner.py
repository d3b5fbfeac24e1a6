"""How many claim messages to send: pure arithmetic, kept apart so it is easy to test."""

from __future__ import annotations

import math


def messages_to_send(available: int, waiting: int, batch_size: int, max_waiting: int) -> int:
    """Top the broker queue up to one message per ``batch_size`` available jobs, at most ``max_waiting``.

    Workers chain a follow-up message after every full batch, so the queue only needs enough
    messages to wake the fleet; more would just be no-ops.
    """
    if available <= 0:
        return 0
    wanted = min(math.ceil(available / max(batch_size, 1)), max_waiting)
    return max(0, wanted - max(waiting, 0))
