"""Orphans: delete the objects of due ``storage_key_cleanup`` markers that no row claims.

A marker is written before every upload (due after ``STAYLER_ORPHAN_GRACE_S``; the registration
takes it back) and by every deletion (due at once, in the deleting transaction). So an upload that
died between its writes, or a deletion whose process died between the commit and the object
deletes, leaves a marker, and this duty finishes the job (``leader.sweep``): bounded batches, one
bulk delete per batch.
"""

from __future__ import annotations

import psycopg

from leader.duties import Duty
from leader.sweep import sweep_due
from storage import Storage


class OrphansDuty(Duty):
    """Deletes unclaimed objects named by due markers, then the markers."""

    name = "orphans"

    def __init__(self, storage: Storage, *, interval_s: float, batch_size: int = 1000, max_batches: int = 50) -> None:
        """At most ``max_batches`` batches of ``batch_size`` markers per run."""
        self.storage = storage
        self.interval_s = interval_s
        self.batch_size = batch_size
        self.max_batches = max_batches
        #: Objects deleted so far.
        self.deleted = 0

    def run_once(self, conn: psycopg.Connection) -> int:
        """One run; returns the objects deleted."""
        result = sweep_due(conn, self.storage, limit=self.batch_size, max_batches=self.max_batches)
        self.deleted += result.deleted
        return result.deleted
