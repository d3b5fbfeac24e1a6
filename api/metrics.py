"""The API's Prometheus metrics, in a registry of its own (served on the API's ``/metrics``)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ApiMetrics:
    """Requests by route, method and status; their latency; requests waiting on ``?wait=``."""

    def __init__(self) -> None:
        """Create the metrics in a fresh registry."""
        self.registry = CollectorRegistry()
        self.requests = Counter("stayler_api_requests", "HTTP requests by route template, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("stayler_api_request_duration_seconds", "HTTP request latency by route template",
                                 ["route", "method"], buckets=_BUCKETS, registry=self.registry)
        self.waiting = Gauge("stayler_api_waiting_requests", "Requests held by ?wait= now",
                             registry=self.registry)

    def track_waiting(self, count: Callable[[], int]) -> None:
        """Report ``count()`` as the number of waiting requests."""
        self.waiting.set_function(count)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)
