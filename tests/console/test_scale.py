"""The console at 1,000,000 finished conversions: every overview and list query reads an index (no
sequential scan of conversions, jobs or metrics), and the overview renders fast.

Loads its own database with generate_series (about two minutes here), so it is a slow test:
``pytest -q -m slow tests/console/test_scale.py -s`` prints the query budget of docs/operations.md."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from console import data
from core.services import with_database
from schema.migrate import apply_migrations
from schema.queries import Q
from tests.api.conftest import Server, api_settings
from tests.console.conftest import console_key
from tests.schema.test_plans import plan_of, seq_scans

pytestmark = pytest.mark.slow

N = 1_000_000
USERS = 2_000
BIG = ("conversions", "conversion_jobs", "conversion_metrics", "image_usage_history")
ERRORS = ("invalid_image", "no_person", "inference", "storage", "worker_lost")

LOAD = [
    f"""INSERT INTO users (id, email) SELECT md5('u' || g)::uuid, 'u' || g || '@example.test'
          FROM generate_series(0, {USERS - 1}) g""",
    f"""INSERT INTO images (id, owner_id, owner_type, file_path, file_name, original_url, file_size, mime_type,
                            type, is_public)
        SELECT md5(k || g)::uuid, md5('u' || g)::uuid, 'user', '/' || k || '/' || g, 'f.jpg', 'https://x', 1000,
               'image/jpeg', k, false
          FROM generate_series(0, {USERS - 1}) g, unnest(ARRAY['user', 'cloth']) k""",
    # 1,000,000 finished conversions over 90 days (about 460 an hour, so the last hour has some):
    # 90 % completed, 8 % failed, 2 % cancelled; two model versions.
    f"""INSERT INTO conversions (id, user_id, user_image_id, cloth_image_id, status, style_name, processing_time_ms,
                                 error_message, created_at, updated_at)
        SELECT md5('c' || g)::uuid, md5('u' || (g % {USERS}))::uuid, md5('user' || (g % {USERS}))::uuid,
               md5('cloth' || (g % {USERS}))::uuid, s.status, 'casual', 400 + g % 900,
               CASE WHEN s.status = 'failed' THEN 'failed' END, t.at, t.at + interval '1 second'
          FROM generate_series(0, {N - 1}) g,
               LATERAL (SELECT now() - (g::float8 / {N}) * interval '90 days' AS at) t,
               LATERAL (SELECT CASE WHEN g % 100 < 90 THEN 'completed' WHEN g % 100 < 98 THEN 'failed'
                                    ELSE 'cancelled' END AS status) s""",
    f"""INSERT INTO conversion_jobs (conversion_id, status, priority, worker_id, started_at, heartbeat_at,
                                    completed_at, attempt, error_type, error_message, created_at, run_after)
        SELECT c.id, c.status, 0, 'host-' || (hashtext(c.id::text) & 7) || ':1', c.created_at, c.updated_at,
               c.updated_at, 1,
               CASE WHEN c.status = 'failed' THEN (ARRAY{list(ERRORS)})[1 + (hashtext(c.id::text) & 3)]
                    WHEN c.status = 'cancelled' THEN 'cancelled' END,
               c.error_message, c.created_at, c.created_at
          FROM conversions c""",
    """INSERT INTO conversion_metrics (conversion_id, user_id, processing_time_ms, input_file_size_bytes,
                                      output_file_size_bytes, success, error_type, ai_model_version, created_at)
       SELECT c.id, c.user_id, c.processing_time_ms, 40000, 16000, c.status = 'completed', j.error_type,
              CASE WHEN hashtext(c.id::text) & 1 = 0 THEN 'tryon-fit-1.0' ELSE 'tryon-fit-1.1' END, c.updated_at
         FROM conversions c JOIN conversion_jobs j ON j.conversion_id = c.id""",
    """INSERT INTO image_usage_history (image_id, user_id, conversion_id, action, created_at)
       SELECT c.user_image_id, c.user_id, c.id, 'use_in_conversion', c.created_at FROM conversions c""",
    # A live fleet: 8 workers, 40 jobs processing, 300 queued (some on backoff), a leader.
    """INSERT INTO workers (id, hostname, pid, concurrency, model_name, model_version)
       SELECT 'host-' || g || ':1', 'host-' || g, 1000 + g, 2, 'tryon-fit', 'tryon-fit-1.1'
         FROM generate_series(0, 7) g""",
    f"""WITH c AS (
            INSERT INTO conversions (id, user_id, user_image_id, cloth_image_id, status)
            SELECT md5('q' || g)::uuid, md5('u' || (g % {USERS}))::uuid, md5('user' || (g % {USERS}))::uuid,
                   md5('cloth' || (g % {USERS}))::uuid, CASE WHEN g < 40 THEN 'processing' ELSE 'pending' END
              FROM generate_series(0, 339) g RETURNING id, status)
        INSERT INTO conversion_jobs (conversion_id, status, priority, worker_id, started_at, heartbeat_at, attempt,
                                     run_after)
        SELECT id, CASE status WHEN 'pending' THEN 'queued' ELSE status END, (hashtext(id::text) % 3),
               CASE WHEN status = 'processing' THEN 'host-' || (hashtext(id::text) & 7) || ':1' END,
               CASE WHEN status = 'processing' THEN now() END, CASE WHEN status = 'processing' THEN now() END,
               CASE WHEN status = 'processing' THEN 1 ELSE 0 END,
               CASE WHEN hashtext(id::text) & 7 = 0 THEN now() + interval '1 minute' ELSE now() END
          FROM c""",
    """INSERT INTO leader_lease (name, holder, epoch, acquired_at, renewed_at, expires_at)
       VALUES ('stayler-leader', 'host-0:1', 3, now(), now(), now() + interval '10 seconds')
       ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at""",
]


@pytest.fixture(scope="module")
def million(pg_admin_url: str) -> Iterator[str]:
    """A migrated database with 1,000,000 finished conversions and a live fleet's rows."""
    name = f"stayler_console_{os.getpid()}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    url = with_database(pg_admin_url, name)
    apply_migrations(url)
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in LOAD:
            with conn.transaction():
                conn.execute(statement)
        conn.execute("VACUUM ANALYZE")
    print(f"\nloaded {N:,} finished conversions in {time.monotonic() - started:.0f} s")
    yield url
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _budget(conn: psycopg.Connection, name: str, query: Any, params: Any = None) -> tuple[float, set[str]]:
    """Median execution time (ms) of three EXPLAIN ANALYZE runs, and the indexes the plan reads."""
    times, indexes = [], set()
    for _ in range(3):
        nodes = plan_of(conn, query, params, analyze=True)
        for table in BIG:
            assert not seq_scans(nodes, table), f"{name}: sequential scan of {table}"
        indexes |= {n["Index Name"] for n in nodes if "Index Name" in n}
        with conn.transaction(force_rollback=True):
            row = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", params).fetchone()
        assert row is not None
        times.append(float(row[0][0]["Execution Time"]))
    return statistics.median(times), indexes


