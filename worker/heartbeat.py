"""Lease renewal from a thread of its own, on a connection of its own.

The model call releases the GIL and never holds this thread's connection, so a long inference
cannot starve the heartbeat (a failure mode seen in peer queues: a job re-claimed while still
running). A claim older than ``job_timeout_s`` is no longer renewed: the rescuer takes it back.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg

from schema.queries import Q
from worker import metrics
from worker.inflight import InFlight

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews this process's claims and its registry row every ``interval_s``."""

    def __init__(self, database_url: str, worker_id: str, inflight: InFlight, *, interval_s: float,
                 job_timeout_s: float) -> None:
        """Prepare the heartbeat; ``start`` runs it in a daemon thread."""
        self.database_url = database_url
        self.worker_id = worker_id
        self.inflight = inflight
        self.interval_s = interval_s
        self.job_timeout_s = job_timeout_s
        self.last_beat: float | None = None
        self._conn: psycopg.Connection | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stayler-heartbeat", daemon=True)

    def start(self) -> None:
        """Start beating in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and close the connection."""
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)
        if self._conn is not None:
            self._conn.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except psycopg.Error as exc:
                log.warning("heartbeat failed; will retry", extra={"error": str(exc).strip()})
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
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
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, autocommit=True, connect_timeout=5)
        renewed: set[object] = set()
        if live:
            rows = self._conn.execute(Q.job_heartbeat_many, {
                "job_ids": [c.job_id for c in live], "attempts": [c.attempt for c in live],
            }).fetchall()
            renewed = {row[0] for row in rows}
        self._conn.execute(Q.worker_heartbeat, {"id": self.worker_id})
        lost = {c.job_id for c in live if c.job_id not in renewed}
        # A claim finalised between the snapshot and the UPDATE is gone from the registry already.
        self.inflight.mark_lost(lost)
        self.last_beat = time.time()
        metrics.record_heartbeat(self.last_beat)
