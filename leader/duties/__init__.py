"""The leader's duties: each a small object with a name, an interval and ``run_once``.

The leader loop (``leader.loop``) runs every duty when it is due, on the leader's connection, and
only while it holds the lease. A duty's failure is logged and retried at its next interval; it
never stops the other duties.
"""

from __future__ import annotations

from typing import Protocol

import psycopg


class Duty(Protocol):
    """One thing the fleet needs done by exactly one process at a time."""

    #: Short name for logs and for ``wakes`` of other duties.
    name: str
    #: Seconds between runs.
    interval_s: float

    def run_once(self, conn: psycopg.Connection) -> int:
        """Do one round; returns how much work it did (rows, messages, files)."""
        ...
