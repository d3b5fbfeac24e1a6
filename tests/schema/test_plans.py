"""Plans at scale: with 100,000 conversions and 100,000 jobs loaded, the claim, rescue and stats
queries use their indexes. A plan that turns into a sequential scan fails here."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from core.services import with_database
from schema.migrate import apply_migrations
from schema.queries import Q

N = 100_000
USERS = 1_000
VENDORS = 100
CLOTHS = 200

LOAD = [
    f"""INSERT INTO users (id, email)
        SELECT md5('u' || g)::uuid, 'u' || g || '@example.test' FROM generate_series(0, {USERS - 1}) g""",
    f"""INSERT INTO vendors (id, name)
        SELECT md5('v' || g)::uuid, 'vendor ' || g FROM generate_series(0, {VENDORS - 1}) g""",
    # one person image and nine result images per user, 200 public cloth images of vendors
    f"""INSERT INTO images (id, owner_id, owner_type, file_path, file_name, original_url, file_size,
                            mime_type, type, is_public)
        SELECT CASE WHEN k = 0 THEN md5('ui' || g)::uuid ELSE gen_random_uuid() END,
               md5('u' || g)::uuid, 'user', '/p/' || g || '-' || k, 'f.jpg', 'https://x', 1000 + k, 'image/jpeg',
               CASE WHEN k = 0 THEN 'user' ELSE 'result' END, false
          FROM generate_series(0, {USERS - 1}) g, generate_series(0, 9) k""",
    f"""INSERT INTO images (id, owner_id, owner_type, file_path, file_name, original_url, file_size,
                            mime_type, type, is_public)
        SELECT md5('ci' || g)::uuid, md5('v' || (g % {VENDORS}))::uuid, 'vendor', '/c/' || g, 'c.jpg',
               'https://x', 500, 'image/jpeg', 'cloth', true
          FROM generate_series(0, {CLOTHS - 1}) g""",
    # 100k conversions over 90 days; 10 %% vendor-owned; mostly finished, as in production
    f"""INSERT INTO conversions (id, user_id, vendor_id, user_image_id, cloth_image_id, status,
                                 processing_time_ms, created_at)
        SELECT md5('c' || g)::uuid,
               CASE WHEN g % 10 <> 0 THEN md5('u' || (g % {USERS}))::uuid END,
               CASE WHEN g % 10 = 0 THEN md5('v' || (g % {VENDORS}))::uuid END,
               md5('ui' || (g % {USERS}))::uuid, md5('ci' || (g % {CLOTHS}))::uuid,
               s.status, CASE WHEN s.status IN ('completed', 'failed') THEN 500 + g % 4000 END,
               now() - (g % 90) * interval '1 day' - (g % 1440) * interval '1 minute'
          FROM generate_series(0, {N - 1}) g,
               LATERAL (SELECT CASE WHEN g % 100 < 85 THEN 'completed' WHEN g % 100 < 93 THEN 'failed'
                                    WHEN g % 100 < 95 THEN 'cancelled' WHEN g % 100 < 98 THEN 'pending'
                                    ELSE 'processing' END AS status) s""",
]

# Jobs in the conversions' load order, one slice of their heap pages per transaction: the fair-share trigger
# updates the lane of each job's owner, and owners alternate row by row; in one transaction each
# of the 100,000 updates walked the lane's versions before it (24 s), with the slices they are
# pruned between transactions (9 s). The rows, their stamps and their places are the same.
JOBS = """INSERT INTO conversion_jobs (conversion_id, status, priority, worker_id, started_at, heartbeat_at,
                                   completed_at, attempt, created_at, run_after)
       SELECT c.id, CASE c.status WHEN 'pending' THEN 'queued' ELSE c.status END,
              (hashtext(c.id::text) & 3), CASE WHEN c.status = 'processing' THEN 'w1' END,
              CASE WHEN c.status <> 'pending' THEN c.created_at END,
              CASE WHEN c.status = 'processing' THEN now() END,
              CASE WHEN c.status IN ('completed', 'failed', 'cancelled') THEN c.created_at END,
              CASE WHEN c.status = 'pending' THEN 0 ELSE 1 END, c.created_at, c.created_at
         FROM conversions c
        WHERE c.ctid >= %(first)s::tid AND c.ctid < %(end)s::tid"""
JOB_SLICE_PAGES = 10

AFTER_JOBS = [
    """INSERT INTO image_usage_history (image_id, user_id, vendor_id, conversion_id, action)
       SELECT c.user_image_id, c.user_id, c.vendor_id, c.id, 'use_in_conversion' FROM conversions c""",
]


@pytest.fixture(scope="module")
def big_db(pg_admin_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A migrated database loaded with 100k conversions and jobs (module scope)."""
    name = f"stayler_p{os.getpid()}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    url = with_database(pg_admin_url, name)
    apply_migrations(url)
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            for statement in LOAD:
                conn.execute(statement)
        pages = _scalar(conn, "SELECT pg_relation_size('conversions') / current_setting('block_size')::int")
        for first in range(0, pages, JOB_SLICE_PAGES):
            with conn.transaction():
                conn.execute(JOBS, {"first": f"({first},0)", "end": f"({first + JOB_SLICE_PAGES},0)"})
        with conn.transaction():
            for statement in AFTER_JOBS:
                conn.execute(statement)
        conn.execute("VACUUM ANALYZE")  # what autovacuum would do: statistics and visibility map
        _table_of_index.update(
            conn.execute(
                "SELECT indexrelid::regclass::text, indrelid::regclass::text FROM pg_index "
                "WHERE indrelid::regclass::text NOT LIKE 'pg_%%'"
            ).fetchall()
        )
        yield conn
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _scalar(conn: psycopg.Connection[Any], query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def plan_of(conn: psycopg.Connection[Any], query: str, params: Any = None, analyze: bool = False) -> list[dict]:
    """Every node of the query's plan (EXPLAIN ANALYZE runs inside a transaction rolled back)."""
    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
    with conn.transaction(force_rollback=True):
        row = conn.execute(f"EXPLAIN ({options}) {query}", params).fetchone()
    assert row is not None
    return list(_nodes(row[0][0]["Plan"]))


def seq_scans(nodes: list[dict], relation: str) -> list[dict]:
    return [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == relation]


def index_names(nodes: list[dict], relation: str) -> set[str]:
    """Indexes of ``relation`` the plan scans (Bitmap Index Scan nodes name no relation)."""
    return {n["Index Name"] for n in nodes if "Index Name" in n and _table_of_index[n["Index Name"]] == relation}


_table_of_index: dict[str, str] = {}


def test_loaded(big_db: psycopg.Connection[Any]) -> None:
    counts = big_db.execute(
        "SELECT (SELECT count(*) FROM conversions), (SELECT count(*) FROM conversion_jobs), "
        "(SELECT count(*) FROM conversion_jobs WHERE status = 'queued')"
    ).fetchone()
    assert counts == (N, N, N * 3 // 100)


def test_walker_detects_a_seq_scan(big_db: psycopg.Connection[Any]) -> None:
    """Negative control: the check below would notice a sequential scan."""
    assert seq_scans(plan_of(big_db, "SELECT count(*) FROM conversions WHERE style_name = 'x'"), "conversions")


def test_the_real_claim_reads_only_the_head_of_an_index(big_db: psycopg.Connection[Any]) -> None:
    """The worker's own claim statement (``Q.job_claim_*``), not a copy, runs without a sequential scan."""
    [name] = [n for n in Q.names() if n.startswith("job_claim")]
    params = {"limit": 16, "worker_id": "w-plan", "claim_token": uuid.uuid4(), "allow_suspect": True}
    nodes = plan_of(big_db, getattr(Q, name), params, analyze=True)
    assert not seq_scans(nodes, "conversion_jobs")
    scans = [n for n in nodes if n.get("Relation Name") == "conversion_jobs" and "Index Name" in n
             and n["Index Name"] != "conversion_jobs_pkey"]
    assert scans and all(n["Actual Rows"] <= 16 for n in scans), scans
    assert big_db.execute("SELECT count(*) FROM conversion_jobs WHERE status = 'queued'").fetchone() == (
        N * 3 // 100,
    )  # rolled back


def nested_plans(conn: psycopg.Connection[Any], call: str, params: Any = None) -> list[dict]:
    """Plans of every statement a function runs (auto_explain, sent to this session as NOTICEs)."""
    texts: list[str] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        if diag.message_primary and "plan:" in diag.message_primary:
            texts.append(diag.message_primary.split("plan:", 1)[1])

    conn.add_notice_handler(keep)
    try:
        conn.execute("LOAD 'auto_explain'")
        for setting, value in (("log_min_duration", "0"), ("log_nested_statements", "on"),
                               ("log_level", "notice"), ("log_format", "json")):
            conn.execute(f"SET auto_explain.{setting} = '{value}'")
        with conn.transaction(force_rollback=True):
            conn.execute(call, params).fetchall()
    finally:
        conn.execute("RESET auto_explain.log_min_duration")
        conn.remove_notice_handler(keep)
    return [node for text in texts for node in _nodes(json.loads(text)["Plan"])]


def test_the_real_rescue_reads_no_whole_table(big_db: psycopg.Connection[Any]) -> None:
    """The statements inside the rescue function itself (``Q.jobs_rescue``), as the leader calls it."""
    params = {"stale_after_s": 60.0, "backoff_base_s": 1.0, "backoff_max_s": 300.0, "limit": 100}
    nodes = nested_plans(big_db, Q.jobs_rescue, params)
    assert nodes  # the function's statements were seen
    assert not seq_scans(nodes, "conversion_jobs")


@pytest.mark.parametrize(
    ("args", "index"),
    [
        ("p_user_id := md5('u7')::uuid", "idx_conversions_user_created_cover"),
        ("p_user_id := md5('u7')::uuid, p_date_from := now() - interval '30 days', p_date_to := now()",
         "idx_conversions_user_created_cover"),
        # Either vendor index serves it; the planner picks by the sample's statistics.
        ("p_vendor_id := md5('v3')::uuid, p_date_from := now() - interval '7 days'",
         "idx_conversions_vendor_created_cover|idx_conversions_vendor_id"),
        ("p_date_from := now() - interval '1 day', p_date_to := now()", "idx_conversions_created_at"),
        ("p_date_from := '2025-01-01', p_date_to := '2025-01-31'", "idx_conversions_created_at"),
    ],
)
def test_conversion_stats_use_indexes(big_db: psycopg.Connection[Any], args: str, index: str) -> None:
    nodes = plan_of(big_db, f"SELECT * FROM get_conversion_stats({args})")
    assert not seq_scans(nodes, "conversions")
    assert set(index.split("|")) & index_names(nodes, "conversions")


def test_conversion_stats_with_bound_parameters(big_db: psycopg.Connection[Any]) -> None:
    """Called the way Python calls it (server-side parameters), the function still inlines."""
    nodes = plan_of(
        big_db, "SELECT * FROM get_conversion_stats(p_user_id := %s, p_date_from := %s)",
        ("1a2b3c4d-0000-0000-0000-000000000000", "2025-01-01"),
    )
    assert not seq_scans(nodes, "conversions")


def test_image_stats_use_indexes(big_db: psycopg.Connection[Any]) -> None:
    nodes = plan_of(big_db, "SELECT * FROM get_image_stats(p_owner_id := md5('u7')::uuid, p_owner_type := 'user')")
    assert not seq_scans(nodes, "images")
    assert not seq_scans(nodes, "image_usage_history")
    assert "idx_images_owner_stats_cover" in index_names(nodes, "images")


@pytest.mark.parametrize(
    "query",
    [
        # update_conversion_status: the job of a conversion
        "SELECT * FROM conversion_jobs WHERE conversion_id = md5('c42')::uuid",
        # create_conversion: idempotency lookup
        "SELECT id FROM conversions WHERE COALESCE(user_id, vendor_id) = md5('u1')::uuid "
        "AND idempotency_key = 'k'",
        # foreign-key actions: conversions of an image, usage of a conversion
        "SELECT id FROM conversions WHERE user_image_id = md5('ui1')::uuid",
        "SELECT id FROM image_usage_history WHERE conversion_id = md5('c42')::uuid",
        # "my conversions, newest first"
        "SELECT id, status FROM conversions WHERE user_id = md5('u1')::uuid ORDER BY created_at DESC LIMIT 20",
    ],
)
def test_lookups_use_indexes(big_db: psycopg.Connection[Any], query: str) -> None:
    nodes = plan_of(big_db, query)
    relation = "conversion_jobs" if "conversion_jobs" in query else (
        "image_usage_history" if "image_usage_history" in query else "conversions"
    )
    assert not seq_scans(nodes, relation), query
