"""Clean: delete the storage files that the ``storage_cleanup`` markers name, then the markers.

Markers are written in the same transaction as the move that turns files into garbage (a job that
ends failed or cancelled: the conversion's result folder; a rescued attempt: that attempt's keys),
so no cleanup depends on when something committed. A marker whose files could not be deleted
stays and is tried again next round; a storage error ends the round (the store is likely down, so
the other markers wait too, logged once, not once per marker with a traceback). The files of all
attempt markers of a round go in one bulk delete (``Storage.delete_many``: one S3 ``DeleteObjects``
per 1,000 keys), so a round after a mass rescue is a few requests, not one per file, and stays well
inside the leader's lease. A folder marker of
a conversion that is running again (an operator's re-run) or completed is dropped without deleting
anything: a completed conversion's worker deletes its earlier attempts' files itself.
"""

from __future__ import annotations

import logging
import uuid

import psycopg

from leader.duties import Duty
from schema.queries import Q
from schema.statuses import ConversionStatus
from storage import Storage, StorageError, attempt_keys, result_prefix

log = logging.getLogger(__name__)


class CleanDuty(Duty):
    """Deletes files of attempts and conversions that will never complete."""

    name = "clean"

    def __init__(self, storage: Storage, *, interval_s: float, limit: int = 200) -> None:
        """Process at most ``limit`` markers per round."""
        self.storage = storage
        self.interval_s = interval_s
        self.limit = limit
        #: Files removed from result folders so far.
        self.removed = 0

    def run_once(self, conn: psycopg.Connection) -> int:
        """One round; returns the markers handled (their files are gone)."""
        markers = conn.execute(Q.storage_cleanup_list, {"limit": self.limit}).fetchall()
        handled = self._attempt_markers(conn, [(c, a) for c, a, _ in markers if a > 0])
        if handled < 0:
            return 0
        for conversion_id, attempt, conversion_status in markers:
            if attempt > 0:
                continue
            try:
                if conversion_status in (None, ConversionStatus.FAILED, ConversionStatus.CANCELLED):
                    self.removed += self.storage.delete_prefix(result_prefix(conversion_id))
            except StorageError as exc:
                # The store is down or refusing (an S3 outage): one line, and the rest of the round
                # waits for the next one instead of failing marker by marker with a traceback each.
                log.warning("could not delete files of a conversion; will retry next round",
                            extra={"conversion_id": str(conversion_id), "attempt": attempt, "error": str(exc)})
                break
            except Exception:  # a cleanup failure must not stop the leader; the marker stays
                log.exception("could not delete files of a conversion; will retry",
                              extra={"conversion_id": str(conversion_id), "attempt": attempt})
                continue
            conn.execute(Q.storage_cleanup_delete, {"conversion_id": conversion_id, "attempt": attempt})
            handled += 1
        return handled

    def _attempt_markers(self, conn: psycopg.Connection, markers: list[tuple[uuid.UUID, int]]) -> int:
        """Delete the files of every attempt marker in one bulk call; -1 when the store refused them."""
        if not markers:
            return 0
        keys = {m: attempt_keys(*m) for m in markers}
        failed = set(self.storage.delete_many([k for ks in keys.values() for k in ks]))
        handled = 0
        for (conversion_id, attempt), mine in keys.items():
            if failed.intersection(mine):
                continue
            conn.execute(Q.storage_cleanup_delete, {"conversion_id": conversion_id, "attempt": attempt})
            handled += 1
        if failed:
            log.warning("could not delete files of lost attempts; will retry next round",
                        extra={"files": len(failed), "markers_left": len(markers) - handled})
            return -1 if handled == 0 else handled
        return handled
