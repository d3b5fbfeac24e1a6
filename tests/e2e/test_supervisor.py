"""``stayler worker``, the supervisor: stop signals during its back-off, and fleets that could never work."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.fleet import Env

#: A supervisor whose fleet dies at once, every time (a crash loop), with the preflight passed.
CRASH_LOOP = textwrap.dedent("""
    import sys
    from core.settings import Settings
    from worker import supervisor as fleet
    fleet.preflight = lambda *a: (0, "")
    fleet.worker_command = lambda *a, **k: [sys.executable, "-c", "import sys; sys.exit(3)"]
    sys.exit(fleet.run_workers_foreground(Settings(), "postgresql://x/y", "redis://x", processes=1, threads=1))
""")


def test_sigterm_during_the_restart_back_off_stops_the_supervisor_at_once() -> None:
    # Regression (issue 10, defect 11): a SIGTERM that arrived while the supervisor slept before a
    # restart was lost and a new fleet started; under systemd or Kubernetes the stop became a SIGKILL.
    proc = subprocess.Popen([sys.executable, "-c", CRASH_LOOP], stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    seen: dict[str, float] = {}  # back-off announced → when its line was read
    assert proc.stderr is not None
    while "2.0" not in seen:
        line = proc.stderr.readline()
        assert line, f"the supervisor exited early: {lines}"
        lines.append(line)
        for delay in ("0.5", "1.0", "2.0"):
            if f"restarting in {delay} s" in line:
                seen[delay] = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    _, rest = proc.communicate(timeout=10)
    stopped_in = time.monotonic() - started
    # Same-run yardstick, no absolute bound: one turn of the loop with the shortest back-off (0.5 s
    # asleep plus a crashing fleet's start) on this machine, now. A stop that waited out the 2.0 s
    # back-off takes longer than that turn; one that cut it short takes a fraction of it.
    shortest_turn = seen["1.0"] - seen["0.5"]
    assert stopped_in < shortest_turn, (stopped_in, shortest_turn)
    assert proc.returncode == 0
    assert "restarting" not in rest  # no fleet started after the stop


@pytest.mark.slow  # ~13 s of a crash loop; the stop-during-back-off test covers the default suite
def test_the_back_off_stays_short() -> None:
    # Regression (issue 10, defect 11): the back-off climbed to 30 s and left the queue without a
    # worker for about 50 s of a 70 s window.
    proc = subprocess.Popen([sys.executable, "-c", CRASH_LOOP], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    delays: list[float] = []
    try:
        while len(delays) < 6:
            line = proc.stderr.readline()
            if "restarting in" in line:
                delays.append(float(line.rsplit("restarting in", 1)[1].split()[0]))
    finally:
        proc.kill()
        proc.wait()
    assert max(delays) <= 5.0 and delays[:3] == [0.5, 1.0, 2.0]


def test_a_model_that_fails_its_contract_refuses_to_start_with_one_line(env: Env, tmp_path: Path) -> None:
    # Regression (issue 10, defect 12): the fleet looked up and never worked (one CRITICAL line at
    # boot, then silence) while submitted conversions sat queued.
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not an ONNX model")
    done = subprocess.run([sys.executable, "-m", "stayler.cli", "worker"], capture_output=True, text=True,
                          env=env.variables(STAYLER_MODEL=str(bad)), timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stayler worker: model"), lines
    assert "Traceback" not in done.stderr
