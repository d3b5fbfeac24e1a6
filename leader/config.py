"""What the leader needs from the settings: small frozen slices of ``core.settings.Settings``.

``Settings`` alone reads the environment; the process that builds a leader (a worker process, or
``stayler dispatcher``) cuts its slice once with ``LeaderSettings.from_settings``, and each duty gets
only its part. Every field keeps the name of its setting; a test builds a slice from ``Settings(...)``
the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import Settings, settings_slice


@dataclass(frozen=True)
class RetentionSettings:
    """The retention and expiry duties' ages and batches (``STAYLER_RETENTION_*``; an age of 0 = keep)."""

    retention_interval_s: float
    retention_batch_size: int
    retention_max_batches: int
    retention_jobs_after_s: float
    retention_workers_after_s: float
    retention_usage_history_after_s: float
    retention_metrics_after_s: float
    retention_operator_actions_after_s: float
    retention_webhooks_after_s: float
    retention_person_photos_after_s: float
    retention_results_after_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionSettings:
        """The retention part of ``settings``."""
        return settings_slice(cls, settings)


@dataclass(frozen=True)
class FairShareSettings:
    """The fair-share plan weights and per-owner caps the leader writes into ``fair_plans``."""

    fair_weight_free: float
    fair_weight_paid: float
    fair_weight_vendor: float
    owner_max_processing: int
    owner_max_processing_vendor: int | None
    #: How often the fairness duty runs.
    queue_stats_interval_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> FairShareSettings:
        """The fair-share part of ``settings``."""
        return settings_slice(cls, settings)


@dataclass(frozen=True)
class LeaderSettings:
    """A leader loop's settings: its connections and lease, and every duty's part.

    The connection fields satisfy ``schema.connections.ConnectionSettings``, so the slice opens the
    leader's connections itself.
    """

    database_url: str | None
    direct_database_url: str | None
    database_pooled: bool
    db_timeout_s: float
    db_statement_timeout_s: float
    leader_lease_s: float
    queue_name: str
    claim_batch_size: int
    worker_processes: int
    worker_threads: int
    sweep_interval_s: float
    rescue_after_s: float
    rescue_interval_s: float
    backoff_base_s: float
    backoff_max_s: float
    orphan_interval_s: float
    retention: RetentionSettings
    fair_share: FairShareSettings

    @classmethod
    def from_settings(cls, settings: Settings) -> LeaderSettings:
        """The leader's part of ``settings``."""
        return settings_slice(cls, settings, retention=RetentionSettings.from_settings(settings),
                              fair_share=FairShareSettings.from_settings(settings))
