"""Starting worker processes: the ``dramatiq`` command with the project's defaults."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from core.settings import Settings


def worker_command(settings: Settings, *, processes: int | None = None, threads: int | None = None) -> list[str]:
    """The ``dramatiq`` command line that runs ``worker.app`` with these settings."""
    return [
        sys.executable, "-m", "dramatiq", "worker.app",
        "--processes", str(processes or settings.worker_processes),
        "--threads", str(threads or settings.worker_threads),
        "--worker-shutdown-timeout", str(int(settings.shutdown_grace_s * 1000)),
    ]


def worker_environment(settings: Settings, database_url: str, redis_url: str, **overrides: str) -> dict[str, str]:
    """The environment of worker processes: this one, plus the service URLs and the state folder."""
    env = dict(os.environ)
    env.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url, "STAYLER_STATE_DIR": str(settings.state_dir)})
    if settings.storage_dir is not None:
        env["STAYLER_STORAGE_DIR"] = str(settings.storage_dir)
    if settings.storage_url:
        env["STAYLER_STORAGE_URL"] = settings.storage_url
    env.update(overrides)
    return env


@contextlib.contextmanager
def running_workers(settings: Settings, database_url: str, redis_url: str, *, processes: int | None = None,
                    threads: int | None = None, log_path: Path | None = None,
                    env_overrides: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run a worker fleet for the duration of the block; SIGTERM and wait for it on exit."""
    log: IO[bytes] | None = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
    proc = subprocess.Popen(
        worker_command(settings, processes=processes, threads=threads),
        env=worker_environment(settings, database_url, redis_url, **(env_overrides or {})),
        stdout=log, stderr=subprocess.STDOUT if log else None,
    )
    try:
        yield proc
    finally:
        stop_workers(proc, settings.shutdown_grace_s + 15)
        if log is not None:
            log.close()


def stop_workers(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """Ask the fleet to stop (SIGTERM: in-flight jobs finish or go back), kill it if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


#: A fleet that ran this long had booted fine: its death resets the restart back-off (the chaos suite
#: kills a worker every few seconds; a 60 s rule let the back-off climb to 30 s and starve the host).
HEALTHY_RUN_S = 10.0
#: Longest wait before restarting a fleet that keeps dying at boot.
MAX_RESTART_DELAY_S = 5.0


def preflight(settings: Settings, database_url: str, redis_url: str) -> tuple[int, str]:
    """Run ``worker.preflight`` in a child process (the supervisor never imports onnxruntime)."""
    done = subprocess.run([sys.executable, "-m", "worker.preflight"], capture_output=True, text=True,
                          env=worker_environment(settings, database_url, redis_url), check=False)
    lines = done.stderr.strip().splitlines()
    named = [line for line in lines if line.startswith("stayler worker:")]
    return done.returncode, (named or lines or [""])[-1]


def run_workers_foreground(settings: Settings, database_url: str, redis_url: str, *, processes: int | None,
                           threads: int | None, max_restarts: int | None = None) -> int:
    """Supervise the fleet until SIGINT/SIGTERM (forwarded as SIGTERM).

    Dramatiq's master shuts every worker down when one dies (a SIGKILL, an OOM kill, a native
    crash); the supervisor then starts the fleet again, with a short back-off, so a bare host keeps
    working. The dead worker's jobs come back through the rescuer. A stop signal that arrives while
    the supervisor waits to restart ends it at once: no new fleet starts. A fleet that could never
    work (a model that fails its contract, unusable storage) is refused before it starts.
    """
    code, problem = preflight(settings, database_url, redis_url)
    if code != 0:
        print(problem or "stayler worker: the worker could not start", file=sys.stderr, flush=True)
        return code
    stopping = threading.Event()
    proc: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: object) -> None:
        stopping.set()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    restarts, delay = 0, 0.5
    while not stopping.is_set():
        started = time.monotonic()
        proc = subprocess.Popen(worker_command(settings, processes=processes, threads=threads),
                                env=worker_environment(settings, database_url, redis_url))
        if stopping.is_set():  # the signal arrived while the fleet was being started
            proc.send_signal(signal.SIGTERM)
        code = proc.wait()
        if stopping.is_set() or (max_restarts is not None and restarts >= max_restarts):
            return code
        if time.monotonic() - started > HEALTHY_RUN_S:
            delay = 0.5  # it had booted and worked: a crash, not a crash loop; restart promptly
        restarts += 1
        print(f"stayler worker: the fleet exited unexpectedly (code {code}); restarting in {delay:.1f} s",
              file=sys.stderr, flush=True)
        if stopping.wait(delay):
            break
        delay = min(delay * 2, MAX_RESTART_DELAY_S)
    return 0
