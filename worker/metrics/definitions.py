"""The worker's metric definitions and the cheap recording helpers the worker calls.

The metrics are created in ``after_process_boot``, in the worker process, after
``PROMETHEUS_MULTIPROC_DIR`` is set. Recording helpers are no-ops before that (unit tests that run a
``BatchPipeline`` without a fleet). Nothing here queries the database: the queue gauges come from
the elected leader (``leader.queue_gauges``).

Labels are bounded: ``conversion_type`` (free, paid), ``error_type`` (``worker.errors.ERROR_TYPES``),
``stage`` (read … database), ``outcome``; never user, vendor, job or worker ids.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from leader.queue_gauges import QueueGauges
from schema.statuses import JobStatus

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from worker.batch import BatchReport
    from worker.config import WorkerSettings
    from worker.jobs import Claim

#: Stages timed per job (the model's; ``inference`` is the batched call the job was part of).
JOB_STAGES = ("decode", "preprocess", "inference", "postprocess", "encode")
#: Stages timed per claimed batch.
BATCH_STAGES = ("read", "store", "database")
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
END_TO_END_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                      1800.0, 3600.0)
BATCH_SIZE_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)
#: Fleet gauges older than this many refresh intervals are not exported (the leader moved or died).
STALE_INTERVALS = 3.0


class WorkerMetrics:
    """The worker process's metric objects."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Define every worker metric (call after ``enable_multiprocess``)."""
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        reg = registry if registry is not None else CollectorRegistry()
        self.claimed = Counter("stayler_jobs_claimed_total", "Jobs claimed by workers.", ["conversion_type"],
                               registry=reg)
        self.completed = Counter("stayler_jobs_completed_total", "Jobs completed with a result.",
                                 ["conversion_type"], registry=reg)
        self.failed = Counter("stayler_jobs_failed_total", "Jobs failed for good (no retry left, or permanent).",
                              ["conversion_type", "error_type"], registry=reg)
        self.retried = Counter("stayler_jobs_retried_total", "Failed attempts put back in the queue with backoff.",
                               ["conversion_type", "error_type"], registry=reg)
        self.dropped = Counter("stayler_jobs_dropped_total", "Attempts abandoned because the claim was lost while "
                               "processing (cancelled or rescued meanwhile); their output is discarded.",
                               ["conversion_type"], registry=reg)
        self.rescued = Counter("stayler_jobs_rescued_total", "Jobs taken back from workers whose heartbeat stopped "
                               "(error_type worker_lost), by what became of them (queued again or failed).",
                               ["outcome"], registry=reg)
        self.stage = Histogram("stayler_stage_duration_seconds", "Time per pipeline stage: per job for decode, "
                               "preprocess, inference (its batched call), postprocess, encode; per claimed batch "
                               "for read, store, database.", ["stage"], buckets=STAGE_BUCKETS, registry=reg)
        self.end_to_end = Histogram("stayler_job_end_to_end_seconds", "From enqueue (job created) to the job's "
                                    "final outcome in this worker, retries included.", ["conversion_type", "outcome"],
                                    buckets=END_TO_END_BUCKETS, registry=reg)
        self.batch_size = Histogram("stayler_claim_batch_size", "Jobs per claim (0 = a message found no work).",
                                    buckets=BATCH_SIZE_BUCKETS, registry=reg)
        self.in_flight = Gauge("stayler_jobs_in_flight", "Jobs held (claimed, not finalised) by worker processes.",
                               registry=reg, multiprocess_mode="livesum")
        self.processes = Gauge("stayler_worker_processes", "Worker processes running (booted, not shut down).",
                               registry=reg, multiprocess_mode="livesum")
        self.threads = Gauge("stayler_worker_threads", "Worker threads (concurrent batches) of running processes.",
                             registry=reg, multiprocess_mode="livesum")
        self.heartbeat = Gauge("stayler_worker_last_heartbeat_timestamp_seconds", "Last successful heartbeat of "
                               "the host's stalest live worker process (Unix time).", registry=reg,
                               multiprocess_mode="livemin")
        self.service_up = Gauge("stayler_service_up", "Whether the host's worker processes reach each shared "
                                "service (database, storage, redis): 1 up, 0 down (the lowest of the host's "
                                "processes); while database or storage is down they claim nothing.", ["service"],
                                registry=reg, multiprocess_mode="livemin")
        self.released = Counter("stayler_jobs_released_total", "Jobs handed back uncharged because a shared service "
                                "was down (they run again; no retry is spent).", ["conversion_type"], registry=reg)
        self.model_info = Gauge("stayler_model_info", "The model the workers run (value 1).",
                                ["model", "version", "provider"], registry=reg, multiprocess_mode="livemax")


