"""SQLAlchemy 2 typed mapping of every table the migrations create.

The SQL files in ``schema/migrations`` are the source of truth; this mapping mirrors them column
for column (type, nullability, server default, foreign key with its ON DELETE) so Python code can
query with the ORM or Core. ``tests/schema/test_mapping.py`` compares it with a migrated database,
so the two cannot drift. Do not ``create_all`` from it: indexes, CHECKs, triggers and functions
exist only in the SQL.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Double, ForeignKey, Integer, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import ARRAY, INET, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

_UUID = UUID(as_uuid=True)
_TSTZ = DateTime(timezone=True)
_NOW = text("now()")
_GEN_UUID = text("gen_random_uuid()")
_EMPTY_JSON = text("'{}'::jsonb")


class Base(DeclarativeBase):
    """Declarative base of the schema's tables."""


class User(Base):
    """``users``: minimal user owner (addition; the seed references ``users(id)``)."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(_UUID, primary_key=True, server_default=_GEN_UUID)
    email: Mapped[str | None] = mapped_column(Text, unique=True)
    display_name: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)
    updated_at: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)


class Vendor(Base):
    """``vendors``: minimal vendor owner (addition; the seed references ``vendors(id)``)."""

    __tablename__ = "vendors"

    id: Mapped[uuid.UUID] = mapped_column(_UUID, primary_key=True, server_default=_GEN_UUID)
    name: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)
    updated_at: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)


class Album(Base):
    """``albums``: an owner's album; ``image_count`` is kept by a trigger on ``images``."""

    __tablename__ = "albums"
    __table_args__ = (UniqueConstraint("owner_id", "owner_type", "name", name="albums_owner_name_key"),)

    id: Mapped[uuid.UUID] = mapped_column(_UUID, primary_key=True, server_default=_GEN_UUID)
    owner_id: Mapped[uuid.UUID] = mapped_column(_UUID)
    owner_type: Mapped[str] = mapped_column(Text)  # 'user' | 'vendor'
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    is_public: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    image_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)
    updated_at: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)


class Image(Base):
    """``images``: a user, cloth or result image owned by a user or a vendor."""

    __tablename__ = "images"

    id: Mapped[uuid.UUID] = mapped_column(_UUID, primary_key=True, server_default=_GEN_UUID)
    owner_id: Mapped[uuid.UUID] = mapped_column(_UUID)
    owner_type: Mapped[str] = mapped_column(Text)  # 'user' | 'vendor'
    album_id: Mapped[uuid.UUID | None] = mapped_column(_UUID, ForeignKey("albums.id", ondelete="SET NULL"))
    file_path: Mapped[str] = mapped_column(Text)
    file_name: Mapped[str] = mapped_column(Text)
    original_url: Mapped[str] = mapped_column(Text)
    thumbnail_url: Mapped[str | None] = mapped_column(Text)
    file_size: Mapped[int] = mapped_column(BigInteger)
    mime_type: Mapped[str] = mapped_column(Text)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(Text)  # 'user' | 'cloth' | 'result'
    is_public: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    is_free: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    tags: Mapped[list[str] | None] = mapped_column(ARRAY(Text), server_default=text("'{}'::text[]"))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB, server_default=_EMPTY_JSON)
    created_at: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)
    updated_at: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)


class Conversion(Base):
    """``conversions``: one try-on request of a user or a vendor (exactly one of the two)."""

    __tablename__ = "conversions"

    id: Mapped[uuid.UUID] = mapped_column(_UUID, primary_key=True, server_default=_GEN_UUID)
    user_id: Mapped[uuid.UUID | None] = mapped_column(_UUID, ForeignKey("users.id", ondelete="CASCADE"))
    vendor_id: Mapped[uuid.UUID | None] = mapped_column(_UUID, ForeignKey("vendors.id", ondelete="CASCADE"))
    user_image_id: Mapped[uuid.UUID] = mapped_column(_UUID, ForeignKey("images.id", ondelete="CASCADE"))
    cloth_image_id: Mapped[uuid.UUID] = mapped_column(_UUID, ForeignKey("images.id", ondelete="CASCADE"))
    result_image_id: Mapped[uuid.UUID | None] = mapped_column(
        _UUID, ForeignKey("images.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(Text, server_default=text("'pending'::text"))
    error_message: Mapped[str | None] = mapped_column(Text)
    processing_time_ms: Mapped[int | None] = mapped_column(Integer)
    conversion_type: Mapped[str] = mapped_column(Text, server_default=text("'free'::text"))
    style_name: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB, server_default=_EMPTY_JSON)
    created_at: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)
    updated_at: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)
    # Addition (0020): caller's idempotency key, unique per owner.
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    request_hash: Mapped[str | None] = mapped_column(Text)  # 0100: conversion_request_hash() of the request
    retry_of: Mapped[uuid.UUID | None] = mapped_column(_UUID)  # 0410: the failed conversion an operator retried


