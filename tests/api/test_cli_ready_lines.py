"""``stayler api`` prints where /docs and /console are once it listens; ``stayler webhooks`` prints one
ready line (issue 23). Real processes, real ports."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _start(args: list[str], db_url: str, tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "DATABASE_URL": db_url, "STAYLER_STATE_DIR": str(tmp_path / "state"),
           "STAYLER_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    env.pop("REDIS_URL", None)
    return subprocess.Popen([sys.executable, "-m", "stayler.cli", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)


def _lines(proc: subprocess.Popen[str], count: int, timeout: float) -> list[str]:
    """The first ``count`` lines of the process's stdout, or fewer when ``timeout`` passes."""
    assert proc.stdout is not None
    stdout = proc.stdout
    got: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stdout:
            got.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count and time.monotonic() < deadline:
        try:
            lines.append(got.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            break
    return lines


def _stop(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.e2e
def test_stayler_api_prints_the_reference_and_console_urls(db_url: str, tmp_path: Path) -> None:
    proc = _start(["api", "--port", "0"], db_url, tmp_path)
    try:
        lines = _lines(proc, 2, timeout=60)
        assert len(lines) == 2, lines
        docs = re.fullmatch(r"stayler api: reference (http://127\.0\.0\.1:\d+)/docs", lines[0])
        console = re.fullmatch(r"stayler api: console +(http://127\.0\.0\.1:\d+)/console", lines[1])
        assert docs and console and docs.group(1) == console.group(1), lines
        assert httpx.get(f"{docs.group(1)}/docs", timeout=10).status_code == 200
        assert httpx.get(f"{docs.group(1)}/console", timeout=10, follow_redirects=True).status_code == 200
    finally:
        _stop(proc)


@pytest.mark.e2e
def test_stayler_webhooks_prints_one_ready_line(db_url: str, tmp_path: Path) -> None:
    proc = _start(["webhooks"], db_url, tmp_path)
    try:
        lines = _lines(proc, 1, timeout=60)
        assert len(lines) == 1 and lines[0].startswith("stayler webhooks: delivering webhooks from "), lines
        assert "postgres@" not in lines[0] and "password" not in lines[0]
    finally:
        _stop(proc)
    assert proc.returncode == 0
