"""Fleet-wide queue gauges, computed from PostgreSQL by the elected leader only.

Every worker process runs a standby leader, but only the lease holder refreshes these
gauges, every ``queue_stats_interval_s``, with one cheap query (``job_get_queue_stats``: partial indexes, so
its cost follows the queued/processing/recently failed jobs, not the table's history). They use
prometheus-client's ``livemostrecent`` multiprocess mode: a host's exposition shows the value the
most recent leader wrote, once, without a ``pid`` label, and a process that exits cleanly takes its
values with it. Across hosts, the exposition server drops these families once
``stayler_queue_stats_timestamp_seconds`` is older than a few refresh intervals (see
``worker.metrics``), so after a leadership change only the new leader's host exports them: one value
per fleet. Queries should still aggregate with ``max`` to cover the short overlap.

prometheus_client is imported when ``QueueGauges`` is created: in the worker process, after
``PROMETHEUS_MULTIPROC_DIR`` is set.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from schema.queries import Q

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

#: Bounded label values of ``stayler_queue_jobs_queued{priority}``.
PRIORITY_BANDS = ("low", "normal", "high")

#: The families only the leader's host exports while fresh (the exposition server filters on these).
FLEET_METRICS = frozenset({
    "stayler_queue_jobs_queued", "stayler_queue_jobs_available", "stayler_queue_jobs_scheduled",
    "stayler_queue_oldest_available_age_seconds",
    "stayler_queue_jobs_processing", "stayler_queue_jobs_failed_last_hour", "stayler_queue_workers_alive",
    "stayler_queue_stats_timestamp_seconds", "stayler_queue_stats_duration_seconds",
    "stayler_fair_jobs_queued", "stayler_fair_jobs_processing", "stayler_fair_owners_throttled",
})
#: The gauge whose age decides whether a host still exports the fleet families.
TIMESTAMP_METRIC = "stayler_queue_stats_timestamp_seconds"


@dataclass(frozen=True)
class QueueSnapshot:
    """One reading of the queue, as the ``job_get_queue_stats`` query returns it."""

    as_of: datetime
    queued_by_priority: dict[str, int]
    available: int
    scheduled: int
    oldest_available_age_s: float
    processing: int
    failed_last_hour: dict[str, int]
    workers_alive: int
    cancelled: dict[str, int] = field(default_factory=dict)


def read_snapshot(conn: psycopg.Connection, *, alive_within_s: float, cancelled_since: datetime | None
                  ) -> QueueSnapshot:
    """Read the queue's state; ``cancelled`` counts cancellations in (``cancelled_since``, ``as_of``]."""
    row = conn.execute(Q.job_get_queue_stats, {"alive_within_s": alive_within_s}).fetchone()
    if row is None:  # pragma: no cover - the query always returns one row
        raise RuntimeError("job_get_queue_stats returned no row")
    as_of, queued, available, scheduled, oldest, processing, failed, alive = row
    cancelled: dict[str, int] = {}
    if cancelled_since is not None:
        rows = conn.execute(Q.job_count_cancelled_between, {"since": cancelled_since, "until": as_of}).fetchall()
        cancelled = {str(kind): int(n) for kind, n in rows}
    return QueueSnapshot(
        as_of=as_of, queued_by_priority={str(k): int(v) for k, v in (queued or {}).items()},
        available=int(available), scheduled=int(scheduled), oldest_available_age_s=float(oldest or 0.0),
        processing=int(processing),
        failed_last_hour={str(k): int(v) for k, v in (failed or {}).items()}, workers_alive=int(alive),
        cancelled=cancelled,
    )


