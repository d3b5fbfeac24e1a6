"""The benchmark suite at smoke sizes: it runs end to end and writes its table and chart.

Numbers are not checked (shared, noisy machines): only that every benchmark produced its rows.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench import runner
from bench.common import SMOKE
from core.settings import Settings

pytestmark = pytest.mark.e2e

EXPECTED = {
    "queue": 2 + 4,      # pgqueuer at 2 batch sizes, the project at 2 process counts × 2 batch sizes
    "inference": 4,
    "latency": 6,
    "scale": 3,
    "memory": 3,
    "enqueue": 2,
}


def test_smoke_run_writes_every_row(pg_admin_url: str, redis_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=pg_admin_url, redis_url=redis_url, state_dir=tmp_path / "state")
    sizes = dataclasses.replace(SMOKE, queue_processes=(1, 2))
    folder = runner.run(list(EXPECTED), smoke=True, out_dir=tmp_path / "out", settings=settings,
                        command="stayler bench all --smoke", sizes=sizes)
    md = (folder / "results.md").read_text()
    chart = folder / "chart.png"
    assert chart.is_file() and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    body = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| benchmark")]
    assert "error" not in {line.split("|")[2].strip() for line in body}, md
    for name, count in EXPECTED.items():
        rows = [line for line in body if line.split("|")[1].strip() == name]
        assert len(rows) == count, f"{name}: {len(rows)} rows, expected {count}\n{md}"
        assert all("n/a" not in line.split("|")[3] or "pgqueuer" in line for line in rows), md
