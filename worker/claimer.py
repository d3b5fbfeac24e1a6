"""The claim policy of a worker process: what one "claim work" message does.

The actor (``worker.app``) hands every message to the process's ``Claimer``; the claimer decides,
over small ports (the queue door, the claim registry, the health breakers, a way to send a message):

- **A shared service is down** (the database or storage breaker is open): nothing is claimed, since
  claiming would only spend the jobs' retries. The message is dropped after a short pause; the
  health monitor wakes the claims when the service is back, and the leader's sweep re-sends meanwhile.
- **A suspect job is held** (one lost with a worker before, which may kill this process): it runs
  alone. The message is *owed*: counted, and sent again when the suspect's batch ends.
- **Otherwise** up to ``batch_size`` jobs are claimed, under one lock with the registry, so a suspect
  job is never claimed beside another: only a process that holds nothing may take one (it comes alone).
- **The database is away** during the claim: the message is dropped (the leader's sweep re-dispatches
  once it is back) and the database breaker is opened.
- **A full batch** asks for another at once (a follow-up message), so a busy fleet does not wait
  for the dispatcher; a partial or empty batch does not.
- **After a batch with a suspect job** the owed messages are sent, whatever became of the batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from worker import metrics
from worker.batch import BatchReport
from worker.inflight import HeldClaim, InFlight
from worker.jobqueue import QueueUnavailable
from worker.jobs import Claim
from worker.ports import ClaimDoor, ServiceHealth

log = logging.getLogger(__name__)

#: Pause before dropping a message while a shared service is down (the claims are woken when it heals).
SERVICE_DOWN_PAUSE_S = 0.5
#: Pause before dropping a message that found the database away.
DATABASE_DOWN_PAUSE_S = 1.0

#: Processes a claimed batch (``BatchPipeline.process``): the claims and when they were claimed.
ProcessBatch = Callable[[Sequence[Claim], float], BatchReport]


class Claimer:
    """Serves claim messages for one worker process (its threads share it)."""

    def __init__(self, queue: ClaimDoor, inflight: InFlight, health: ServiceHealth, send_message: Callable[[], bool],
                 *, batch_size: int, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Claim up to ``batch_size`` jobs per message; ``send_message`` enqueues one claim message."""
        self.queue = queue
        self.inflight = inflight
        self.health = health
        self.send_message = send_message
        self.batch_size = batch_size
        self._sleep = sleep
        self._clock = clock
        #: Serialises the claim with the registry, so a suspect job is never claimed beside another.
        self._lock = threading.Lock()
        #: Messages set aside while a suspect job ran alone; sent again when it ends.
        self.owed_messages = 0

    def serve(self, process: ProcessBatch) -> BatchReport | None:
        """Serve one claim message: claim a batch, ``process`` it, send what follows; None when nothing was claimed."""
        claimed_at = self._clock()
        claims = self.claim(claimed_at)
        if not claims:
            return None
        metrics.set_in_flight(len(self.inflight))
        if len(claims) == self.batch_size:
            self.send_message()
        try:
            report = process(claims, claimed_at)
        except BaseException:
            # Something escaped the batch (a bug, or the process is being torn down). The pipeline has
            # dropped these claims from the registry, so the rescuer takes them back as lost attempts.
            log.exception("a batch failed unexpectedly; leaving its jobs to the rescuer",
                          extra={"job_ids": [str(c.job_id) for c in claims]})
            raise
        finally:
            metrics.set_in_flight(len(self.inflight))
            if any(c.suspect for c in claims):
                self.pay_owed_messages()
        metrics.record_batch(report)
        return report

    def claim(self, claimed_at: float) -> list[Claim]:
        """Claim up to a batch and hold it in the registry; [] when the policy says not to (see the module)."""
        if not self.health.allow_claim():
            self._sleep(SERVICE_DOWN_PAUSE_S)
            return []
        with self._lock:
            if self.inflight.has_suspect():
                self.owed_messages += 1
                return []
            try:
                claims = self.queue.claim(self.batch_size, allow_suspect=len(self.inflight) == 0)
            except QueueUnavailable as exc:
                log.warning("could not claim jobs; database unavailable", extra={"error": str(exc)})
                self.health.report_down("database", str(exc))
                self._sleep(DATABASE_DOWN_PAUSE_S)
                return []
            for claim in claims:
                self.inflight.add(HeldClaim(claim.job_id, claim.attempt, claimed_at, suspect=claim.suspect))
        metrics.record_claim(claims)
        return claims

    def pay_owed_messages(self) -> int:
        """Send again the messages set aside while a suspect job ran alone; returns how many."""
        with self._lock:
            owed, self.owed_messages = self.owed_messages, 0
        for _ in range(owed):
            self.send_message()
        return owed
