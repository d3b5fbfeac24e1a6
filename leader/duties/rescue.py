"""Rescue: take back the jobs of workers whose heartbeats stopped, and end jobs that can never run.

- A processing job whose heartbeat is older than ``rescue_after_s`` goes back to the queue
  (``jobs_rescue``: the first loss is free and marks the job suspect, later ones count; each job
  is handled on its own, so one bad row never stops the round).
- A queued job whose conversion already ended is ended (``jobs_end_orphaned``).
- Registry rows of workers whose heartbeat stopped are marked stopped.

A newly elected leader waits ``rescue_after_s`` before its first round: after an outage the
workers' heartbeats need that long to catch up, and rescuing earlier would charge live workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg

from leader.duties import Duty
from schema.queries import Q
from schema.statuses import JobStatus

log = logging.getLogger(__name__)


class RescueDuty(Duty):
    """Puts back or ends the jobs of dead workers."""

    name = "rescue"
    wakes = ("clean", "dispatch")

    def __init__(self, *, rescue_after_s: float, interval_s: float, backoff_base_s: float, backoff_max_s: float,
                 on_rescue: Callable[[str], None] | None = None, limit: int = 1000) -> None:
        """Rescue claims older than ``rescue_after_s``, every ``interval_s``."""
        self.rescue_after_s = rescue_after_s
        self.interval_s = interval_s
        self.initial_delay_s = rescue_after_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.on_rescue = on_rescue
        self.limit = limit
        self.rescued = 0
        self.rescued_failed = 0
        self.errors = 0

    def run_once(self, conn: psycopg.Connection) -> int:
        """One round; returns the jobs rescued or ended."""
        rows = conn.execute(Q.jobs_rescue, {
            "stale_after_s": self.rescue_after_s, "backoff_base_s": self.backoff_base_s,
            "backoff_max_s": self.backoff_max_s, "limit": self.limit,
        }).fetchall()
        done = 0
        for job_id, conversion_id, attempt, new_status, error in rows:
            extra = {"job_id": str(job_id), "conversion_id": str(conversion_id), "attempt": attempt,
                     "new_status": new_status}
            if new_status == "error":
                self.errors += 1
                log.error("could not rescue a job; the others went on", extra={**extra, "error": error})
                continue
            done += 1
            log.warning("rescued a job from a dead worker", extra=extra)
            self.rescued += 1
            if new_status == JobStatus.FAILED:
                self.rescued_failed += 1
            if self.on_rescue is not None:
                self.on_rescue(new_status)
        for job_id, conversion_id, new_status in conn.execute(Q.jobs_end_orphaned, {"limit": self.limit}).fetchall():
            done += 1
            log.warning("ended a job whose conversion had already ended",
                        extra={"job_id": str(job_id), "conversion_id": str(conversion_id), "new_status": new_status})
        conn.execute(Q.workers_mark_stopped, {"stale_after_s": self.rescue_after_s})
        return done
