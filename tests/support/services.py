"""The switch that proves ``make test-fast`` needs no server: every server a test could start or
reach refuses to when ``STAYLER_TEST_NO_SERVICES=1``."""

from __future__ import annotations

import os

import pytest


def refuse_in_fast_run(what: str) -> None:
    """Fail the calling test when the run promised no servers (``make test-fast``)."""
    if os.environ.get("STAYLER_TEST_NO_SERVICES") == "1":
        pytest.fail(f"{what} in a run without services (STAYLER_TEST_NO_SERVICES=1): mark this test "
                    "'services' (or give it a service fixture) so make test-fast leaves it out")
