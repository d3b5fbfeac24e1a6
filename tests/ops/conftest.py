"""Fixtures of the operations tests (the end-to-end ``env`` fixture comes from tests/e2e)."""

from tests.e2e.conftest import env

__all__ = ["env"]
