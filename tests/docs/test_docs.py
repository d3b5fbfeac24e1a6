"""The README stays true to the code: every setting and every error type is documented."""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings
from worker.errors import ERROR_TYPES

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme() -> None:
    for name in Settings.model_fields:
        env = {"database_url": "DATABASE_URL", "redis_url": "REDIS_URL"}.get(name, f"STAYLER_{name.upper()}")
        assert f"`{env}`" in README, f"{env} is not documented in README.md"


def test_every_error_type_is_in_the_readme() -> None:
    for code in ERROR_TYPES:
        assert f"`{code}`" in README, f"error_type {code} is not documented in README.md"
