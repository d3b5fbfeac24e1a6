"""The Dramatiq middleware that sets up metrics in each worker process and forks the endpoint."""

from __future__ import annotations

import logging
import os
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from core.settings import Settings
from worker.metrics.definitions import WorkerMetrics, install
from worker.metrics.folder import enable_multiprocess, fleet_id, metrics_dir, prepare_dir
from worker.metrics.server import serve_metrics

log = logging.getLogger(__name__)


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
