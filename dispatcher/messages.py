"""The one message of the system: "claim work". It carries no payload that could go stale."""

from __future__ import annotations

from typing import Protocol

import dramatiq

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
    """Messages not yet fetched by a worker (Redis list length, or a stub broker's queue size)."""
    if hasattr(broker, "waiting_messages"):
        counter: _CountsWaiting = broker
        return counter.waiting_messages(queue_name)
    queues = getattr(broker, "queues", {})
    queue = queues.get(queue_name)
    return int(queue.qsize()) if queue is not None and hasattr(queue, "qsize") else 0
