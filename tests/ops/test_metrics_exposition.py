"""The per-host exposition: the folder is wiped once per fleet, the leader's queue gauges appear once
(no pid label) across processes and disappear when stale, /healthz follows heartbeats, and the queue
gauges read from PostgreSQL are right."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from leader.queue_gauges import read_snapshot
from schema.queries import Q
from tests.support.factories import make_conversion
from worker.metrics import FleetCollector, health, prepare_dir


def test_the_folder_is_wiped_once_per_fleet(tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old")
    assert prepare_dir(tmp_path, "fleet-a") is True
    assert not (tmp_path / "counter_123.db").exists()
    (tmp_path / "counter_456.db").write_bytes(b"this fleet's")
    assert prepare_dir(tmp_path, "fleet-a") is False  # the fleet's other processes keep the files
    assert (tmp_path / "counter_456.db").exists()
    assert prepare_dir(tmp_path, "fleet-b") is True  # a new fleet starts from zero
    assert not (tmp_path / "counter_456.db").exists()


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from worker import metrics
    metrics.enable_multiprocess(Path(sys.argv[1]))
    m = metrics.WorkerMetrics()
    metrics.install(m)
    from leader.queue_gauges import QueueGauges, QueueSnapshot
    from datetime import datetime, UTC
    metrics.record_boot(model="m", version="1", providers=["CPUExecutionProvider"], threads=2)
    m.claimed.labels("free").inc(3)
    if sys.argv[2] != "none":
        g = QueueGauges()
        g.publish(QueueSnapshot(datetime.now(UTC), {"normal": int(sys.argv[2])}, int(sys.argv[2]), 0, 1.5, 0, {}, 2))
        if len(sys.argv) > 3:
            g.timestamp.set(time.time() - float(sys.argv[3]))
""")


