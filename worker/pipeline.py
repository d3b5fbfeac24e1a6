"""One claimed batch, start to finish: read inputs → model → store → finalise (fenced).

Every job of the batch ends in exactly one of: completed (result recorded), failed or queued
again (``job_fail``), or dropped because its claim was lost (cancelled or rescued meanwhile); in
the last case any file this attempt wrote is deleted.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg
from PIL import Image

from core.logs import bound
from imaging.encode import make_thumbnail
from storage import StoredObject, attempt_keys, result_key
from worker.claims import Claim, Completion, complete_jobs, fail_job
from worker.context import ProcessContext
from worker.errors import Failure, classify

if TYPE_CHECKING:
    from models.runner import TryOnResult

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """What happened to a batch (for logs, metrics and tests)."""

    completed: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    retried: list[uuid.UUID] = field(default_factory=list)
    dropped: list[uuid.UUID] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    error_types: dict[uuid.UUID, str] = field(default_factory=dict)
    item_stage_seconds: list[dict[str, float]] = field(default_factory=list)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _elapsed_ms(claimed_at: float) -> int:
    return int((time.monotonic() - claimed_at) * 1000)


def thumbnail_of(data: bytes, max_side: int) -> bytes:
    """A JPEG thumbnail of an encoded image; JPEG inputs are decoded at reduced scale (cheap)."""
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (max_side, max_side))
        return make_thumbnail(img.convert("RGB"), max_side)


class BatchProcessor:
    """Runs claimed jobs through the model and records the outcome of each."""

    def __init__(self, ctx: ProcessContext) -> None:
        """Use the process's pool, storage and runner."""
        self.ctx = ctx
        self.settings = ctx.settings

    def process(self, claims: Sequence[Claim], claimed_at: float) -> BatchReport:
        """Process a batch; never raises for a single job's failure."""
        report = BatchReport()
        pending: dict[uuid.UUID, Claim] = {c.job_id: c for c in claims}
        failures: dict[uuid.UUID, Failure] = {}

        # 1. inputs
        t0 = time.perf_counter()
        inputs: dict[uuid.UUID, tuple[bytes, bytes]] = {}
        for claim in claims:
            try:
                inputs[claim.job_id] = (self.ctx.storage.get(claim.person_key), self.ctx.storage.get(claim.cloth_key))
            except Exception as exc:
                failures[claim.job_id] = classify(exc, context="reading the input images")
        report.stage_seconds["read"] = time.perf_counter() - t0

        for claim in claims:
            self.ctx.failpoints.hit(claim.style_name)

        # 2. model: decode + preprocess per job, one batched call, render per job
        from models.runner import TryOnJob

        live = [c for c in claims if c.job_id in inputs and not self._lost(c, report)]
        jobs = [TryOnJob(*inputs[c.job_id], key=c.job_id) for c in live]
        outcomes = self.ctx.runner.run_batch(jobs) if jobs else []

        # 3. store results (an attempt's keys are fixed, so a crash here leaves files the rescuer finds)
        t0 = time.perf_counter()
        written: dict[uuid.UUID, list[str]] = {}
        completions: list[Completion] = []
        staged: list[tuple[Claim, TryOnResult, list[tuple[str, bytes]]]] = []
        for claim, outcome in zip(live, outcomes, strict=True):
            if isinstance(outcome, Exception):
                failures[claim.job_id] = classify(outcome)
                continue
            for stage, seconds in vars(outcome.timings).items():
                report.stage_seconds[stage] = report.stage_seconds.get(stage, 0.0) + seconds
            report.item_stage_seconds.append(dict(vars(outcome.timings)))
            if self._lost(claim, report):
                continue
            try:
                staged.append((claim, outcome, self._stage(claim, outcome)))
            except Exception as exc:
                failures[claim.job_id] = classify(exc, context="storing the result")
        # One storage call for the batch: its fsyncs run concurrently (see LocalStorage.put_many).
        for claim, outcome, stored in self._store_staged(staged, written):
            if isinstance(stored, Exception):
                failures[claim.job_id] = classify(stored, context="storing the result")
                continue
            result, thumb = stored
            completions.append(Completion(
                claim=claim, file_path=result.key, file_name=result.key.rsplit("/", 1)[-1],
                original_url=result.url, thumbnail_url=thumb.url, file_size=result.size,
                mime_type=outcome.mime_type, width=outcome.width, height=outcome.height,
                processing_time_ms=_elapsed_ms(claimed_at), ai_model_version=outcome.model_version,
            ))
        report.stage_seconds["store"] = time.perf_counter() - t0

        # 4. finalise: one fenced transaction for all completions, then each failure
        for completion in completions:
            self.ctx.failpoints.stall(completion.claim.style_name)
        t0 = time.perf_counter()
        if completions:
            self._complete(completions, written, report)
        for job_id, failure in failures.items():
            self._fail(pending[job_id], failure, claimed_at, report)
        report.stage_seconds["database"] = time.perf_counter() - t0
        for claim in claims:
            self.ctx.inflight.remove(claim.job_id)
        return report

    def _lost(self, claim: Claim, report: BatchReport) -> bool:
        if self.ctx.inflight.is_lost(claim.job_id):
            if claim.job_id not in report.dropped:
                report.dropped.append(claim.job_id)
                with bound(job_id=str(claim.job_id), conversion_id=str(claim.conversion_id)):
                    log.info("claim lost (cancelled or rescued); dropping this attempt")
            return True
        return False

    def _stage(self, claim: Claim, outcome: TryOnResult) -> list[tuple[str, bytes]]:
        """The (key, bytes) pairs this attempt stores: the result and its thumbnail."""
        thumbnail = outcome.thumbnail or thumbnail_of(outcome.image, self.settings.thumbnail_size)
        return [(result_key(claim.conversion_id, claim.attempt, outcome.mime_type), outcome.image),
                (result_key(claim.conversion_id, claim.attempt, outcome.mime_type, thumbnail=True), thumbnail)]

    def _store_staged(self, staged: Sequence[tuple[Claim, TryOnResult, list[tuple[str, bytes]]]],
                      written: dict[uuid.UUID, list[str]]
                      ) -> list[tuple[Claim, TryOnResult, tuple[StoredObject, StoredObject] | Exception]]:
        """Write every staged file in one storage call; per claim its (result, thumbnail) or the error
        (a claim with any failed file has the files it did write deleted, as before)."""
        items = [item for _, _, files in staged for item in files]
        for claim, _, files in staged:
            written.setdefault(claim.job_id, []).extend(key for key, _ in files)
        put_many = getattr(self.ctx.storage, "put_many", None)
        stored: list[StoredObject | Exception] = []
        if put_many is not None:
            stored = list(put_many(items))
        else:  # a backend without batched writes
            for key, data in items:
                try:
                    stored.append(self.ctx.storage.put(key, data))
                except Exception as exc:
                    stored.append(exc)
        out: list[tuple[Claim, TryOnResult, tuple[StoredObject, StoredObject] | Exception]] = []
        position = 0
        for claim, outcome, files in staged:
            mine = stored[position:position + len(files)]
            position += len(files)
            error = next((r for r in mine if isinstance(r, Exception)), None)
            if error is not None:
                self._delete(written.pop(claim.job_id, []))
                out.append((claim, outcome, error))
            else:
                result, thumb = mine
                assert isinstance(result, StoredObject) and isinstance(thumb, StoredObject)
                out.append((claim, outcome, (result, thumb)))
        return out

    def _delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                self.ctx.storage.delete(key)
            except Exception:
                log.exception("could not delete a file of a dropped attempt", extra={"key": key})

    def _complete(self, completions: list[Completion], written: dict[uuid.UUID, list[str]],
                  report: BatchReport) -> None:
        try:
            with self.ctx.pool.connection() as conn:
                results = complete_jobs(conn, completions)
        except Exception as exc:
            # The transaction did not commit: no row points at these files. Retry the jobs.
            for completion in completions:
                self._delete(written.pop(completion.claim.job_id, []))
                self._fail(completion.claim, classify(exc, context="recording the result"),
                           None, report)
            return
        for completion in completions:
            claim = completion.claim
            with bound(job_id=str(claim.job_id), conversion_id=str(claim.conversion_id)):
                if results.get(claim.job_id) is None:
                    self._delete(written.pop(claim.job_id, []))
                    report.dropped.append(claim.job_id)
                    log.info("completion fenced out (claim no longer held); result discarded")
                else:
                    report.completed.append(claim.job_id)
                    # Earlier attempts of this conversion lost their claim (released at a sibling's
                    # crash, fenced out) and may have died mid-store: their files must not outlive them.
                    self._delete([k for a in range(1, claim.attempt) for k in attempt_keys(claim.conversion_id, a)])
                    log.info("conversion completed", extra={"processing_time_ms": completion.processing_time_ms,
                                                            "attempt": claim.attempt})

    def _fail(self, claim: Claim, failure: Failure, claimed_at: float | None, report: BatchReport) -> None:
        report.error_types[claim.job_id] = failure.error_type
        with bound(job_id=str(claim.job_id), conversion_id=str(claim.conversion_id)):
            try:
                with self.ctx.pool.connection() as conn:
                    status = fail_job(
                        conn, claim, failure, backoff_base_s=self.settings.backoff_base_s,
                        backoff_max_s=self.settings.backoff_max_s,
                        processing_time_ms=_elapsed_ms(claimed_at) if claimed_at is not None else None,
                        ai_model_version=self.ctx.runner.model_version)
            except (psycopg.OperationalError, TimeoutError) as exc:
                # The database is away. The claim stays 'processing'; the heartbeat stops when we drop
                # it, and the rescuer takes it back after rescue_after_s, counting the attempt.
                log.warning("database unavailable: could not record a failure; leaving the job to the rescuer",
                            extra={"error": _first_line(exc), "error_type": failure.error_type})
                return
            except Exception:
                log.exception("could not record a failure; leaving the job to the rescuer")
                return
            if status == "queued":
                report.retried.append(claim.job_id)
                log.warning("attempt failed; retrying later",
                            extra={"error_type": failure.error_type, "error": failure.message})
            elif status == "failed":
                report.failed.append(claim.job_id)
                log.warning("conversion failed", extra={"error_type": failure.error_type, "error": failure.message})
            else:
                report.dropped.append(claim.job_id)