class ImageUsageHistory(Base):
    """``image_usage_history``: one row per interaction with an image."""

    __tablename__ = "image_usage_history"

    id: Mapped[uuid.UUID] = mapped_column(_UUID, primary_key=True, server_default=_GEN_UUID)
    image_id: Mapped[uuid.UUID] = mapped_column(_UUID, ForeignKey("images.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID | None] = mapped_column(_UUID, ForeignKey("users.id", ondelete="SET NULL"))
    vendor_id: Mapped[uuid.UUID | None] = mapped_column(_UUID, ForeignKey("vendors.id", ondelete="SET NULL"))
    conversion_id: Mapped[uuid.UUID | None] = mapped_column(
        _UUID, ForeignKey("conversions.id", ondelete="SET NULL")
    )
    action: Mapped[str] = mapped_column(Text)
    ip_address: Mapped[str | None] = mapped_column(INET)
    user_agent: Mapped[str | None] = mapped_column(Text)
    session_id: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB, server_default=_EMPTY_JSON)
    created_at: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)


class ConversionJob(Base):
    """``conversion_jobs``: the queue entry of a conversion (claimed with SKIP LOCKED)."""

    __tablename__ = "conversion_jobs"

    id: Mapped[uuid.UUID] = mapped_column(_UUID, primary_key=True, server_default=_GEN_UUID)
    conversion_id: Mapped[uuid.UUID] = mapped_column(_UUID, ForeignKey("conversions.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(Text, server_default=text("'queued'::text"))
    worker_id: Mapped[str | None] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    retry_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_retries: Mapped[int] = mapped_column(Integer, server_default=text("3"))
    error_message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(_TSTZ)
    completed_at: Mapped[datetime | None] = mapped_column(_TSTZ)
    created_at: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)
    updated_at: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)
    # Additions (0020): availability, fencing token, lease, stable error code.
    run_after: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)
    attempt: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    heartbeat_at: Mapped[datetime | None] = mapped_column(_TSTZ)
    error_type: Mapped[str | None] = mapped_column(Text)
    # Additions (0060): ready/scheduled split, suspect jobs, claim token.
    scheduled: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    suspect: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    claim_token: Mapped[uuid.UUID | None] = mapped_column(_UUID)
    # Additions (0420): fair share (owner, plan, band, virtual start), stamped on insert by a trigger.
    owner_id: Mapped[uuid.UUID | None] = mapped_column(_UUID)
    plan: Mapped[str | None] = mapped_column(Text)
    band: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    vstart: Mapped[float] = mapped_column(Double, server_default=text("0"))


class ConversionMetric(Base):
    """``conversion_metrics``: one row per conversion that reached a terminal status."""

    __tablename__ = "conversion_metrics"

    id: Mapped[uuid.UUID] = mapped_column(_UUID, primary_key=True, server_default=_GEN_UUID)
    conversion_id: Mapped[uuid.UUID] = mapped_column(
        _UUID, ForeignKey("conversions.id", ondelete="CASCADE"), unique=True
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(_UUID, ForeignKey("users.id", ondelete="CASCADE"))
    vendor_id: Mapped[uuid.UUID | None] = mapped_column(_UUID, ForeignKey("vendors.id", ondelete="CASCADE"))
    processing_time_ms: Mapped[int] = mapped_column(Integer)
    input_file_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    output_file_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    success: Mapped[bool] = mapped_column(Boolean)
    error_type: Mapped[str | None] = mapped_column(Text)
    ai_model_version: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)


class Worker(Base):
    """``workers``: registry of worker processes (addition), ``id`` = ``conversion_jobs.worker_id``."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    hostname: Mapped[str] = mapped_column(Text)
    pid: Mapped[int] = mapped_column(Integer)
    concurrency: Mapped[int | None] = mapped_column(Integer)
    model_name: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)
    heartbeat_at: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)
    stopped_at: Mapped[datetime | None] = mapped_column(_TSTZ)
    services_down: Mapped[str | None] = mapped_column(Text)


class OperatorAction(Base):
    """``operator_actions`` (0100): audit trail of operator actions on other people's conversions."""

    __tablename__ = "operator_actions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(_TSTZ, server_default=_NOW)
    operator: Mapped[str] = mapped_column(Text)
    db_user: Mapped[str] = mapped_column(Text, server_default=text("SESSION_USER"))
    action: Mapped[str] = mapped_column(Text)
    conversion_id: Mapped[uuid.UUID | None] = mapped_column(_UUID)  # NULL for pause/resume (0300)
    reason: Mapped[str] = mapped_column(Text)
    status_before: Mapped[str | None] = mapped_column(Text)
    status_after: Mapped[str | None] = mapped_column(Text)
    new_conversion_id: Mapped[uuid.UUID | None] = mapped_column(_UUID)  # a retry's new conversion (0300)
    outcome: Mapped[str | None] = mapped_column(Text)  # what the action did (0410)


#: Every mapped class, in dependency order.
ALL_MODELS: tuple[type[Base], ...] = (
    User,
    Vendor,
    Album,
    Image,
    Conversion,
    ImageUsageHistory,
    ConversionJob,
    ConversionMetric,
    Worker,
    OperatorAction,
)