def _write(path: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-c", WRITER, str(path), *args], check=True, timeout=60)


def _collect(path: Path, stale_after_s: float = 30.0) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in FleetCollector(path, stale_after_s).collect():
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def test_queue_gauges_are_exported_once_per_fleet_most_recent_value(tmp_path: Path) -> None:
    # Three processes of one host: an old leader, a newer leader, a process that never led.
    _write(tmp_path, "10")
    time.sleep(0.05)
    _write(tmp_path, "7")
    _write(tmp_path, "none")
    seen = _collect(tmp_path)
    assert seen["stayler_queue_jobs_available"] == [({}, 7.0)]  # one value, the latest, no pid label
    assert ({"priority": "normal"}, 7.0) in seen["stayler_queue_jobs_queued"]
    assert seen["stayler_jobs_claimed_total"] == [({"conversion_type": "free"}, 9.0)]  # counters sum
    assert seen["stayler_worker_processes"] == [({}, 3.0)]
    assert seen["stayler_model_info"] == [({"model": "m", "version": "1", "provider": "CPUExecutionProvider"}, 1.0)]


def test_stale_queue_gauges_are_not_exported(tmp_path: Path) -> None:
    # The leadership moved to another host 60 s ago: this host stops exporting the fleet gauges.
    _write(tmp_path, "10", "60")
    seen = _collect(tmp_path, stale_after_s=30)
    assert "stayler_queue_jobs_available" not in seen
    assert "stayler_queue_stats_timestamp_seconds" not in seen
    assert seen["stayler_jobs_claimed_total"]  # the host's own metrics stay


def test_health_follows_the_heartbeats(tmp_path: Path) -> None:
    assert not health(tmp_path, 15).ok  # no worker process at all
    _write(tmp_path, "none")
    assert health(tmp_path, 15).ok
    assert not health(tmp_path, 0.0).ok or health(tmp_path, 0.0).heartbeat_age_s == 0.0


def test_queue_snapshot_counts_from_the_database(db: psycopg.Connection) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    normal = [make_conversion(db) for _ in range(3)]
    high = make_conversion(db, priority=7)
    make_conversion(db, priority=-2)
    db.execute("UPDATE conversion_jobs SET run_after = now() + interval '1 hour' WHERE conversion_id = %s",
               (normal[0],))
    db.execute("UPDATE conversion_jobs SET created_at = now() - interval '2 minutes', "
               "run_after = now() - interval '90 seconds' WHERE conversion_id = %s", (high,))
    db.execute("SELECT operator_cancel_conversion(%s, 'test', 'test')", (normal[1],))
    db.execute("INSERT INTO workers (id, hostname, pid) VALUES ('h:1:a', 'h', 1), ('h:2:b', 'h', 2)")
    db.execute("UPDATE workers SET heartbeat_at = now() - interval '1 hour' WHERE id = 'h:2:b'")
    snap = read_snapshot(db, alive_within_s=30, cancelled_since=start)
    assert snap.queued_by_priority == {"normal": 2, "high": 1, "low": 1}
    assert snap.available == 3  # one is in backoff
    assert 85 <= snap.oldest_available_age_s <= 120
    assert snap.processing == 0
    assert snap.workers_alive == 1
    assert snap.cancelled == {"free": 1}
    later = read_snapshot(db, alive_within_s=30, cancelled_since=snap.as_of)
    assert later.cancelled == {}  # counted once


@pytest.mark.slow
def test_queue_stats_stay_cheap_with_a_million_jobs(db: psycopg.Connection) -> None:
    """1,000,000 job rows (finished history plus 10,000 queued): the leader's query takes milliseconds."""
    make_conversion(db)
    db.execute("SET session_replication_role = replica")  # bulk history rows without per-row triggers/FKs
    db.execute("""INSERT INTO conversion_jobs (conversion_id, status, priority, created_at, completed_at, error_type)
                  SELECT gen_random_uuid(),
                         CASE WHEN g % 100 = 0 THEN 'queued' WHEN g % 50 = 1 THEN 'failed' ELSE 'completed' END,
                         g % 3 - 1, now() - make_interval(secs => g),
                         CASE WHEN g % 100 = 0 THEN NULL ELSE now() - make_interval(secs => g / 2) END,
                         CASE WHEN g % 50 = 1 THEN 'invalid_image' END
                    FROM generate_series(1, 999999) AS g""")
    db.execute("SET session_replication_role = origin")
    db.execute("VACUUM ANALYZE conversion_jobs")
    read_snapshot(db, alive_within_s=30, cancelled_since=None)
    t0 = time.perf_counter()
    snap = read_snapshot(db, alive_within_s=30, cancelled_since=datetime.now(UTC) - timedelta(seconds=10))
    elapsed = time.perf_counter() - t0
    assert sum(snap.queued_by_priority.values()) == 10_000
    assert snap.failed_last_hour
    # Counted, not timed: the rows the statement's plan read from conversion_jobs (returned plus
    # filtered out, over every loop), against the table's 1,000,000 rows, in the same run.
    explained = db.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + Q.job_get_queue_stats, {"alive_within_s": 30}).fetchone()
    assert explained is not None
    plan: dict[str, Any] = explained[0][0]
    scans = list(_scans_of(plan["Plan"], "conversion_jobs"))
    read = sum((n["Actual Rows"] + n.get("Rows Removed by Filter", 0)) * n["Actual Loops"] for n in scans)
    print(f"queue_stats at 1,000,000 rows: {elapsed * 1000:.0f} ms, {read} rows read by "
          f"{sorted({n['Node Type'] for n in scans})}")
    assert scans and not [n for n in scans if n["Node Type"] == "Seq Scan"], scans
    assert read < 1_000_000 / 10, read


def _scans_of(node: dict[str, Any], table: str) -> Iterator[dict[str, Any]]:
    """Every plan node under ``node`` (itself included) that reads ``table``."""
    if node.get("Relation Name") == table:
        yield node
    for child in node.get("Plans", []):
        yield from _scans_of(child, table)
