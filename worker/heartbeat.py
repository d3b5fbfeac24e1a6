"""Lease renewal from a thread of its own, through the queue door.

The model call releases the GIL and never holds a connection, so a long inference cannot starve
the heartbeat (a failure mode seen in peer queues: a job re-claimed while still running). A claim
older than ``job_timeout_s`` is no longer renewed: the rescuer takes it back. Each beat also
releases the jobs of claims whose replies were lost while the database was away.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

from worker.health import Health, describe
from worker.inflight import InFlight
from worker.jobqueue import QueueUnavailable

log = logging.getLogger(__name__)


class RenewingDoor(Protocol):
    """What the heartbeat asks of the queue door."""

    def renew(self, held: Sequence[tuple[uuid.UUID, int]]) -> set[uuid.UUID]:
        """Renew held claims; returns those still held."""
        ...

    def renew_worker(self, services_down: str | None = None) -> bool | None:
        """Mark the process alive, naming the services it finds down; False when its registry row is gone."""
        ...

    def flush(self) -> int:
        """Release claims whose replies were lost."""
        ...


class Heartbeat:
    """Renews this process's claims and its registry row every ``interval_s``."""

    def __init__(self, queue: RenewingDoor, inflight: InFlight, *, interval_s: float, job_timeout_s: float,
                 on_beat: Callable[[float], None] | None = None,
                 on_unregistered: Callable[[], None] | None = None, health: Health | None = None) -> None:
        """Prepare the heartbeat; ``start`` runs it in a daemon thread."""
        self.queue = queue
        self.inflight = inflight
        self.interval_s = interval_s
        self.job_timeout_s = job_timeout_s
        self.on_beat = on_beat
        self.on_unregistered = on_unregistered
        self.health = health
        self.last_beat: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stayler-heartbeat", daemon=True)

    def start(self) -> None:
        """Start beating in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop beating."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except QueueUnavailable as exc:
                log.warning("heartbeat failed; will retry", extra={"error": str(exc)})
                if self.health is not None:
                    self.health.report_down("database", str(exc))
            except Exception:
                log.exception("heartbeat failed; will retry")

    def beat(self) -> None:
        """Renew every held claim younger than the job timeout; flag the ones the database took back."""
        now = time.monotonic()
        claims = self.inflight.snapshot()
        live = [c for c in claims if now - c.claimed_at < self.job_timeout_s]
        expired = {c.job_id for c in claims} - {c.job_id for c in live}
        if expired:
            log.warning("jobs exceeded the job timeout; leaving them to the rescuer",
                        extra={"job_ids": [str(j) for j in expired]})
            self.inflight.mark_lost(expired)
        renewed = self.queue.renew([(c.job_id, c.attempt) for c in live]) if live else set()
        down = describe(self.health.down()) if self.health is not None else None
        if self.queue.renew_worker(down) is False and self.on_unregistered is not None:
            self.on_unregistered()  # pruned while this process was frozen: register again
        if self.health is not None:
            self.health.report_up("database")
        self.queue.flush()
        # A claim finalised between the snapshot and the renewal is gone from the registry already.
        self.inflight.mark_lost({c.job_id for c in live if c.job_id not in renewed})
        self.last_beat = time.time()
        if self.on_beat is not None:
            self.on_beat(self.last_beat)
