"""``stayler worker`` refuses to start on unusable storage, with one clear line, before any job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.infra.s3 import S3Server

ROOT = Path(__file__).resolve().parents[2]


def _worker(env: dict[str, str], tmp_path: Path, db_url: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env, "STAYLER_STATE_DIR": str(tmp_path / "state"), "DATABASE_URL": db_url,
           "REDIS_URL": redis_url, "STAYLER_METRICS_PORT": "0", "STAYLER_MODEL": "null"}
    return subprocess.run([sys.executable, "-m", "stayler.cli", "worker", "--processes", "1"], cwd=ROOT, env=env,
                          text=True, capture_output=True, timeout=180)


def test_a_missing_bucket_stops_the_fleet_at_start(s3_server: S3Server, tmp_path: Path, db_url: str,
                                                   redis_url: str) -> None:
    result = _worker({**s3_server.env(), "STAYLER_STORAGE_URL": "s3://no-such-bucket/results"}, tmp_path, db_url,
                     redis_url)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"stayler worker: storage not usable: S3 bucket 'no-such-bucket' does not exist (endpoint "
        f"{s3_server.endpoint})")


def test_an_unusable_folder_stops_the_fleet_at_start(tmp_path: Path, db_url: str, redis_url: str) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"x")
    result = _worker({"STAYLER_STORAGE_URL": f"file://{blocker}/store"}, tmp_path, db_url, redis_url)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"stayler worker: storage not usable: storage folder {blocker}/store does not exist")
