"""The heartbeat over a fake queue door: renewals, lost and expired claims, unanswered claims."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from worker.heartbeat import Heartbeat
from worker.inflight import HeldClaim, InFlight


class Door:
    def __init__(self, still_held: set[uuid.UUID] | None = None) -> None:
        self.still_held = still_held
        self.renewed: list[list[tuple[uuid.UUID, int]]] = []
        self.worker_beats = 0
        self.flushes = 0

    def renew(self, held: Sequence[tuple[uuid.UUID, int]]) -> set[uuid.UUID]:
        self.renewed.append(list(held))
        ids = {job_id for job_id, _ in held}
        return ids if self.still_held is None else ids & self.still_held

    def renew_worker(self, services_down: str | None = None) -> bool:
        self.worker_beats += 1
        return True

    def flush(self) -> int:
        self.flushes += 1
        return 0


def test_a_beat_renews_held_claims_and_flags_the_ones_the_database_took_back() -> None:
    kept, taken = HeldClaim(uuid.uuid4(), 1, time.monotonic()), HeldClaim(uuid.uuid4(), 2, time.monotonic())
    inflight = InFlight()
    inflight.add(kept)
    inflight.add(taken)
    door = Door(still_held={kept.job_id})
    beats: list[float] = []
    Heartbeat(door, inflight, interval_s=1, job_timeout_s=60, on_beat=beats.append).beat()
    assert sorted(door.renewed[0]) == sorted([(kept.job_id, 1), (taken.job_id, 2)])
    assert not inflight.is_lost(kept.job_id) and inflight.is_lost(taken.job_id)
    assert door.worker_beats == 1 and door.flushes == 1 and len(beats) == 1


def test_a_claim_past_the_job_timeout_is_no_longer_renewed() -> None:
    old = HeldClaim(uuid.uuid4(), 1, time.monotonic() - 120)
    inflight = InFlight()
    inflight.add(old)
    door = Door()
    Heartbeat(door, inflight, interval_s=1, job_timeout_s=60).beat()
    assert door.renewed == []
    assert inflight.is_lost(old.job_id)
    assert door.flushes == 1  # unanswered claims are still released
