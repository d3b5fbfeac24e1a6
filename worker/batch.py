"""One claimed batch, start to finish: read → infer → store → finalise.

Every job of the batch ends in exactly one of:
- ``completed``: its result is recorded (the files stay);
- ``retried`` / ``failed``: ``job_fail`` recorded the attempt (no file was kept);
- ``released``: a shared service (storage, the database) was down, so the job was handed back
  uncharged (``worker.health`` decides, by probing the service, that the failure was not the
  job's own); when the database itself is away the door releases it once it is back;
- ``dropped``: its claim was lost (cancelled or rescued meanwhile, or fenced out at completion);
  any file this attempt wrote is deleted;
- ``left``: the database could not be reached to record the outcome, or the completion's outcome
  is unknown (the connection broke mid-commit and could not be read back). Its files are kept,
  since a committed result may point at them; its claim is no longer renewed, so the leader's
  rescuer takes it back, and a cleanup marker of the lost attempt removes the files if the
  attempt did not complete.

The pipeline is a plain object over small ports (``worker.ports``): the queue door, storage, the
model runner and the claim registry. It never touches SQL or a connection.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from core.logs import bound
from schema.statuses import JobStatus
from storage import Storage, StorageError, StoredObject, attempt_keys, result_key
from worker.errors import Failure, classify
from worker.failpoints import Failpoints
from worker.health import Health
from worker.jobqueue import QueueUnavailable
from worker.jobs import Claim, Completion
from worker.ports import ClaimRegistry, ModelRunner, QueueDoor

if TYPE_CHECKING:
    from models.runner import TryOnResult

log = logging.getLogger(__name__)

#: Where a job of the batch stands; every job ends in one of the last six (see the module docstring).
Outcome = Literal["running", "completed", "retried", "failed", "released", "dropped", "left"]


@dataclass
class JobRecord:
    """Everything the batch learns about one job, stage by stage."""

    claim: Claim
    person: bytes | None = None
    cloth: bytes | None = None
    result: TryOnResult | None = None
    stored: tuple[StoredObject, StoredObject] | None = None
    written: list[str] = field(default_factory=list)
    failure: Failure | None = None
    #: The failure is a shared service's outage (confirmed when it happened), not the job's own.
    outage: bool = False
    outcome: Outcome = "running"

    @property
    def running(self) -> bool:
        """Still on its way to a result (no failure, no final outcome)."""
        return self.failure is None and self.outcome == "running"

    @property
    def job_id(self) -> uuid.UUID:
        """The job's id."""
        return self.claim.job_id


@dataclass(frozen=True)
class JobOutcome:
    """How one job of a batch ended: its claim, its outcome, why it failed, and its model stages."""

    claim: Claim
    outcome: Outcome
    #: The failure's type when the job failed on its way (whatever its outcome then), else None.
    error_type: str | None = None
    #: Seconds per model stage (``StageTimings``) when the model rendered it, else None.
    model_seconds: Mapping[str, float] | None = None

    @property
    def job_id(self) -> uuid.UUID:
        """The job's id."""
        return self.claim.job_id


