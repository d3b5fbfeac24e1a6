"""The Dramatiq application: the broker and the one actor. ``dramatiq worker.app`` runs it.

The actor's message carries nothing: it means "claim up to a batch of available jobs". A message
that finds nothing to claim is a no-op, so duplicate or stale messages are harmless.
"""

from __future__ import annotations

import dramatiq

from broker.messages import ACTOR_NAME
from broker.redis import make_broker
from core.settings import get_settings
from worker import metrics
from worker.lifecycle import WorkerLifecycle, current_context

_settings = get_settings()
if not _settings.redis_url:
    raise RuntimeError("REDIS_URL is not set: start workers with `stayler worker`, or set REDIS_URL")

broker = make_broker(_settings.redis_url, idle_poll_ms=_settings.idle_poll_ms,
                     extra_middleware=[WorkerLifecycle(get_settings), metrics.MetricsMiddleware(_settings)])
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name=ACTOR_NAME, queue_name=_settings.queue_name, max_retries=0)
def process_conversions() -> None:
    """Claim up to a batch of jobs and process them (the policy is ``worker.claimer.Claimer``'s)."""
    ctx = current_context()
    if ctx.draining.is_set():
        return
    ctx.claimer.serve(ctx.pipeline.process)
