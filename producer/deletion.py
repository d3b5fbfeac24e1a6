"""Deleting an owner's images and conversions, and erasing an owner: rows first, then the objects.

Each deletion is one SQL function (``delete_image()``, ``delete_conversion()``, ``erase_owner()``;
0440_erasure.sql) that removes the rows and, in the same transaction, writes a due cleanup marker for
every object key of every row it removed. Right after the commit the objects are deleted here
(``leader.sweep``); if this process dies first, or the store refuses, the leader's orphans duty
deletes them from the markers. Conversions still running are cancelled first by the SQL function,
so a worker's completion arriving later is fenced out and deletes its own files.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from leader.sweep import SweepResult, sweep_due
from producer.errors import database_errors
from schema.queries import Q
from storage import Storage


@dataclass(frozen=True)
class Deletion:
    """What one deletion removed: the object keys marked, and what the sweep right after did with them."""

    keys: list[str]
    swept: SweepResult


def _owner(user_id: uuid.UUID | None, vendor_id: uuid.UUID | None) -> dict[str, Any]:
    return {"user_id": user_id, "vendor_id": vendor_id}


def _sweep_now(conn: psycopg.Connection, storage: Storage, keys: list[str]) -> SweepResult:
    """Delete the objects of a committed deletion; a failure is left to the orphans duty."""
    try:
        return sweep_due(conn, storage, keys=keys)
    except Exception:  # the rows are gone and the markers durable: the duty finishes
        return SweepResult(failed=len(keys))


def delete_image(conn: psycopg.Connection, storage: Storage, image_id: uuid.UUID, *,
                 user_id: uuid.UUID | None = None, vendor_id: uuid.UUID | None = None) -> Deletion:
    """Delete the owner's image, every conversion that used it, their results, and all their objects."""
    with database_errors("deleting the image"), conn.transaction():
        keys = [r[0] for r in conn.execute(Q.delete_image, {"image_id": image_id,
                                                            **_owner(user_id, vendor_id)}).fetchall()]
    return Deletion(keys, _sweep_now(conn, storage, keys))


def delete_conversion(conn: psycopg.Connection, storage: Storage, conversion_id: uuid.UUID, *,
                      user_id: uuid.UUID | None = None, vendor_id: uuid.UUID | None = None) -> Deletion:
    """Delete the owner's conversion (cancelled first if running), its result and thumbnail."""
    with database_errors("deleting the conversion"), conn.transaction():
        keys = [r[0] for r in conn.execute(Q.delete_conversion, {"conversion_id": conversion_id,
                                                                 **_owner(user_id, vendor_id)}).fetchall()]
    return Deletion(keys, _sweep_now(conn, storage, keys))


def erase_preview(conn: psycopg.Connection, owner_type: str, owner_id: uuid.UUID) -> dict[str, int]:
    """What :func:`erase_owner` would delete, by table (and the object keys)."""
    with database_errors("counting the owner's data"):
        row = conn.execute(Q.erase_owner_preview, {"owner_type": owner_type, "owner_id": owner_id}).fetchone()
    return dict(row[0]) if row else {}


def erase_owner(conn: psycopg.Connection, storage: Storage, owner_type: str, owner_id: uuid.UUID, *,
                batch_size: int = 1000) -> tuple[dict[str, int], SweepResult]:
    """Erase every row of the owner in one transaction, then every object; returns the counts and the sweep's.

    Idempotent. The objects are swept right after the commit from all due markers (the erasure's among
    them), in batches of ``batch_size``, until none is due.
    """
    with database_errors("erasing the owner"), conn.transaction():
        row = conn.execute(Q.erase_owner, {"owner_type": owner_type, "owner_id": owner_id}).fetchone()
    counts = dict(row[0]) if row else {}
    total = SweepResult()
    while True:
        swept = sweep_due(conn, storage, limit=batch_size, max_batches=1_000_000)
        total.add(swept)
        if swept.deleted == 0 and swept.kept == 0:
            break
    return counts, total
