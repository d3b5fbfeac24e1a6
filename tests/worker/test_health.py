"""Shared-service breakers (worker/health.py) and the pipeline over them: an outage costs no retry."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from models.runner import TryOnJob, TryOnResult
from storage import StorageError, StoredObject
from tests.worker.fakes import EchoRunner, FakeQueue, MemoryStorage, make_claim
from worker.batch import BatchPipeline, BatchReport
from worker.health import Health
from worker.inflight import HeldClaim, InFlight
from worker.jobs import Claim


@dataclass
class Switch:
    """A service that is up or down; counts its probes."""

    up: bool = True
    probes: int = 0

    def probe(self) -> None:
        self.probes += 1
        if not self.up:
            raise ConnectionError("connection refused")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_health(**switches: Switch) -> tuple[Health, list[tuple[str, bool]], list[int]]:
    changes: list[tuple[str, bool]] = []
    recovered: list[int] = []
    health = Health({name: s.probe for name, s in switches.items()}, clock=Clock(),
                    on_change=lambda name, up: changes.append((name, up)), on_recovered=lambda: recovered.append(1))
    return health, changes, recovered


def test_a_storage_error_with_the_store_up_is_the_jobs_own() -> None:
    store = Switch(up=True)
    health, changes, _ = make_health(storage=store)
    assert not health.confirm("storage")
    assert health.allow_claim() and changes == []


def test_a_storage_error_with_the_store_down_opens_the_breaker_and_stops_claims_until_a_probe_answers() -> None:
    store = Switch(up=False)
    health, changes, recovered = make_health(storage=store, database=Switch())
    assert health.confirm("storage")
    assert not health.allow_claim() and health.down() == ["storage"]
    assert health.confirm("storage")  # an open breaker answers without probing again
    assert store.probes == 1
    health.probe_down()
    assert not health.allow_claim() and recovered == []
    store.up = True
    health.breakers["storage"].clock = lambda: 10.0  # the previous probe is too old to reuse
    health.probe_down()
    assert health.allow_claim() and changes == [("storage", False), ("storage", True)] and recovered == [1]


def test_errors_of_the_job_itself_never_probe() -> None:
    store = Switch(up=False)
    health, _, _ = make_health(storage=store)
    for error_type in ("invalid_image", "inference", "internal", "input_missing"):
        assert not health.confirm(error_type)
    assert store.probes == 0


def test_a_batch_failing_at_once_costs_one_probe() -> None:
    store = Switch(up=True)
    health, _, _ = make_health(storage=store)
    for _ in range(8):
        health.confirm("storage")
    assert store.probes == 1


def test_redis_down_is_reported_but_does_not_stop_claims() -> None:
    redis = Switch(up=False)
    health, changes, _ = make_health(redis=redis, database=Switch(), storage=Switch())
    health.watch()
    assert health.down() == ["redis"] and health.allow_claim() and changes == [("redis", False)]


def test_the_monitor_heals_a_breaker_in_the_background() -> None:
    store = Switch(up=False)
    healed = threading.Event()
    health = Health({"storage": store.probe}, probe_interval_s=0.01, probe_reuse_s=0.0,
                    on_change=lambda name, up: healed.set() if up else None)
    health.start()
    try:
        health.report_down("storage", "refused")
        store.up = True
        assert healed.wait(10)
        assert health.allow_claim()
    finally:
        health.stop()


class DownStore(MemoryStorage):
    """Reads work until ``down`` is set; then every call fails as a stopped S3 endpoint does."""

    down: bool = False

    def put(self, key: str, data: bytes) -> StoredObject:
        if self.down:
            raise StorageError(f"could not write {key}: Could not connect to the endpoint URL")
        return super().put(key, data)

    def check(self) -> None:
        if self.down:
            raise StorageError("could not reach the store: Could not connect to the endpoint URL")


def run_with_health(storage: MemoryStorage, queue: FakeQueue, claims: list[Claim], health: Health) -> BatchReport:
    inflight = InFlight()
    for claim in claims:
        inflight.add(HeldClaim(claim.job_id, claim.attempt, time.monotonic()))
    return BatchPipeline(queue, storage, EchoRunner(), inflight, health=health).process(claims, time.monotonic())


def test_jobs_failing_because_the_store_is_down_are_handed_back_uncharged() -> None:
    # Regression (issue 26, defect 1): a 10 s S3 stop charged 600-900 retries per 1,500 conversions.
    claims = [make_claim(), make_claim()]
    storage = DownStore()
    storage.with_inputs(*claims)
    storage.down = True
    queue = FakeQueue()
    health = Health({"storage": storage.check})
    report = run_with_health(storage, queue, claims, health)
    assert queue.failures == []  # nothing charged
    assert sorted(report.released) == sorted(c.job_id for c in claims)
    assert sorted(queue.handed_back) == sorted((c.job_id, c.attempt) for c in claims)
    assert not health.allow_claim()


def test_one_object_refused_while_the_store_answers_is_charged_to_its_job() -> None:
    claims = [make_claim(), make_claim()]
    storage = MemoryStorage(broken={f"results/{claims[0].conversion_id}/a1.jpg"}).with_inputs(*claims)
    queue = FakeQueue()
    report = run_with_health(storage, queue, claims, Health({"storage": storage.check}))
    assert report.retried == [claims[0].job_id] and report.completed == [claims[1].job_id]
    assert [f.error_type for _, f in queue.failures] == ["storage"] and queue.handed_back == []


def test_with_the_store_known_down_the_model_is_not_run() -> None:
    claims = [make_claim()]
    storage = MemoryStorage().with_inputs(*claims)
    health = Health({"storage": storage.check})
    health.breakers["storage"].down_since = 0.0
    runner_calls: list[int] = []

    class CountingRunner(EchoRunner):
        def run_batch(self, jobs: Sequence[TryOnJob]) -> list[TryOnResult | Exception]:
            runner_calls.append(len(jobs))
            return super().run_batch(jobs)

    queue = FakeQueue()
    inflight = InFlight()
    inflight.add(HeldClaim(claims[0].job_id, claims[0].attempt, time.monotonic()))
    report = BatchPipeline(queue, storage, CountingRunner(), inflight, health=health).process(claims, time.monotonic())
    assert runner_calls == [] and report.released == [claims[0].job_id] and queue.failures == []


def test_a_failure_of_work_begun_before_an_outage_healed_is_the_outages() -> None:
    # Found by the S3-stop e2e test: reads that failed in the last second of the stop were probed
    # once the store was back, and charged.
    store = Switch(up=False)
    clock = Clock()
    health = Health({"storage": store.probe}, clock=clock)
    health.breakers["storage"].clock = clock
    assert health.confirm("storage")
    clock.now = 5.0
    store.up = True
    health.probe_down()
    assert health.allow_claim()
    assert health.confirm("storage", since=4.0)  # began at 4, the outage healed at 5
    clock.now = 20.0
    assert not health.confirm("storage", since=10.0)  # began after: the store answers, the job's own


def test_the_heartbeat_reports_the_database_and_writes_the_services_down_to_the_registry() -> None:
    import uuid as _uuid

    from worker.heartbeat import Heartbeat
    from worker.jobqueue import QueueUnavailable

    class Door:
        def __init__(self) -> None:
            self.down = True
            self.written: list[str | None] = []

        def renew(self, held: Sequence[tuple[_uuid.UUID, int]]) -> set[_uuid.UUID]:
            return {job_id for job_id, _ in held}

        def renew_worker(self, services_down: str | None = None) -> bool:
            if self.down:
                raise QueueUnavailable("renewing the worker: database unavailable")
            self.written.append(services_down)
            return True

        def flush(self) -> int:
            return 0

    door = Door()
    store = Switch(up=False)
    health, changes, _ = make_health(database=Switch(), storage=store)
    assert health.confirm("storage")
    beat = Heartbeat(door, InFlight(), interval_s=0.01, job_timeout_s=60, health=health)
    beat.start()
    try:
        deadline = time.monotonic() + 10
        while ("database", False) not in changes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not health.is_up("database")
        door.down = False
        while not door.written and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        beat.stop()
    assert door.written[0] in ("database,storage", "storage")  # written before the beat reports it back
    assert health.is_up("database") and not health.is_up("storage")
