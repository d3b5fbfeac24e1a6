"""The fleet's dispatcher and rescuer: one active at a time, elected by an advisory lock.

Loop of the leader:
- on ``NOTIFY stayler_jobs`` (sent by a trigger on commit, whoever inserted the job: Python, CLI or
  plain SQL), top the broker queue up with claim messages;
- every ``sweep_interval_s``, and when the earliest backoff ends, do the same: this re-dispatches
  jobs whose messages Redis lost (restart, FLUSHALL);
- every ``rescue_interval_s``, put back the jobs of workers whose heartbeats stopped, and delete
  whatever files their lost attempts may have written; then remove the result folders of
  conversions that ended failed or cancelled since the last round (a lost attempt may have left
  files there that no completion will ever clean up).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dramatiq
import psycopg

from broker.messages import send_claim_messages, waiting_messages
from core.settings import Settings
from leader.gauges import QueueGauges
from leader.planner import messages_to_send
from schema.queries import Q
from storage import Storage, attempt_keys, result_prefix

log = logging.getLogger(__name__)

#: The advisory lock that elects the fleet's single dispatcher ("STAYLER1" as a bigint).
LEADER_LOCK = 0x5354_4159_4C45_5231
CHANNEL = "stayler_jobs"


@dataclass(frozen=True)
class DispatcherConfig:
    """What the dispatcher needs from the settings."""

    queue_name: str
    batch_size: int = 8
    max_waiting: int = 64
    sweep_interval_s: float = 5.0
    rescue_interval_s: float = 5.0
    rescue_after_s: float = 30.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    standby_interval_s: float = 2.0
    cleanup_lookback_s: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatcherConfig:
        """The dispatcher's part of the settings."""
        return cls(
            queue_name=settings.queue_name, batch_size=settings.claim_batch_size,
            max_waiting=max(8, 4 * settings.worker_processes * settings.worker_threads),
            sweep_interval_s=settings.sweep_interval_s, rescue_interval_s=settings.rescue_interval_s,
            rescue_after_s=settings.rescue_after_s, backoff_base_s=settings.backoff_base_s,
            backoff_max_s=settings.backoff_max_s,
        )


@dataclass
class DispatcherStats:
    """Counters a test or a metrics exporter can read."""

    dispatch_rounds: int = 0
    messages_sent: int = 0
    rescued: int = 0
    rescued_failed: int = 0
    is_leader: bool = False
    on_rescue: list[Callable[[str], None]] = field(default_factory=list)


