"""OS-level thread names, so ``top -H``, ``/proc/<pid>/task/*/comm`` and the latency benchmark's CPU
split can tell a worker's threads apart.

Linux gives every thread a 15-byte ``comm`` name; CPython 3.11 never sets it, so all threads of a
worker show as ``python``. Python threads are labelled from their ``threading`` names; native threads
(onnxruntime's intra-op pool) inherit the name of the thread that creates them, so the runner creates
its sessions inside :func:`naming_native_threads`. Everywhere but Linux these are no-ops.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

COMM_BYTES = 15
_DRAMATIQ = {"WorkerThread": "dq-worker", "ConsumerThread": "dq-consumer"}


def os_name_for(thread: threading.Thread) -> str:
    """The short OS name a Python thread gets (``stayler-`` dropped, Dramatiq's threads by role)."""
    role = _DRAMATIQ.get(type(thread).__name__)
    name = role if role is not None else thread.name.removeprefix("stayler-")
    return name.encode()[:COMM_BYTES].decode(errors="ignore") or "thread"


def _comm(native_id: int) -> Path:
    return Path(f"/proc/self/task/{native_id}/comm")


def label_python_threads() -> int:
    """Give every Python thread of this process but the main one its OS name; returns how many.

    The main thread keeps the process's name (``ps``/``pkill`` match it). Cheap (one small write per
    thread), so callers repeat it to catch threads started later.
    """
    main = threading.main_thread()
    labelled = 0
    for thread in threading.enumerate():
        if thread is main or thread.native_id is None:
            continue
        with contextlib.suppress(OSError):
            _comm(thread.native_id).write_text(os_name_for(thread))
            labelled += 1
    return labelled


@contextlib.contextmanager
def naming_native_threads(name: str) -> Iterator[None]:
    """Native threads started inside the block are named ``name`` (they inherit the creator's name)."""
    native_id = threading.get_native_id()
    path = _comm(native_id)
    try:
        before = path.read_text().strip()
        path.write_text(name.encode()[:COMM_BYTES].decode(errors="ignore"))
    except OSError:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.write_text(before)
