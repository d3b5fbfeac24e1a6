"""``python -m worker.preflight``: refuse to start a fleet that could never do its work.

Loads the configured model exactly as a worker process does (contract checks included) and checks
the storage backend, in a process of its own so the supervisor never imports onnxruntime. On a
problem it prints one line naming it and exits 2; ``stayler worker`` then exits 2 too instead of
starting a fleet that looks up and never completes anything.
"""

from __future__ import annotations

import sys

from core.logs import first_line
from core.settings import get_settings
from worker.process import make_runner, make_storage

#: Exit status of a refused start (the supervisor does not restart after it).
REFUSED = 2


def check() -> str | None:
    """None when the model loads and storage works, else a one-line reason."""
    settings = get_settings()
    try:
        runner = make_runner(settings)
    except Exception as exc:  # ModelContractError, a missing file, a provider onnxruntime lacks
        return f"model {settings.model!r} cannot be used: {first_line(exc)}"
    runner.close()
    try:
        make_storage(settings).check()
    except Exception as exc:
        return f"storage not usable: {first_line(exc)}"
    return None


def main() -> int:
    """Run the checks; print the reason and return ``REFUSED`` on a problem."""
    problem = check()
    if problem is not None:
        print(f"stayler worker: {problem}", file=sys.stderr)
        return REFUSED
    return 0



if __name__ == "__main__":
    sys.exit(main())
