"""A bare Dramatiq worker process on this project's broker, for measuring its idle cost.

``python -m tests.broker.idle_worker REDIS_URL QUEUE {blocking|polling} [FILE]`` runs a worker with two
threads; its one actor pushes ``<sent>:<received>`` (``time.time()`` values) to ``<QUEUE>:received``,
or appends ``<seq> <sent> <received>`` lines to FILE (outside Redis, for the failover test).
``polling`` is the previous design (Dramatiq's consumer polling every 10 ms when idle), kept as the
baseline of the benchmark.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from broker.redis import make_broker


class PollingBroker(RedisBroker):
    """The broker as it was: Dramatiq's consumer with its idle back-off capped at 10 ms."""

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> dramatiq.Consumer:
        """Dramatiq's consumer, idle poll capped at 10 ms."""
        return super().consume(queue_name, prefetch, min(timeout, 10))


def build(url: str, mode: str) -> RedisBroker:
    """The broker of ``mode``."""
    if mode == "polling":
        return PollingBroker(url=url, namespace="stayler")
    return make_broker(url)


def main(url: str, queue: str, mode: str, receipts: str | None = None) -> None:
    """Run the worker until SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(created).3f %(threadName)s %(name)s %(message)s")
    broker = build(url, mode)
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue, actor_name="probe", max_retries=0)
    def probe(sent: float, seq: int = -1) -> None:
        received = time.time()
        if receipts is None:
            broker.client.rpush(f"{queue}:received", f"{sent}:{received}")
            return
        with open(receipts, "a") as handle:
            handle.write(f"{seq} {sent} {received}\n")

    worker = dramatiq.Worker(broker, worker_threads=2)
    worker.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    worker.stop()


def send(broker: RedisBroker, queue: str, seq: int = -1) -> Any:
    """Enqueue one probe message stamped with the current time."""
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue, actor_name="probe", args=(time.time(), seq), kwargs={}, options={})
    return broker.enqueue(message)


if __name__ == "__main__":
    main(*sys.argv[1:5])
