"""Claiming jobs and finalising them: the worker's only contact with the queue's SQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row

from schema.queries import Q
from worker.errors import Failure


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


def claim_jobs(conn: psycopg.Connection, worker_id: str, limit: int) -> list[Claim]:
    """Claim up to ``limit`` available jobs (one short transaction, SKIP LOCKED)."""
    with conn.cursor(row_factory=class_row(Claim)) as cur:
        return cur.execute(Q.job_claim_many, {"worker_id": worker_id, "limit": limit}).fetchall()


def complete_jobs(conn: psycopg.Connection, completions: Sequence[Completion]) -> dict[uuid.UUID, uuid.UUID | None]:
    """Record results in one transaction, fenced on each claim: job id → result image id, or None
    when the claim was no longer held (the caller then deletes the files it wrote)."""
    items = [{
        "job_id": str(c.claim.job_id), "attempt": c.claim.attempt, "file_path": c.file_path,
        "file_name": c.file_name, "original_url": c.original_url, "thumbnail_url": c.thumbnail_url,
        "file_size": c.file_size, "mime_type": c.mime_type, "width": c.width, "height": c.height,
        "processing_time_ms": c.processing_time_ms, "ai_model_version": c.ai_model_version,
    } for c in completions]
    rows = conn.execute(Q.jobs_complete, {"items": json.dumps(items)}).fetchall()
    return {row[0]: row[1] for row in rows}


def fail_job(conn: psycopg.Connection, claim: Claim, failure: Failure, *, backoff_base_s: float,
             backoff_max_s: float, processing_time_ms: int | None, ai_model_version: str | None) -> str | None:
    """Record a failed attempt: back to 'queued' with backoff, or 'failed'. None if no longer held."""
    row = conn.execute(Q.job_fail, {
        "job_id": claim.job_id, "attempt": claim.attempt, "error_type": failure.error_type,
        "error_message": failure.message, "transient": failure.transient,
        "backoff_base_s": backoff_base_s, "backoff_max_s": backoff_max_s,
        "processing_time_ms": processing_time_ms, "ai_model_version": ai_model_version,
    }).fetchone()
    return row[0] if row else None


def release_jobs(conn: psycopg.Connection, held: Sequence[tuple[uuid.UUID, int]]) -> list[uuid.UUID]:
    """Hand claims back without penalty (graceful shutdown); returns the job ids released."""
    if not held:
        return []
    rows = conn.execute(Q.jobs_release, {
        "job_ids": [job_id for job_id, _ in held], "attempts": [attempt for _, attempt in held],
    }).fetchall()
    return [row[0] for row in rows]
