"""The queue's moves for SQL-level tests, through the worker's real queue door (``worker.jobqueue``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import psycopg

from schema.queries import Q
from worker.errors import Failure
from worker.jobqueue import JobQueue, completion_items
from worker.jobs import Claim, Completion


def claim_jobs(conn: psycopg.Connection, worker_id: str, limit: int) -> list[Claim]:
    """Claim up to ``limit`` jobs as ``worker_id``."""
    return JobQueue.on_connection(conn, worker_id).claim(limit)


def complete_jobs(conn: psycopg.Connection, completions: Sequence[Completion]) -> dict[uuid.UUID, uuid.UUID | None]:
    """Run the fenced completion; job id → result image id, or None when fenced out."""
    rows = conn.execute(Q.jobs_complete, {"items": completion_items(completions)}).fetchall()
    return {row[0]: row[1] for row in rows}


def fail_job(conn: psycopg.Connection, claim: Claim, failure: Failure, *, backoff_base_s: float,
             backoff_max_s: float, processing_time_ms: int | None, ai_model_version: str | None) -> str | None:
    """Record a failed attempt."""
    door = JobQueue.on_connection(conn, "test", backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s)
    return door.fail(claim, failure, processing_time_ms=processing_time_ms, ai_model_version=ai_model_version)


def release_jobs(conn: psycopg.Connection, held: Sequence[tuple[uuid.UUID, int]]) -> list[uuid.UUID]:
    """Hand claims back without penalty."""
    return JobQueue.on_connection(conn, "test").release(held)
