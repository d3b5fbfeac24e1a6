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
    "queue": 2 + 2 * 4,  # pgqueuer no-op at 2 batch sizes; the fair peer and the project at 2 processes × 2 batches
    "inference": 5 + 4,  # bare model, bare loop, best at batch 1 / batched / overall; the person-stage rows
    # model time; per fleet layout (3): p50/p95/p99, its 2-part split, 2 stage groups, the machine's CPU; the
    # bare loop at the cadence, idling by spin, its CPU time. Plus a "CPU per conversion: <role>" row per role seen.
    "latency": 1 + 3 * (5 + 2 + 1) + 3,
    "scale": 3,
    "memory": 3,
    "enqueue": 2,
    "profile": 1 + 13 + 1 + 2 + 2,  # all stages, each stage, the rest; PostgreSQL, fleet total; floor rate, CPU
    "idle": 3,
    "erasure": 2 + 2,  # an owner erased on a folder and on S3; retention batches at two table sizes
}


def _smoke(names: list[str], pg_admin_url: str, redis_url: str, tmp_path: Path) -> tuple[str, list[str]]:
    """Run ``names`` at smoke sizes; the results table and its body rows (after checking the chart)."""
    settings = Settings(database_url=pg_admin_url, redis_url=redis_url, state_dir=tmp_path / "state")
    sizes = dataclasses.replace(SMOKE, queue_processes=(1, 2))
    folder = runner.run(names, smoke=True, out_dir=tmp_path / "out", settings=settings,
                        command=f"stayler bench {' '.join(names)} --smoke", sizes=sizes)
    md = (folder / "results.md").read_text()
    chart = folder / "chart.png"
    assert chart.is_file() and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    body = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| benchmark")]
    assert "error" not in {line.split("|")[2].strip() for line in body}, md
    return md, body


def test_smoke_run_of_one_benchmark_writes_its_rows_and_the_chart(pg_admin_url: str, redis_url: str,
                                                                  tmp_path: Path) -> None:
    # The default suite's representative: the runner, the table and the chart, for one benchmark
    # that starts no fleet. Every benchmark runs in `make test-slow` (below) and in `make bench`.
    md, body = _smoke(["enqueue"], pg_admin_url, redis_url, tmp_path)
    rows = [line for line in body if line.split("|")[1].strip() == "enqueue"]
    assert len(rows) == EXPECTED["enqueue"], md
    assert all("n/a" not in line.split("|")[3] for line in rows), md


@pytest.mark.slow  # every benchmark at smoke sizes: worker fleets, the pgqueuer peer, py-spy; minutes on CI
def test_smoke_run_writes_every_row(pg_admin_url: str, redis_url: str, tmp_path: Path) -> None:
    md, body = _smoke(list(EXPECTED), pg_admin_url, redis_url, tmp_path)
    for name, count in EXPECTED.items():
        rows = [line for line in body if line.split("|")[1].strip() == name and "CPU per conversion: " not in line]
        assert len(rows) == count, f"{name}: {len(rows)} rows, expected {count}\n{md}"
        assert all("n/a" not in line.split("|")[3] or "pgqueuer" in line for line in rows), md


def test_publish_replaces_only_the_generated_blocks(tmp_path: Path) -> None:
    from bench.common import Row
    from bench.publish import begin, end, publish

    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{begin('results')}\nold table\n{end('results')}\nmiddle\n"
                   f"{begin('profile')}\nold stages\n{end('profile')}\ntail\n")
    other = tmp_path / "other.md"
    other.write_text("no blocks here\n")
    rows = [Row("queue", "a case", 1.0, "conv/s"), Row("profile", "  store", 2.5, "ms/conv", note="40 %")]
    assert publish(rows, "Made by x.", "NEW TABLE", full_run=False, files=[doc, other]) == [doc]
    text = doc.read_text()
    assert "old table" in text and "old stages" not in text and "| store | 2.50 | ms/conv | 40 % |" in text
    assert publish(rows, "Made by y.", "NEW TABLE", full_run=True, files=[doc, other]) == [doc]
    text = doc.read_text()
    assert f"{begin('results')}\nMade by y.\n\nNEW TABLE\n{end('results')}" in text
    assert text.startswith("intro\n") and "\nmiddle\n" in text and text.endswith("tail\n")
    assert other.read_text() == "no blocks here\n"


def test_profile_samples_fold_into_stages() -> None:
    from bench.profile import fold

    raw = [
        'process 1:"python -m dramatiq worker.app";thread (7);WorkerThread.run (dramatiq/worker.py:535);'
        "JobQueue.claim.<locals>.work (worker/jobqueue.py:212);Cursor.execute (psycopg/cursor.py:97) 3\n",
        'process 1:"python";thread (7);BatchPipeline.read (worker/batch.py:140);'
        "LocalStorage.get (storage/local.py:150);Path.read_bytes (pathlib.py:1050) 2\n",
        'process 1:"python";thread (8);TryOnRunner.infer (models/runner.py:370);'
        "InferenceSession.run (onnxruntime/capi/onnxruntime_inference_session.py:220) 5\n",
        "a continuation of a command line that held a newline\n",
        'process 1:"python";thread (9);_fsync_quietly (storage/local.py:25) 4\n',
    ]
    assert fold(raw) == {"claim": 3, "read": 2, "model": 5, "store": 4}
