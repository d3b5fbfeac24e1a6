"""What the console's pages read: every statement a named query of schema/queries/, each on an index
(docs/operations.md, "Query budget")."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from schema.queries import Q

PAGE_SIZE = 50


def _rows(conn: psycopg.Connection, query: Any, params: dict[str, Any] | None = None, *,
          prepare: bool | None = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params, prepare=prepare).fetchall()


def _one(conn: psycopg.Connection, query: Any, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchone()


def overview(conn: psycopg.Connection, alive_within_s: float) -> dict[str, Any]:
    """The overview's numbers: queue, throughput, errors, workers, leader, dispatch switch, audit."""
    return {
        "stats": _one(conn, Q.job_get_queue_stats, {"alive_within_s": alive_within_s}),
        "throughput": _rows(conn, Q.conversion_metric_count_per_minute),
        "errors": _rows(conn, Q.conversion_metric_count_errors_last_hour),
        "workers": _rows(conn, Q.worker_list_live),
        "leader": _rows(conn, Q.leader_lease_list),
        "controls": _one(conn, Q.fleet_control_get),
        "actions": _rows(conn, Q.operator_action_list_recent, {"limit": 8}),
        "oncall": oncall(conn),
    }


def oncall(conn: psycopg.Connection) -> dict[str, Any]:
    """The last hour as the operator on call reads it: latency, failure ratio, cancelled, retried and
    rescued counts, the queue's trend, and the webhooks' health."""
    ended = _one(conn, Q.conversion_metric_summary_last_hour) or {}
    attempts = _one(conn, Q.job_attempt_count_requeued_last_hour) or {}
    finished = int(ended.get("completed") or 0) + int(ended.get("failed") or 0)
    trend = _rows(conn, Q.conversion_count_trend)
    return {**ended, **attempts,
            "failure_ratio": (int(ended.get("failed") or 0) / finished) if finished else None,
            "trend": trend, "trend_net": sum(int(r["submitted"]) - int(r["ended"]) for r in trend),
            "webhooks": _one(conn, Q.webhook_get_health) or {}}


@dataclass
class Filters:
    """The list's filters, as the query string gives them (empty = no filter)."""

    status: str = ""
    error_type: str = ""
    owner: str = ""
    model_version: str = ""
    since: str = ""
    until: str = ""
    problems: list[str] = field(default_factory=list)

    def query(self) -> dict[str, str]:
        """The filters that are set, for links and forms."""
        return {k: v for k, v in (("status", self.status), ("error_type", self.error_type), ("owner", self.owner),
                                  ("model_version", self.model_version), ("since", self.since),
                                  ("until", self.until)) if v}

    @property
    def by_outcome(self) -> bool:
        """Whether the page is driven by conversion_metrics (error type or model version set)."""
        return bool(self.error_type or self.model_version)


def _time(text: str, name: str, problems: list[str]) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        problems.append(f"{name} is not a date and time")
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # the console shows and reads UTC


def encode_cursor(sort_at: datetime, ident: uuid.UUID) -> str:
    """An opaque cursor for the row after which the next page starts."""
    raw = f"{sort_at.isoformat()}|{ident}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID] | None:
    """The cursor's position, or None when it is not one the console made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, ident = raw.partition("|")
        return datetime.fromisoformat(at), uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


def page_params(conn: psycopg.Connection, filters: Filters, cursor: str | None,
                limit: int = PAGE_SIZE) -> dict[str, Any]:
    """The bound parameters of a page query; unusable filters are reported in ``filters.problems``."""
    user_id = vendor_id = None
    if filters.owner:
        try:
            owner = uuid.UUID(filters.owner)
        except ValueError:
            filters.problems.append("owner is not an id")
            owner = None
        if owner is not None:
            row = conn.execute(Q.owner_get_kind, {"id": owner}).fetchone()
            is_user, is_vendor = (bool(row[0]), bool(row[1])) if row else (False, False)
            if is_vendor and not is_user:
                vendor_id = owner
            else:
                user_id = owner  # an unknown id simply matches nothing
    after = decode_cursor(cursor) if cursor else None
    if cursor and after is None:
        filters.problems.append("the page cursor is not one the console made; showing the first page")
    return {"status": filters.status or None, "error_type": filters.error_type or None,
            "model_version": filters.model_version or None, "user_id": user_id, "vendor_id": vendor_id,
            "since": _time(filters.since, "from", filters.problems),
            "until": _time(filters.until, "until", filters.problems),
            "after_at": after[0] if after else None, "after_id": after[1] if after else None, "limit": limit}


def conversion_page(conn: psycopg.Connection, filters: Filters, cursor: str | None,
                    limit: int = PAGE_SIZE) -> tuple[list[dict[str, Any]], str | None]:
    """One keyset page of conversions (newest first) and the cursor of the next, if any.

    The page query runs unprepared so the planner sees which filters are set and picks their index.
    """
    params = page_params(conn, filters, cursor, limit)
    query = Q.conversion_list_page_by_outcome if filters.by_outcome else Q.conversion_list_page
    keys = _rows(conn, query, params, prepare=False)
    if not keys:
        return [], None
    by_id = {r["id"]: r for r in _rows(conn, Q.conversion_get_rows, {"ids": [k["id"] for k in keys]})}
    rows = [{**by_id[k["id"]], "sort_at": k["sort_at"]} for k in keys if k["id"] in by_id]
    next_cursor = encode_cursor(keys[-1]["sort_at"], keys[-1]["id"]) if len(keys) == limit else None
    return rows, next_cursor


def conversion_ids(conn: psycopg.Connection, filters: Filters, limit: int) -> list[uuid.UUID]:
    """Up to ``limit`` ids matching the filters, newest first (for a bulk action by filter)."""
    ids: list[uuid.UUID] = []
    cursor: str | None = None
    while len(ids) < limit:
        params = page_params(conn, filters, cursor, min(PAGE_SIZE * 4, limit - len(ids)))
        query = Q.conversion_list_page_by_outcome if filters.by_outcome else Q.conversion_list_page
        keys = _rows(conn, query, params, prepare=False)
        ids.extend(k["id"] for k in keys)
        if len(keys) < params["limit"]:
            break
        cursor = encode_cursor(keys[-1]["sort_at"], keys[-1]["id"])
    return ids


def conversion_detail(conn: psycopg.Connection, conversion_id: uuid.UUID) -> dict[str, Any] | None:
    """A conversion with its job rows, every ended attempt, metrics row, usage history, audit rows and retries."""
    row = _one(conn, Q.conversion_get_detail, {"id": conversion_id})
    if row is None:
        return None
    params = {"id": conversion_id}
    return {"conversion": row, "jobs": _rows(conn, Q.job_list_by_conversion, params),
            "attempts": _rows(conn, Q.job_attempt_list_by_conversion, params),
            "metrics": _one(conn, Q.conversion_metric_get, params),
            "usage": _rows(conn, Q.image_usage_list_by_conversion, params),
            "actions": _rows(conn, Q.operator_action_list_by_conversion, params),
            "retries": _rows(conn, Q.conversion_list_retries, params)}


def model_versions(conn: psycopg.Connection) -> list[str]:
    """Model versions the live fleet reports, as suggestions for the filter."""
    return [r[0] for r in conn.execute(Q.worker_list_model_versions).fetchall()]


def image_key(conn: psycopg.Connection, image_id: uuid.UUID) -> dict[str, Any] | None:
    """An image's storage key, type and (for a result) attempt."""
    return _one(conn, Q.image_get_key, {"id": image_id})
