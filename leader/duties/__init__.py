"""The leader's duties: each a ``Duty`` with a name, an interval and ``run_once``.

The leader loop (``leader.loop``) runs every duty when it is due, on the leader's connection, and
only while it holds the lease. A duty's failure is logged and retried at its next interval; it
never stops the other duties.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import psycopg


class Duty(ABC):
    """One thing the fleet needs done by exactly one process at a time.

    These are all the members the leader loop reads; a duty sets ``name`` and ``interval_s`` and
    overrides the defaults it needs.
    """

    #: Short name for logs and for ``wakes`` of other duties (unique in a loop).
    name: str
    #: Seconds between runs.
    interval_s: float
    #: Seconds a newly elected leader waits before the first run.
    initial_delay_s: float = 0.0
    #: Also run as soon as a job is queued (a NOTIFY, or every poll behind a pooler).
    on_notify: bool = False
    #: Duties to run at once after a round of this one that did some work.
    wakes: tuple[str, ...] = ()
    #: Set by a round: seconds until this duty should run again when sooner than ``interval_s`` (None: not sooner).
    wake_in_s: float | None = None

    @abstractmethod
    def run_once(self, conn: psycopg.Connection) -> int:
        """Do one round; returns how much work it did (rows, messages, files)."""

    def on_step_down(self) -> None:  # noqa: B027 (a hook: most duties keep nothing per term)
        """The leadership term ended (the next term may be another process's): forget per-term state."""
