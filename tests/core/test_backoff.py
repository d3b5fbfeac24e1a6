"""core.backoff: the delays of one policy, and the queue door's retries keep their old delays."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from core.backoff import LOCK_CONFLICT, RECONNECT, Backoff


def take(backoff: Backoff, n: int, rng=random.random) -> list[float]:
    return list(itertools.islice(backoff.delays(rng), n))


def test_exponential_delays_double_up_to_the_cap() -> None:
    assert take(Backoff(first_s=0.5, max_s=2.0), 5) == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert take(Backoff(first_s=1.0, max_s=1.0), 3) == [1.0, 1.0, 1.0]  # a constant pause
    assert take(Backoff(first_s=0.1, max_s=10.0, factor=3.0), 3) == pytest.approx([0.1, 0.3, 0.9])


def test_linear_delays_grow_by_the_first_delay() -> None:
    assert take(Backoff(first_s=0.05, max_s=0.12, linear=True), 4) == pytest.approx([0.05, 0.1, 0.12, 0.12])


def test_a_long_run_of_failures_stays_at_the_cap() -> None:
    assert Backoff(first_s=0.5, max_s=2.0).nominal(10_000) == 2.0


def test_jitter_keeps_each_delay_within_its_share_of_the_nominal_delay() -> None:
    equal = Backoff(first_s=1.0, max_s=8.0, jitter=0.5)
    assert [equal.delay(2, rng=lambda: 0.0), equal.delay(2, rng=lambda: 0.999999)] == pytest.approx([2.0, 4.0])
    full = Backoff(first_s=1.0, max_s=8.0, jitter=1.0)
    assert full.delay(0, rng=lambda: 0.0) == 0.0
    rng = random.Random(7)
    delays = [equal.delay(3, rng.random) for _ in range(1000)]
    assert min(delays) >= 4.0 and max(delays) <= 8.0 and len(set(delays)) > 900  # spread, not in step


def test_each_run_of_failures_starts_from_the_first_delay() -> None:
    delays = RECONNECT.delays()
    assert [next(delays), next(delays)] == [0.05, 0.1]
    assert next(RECONNECT.delays()) == 0.05


@pytest.mark.parametrize("kwargs", [{"first_s": -1.0, "max_s": 1.0}, {"first_s": 2.0, "max_s": 1.0},
                                    {"first_s": 1.0, "max_s": 2.0, "factor": 0.5},
                                    {"first_s": 1.0, "max_s": 2.0, "jitter": 1.5}])
def test_a_policy_that_makes_no_sense_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_the_queue_door_keeps_its_delays() -> None:
    """The values of the loops they replaced in worker/jobqueue.py: same delays, same randomness."""
    assert take(RECONNECT, 7) == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]  # was: 0.05, doubled, min(…, 1.0)
    ours, theirs = random.Random(3), random.Random(3)
    for attempt in range(7):  # was: random.uniform(0.005, 0.05) * (attempt + 1)
        assert LOCK_CONFLICT.delay(attempt, ours.random) == pytest.approx(theirs.uniform(0.005, 0.05) * (attempt + 1))
