"""The batch pipeline over in-memory fakes of its ports: every outcome of a job, fast."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import psycopg

from models.runner import TryOnJob, TryOnResult
from storage import attempt_keys
from tests.worker.fakes import EchoRunner, FakeQueue, MemoryStorage, make_claim
from worker.batch import BatchPipeline, BatchReport
from worker.inflight import HeldClaim, InFlight
from worker.jobqueue import QueueUnavailable
from worker.jobs import Claim


def run(claims: list[Claim], *, queue: FakeQueue | None = None, storage: MemoryStorage | None = None,
        lost: set[int] | None = None) -> tuple[FakeQueue, MemoryStorage, InFlight, BatchReport]:
    queue = queue or FakeQueue()
    storage = storage or MemoryStorage().with_inputs(*claims)
    inflight = InFlight()
    for claim in claims:
        inflight.add(HeldClaim(claim.job_id, claim.attempt, time.monotonic()))
    inflight.mark_lost({claims[i].job_id for i in (lost or set())})
    report = BatchPipeline(queue, storage, EchoRunner(), inflight).process(claims, time.monotonic())
    return queue, storage, inflight, report


def test_a_batch_completes_with_one_result_and_thumbnail_each_and_releases_its_claims() -> None:
    claims = [make_claim(), make_claim()]
    queue, storage, inflight, report = run(claims)
    assert report.completed == [c.job_id for c in claims]
    assert len(storage.results()) == 4
    assert [c.file_path for c in queue.completed] == [
        f"results/{c.conversion_id}/a1.jpg" for c in claims]
    assert len(inflight) == 0


def test_a_lost_claim_writes_nothing_and_the_rest_of_the_batch_completes() -> None:
    claims = [make_claim(), make_claim()]
    queue, storage, _, report = run(claims, lost={0})
    assert report.dropped == [claims[0].job_id]
    assert report.completed == [claims[1].job_id]
    assert all(str(claims[0].conversion_id) not in key for key in storage.results())
    assert [c.claim for c in queue.completed] == [claims[1]]


def test_one_file_of_a_batch_failing_fails_only_its_job_and_leaves_no_half_result() -> None:
    claims = [make_claim(), make_claim()]
    storage = MemoryStorage(broken={f"results/{claims[0].conversion_id}/a1.thumb.jpg"}).with_inputs(*claims)
    queue, storage, _, report = run(claims, storage=storage)
    assert report.completed == [claims[1].job_id]
    assert report.retried == [claims[0].job_id]
    assert [(c.job_id, f.error_type) for c, f in queue.failures] == [(claims[0].job_id, "storage")]
    assert storage.results() == sorted(f"results/{claims[1].conversion_id}/{n}" for n in ("a1.jpg", "a1.thumb.jpg"))


def test_a_fenced_out_completion_deletes_its_files() -> None:
    claims = [make_claim()]
    _queue, storage, _, report = run(claims, queue=FakeQueue(outcome="fenced"))
    assert report.dropped == [claims[0].job_id]
    assert storage.results() == []


def test_an_ambiguous_completion_keeps_the_files_and_leaves_the_job_to_the_rescuer() -> None:
    # Regression (issue 10, defect 1): any exception from the completion deleted the files, though
    # the server may have committed a result row pointing at them.
    claims = [make_claim()]
    queue, storage, inflight, report = run(claims, queue=FakeQueue(outcome="unknown"))
    assert report.left == [claims[0].job_id]
    assert len(storage.results()) == 2
    assert queue.failures == []  # not charged as a failure either
    assert len(inflight) == 0  # no longer renewed: the rescuer settles it


def test_a_refused_completion_deletes_the_files_and_retries_the_jobs() -> None:
    claims = [make_claim()]
    refused = psycopg.errors.RaiseException("invalid_status_transition")
    queue, storage, _, report = run(claims, queue=FakeQueue(complete_raises=refused))
    assert storage.results() == []
    assert report.retried == [claims[0].job_id]
    assert queue.failures[0][1].error_type == "database"


def test_database_down_while_recording_a_failure_hands_the_job_back_once_it_is_back() -> None:
    # Issue 26: the job used to be left to the rescuer (a lost attempt); the outage is not its fault.
    claim = make_claim()
    storage = MemoryStorage().with_inputs(claim)
    storage.objects[claim.person_key] = b"bad"
    queue = FakeQueue(fail_raises=QueueUnavailable("recording a failure: database unavailable"))
    _, _, inflight, report = run([claim], queue=queue, storage=storage)
    assert report.released == [claim.job_id] and report.left == []
    assert queue.handed_back == [(claim.job_id, claim.attempt)]
    assert report.error_types == {claim.job_id: "invalid_image"}
    assert len(inflight) == 0


def test_a_missing_input_fails_permanently_without_running_the_model() -> None:
    claim = make_claim()
    queue = FakeQueue(fail_status="failed")
    _, storage, _, report = run([claim], queue=queue, storage=MemoryStorage())
    assert report.failed == [claim.job_id]
    assert queue.failures[0][1].error_type == "input_missing"
    assert storage.results() == []


def test_completion_deletes_the_files_of_earlier_attempts() -> None:
    claim = make_claim(attempt=3)
    storage = MemoryStorage().with_inputs(claim)
    for attempt in (1, 2):
        for key in attempt_keys(claim.conversion_id, attempt):
            storage.objects[key] = b"stale"
    _, storage, _, report = run([claim], storage=storage)
    assert report.completed == [claim.job_id]
    assert storage.results() == sorted(f"results/{claim.conversion_id}/{n}" for n in ("a3.jpg", "a3.thumb.jpg"))


def test_a_result_without_a_thumbnail_fails_its_job_and_stores_nothing() -> None:
    class NoThumbnails(EchoRunner):
        def run_batch(self, jobs: Sequence[TryOnJob]) -> list[TryOnResult | Exception]:
            return [replace(r, thumbnail=None) if isinstance(r, TryOnResult) else r for r in super().run_batch(jobs)]

    claim = make_claim()
    queue = FakeQueue()
    storage = MemoryStorage().with_inputs(claim)
    inflight = InFlight()
    inflight.add(HeldClaim(claim.job_id, claim.attempt, time.monotonic()))
    report = BatchPipeline(queue, storage, NoThumbnails(), inflight).process([claim], time.monotonic())
    assert report.retried == [claim.job_id] and storage.results() == [] and queue.completed == []


def test_the_report_holds_one_outcome_per_job_in_claim_order() -> None:
    claims = [make_claim(), make_claim(), make_claim()]
    storage = MemoryStorage().with_inputs(*claims)
    storage.objects[claims[1].person_key] = b"bad"
    _, _, _, report = run(claims, storage=storage, lost={2})
    assert [(j.claim, j.outcome) for j in report.jobs] == [
        (claims[0], "completed"), (claims[1], "retried"), (claims[2], "dropped")]
    assert report.error_types == {claims[1].job_id: "invalid_image"}
    assert report.jobs[0].model_seconds is not None and report.jobs[1].model_seconds is None
    assert report.stage_seconds["inference"] == report.jobs[0].model_seconds["inference"]
    assert {"read", "store", "database"} <= set(report.stage_seconds)


def test_the_batch_metrics_count_each_job_once_by_its_outcome() -> None:
    from prometheus_client import CollectorRegistry

    from worker import metrics

    claims = [make_claim(), make_claim(), make_claim()]
    storage = MemoryStorage().with_inputs(*claims)
    storage.objects[claims[1].person_key] = b"bad"
    _, _, _, report = run(claims, storage=storage, lost={2})
    registry = CollectorRegistry()
    metrics.install(metrics.WorkerMetrics(registry))
    try:
        metrics.record_batch(report)
    finally:
        metrics.install(None)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"conversion_type": "free", **labels})

    assert value("stayler_jobs_completed_total") == 1
    assert value("stayler_jobs_retried_total", error_type="invalid_image") == 1
    assert value("stayler_jobs_dropped_total") == 1
    assert value("stayler_jobs_failed_total", error_type="invalid_image") is None
