"""Request and response bodies (they also make the OpenAPI document)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ConversionStatus = Literal["pending", "processing", "completed", "failed", "cancelled"]
EventType = Literal["conversion.completed", "conversion.failed", "conversion.cancelled"]
ALL_EVENTS: tuple[EventType, ...] = ("conversion.completed", "conversion.failed", "conversion.cancelled")


class ImageOut(BaseModel):
    """A registered image."""

    id: uuid.UUID
    type: str
    width: int
    height: int
    mime_type: str
    file_size: int
    is_public: bool


class ConversionIn(BaseModel):
    """``POST /v1/conversions``."""

    model_config = ConfigDict(extra="forbid")

    user_image_id: uuid.UUID
    cloth_image_id: uuid.UUID
    style_name: str | None = Field(default=None, max_length=100)
    conversion_type: Literal["free", "paid"] = "free"
    priority: int = Field(default=0, ge=-1000, le=1000, description="Higher is claimed first.")
    metadata: dict[str, Any] = Field(default_factory=dict)


class ResultOut(BaseModel):
    """Where a completed conversion's result can be fetched."""

    image_id: uuid.UUID
    url: str = Field(description="A presigned URL (S3 storage) or this API's /result URL (send the key).")
    thumbnail_url: str
    expires_at: datetime | None = Field(default=None, description="When presigned URLs stop working.")


class ConversionOut(BaseModel):
    """A conversion with its job's attempts and last error."""

    id: uuid.UUID
    status: ConversionStatus
    conversion_type: str
    style_name: str | None
    user_image_id: uuid.UUID
    cloth_image_id: uuid.UUID
    priority: int | None
    metadata: dict[str, Any]
    attempts: int
    retry_count: int | None
    max_retries: int | None
    error_type: str | None
    error_message: str | None
    processing_time_ms: int | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    result: ResultOut | None


class ConversionPage(BaseModel):
    """A page of conversions, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[ConversionOut]
    next_cursor: str | None


class StatsOut(BaseModel):
    """``get_conversion_stats()`` and ``get_image_stats()`` for the caller."""

    conversions: dict[str, Any]
    images: dict[str, Any]


class WebhookIn(BaseModel):
    """``POST /v1/webhooks``."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048)
    events: list[EventType] = Field(default_factory=lambda: list(ALL_EVENTS), min_length=1)


class WebhookOut(BaseModel):
    """A webhook endpoint (its secret is shown only when it is created)."""

    id: uuid.UUID
    url: str
    events: list[str]
    enabled: bool
    failing_since: datetime | None
    disabled_at: datetime | None
    disabled_reason: str | None
    created_at: datetime


class WebhookCreated(WebhookOut):
    """A new endpoint with its signing secret (``whsec_`` + base64), shown this once."""

    secret: str


class AttemptOut(BaseModel):
    """One POST to an endpoint."""

    attempt: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: int | None
    error: str | None


class DeliveryOut(BaseModel):
    """One event's delivery to one endpoint, with every attempt."""

    id: uuid.UUID
    event_id: uuid.UUID
    type: str
    conversion_id: uuid.UUID
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    finished_at: datetime | None
    attempt_log: list[AttemptOut]
