"""Waking a worker right after a commit, instead of waiting for NOTIFY → leader → Redis.

A producer that knows the broker sends one "claim work" message itself once its conversion is
committed. It is only a hint, like every message: if Redis is away the message is skipped (the
leader's NOTIFY path and sweep still dispatch the job), and a message that finds nothing to claim
is a no-op. Inside an open transaction nothing is sent (the job is not visible yet): the NOTIFY
sent on commit covers it.
"""

from __future__ import annotations

import logging

import dramatiq
import psycopg

from broker.messages import send_follow_up

log = logging.getLogger(__name__)


class Waker:
    """Sends a claim message to ``queue_name`` after a producer's commit."""

    def __init__(self, broker: dramatiq.Broker, queue_name: str) -> None:
        """Wake workers through ``broker``."""
        self.broker = broker
        self.queue_name = queue_name

    @classmethod
    def from_url(cls, redis_url: str, queue_name: str) -> Waker:
        """A waker with a broker of its own (the CLI, the HTTP API)."""
        from broker.redis import make_broker

        return cls(make_broker(redis_url), queue_name)

    def after_commit(self, conn: psycopg.Connection) -> bool:
        """Send one message if ``conn`` has committed its work (autocommit, no open transaction)."""
        if not conn.autocommit or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return False
        return send_follow_up(self.broker, self.queue_name)
