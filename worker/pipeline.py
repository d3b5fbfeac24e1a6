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

from PIL import Image

from imaging.encode import make_thumbnail
from stayler.logs import bound
from storage import StoredObject, result_key
from worker.claims import Claim, Completion, complete_jobs, fail_job
from worker.context import ProcessContext
from worker.errors import Failure, classify

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """What happened to a batch (for logs, metrics and tests)."""

    completed: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    retried: list[uuid.UUID] = field(default_factory=list)
    dropped: list[uuid.UUID] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)


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
        for claim, outcome in zip(live, outcomes, strict=True):
            if isinstance(outcome, Exception):
                failures[claim.job_id] = classify(outcome)
                continue
            for stage, seconds in vars(outcome.timings).items():
                report.stage_seconds[stage] = report.stage_seconds.get(stage, 0.0) + seconds
            if self._lost(claim, report):
                continue
            try:
                result, thumb = self._store(claim, outcome.image, outcome.mime_type, written)
            except Exception as exc:
                self._delete(written.pop(claim.job_id, []))
                failures[claim.job_id] = classify(exc, context="storing the result")
                continue
            completions.append(Completion(
                claim=claim, file_path=result.key, file_name=result.key.rsplit("/", 1)[-1],
                original_url=result.url, thumbnail_url=thumb.url, file_size=result.size,
                mime_type=outcome.mime_type, width=outcome.width, height=outcome.height,
                processing_time_ms=_elapsed_ms(claimed_at), ai_model_version=outcome.model_version,
            ))
        report.stage_seconds["store"] = time.perf_counter() - t0

        # 4. finalise: one fenced transaction for all completions, then each failure
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

    def _store(self, claim: Claim, image: bytes, mime_type: str, written: dict[uuid.UUID, list[str]]
               ) -> tuple[StoredObject, StoredObject]:
        keys = written.setdefault(claim.job_id, [])
        key = result_key(claim.conversion_id, claim.attempt, mime_type)
        keys.append(key)
        result = self.ctx.storage.put(key, image)
        thumb_key = result_key(claim.conversion_id, claim.attempt, mime_type, thumbnail=True)
        keys.append(thumb_key)
        thumb = self.ctx.storage.put(thumb_key, thumbnail_of(image, self.settings.thumbnail_size))
        return result, thumb

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
                    log.info("conversion completed", extra={"processing_time_ms": completion.processing_time_ms,
                                                            "attempt": claim.attempt})

    def _fail(self, claim: Claim, failure: Failure, claimed_at: float | None, report: BatchReport) -> None:
        with bound(job_id=str(claim.job_id), conversion_id=str(claim.conversion_id)):
            try:
                with self.ctx.pool.connection() as conn:
                    status = fail_job(
                        conn, claim, failure, backoff_base_s=self.settings.backoff_base_s,
                        backoff_max_s=self.settings.backoff_max_s,
                        processing_time_ms=_elapsed_ms(claimed_at) if claimed_at is not None else None,
                        ai_model_version=self.ctx.runner.model_version)
            except Exception:
                # The claim stays 'processing'; the heartbeat stops when we drop it, and the rescuer
                # takes it back after rescue_after_s, counting the attempt.
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
