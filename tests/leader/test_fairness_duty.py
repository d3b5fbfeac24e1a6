"""The leader's fairness duty: the fleet's settings reach fair_plans (the claim reads them there), and
the per-plan gauges carry queued, processing and throttled by plan, never by owner."""

from __future__ import annotations

import psycopg
from prometheus_client import CollectorRegistry

from core.settings import Settings
from leader.config import FairShareSettings
from leader.fairness import FairGauges, FairnessDuty
from tests.queue.ops import claim_jobs
from tests.support.factories import make_conversion, make_user


def test_settings_reach_fair_plans_and_the_gauges_count_by_plan(db: psycopg.Connection) -> None:
    registry = CollectorRegistry()
    settings = Settings(fair_weight_paid=3.0, fair_weight_vendor=2.0, owner_max_processing=1,
                        owner_max_processing_vendor=5)
    duty = FairnessDuty(FairShareSettings.from_settings(settings), FairGauges(registry))
    assert duty.run_once(db) == 3
    plans = {p: (w, c) for p, w, c in db.execute("SELECT plan, weight, max_processing FROM fair_plans")}
    assert plans == {"free": (1.0, 1), "paid": (3.0, 1), "vendor": (2.0, 5)}
    user = make_user(db)
    for _ in range(3):
        make_conversion(db, user_id=user)
    claim_jobs(db, "w", 8)  # the cap of 1 holds the user back
    assert duty.run_once(db) == 0  # nothing changed: nothing written

    def value(name: str, plan: str) -> float | None:
        return registry.get_sample_value(name, {"plan": plan})

    assert value("stayler_fair_jobs_queued", "free") == 2
    assert value("stayler_fair_jobs_processing", "free") == 1
    assert value("stayler_fair_owners_throttled", "free") == 1
    assert value("stayler_fair_owners_throttled", "vendor") == 0
    labels = {s.labels.get("plan") for m in registry.collect() for s in m.samples}
    assert labels == {"free", "paid", "vendor"}
