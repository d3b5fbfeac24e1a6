"""Prometheus metrics of the worker fleet: definitions, recording helpers, and the per-host endpoint.

prometheus-client multiprocess mode: every worker process writes its metrics to memory-mapped files
in one folder per host (``STAYLER_METRICS_DIR``, default ``$TMPDIR/stayler-metrics-<port>``), and one
extra process that Dramatiq forks (``serve_metrics``) merges them on each scrape of
``http://<host>:<STAYLER_METRICS_PORT>/metrics``. The first worker process of a fleet wipes the
folder (Dramatiq's own Prometheus middleware never does), so counters start at zero with the fleet.

The metrics are created in ``after_process_boot``, in the worker process, after
``PROMETHEUS_MULTIPROC_DIR`` is set. Recording helpers are no-ops before that (unit tests that run a
``BatchProcessor`` without a fleet). Nothing here queries the database: the queue gauges come from
the elected dispatcher (``dispatcher.gauges``).

Labels are bounded: ``conversion_type`` (free, paid), ``error_type`` (``worker.errors.ERROR_TYPES``),
``stage`` (read … database), ``outcome``; never user, vendor, job or worker ids.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.middleware import Middleware

from core.settings import Settings, get_settings
from leader.gauges import FLEET_METRICS, TIMESTAMP_METRIC, QueueGauges

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from worker.claims import Claim
    from worker.pipeline import BatchReport

log = logging.getLogger(__name__)

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


def metrics_dir(settings: Settings) -> Path:
    """The host's multiprocess folder: ``metrics_dir``, or one per port under the temp folder."""
    if settings.metrics_dir is not None:
        return settings.metrics_dir.expanduser().resolve()
    return Path(tempfile.gettempdir()) / f"stayler-metrics-{settings.metrics_port}"


def fleet_id() -> str:
    """Identifies this fleet run: the Dramatiq main process (pid and start time) on this boot."""
    ppid = os.getppid()
    parts = [socket.gethostname(), str(ppid)]
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{ppid}/stat").read_text()
        parts.append(stat.rsplit(")", 1)[1].split()[19])  # field 22: start time in clock ticks
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    return ":".join(parts)


def prepare_dir(path: Path, fleet: str) -> bool:
    """Create ``path`` and wipe it if another fleet wrote it; True if this call wiped it.

    Every worker process calls this at boot under an exclusive lock; only the first of a fleet
    finds a marker from another fleet (or none) and wipes the old ``.db`` files.
    """
    path.mkdir(parents=True, exist_ok=True)
    marker = path / ".fleet"
    with (path / ".lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == fleet:
            return False
        for old in path.glob("*.db"):
            old.unlink(missing_ok=True)
        marker.write_text(fleet)
        return True


def enable_multiprocess(path: Path) -> None:
    """Point prometheus_client at ``path`` for metrics created from now on in this process."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # in case prometheus_client was imported earlier


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


# -- recording (cheap: in-memory increments, no database access) ------------------------------

def record_claim(claims: Sequence[Claim]) -> None:
    """A claim returned ``claims`` (possibly none)."""
    m = _METRICS
    if m is None:
        return
    m.batch_size.observe(len(claims))
    for claim in claims:
        m.claimed.labels(claim.conversion_type).inc()


def record_batch(claims: Sequence[Claim], report: BatchReport, now: float | None = None) -> None:
    """Count each job's outcome and observe stage and end-to-end times of a processed batch."""
    m = _METRICS
    if m is None:
        return
    now = time.time() if now is None else now
    by_id = {c.job_id: c for c in claims}

    def end_to_end(job_id: Any, outcome: str) -> None:
        claim = by_id.get(job_id)
        if claim is not None:
            m.end_to_end.labels(claim.conversion_type, outcome).observe(max(now - claim.enqueued_at.timestamp(), 0.0))

    for job_id in report.completed:
        kind = _type_of(by_id, job_id)
        m.completed.labels(kind).inc()
        end_to_end(job_id, "completed")
    for job_id in report.failed:
        m.failed.labels(_type_of(by_id, job_id), report.error_types.get(job_id, "internal")).inc()
        end_to_end(job_id, "failed")
    for job_id in report.retried:
        m.retried.labels(_type_of(by_id, job_id), report.error_types.get(job_id, "internal")).inc()
    for job_id in report.dropped:
        m.dropped.labels(_type_of(by_id, job_id)).inc()
    for timings in report.item_stage_seconds:
        for stage in JOB_STAGES:
            if stage in timings:
                m.stage.labels(stage).observe(timings[stage])
    for stage in BATCH_STAGES:
        if stage in report.stage_seconds:
            m.stage.labels(stage).observe(report.stage_seconds[stage])


def _type_of(by_id: dict[Any, Claim], job_id: Any) -> str:
    claim = by_id.get(job_id)
    return claim.conversion_type if claim is not None else "unknown"


def record_rescue(new_status: str) -> None:
    """The leader rescued a job of a dead worker (``DispatcherStats.on_rescue`` callback)."""
    if _METRICS is not None:
        _METRICS.rescued.labels("failed" if new_status == "failed" else "queued").inc()


def record_heartbeat(at: float | None = None) -> None:
    """This process's heartbeat succeeded."""
    if _METRICS is not None:
        _METRICS.heartbeat.set(time.time() if at is None else at)


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
    m.threads.set(threads)
    m.heartbeat.set(time.time())


def queue_gauges(settings: Settings) -> QueueGauges | None:
    """The fleet gauges for this process's standby dispatcher, when metrics are on."""
    if _METRICS is None:
        return None
    return QueueGauges(interval_s=settings.queue_stats_interval_s, alive_within_s=settings.rescue_after_s)


# -- the Dramatiq middleware ------------------------------------------------------------------

class MetricsMiddleware(Middleware):
    """Sets up multiprocess metrics in each worker process and forks the host's ``/metrics`` server.

    Put it after ``WorkerLifecycle`` in the middleware list: Dramatiq runs ``after_*`` hooks in reverse
    order, so the metrics exist when the process context boots.
    """

    def __init__(self, settings: Settings) -> None:
        """``settings.metrics_port`` 0 turns the endpoint (and the multiprocess folder) off."""
        self.settings = settings

    @property
    def forks(self) -> list[Any]:
        """The exposition server, run by Dramatiq in a process of its own."""
        return [serve_metrics] if self.settings.metrics_port else []

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        """Wipe the folder once per fleet, switch to multiprocess mode, define the metrics."""
        if self.settings.metrics_port:
            path = metrics_dir(self.settings)
            if prepare_dir(path, fleet_id()):
                log.info("metrics folder wiped for a new fleet", extra={"path": str(path)})
            enable_multiprocess(path)
        install(WorkerMetrics())

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Drop this process's live gauges (in flight, processes, heartbeat, fleet gauges)."""
        if self.settings.metrics_port:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), str(metrics_dir(self.settings)))