def test_every_console_query_reads_an_index(million: str) -> None:
    with psycopg.connect(million, autocommit=True) as conn:
        user = conn.execute("SELECT md5('u' || 7)::uuid").fetchone()[0]  # type: ignore[index]
        some = conn.execute("SELECT id FROM conversions WHERE id = md5('c' || 4242)::uuid").fetchone()[0]  # type: ignore[index]
        base = {"status": None, "error_type": None, "model_version": None, "user_id": None, "vendor_id": None,
                "since": None, "until": None, "after_at": None, "after_id": None, "limit": data.PAGE_SIZE}
        week_ago = conn.execute("SELECT now() - interval '7 days'").fetchone()[0]  # type: ignore[index]
        cases: list[tuple[str, Any, Any]] = [
            ("overview: job_get_queue_stats", Q.job_get_queue_stats, {"alive_within_s": 30}),
            ("overview: conversion_metric_count_per_minute", Q.conversion_metric_count_per_minute, None),
            ("overview: conversion_metric_count_errors_last_hour", Q.conversion_metric_count_errors_last_hour, None),
            ("overview: worker_list_live", Q.worker_list_live, None),
            ("overview: leader_lease_list", Q.leader_lease_list, None),
            ("overview: fleet_control_get", Q.fleet_control_get, None),
            ("overview: operator_action_list_recent", Q.operator_action_list_recent, {"limit": 8}),
            ("overview: conversion_metric_summary_last_hour", Q.conversion_metric_summary_last_hour, None),
            ("overview: job_attempt_count_requeued_last_hour", Q.job_attempt_count_requeued_last_hour, None),
            ("overview: conversion_count_trend", Q.conversion_count_trend, None),
            ("overview: webhook_get_health", Q.webhook_get_health, None),
            ("list: no filter", Q.conversion_list_page, base),
            ("list: status=failed", Q.conversion_list_page, {**base, "status": "failed"}),
            ("list: owner", Q.conversion_list_page, {**base, "user_id": user}),
            ("list: time range (a week, 3 days back)", Q.conversion_list_page,
             {**base, "since": week_ago, "until": None, "after_at": None}),
            ("list: error_type=storage", Q.conversion_list_page_by_outcome, {**base, "error_type": "storage"}),
            ("list: model_version", Q.conversion_list_page_by_outcome, {**base, "model_version": "tryon-fit-1.0"}),
            ("list: error_type + owner", Q.conversion_list_page_by_outcome,
             {**base, "error_type": "no_person", "user_id": user}),
            ("list: the page's rows", Q.conversion_get_rows,
             {"ids": [r[0] for r in conn.execute("SELECT id FROM conversions LIMIT 50").fetchall()]}),
            ("detail: conversion_get_detail", Q.conversion_get_detail, {"id": some}),
            ("detail: job_list_by_conversion", Q.job_list_by_conversion, {"id": some}),
            ("detail: conversion_metric_get", Q.conversion_metric_get, {"id": some}),
            ("detail: image_usage_list_by_conversion", Q.image_usage_list_by_conversion, {"id": some}),
            ("detail: operator_action_list_by_conversion", Q.operator_action_list_by_conversion, {"id": some}),
            ("detail: conversion_list_retries", Q.conversion_list_retries, {"id": some}),
        ]
        print(f"\n{'query':<45} {'ms':>8}  indexes")
        for name, query, params in cases:
            ms, indexes = _budget(conn, name, query, params)
            print(f"{name:<45} {ms:8.2f}  {', '.join(sorted(indexes)) or '(small tables)'}")
            assert ms < 250, f"{name}: {ms:.1f} ms"


def test_the_overview_renders_fast(million: str, tmp_path: Path) -> None:
    settings = api_settings(tmp_path / "storage")
    _, key = console_key(million, "viewer")
    with Server(settings, million) as server, httpx.Client(base_url=server.base_url, timeout=30) as client:
        assert client.post("/console/login", data={"key": key}).status_code == 303
        timings: dict[str, list[float]] = {}
        for path in ("/console/", "/console/fragments/overview", "/console/conversions",
                     "/console/conversions?status=failed", "/console/conversions?error_type=storage",
                     f"/console/conversions/{uuid.UUID(bytes=bytes(16))}"):
            for _ in range(7):
                started = time.perf_counter()
                response = client.get(path)
                timings.setdefault(path, []).append((time.perf_counter() - started) * 1000)
                assert response.status_code in (200, 404), path
        print()
        for path, values in timings.items():
            print(f"GET {path:<45} median {statistics.median(values):7.1f} ms  max {max(values):7.1f} ms")
        assert statistics.median(timings["/console/"]) < 500
