"""The settings slices: each consumer's part of ``Settings``, every field named after its setting."""

from __future__ import annotations

import dataclasses

import pytest

from core.settings import Settings
from leader.config import FairShareSettings, LeaderSettings, RetentionSettings
from worker.config import WorkerSettings

SLICES = [WorkerSettings, LeaderSettings, RetentionSettings, FairShareSettings]
NESTED = {"leader", "retention", "fair_share"}


@pytest.mark.parametrize("cls", SLICES, ids=lambda c: c.__name__)
def test_every_field_of_a_slice_is_a_setting_of_the_same_name(cls: type) -> None:
    fields = {f.name for f in dataclasses.fields(cls)} - NESTED
    assert fields <= set(Settings.model_fields)


def test_a_worker_slice_carries_the_values_of_its_settings() -> None:
    settings = Settings(claim_batch_size=5, leader_lease_s=7.0, retention_batch_size=3, fair_weight_paid=2.0,
                        worker_processes=3, worker_threads=4, failpoints="x")
    worker = WorkerSettings.from_settings(settings)
    assert (worker.claim_batch_size, worker.failpoints, worker.worker_threads) == (5, "x", 4)
    assert worker.leader == LeaderSettings.from_settings(settings)
    assert (worker.leader.leader_lease_s, worker.leader.worker_processes) == (7.0, 3)
    assert worker.leader.retention.retention_batch_size == 3
    assert worker.leader.fair_share.fair_weight_paid == 2.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        worker.claim_batch_size = 6  # type: ignore[misc]
