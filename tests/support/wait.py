"""Waiting for a condition: poll it, count the polls, fail with a description and logs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, env: Callable[[], str] | Any = None,
             interval: float = 0.1) -> Any:
    """Poll until ``predicate()`` is truthy and return its value; fail after ``timeout`` seconds.

    The timeout is a ceiling for a hung run, never a measurement: tests assert on what the condition
    reports (counts, rows, events), not on how long it took. ``logs`` is a callable (or an object with
    ``logs()``, such as a fleet :class:`~tests.support.fleet.Env`) whose text joins the failure message.
    """
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        value = predicate()
        polls += 1
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    text = ""
    if env is not None:
        text = env.logs() if hasattr(env, "logs") else env()
    raise AssertionError(f"timed out after {timeout} s ({polls} polls) waiting for {what}\n{text}")


def wait_until_true(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; returns whether it held (never raises)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
