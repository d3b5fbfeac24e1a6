"""The one message of the system: "claim work". It carries no payload that could go stale."""

from __future__ import annotations

import logging
from typing import Protocol

import dramatiq

log = logging.getLogger(__name__)

ACTOR_NAME = "process_conversions"


class _CountsWaiting(Protocol):
    def waiting_messages(self, queue_name: str) -> int: ...


def claim_message(queue_name: str) -> dramatiq.Message[None]:
    """A message that asks a worker to claim up to its batch size of available jobs."""
    return dramatiq.Message(queue_name=queue_name, actor_name=ACTOR_NAME, args=(), kwargs={}, options={})


def send_claim_messages(broker: dramatiq.Broker, queue_name: str, count: int) -> int:
    """Enqueue ``count`` claim messages; returns how many were sent."""
    for _ in range(count):
        broker.enqueue(claim_message(queue_name))
    return max(count, 0)


def waiting_messages(broker: dramatiq.Broker, queue_name: str) -> int:
    """Messages not yet fetched by a worker (the Redis list length; 0 from a broker that cannot count them)."""
    if hasattr(broker, "waiting_messages"):
        counter: _CountsWaiting = broker
        return counter.waiting_messages(queue_name)
    return 0


def send_follow_up(broker: dramatiq.Broker, queue_name: str) -> bool:
    """After a full batch, ask for another: keeps the fleet busy without waiting for the dispatcher.

    Best effort: with Redis away the message is lost (and the batch in hand is still processed); the
    dispatcher's sweep sends it again. Returns whether it was sent.
    """
    try:
        broker.enqueue(claim_message(queue_name))
    except Exception as exc:
        log.warning("could not enqueue a follow-up claim message; the sweep will", extra={"error": str(exc)})
        return False
    return True
