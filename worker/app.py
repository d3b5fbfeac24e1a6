"""The Dramatiq application: the broker and the one actor. ``dramatiq worker.app`` runs it.

The actor's message carries nothing: it means "claim up to a batch of available jobs". A message
that finds nothing to claim is a no-op, so duplicate or stale messages are harmless.
"""

from __future__ import annotations

import logging
import time

import dramatiq
import psycopg

from broker.messages import ACTOR_NAME, send_follow_up
from broker.redis import make_broker
from core.settings import get_settings
from worker import metrics
from worker.claims import claim_jobs
from worker.inflight import HeldClaim
from worker.lifecycle import WorkerLifecycle, current_context
from worker.pipeline import BatchProcessor

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
    settings = ctx.settings
    try:
        with ctx.pool.connection(timeout=10) as conn:
            claims = claim_jobs(conn, ctx.worker_id, settings.claim_batch_size)
        metrics.record_claim(claims)
    except (psycopg.OperationalError, TimeoutError) as exc:
        # The database is down: drop this message (the sweep re-dispatches once it is back).
        log.warning("could not claim jobs; database unavailable", extra={"error": str(exc).strip()})
        time.sleep(1.0)
        return
    if not claims:
        return
    claimed_at = time.monotonic()
    for claim in claims:
        ctx.inflight.add(HeldClaim(claim.job_id, claim.attempt, claimed_at))
    metrics.set_in_flight(len(ctx.inflight))
    try:
        if len(claims) == settings.claim_batch_size:
            send_follow_up(ctx.broker, settings.queue_name)
        report = BatchProcessor(ctx).process(claims, claimed_at)
    except BaseException:
        # Something escaped the batch (a bug, or the process is being torn down). Stop renewing these
        # claims: the rescuer takes them back as counted attempts, so a job that triggers the same
        # failure every time still ends after max_retries instead of being held forever.
        log.exception("a batch failed unexpectedly; leaving its jobs to the rescuer",
                      extra={"job_ids": [str(c.job_id) for c in claims]})
        for claim in claims:
            ctx.inflight.remove(claim.job_id)
        raise
    finally:
        metrics.set_in_flight(len(ctx.inflight))
    metrics.record_batch(claims, report)

