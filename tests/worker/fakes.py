"""In-memory fakes of the claimer's and the batch pipeline's ports: the queue door, storage, the model
runner, the health breakers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from models.runner import StageTimings, TryOnJob, TryOnResult
from storage import StorageError, StoredObject
from worker.errors import Failure
from worker.jobqueue import CompletionOutcome, QueueUnavailable
from worker.jobs import Claim, Completion


def make_claim(attempt: int = 1, *, style: str | None = None, suspect: bool = False) -> Claim:
    """A claim on a made-up job whose inputs live at ``in/<job>/person`` and ``in/<job>/cloth``."""
    job_id = uuid.uuid4()
    return Claim(job_id=job_id, conversion_id=uuid.uuid4(), attempt=attempt, retry_count=0, max_retries=3,
                 enqueued_at=datetime.now(UTC), conversion_type="free", style_name=style,
                 person_key=f"images/{job_id}-p.jpg", person_size=3, cloth_key=f"images/{job_id}-c.jpg",
                 cloth_size=3, suspect=suspect)


@dataclass
class MemoryStorage:
    """A dict of key → bytes; keys listed in ``broken`` fail to write."""

    objects: dict[str, bytes] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)

    def put(self, key: str, data: bytes) -> StoredObject:
        if key in self.broken:
            raise StorageError(f"disk full writing {key}")
        self.objects[key] = data
        return StoredObject(key, f"mem:///{key}", len(data))

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> list[StoredObject | StorageError]:
        out: list[StoredObject | StorageError] = []
        for key, data in items:
            try:
                out.append(self.put(key, data))
            except StorageError as exc:
                out.append(exc)
        return out

    def describe(self) -> str:
        return "memory"

    def get(self, key: str) -> bytes:
        if key not in self.objects:
            raise FileNotFoundError(2, "no such object", key)
        return self.objects[key]

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def delete_many(self, keys: Sequence[str]) -> list[str]:
        failed = [k for k in keys if k in self.broken]
        for key in keys:
            if key not in self.broken:
                self.objects.pop(key, None)
        return failed

    def delete_prefix(self, prefix: str) -> int:
        keys = [k for k in self.objects if k.startswith(prefix)]
        for key in keys:
            del self.objects[key]
        return len(keys)

    # Bulk deletion and listing (0440's sweep and audit).

    def list_objects(self, prefix: str = "") -> Iterator[tuple[str, float]]:
        return iter([(k, 0.0) for k in list(self.objects) if k.startswith(prefix)])

    def url_for(self, key: str) -> str:
        return f"mem:///{key}"

    def check(self) -> None:
        return None

    def presigned_url(self, key: str, ttl_s: int) -> str | None:
        return None

    def with_inputs(self, *claims: Claim) -> MemoryStorage:
        for claim in claims:
            self.objects[claim.person_key] = b"person"
            self.objects[claim.cloth_key] = b"cloth"
        return self

    def results(self) -> list[str]:
        return sorted(k for k in self.objects if k.startswith("results/"))


class EchoRunner:
    """A model that "renders" every item as a few bytes; items whose person bytes are ``bad`` fail."""

    model_version = "echo-1"

    def run_batch(self, jobs: Sequence[TryOnJob]) -> list[TryOnResult | Exception]:
        out: list[TryOnResult | Exception] = []
        for job in jobs:
            if job.person == b"bad":
                err = ValueError("person image does not decode")
                err.error_type = "invalid_image"  # type: ignore[attr-defined]
                err.transient = False  # type: ignore[attr-defined]
                out.append(err)
                continue
            out.append(TryOnResult(image=b"jpeg:" + job.person, width=4, height=4, format="jpeg",
                                   mime_type="image/jpeg", model_version=self.model_version,
                                   timings=StageTimings(inference=0.001), key=job.key, thumbnail=b"thumb"))
        return out


@dataclass
class FakeQueue:
    """Hands out ``ready`` claims; records completions and failures; ``outcome`` decides what a completion returns."""

    ready: list[Claim] = field(default_factory=list)
    claim_raises: Exception | None = None
    #: Each claim's ``(limit, allow_suspect)``.
    claim_calls: list[tuple[int, bool]] = field(default_factory=list)
    outcome: CompletionOutcome | None = "completed"
    complete_raises: Exception | None = None
    fail_raises: Exception | None = None
    fail_status: str | None = "queued"
    completed: list[Completion] = field(default_factory=list)
    failures: list[tuple[Claim, Failure]] = field(default_factory=list)
    handed_back: list[tuple[uuid.UUID, int]] = field(default_factory=list)
    hand_back_now: bool = True

    def claim(self, limit: int, *, allow_suspect: bool = True) -> list[Claim]:
        """Like ``job_claim_batch``: a suspect job comes alone, and only with ``allow_suspect``."""
        self.claim_calls.append((limit, allow_suspect))
        if self.claim_raises is not None:
            raise self.claim_raises
        if allow_suspect and self.ready and self.ready[0].suspect:
            return [self.ready.pop(0)]
        taken = [c for c in self.ready if not c.suspect][:limit]
        self.ready = [c for c in self.ready if c not in taken]
        return taken

    def complete(self, completions: Sequence[Completion]) -> dict[uuid.UUID, CompletionOutcome]:
        if self.complete_raises is not None:
            raise self.complete_raises
        self.completed.extend(completions)
        return {} if self.outcome is None else {c.claim.job_id: self.outcome for c in completions}

    def fail(self, claim: Claim, failure: Failure, *, processing_time_ms: int | None,
             ai_model_version: str | None) -> str | None:
        if self.fail_raises is not None:
            raise self.fail_raises
        self.failures.append((claim, failure))
        return self.fail_status

    def hand_back(self, held: Sequence[tuple[uuid.UUID, int]], *, defer: bool = False) -> bool:
        self.handed_back.extend(held)
        return self.hand_back_now and not defer


@dataclass
class FakeHealth:
    """Breakers that are all closed unless ``down`` names a service; records what is reported down."""

    down: set[str] = field(default_factory=set)
    reported: list[tuple[str, str]] = field(default_factory=list)

    def allow_claim(self) -> bool:
        return not self.down & {"database", "storage"}

    def report_down(self, service: str, error: str = "") -> None:
        self.reported.append((service, error))
        self.down.add(service)


__all__ = ["EchoRunner", "FakeHealth", "FakeQueue", "MemoryStorage", "QueueUnavailable", "make_claim"]
