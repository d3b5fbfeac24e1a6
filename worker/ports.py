"""The small interfaces the claimer and the batch pipeline work through; fakes of them make them testable."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from worker.errors import Failure
from worker.jobqueue import CompletionOutcome
from worker.jobs import Claim, Completion

if TYPE_CHECKING:
    from models.runner import TryOnJob, TryOnResult


class ClaimDoor(Protocol):
    """What the claimer asks of the queue (``worker.jobqueue.JobQueue`` in a worker)."""

    def claim(self, limit: int, *, allow_suspect: bool = True) -> list[Claim]:
        """Claim up to ``limit`` ready jobs (a suspect one only with ``allow_suspect``, and then alone).

        Raises ``QueueUnavailable`` when the database is away.
        """
        ...


class QueueDoor(Protocol):
    """What the pipeline asks of the queue (``worker.jobqueue.JobQueue`` in a worker)."""

    def complete(self, completions: Sequence[Completion]) -> dict[uuid.UUID, CompletionOutcome]:
        """Record results, fenced; per job: completed, fenced out, or unknown (ambiguous commit)."""
        ...

    def fail(self, claim: Claim, failure: Failure, *, processing_time_ms: int | None,
             ai_model_version: str | None) -> str | None:
        """Record a failed attempt: 'queued', 'failed', or None when the claim is no longer held."""
        ...

    def hand_back(self, held: Sequence[tuple[uuid.UUID, int]], *, defer: bool = False) -> bool:
        """Release claims uncharged: now (True), or once the database is back (False; always with ``defer``)."""
        ...


class ModelRunner(Protocol):
    """What the pipeline asks of the model (``models.runner.TryOnRunner`` in a worker)."""

    @property
    def model_version(self) -> str:
        """The version recorded with every result."""
        ...

    def run_batch(self, jobs: Sequence[TryOnJob]) -> list[TryOnResult | Exception]:
        """Run a batch; one item's failure is its own exception, never the batch's.

        Each result carries its thumbnail (the worker's runner is built with ``thumbnail_size``).
        """
        ...


class ServiceHealth(Protocol):
    """What the claimer asks of the shared services' breakers (``worker.health.Health``)."""

    def allow_claim(self) -> bool:
        """Whether every service a claimed job needs (the database, storage) is up."""
        ...

    def report_down(self, service: str, error: str = "") -> None:
        """A service was found down (opens its breaker)."""
        ...


class ClaimRegistry(Protocol):
    """The claims this process holds (``worker.inflight.InFlight``)."""

    def is_lost(self, job_id: uuid.UUID) -> bool:
        """Whether the claim was cancelled or rescued since it was taken."""
        ...

    def remove(self, job_id: uuid.UUID) -> None:
        """Stop holding (and renewing) a claim."""
        ...
