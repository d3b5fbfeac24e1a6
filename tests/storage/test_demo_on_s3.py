"""``stayler demo`` end to end on S3 storage: worker processes read inputs from and write results to the bucket."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.infra.s3 import S3Server

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # the demo and its fleet on moto; S3 stays in test_contract, test_producer_on_s3, test_lifecycle
@pytest.mark.e2e
def test_the_demo_runs_on_s3_storage(s3_server: S3Server, s3_bucket: str, db_url: str, redis_url: str,
                                     queue_name: str, tmp_path: Path) -> None:
    env = {**os.environ, **s3_server.env(), "DATABASE_URL": db_url, "REDIS_URL": redis_url,
           "STAYLER_QUEUE_NAME": queue_name, "STAYLER_STATE_DIR": str(tmp_path / "state"),
           "STAYLER_METRICS_PORT": "0", "STAYLER_STORAGE_URL": f"s3://{s3_bucket}/demo"}
    result = subprocess.run([sys.executable, "-m", "stayler.cli", "demo", "--conversions", "4", "--processes", "1",
                             "--timeout", "120"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT i.original_url, i.thumbnail_url FROM conversions c "
                            "JOIN images i ON i.id = c.result_image_id WHERE c.status = 'completed'").fetchall()
    assert len(rows) == 4
    keys = set(s3_server.keys(s3_bucket))
    for original, thumbnail in rows:
        assert original.startswith(f"s3://{s3_bucket}/demo/results/")
        assert original.removeprefix(f"s3://{s3_bucket}/") in keys
        assert thumbnail.removeprefix(f"s3://{s3_bucket}/") in keys
    assert not (tmp_path / "state" / "storage").exists()  # nothing went to the local folder
