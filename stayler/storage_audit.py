"""``stayler storage audit [--fix]``: objects no row claims, and rows whose objects are missing.

The store is listed once (``Storage.list_objects``, page by page on S3), then the images rows are
read in id order a page at a time; each row claims its file and its thumbnail. What is left of the
listing is checked again against the database (``storage_keys_unclaimed()``: a row written since,
or an attempt in flight, claims it) and objects younger than ``STAYLER_ORPHAN_GRACE_S`` are left
alone (an upload or a result being written). ``--fix`` marks the orphans due and sweeps them
(``leader.sweep``, which checks the claims once more under the markers' locks). A row whose object
is missing is only reported: its image may still be wanted, and deleting it is the owner's or an
operator's decision (``DELETE /v1/images/{id}``).

Memory: the listing is kept as one set of keys (about 100 bytes a key).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from leader.sweep import SweepResult, sweep_due
from schema.queries import Q
from storage import Storage

Progress = Callable[[str, int, int | None], None]

_PAGE = 1000
_NIL = uuid.UUID(int=0)


@dataclass
class AuditReport:
    """What an audit found (and, with ``fix``, what the sweep did)."""

    objects: int = 0
    rows: int = 0
    orphans: list[str] = field(default_factory=list)
    missing: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    recent: int = 0
    fixed: SweepResult | None = None


def _quiet(stage: str, done: int, total: int | None) -> None:
    return None


def audit(conn: psycopg.Connection, storage: Storage, *, grace_s: float, fix: bool = False,
          progress: Progress = _quiet) -> AuditReport:
    """Compare the store with the images rows; with ``fix``, delete the orphans (rows are only reported)."""
    report = AuditReport()
    started = time.time()
    listed: dict[str, float] = {}
    for key, modified in storage.list_objects():
        listed[key] = modified
        if len(listed) % _PAGE == 0:
            progress("listing objects", len(listed), None)
    report.objects = len(listed)
    progress("listing objects", len(listed), len(listed))
    row = conn.execute(Q.image_count).fetchone()
    total_rows = int(row[0]) if row else 0
    unseen = set(listed)
    after = _NIL
    while True:
        page = conn.execute(Q.image_list_keys, {"after": after, "limit": _PAGE}).fetchall()
        for image_id, keys, has_thumbnail in page:
            for i, key in enumerate(keys):
                if key in listed:
                    unseen.discard(key)
                elif i == 0 or has_thumbnail:
                    report.missing.append((image_id, key))
        report.rows += len(page)
        progress("reading rows", report.rows, total_rows)
        if len(page) < _PAGE:
            break
        after = page[-1][0]
    # Listed before the rows were read: a missing object written since is there after all.
    report.missing = [(i, k) for i, k in report.missing if not any(True for _ in storage.list_objects(k))]
    candidates = sorted(unseen)
    for start in range(0, len(candidates), _PAGE):
        chunk = candidates[start:start + _PAGE]
        for (key,) in conn.execute(Q.storage_keys_unclaimed, {"keys": chunk}).fetchall():
            if listed[key] > started - grace_s:
                report.recent += 1
            else:
                report.orphans.append(key)
        progress("checking unclaimed objects", min(start + _PAGE, len(candidates)), len(candidates))
    if fix and report.orphans:
        with conn.transaction():
            conn.execute(Q.storage_markers_due_now, {"keys": report.orphans})
        report.fixed = sweep_due(conn, storage, keys=report.orphans)
    return report
