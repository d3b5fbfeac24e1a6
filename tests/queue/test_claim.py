"""The claim: suspects run alone, and jobs waiting on backoff stay out of its path (real PostgreSQL)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg

from schema.queries import Q
from tests.queue.ops import claim_jobs
from tests.support.factories import job_of, make_conversion, make_image, make_user


def test_a_suspect_job_is_claimed_alone_and_the_others_batch_together(db: psycopg.Connection) -> None:
    # Regression (issue 10, defect 6): a job that killed its worker made all its batch-mates lose an
    # attempt each; now the first loss is free and marks them suspect, and a suspect runs alone.
    first = [make_conversion(db) for _ in range(3)]
    claim_jobs(db, "dead", 3)
    db.execute("UPDATE conversion_jobs SET heartbeat_at = now() - interval '1 minute'")
    assert [r[0] for r in db.execute("SELECT new_status FROM jobs_rescue(30)").fetchall()] == ["queued"] * 3
    assert all(job_of(db, c)["retry_count"] == 0 and job_of(db, c)["suspect"] for c in first)
    later = [make_conversion(db) for _ in range(2)]
    # The suspects are older, so the head of the queue is suspect: it comes alone.
    assert len(claim_jobs(db, "w", 8)) == 1
    assert len(claim_jobs(db, "w", 8)) == 1
    assert len(claim_jobs(db, "w", 8)) == 1
    assert sorted(c.conversion_id for c in claim_jobs(db, "w", 8)) == sorted(later)


def test_usage_counts_conversions_not_attempts(db: psycopg.Connection) -> None:
    conv = make_conversion(db)
    [claim] = claim_jobs(db, "w", 1)
    db.execute("SELECT * FROM jobs_release(%s, %s)", ([claim.job_id], [claim.attempt]))
    [again] = claim_jobs(db, "w", 1)
    assert again.attempt == 2
    rows = db.execute("SELECT count(*) FROM image_usage_history WHERE action = 'convert' AND conversion_id = %s",
                      (conv,)).fetchone()
    assert rows == (1,)


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out.extend(plan_nodes(child))
    return out


def test_jobs_in_backoff_stay_out_of_the_claims_path(db: psycopg.Connection) -> None:
    # Regression (issue 11, defect 6): 100,000 higher-priority jobs waiting on run_after sat at the
    # head of the claim index (claim 2.97 → 20.87 ms, "Rows Removed by Filter: 100000").
    user = make_user(db)
    person, cloth = make_image(db, user, type_="user"), make_image(db, user, type_="cloth")
    with db.transaction():
        db.execute("""INSERT INTO conversions (id, user_id, user_image_id, cloth_image_id, status)
                      SELECT gen_random_uuid(), %s, %s, %s, 'pending' FROM generate_series(1, 100000)""",
                   (user, person, cloth))
        db.execute("""INSERT INTO conversion_jobs (conversion_id, priority, run_after)
                      SELECT id, 9, now() + interval '1 hour' FROM conversions""")
    ready = [make_conversion(db) for _ in range(20)]
    db.execute("VACUUM ANALYZE conversion_jobs")
    params = {"worker_id": "w", "limit": 16, "claim_token": uuid.uuid4(), "allow_suspect": True}
    with db.transaction(force_rollback=True):
        row = db.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + Q.job_claim_batch, params).fetchone()
    assert row is not None
    nodes = plan_nodes(json.loads(row[0])[0]["Plan"] if isinstance(row[0], str) else row[0][0]["Plan"])
    index_scans = [n for n in nodes if n.get("Relation Name") == "conversion_jobs" and "Index Name" in n]
    names = {n["Index Name"] for n in index_scans}
    assert "idx_conversion_jobs_ready" in names and "idx_conversion_jobs_claim" not in names, names
    assert all(n.get("Rows Removed by Filter", 0) < 100 for n in nodes), nodes
    assert not any(n.get("Node Type") == "Seq Scan" and n.get("Relation Name") == "conversion_jobs" for n in nodes)
    assert sorted(c.conversion_id for c in claim_jobs(db, "w", 16)) == sorted(ready[:16])


def test_nothing_is_claimed_while_an_operator_has_paused_dispatch(db: psycopg.Connection) -> None:
    conv = make_conversion(db)
    db.execute("SELECT operator_set_dispatch_paused(true, 'ops', 'maintenance')")
    assert claim_jobs(db, "w", 8) == []  # a follow-up or a producer's wake-up message claims nothing either
    db.execute("SELECT operator_set_dispatch_paused(false, 'ops', 'done')")
    assert [c.conversion_id for c in claim_jobs(db, "w", 8)] == [conv]