class Dispatcher:
    """Turns queued jobs into claim messages and rescues the jobs of dead workers."""

    def __init__(self, database_url: str, broker: dramatiq.Broker, config: DispatcherConfig,
                 storage: Storage | None = None) -> None:
        """Prepare a dispatcher; nothing connects until ``run`` or ``dispatch_once``."""
        self.database_url = database_url
        self.broker = broker
        self.config = config
        self.storage = storage
        self.stats = DispatcherStats()
        self._next_run_after: float | None = None
        self._cleaned_until: datetime | None = None
        #: Set by the worker process when metrics are on: the leader refreshes the fleet's queue gauges.
        self.gauges: QueueGauges | None = None

    # -- one round of each duty (usable without leadership, e.g. from tests or the CLI) ---------

    def dispatch_once(self, conn: psycopg.Connection) -> int:
        """Send the claim messages the available jobs need; returns how many were sent."""
        cap = self.config.max_waiting * self.config.batch_size
        row = conn.execute(Q.jobs_count_available, {"cap": cap}).fetchone()
        available = int(row[0]) if row else 0
        waiting = waiting_messages(self.broker, self.config.queue_name)
        count = messages_to_send(available, waiting, self.config.batch_size, self.config.max_waiting)
        sent = send_claim_messages(self.broker, self.config.queue_name, count)
        next_row = conn.execute(Q.jobs_next_run_after).fetchone()
        self._next_run_after = _monotonic_at(next_row[0]) if next_row and next_row[0] else None
        self.stats.dispatch_rounds += 1
        self.stats.messages_sent += sent
        if sent:
            log.debug("dispatched", extra={"available": available, "waiting": waiting, "sent": sent})
        return sent

    def rescue_once(self, conn: psycopg.Connection) -> int:
        """Put back (or fail) the jobs of workers whose heartbeats stopped; returns how many."""
        rows = conn.execute(Q.jobs_rescue, {
            "stale_after_s": self.config.rescue_after_s,
            "backoff_base_s": self.config.backoff_base_s,
            "backoff_max_s": self.config.backoff_max_s,
            "limit": 1000,
        }).fetchall()
        for job_id, conversion_id, attempt, new_status in rows:
            log.warning("rescued a job from a dead worker",
                        extra={"job_id": str(job_id), "conversion_id": str(conversion_id),
                               "attempt": attempt, "new_status": new_status})
            self._delete_attempt_files(conversion_id, attempt)
            self.stats.rescued += 1
            if new_status == "failed":
                self.stats.rescued_failed += 1
            for callback in self.stats.on_rescue:
                callback(new_status)
        return len(rows)

    def clean_once(self, conn: psycopg.Connection) -> int:
        """Delete result files under conversions that ended failed or cancelled since the last round.

        A completed conversion's worker deletes the files of its earlier attempts; this covers the
        conversions that never complete, whose lost attempts may have written (part of) a result.
        Returns how many files were removed.
        """
        if self.storage is None:
            return 0
        row = conn.execute(Q.clock_now).fetchone()
        assert row is not None
        until: datetime = row[0]
        since = self._cleaned_until or until - timedelta(seconds=self.config.cleanup_lookback_s)
        removed = 0
        for (conversion_id,) in conn.execute(Q.jobs_ended_without_result_between,
                                             {"since": since, "until": until}).fetchall():
            try:
                removed += self.storage.delete_prefix(result_prefix(conversion_id))
            except Exception:  # a cleanup failure must not stop the leader
                log.exception("could not clean a finished conversion's result folder",
                              extra={"conversion_id": str(conversion_id)})
        self._cleaned_until = until
        if removed:
            log.info("removed files of attempts that never completed", extra={"files": removed})
        return removed

    def _delete_attempt_files(self, conversion_id: uuid.UUID, attempt: int) -> None:
        if self.storage is None:
            return
        for key in attempt_keys(conversion_id, attempt):
            try:
                self.storage.delete(key)
            except Exception:  # a cleanup failure must not stop the rescuer
                log.exception("could not delete a lost attempt's file", extra={"key": key})

    # -- the leader loop ---------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Stand by until elected, then lead until ``stop`` is set; reconnects on failures."""
        delay = 0.5
        while not stop.is_set():
            try:
                with psycopg.connect(self.database_url, autocommit=True) as conn:
                    delay = 0.5
                    locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
                    if not (locked and locked[0]):
                        self.stats.is_leader = False
                        stop.wait(self.config.standby_interval_s)
                        continue
                    self.stats.is_leader = True
                    log.info("dispatcher elected leader")
                    try:
                        self._lead(conn, stop)
                    finally:
                        if self.gauges is not None:
                            self.gauges.lost_leadership()
            except psycopg.Error as exc:
                self.stats.is_leader = False
                log.warning("dispatcher lost its database connection; retrying",
                            extra={"error": str(exc).strip(), "retry_in_s": delay})
                stop.wait(delay)
                delay = min(delay * 2, 10.0)
            except Exception:
                self.stats.is_leader = False
                log.exception("dispatcher round failed; retrying")
                stop.wait(delay)
                delay = min(delay * 2, 10.0)
        self.stats.is_leader = False

    def _lead(self, conn: psycopg.Connection, stop: threading.Event) -> None:
        conn.execute(f"LISTEN {CHANNEL}")
        now = time.monotonic()
        next_sweep = now
        next_rescue = now
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_rescue:
                if self.rescue_once(conn):
                    next_sweep = now  # rescued jobs are queued again: dispatch them
                self.clean_once(conn)
                next_rescue = now + self.config.rescue_interval_s
            if self.gauges is not None and self.gauges.due(now):
                self._refresh_gauges(conn)
            due = next_sweep <= now or (self._next_run_after is not None and self._next_run_after <= now)
            if due:
                self.dispatch_once(conn)
                next_sweep = now + self.config.sweep_interval_s
            wake = min(next_sweep, next_rescue, self._next_run_after or next_sweep, now + 1.0)
            notified = False
            for _ in conn.notifies(timeout=max(wake - time.monotonic(), 0.0), stop_after=1):
                notified = True
            if notified:
                # Drain whatever else arrived meanwhile: one dispatch round serves them all.
                for _ in conn.notifies(timeout=0.0):
                    pass
                self.dispatch_once(conn)

    def _refresh_gauges(self, conn: psycopg.Connection) -> None:
        assert self.gauges is not None
        try:
            self.gauges.refresh(conn)
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            # A failing gauge query must not stop dispatching; it retries at the next interval.
            log.exception("could not refresh the queue gauges")
            self.gauges.skip()


def _monotonic_at(when: datetime) -> float:
    """A database timestamp as a point on this process's monotonic clock."""
    delta = (when - datetime.now(UTC)).total_seconds()
    return time.monotonic() + max(delta, 0.0)


def start_in_thread(dispatcher: Dispatcher, stop: threading.Event) -> threading.Thread:
    """Run the dispatcher in a daemon thread of this process."""
    thread = threading.Thread(target=dispatcher.run, args=(stop,), name="stayler-dispatcher", daemon=True)
    thread.start()
    return thread
