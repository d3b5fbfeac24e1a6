"""Admission of a new conversion at the API: the key's priority ceiling and the owner's daily quota.

* A key carries the highest priority it may ask for (``api_keys.max_priority``, set when the key is
  created); a request above it is refused with 422 ``priority_not_allowed`` before anything is
  written. Trusted producers (the SQL producer role, the Python producer, the CLI) are not API keys
  and keep the full range.
* Each owner has a daily quota of conversions by plan (``vendor`` for vendors, else the request's
  ``conversion_type``): ``STAYLER_API_QUOTA_{FREE,PAID,VENDOR}_PER_DAY``, 0 = none. It is counted
  from the conversions the database already holds for that owner since 00:00 UTC (indexes
  ``(user_id, created_at)`` / ``(vendor_id, created_at)``, counted no further than the quota), and
  a refusal is 429 ``quota_exceeded`` with ``Retry-After`` set to the next UTC midnight.
"""

from __future__ import annotations

import datetime as dt
import math

import psycopg

from api.keys import Principal
from api.problems import Problem
from core.settings import Settings
from schema.queries import Q


def quota_of(settings: Settings, plan: str) -> int:
    """The daily quota of ``plan`` (0 = none)."""
    return {"free": settings.api_quota_free_per_day, "paid": settings.api_quota_paid_per_day,
            "vendor": settings.api_quota_vendor_per_day}[plan]


def plan_of(principal: Principal, conversion_type: str) -> str:
    """The plan a request is charged on."""
    return "vendor" if principal.vendor_id is not None else conversion_type


def check_priority(conn: psycopg.Connection, principal: Principal, priority: int) -> None:
    """Refuse a priority above the key's ceiling (422 ``priority_not_allowed``)."""
    row = conn.execute(Q.api_key_get_max_priority, {"id": principal.key_id}).fetchone()
    ceiling = int(row[0]) if row is not None else 0
    if priority > ceiling:
        raise Problem("priority_not_allowed", f"this key may ask for priority up to {ceiling}; got {priority}",
                      extra={"max_priority": ceiling})


def seconds_to_utc_midnight(now: dt.datetime | None = None) -> int:
    """Whole seconds until the next 00:00 UTC (at least 1)."""
    now = now or dt.datetime.now(dt.UTC)
    tomorrow = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((tomorrow - now).total_seconds()))


def check_quota(conn: psycopg.Connection, principal: Principal, conversion_type: str, settings: Settings) -> None:
    """Refuse when the owner already created its plan's daily quota today (429 ``quota_exceeded``)."""
    plan = plan_of(principal, conversion_type)
    quota = quota_of(settings, plan)
    if quota <= 0:
        return
    row = conn.execute(Q.conversion_count_owner_today, {**principal.owner_params(), "cap": quota,
                                                        "conversion_type": conversion_type}).fetchone()
    used = int(row[0]) if row is not None else 0
    if used >= quota:
        raise Problem("quota_exceeded", f"the {plan} plan allows {quota} conversions per day; all are used",
                      headers={"Retry-After": str(seconds_to_utc_midnight())},
                      extra={"plan": plan, "quota": quota, "used": used})


def admit(conn: psycopg.Connection, principal: Principal, *, priority: int, conversion_type: str,
          settings: Settings) -> None:
    """Both checks, priority first (a refused priority never counts against anything)."""
    check_priority(conn, principal, priority)
    check_quota(conn, principal, conversion_type, settings)
