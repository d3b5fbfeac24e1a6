"""Fixtures of the reliability tests: the end-to-end ``env`` (fleets stopped after each test)."""

from tests.e2e.conftest import env

__all__ = ["env"]
