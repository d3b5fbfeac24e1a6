"""Dispatch: make due scheduled jobs ready, and top the broker up with "claim work" messages.

Runs on every NOTIFY (a job became queued), every ``sweep_interval_s`` (which re-dispatches jobs
whose messages Redis lost), and when the next scheduled job becomes due. All timing comes from
the database's clock: a host whose clock is off by seconds dispatches exactly as often.
"""

from __future__ import annotations

import logging

import dramatiq
import psycopg

from broker.messages import send_claim_messages, waiting_messages
from leader.duties import Duty
from leader.planner import messages_to_send
from schema.queries import Q

log = logging.getLogger(__name__)

#: Most scheduled jobs made ready in one round.
PROMOTE_LIMIT = 10_000


class DispatchDuty(Duty):
    """Turns ready jobs into claim messages."""

    name = "dispatch"
    on_notify = True

    def __init__(self, broker: dramatiq.Broker, queue_name: str, *, batch_size: int, max_waiting: int,
                 interval_s: float) -> None:
        """Send at most ``max_waiting`` messages' worth of work, each for ``batch_size`` jobs."""
        self.broker = broker
        self.queue_name = queue_name
        self.batch_size = batch_size
        self.max_waiting = max_waiting
        self.interval_s = interval_s
        #: Seconds until the next scheduled job is due, by the database's clock (None: none waits).
        self.wake_in_s: float | None = None
        self.rounds = 0
        self.messages_sent = 0

    def run_once(self, conn: psycopg.Connection) -> int:
        """One round; returns the messages sent."""
        conn.execute(Q.jobs_promote_scheduled, {"limit": PROMOTE_LIMIT})
        conn.execute(Q.jobs_stamp_unowned, {"limit": PROMOTE_LIMIT})
        paused = conn.execute(Q.fleet_control_get_paused).fetchone()
        if paused is not None and paused[0]:  # an operator paused dispatch (the console, fleet_controls)
            sent = 0
        else:
            row = conn.execute(Q.job_count_ready, {"cap": self.max_waiting * self.batch_size}).fetchone()
            ready = int(row[0]) if row else 0
            waiting = waiting_messages(self.broker, self.queue_name)
            count = messages_to_send(ready, waiting, self.batch_size, self.max_waiting)
            sent = send_claim_messages(self.broker, self.queue_name, count)
        row = conn.execute(Q.job_get_next_scheduled_in).fetchone()
        self.wake_in_s = max(float(row[0]), 0.0) if row and row[0] is not None else None
        self.rounds += 1
        self.messages_sent += sent
        if sent:
            log.debug("dispatched", extra={"ready": ready, "waiting": waiting, "sent": sent})
        return sent
