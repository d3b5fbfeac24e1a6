"""The Dramatiq Redis broker, configured for this system."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Callbacks, Middleware, Pipelines, Retries, ShutdownNotifications

NAMESPACE = "stayler"


class StaylerRedisBroker(RedisBroker):
    """A Redis broker whose idle consumers poll at least every ``idle_poll_ms``.

    Dramatiq's worker asks for a 1 s idle timeout and backs off up to it, which would add up to a
    second of latency on an idle system; capping it here works for ``stayler worker`` and the plain
    ``dramatiq`` command alike.
    """

    def __init__(self, *, idle_poll_ms: int = 10, **kwargs: Any) -> None:
        """Create the broker; ``kwargs`` go to ``RedisBroker``."""
        self.idle_poll_ms = idle_poll_ms
        super().__init__(**kwargs)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> dramatiq.Consumer:
        """A consumer whose idle back-off never exceeds ``idle_poll_ms``."""
        return super().consume(queue_name, prefetch, min(timeout, self.idle_poll_ms))

    def waiting_messages(self, queue_name: str) -> int:
        """Messages enqueued on ``queue_name`` and not yet fetched by any worker."""
        return int(self.client.llen(f"{self.namespace}:{queue_name}"))


def make_broker(redis_url: str, *, idle_poll_ms: int = 10, extra_middleware: list[Middleware] | None = None
                ) -> StaylerRedisBroker:
    """A broker whose retries are off and without time or age limits: PostgreSQL owns those (DESIGN 5)."""
    middleware: list[Middleware] = [ShutdownNotifications(), Callbacks(), Pipelines(), Retries(max_retries=0)]
    middleware.extend(extra_middleware or [])
    return StaylerRedisBroker(url=redis_url, namespace=NAMESPACE, idle_poll_ms=idle_poll_ms, middleware=middleware)