@dataclass(frozen=True)
class BatchReport:
    """What happened to a batch (for logs, metrics and tests): one outcome per job, in claim order."""

    jobs: tuple[JobOutcome, ...] = ()
    #: Seconds of the batch's own stages (read, store, database).
    batch_seconds: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Sequence[JobRecord], batch_seconds: Mapping[str, float]) -> BatchReport:
        """The report of a finished batch, from its job records."""
        return cls(tuple(JobOutcome(r.claim, r.outcome, r.failure.error_type if r.failure is not None else None,
                                    dict(vars(r.result.timings)) if r.result is not None else None)
                         for r in records), dict(batch_seconds))

    def ids(self, outcome: Outcome) -> list[uuid.UUID]:
        """The jobs that ended with ``outcome``, in claim order."""
        return [j.job_id for j in self.jobs if j.outcome == outcome]

    @property
    def completed(self) -> list[uuid.UUID]:
        """Jobs whose result is recorded."""
        return self.ids("completed")

    @property
    def retried(self) -> list[uuid.UUID]:
        """Jobs whose failed attempt was recorded and that will run again."""
        return self.ids("retried")

    @property
    def failed(self) -> list[uuid.UUID]:
        """Jobs that failed for good."""
        return self.ids("failed")

    @property
    def released(self) -> list[uuid.UUID]:
        """Jobs handed back uncharged (a shared service was down)."""
        return self.ids("released")

    @property
    def dropped(self) -> list[uuid.UUID]:
        """Jobs whose claim was lost meanwhile."""
        return self.ids("dropped")

    @property
    def left(self) -> list[uuid.UUID]:
        """Jobs left to the rescuer (their outcome could not be recorded or learnt)."""
        return self.ids("left")

    @property
    def error_types(self) -> dict[uuid.UUID, str]:
        """The failure type of each job that failed on its way."""
        return {j.job_id: j.error_type for j in self.jobs if j.error_type is not None}

    @property
    def item_stage_seconds(self) -> list[Mapping[str, float]]:
        """The model stages of each rendered job."""
        return [j.model_seconds for j in self.jobs if j.model_seconds is not None]

    @property
    def stage_seconds(self) -> dict[str, float]:
        """Seconds per stage over the batch: the model stages summed over its jobs, and its own stages."""
        total: dict[str, float] = {}
        for timings in self.item_stage_seconds:
            for stage, seconds in timings.items():
                total[stage] = total.get(stage, 0.0) + seconds
        for stage, seconds in self.batch_seconds.items():
            total[stage] = total.get(stage, 0.0) + seconds
        return total


