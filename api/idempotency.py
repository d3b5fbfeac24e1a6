"""``Idempotency-Key`` (IETF httpapi draft): same key and payload → the same conversion; the same key
with another payload → 422; the same key while its first request is still running → 409.

The first request holds a transaction-scoped advisory lock on (owner, key) around the check and
``create_conversion()``; a concurrent one fails to take it and is told to retry.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api.keys import Principal
from api.problems import Problem
from api.schemas import ConversionIn
from producer.conversions import submit
from schema.queries import Q

MAX_KEY_LENGTH = 255


def lock_key(owner_id: uuid.UUID, key: str) -> int:
    """The advisory lock id of (owner, key): a signed 64-bit integer."""
    digest = hashlib.sha256(f"stayler-idempotency:{owner_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _same_payload(existing: dict[str, Any], body: ConversionIn) -> bool:
    return (existing["user_image_id"] == body.user_image_id and existing["cloth_image_id"] == body.cloth_image_id
            and existing["conversion_type"] == body.conversion_type and existing["style_name"] == body.style_name
            and (existing["metadata"] or {}) == body.metadata
            and (existing["priority"] is None or existing["priority"] == body.priority))


def _submit(conn: psycopg.Connection, principal: Principal, body: ConversionIn, key: str | None,
            max_retries: int) -> uuid.UUID:
    return submit(conn, user_id=principal.user_id, vendor_id=principal.vendor_id, user_image_id=body.user_image_id,
                  cloth_image_id=body.cloth_image_id, conversion_type=body.conversion_type,
                  style_name=body.style_name, priority=body.priority, max_retries=max_retries,
                  metadata=body.metadata, idempotency_key=key)


def create(conn: psycopg.Connection, principal: Principal, body: ConversionIn, key: str | None,
           max_retries: int) -> tuple[uuid.UUID, bool]:
    """Create the conversion (or find the one this key made); returns its id and whether it was replayed."""
    if key is None:
        return _submit(conn, principal, body, None, max_retries), False
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Problem("bad_request", f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters")
    with conn.transaction():
        locked = conn.execute(Q.db_lock_idempotency_key, {"lock_key": lock_key(principal.owner_id, key)}).fetchone()
        if locked is None or not locked[0]:
            raise Problem("idempotency_key_in_use", "a request with this Idempotency-Key is still in progress",
                          headers={"Retry-After": "1"})
        with conn.cursor(row_factory=dict_row) as cur:
            existing = cur.execute(Q.conversion_get_request_by_idempotency_key,
                                   {"owner_id": principal.owner_id, "idempotency_key": key}).fetchone()
        if existing is not None:
            if not _same_payload(existing, body):
                raise Problem("idempotency_key_mismatch", "this Idempotency-Key was used with a different payload")
            return existing["id"], True
        return _submit(conn, principal, body, key, max_retries), False
