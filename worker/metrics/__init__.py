"""Prometheus metrics of the worker fleet: definitions and recording helpers (``definitions``),
the host's multiprocess folder (``folder``), the ``/metrics`` + ``/healthz`` server (``server``)
and the Dramatiq middleware that ties them to a worker process (``middleware``).
"""

from worker.metrics.definitions import (
    BATCH_STAGES,
    JOB_STAGES,
    WorkerMetrics,
    current,
    install,
    queue_gauges,
    record_batch,
    record_boot,
    record_claim,
    record_heartbeat,
    record_rescue,
    set_in_flight,
    set_service_up,
)
from worker.metrics.folder import enable_multiprocess, fleet_id, metrics_dir, prepare_dir
from worker.metrics.middleware import MetricsMiddleware
from worker.metrics.server import FleetCollector, Health, health, make_server, serve_metrics

__all__ = [
    "BATCH_STAGES", "JOB_STAGES", "FleetCollector", "Health", "MetricsMiddleware", "WorkerMetrics", "current",
    "enable_multiprocess", "fleet_id", "health", "install", "make_server", "metrics_dir", "prepare_dir",
    "queue_gauges", "record_batch", "record_boot", "record_claim", "record_heartbeat", "record_rescue",
    "serve_metrics", "set_in_flight", "set_service_up",
]
