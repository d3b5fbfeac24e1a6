"""The claims this process holds: what the heartbeat renews and what shutdown releases."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field


@dataclass
class HeldClaim:
    """One claimed job: its fencing attempt, when it was claimed, and a flag set when it is lost."""

    job_id: uuid.UUID
    attempt: int
    claimed_at: float
    lost: threading.Event = field(default_factory=threading.Event)
    suspect: bool = False


class InFlight:
    """A thread-safe registry of held claims."""

    def __init__(self) -> None:
        """An empty registry."""
        self._lock = threading.Lock()
        self._claims: dict[uuid.UUID, HeldClaim] = {}

    def add(self, claim: HeldClaim) -> None:
        """Start holding a claim."""
        with self._lock:
            self._claims[claim.job_id] = claim

    def remove(self, job_id: uuid.UUID) -> None:
        """Stop holding a claim (finalised, or released)."""
        with self._lock:
            self._claims.pop(job_id, None)

    def snapshot(self) -> list[HeldClaim]:
        """The claims held right now."""
        with self._lock:
            return list(self._claims.values())

    def mark_lost(self, job_ids: set[uuid.UUID]) -> None:
        """Flag claims the database no longer grants us (cancelled or rescued)."""
        with self._lock:
            for job_id in job_ids:
                claim = self._claims.get(job_id)
                if claim is not None:
                    claim.lost.set()

    def is_lost(self, job_id: uuid.UUID) -> bool:
        """Whether the claim was cancelled or rescued since it was taken."""
        with self._lock:
            claim = self._claims.get(job_id)
        return claim is None or claim.lost.is_set()

    def has_suspect(self) -> bool:
        """Whether a suspect job (one that may kill its worker) is held: then nothing else may be."""
        with self._lock:
            return any(c.suspect for c in self._claims.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._claims)
