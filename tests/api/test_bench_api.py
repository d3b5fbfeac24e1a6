"""The API's row of ``stayler bench`` at smoke sizes: it runs end to end (numbers are not checked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import runner
from core.settings import Settings

pytestmark = pytest.mark.e2e


@pytest.mark.slow  # the API benchmark at smoke sizes (uvicorn, a fleet); tests/bench keeps a one-benchmark smoke run
def test_bench_api_smoke(pg_admin_url: str, redis_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=pg_admin_url, redis_url=redis_url, state_dir=tmp_path / "state")
    folder = runner.run(["api"], smoke=True, out_dir=tmp_path / "out", settings=settings,
                        command="stayler bench api --smoke")
    rows = [line for line in (folder / "results.md").read_text().splitlines() if line.startswith("| api |")]
    assert len(rows) == 7 and all("error" not in line for line in rows), rows
