"""The Dramatiq Redis broker, configured for this system.

Idle consumers block instead of polling. Dramatiq's Redis consumer sleeps and polls with a growing
back-off when its queue is empty; capped at 10 ms that cost ~790 Redis commands a second per idle
process. Here every enqueue also pushes a wake token to a short per-queue list
(``<namespace>:<queue>.wake``, capped with LTRIM), and a consumer whose fetch found nothing waits
on that list with BLPOP for at most ``idle_poll_ms`` before it fetches anyway. A new message wakes a
waiting consumer at once; an idle consumer sends two commands per wait (the BLPOP and the fetch that
also renews Dramatiq's broker heartbeat). A token can wake a consumer whose fetch then finds nothing
(another consumer was faster): harmless, like every surplus claim message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import dramatiq
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.message import Message
from dramatiq.middleware import Callbacks, Middleware, Pipelines, Retries, ShutdownNotifications

from broker.sentinel import is_sentinel_url, sentinel_client

NAMESPACE = "stayler"

#: Longest wake list: how many idle consumers one burst of enqueues can wake at once.
WAKE_CAP = 1024
#: Sleep of a consumer that holds as many messages as it may prefetch (no Redis call meanwhile).
FULL_WAIT_S = 0.005
#: Pause before a consumer retries after Redis was unreachable (instead of Dramatiq's 3 s restart).
RECONNECT_WAIT_S = 0.2

log = logging.getLogger(__name__)


class StaylerRedisBroker(RedisBroker):
    """A Redis broker whose idle consumers wait on a wake list, at most ``idle_poll_ms`` at a time.

    Dramatiq's worker asks for a 1 s idle timeout; capping it here bounds the wait for the plain
    ``dramatiq`` command and ``stayler worker`` alike (a message whose wake token was lost, say to a
    Redis restart, is fetched after at most this long).
    """

    def __init__(self, *, idle_poll_ms: int = 1000, **kwargs: Any) -> None:
        """Create the broker; ``kwargs`` go to ``RedisBroker``."""
        self.idle_poll_ms = idle_poll_ms
        super().__init__(**kwargs)

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        """Consumers that block on the wake list when idle."""
        return _WakingConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> dramatiq.Consumer:
        """A consumer whose idle wait never exceeds ``idle_poll_ms``."""
        return super().consume(queue_name, prefetch, min(timeout, self.idle_poll_ms))

    def wake_key(self, queue_name: str) -> str:
        """The list idle consumers of ``queue_name`` block on."""
        return f"{self.namespace}:{queue_name}.wake"

    def wake(self, queue_name: str, count: int = 1) -> None:
        """Push ``count`` wake tokens for ``queue_name`` (one round trip)."""
        key = self.wake_key(queue_name)
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(key, *([b"1"] * min(count, WAKE_CAP)))
        pipe.ltrim(key, 0, WAKE_CAP - 1)
        pipe.execute()

    def wait_for_wake(self, queue_name: str, timeout_s: float) -> bool:
        """Block until a wake token for ``queue_name`` arrives or ``timeout_s`` passes; True when woken."""
        return self.client.blpop([self.wake_key(queue_name)], timeout=max(timeout_s, 0.001)) is not None

    def do_enqueue(self, queue_name: str, message_id: str, data: bytes) -> Any:
        """Dramatiq's enqueue script, then the wake token (after it, so a woken consumer finds the message)."""
        result = self._dispatch("enqueue")(queue_name, message_id, data)
        self.wake(queue_name)
        return result

    def waiting_messages(self, queue_name: str) -> int:
        """Messages enqueued on ``queue_name`` and not yet fetched by any worker."""
        return int(self.client.llen(f"{self.namespace}:{queue_name}"))


class _WakingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, waiting on the wake list instead of sleeping when the queue is empty."""

    broker: StaylerRedisBroker

    def __init__(self, broker: StaylerRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.unreachable_since: float | None = None

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Hand messages back (worker shutdown) and wake the consumers that may take them."""
        messages = list(messages)
        super().requeue(messages)
        if messages:
            self.broker.wake(self.queue_name, len(messages))

    def __next__(self) -> MessageProxy | None:
        try:
            message = self._next()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Dramatiq would restart the consumer after 3 s; retrying here costs a failover less.
            if self.unreachable_since is None:
                self.unreachable_since = time.monotonic()
                log.warning("Redis unreachable, retrying", extra={"queue": self.queue_name, "error": str(exc)})
            time.sleep(RECONNECT_WAIT_S)
            return None
        if self.unreachable_since is not None:
            log.warning("Redis reachable again", extra={
                "queue": self.queue_name, "outage_s": round(time.monotonic() - self.unreachable_since, 3)})
            self.unreachable_since = None
        return message

    def _next(self) -> MessageProxy | None:
        while self.message_cache:
            data = self.message_cache.pop(0)
            if data is None:
                continue
            self.misses = 0
            message = Message.decode(data)
            self.queued_message_ids.add(message.message_id)
            return MessageProxy(message)
        room = self.prefetch - self.outstanding_message_count
        if room <= 0:
            time.sleep(FULL_WAIT_S)
            return None
        self.message_cache = self.broker.do_fetch(self.queue_name, room)
        if self.message_cache:
            return self._next()
        self.broker.wait_for_wake(self.queue_name, self.timeout / 1000)
        return None


def make_broker(redis_url: str, *, idle_poll_ms: int = 1000, extra_middleware: list[Middleware] | None = None
                ) -> StaylerRedisBroker:
    """A broker whose retries are off and without time or age limits: PostgreSQL owns those
    (docs/architecture.md, invariant 5).

    ``redis_url`` is a plain ``redis://`` URL or a ``redis+sentinel://`` one (see ``broker.sentinel``).
    """
    middleware: list[Middleware] = [ShutdownNotifications(), Callbacks(), Pipelines(), Retries(max_retries=0)]
    middleware.extend(extra_middleware or [])
    if is_sentinel_url(redis_url):
        client = sentinel_client(redis_url, socket_timeout=5.0 + idle_poll_ms / 1000)  # outlasts the idle BLPOP
        return StaylerRedisBroker(client=client, namespace=NAMESPACE, idle_poll_ms=idle_poll_ms, middleware=middleware)
    return StaylerRedisBroker(url=redis_url, namespace=NAMESPACE, idle_poll_ms=idle_poll_ms, middleware=middleware)
