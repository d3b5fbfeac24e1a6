"""A run's scratch folder: created for a run under the system's temporary folder, removed afterwards."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def run_folder(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A new folder named ``prefix…``; removed when the block ends unless ``keep`` (logs to read later)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
