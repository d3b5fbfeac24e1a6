"""Every shell session the README and the docs mark runnable pastes and runs on a fresh database."""

from __future__ import annotations

import re
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from core.services import with_database
from tests.docs.runnable import ACTIVATE, ROOT, Block, run_block, runnable_blocks

BLOCKS = runnable_blocks()


def test_the_readme_has_a_runnable_cli_session() -> None:
    readme = [b for b in BLOCKS if b.document == "README.md"]
    assert readme, "README.md lost its <!-- runnable --> CLI session"
    session = readme[0].text
    for step in (ACTIVATE, "stayler migrate", "stayler worker", "kill $WORKER"):
        assert step in session, f"the README's session lost {step!r}"


def test_a_marker_without_a_shell_fence_is_refused(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    for name in ("docs/api.md", "docs/operations.md"):
        (tmp_path / name).write_text("nothing\n")
    (tmp_path / "README.md").write_text("<!-- runnable -->\n```python\nprint(1)\n```\n")
    with pytest.raises(ValueError, match="must be followed"):
        runnable_blocks(tmp_path)


@pytest.fixture
def empty_db_url(pg_admin_url: str) -> Iterator[str]:
    """A database with nothing in it, as a new user's is: the session must migrate it itself."""
    name = f"stayler_docs_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield with_database(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_runnable_block_parses_and_names_files_that_exist(block: Block) -> None:
    """The fast half (default suite): bash accepts the block, and every repository file it names exists."""
    check = subprocess.run(["bash", "-n", "-c", block.text], capture_output=True, text=True, check=False)
    assert check.returncode == 0, f"{block.name}: {check.stderr}"
    for path in re.findall(r"(?<![\w/.-])((?:tests|docs)/[\w./-]+)", block.text):
        assert (ROOT / path).exists(), f"{block.name} names {path}, which the repository does not have"


@pytest.mark.slow  # 20-60 s each on a shared 2-core machine (worker fleets start and stop): `make test-slow`
@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_runnable_block_runs_as_pasted(block: Block, empty_db_url: str, redis_url: str, queue_name: str,
                                       tmp_path: Path) -> None:
    clone = tmp_path / "clone"  # the repository's files, so what a session writes lands here
    clone.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".venv", ".state", ".git"):
            (clone / entry.name).symlink_to(entry)
    env = {"DATABASE_URL": empty_db_url, "REDIS_URL": redis_url, "STAYLER_QUEUE_NAME": queue_name,
           "STAYLER_STATE_DIR": str(tmp_path / "state"), "STAYLER_METRICS_PORT": "0",
           "STAYLER_LOG_LEVEL": "WARNING"}
    done = run_block(block, env, timeout=240, cwd=clone, port=_free_port())
    assert done.returncode == 0, (f"{block.name} failed (exit {done.returncode})\n--- stdout\n{done.stdout}"
                                  f"\n--- stderr\n{done.stderr[-4000:]}")
    with psycopg.connect(empty_db_url) as conn:
        statuses: dict[str, int] = dict(conn.execute("SELECT status, count(*) FROM conversions GROUP BY status"
                                                     ).fetchall())
    if block.document == "README.md":
        assert statuses.get("completed", 0) >= 1 and statuses.get("cancelled", 0) == 1, statuses
    if block.document == "docs/api.md":
        assert "webhook verified: conversion.completed" in done.stdout, done.stdout
        assert (clone / "result.jpg").read_bytes()[:2] == b"\xff\xd8"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