# -- the per-host endpoint --------------------------------------------------------------------

class FleetCollector:
    """Merges the folder's files; drops the fleet gauges unless this host's leader refreshed them lately."""

    def __init__(self, path: Path, stale_after_s: float) -> None:
        """Collect from ``path``."""
        from prometheus_client.multiprocess import MultiProcessCollector

        self.stale_after_s = stale_after_s
        self._collector = MultiProcessCollector(None, path=str(path))

    def collect(self) -> Iterator[Metric]:
        """The merged metrics, fleet gauges only while fresh."""
        families = list(self._collector.collect())
        stamp = _value(families, TIMESTAMP_METRIC)
        fresh = stamp is not None and time.time() - stamp <= self.stale_after_s
        for family in families:
            if family.name in FLEET_METRICS and not fresh:
                continue
            yield family


def _value(families: Iterable[Metric], name: str, reduce: Any = max) -> float | None:
    values = [s.value for f in families if f.name == name for s in f.samples if s.name == name]
    return reduce(values) if values else None


@dataclass(frozen=True)
class Health:
    """What ``/healthz`` reports: the host's live worker processes and their stalest heartbeat."""

    processes: int
    heartbeat_age_s: float | None
    max_age_s: float

    @property
    def ok(self) -> bool:
        """At least one process, and every live process beat recently."""
        return self.processes > 0 and self.heartbeat_age_s is not None and self.heartbeat_age_s <= self.max_age_s


def health(path: Path, max_age_s: float) -> Health:
    """Read the host's liveness from the metrics folder."""
    from prometheus_client.multiprocess import MultiProcessCollector

    families = list(MultiProcessCollector(None, path=str(path)).collect())
    processes = _value(families, "stayler_worker_processes") or 0.0
    beat = _value(families, "stayler_worker_last_heartbeat_timestamp_seconds", min)
    return Health(int(processes), None if beat is None else max(time.time() - beat, 0.0), max_age_s)


def make_server(settings: Settings) -> ThreadingHTTPServer:
    """An HTTP server for ``/metrics`` and ``/healthz`` over this host's metrics folder."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    path = metrics_dir(settings)
    path.mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry()
    registry.register(FleetCollector(path, STALE_INTERVALS * settings.queue_stats_interval_s))
    max_age = max(5 * settings.heartbeat_interval_s, 15.0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif self.path.split("?")[0] in ("/healthz", "/readyz"):
                h = health(path, max_age)
                body = (f"processes {h.processes}\nheartbeat_age_s {h.heartbeat_age_s}\n").encode()
                self._send(200 if h.ok else 503, "text/plain; charset=utf-8", body)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return ThreadingHTTPServer((settings.metrics_host, settings.metrics_port), Handler)


def serve_metrics() -> int:
    """Dramatiq fork function: serve the host's merged metrics until terminated."""
    settings = get_settings()
    server = make_server(settings)
    log.info("serving metrics", extra={"port": settings.metrics_port, "path": str(metrics_dir(settings))})
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
