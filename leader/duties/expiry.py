"""Expiry: delete person photos and results older than their retention settings, rows and objects.

``STAYLER_RETENTION_PERSON_PHOTOS_AFTER_S`` (a photo goes with every conversion that used it and
their results) and ``STAYLER_RETENTION_RESULTS_AFTER_S`` (a result goes with its conversion); 0, the
default, keeps them. Each statement (``retention_expire_images()``) deletes at most
``STAYLER_RETENTION_BATCH_SIZE`` images, oldest first, skipping locked rows and photos a running
conversion uses, and marks their objects; a run makes at most ``STAYLER_RETENTION_MAX_BATCHES``
statements per kind, then wakes the orphans duty, which deletes the objects.
"""

from __future__ import annotations

import logging

import psycopg

from leader.config import RetentionSettings
from leader.duties import Duty
from schema.queries import Q

log = logging.getLogger(__name__)


class ExpiryDuty(Duty):
    """A leader duty: ``run_once`` deletes expired person photos and results; returns the images deleted."""

    name = "expiry"
    wakes = ("orphans",)

    def __init__(self, settings: RetentionSettings) -> None:
        """Ages, batch size and interval from ``settings`` (the retention duty's batch settings)."""
        self.interval_s = settings.retention_interval_s
        self.batch_size = settings.retention_batch_size
        self.max_batches = settings.retention_max_batches
        self.ages = {"user": settings.retention_person_photos_after_s, "result": settings.retention_results_after_s}

    def run_once(self, conn: psycopg.Connection) -> int:
        """Each kind with an age set, in bounded batches (``conn`` autocommits: one transaction per batch)."""
        total = 0
        for image_type, older_than_s in self.ages.items():
            if older_than_s <= 0:
                continue
            deleted = 0
            for _ in range(self.max_batches):
                row = conn.execute(Q.retention_expire_images, {"type": image_type, "older_than_s": older_than_s,
                                                               "batch_size": self.batch_size}).fetchone()
                n = int(row[0]) if row and row[0] is not None else 0
                deleted += n
                if n < self.batch_size:
                    break
            if deleted:
                log.info("expiry: deleted %d %s images older than %.0f s", deleted, image_type, older_than_s)
            total += deleted
        return total
