"""The statuses and codes the schema's CHECK constraints allow, as Python enums: one definition.

``tests/schema/test_query_layer.py`` compares each enum with the CHECK constraint in a migrated
database, so a migration that changes a list fails the suite until this module follows.
"""

from __future__ import annotations

from enum import StrEnum


class ConversionStatus(StrEnum):
    """``conversions.status``."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobStatus(StrEnum):
    """``conversion_jobs.status``."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ImageType(StrEnum):
    """``images.type``."""

    USER = "user"
    CLOTH = "cloth"
    RESULT = "result"


class OwnerType(StrEnum):
    """``images.owner_type`` and ``albums.owner_type``."""

    USER = "user"
    VENDOR = "vendor"


class UsageAction(StrEnum):
    """``image_usage_history.action``."""

    UPLOAD = "upload"
    VIEW = "view"
    DOWNLOAD = "download"
    DELETE = "delete"
    UPDATE = "update"
    SHARE = "share"
    CONVERT = "convert"
    USE_IN_CONVERSION = "use_in_conversion"


#: Statuses a conversion or job never leaves (the same words for both).
TERMINAL: frozenset[str] = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

#: Statuses of a job that still holds its conversion (at most one per conversion).
ACTIVE_JOB: frozenset[str] = frozenset({JobStatus.QUEUED, JobStatus.PROCESSING})
