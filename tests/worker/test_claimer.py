"""The claim policy (``worker.claimer.Claimer``) over in-memory fakes: one test per rule."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.worker.fakes import EchoRunner, FakeHealth, FakeQueue, MemoryStorage, make_claim
from worker.batch import BatchPipeline, BatchReport
from worker.claimer import DATABASE_DOWN_PAUSE_S, SERVICE_DOWN_PAUSE_S, Claimer
from worker.inflight import HeldClaim, InFlight
from worker.jobqueue import QueueUnavailable
from worker.jobs import Claim


class Fleet:
    """One worker process's claimer over fakes, with the messages it sent and the pauses it took."""

    def __init__(self, ready: Sequence[Claim] = (), *, batch_size: int = 2, health: FakeHealth | None = None) -> None:
        self.queue = FakeQueue(ready=list(ready))
        self.storage = MemoryStorage().with_inputs(*ready)
        self.inflight = InFlight()
        self.health = health or FakeHealth()
        self.sent = 0
        self.pauses: list[float] = []
        self.pipeline = BatchPipeline(self.queue, self.storage, EchoRunner(), self.inflight)
        self.claimer = Claimer(self.queue, self.inflight, self.health, self.send, batch_size=batch_size,
                               sleep=self.pauses.append, clock=lambda: 100.0)

    def send(self) -> bool:
        self.sent += 1
        return True

    def serve(self) -> BatchReport | None:
        return self.claimer.serve(self.pipeline.process)


def test_a_full_batch_is_processed_and_asks_for_a_follow_up() -> None:
    claims = [make_claim(), make_claim(), make_claim()]
    fleet = Fleet(claims, batch_size=2)
    report = fleet.serve()
    assert report is not None and report.completed == [c.job_id for c in claims[:2]]
    assert fleet.sent == 1 and fleet.queue.claim_calls == [(2, True)]
    assert len(fleet.inflight) == 0


def test_a_partial_batch_sends_no_follow_up() -> None:
    claim = make_claim()
    fleet = Fleet([claim], batch_size=2)
    report = fleet.serve()
    assert report is not None and report.completed == [claim.job_id]
    assert fleet.sent == 0


def test_a_message_that_finds_nothing_is_a_no_op() -> None:
    fleet = Fleet([], batch_size=2)
    assert fleet.serve() is None
    assert fleet.sent == 0 and fleet.pauses == [] and fleet.queue.claim_calls == [(2, True)]


def test_the_claims_are_held_in_the_registry_while_the_batch_runs() -> None:
    claims = [make_claim(), make_claim()]
    fleet = Fleet(claims, batch_size=2)
    held: list[set[object]] = []

    def process(batch: Sequence[Claim], claimed_at: float) -> BatchReport:
        held.append({(c.job_id, c.attempt, c.claimed_at) for c in fleet.inflight.snapshot()})
        return fleet.pipeline.process(batch, claimed_at)

    fleet.claimer.serve(process)
    assert held == [{(c.job_id, c.attempt, 100.0) for c in claims}]
    assert len(fleet.inflight) == 0


def test_a_suspect_job_is_claimed_only_by_a_process_that_holds_nothing() -> None:
    suspect, other = make_claim(suspect=True), make_claim()
    fleet = Fleet([suspect, other], batch_size=2)
    fleet.inflight.add(HeldClaim(make_claim().job_id, 1, 0.0))  # another thread's job
    report = fleet.serve()
    assert fleet.queue.claim_calls == [(2, False)]
    assert report is not None and report.completed == [other.job_id]
    assert fleet.queue.ready == [suspect]


def test_a_suspect_job_runs_alone_and_the_messages_meanwhile_are_owed_then_sent() -> None:
    suspect, later = make_claim(suspect=True), make_claim()
    fleet = Fleet([suspect, later], batch_size=2)
    during: list[BatchReport | None] = []

    def process(batch: Sequence[Claim], claimed_at: float) -> BatchReport:
        # Two more messages reach other threads of the process while the suspect job runs.
        during.extend([fleet.serve(), fleet.serve()])
        assert fleet.claimer.owed_messages == 2 and fleet.sent == 0
        return fleet.pipeline.process(batch, claimed_at)

    report = fleet.claimer.serve(process)
    assert report is not None and report.completed == [suspect.job_id]
    assert during == [None, None]
    assert fleet.queue.claim_calls == [(2, True)]  # the owed messages claimed nothing
    assert fleet.sent == 2 and fleet.claimer.owed_messages == 0  # a suspect alone is not a full batch
    assert fleet.queue.ready == [later]


def test_owed_messages_are_sent_even_when_the_suspect_batch_fails() -> None:
    suspect = make_claim(suspect=True)
    fleet = Fleet([suspect], batch_size=2)

    def process(batch: Sequence[Claim], claimed_at: float) -> BatchReport:
        fleet.serve()
        raise RuntimeError("the batch broke")

    with pytest.raises(RuntimeError):
        fleet.claimer.serve(process)
    assert fleet.sent == 1 and fleet.claimer.owed_messages == 0


def test_a_batch_without_a_suspect_job_pays_nothing() -> None:
    fleet = Fleet([make_claim()], batch_size=2)
    fleet.claimer.owed_messages = 3  # owed to a suspect batch still running in another thread
    fleet.serve()
    assert fleet.sent == 0 and fleet.claimer.owed_messages == 3


def test_nothing_is_claimed_while_a_shared_service_is_down() -> None:
    fleet = Fleet([make_claim()], health=FakeHealth(down={"storage"}))
    assert fleet.serve() is None
    assert fleet.queue.claim_calls == [] and fleet.pauses == [SERVICE_DOWN_PAUSE_S] and fleet.sent == 0


def test_redis_down_does_not_stop_the_claims() -> None:
    claim = make_claim()
    fleet = Fleet([claim], health=FakeHealth(down={"redis"}))
    report = fleet.serve()
    assert report is not None and report.completed == [claim.job_id]


def test_a_claim_that_finds_the_database_away_drops_the_message_and_opens_its_breaker() -> None:
    fleet = Fleet([make_claim()])
    fleet.queue.claim_raises = QueueUnavailable("claiming jobs: database unavailable")
    assert fleet.serve() is None
    assert fleet.health.reported == [("database", "claiming jobs: database unavailable")]
    assert fleet.pauses == [DATABASE_DOWN_PAUSE_S] and fleet.sent == 0 and len(fleet.inflight) == 0
    assert not fleet.health.allow_claim()
