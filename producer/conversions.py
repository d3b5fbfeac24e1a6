"""Creating, cancelling and inspecting conversions, through the schema's SQL functions."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import class_row, dict_row

from producer.errors import ProducerError, database_errors
from producer.wake import Waker
from schema.queries import Q


def submit(conn: psycopg.Connection, *, user_image_id: uuid.UUID, cloth_image_id: uuid.UUID,
           user_id: uuid.UUID | None = None, vendor_id: uuid.UUID | None = None, conversion_type: str = "free",
           style_name: str | None = None, priority: int = 0, max_retries: int = 3,
           metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
           waker: Waker | None = None) -> uuid.UUID:
    """Create a conversion and its queued job with ``create_conversion()``; returns the conversion id.

    With an ``idempotency_key`` already used by the same owner, the existing conversion's id comes
    back and nothing new is written. With a ``waker`` and an autocommit connection, a worker is
    woken right after the commit (``producer.wake``).
    """
    with database_errors("creating the conversion"):
        row = conn.execute(Q.create_conversion, {
            "user_id": user_id, "vendor_id": vendor_id, "user_image_id": user_image_id,
            "cloth_image_id": cloth_image_id, "conversion_type": conversion_type, "style_name": style_name,
            "priority": priority, "max_retries": max_retries, "metadata": json.dumps(dict(metadata or {})),
            "idempotency_key": idempotency_key,
        }).fetchone()
    assert row is not None
    if waker is not None:
        waker.after_commit(conn)
    return uuid.UUID(str(row[0]))


def cancel(conn: psycopg.Connection, conversion_id: uuid.UUID, *, user_id: uuid.UUID | None = None,
           vendor_id: uuid.UUID | None = None) -> str:
    """Cancel a conversion as its owner; returns its status afterwards.

    Exactly one of ``user_id`` / ``vendor_id`` is required; ``cancel_conversion()`` refuses anyone but
    the owner (``not_owner``). Operators use :func:`operator_cancel`.
    """
    if (user_id is None) == (vendor_id is None):
        raise ProducerError("owner_required", "cancelling needs exactly one of a user id or a vendor id")
    with database_errors("cancelling the conversion"):
        row = conn.execute(Q.cancel_conversion, {"conversion_id": conversion_id, "user_id": user_id,
                                                 "vendor_id": vendor_id}).fetchone()
    if row is None or row[0] is None:  # audited as not_found by the function
        raise ProducerError("conversion_not_found", f"conversion {conversion_id} does not exist")
    return str(row[0])


def operator_cancel(conn: psycopg.Connection, conversion_id: uuid.UUID, *, operator: str, reason: str) -> str:
    """Cancel anyone's conversion as an operator; the action is written to ``operator_actions``."""
    with database_errors("cancelling the conversion"):
        row = conn.execute(Q.operator_cancel_conversion, {"conversion_id": conversion_id, "operator": operator,
                                                          "reason": reason}).fetchone()
    assert row is not None
    return str(row[0])


@dataclass(frozen=True)
class ConversionStatus:
    """A conversion with its job's attempts and last error."""

    id: uuid.UUID
    status: str
    user_id: uuid.UUID | None
    vendor_id: uuid.UUID | None
    conversion_type: str
    style_name: str | None
    error_message: str | None
    processing_time_ms: int | None
    result_image_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    job_id: uuid.UUID | None
    job_status: str | None
    attempt: int | None
    retry_count: int | None
    max_retries: int | None
    error_type: str | None
    job_error_message: str | None
    worker_id: str | None
    run_after: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    result_key: str | None
    result_url: str | None


def status(conn: psycopg.Connection, conversion_ids: Sequence[uuid.UUID]) -> list[ConversionStatus]:
    """The status of each conversion found (unknown ids are left out)."""
    with database_errors("reading the status"), conn.cursor(row_factory=class_row(ConversionStatus)) as cur:
        rows = cur.execute(Q.conversion_get_many, {"ids": list(conversion_ids)}).fetchall()
    order = {cid: i for i, cid in enumerate(conversion_ids)}
    return sorted(rows, key=lambda r: order.get(r.id, 0))


def conversion_stats(conn: psycopg.Connection, *, user_id: uuid.UUID | None = None,
                     vendor_id: uuid.UUID | None = None, date_from: datetime | None = None,
                     date_to: datetime | None = None) -> dict[str, Any]:
    """``get_conversion_stats()`` as a dict (numbers as ``int`` or ``float``, never ``Decimal``)."""
    with database_errors("reading conversion stats"), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(Q.get_conversion_stats, {"user_id": user_id, "vendor_id": vendor_id,
                                               "date_from": date_from, "date_to": date_to}).fetchone()
    return _plain_numbers(row or {})


def image_stats(conn: psycopg.Connection, *, owner_id: uuid.UUID | None = None, owner_type: str | None = None,
                image_type: str | None = None) -> dict[str, Any]:
    """``get_image_stats()`` as a dict (numbers as ``int`` or ``float``, never ``Decimal``)."""
    with database_errors("reading image stats"), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(Q.get_image_stats, {"owner_id": owner_id, "owner_type": owner_type,
                                          "image_type": image_type}).fetchone()
    return _plain_numbers(row or {})


def _plain_numbers(row: dict[str, Any]) -> dict[str, Any]:
    """NUMERIC columns arrive as ``Decimal``, which JSON encoders turn into strings: make them floats."""
    return {k: float(v) if isinstance(v, Decimal) else v for k, v in row.items()}