class QueueGauges:
    """The fleet gauges and the cancellation counter, refreshed by the leader."""

    def __init__(self, *, interval_s: float = 10.0, alive_within_s: float = 30.0,
                 registry: CollectorRegistry | None = None) -> None:
        """Define the metrics (import prometheus_client only now: after the multiprocess env is set)."""
        from prometheus_client import CollectorRegistry, Counter, Gauge

        reg = registry if registry is not None else CollectorRegistry()
        mode: Any = "livemostrecent"
        self.interval_s = interval_s
        self.alive_within_s = alive_within_s
        self.queued = Gauge("stayler_queue_jobs_queued", "Jobs in status queued (including those in backoff), "
                            "by priority band.", ["priority"], registry=reg, multiprocess_mode=mode)
        self.available = Gauge("stayler_queue_jobs_available", "Queued jobs claimable now (backoff over).",
                               registry=reg, multiprocess_mode=mode)
        self.scheduled = Gauge("stayler_queue_jobs_scheduled", "Queued jobs waiting for their retry backoff.",
                               registry=reg, multiprocess_mode=mode)
        self.oldest_age = Gauge("stayler_queue_oldest_available_age_seconds",
                                "How long the oldest claimable job has waited since it became claimable "
                                "(0 when none).", registry=reg, multiprocess_mode=mode)
        self.processing = Gauge("stayler_queue_jobs_processing", "Jobs in status processing.",
                                registry=reg, multiprocess_mode=mode)
        self.failed = Gauge("stayler_queue_jobs_failed_last_hour", "Jobs that ended failed in the last hour, by "
                            "error type.", ["error_type"], registry=reg, multiprocess_mode=mode)
        self.workers_alive = Gauge("stayler_queue_workers_alive", "Worker processes in the registry whose "
                                   "heartbeat is recent.", registry=reg, multiprocess_mode=mode)
        self.timestamp = Gauge(TIMESTAMP_METRIC, "When the leader last refreshed the queue gauges (Unix time).",
                               registry=reg, multiprocess_mode=mode)
        self.duration = Gauge("stayler_queue_stats_duration_seconds", "Time the last queue_stats refresh took.",
                              registry=reg, multiprocess_mode=mode)
        self.cancelled = Counter("stayler_jobs_cancelled_total", "Jobs cancelled (counted by the leader from the "
                                 "database), by conversion type.", ["conversion_type"], registry=reg)
        self._seen_types: set[str] = set()
        self._seen_errors: set[str] = set()
        self._cancelled_since: datetime | None = None
        self._next_at = 0.0

    def due(self, now: float | None = None) -> bool:
        """Whether a refresh is due (monotonic clock)."""
        return (time.monotonic() if now is None else now) >= self._next_at

    def refresh(self, conn: psycopg.Connection) -> QueueSnapshot:
        """Read the queue and publish it; the first call of a leadership term only starts the counter."""
        t0 = time.perf_counter()
        snap = read_snapshot(conn, alive_within_s=self.alive_within_s, cancelled_since=self._cancelled_since)
        self.publish(snap, duration_s=time.perf_counter() - t0)
        self._cancelled_since = snap.as_of
        self._next_at = time.monotonic() + self.interval_s
        return snap

    def publish(self, snap: QueueSnapshot, *, duration_s: float = 0.0) -> None:
        """Set the gauges from a snapshot (every priority band and every error type seen, so none goes stale)."""
        for band in PRIORITY_BANDS:
            self.queued.labels(band).set(snap.queued_by_priority.get(band, 0))
        self.available.set(snap.available)
        self.scheduled.set(snap.scheduled)
        self.oldest_age.set(snap.oldest_available_age_s)
        self.processing.set(snap.processing)
        self._seen_errors.update(snap.failed_last_hour)
        for error_type in self._seen_errors:
            self.failed.labels(error_type).set(snap.failed_last_hour.get(error_type, 0))
        self.workers_alive.set(snap.workers_alive)
        for kind, count in snap.cancelled.items():
            self.cancelled.labels(kind).inc(count)
        self.duration.set(duration_s)
        self.timestamp.set(time.time())

    def skip(self) -> None:
        """After a failed refresh: try again one interval later, with a fresh counter window."""
        self._cancelled_since = None
        self._next_at = time.monotonic() + self.interval_s

    def lost_leadership(self) -> None:
        """Forget the counter's window: the next leader term starts counting afresh."""
        self._cancelled_since = None
        self._next_at = 0.0