class BatchPipeline:
    """Runs claimed jobs through the model and records the outcome of each."""

    def __init__(self, queue: QueueDoor, storage: Storage, runner: ModelRunner, claims: ClaimRegistry,
                 failpoints: Failpoints | None = None,
                 clock: Callable[[], float] = time.monotonic, health: Health | None = None) -> None:
        """A pipeline over these ports; ``health`` tells a shared service's outage from a job's own failure."""
        self.queue = queue
        self.storage = storage
        self.runner = runner
        self.claims = claims
        self.failpoints = failpoints or Failpoints()
        self.clock = clock
        self.health = health

    def process(self, claims: Sequence[Claim], claimed_at: float) -> BatchReport:
        """Process a batch; never raises for a single job's failure.

        Whatever happens, the batch's claims leave the registry at the end (so they are no longer
        renewed): a job whose outcome could not be recorded goes back through the rescuer.
        """
        records = [JobRecord(claim) for claim in claims]
        seconds: dict[str, float] = {}
        try:
            self._timed("read", seconds, lambda: self.read(records))
            for record in records:
                self.failpoints.hit(record.claim.style_name)
            self._skip_if_storage_down(records)
            self.infer(records)
            self._timed("store", seconds, lambda: self.store(records))
            for record in records:
                if record.running:
                    self.failpoints.stall(record.claim.style_name)
            self._timed("database", seconds, lambda: self.finalise(records, claimed_at))
        finally:
            for record in records:
                self.claims.remove(record.job_id)
        return BatchReport.from_records(records, seconds)


    def read(self, records: Sequence[JobRecord]) -> None:
        """Read both input images of every running job."""
        for record in records:
            try:
                record.person = self.storage.get(record.claim.person_key)
                record.cloth = self.storage.get(record.claim.cloth_key)
            except Exception as exc:
                record.failure = classify(exc, context="reading the input images")
                record.outage = self._outage(record.failure)

    def infer(self, records: Sequence[JobRecord]) -> None:
        """One batched model call for the running jobs whose claims are still held."""
        from models.runner import TryOnJob

        live = [r for r in records if r.running and not self._lost(r)]
        if not live:
            return
        outcomes = self.runner.run_batch([TryOnJob(r.person or b"", r.cloth or b"", key=r.job_id) for r in live])
        for record, outcome in zip(live, outcomes, strict=True):
            if isinstance(outcome, Exception):
                record.failure = classify(outcome)
                continue
            record.result = outcome

    def store(self, records: Sequence[JobRecord]) -> None:
        """Write each result and thumbnail under the attempt's keys, in one storage call."""
        staged: list[tuple[JobRecord, list[tuple[str, bytes]]]] = []
        for record in records:
            if not record.running or record.result is None or self.claims.is_lost(record.job_id):
                continue
            try:
                staged.append((record, self._files(record.claim, record.result)))
            except Exception as exc:
                record.failure = classify(exc, context="storing the result")
        items = [item for _, files in staged for item in files]
        for record, files in staged:
            record.written.extend(key for key, _ in files)
        stored = self._put_many(items)
        position = 0
        for record, files in staged:
            mine = stored[position:position + len(files)]
            position += len(files)
            error = next((r for r in mine if isinstance(r, Exception)), None)
            if error is not None:
                record.failure = classify(error, context="storing the result")
                record.outage = self._outage(record.failure)
                self._delete(record.written)
                record.written.clear()
            else:
                result, thumb = mine
                assert isinstance(result, StoredObject) and isinstance(thumb, StoredObject)
                record.stored = (result, thumb)

    def finalise(self, records: Sequence[JobRecord], claimed_at: float) -> None:
        """One fenced completion for the stored results, then each failure on its own."""
        elapsed_ms = int((self.clock() - claimed_at) * 1000)
        ready = [r for r in records if r.running and r.stored is not None]
        self._complete(ready, elapsed_ms)
        outage = [r for r in records if r.failure is not None and r.outcome == "running"
                  and (r.outage or self._outage(r.failure, since=claimed_at))]
        self._hand_back(outage, "a shared service is down")
        unrecorded: list[JobRecord] = []
        for record in records:
            if record.failure is not None and record.outcome == "running":
                if unrecorded or not self._fail(record, elapsed_ms):
                    unrecorded.append(record)  # the database is away: no use asking it again per job
            elif record.outcome == "running":
                # Lost before it was stored (cancelled or rescued): nothing of it remains.
                self._drop(record, "claim lost (cancelled or rescued); dropping this attempt")
        self._hand_back(unrecorded, "the database is down", defer=True)


    def _complete(self, ready: Sequence[JobRecord], elapsed_ms: int) -> None:
        if not ready:
            return
        completions = [self._completion(r, elapsed_ms) for r in ready]
        try:
            outcomes = self.queue.complete(completions)
        except Exception as exc:
            # Refused, not ambiguous (the door settles broken connections itself): nothing was
            # recorded, so the files go and each job is retried or failed.
            failure = classify(exc, context="recording the result")
            for record in ready:
                self._delete(record.written)
                record.written.clear()
                record.failure = failure
            return
        for record in ready:
            outcome = outcomes.get(record.job_id, "unknown")
            with bound(job_id=str(record.job_id), conversion_id=str(record.claim.conversion_id)):
                if outcome == "completed":
                    record.outcome = "completed"
                    # Earlier attempts lost their claim and may have died mid-store.
                    claim = record.claim
                    self._delete([k for a in range(1, claim.attempt) for k in attempt_keys(claim.conversion_id, a)])
                    log.info("conversion completed", extra={"processing_time_ms": elapsed_ms,
                                                            "attempt": claim.attempt})
                elif outcome == "fenced":
                    self._delete(record.written)
                    self._drop(record, "completion fenced out (claim no longer held); result discarded")
                else:
                    record.outcome = "left"
                    log.warning("could not learn whether the result was recorded; keeping its files and "
                                "leaving the job to the rescuer")

    def _completion(self, record: JobRecord, elapsed_ms: int) -> Completion:
        assert record.stored is not None and record.result is not None
        result, thumb = record.stored
        return Completion(
            claim=record.claim, file_path=result.key, file_name=result.key.rsplit("/", 1)[-1],
            original_url=result.url, thumbnail_url=thumb.url, file_size=result.size,
            mime_type=record.result.mime_type, width=record.result.width, height=record.result.height,
            processing_time_ms=elapsed_ms, ai_model_version=record.result.model_version,
            subject=record.result.subject,
        )

    def _fail(self, record: JobRecord, elapsed_ms: int) -> bool:
        """Record the failure; False when the database could not be reached (nothing recorded)."""
        failure = record.failure
        assert failure is not None
        with bound(job_id=str(record.job_id), conversion_id=str(record.claim.conversion_id)):
            try:
                status = self.queue.fail(record.claim, failure, processing_time_ms=elapsed_ms,
                                         ai_model_version=self.runner.model_version)
            except QueueUnavailable as exc:
                # The database is away: the job is handed back uncharged once it is back (the door
                # remembers it), since an outage must not decide what the attempt costs.
                if self.health is not None:
                    self.health.report_down("database", str(exc))
                log.warning("database unavailable: could not record a failure",
                            extra={"error": str(exc), "error_type": failure.error_type})
                return False
            except Exception:
                record.outcome = "left"
                log.exception("could not record a failure; leaving the job to the rescuer")
                return True
            if status == JobStatus.QUEUED:
                record.outcome = "retried"
                log.warning("attempt failed; retrying later",
                            extra={"error_type": failure.error_type, "error": failure.message})
            elif status == JobStatus.FAILED:
                record.outcome = "failed"
                log.warning("conversion failed", extra={"error_type": failure.error_type, "error": failure.message})
            else:
                self._drop(record, "failure fenced out (claim no longer held)")
        return True


    def _outage(self, failure: Failure, since: float | None = None) -> bool:
        """Whether this failure is a shared service's outage (probed), not the job's own.

        ``since``: when the work began; an outage the process saw heal after it covers the failure
        too (a read that failed in the last second of an S3 stop, probed once the store was back).
        """
        return failure.transient and self.health is not None and self.health.confirm(failure.error_type, since=since)

    def _skip_if_storage_down(self, records: Sequence[JobRecord]) -> None:
        """With the store down, running the model is wasted: the results could not be stored."""
        if self.health is None or self.health.is_up("storage"):
            return
        for record in records:
            if record.running:
                record.failure = Failure("storage", "storage unavailable (a shared-service outage)", True)
                record.outage = True

    def _hand_back(self, records: Sequence[JobRecord], why: str, *, defer: bool = False) -> None:
        """Give the jobs back uncharged, in one statement (or, ``defer``, when the database is back)."""
        if not records:
            return
        now = self.queue.hand_back([(r.job_id, r.claim.attempt) for r in records], defer=defer)
        for record in records:
            record.outcome = "released"
            assert record.failure is not None
            with bound(job_id=str(record.job_id), conversion_id=str(record.claim.conversion_id)):
                log.warning("handed the job back uncharged: " + why,
                            extra={"error_type": record.failure.error_type, "error": record.failure.message,
                                   "deferred": not now})

    def _lost(self, record: JobRecord) -> bool:
        if self.claims.is_lost(record.job_id):
            self._drop(record, "claim lost (cancelled or rescued); dropping this attempt")
            return True
        return False

    def _drop(self, record: JobRecord, message: str) -> None:
        if record.outcome == "dropped":
            return
        record.outcome = "dropped"
        with bound(job_id=str(record.job_id), conversion_id=str(record.claim.conversion_id)):
            log.info(message)

    def _files(self, claim: Claim, result: TryOnResult) -> list[tuple[str, bytes]]:
        """The (key, bytes) pairs this attempt stores: the result and its thumbnail."""
        thumbnail = result.thumbnail
        if thumbnail is None:  # the worker's runner makes one with every result (``thumbnail_size``)
            raise ValueError("the model runner returned no thumbnail")
        return [(result_key(claim.conversion_id, claim.attempt, result.mime_type), result.image),
                (result_key(claim.conversion_id, claim.attempt, result.mime_type, thumbnail=True), thumbnail)]

    def _put_many(self, items: Sequence[tuple[str, bytes]]) -> list[StoredObject | StorageError]:
        return self.storage.put_many(items) if items else []

    def _delete(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        try:
            failed = self.storage.delete_many(keys)
        except Exception:
            log.exception("could not delete the files of a dropped attempt", extra={"keys": list(keys)})
            return
        if failed:
            # A rescued, failed or released attempt has a cleanup marker: the leader deletes them later.
            log.warning("could not delete the files of a dropped attempt yet", extra={"keys": failed})

    def _timed(self, stage: str, seconds: dict[str, float], work: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        try:
            work()
        finally:
            seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - t0
