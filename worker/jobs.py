"""What the worker knows about a job: a claim it holds, and a finished job's result to record."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Claim:
    """A job this worker holds under ``attempt``, with what processing it needs."""

    job_id: uuid.UUID
    conversion_id: uuid.UUID
    attempt: int
    retry_count: int
    max_retries: int
    enqueued_at: datetime
    conversion_type: str
    style_name: str | None
    person_key: str
    person_size: int
    cloth_key: str
    cloth_size: int
    #: Lost with a worker before: this process must hold nothing else while it runs.
    suspect: bool = False


@dataclass(frozen=True)
class Completion:
    """A finished job's result image, ready to be recorded."""

    claim: Claim
    file_path: str
    file_name: str
    original_url: str
    thumbnail_url: str
    file_size: int
    mime_type: str
    width: int
    height: int
    processing_time_ms: int
    ai_model_version: str
    #: Who was dressed (``models.subject.Subject.as_dict()``), noted in the result image's metadata.
    subject: dict[str, Any] | None = None