_METRICS: WorkerMetrics | None = None


def current() -> WorkerMetrics | None:
    """This process's metrics, or None before boot."""
    return _METRICS


def install(metrics: WorkerMetrics | None) -> None:
    """Make ``metrics`` this process's metrics (tests; the middleware does it at boot)."""
    global _METRICS
    _METRICS = metrics


def record_claim(claims: Sequence[Claim]) -> None:
    """A claim returned ``claims`` (possibly none)."""
    m = _METRICS
    if m is None:
        return
    m.batch_size.observe(len(claims))
    for claim in claims:
        m.claimed.labels(claim.conversion_type).inc()


def record_batch(report: BatchReport, now: float | None = None) -> None:
    """Count each job's outcome and observe stage and end-to-end times of a processed batch."""
    m = _METRICS
    if m is None:
        return
    now = time.time() if now is None else now
    for job in report.jobs:
        kind = job.claim.conversion_type
        error_type = job.error_type or "internal"
        if job.outcome == JobStatus.COMPLETED:
            m.completed.labels(kind).inc()
        elif job.outcome == JobStatus.FAILED:
            m.failed.labels(kind, error_type).inc()
        elif job.outcome == "retried":
            m.retried.labels(kind, error_type).inc()
        elif job.outcome == "dropped":
            m.dropped.labels(kind).inc()
        elif job.outcome == "released":
            m.released.labels(kind).inc()
        if job.outcome in (JobStatus.COMPLETED, JobStatus.FAILED):
            waited = max(now - job.claim.enqueued_at.timestamp(), 0.0)
            m.end_to_end.labels(kind, job.outcome).observe(waited)
    for timings in report.item_stage_seconds:
        for stage in JOB_STAGES:
            if stage in timings:
                m.stage.labels(stage).observe(timings[stage])
    stage_seconds = report.stage_seconds
    for stage in BATCH_STAGES:
        if stage in stage_seconds:
            m.stage.labels(stage).observe(stage_seconds[stage])


def record_rescue(new_status: str) -> None:
    """The leader rescued a job of a dead worker (``DispatcherStats.on_rescue`` callback)."""
    if _METRICS is not None:
        _METRICS.rescued.labels(JobStatus.FAILED if new_status == JobStatus.FAILED else JobStatus.QUEUED).inc()


def record_heartbeat(at: float | None = None) -> None:
    """This process's heartbeat succeeded."""
    if _METRICS is not None:
        _METRICS.heartbeat.set(time.time() if at is None else at)


def set_service_up(service: str, up: bool) -> None:
    """This process finds ``service`` up or down (``worker.health``)."""
    if _METRICS is not None:
        _METRICS.service_up.labels(service).set(1 if up else 0)


def set_in_flight(count: int) -> None:
    """How many claims this process holds now."""
    if _METRICS is not None:
        _METRICS.in_flight.set(count)


def record_boot(*, model: str, version: str, providers: Sequence[str], threads: int) -> None:
    """The process booted with this model on these execution providers."""
    m = _METRICS
    if m is None:
        return
    m.model_info.labels(model, version, providers[0] if providers else "none").set(1)
    m.processes.set(1)
    for service in ("database", "storage", "redis"):
        m.service_up.labels(service).set(1)
    m.threads.set(threads)
    m.heartbeat.set(time.time())


def queue_gauges(settings: WorkerSettings) -> QueueGauges | None:
    """The fleet gauges for this process's standby leader, when metrics are on."""
    if _METRICS is None:
        return None
    return QueueGauges(interval_s=settings.queue_stats_interval_s, alive_within_s=settings.rescue_after_s)
