"""The per-host ``/metrics`` and ``/healthz`` endpoint over the multiprocess folder.

One extra process that Dramatiq forks (``serve_metrics``) merges every worker process's files on
each scrape of ``http://<host>:<STAYLER_METRICS_PORT>/metrics``. The fleet gauges are exported only
while this host's leader refreshed them lately, so a fleet exports one value per gauge.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.settings import Settings, get_settings
from leader.queue_gauges import FLEET_METRICS, TIMESTAMP_METRIC
from worker.metrics.definitions import STALE_INTERVALS
from worker.metrics.folder import metrics_dir

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)


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
