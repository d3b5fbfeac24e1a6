"""Fixtures of the end-to-end tests: a test environment whose fleets are always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet import Env, kill_tree, stop

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(db_url: str, redis_url: str, queue_name: str, tmp_path: Path) -> Iterator[Env]:
    """Services, storage and log folders for one end-to-end test; fleets stopped afterwards."""
    storage = tmp_path / "storage"
    logs = tmp_path / "logs"
    storage.mkdir()
    logs.mkdir()
    environment = Env(db_url, redis_url, queue_name, storage, logs)
    yield environment
    for proc in environment.fleets:
        stop(proc, timeout=20)
        kill_tree(proc.pid)
