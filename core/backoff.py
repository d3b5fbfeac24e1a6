"""One back-off policy for everything that waits before trying again.

A :class:`Backoff` names the delays between attempts: the first delay, how it grows (doubling by
default, or by the first delay each time with ``linear=True``), its cap, and how much of each
delay is random (``jitter``: 0 waits exactly the delay; 0.5 waits between half of it and all of it,
"equal jitter"; 1 waits anywhere between nothing and all of it, "full jitter"). Jitter keeps a fleet
that lost the same server from coming back in step.

The policy is a value; a loop takes a fresh iterator of delays (:meth:`Backoff.delays`) when it
starts and again after each success, and asks it for the next delay after each failure::

    delays = RECONNECT.delays()
    while True:
        try:
            ...
            delays = RECONNECT.delays()   # success: the next failure waits the first delay again
        except OSError:
            time.sleep(next(delays))
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delays ``first_s``, then ``first_s`` × ``factor``ⁿ (or × (n+1) when ``linear``), capped at ``max_s``."""

    first_s: float
    max_s: float
    factor: float = 2.0
    linear: bool = False
    jitter: float = 0.0

    def __post_init__(self) -> None:
        """Refuse a policy whose delays would not make sense."""
        if self.first_s < 0 or self.max_s < self.first_s:
            raise ValueError(f"need 0 <= first_s <= max_s, got {self.first_s} and {self.max_s}")
        if self.factor < 1:
            raise ValueError(f"factor must be at least 1, got {self.factor}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter}")

    def nominal(self, attempt: int) -> float:
        """The delay before retry number ``attempt`` (0 for the first), without jitter."""
        if self.linear:
            return min(self.max_s, self.first_s * (attempt + 1))
        try:
            return min(self.max_s, self.first_s * self.factor ** max(0, attempt))
        except OverflowError:
            return self.max_s

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """The delay before retry number ``attempt``, with this policy's jitter (``rng`` in [0, 1))."""
        nominal = self.nominal(attempt)
        if not self.jitter:
            return nominal
        return nominal * (1.0 - self.jitter + self.jitter * rng())

    def delays(self, rng: Callable[[], float] = random.random) -> Iterator[float]:
        """The delays of one run of failures, first to last (endless: the caller decides when to give up)."""
        attempt = 0
        while True:
            yield self.delay(attempt, rng)
            attempt += 1


#: Reconnecting to the database after a statement failed on a broken connection (the queue door):
#: 50 ms, doubling, at most 1 s between tries, within the caller's own retry budget.
RECONNECT = Backoff(first_s=0.05, max_s=1.0)
#: Running a statement again after a lock conflict (serialization failure, deadlock): a short,
#: growing and mostly random pause (a tenth to all of 50 ms × the attempt), so the two sides do not collide again.
LOCK_CONFLICT = Backoff(first_s=0.05, max_s=0.4, linear=True, jitter=0.9)
