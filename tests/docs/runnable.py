"""The shell blocks of the README and the docs marked ``<!-- runnable -->``, and how to run one.

A block is runnable when the line before its opening fence is ``<!-- runnable -->`` (invisible on
GitHub). It is run as pasted by a new user, from the repository's root, with ``bash`` stopping at
the first failing command, against the database and Redis the caller gives.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "docs/api.md", "docs/operations.md")
MARKER = "<!-- runnable -->"
FENCE = re.compile(r"^```(sh|bash)\s*$")
ACTIVATE = ". .venv/bin/activate"


@dataclass(frozen=True)
class Block:
    """One runnable shell block: where it is and its text."""

    document: str
    line: int
    text: str

    @property
    def name(self) -> str:
        """``README.md:123``, for test ids and messages."""
        return f"{self.document}:{self.line}"


def runnable_blocks(root: Path = ROOT) -> list[Block]:
    """Every block marked runnable in the documents, in order."""
    blocks = []
    for document in DOCUMENTS:
        lines = (root / document).read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip() != MARKER:
                continue
            if i + 1 >= len(lines) or not FENCE.match(lines[i + 1]):
                raise ValueError(f"{document}:{i + 1}: {MARKER} must be followed by a ```sh fence")
            end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
            blocks.append(Block(document, i + 2, "\n".join(lines[i + 2:end]) + "\n"))
    return blocks


def script_of(block: Block, port: int | None = None) -> str:
    """The block as bash runs it: stop at the first failure; the venv of this test run activated.

    A clone's own ``.venv`` is what the documents activate; when the tests run from another
    environment (a shared venv) its ``activate`` is used instead. With ``port``, the documents'
    API port 8080 becomes that one (tests share the machine). Nothing else changes.
    """
    activate = f". {Path(sys.prefix) / 'bin' / 'activate'}"
    text = block.text if (ROOT / ".venv" / "bin" / "activate").exists() else block.text.replace(ACTIVATE, activate)
    if port is not None:
        text = text.replace("--port 8080", f"--port {port}").replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    return "set -e -o pipefail\n" + text


def run_block(block: Block, env: dict[str, str], timeout: float, *, cwd: Path = ROOT,
              port: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``block`` with ``env`` added to this process's environment; output captured.

    The block runs in a session of its own: when it fails or times out, whatever it left running in
    the background (an API, a worker fleet) is stopped with it.
    """
    full = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    # Files, not pipes: a background process the block left running would hold a pipe open.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(["bash", "-c", script_of(block, port)], cwd=cwd, env=full, stdout=out, stderr=err,
                                text=True, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
            note = ""
        except subprocess.TimeoutExpired:
            code, note = -1, f"\n(timed out after {timeout:g} s)"
        finally:
            _stop_group(proc.pid)
            proc.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, code, out.read(), err.read() + note)


def _stop_group(pgid: int) -> None:
    """SIGTERM the block's process group, then SIGKILL what is left after a grace period."""
    for sig, grace in ((signal.SIGTERM, 25.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
