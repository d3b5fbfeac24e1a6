"""Fair share from the leader: the fleet's plan settings into ``fair_plans``, and per-plan gauges.

The claim reads weights and caps from the database (``fair_plans``) so that every producer and
every worker sees the same values; the leader writes the fleet's settings there. The gauges are per
plan (free, paid, vendor), never per owner, so Prometheus' label set stays bounded.
prometheus_client is imported when ``FairGauges`` is created (after the multiprocess env is set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from leader.config import FairShareSettings
from leader.duties import Duty
from schema.queries import Q

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

#: Bounded label values of the per-plan gauges.
PLANS = ("free", "paid", "vendor")
#: The per-plan families (only the leader's host exports them while fresh, like the queue gauges).
FAIR_METRICS = frozenset({"stayler_fair_jobs_queued", "stayler_fair_jobs_processing",
                          "stayler_fair_owners_throttled"})


def plan_settings(settings: FairShareSettings) -> dict[str, Any]:
    """The ``fair_plan_configure`` parameters from the settings."""
    cap = settings.owner_max_processing
    vendor_cap = settings.owner_max_processing_vendor
    return {"weight_free": settings.fair_weight_free, "weight_paid": settings.fair_weight_paid,
            "weight_vendor": settings.fair_weight_vendor, "cap_free": cap, "cap_paid": cap,
            "cap_vendor": cap if vendor_cap is None else vendor_cap}


def configure_plans(conn: psycopg.Connection, settings: FairShareSettings) -> int:
    """Write the settings' weights and caps into ``fair_plans``; returns the plans changed."""
    cur = conn.execute(Q.fair_plan_configure, plan_settings(settings))
    return max(cur.rowcount, 0)


@dataclass(frozen=True)
class PlanStats:
    """One plan's reading."""

    plan: str
    queued: int
    processing: int
    throttled: int


def read_plan_stats(conn: psycopg.Connection) -> list[PlanStats]:
    """Queued and processing jobs, and owners held at their cap, per plan."""
    return [PlanStats(str(p), int(q), int(w), int(t)) for p, q, w, t in conn.execute(Q.fair_plan_get_stats).fetchall()]


class FairGauges:
    """``stayler_fair_jobs_queued|processing{plan}`` and ``stayler_fair_owners_throttled{plan}``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Define the gauges (leader-only values, ``livemostrecent`` like the queue gauges)."""
        from prometheus_client import CollectorRegistry, Gauge

        reg = registry if registry is not None else CollectorRegistry()
        mode: Any = "livemostrecent"
        self.queued = Gauge("stayler_fair_jobs_queued", "Queued jobs by the plan of their owner.", ["plan"],
                            registry=reg, multiprocess_mode=mode)
        self.processing = Gauge("stayler_fair_jobs_processing", "Processing jobs by plan.", ["plan"],
                                registry=reg, multiprocess_mode=mode)
        self.throttled = Gauge("stayler_fair_owners_throttled", "Owners at their concurrency cap with ready jobs "
                               "waiting, by plan.", ["plan"], registry=reg, multiprocess_mode=mode)

    def publish(self, stats: list[PlanStats]) -> None:
        """Set every plan's gauges (a plan missing from ``stats`` reads 0)."""
        by_plan = {s.plan: s for s in stats}
        for plan in PLANS:
            s = by_plan.get(plan, PlanStats(plan, 0, 0, 0))
            self.queued.labels(plan).set(s.queued)
            self.processing.labels(plan).set(s.processing)
            self.throttled.labels(plan).set(s.throttled)


class FairnessDuty(Duty):
    """Keeps ``fair_plans`` on the fleet's settings and publishes the per-plan gauges."""

    name = "fairness"

    def __init__(self, settings: FairShareSettings, gauges: FairGauges | None = None) -> None:
        """Run every ``queue_stats_interval_s``."""
        self.settings = settings
        self.gauges = gauges
        self.interval_s = settings.queue_stats_interval_s

    def run_once(self, conn: psycopg.Connection) -> int:
        """Configure the plans, then read and publish the gauges (when metrics are on)."""
        changed = configure_plans(conn, self.settings)
        if self.gauges is not None:
            self.gauges.publish(read_plan_stats(conn))
        return changed
