"""The host's Prometheus multiprocess folder: where it is, and wiping it once per fleet.

prometheus-client multiprocess mode: every worker process writes its metrics to memory-mapped files
in one folder per host (``STAYLER_METRICS_DIR``, default ``$TMPDIR/stayler-metrics-<port>``). The
first worker process of a fleet wipes the folder (Dramatiq's own Prometheus middleware never does),
so counters start at zero with the fleet.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
from pathlib import Path

from core.settings import Settings


def metrics_dir(settings: Settings) -> Path:
    """The host's multiprocess folder: ``metrics_dir``, or one per port under the temp folder."""
    if settings.metrics_dir is not None:
        return settings.metrics_dir.expanduser().resolve()
    return Path(tempfile.gettempdir()) / f"stayler-metrics-{settings.metrics_port}"


def fleet_id() -> str:
    """Identifies this fleet run: the Dramatiq main process (pid and start time) on this boot."""
    ppid = os.getppid()
    parts = [socket.gethostname(), str(ppid)]
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{ppid}/stat").read_text()
        parts.append(stat.rsplit(")", 1)[1].split()[19])  # field 22: start time in clock ticks
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    return ":".join(parts)


def prepare_dir(path: Path, fleet: str) -> bool:
    """Create ``path`` and wipe it if another fleet wrote it; True if this call wiped it.

    Every worker process calls this at boot under an exclusive lock; only the first of a fleet
    finds a marker from another fleet (or none) and wipes the old ``.db`` files.
    """
    path.mkdir(parents=True, exist_ok=True)
    marker = path / ".fleet"
    with (path / ".lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == fleet:
            return False
        for old in path.glob("*.db"):
            old.unlink(missing_ok=True)
        marker.write_text(fleet)
        return True


def enable_multiprocess(path: Path) -> None:
    """Point prometheus_client at ``path`` for metrics created from now on in this process."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # in case prometheus_client was imported earlier

