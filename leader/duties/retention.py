"""Retention: the leader prunes finished queue rows (and, when configured, old user data) in bounded batches.

Each table has an age setting (``STAYLER_RETENTION_*_AFTER_S``; 0 = never) and a SQL prune function
(``schema/migrations/0110_retention.sql``) that deletes at most ``retention_batch_size`` rows older
than the age, oldest first, through an index, skipping locked rows. A run calls each function until a
batch comes back short or ``retention_max_batches`` statements ran, so one run's work is bounded and
the rest waits for the next run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import LiteralString

import psycopg

from leader.config import RetentionSettings
from leader.duties import Duty
from schema.queries import Q

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prune:
    """One table's prune: the named query and the age (seconds) beyond which rows go; 0 = never."""

    table: str
    query: LiteralString
    older_than_s: float


class RetentionDuty(Duty):
    """A leader duty: ``run_once`` prunes every configured table and returns the rows deleted."""

    name = "retention"

    def __init__(self, settings: RetentionSettings) -> None:
        """Read the ages, batch size and interval from ``settings``."""
        self.interval_s: float = settings.retention_interval_s
        self.batch_size = settings.retention_batch_size
        self.max_batches = settings.retention_max_batches
        self.prunes = [
            Prune("conversion_jobs", Q.prune_finished_jobs, settings.retention_jobs_after_s),
            Prune("workers", Q.prune_stopped_workers, settings.retention_workers_after_s),
            Prune("image_usage_history", Q.prune_image_usage_history, settings.retention_usage_history_after_s),
            Prune("conversion_metrics", Q.prune_conversion_metrics, settings.retention_metrics_after_s),
            Prune("operator_actions", Q.prune_operator_actions,
                  settings.retention_operator_actions_after_s),
            Prune("webhook_deliveries", Q.prune_webhook_deliveries, settings.retention_webhooks_after_s),
            Prune("webhook_events", Q.prune_webhook_events, settings.retention_webhooks_after_s),
        ]

    def run_once(self, conn: psycopg.Connection) -> int:
        """Prune each table with an age set, in bounded batches; returns the rows deleted in total.

        ``conn`` is an autocommit connection: each batch is its own short transaction.
        """
        total = 0
        for prune in self.prunes:
            if prune.older_than_s <= 0:
                continue
            deleted = 0
            for _ in range(self.max_batches):
                row = conn.execute(prune.query, {"older_than_s": prune.older_than_s,
                                                 "batch_size": self.batch_size}).fetchone()
                n = int(row[0]) if row and row[0] is not None else 0
                deleted += n
                if n < self.batch_size:
                    break
            if deleted:
                log.info("retention: deleted %d %s rows older than %.0f s", deleted, prune.table, prune.older_than_s)
            total += deleted
        return total
