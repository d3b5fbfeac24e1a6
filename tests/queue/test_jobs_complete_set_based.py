"""jobs_complete() from 0050 (set-based) writes exactly what the 0030 per-job version wrote.

The 0030 function is loaded under another name in the test's database, both complete a batch of the
same shape, and every column that is not an id or a timestamp must match.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.queue.ops import claim_jobs, complete_jobs
from tests.support.factories import make_conversion, make_user
from worker.jobs import Claim, Completion

MIGRATIONS = Path(__file__).resolve().parents[2] / "schema" / "migrations"


def load_0030_as(conn: psycopg.Connection, name: str) -> None:
    text = (MIGRATIONS / "0030_queue_operations.sql").read_text()
    start = text.index("CREATE OR REPLACE FUNCTION jobs_complete(")
    end = text.index("$$;", text.index("AS $$", start) + 5) + 3
    body = text[start:end].replace("FUNCTION jobs_complete(", f"FUNCTION {name}(", 1)
    # Since 0100 a worker-held conversion completes only under the claim's attempt.
    body = body.replace("output_file_size_bytes := item.file_size)",
                        "output_file_size_bytes := item.file_size, attempt := item.attempt)")
    conn.execute(body)


def completion(claim: Claim, n: int) -> Completion:
    return Completion(claim=claim, file_path=f"results/{claim.conversion_id}/a{n}.jpg", file_name=f"a{n}.jpg",
                      original_url=f"file:///r{n}.jpg", thumbnail_url=f"file:///t{n}.jpg", file_size=1000 + n,
                      mime_type="image/jpeg", width=10 + n, height=20 + n, processing_time_ms=40 + n,
                      ai_model_version="test-1")


def old_complete(conn: psycopg.Connection, completions: list[Completion]) -> dict[uuid.UUID, uuid.UUID | None]:
    items = [{"job_id": str(c.claim.job_id), "attempt": c.claim.attempt, "file_path": c.file_path,
              "file_name": c.file_name, "original_url": c.original_url, "thumbnail_url": c.thumbnail_url,
              "file_size": c.file_size, "mime_type": c.mime_type, "width": c.width, "height": c.height,
              "processing_time_ms": c.processing_time_ms, "ai_model_version": c.ai_model_version}
             for c in completions]
    rows = conn.execute("SELECT job_id, result_image_id FROM jobs_complete_0030(%s::jsonb)",
                        (json.dumps(items),)).fetchall()
    return {r[0]: r[1] for r in rows}


def snapshot(conn: psycopg.Connection, conversion_id: uuid.UUID) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(
            """SELECT c.status, c.processing_time_ms, c.error_message, c.result_image_id IS NOT NULL AS has_result,
                      i.owner_id = c.user_id AS owned, i.owner_type, i.file_size, i.mime_type, i.width, i.height,
                      i.type, i.is_public, i.is_free, i.metadata - 'conversion_id' AS meta,
                      i.metadata ->> 'conversion_id' = c.id::text AS meta_conversion,
                      j.status AS job_status, j.completed_at IS NOT NULL AS job_done, j.error_message AS job_error,
                      j.error_type, j.worker_id IS NOT NULL AS has_worker, j.attempt,
                      m.processing_time_ms AS m_time, m.input_file_size_bytes, m.output_file_size_bytes,
                      m.success, m.error_type AS m_error_type, m.ai_model_version,
                      (SELECT count(*) FROM conversion_metrics mm WHERE mm.conversion_id = c.id) AS metric_rows
                 FROM conversions c JOIN conversion_jobs j ON j.conversion_id = c.id
                 LEFT JOIN images i ON i.id = c.result_image_id
                 LEFT JOIN conversion_metrics m ON m.conversion_id = c.id
                WHERE c.id = %s""", (conversion_id,)).fetchone()
    assert row is not None
    return row


def test_set_based_completion_matches_the_per_job_version(db: psycopg.Connection) -> None:
    load_0030_as(db, "jobs_complete_0030")
    user = make_user(db)
    ids = [make_conversion(db, user_id=user) for _ in range(8)]
    db.execute("UPDATE conversion_jobs SET run_after = now() - interval '1 second'")
    claims = claim_jobs(db, "w1", 8)
    assert len(claims) == 8
    # one of each half is cancelled while running: both versions must fence it out
    db.execute("SELECT operator_cancel_conversion(%s, 'test', 'test')", (claims[0].conversion_id,))
    db.execute("SELECT operator_cancel_conversion(%s, 'test', 'test')", (claims[4].conversion_id,))
    new = complete_jobs(db, [completion(c, i % 4) for i, c in enumerate(claims[:4])])
    old = old_complete(db, [completion(c, i % 4) for i, c in enumerate(claims[4:])])
    assert [new[c.job_id] is None for c in claims[:4]] == [True, False, False, False]
    assert [old[c.job_id] is None for c in claims[4:]] == [True, False, False, False]
    for a, b in zip(claims[:4], claims[4:], strict=True):
        left, right = snapshot(db, a.conversion_id), snapshot(db, b.conversion_id)
        if left["status"] == "cancelled":  # its elapsed time was measured by cancel_conversion()
            for row in (left, right):
                row.pop("processing_time_ms")
                row.pop("m_time")
        assert left == right
    assert len(ids) == 8


def test_a_held_job_of_a_conversion_in_another_state_keeps_the_old_rules(db: psycopg.Connection) -> None:
    make_conversion(db)
    db.execute("UPDATE conversion_jobs SET run_after = now() - interval '1 second'")
    [claim] = claim_jobs(db, "w1", 1)
    db.execute("UPDATE conversions SET status = 'pending' WHERE id = %s", (claim.conversion_id,))
    with pytest.raises(psycopg.Error) as info:
        complete_jobs(db, [completion(claim, 1)])
    assert info.value.sqlstate == "SA021"


def test_a_repeated_completion_returns_null_and_writes_nothing(db: psycopg.Connection) -> None:
    make_conversion(db)
    db.execute("UPDATE conversion_jobs SET run_after = now() - interval '1 second'")
    [claim] = claim_jobs(db, "w1", 1)
    first = complete_jobs(db, [completion(claim, 1)])
    again = complete_jobs(db, [completion(claim, 2)])
    assert first[claim.job_id] is not None and again[claim.job_id] is None
    assert db.execute("SELECT count(*) FROM images WHERE type = 'result'").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM conversion_metrics").fetchone() == (1,)
