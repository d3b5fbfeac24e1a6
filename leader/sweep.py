"""Delete the objects that due ``storage_key_cleanup`` markers name and no row claims, then the markers.

One batch is one transaction: the due markers are locked (``FOR UPDATE SKIP LOCKED``), the keys a
row claims are dropped from the batch (their markers go, their objects stay), the others are deleted
with one bulk ``Storage.delete_many`` call, and the markers of every key that is gone are deleted
before the commit. A key whose object could not be deleted keeps its marker for the next round. An
upload that registers after its grace period waits on the lock and then finds its markers gone, so
it refuses instead of registering a row whose object was just deleted.

Used by the leader's orphans duty, by the API and the CLI right after a deletion commits (so the
bytes go at once, and the duty finishes whatever a crash interrupted), and by the storage audit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from schema.queries import Q
from storage import InvalidKeyError, Storage, validate_key

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """What sweeping did: objects deleted, keys a row claims (kept), keys whose deletion failed."""

    deleted: int = 0
    kept: int = 0
    failed: int = 0

    def add(self, other: SweepResult) -> None:
        """Accumulate another batch's counts."""
        self.deleted += other.deleted
        self.kept += other.kept
        self.failed += other.failed


def sweep_batch(conn: psycopg.Connection, storage: Storage, *, limit: int = 1000,
                keys: Sequence[str] | None = None) -> tuple[SweepResult, int]:
    """Sweep one batch of due markers (only those among ``keys`` when given); returns (result, markers seen)."""
    result = SweepResult()
    with conn.transaction():
        if keys is None:
            rows = conn.execute(Q.storage_marker_lock_due, {"limit": limit}).fetchall()
        else:
            rows = conn.execute(Q.storage_marker_lock_due_among, {"keys": list(keys)}).fetchall()
        due = [r[0] for r in rows]
        if not due:
            return result, 0
        unclaimed = {r[0] for r in conn.execute(Q.storage_keys_unclaimed, {"keys": due}).fetchall()}
        result.kept = len(due) - len(unclaimed)
        valid: list[str] = []
        for key in unclaimed:
            try:
                valid.append(validate_key(key))
            except InvalidKeyError:  # not a key this system writes: nothing of ours can be there
                log.warning("dropped a cleanup marker that names no valid storage key", extra={"key": key[:200]})
        failed = set(storage.delete_many(valid)) if valid else set()
        result.failed = len(failed)
        result.deleted = len(valid) - len(failed)
        conn.execute(Q.storage_marker_delete, {"keys": [k for k in due if k not in failed]})
    if failed:
        log.warning("could not delete some objects; their markers stay for the next round",
                    extra={"failed": len(failed), "storage": storage.describe()})
    return result, len(due)


def sweep_due(conn: psycopg.Connection, storage: Storage, *, limit: int = 1000, max_batches: int = 50,
              keys: Sequence[str] | None = None) -> SweepResult:
    """Sweep due markers in batches of ``limit`` until none is left or ``max_batches`` ran.

    With ``keys``, only those markers (a deletion's own, right after its commit), ``limit`` at a time.
    """
    total = SweepResult()
    if keys is not None:
        for start in range(0, len(keys), limit):
            total.add(sweep_batch(conn, storage, keys=keys[start:start + limit])[0])
        return total
    for _ in range(max_batches):
        result, seen = sweep_batch(conn, storage, limit=limit)
        total.add(result)
        if seen < limit or result.failed == seen:
            break
    return total
