"""What a worker process needs from the settings: a small frozen slice of ``core.settings.Settings``.

``ProcessContext.boot`` (the process's composition root) cuts it once; the queue door, the health
breakers, the heartbeat, the claimer and the standby leader read only their fields. The model runner
and the storage backend are built at boot from ``Settings`` itself (``worker.process.make_runner``,
``storage.from_settings``), since ``worker.preflight`` builds them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import Settings, settings_slice
from leader.config import LeaderSettings


@dataclass(frozen=True)
class WorkerSettings:
    """A worker process's settings (each field keeps the name of its setting).

    The connection fields satisfy ``schema.connections.ConnectionSettings``.
    """

    database_url: str | None
    database_pooled: bool
    db_timeout_s: float
    db_statement_timeout_s: float
    backoff_base_s: float
    backoff_max_s: float
    queue_name: str
    worker_threads: int
    claim_batch_size: int
    heartbeat_interval_s: float
    job_timeout_s: float
    rescue_after_s: float
    shutdown_grace_s: float
    queue_stats_interval_s: float
    failpoints: str
    #: The process's standby leader.
    leader: LeaderSettings

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerSettings:
        """The worker process's part of ``settings``."""
        return settings_slice(cls, settings, leader=LeaderSettings.from_settings(settings))
