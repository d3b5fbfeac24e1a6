"""The Dramatiq application: the broker and the one actor. ``dramatiq worker.app`` runs it.

The actor's message carries nothing: it means "claim up to a batch of available jobs". A message
that finds nothing to claim is a no-op, so duplicate or stale messages are harmless.
"""

from __future__ import annotations

import logging
import time

import dramatiq

from broker.messages import ACTOR_NAME, send_follow_up
from broker.redis import make_broker
from core.settings import get_settings
from worker import metrics
from worker.inflight import HeldClaim
from worker.jobqueue import QueueUnavailable
from worker.lifecycle import WorkerLifecycle, current_context
from worker.process import ProcessContext

log = logging.getLogger(__name__)

_settings = get_settings()
if not _settings.redis_url:
    raise RuntimeError("REDIS_URL is not set: start workers with `stayler worker`, or set REDIS_URL")

broker = make_broker(_settings.redis_url, idle_poll_ms=_settings.idle_poll_ms,
                     extra_middleware=[WorkerLifecycle(get_settings), metrics.MetricsMiddleware(_settings)])
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name=ACTOR_NAME, queue_name=_settings.queue_name, max_retries=0)
def process_conversions() -> None:
    """Claim up to ``claim_batch_size`` jobs and process them as one batch."""
    ctx = current_context()
    if ctx.draining.is_set():
        return
    batch_size = ctx.settings.claim_batch_size
    claimed_at = time.monotonic()
    if not ctx.health.allow_claim():
        # A shared service is down: claiming would only spend the jobs' retries. The health monitor
        # probes it and wakes the claims when it is back; the leader's sweep re-sends meanwhile.
        time.sleep(0.5)
        return
    with ctx.claim_lock:
        if ctx.inflight.has_suspect():
            # A job that may kill this process runs alone in it: this message waits for it.
            ctx.owed_messages += 1
            return
        try:
            claims = ctx.queue.claim(batch_size, allow_suspect=len(ctx.inflight) == 0)
        except QueueUnavailable as exc:
            # The database is down: drop this message (the leader's sweep re-dispatches once it is back).
            log.warning("could not claim jobs; database unavailable", extra={"error": str(exc)})
            ctx.health.report_down("database", str(exc))
            time.sleep(1.0)
            return
        for claim in claims:
            ctx.inflight.add(HeldClaim(claim.job_id, claim.attempt, claimed_at, suspect=claim.suspect))
    metrics.record_claim(claims)
    if not claims:
        return
    metrics.set_in_flight(len(ctx.inflight))
    if len(claims) == batch_size:
        send_follow_up(ctx.broker, ctx.settings.queue_name)
    try:
        report = ctx.pipeline.process(claims, claimed_at)
    except BaseException:
        # Something escaped the batch (a bug, or the process is being torn down). The pipeline has
        # dropped these claims from the registry, so the rescuer takes them back as lost attempts.
        log.exception("a batch failed unexpectedly; leaving its jobs to the rescuer",
                      extra={"job_ids": [str(c.job_id) for c in claims]})
        raise
    finally:
        metrics.set_in_flight(len(ctx.inflight))
        if any(c.suspect for c in claims):
            _pay_owed_messages(ctx)
    metrics.record_batch(report)


def _pay_owed_messages(ctx: ProcessContext) -> None:
    """Send again the messages this process set aside while a suspect job ran alone."""
    with ctx.claim_lock:
        owed, ctx.owed_messages = ctx.owed_messages, 0
    for _ in range(owed):
        send_follow_up(ctx.broker, ctx.settings.queue_name)
